"""The resilience layer's benchmark: overhead, the tail with and without hedging, and fail-fast.

Everything runs in one run on loopback against owners in separate processes (benchmarks/owner.py), so the
ratios compare like with like on the same machine at the same moment. Targets (issue 3):

1. full stack on a cache miss: p50 <= 1.10x a raw grpc.aio stub call; a cache hit >= 20x faster than raw
2. owner delaying 2% of calls by 500 ms: p99 >= 10x lower with hedging, extra requests <= 5%
3. owner killed: once the breaker is open, p99 < 5 ms
4. three replicas each delaying 2% of calls by 500 ms, open loop: p99.9 <= 40 ms with extra requests <= 5% (issue 13)
5. the same calls as (1) over mutual TLS, on warm channels: the full stack's p50 <= 1.10x the plaintext one's, and
   one TLS handshake per channel, not per call (the owner counts them: pullgate.security.tls.ServerTls.handshakes)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.methods import GET_PRODUCT
from pullgate.security.pki import Pki, ensure_dev_pki
from pullgate.security.tls import TlsChannels, TlsFiles
from resilience import (
    BreakerConfig,
    CacheConfig,
    CircuitOpen,
    Downstream,
    DownstreamConfig,
    HedgingConfig,
    ResilienceError,
)


@dataclass
class Row:
    name: str
    latencies: list[float]
    cpu: float | None = None
    note: str = ""

    def q(self, quantile: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


@contextlib.asynccontextmanager
async def owner_process(
    delay: float = 0.0, fraction: float = 0.0, seed: int = 1, tls: Path | None = None
) -> AsyncIterator[tuple[str, subprocess.Popen[str]]]:
    """An owner in its own process; yields its address and the process (to kill it). `tls`: a PKI directory, and
    the owner also serves mutual TLS on a second port (`tls_owner_process`)."""
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
        [
            sys.executable,
            "-m",
            "benchmarks.owner",
            "--delay",
            str(delay),
            "--fraction",
            str(fraction),
            "--seed",
            str(seed),
            *(["--tls", str(tls)] if tls is not None else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    port = (await asyncio.to_thread(process.stdout.readline)).strip()
    try:
        yield f"127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=10)


@dataclass
class TlsOwner:
    """An owner process serving the same handler in plaintext on `address` and over mutual TLS on `tls_address`."""

    address: str
    tls_address: str
    process: subprocess.Popen[str]

    async def handshakes(self) -> int:
        """The TLS handshakes the owner has served so far (its ServerTls's count; it answers SIGUSR1)."""
        assert self.process.stdout is not None
        self.process.send_signal(signal.SIGUSR1)
        line = await asyncio.to_thread(self.process.stdout.readline)
        word, count = line.split()
        assert word == "handshakes", line
        return int(count)


@contextlib.asynccontextmanager
async def tls_owner_process(pki: Pki) -> AsyncIterator[TlsOwner]:
    """An owner in its own process with plaintext and mutual TLS ports; `pki` has a `catalog` identity."""
    async with owner_process(tls=pki.directory) as (address, process):
        assert process.stdout is not None
        port = (await asyncio.to_thread(process.stdout.readline)).strip()
        yield TlsOwner(address, f"127.0.0.1:{port}", process)


async def concurrent(n: int, workers: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    """Latency of n calls made by `workers` concurrent loops."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return latencies


async def interleaved(
    n: int,
    calls: Mapping[str, Callable[[int], Awaitable[object]]],
    every_100: Callable[[], Awaitable[object]] | None = None,
) -> dict[str, Row]:
    """n calls of each kind, taking turns call by call, so that any drift of the machine hits every kind alike.

    Latency per call, and CPU seconds per call in this process (all its threads, grpc's included).
    `every_100` runs untimed before every hundredth turn.
    """
    rows = {name: Row(name, [], 0.0) for name in calls}
    clock, cpu_clock = time.perf_counter, time.process_time
    for i in range(n):
        if every_100 is not None and i % 100 == 0:
            await every_100()
        for name, call in calls.items():
            start, cpu = clock(), cpu_clock()
            await call(i)
            end = clock()
            row = rows[name]
            row.cpu = (row.cpu or 0.0) + (cpu_clock() - cpu) / n
            row.latencies.append(end - start)
    return rows


async def overhead(n: int) -> list[Row]:
    """(1) raw stub vs the full stack on a miss and on a hit, and the stack without its cache and hedging;
    (5) the raw stub and the full stack on a miss again, over mutual TLS to the same owner process."""
    with tempfile.TemporaryDirectory() as tmp:
        pki = ensure_dev_pki(Path(tmp) / "pki", ["catalog", "gateway"])
        async with tls_owner_process(pki) as owner:
            return await _overhead(n, owner, TlsChannels(TlsFiles(pki.cert("gateway"), pki.key("gateway"), pki.ca)))


async def _overhead(n: int, owner: TlsOwner, tls: TlsChannels) -> list[Row]:
    address = owner.address
    channel = grpc.aio.insecure_channel(address, options=[("grpc.enable_retries", 0)])
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    downstream = Downstream("catalog", [address])
    no_cache = Downstream("catalog", [address], DownstreamConfig(cache=CacheConfig(enabled=False)))
    lean = Downstream(
        "catalog",
        [address],
        DownstreamConfig(cache=CacheConfig(enabled=False), hedging=HedgingConfig(enabled=False)),
    )
    # Over mutual TLS, as the gateway calls an owner: the raw stub on a channel of its own, the full stack
    # through the transport's channel to its one replica (what pullgate.security.setup gives a server's clients).
    tls_channel = tls.channel("catalog", owner.tls_address, [("grpc.enable_retries", 0)])
    tls_stub = catalog_pb2_grpc.CatalogServiceStub(tls_channel)
    tls_downstream = Downstream("catalog", [owner.tls_address], channels=tls)
    tls_channels = 1 + len(tls_downstream.addresses)
    tls_rpcs = [0]  # every RPC sent over TLS, hedges included
    hit_request = catalog_pb2.GetProductRequest(sku="hot")
    await downstream.call(GET_PRODUCT, hit_request)
    miss_round = [0]

    async def raw(i: int) -> object:
        return await stub.GetProduct(catalog_pb2.GetProductRequest(sku=f"r{i}"), timeout=5.0)

    async def miss(i: int) -> object:
        return await downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku=f"m{miss_round[0]}-{i}"))

    async def hit(i: int) -> object:
        return await downstream.call(GET_PRODUCT, hit_request)

    async def refresh() -> object:  # keeps the hit's entry fresh (ttl 1 s)
        return await downstream.call(GET_PRODUCT, hit_request, max_staleness=0.0)

    async def uncached(i: int) -> object:
        return await no_cache.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku=f"h{i}"))

    async def bare(i: int) -> object:
        return await lean.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku=f"b{i}"))

    async def raw_tls(i: int) -> object:
        tls_rpcs[0] += 1
        return await tls_stub.GetProduct(catalog_pb2.GetProductRequest(sku=f"r{i}"), timeout=5.0)

    async def miss_tls(i: int) -> object:
        result = await tls_downstream.call(GET_PRODUCT,
                                           catalog_pb2.GetProductRequest(sku=f"m{miss_round[0]}-{i}"))
        tls_rpcs[0] += result.provenance.attempts
        return result

    calls = {
        "raw grpc.aio stub": raw,
        "full stack, cache miss": miss,
        "full stack, cache hit": hit,
        "stack w/o cache": uncached,
        "stack w/o cache+hedging": bare,
        "raw grpc.aio stub, mTLS": raw_tls,
        "full stack, cache miss, mTLS": miss_tls,
    }
    before = await owner.handshakes()
    await interleaved(300, calls, refresh)  # warm up: connections, caches, the hedge's latency window
    warm = await owner.handshakes()
    miss_round[0] = 1
    rows = await interleaved(n, calls, refresh)
    after = await owner.handshakes()
    for d in (downstream, no_cache, lean, tls_downstream):
        await d.close()
    for c in (channel, tls_channel):
        await c.close(None)
    out = list(rows.values())
    raw_p50, miss_p50, hit_p50, uncached_p50, bare_p50, raw_tls_p50, miss_tls_p50 = (row.q(0.5) for row in out)
    out[1].note = f"p50 {miss_p50 / raw_p50:.2f}x raw (target <= 1.10x)"
    out[2].note = f"{raw_p50 / hit_p50:.0f}x faster than raw (target >= 20x)"
    out[3].note = f"p50 {uncached_p50 / raw_p50:.2f}x raw (no cache writes, no single-flight)"
    out[4].note = f"p50 {bare_p50 / raw_p50:.2f}x raw (retry, breaker, bulkhead, timeouts, balance)"
    out[5].note = (f"p50 {raw_tls_p50 / raw_p50:.2f}x raw; handshakes: {after - before} for {tls_rpcs[0]} calls "
                   f"over {tls_channels} channels ({after - warm} after the warm-up)")
    out[6].note = f"p50 {miss_tls_p50 / miss_p50:.2f}x the plaintext miss (target <= 1.10x)"
    return out


async def tail(n: int) -> list[Row]:
    """(2) two replicas each delaying 2% of calls by 500 ms; hedging off, then on."""
    rows = []
    async with owner_process(0.5, 0.02, seed=1) as (a, _), owner_process(0.5, 0.02, seed=2) as (b, _):
        for hedging in (False, True):
            config = DownstreamConfig(cache=CacheConfig(enabled=False), hedging=HedgingConfig(enabled=hedging))
            downstream = Downstream("catalog", [a, b], config)
            attempts = [0]

            async def call(i: int, downstream: Downstream = downstream, attempts: list[int] = attempts) -> object:
                result = await downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku=f"t{i}"))
                attempts[0] += result.provenance.attempts
                return result

            await concurrent(200, 8, call)  # warm up: connections, and the hedge delay's latency window
            attempts[0] = 0
            latencies = await concurrent(n, 8, call)
            extra = attempts[0] / n - 1.0
            rows.append(
                Row(f"2% x 500 ms, hedging {'on' if hedging else 'off'}", latencies, note=f"extra requests {extra:.1%}")
            )
            await downstream.close()
    off, on = rows
    on.note += f"; p99 {off.q(0.99) / on.q(0.99):.0f}x lower (target >= 10x, extra <= 5%)"
    return rows


async def open_loop(n: int, rate: float = 200.0) -> list[Row]:
    """(4) three replicas each delaying 2% of calls by 500 ms, calls sent at a fixed rate whatever the answers
    (open loop): one hedge (max_attempts 2) against two (3, the default)."""
    rows = []
    async with (
        owner_process(0.5, 0.02, seed=11) as (a, _),
        owner_process(0.5, 0.02, seed=12) as (b, _),
        owner_process(0.5, 0.02, seed=13) as (c, _),
    ):
        for attempts in (2, 3):
            config = DownstreamConfig(cache=CacheConfig(enabled=False), hedging=HedgingConfig(max_attempts=attempts))
            downstream = Downstream("catalog", [a, b, c], config)
            sent, failed = [0], [0]

            async def call(i: int, scheduled: float, downstream: Downstream = downstream, sent: list[int] = sent,
                           failed: list[int] = failed) -> float:
                # Latency from the scheduled start, so a late event loop shows as latency, not as a slower rate.
                try:
                    result = await downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku=f"o{i}"))
                    sent[0] += result.provenance.attempts
                except ResilienceError:  # a full bulkhead on a busy machine, say: counted, not fatal
                    failed[0] += 1
                return time.perf_counter() - scheduled

            async def paced(count: int) -> list[float]:
                calls = []
                begin = time.perf_counter()
                for i in range(count):
                    scheduled = begin + i / rate
                    delay = scheduled - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    calls.append(asyncio.ensure_future(call(i, scheduled)))
                return list(await asyncio.gather(*calls))

            await paced(min(n, 400))  # warm up: connections, latency estimates, the hedge delay's window
            sent[0] = failed[0] = 0
            latencies = await paced(n)
            extra = sent[0] / max(1, n - failed[0]) - 1.0
            rows.append(Row(f"3 x 2% x 500 ms, open, {attempts - 1} hedge{'s' if attempts > 2 else ''}", latencies,
                            note=f"extra requests {extra:.1%}; failed {failed[0]}; "
                                 "p99.9 target <= 40 ms, extra <= 5%"))
            await downstream.close()
    return rows


async def fail_fast(n: int) -> list[Row]:
    """(3) the owner is killed; once the breaker is open, how fast do calls fail?"""
    async with owner_process() as (address, process):
        config = DownstreamConfig(cache=CacheConfig(enabled=False), breaker=BreakerConfig(reset_timeout=60.0))
        downstream = Downstream("catalog", [address], config)
        await downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="x"))
        process.kill()
        process.wait()
        opened_after = 0
        while downstream.breaker_states()[address] != "open":
            opened_after += 1
            with contextlib.suppress(ResilienceError):
                await downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="x"))

        async def call(i: int) -> object:
            try:
                return await downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="x"))
            except CircuitOpen as error:
                return error

        name = "owner killed, breaker open"
        row = (await interleaved(n, {name: call}))[name]
        await downstream.close()
    row.note = f"opened after {opened_after} failed calls; p99 target < 5 ms"
    return [row]


def machine() -> str:
    uname = platform.uname()
    cpu = uname.processor or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores; {uname.system} {uname.release}; "
        f"Python {platform.python_version()}; grpcio {grpc.__version__}"
    )


def table(rows: list[Row]) -> str:
    lines = [
        f"{'case':34} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'CPU us/call':>12}  note",
    ]
    for row in rows:
        cpu = f"{row.cpu * 1e6:12.1f}" if row.cpu is not None else f"{'':12}"
        lines.append(
            f"{row.name:34} {len(row.latencies):6d} {row.q(0.5) * 1e3:8.3f} {row.q(0.99) * 1e3:8.3f} "
            f"{row.q(0.999) * 1e3:9.3f} {cpu}  {row.note}"
        )
    return "\n".join(lines)


async def run(quick: bool = False) -> None:
    print(f"resilience benchmark on {machine()}", flush=True)
    scale = 1 if quick else 5
    rows = await overhead(1000 * scale)
    rows += await tail(1000 if quick else 3000)
    rows += await open_loop(1000 if quick else 6000)
    rows += await fail_fast(1000 * scale)
    print(table(rows))
    print("(1), (5) sequential calls, the seven kinds taking turns call by call, to one owner process (plaintext and")
    print("mutual TLS ports); CPU is this process's only. Handshakes: the owner's TLS handshakes (ServerTls).")
    print("(2) 8 concurrent callers, two owner processes. (4) 200 calls a second whatever the answers, three owner")
    print("processes, one hedge against two. (3) after the breaker opened.")
    print("Ratios compare figures from this one run.")
