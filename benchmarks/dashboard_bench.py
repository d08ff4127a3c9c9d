"""`./dev bench dashboard`: the Grafana dashboard's panels as a PNG, drawn from a real run's Prometheus data.

Grafana is not installable here, so this runs what an operator would watch: a `pullgate up --replicas 2`, a real
Prometheus scraping every process each second (pullgate.tools.prometheus), and about a minute of traffic with
two disturbances in it: one catalog replica frozen (SIGSTOP) for 12 s, then a 5 s spike of strong views at
several times capacity. Each panel of deploy/grafana/dashboards/pullgate.json is then queried over the run and
drawn (pullgate.tools.dashboard.render) to `docs/dashboard.png` (or `--out DIR`). It is a picture, not a figure:
nothing here is measured against a target.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
import time
from pathlib import Path

from benchmarks import overload_system
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.tools import dashboard, prometheus
from pullgate.tools.chaos import system
from pullgate.tools.gateway_channel import Metadata
from pullgate.tools.openloop import ORDER_IDS, view

STEADY = {"bounded": 30.0, "strong": 10.0}
"""Views a second throughout, by read mode: bounded staleness (the cache shows) and strong (always live, so the
frozen replica's hedges and ejection show)."""
SPIKE = 600.0
"""Strong views a second added during the spike, with 1 s deadlines."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _paced(stub: gateway_pb2_grpc.GatewayServiceStub, metadata: Metadata, rate: float, seconds: float,
                 consistency: str, deadline: float) -> None:
    """`rate` views a second for `seconds`, each carrying `metadata` and started on schedule whether or not the
    last has answered."""
    loop = asyncio.get_running_loop()
    origin, pending, k = loop.time(), set(), 0
    while (due := k / rate) < seconds:
        await asyncio.sleep(max(0.0, origin + due - loop.time()))
        task = asyncio.create_task(view(stub, consistency, ORDER_IDS[k % len(ORDER_IDS)], deadline, metadata))
        pending.add(task)
        task.add_done_callback(pending.discard)
        k += 1
    if pending:
        await asyncio.wait(pending)


async def scenario(sut: overload_system.System, quick: bool) -> list[tuple[float, float, str]]:
    """The traffic and the disturbances; returns the disturbances as (from, to, label) in Unix seconds."""
    scale = 0.5 if quick else 1.0
    victim = next(p for p in system.read_state(sut.data_dir).procs if p.service == "catalog")
    shaded = []
    async with sut.gateway.channel() as channel:
        stub, metadata = gateway_pb2_grpc.GatewayServiceStub(channel), sut.gateway.metadata
        await asyncio.wait_for(channel.channel_ready(), 30.0)
        steady = [asyncio.create_task(_paced(stub, metadata, rate, 55 * scale, mode, 2.0))
                  for mode, rate in STEADY.items()]
        await asyncio.sleep(15 * scale)
        frozen = time.time()
        system.send(victim.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(12 * scale)
        finally:
            system.send(victim.pid, signal.SIGCONT)
        shaded.append((frozen, time.time(), f"{victim.name} frozen"))
        await asyncio.sleep(5 * scale)
        spiked = time.time()
        await _paced(stub, metadata, SPIKE, 5 * scale, "strong", 1.0)
        shaded.append((spiked, time.time(), "spike"))
        await asyncio.gather(*steady)
    return shaded


async def run(quick: bool = False, out: Path = Path("docs")) -> None:
    if prometheus.binary() is None:
        raise SystemExit("./dev bench dashboard needs the `prometheus` binary (Debian: apt-get install prometheus)")
    with tempfile.TemporaryDirectory(prefix="pullgate-dashboard-") as scratch:
        root = Path(scratch)
        async with overload_system.up(root / "system", "dashboard", replicas=2) as sut:
            address = f"127.0.0.1:{_free_port()}"
            with prometheus.running(sut.data_dir, root / "prometheus", address) as server:
                start = time.time()
                shaded = await scenario(sut, quick)
                end = time.time()
                for line in (sut.data_dir / "chaos-up.log").read_text().splitlines():
                    if "resilience.outlier" in line or "breaker" in line.lower():
                        print(line)
                # Let the last second be scraped (every 1 s) before asking for it.
                await asyncio.sleep(2.5)
                path = out / "dashboard.png"
                drawn = dashboard.render(server, start - 2, end + 2, shaded, path,
                                        "pullgate dashboard (deploy/grafana): a real run's Prometheus data, "
                                        "pullgate up --replicas 2")
    print(f"wrote {path}: " + ", ".join(f"{title}: {n} series" for title, n in drawn.items()))
