"""What admission control costs a server per call: `python -m benchmarks admission [--quick]`.

1. In a loop, no grpc: the interceptor's own Python work around a handler that returns at once (a fake
   servicer context), for an admitted request (admit + release, the limit's update, the service time), a
   refusal at the limit and at the deadline, and criticality alone (admission switched off).
2. Over loopback, against servers in another process: the p50 a client sees and the server's CPU per call
   (from /proc, in blocks of one kind) for a server without interceptors, with admission admitting, with
   admission refusing everything (its limit held full), and refusing behind or in front of a recording
   tracing span, which is what decides where admission goes in the interceptor order (docs/overload.md).
3. The transport with a criticality in force against none (the metadata it attaches on every call).

Figures are printed, never asserted: they depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from benchmarks.resilience_bench import machine
from benchmarks.tracing_bench import process_cpu
from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.methods import GET_PRODUCT
from resilience import criticality
from resilience.admission import AdmissionConfig
from resilience.context import CallContext
from resilience.criticality import Criticality
from resilience.server import AdmissionInterceptor
from resilience.transport import Transport

SERVICE = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name
GET = f"/{SERVICE}/GetProduct"
REQUEST = catalog_pb2.GetProductRequest(sku="bench")
SERVERS = ("plain", "admitting", "refusing", "traced, then refusing", "refusing, then traced")


class _Details(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _Context:
    """The part of a servicer context the interceptor touches."""

    def __init__(self, remaining: float | None) -> None:
        self.metadata = (("user-agent", "grpc-python-asyncio/1.85"), (criticality.METADATA_KEY, "SHEDDABLE"))
        self.remaining = remaining

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    def time_remaining(self) -> float | None:
        return self.remaining

    def set_code(self, code: grpc.StatusCode) -> None:
        pass

    def set_details(self, details: str) -> None:
        pass

    def set_trailing_metadata(self, trailers: object) -> None:
        pass


async def _handler(request: Any, context: Any) -> str:
    return "answer"


async def in_loop(rounds: int, per_round: int) -> dict[str, float]:
    """Microseconds per call of each kind, the kinds taking turns round by round."""
    admitting = AdmissionInterceptor([SERVICE], AdmissionConfig(initial_limit=200, max_limit=200))
    full = AdmissionInterceptor([SERVICE], AdmissionConfig())
    assert full.admission is not None
    full.admission.in_flight = 1_000_000  # held full: every request is refused at the limit
    late = AdmissionInterceptor([SERVICE], AdmissionConfig())
    warm = late.wrap(_handler, _Details(GET))
    assert warm is not None
    for _ in range(50):  # the method's service time is now known, so a spent deadline is refused for it
        await warm(None, _Context(1.0))  # type: ignore[arg-type]
    off = AdmissionInterceptor([SERVICE], AdmissionConfig(enabled=False))

    def wrapped(interceptor: AdmissionInterceptor) -> Callable[[Any, Any], Awaitable[Any]]:
        behavior = interceptor.wrap(_handler, _Details(GET))
        assert behavior is not None
        return behavior

    kinds: dict[str, tuple[Callable[[Any, Any], Awaitable[Any]], _Context]] = {
        "handler alone": (_handler, _Context(1.0)),
        "criticality only (enabled=false)": (wrapped(off), _Context(1.0)),
        "admitted (admit + release)": (wrapped(admitting), _Context(1.0)),
        "refused: limit": (wrapped(full), _Context(1.0)),
        "refused: deadline": (wrapped(late), _Context(0.0)),
    }
    totals = dict.fromkeys(kinds, 0.0)
    clock = time.perf_counter
    for _ in range(rounds):
        for name, (call, context) in kinds.items():
            start = clock()
            for _ in range(per_round):
                await call(None, context)
            totals[name] += clock() - start
    return {name: total / (rounds * per_round) * 1e6 for name, total in totals.items()}


# ---- over the wire -------------------------------------------------------------------------------------------


class _Owner(catalog_pb2_grpc.CatalogServiceServicer):
    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.GetProductResponse:
        return catalog_pb2.GetProductResponse(product=catalog_pb2.Product(sku=request.sku, title="bench"))


def _tracing() -> Any:
    """A server span interceptor with an SDK that records every span and exports them nowhere."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON

    from pullgate.telemetry.grpc_server import server_interceptor

    class Null(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(Null()))
    return server_interceptor(tracer_provider=provider)


def _refusing() -> AdmissionInterceptor:
    interceptor = AdmissionInterceptor([SERVICE], AdmissionConfig())
    assert interceptor.admission is not None
    interceptor.admission.in_flight = 1_000_000
    return interceptor


