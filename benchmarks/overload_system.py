"""The systems the overload benchmark runs against: a `pullgate up` started for a scenario in a directory of its
own, where its gateway and its metrics endpoints are, and faults set on it at run time.

Started through the chaos tool's `system.start()` (`--any-ports --allow-fault-injection`), so every signal the
benchmark sends goes through `system.send()`, which checks the pid still runs `pullgate serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from pullgate import topology
from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.tools import scrape
from pullgate.tools.chaos import system


@dataclass(frozen=True)
class System:
    """A `pullgate up` this benchmark started: where its gateway listens and each process's metrics."""

    label: str
    data_dir: Path
    gateway: str
    metrics: Mapping[str, str]
    faults: str = ""

    def callers(self) -> dict[str, str]:
        """The metrics of every process that calls owners (the gateway and orders): where breakers live."""
        calling = {s.name for s in topology.SERVICES if s.upstreams}
        state = system.read_state(self.data_dir)
        return {p.name: self.metrics[p.name] for p in state.procs if p.service in calling and p.name in self.metrics}


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
        yield System(label, data_dir, state.addresses(topology.ENTRY)[0], scrape.endpoints(data_dir), faults)
    finally:
        await asyncio.to_thread(started.stop)


async def set_faults(address: str, spec: str) -> str:
    """Replace the faults of the server at `address` through its FaultService; the spec it had before."""
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await admin_pb2_grpc.FaultServiceStub(channel).SetFaults(admin_pb2.SetFaultsRequest(spec=spec),
                                                                          timeout=5)
    return reply.previous.spec


@contextlib.asynccontextmanager
async def faults(sut: System, service: str, spec: str) -> AsyncIterator[None]:
    """`spec` in force on every process of `service` in `sut` (unless `sut` was started with it), as before on
    exit."""
    if sut.faults == spec:
        yield
        return
    addresses = system.read_state(sut.data_dir).addresses(service)
    previous = [await set_faults(a, spec) for a in addresses]
    try:
        yield
    finally:
        for address, spec_before in zip(addresses, previous, strict=True):
            await set_faults(address, spec_before)


__all__ = ["System", "faults", "set_faults", "up"]
