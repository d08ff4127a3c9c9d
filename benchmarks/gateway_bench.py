"""`./dev bench gateway`: pullgate's gateway against a hand-written one over the same owners, in one run, taking
turns (issue 17's honest comparison).

One `pullgate up --any-ports` supplies the owners and a gateway with the default config (cache on), secure as by
default. Beside it: a second pullgate gateway (`pullgate serve gateway`, cache off, metrics on as a user runs it),
a third with every policy that can be switched off switched off (`LEAN`), and the hand-written gateway
(benchmarks/handwritten_gateway.py: plain stubs and gather), all calling the same owners with the first gateway's
certificate, so all four are alike on the wire: TLS from the benchmark, mutual TLS to the owners. Every view
carries a token that may read every order (pullgate's gateways check it; the hand-written one, which checks
nothing, ignores it). Then, with the gateways taking turns (view by view in 1, block by block in 2 and 3) so
that all see the same machine:

1. N=1: sequential strong order views, the gateways taking turns view by view; p50 of pullgate (cache off) over
   hand-written.
2. N=16: 16 closed-loop callers of strong views; OK views a second, and each gateway process's CPU per view
   (/proc), pullgate (cache off) over hand-written.
   The lean gateway takes its turns in 1 and 2 too, so the gap splits into the skeleton's and the policies'.
3. The default read mode with pullgate's cache on, 16 callers over a Zipf(1.1) choice of every demo order;
   hand-written as before (it has no cache): throughput, p50 and CPU per view.

It prints the ratios and writes a bar chart (`--out DIR`, default .: gateway-comparison.png).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from benchmarks.resilience_bench import machine
from benchmarks.tracing_bench import process_cpu
from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.security.access import Access
from pullgate.security.pki import Pki
from pullgate.tools import openloop
from pullgate.tools.gateway_channel import Metadata
from pullgate.tools.openloop import ORDER_IDS, REFUSED_PAUSE
from pullgate.tools.stats import percentile

STRONG = pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG)
DEFAULT = pb.ReadOptions()
OWNERS = topology.service(topology.ENTRY).upstreams
"""The owners the gateway calls, as the topology says."""
LEAN = "".join(f"[resilience.default.{policy}]\nenabled = false\n" for policy in (
    "cache", "retry", "hedging", "breaker", "bulkhead", "throttle", "outlier_detection")) + (
    "[admission.gateway]\nenabled = false\n")
"""pullgate's gateway with every policy that can be switched off switched off: what is left is what every call
pays (the deadline, the balancer, the token check, tracing's no-op, the metrics, the decoding), so the gap to the
hand-written gateway splits into what the skeleton costs and what the policies do."""


@dataclass
class Gateway:
    """One gateway under test: its stub, the metadata its calls carry, its pid, and what it was measured at."""

    label: str
    stub: gateway_pb2_grpc.GatewayServiceStub
    metadata: Metadata
    pid: int
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    refused: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    """The refusals by status code: CANCELLED is grpc's core refusing at its queue (max_pending_requests),
    RESOURCE_EXHAUSTED admission control or an owner's refusal passed on, UNAVAILABLE a strong read that failed."""
    seconds: float = 0.0
    cpu: float = 0.0

    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def cpu_per_view(self) -> float:
        return self.cpu / self.ok if self.ok else float("nan")

    def reset(self) -> None:
        self.latencies, self.ok, self.refused, self.seconds, self.cpu = [], 0, 0, 0.0, 0.0
        self.codes = Counter()


def _uniform(rng: random.Random) -> str:
    return ORDER_IDS[rng.randrange(len(ORDER_IDS))]


def _zipf(names: Sequence[str], s: float = 1.1) -> Callable[[random.Random], str]:
    weights = [1 / (k ** s) for k in range(1, len(names) + 1)]
    return lambda rng: rng.choices(names, weights)[0]


def _read(path: Path) -> str:
    """The file's text, stripped; "" while it does not exist yet."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


async def _wait_for_file(path: Path, process: subprocess.Popen[bytes], what: str) -> str:
    end = time.monotonic() + 90
    while not (text := _read(path)):
        if process.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"{what} did not start")
        await asyncio.sleep(0.1)
    return text


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@contextlib.asynccontextmanager
async def _process(command: list[str], port_file: Path, what: str) -> AsyncIterator[tuple[str, int]]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    try:
        port = await _wait_for_file(port_file, process, what)
        yield f"127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(30)


def _tls(access: Access) -> list[str]:
    """The TLS flags that give another gateway the identity of `access`'s system's gateway: its certificate (the
    owners' policy lets it call them; callers check a gateway's certificate names `gateway`) and key, and the CA."""
    assert access.pki is not None, "the gateway benchmark starts a secure system"
    pki = Pki(access.pki)
    return ["--tls-cert", str(pki.cert(topology.ENTRY)), "--tls-key", str(pki.key(topology.ENTRY)),
            "--tls-ca", str(pki.ca)]


@contextlib.asynccontextmanager
async def systems(root: Path) -> AsyncIterator[tuple[Access, dict[str, tuple[str, int]]]]:
    """How to reach the system, and (address, pid) of: pullgate's gateway with the cache on and off, and the
    hand-written one."""
    data = root / "up"
    up = subprocess.Popen(  # noqa: ASYNC220 (started once, before anything is measured)
        [sys.executable, "-m", "pullgate", "up", "--any-ports", "--data-dir", str(data)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        state = json.loads(await _wait_for_file(data / "pullgate-up.json", up, "pullgate up"))
        services, access = state["services"], Access.from_state(state)
        upstreams = [f"{name}={services[name][0]['address']}" for name in OWNERS]
        flags = [arg for u in upstreams for arg in ("--upstream", u)] + _tls(access)
        config = _write(root / "cache-off.toml", "[resilience.default.cache]\nenabled = false\n")
        lean = _write(root / "lean.toml", LEAN)

        def gateway(config: Path, name: str) -> list[str]:
            return [sys.executable, "-m", "pullgate", "serve", "gateway", "--port", "0", "--metrics-port", "0",
                    "--config", str(config), "--port-file", str(root / f"{name}.port"), *flags,
                    "--token-secret", str(access.token_file)]

        async with (
            _process(gateway(config, "nocache"), root / "nocache.port", "pullgate serve gateway") as nocache,
            _process(gateway(lean, "lean"), root / "lean.port", "pullgate serve gateway, lean") as lean_gateway,
            _process([sys.executable, "-m", "benchmarks.handwritten_gateway", "--port-file", str(root / "hand.port"),
                      *flags], root / "hand.port", "the hand-written gateway") as hand,
        ):
            entry = services["gateway"][0]
            yield access, {"pullgate": (entry["address"], int(entry["pid"])), "pullgate, cache off": nocache,
                           "pullgate, lean": lean_gateway, "hand-written": hand}
    finally:
        up.terminate()
        up.wait(30)


async def _in_turn(gateways: Sequence[Gateway], n: int, read: pb.ReadOptions) -> None:
    """`n` sequential views from each gateway, taking turns view by view: the machine's drift falls on all alike."""
    for k in range(n):
        request = pb.GetOrderViewRequest(order_id=ORDER_IDS[k % len(ORDER_IDS)], read=read)
        for gw in gateways:
            start = time.perf_counter()
            await gw.stub.GetOrderView(request, timeout=5, metadata=gw.metadata)
            gw.latencies.append(time.perf_counter() - start)
            gw.ok += 1


async def _closed(gw: Gateway, callers: int, seconds: float, read: pb.ReadOptions,
                  pick: Callable[[random.Random], str]) -> None:
    """`callers` closed-loop callers for `seconds`; OK views, their latency and the gateway's CPU are added."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    cpu = process_cpu(gw.pid)
    began = loop.time()

    async def caller(seed: int) -> None:
        rng = random.Random(seed)
        while loop.time() < end:
            start = time.perf_counter()
            try:
                await gw.stub.GetOrderView(pb.GetOrderViewRequest(order_id=pick(rng), read=read), timeout=5,
                                           metadata=gw.metadata)
            except grpc.aio.AioRpcError as error:
                gw.codes[error.code().name] += 1
                # Refused (the gateway's admission or grpc core's short queue): back off as a client that
                # honours "overloaded" does, rather than spin (the overload benchmark's capacity callers too).
                gw.refused += 1
                await asyncio.sleep(REFUSED_PAUSE)
                continue
            gw.latencies.append(time.perf_counter() - start)
            gw.ok += 1

    await asyncio.gather(*(caller(k) for k in range(callers)))
    gw.seconds += loop.time() - began
    gw.cpu += process_cpu(gw.pid) - cpu


def _codes(codes: dict[str, int]) -> str:
    return "(" + ", ".join(f"{n} {code}" for code, n in sorted(codes.items(), key=lambda kv: -kv[1])) + ")"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


async def run(quick: bool = False, out: Path = Path(".")) -> None:
    rounds = 3 if quick else 8
    sequential, block = (100, 1.5) if quick else (200, 3.0)
    zipf = _zipf(ORDER_IDS)
    print(f"gateway comparison on {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="pullgate-gateway-bench-") as tmp:
        async with systems(Path(tmp)) as (access, found), contextlib.AsyncExitStack() as stack:
            gateways = {}
            for label, (address, pid) in found.items():
                target = openloop.Gateway.of(address, access)
                channel = await stack.enter_async_context(target.channel(()))
                gateways[label] = Gateway(label, gateway_pb2_grpc.GatewayServiceStub(channel), target.metadata, pid)
            for gw in gateways.values():  # warm up: connections, handles, trackers
                await _in_turn([gw], 50, STRONG)
            pull, hand, cached = gateways["pullgate, cache off"], gateways["hand-written"], gateways["pullgate"]
            lean = gateways["pullgate, lean"]
            results: dict[str, tuple[float, float]] = {}
            skeleton: dict[str, float] = {}
            """The lean gateway's figure for each strong, cache-off row."""

            def flipped(r: int, pair: list[Gateway]) -> list[Gateway]:
                return pair if r % 2 == 0 else pair[::-1]

            for gw in gateways.values():
                gw.reset()
            for r in range(rounds):
                await _in_turn(flipped(r, [pull, lean, hand]), sequential, STRONG)
            results["N=1 p50, strong, cache off (ms)"] = (percentile(pull.latencies, 0.5) * 1e3,
                                                          percentile(hand.latencies, 0.5) * 1e3)
            skeleton["N=1 p50, strong, cache off (ms)"] = percentile(lean.latencies, 0.5) * 1e3
            for gw in gateways.values():
                gw.reset()
            for r in range(rounds):
                for gw in flipped(r, [pull, lean, hand]):
                    await _closed(gw, 16, block, STRONG, _uniform)
            results["N=16 throughput, strong, cache off (views/s)"] = (pull.throughput(), hand.throughput())
            refusals = {"strong, cache off": (pull.refused, hand.refused)}
            codes = {"strong, cache off": (dict(pull.codes), dict(hand.codes))}
            results["gateway CPU per view, strong, cache off (ms)"] = (pull.cpu_per_view() * 1e3,
                                                                       hand.cpu_per_view() * 1e3)
            skeleton["N=16 throughput, strong, cache off (views/s)"] = lean.throughput()
            skeleton["gateway CPU per view, strong, cache off (ms)"] = lean.cpu_per_view() * 1e3
            lean_refused = (lean.refused, dict(lean.codes))
            for gw in gateways.values():
                gw.reset()
            for r in range(rounds):
                for gw in flipped(r, [cached, hand]):
                    await _closed(gw, 16, block, DEFAULT, zipf)
            refusals["default read, cache on"] = (cached.refused, hand.refused)
            codes["default read, cache on"] = (dict(cached.codes), dict(hand.codes))
            results["N=16 throughput, default read, cache on, Zipf(1.1) (views/s)"] = (cached.throughput(),
                                                                                        hand.throughput())
            results["p50 at N=16, default read, cache on, Zipf(1.1) (ms)"] = (
                percentile(cached.latencies, 0.5) * 1e3, percentile(hand.latencies, 0.5) * 1e3)
            results["gateway CPU per view, default read, cache on (ms)"] = (cached.cpu_per_view() * 1e3,
                                                                           hand.cpu_per_view() * 1e3)
    targets = {"N=1 p50, strong, cache off (ms)": "target <= 1.05x",
               "N=16 throughput, strong, cache off (views/s)": "target >= 0.95x",
               "gateway CPU per view, strong, cache off (ms)": "target <= 1.10x"}
    print(f"{'figure':<62} {'pullgate':>9} {'hand':>9} {'ratio':>7}")
    for name, (mine, theirs) in results.items():
        print(f"{name:<62} {mine:>9.2f} {theirs:>9.2f} {_ratio(mine, theirs):>7}  {targets.get(name, '')}")
    print("lean: pullgate's gateway with every policy that can be off switched off (cache, retry, hedging, "
          "breaker, bulkhead, throttle, outlier detection, admission), taking the same turns")
    for name, value in skeleton.items():
        theirs = results[name][1]
        print(f"{'  lean, ' + name:<62} {value:>9.2f} {theirs:>9.2f} {_ratio(value, theirs):>7}")
    print(f"views refused at N=16, strong, cache off: lean {lean_refused[0]} {_codes(lean_refused[1])}")
    for name, (mine, theirs) in refusals.items():
        print(f"views refused at N=16, {name}: pullgate {mine} {_codes(codes[name][0])}, hand-written {theirs} "
              f"{_codes(codes[name][1])} (each caller pauses {REFUSED_PAUSE * 1000:.0f} ms after one)")
    print(f"{rounds} rounds, the gateways taking turns (order flipped each round); N=1: {sequential} views each, "
          f"view by view; N=16: {block:g} s blocks; CPU: the gateway process alone (/proc), user + system")
    path = _chart(results, out / "gateway-comparison.png")
    print(f"picture: {path}")


def _chart(results: dict[str, tuple[float, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use(): the backend must be chosen first

    names = list(results)
    ratios = [mine / theirs if theirs else 0.0 for mine, theirs in results.values()]
    figure, ax = plt.subplots(figsize=(10, 4.5))
    bars = ax.barh(range(len(names)), ratios, color="#1f77b4")
    ax.axvline(1.0, color="#444444", linewidth=1)
    ax.set_yticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
    ax.invert_yaxis()
    for bar, ratio in zip(bars, ratios, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {ratio:.2f}x", va="center", fontsize=8)
    ax.set_xlabel("pullgate / hand-written (1.0 = the same)")
    ax.set_title("pullgate's gateway against a hand-written one, same owners, taking turns", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


__all__ = ["run"]