async def serve() -> None:
    """The child process: one server per kind, their ports as JSON on the first line of stdout."""
    stacks: dict[str, list[Any]] = {
        "plain": [],
        "admitting": [AdmissionInterceptor([SERVICE], AdmissionConfig())],
        "refusing": [_refusing()],
        "traced, then refusing": [_tracing(), _refusing()],
        "refusing, then traced": [_refusing(), _tracing()],
    }
    servers, ports = [], {}
    for name, interceptors in stacks.items():
        server = grpc.aio.server(interceptors=interceptors)
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server(_Owner(), server)
        ports[name] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
    print(json.dumps(ports), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        await server.stop(None)


@contextlib.asynccontextmanager
async def child() -> AsyncIterator[tuple[dict[str, int], int]]:
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
        [sys.executable, "-m", "benchmarks.admission_bench", "--serve"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        ports = json.loads(await asyncio.to_thread(process.stdout.readline))
        yield ports, process.pid
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait)


async def over_the_wire(rounds: int, per_round: int) -> dict[str, tuple[float, float]]:
    """p50 latency (ms) and server CPU per call (µs) of each server, the kinds taking turns block by block."""
    latencies: dict[str, list[float]] = {name: [] for name in SERVERS}
    cpu = dict.fromkeys(SERVERS, 0.0)
    async with child() as (ports, pid), contextlib.AsyncExitStack() as stack:
        stubs = {}
        for name in SERVERS:
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{ports[name]}"))
            stubs[name] = catalog_pb2_grpc.CatalogServiceStub(channel)
        clock = time.perf_counter
        for r in range(rounds + 1):
            for name, stub in stubs.items():
                before = process_cpu(pid)
                block = []
                for _ in range(per_round):
                    start = clock()
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await stub.GetProduct(REQUEST, timeout=5)
                    block.append(clock() - start)
                if r:  # the first round warms up
                    cpu[name] += process_cpu(pid) - before
                    latencies[name].extend(block)
    n = rounds * per_round
    return {name: (sorted(latencies[name])[n // 2] * 1e3, cpu[name] / n * 1e6) for name in SERVERS}


async def transport_cost(rounds: int, per_round: int) -> dict[str, tuple[float, float]]:
    """p50 (ms) and client CPU per call (µs) of Transport calls with no criticality in force and with one (its
    metadata attached), in blocks whose order flips every round (ABBA), against the plain server."""
    kinds: dict[str, Criticality | None] = {"no criticality": None, "SHEDDABLE in force": Criticality.SHEDDABLE}
    latencies: dict[str, list[float]] = {name: [] for name in kinds}
    cpu = dict.fromkeys(kinds, 0.0)
    async with child() as (ports, _):
        transport = Transport("bench", [f"127.0.0.1:{ports['plain']}"])
        ctx = CallContext(GET_PRODUCT, "bench", None)
        clock, cpu_clock = time.perf_counter, time.process_time
        try:
            for r in range(rounds + 1):
                for name in list(kinds) if r % 2 else list(reversed(kinds)):
                    token = criticality._current.set(kinds[name])
                    block, before = [], cpu_clock()
                    for _ in range(per_round):
                        start = clock()
                        await transport(REQUEST, ctx)
                        block.append(clock() - start)
                    criticality._current.reset(token)
                    if r:  # the first round warms up
                        cpu[name] += cpu_clock() - before
                        latencies[name].extend(block)
        finally:
            await transport.close()
    n = rounds * per_round
    return {name: (sorted(latencies[name])[n // 2] * 1e3, cpu[name] / n * 1e6) for name in kinds}


async def run(quick: bool = False) -> None:
    print(machine())
    rounds, per_round = (5, 2_000) if quick else (20, 5_000)
    print(f"\n1. In a loop, no grpc ({rounds * per_round} calls of each kind, taking turns)\n")
    loop_figures = await in_loop(rounds, per_round)
    base = loop_figures["handler alone"]
    print(f"{'':36} {'µs/call':>9} {'added':>9}")
    for name, us in loop_figures.items():
        print(f"{name:36} {us:9.2f} {us - base:+9.2f}")

    rounds, per_round = (3, 300) if quick else (10, 1_000)
    print(f"\n2. Over loopback, server in another process ({rounds * per_round} calls each, blocks taking turns)\n")
    wire = await over_the_wire(rounds, per_round)
    print(f"{'server':36} {'p50 ms':>9} {'server CPU µs/call':>20}")
    for name, (p50, cpu) in wire.items():
        print(f"{name:36} {p50:9.3f} {cpu:20.1f}")

    print(f"\n3. Transport, criticality metadata ({rounds * per_round} calls each, blocks in ABBA order)\n")
    print(f"{'':36} {'p50 ms':>9} {'client CPU µs/call':>20}")
    for name, (p50, cpu) in (await transport_cost(rounds * 2, per_round // 2)).items():
        print(f"{name:36} {p50:9.3f} {cpu:20.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.admission_bench")
    parser.add_argument("--serve", action="store_true", help="run the servers (the benchmark's child process)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve() if args.serve else run(quick=args.quick))


if __name__ == "__main__":
    main()
