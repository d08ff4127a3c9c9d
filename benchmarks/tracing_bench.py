"""Tracing's cost: the gateway's GetOrderView latency with tracing off and on (a 100% sampler), whole system.

Two `pullgate up --any-ports` run side by side: one with no OTLP endpoint (nothing installed), one exporting
every span (OTEL_TRACES_SAMPLER=always_on, batched) to an OTLP/gRPC receiver in this process that counts
what it gets. Strong reads, so every request crosses every hop (gateway, orders, customers, catalog,
inventory) and makes its full set of spans. Calls alternate between the two in rounds, so both see the same
machine at the same moment. Target (issue 5): p50 with tracing on <= 1.10x off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from benchmarks.resilience_bench import Row, machine
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc


class Counter(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that counts spans."""

    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        n = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self._lock:
            self.spans += n
        return trace_service_pb2.ExportTraceServiceResponse()


@contextlib.contextmanager
def receiver() -> Iterator[tuple[Counter, str]]:
    counter = Counter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(counter, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield counter, f"http://127.0.0.1:{port}"
    finally:
        server.stop(None)


@contextlib.asynccontextmanager
async def system(data_dir: Path, env: dict[str, str]) -> AsyncIterator[str]:
    """A `pullgate up` with `env`; yields the gateway's address."""
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
        [sys.executable, "-m", "pullgate", "up", "--any-ports", "--data-dir", str(data_dir)],
        env={**os.environ, "PULLGATE_METRICS_PORTS": "off", **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        state = data_dir / "pullgate-up.json"
        end = time.monotonic() + 90
        while not state.exists():
            if process.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"pullgate up did not start in {data_dir}")
            await asyncio.sleep(0.1)
        yield str(json.loads(state.read_text())["services"]["gateway"][0]["address"])
    finally:
        process.terminate()
        process.wait(30)


async def run(quick: bool = False) -> None:
    rounds, per_round = (5, 40) if quick else (20, 100)
    request = pb.GetOrderViewRequest(order_id="1", read=pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG))
    with receiver() as (counter, endpoint), tempfile.TemporaryDirectory() as tmp:
        on_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": "always_on"}
        off_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""}
        async with system(Path(tmp) / "off", off_env) as off, system(Path(tmp) / "on", on_env) as on, \
                grpc.aio.insecure_channel(off) as off_channel, grpc.aio.insecure_channel(on) as on_channel:
            stubs = {"off": gateway_pb2_grpc.GatewayServiceStub(off_channel),
                     "on": gateway_pb2_grpc.GatewayServiceStub(on_channel)}
            rows = {"off": Row("tracing off (no endpoint)", []), "on": Row("tracing on, sampler 100%", [])}
            for stub in stubs.values():  # warm up: connections, caches of method handles, the p95 trackers
                for _ in range(per_round):
                    await stub.GetOrderView(request, timeout=5)
            for _ in range(rounds):
                for name, stub in stubs.items():
                    for _ in range(per_round):
                        start = time.perf_counter()
                        await stub.GetOrderView(request, timeout=5)
                        rows[name].latencies.append(time.perf_counter() - start)
            await asyncio.sleep(1.0)  # let the last batches arrive before counting
    off_p50, on_p50 = rows["off"].q(0.5), rows["on"].q(0.5)
    ratio = on_p50 / off_p50
    rows["on"].note = (f"p50 {ratio:.2f}x off ({(ratio - 1) * 100:+.1f}%; target <= +10%); "
                       f"{counter.spans} spans exported")
    print(f"tracing benchmark on {machine()}")
    print(f"{'case':<30} {'calls':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}  note")
    for row in rows.values():
        print(f"{row.name:<30} {len(row.latencies):>6} {row.q(0.5) * 1e3:>8.3f} {row.q(0.9) * 1e3:>8.3f} "
              f"{row.q(0.99) * 1e3:>8.3f}  {row.note}")
    print("GetOrderView, strong read (4 owner calls over 2 hops), sequential, alternating rounds of "
          f"{per_round} calls; two `pullgate up` side by side, spans to an in-process OTLP receiver.")
