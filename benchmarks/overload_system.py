"""The systems the overload benchmark runs against: a `pullgate up` started for a scenario in a directory of its
own, where its gateway and its metrics endpoints are, and faults set on it at run time.

Started through the chaos tool's `system.start()` (`--any-ports --allow-fault-injection`), so every signal the
benchmark sends goes through `system.send()`, which checks the pid still runs `pullgate serve`. Secure, as
`pullgate up` is by default (unless `flags` say `--insecure`): the gateway is reached with its system's CA and a
token that may read every order (`openloop.Gateway`), FaultService as the operator (the chaos tool's FaultClient).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pullgate import topology
from pullgate.edge.control import RuntimeApi
from pullgate.edge.haproxy import EdgeFiles
from pullgate.tools import scrape
from pullgate.tools.chaos import system
from pullgate.tools.chaos.actions import FaultClient
from pullgate.tools.launcher import STATE_FILE
from pullgate.tools.openloop import Gateway


@dataclass(frozen=True)
class System:
    """A `pullgate up` this benchmark started: its gateway (where it listens, and how to reach it) and each
    process's metrics."""

    label: str
    data_dir: Path
    gateway: Gateway
    metrics: Mapping[str, str]
    faults: str = ""

    def callers(self) -> dict[str, str]:
        """The metrics of every process that calls owners (the gateway and orders): where breakers live."""
        calling = {s.name for s in topology.SERVICES if s.upstreams}
        state = system.read_state(self.data_dir)
        return {p.name: self.metrics[p.name] for p in state.procs if p.service in calling and p.name in self.metrics}

    def edge(self) -> tuple[RuntimeApi, Path] | None:
        """The edge's runtime API and its rooms map, when the system runs an edge (HAProxy); None otherwise."""
        recorded = json.loads((self.data_dir / STATE_FILE).read_text())
        if not (recorded.get("edge") or {}).get("config"):
            return None
        files = EdgeFiles(Path(recorded["edge"]["config"]).parent)
        return RuntimeApi(files.socket), files.rooms

    def pids(self) -> dict[str, int]:
        """Every process of the system by name, the edge (HAProxy) included when there is one."""
        recorded = json.loads((self.data_dir / STATE_FILE).read_text())
        pids = {p.name: p.pid for p in system.read_state(self.data_dir).procs}
        if recorded.get("edge") and recorded["edge"].get("pid"):
            pids["edge"] = int(recorded["edge"]["pid"])
        return pids


def _start(data_dir: Path, replicas: int, config: str, faults: str, flags: Sequence[str]) -> system.Started:
    data_dir.mkdir(parents=True)
    config_file = None
    if config:
        config_file = data_dir / "bench.toml"
        config_file.write_text(config)
    return system.start(data_dir, replicas, config_file, [*(["--faults", faults] if faults else []), *flags])


@contextlib.asynccontextmanager
async def up(data_dir: Path, label: str, replicas: int, config: str = "", faults: str = "",
             flags: Sequence[str] = ()) -> AsyncIterator[System]:
    """`pullgate up --any-ports --allow-fault-injection --replicas N` in `data_dir` (with `config` as its
    --config file, `faults` as its --faults and any other `flags`), stopped on exit."""
    started = await asyncio.to_thread(_start, data_dir, replicas, config, faults, flags)
    try:
        state = system.read_state(data_dir)
        gateway = Gateway.of(state.entry, state.access)
        yield System(label, data_dir, gateway, scrape.endpoints(data_dir), faults)
    finally:
        await asyncio.to_thread(started.stop)


@contextlib.asynccontextmanager
async def faults(sut: System, service: str, spec: str) -> AsyncIterator[None]:
    """`spec` in force on every process of `service` in `sut` (unless `sut` was started with it), as before on
    exit."""
    if sut.faults == spec:
        yield
        return
    state = system.read_state(sut.data_dir)
    client = FaultClient(state.access)
    procs = [p for p in state.procs if p.service == service]
    previous = [await client.set(p, spec) for p in procs]
    try:
        yield
    finally:
        for proc, spec_before in zip(procs, previous, strict=True):
            await client.set(proc, spec_before)


__all__ = ["System", "faults", "up"]
