"""The overload and gray-failure benchmark (issue 13), against real `pullgate up` systems on this machine.

Three scenarios, all in one run, each printed as a table with its targets marked PASS or MISS (never asserted:
the figures are the point, before and after the mechanisms land):

1. spike (`--replicas 1`): capacity for strong order views (32 closed-loop callers), then open loop at 0.5x,
   3x for 10 s and 0.5x again, with 1 s deadlines. Targets: goodput in the spike >= 80% of capacity in every
   second after the first; back to >= 90% of offered within 5 s after it; no breaker of a healthy owner opened
   (gateway's and orders' `resilience_breaker_transitions_total{state="open"}`); refusals answered
   RESOURCE_EXHAUSTED in < 5 ms at p99.
2. gray failure (`--replicas 2`): one catalog replica frozen with SIGSTOP; from 2 s after the freeze, 300
   sequential bounded order views. Targets: 0 errors, p99 < 50 ms, the frozen replica's share of attempts
   <= 5% (from `resilience_attempts_total{downstream,replica}`, where the gateway has it).
3. tail (`--replicas 3`, `--faults catalog=delay:500ms@2%`): open-loop strong order views at a modest rate to
   a system with hedging and one without, taking turns request by request. Targets: p99.9 <= 40 ms and
   hedges sent <= 5% of catalog calls, with hedging.

The load comes from worker processes (benchmarks/openloop.py); latency counts from when each request was due.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from benchmarks import cpu, overload_plot, scrape
from benchmarks.openloop import ORDER_IDS, Phase, Result, Shot, Workers, collector_paused, view, workers
from benchmarks.resilience_bench import machine
from pullgate import topology
from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.tools.chaos import system
from pullgate.tools.chaos.load import CHANNEL_OPTIONS
from pullgate.tools.chaos.progress import percentile

DEADLINE = 1.0
"""Seconds every view is given."""
SLOW = 0.050
"""The gray-failure threshold: a view slower than this is slow."""
TAIL_FAULT = "catalog=delay:500ms@2%"
HEDGING_OFF = "[resilience.default.hedging]\nenabled = false\n"
SCENARIOS = ("spike", "gray", "tail")


@dataclass(frozen=True)
class Plan:
    """How long each part runs. Durations are seconds."""

    warm: float = 3.0
    """Closed-loop load before capacity is measured, not counted: connections, caches, hedging's latency window."""
    capacity: float = 5.0
    before: float = 5.0
    spike: float = 10.0
    after: float = 10.0
    gray_before: float = 3.0
    gray_settle: float = 2.0
    gray_views: int = 300
    gray_cap: float = 120.0
    """The counted views stop after this long even if fewer than `gray_views` were made (each may take 1 s)."""
    gray_after: float = 3.0
    tail_warm: float = 10.0
    tail_rate: float = 40.0
    """Views per second to each system."""
    tail_views: int = 20_000
    """Views per system."""


FULL = Plan()
QUICK = Plan(warm=0.5, capacity=1.0, before=1.0, spike=2.0, after=2.0, gray_before=1.0, gray_views=30,
             gray_cap=4.0, gray_after=1.0, tail_warm=0.0, tail_rate=40.0, tail_views=80)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets and how this run did: passed None means it could not be measured."""

    scenario: str
    name: str
    figure: str
    passed: bool | None

    def line(self) -> str:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[self.passed]
        return f"{verdict}  {self.scenario:5}  {self.name}: {self.figure}"


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


def _start(data_dir: Path, replicas: int, config: str, faults: str) -> system.Started:
    data_dir.mkdir(parents=True)
    config_file = None
    if config:
        config_file = data_dir / "bench.toml"
        config_file.write_text(config)
    return system.start(data_dir, replicas, config_file, ["--faults", faults] if faults else [])


@contextlib.asynccontextmanager
async def up(data_dir: Path, label: str, replicas: int, config: str = "", faults: str = "") -> AsyncIterator[System]:
    """`pullgate up --any-ports --allow-fault-injection --replicas N` in `data_dir` (with `config` as its
    --config file and `faults` as its --faults), stopped on exit."""
    started = await asyncio.to_thread(_start, data_dir, replicas, config, faults)
    try:
        state = system.read_state(data_dir)
        yield System(label, data_dir, state.addresses(topology.ENTRY)[0], scrape.endpoints(data_dir), faults)
    finally:
        await asyncio.to_thread(started.stop)


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def q(values: Sequence[float], quantile: float) -> float:
    """The quantile by nearest rank, NaN for no values."""
    return percentile(list(values), quantile) if values else math.nan


# -- 1. spike ------------------------------------------------------------------------------------------------


@dataclass
class Second:
    """One second of the open loop, by when its requests were due."""

    t: int
    phase: str
    offered: int
    kinds: Counter[str]
    ok: list[float]
    refused: list[float]
    """Latencies of RESOURCE_EXHAUSTED answers."""
    lag: list[float]
    overloaded: int

    @property
    def good(self) -> int:
        return self.kinds["good"]


def per_second(shots: Sequence[Shot], deadline: float) -> list[Second]:
    buckets: dict[int, list[Shot]] = defaultdict(list)
    for shot in shots:
        buckets[math.floor(shot.due)].append(shot)
    return [Second(t, bucket[0].phase, len(bucket), Counter(overload_plot.kind(s, deadline) for s in bucket),
                   [s.latency for s in bucket if s.code == "OK"],
                   [s.latency for s in bucket if s.code == "RESOURCE_EXHAUSTED"],
                   [s.lag for s in bucket], sum(s.overloaded for s in bucket))
            for t, bucket in sorted(buckets.items())]


def spike_table(seconds: Sequence[Second]) -> str:
    lines = [f"{'s':>3} {'phase':7} {'offered':>7} {'good':>5} {'RESEXH':>6} {'UNAVAIL':>7} {'DEADLN':>6} "
             f"{'other':>5}  {'OK p50':>7} {'OK p99':>7} {'RE p99':>7} {'lag p99':>7}  (ms)"]
    for s in seconds:
        lines.append(f"{s.t:3d} {s.phase:7} {s.offered:7d} {s.good:5d} {s.kinds['RESOURCE_EXHAUSTED']:6d} "
                     f"{s.kinds['UNAVAILABLE']:7d} {s.kinds['DEADLINE_EXCEEDED']:6d} {s.kinds['other']:5d}  "
                     f"{ms(q(s.ok, 0.5)):>7} {ms(q(s.ok, 0.99)):>7} {ms(q(s.refused, 0.99)):>7} "
                     f"{ms(q(s.lag, 0.99)):>7}")
    return "\n".join(lines)


def breakers_opened(before: Mapping[str, scrape.Reading], after: Mapping[str, scrape.Reading]) -> dict[str, float]:
    """Breakers that opened between two readings, as `caller->downstream` -> count."""
    opened: dict[str, float] = {}
    for name, reading in after.items():
        delta = reading.minus(before[name])
        for downstream, count in delta.by("resilience_breaker_transitions_total", "downstream", state="open").items():
            if count:
                opened[f"{name}->{downstream}"] = count
    return opened


def recovered_after(seconds: Sequence[Second], share: float) -> int | None:
    """Seconds until goodput stayed >= `share` of offered for the rest of `seconds`; None if it never did."""
    for i in range(len(seconds)):
        if all(s.good >= share * s.offered for s in seconds[i:]):
            return i
    return None


async def capacity(pool: Workers, target: str, plan: Plan) -> tuple[float, Result]:
    """OK answers per second with 32 closed-loop callers, after `plan.warm` seconds not counted."""
    result = await pool.closed_loop([target], 32, plan.warm + plan.capacity, "strong", DEADLINE)
    counted = [s for s in result.shots if s.code == "OK" and plan.warm <= s.end < plan.warm + plan.capacity]
    return len(counted) / plan.capacity, Result(counted, result.cpu)


async def spike(pool: Workers, sut: System, plan: Plan, out: Path) -> list[Target]:
    print(f"\n== 1. spike: strong order views, {DEADLINE:g} s deadlines, gateway {sut.label}", flush=True)
    meter = cpu.Meter()
    cap, measured = await capacity(pool, sut.gateway, plan)
    oks = [s.latency for s in measured.shots]
    print(f"capacity: {cap:.0f} OK views/s with 32 closed-loop callers over {plan.capacity:g} s "
          f"(p50 {ms(q(oks, 0.5))} ms, p99 {ms(q(oks, 0.99))} ms); {meter.usage().line()}", flush=True)
    phases = [Phase("before", plan.before, cap / 2), Phase("spike", plan.spike, 3 * cap),
              Phase("after", plan.after, cap / 2)]
    callers = sut.callers()
    before = await scrape.read_all(callers)
    meter = cpu.Meter()
    result, _ = await pool.open_loop([sut.gateway], phases, "strong", DEADLINE)
    usage = meter.usage()
    await asyncio.sleep(1.0)  # let the last transitions be counted
    opened = breakers_opened(before, await scrape.read_all(callers))
    seconds = per_second(result.shots, DEADLINE)
    print(spike_table(seconds))
    other = Counter(s.code for s in result.shots if overload_plot.kind(s, DEADLINE) == "other")
    if other:
        print("other: " + ", ".join(f"{code} {n}" for code, n in other.most_common()))
    duration = sum(p.seconds for p in phases)
    print(f"generator: send lag p50 {ms(result.lag(0.5))} ms, p99 {ms(result.lag(0.99))} ms, "
          f"max {ms(result.lag(1.0))} ms; {len(result.shots)} requests; its CPU {result.cpu:.1f} s over "
          f"{duration:g} s ({result.cpu / duration:.0%} of one core)")
    print(usage.line())
    path = out / "overload-timeline.png"
    overload_plot.spike(result.shots, phases, cap, DEADLINE, path,
                        f"pullgate spike: 3x capacity ({3 * cap:.0f}/s) for {plan.spike:g} s, strong order views, "
                        f"{DEADLINE:g} s deadlines")
    print(f"picture: {path}")
    return spike_targets(seconds, cap, opened, result.shots)


def spike_targets(seconds: Sequence[Second], cap: float, opened: Mapping[str, float],
                  shots: Sequence[Shot]) -> list[Target]:
    in_spike = [s for s in seconds if s.phase == "spike"][1:]
    after = [s for s in seconds if s.phase == "after"]
    low = min(in_spike, key=lambda s: s.good, default=None)
    short = sum(1 for s in in_spike if s.good < 0.8 * cap)
    goodput = Target(
        "spike", "goodput in every spike second after the first >= 80% of capacity",
        "no spike seconds" if low is None else
        f"lowest {low.good}/s = {low.good / cap:.0%} of {cap:.0f}/s (second {low.t}); "
        f"{short} of {len(in_spike)} seconds below", low is not None and short == 0)
    back = recovered_after(after, 0.9)
    recovery = Target(
        "spike", "after it, goodput >= 90% of offered within 5 s",
        f"after {back} s" if back is not None else f"not within the {len(after)} s measured",
        back is not None and back <= 5)
    breakers = Target(
        "spike", "breakers of healthy owners opened",
        ", ".join(f"{k} {v:.0f}" for k, v in sorted(opened.items())) or "none", not opened)
    refused = [s for s in shots if s.code == "RESOURCE_EXHAUSTED"]
    codes = Counter(s.code for s in shots if s.code != "OK")
    if refused:
        marked = sum(s.overloaded for s in refused)
        p99 = q([s.latency for s in refused], 0.99)
        fast = Target("spike", "RESOURCE_EXHAUSTED p99 < 5 ms",
                      f"{ms(p99)} ms over {len(refused)} ({marked} with resilience-overloaded: 1)", p99 < 0.005)
    else:
        others = ", ".join(f"{code} {n}" for code, n in codes.most_common()) or "none"
        fast = Target("spike", "RESOURCE_EXHAUSTED p99 < 5 ms",
                      f"none answered RESOURCE_EXHAUSTED (failures: {others})", False)
    return [goodput, recovery, breakers, fast]


# -- 2. gray failure -----------------------------------------------------------------------------------------


@dataclass
class GrayRun:
    """Every sequential view of the gray-failure run and its marks, as seconds since the first view, and the
    gateway's metrics at the freeze, when the counted views began and when they ended."""

    shots: list[Shot] = field(default_factory=list)
    frozen_at: float = math.nan
    thawed_at: float = math.nan
    counted: tuple[float, float] = (math.nan, math.nan)
    readings: dict[str, scrape.Reading] = field(default_factory=dict)
    usage: cpu.Usage | None = None


ATTEMPTS = "resilience_attempts_total"
"""The per-replica attempt counter the client side adds (OpenTelemetry `resilience.attempts`)."""


async def freeze_run(sut: System, victim: system.Proc, plan: Plan) -> GrayRun:
    """Sequential bounded views before, while and after `victim` is frozen (SIGSTOP, SIGCONT however this ends)."""
    run = GrayRun()
    gateway_metrics = sut.metrics[topology.ENTRY]
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(sut.gateway, options=CHANNEL_OPTIONS) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        await asyncio.wait_for(channel.channel_ready(), 30.0)
        origin = loop.time()
        k = 0

        async def views(phase: str, until: float = math.inf, count: int = 0) -> None:
            nonlocal k
            made = 0
            while loop.time() - origin < until and (not count or made < count):
                sent = loop.time()
                code, overloaded, degraded = await view(stub, "bounded", ORDER_IDS[k % len(ORDER_IDS)], DEADLINE)
                run.shots.append(Shot(phase, 0, sent - origin, 0.0, loop.time() - sent, code, overloaded, degraded))
                k += 1
                made += 1

        meter = cpu.Meter()
        with collector_paused():  # the views are timed in this process
            await views("before", plan.gray_before)
            run.readings["freeze"] = await scrape.read(gateway_metrics)
            system.send(victim.pid, signal.SIGSTOP)
            run.frozen_at = loop.time() - origin
            try:
                await views("settle", run.frozen_at + plan.gray_settle)
                run.readings["counted"] = await scrape.read(gateway_metrics)
                start = loop.time() - origin
                await views("counted", start + plan.gray_cap, plan.gray_views)
                run.counted = (start, loop.time() - origin)
                run.readings["end"] = await scrape.read(gateway_metrics)
            finally:
                system.send(victim.pid, signal.SIGCONT)
                run.thawed_at = loop.time() - origin
            await views("thawed", run.thawed_at + plan.gray_after)
        run.usage = meter.usage()
    return run


async def gray(sut: System, plan: Plan, out: Path) -> list[Target]:
    state = system.read_state(sut.data_dir)
    victim = state.proc("catalog-1" if "catalog-1" in state.names else "catalog")
    print(f"\n== 2. gray failure: {victim.name} ({victim.address}) frozen with SIGSTOP; sequential bounded "
          f"order views, {DEADLINE:g} s deadlines", flush=True)
    run = await freeze_run(sut, victim, plan)
    first, frozen, last = run.readings["counted"], run.readings["freeze"], run.readings["end"]
    counted = [s for s in run.shots if s.phase == "counted"]
    lat = [s.latency for s in counted]
    errors = Counter(s.code for s in counted if s.code != "OK")
    degraded = sum(1 for s in counted if s.code == "OK" and s.degraded)
    print(f"{'views':>6} {'errors':>6} {'degraded':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  over")
    print(f"{len(counted):6d} {sum(errors.values()):6d} {degraded:8d} {ms(q(lat, 0.5)):>7} {ms(q(lat, 0.99)):>7} "
          f"{ms(max(lat, default=math.nan)):>7}  {run.counted[1] - run.counted[0]:.1f} s from "
          f"{run.counted[0] - run.frozen_at:.1f} s after the freeze"
          + (f" (stopped at the {plan.gray_cap:g} s cap)" if len(counted) < plan.gray_views else ""))
    if errors:
        print("errors: " + ", ".join(f"{code} {n}" for code, n in errors.most_common()))
    delta = last.minus(first)
    opened = last.minus(frozen).by("resilience_breaker_transitions_total", "replica", downstream="catalog",
                                   state="open")
    print(f"gateway's catalog breakers opened from the freeze to the last counted view: "
          f"{opened.get(victim.address, 0):.0f} on the frozen replica, "
          f"{sum(v for r, v in opened.items() if r != victim.address):.0f} on others")
    lookups = delta.by("resilience_cache_requests_total", "result", downstream="catalog")
    print(f"gateway's catalog lookups while counted: {sum(lookups.values()):.0f}, of which "
          f"{lookups.get('miss', 0):.0f} went to a replica (the others: "
          f"{', '.join(f'{k} {v:.0f}' for k, v in sorted(lookups.items()) if k != 'miss') or 'none'})")
    if run.usage is not None:
        print(run.usage.line())
    print(f"views stopped being slow (every later second's p99 < {SLOW * 1000:.0f} ms): {recovered(run, SLOW)}")
    path = out / "overload-freeze.png"
    overload_plot.freeze(run.shots, (run.frozen_at, run.thawed_at), run.counted, SLOW, path,
                         f"pullgate gray failure: {victim.name} frozen (SIGSTOP), sequential bounded order views")
    print(f"picture: {path}")
    if last.has(ATTEMPTS):
        attempts = delta.by(ATTEMPTS, "replica", downstream="catalog")
        total = sum(attempts.values())
        share_figure = (f"{attempts.get(victim.address, 0) / total:.1%} of {total:.0f} catalog attempts"
                        if total else "no catalog attempts while counted")
        share = Target("gray", "frozen replica's share of attempts after ejection <= 5%", share_figure,
                       bool(total) and attempts.get(victim.address, 0) <= 0.05 * total)
    else:
        share = Target("gray", "frozen replica's share of attempts after ejection <= 5%",
                       "n/a (no per-replica attempt metric)", None)
    p99 = q(lat, 0.99)
    return [
        Target("gray", "errors in the counted views = 0",
               f"{sum(errors.values())} of {len(counted)}" + (f" ({degraded} degraded)" if degraded else ""),
               bool(counted) and not errors),
        Target("gray", f"p99 < {SLOW * 1000:.0f} ms", f"{ms(p99)} ms (max {ms(max(lat, default=math.nan))} ms)",
               p99 < SLOW),
        share,
    ]


def recovered(run: GrayRun, slow: float) -> str:
    """When views stopped being slow: the first second after the freeze from which every second's p99 < `slow`
    while the replica stayed frozen (a sequential loop's seconds hold few views when one is slow, so one slow
    second later counts against it)."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for shot in run.shots:
        if run.frozen_at <= shot.due < run.thawed_at:
            buckets[math.floor(shot.due - run.frozen_at)].append(shot.latency)
    seconds = range(math.ceil(run.thawed_at - run.frozen_at))
    slow_seconds = [t for t in seconds if not buckets[t] or q(buckets[t], 0.99) >= slow]
    listed = ", ".join(map(str, slow_seconds[:12])) + (", ..." if len(slow_seconds) > 12 else "")
    if not slow_seconds:
        return "at once: every second after the freeze had p99 < 50 ms"
    settled = slow_seconds[-1] + 1
    if settled >= len(seconds):
        return f"not while frozen ({len(seconds)} s); slow seconds after the freeze: {listed}"
    return f"from second {settled} after the freeze on; slow seconds: {listed}"


# -- 3. tail -------------------------------------------------------------------------------------------------


async def set_faults(address: str, spec: str) -> str:
    """Replace the faults of the server at `address` through its FaultService; the spec it had before."""
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await admin_pb2_grpc.FaultServiceStub(channel).SetFaults(admin_pb2.SetFaultsRequest(spec=spec),
                                                                          timeout=5)
    return reply.previous.spec


@contextlib.asynccontextmanager
async def faults(sut: System, spec: str) -> AsyncIterator[None]:
    """`spec` in force on every catalog process of `sut` (unless it was started with it), as before on exit."""
    if sut.faults == spec:
        yield
        return
    addresses = system.read_state(sut.data_dir).addresses("catalog")
    previous = [await set_faults(a, spec) for a in addresses]
    try:
        yield
    finally:
        for address, spec_before in zip(addresses, previous, strict=True):
            await set_faults(address, spec_before)


def catalog_calls(reading: scrape.Reading) -> tuple[float, float]:
    """(hedges sent, calls) to catalog, as the gateway counts them."""
    return (reading.total("resilience_hedges_sent_total", downstream="catalog"),
            reading.total("resilience_call_duration_seconds_count", downstream="catalog"))


async def tail(pool: Workers, suts: Sequence[System], plan: Plan) -> list[Target]:
    rate = plan.tail_rate * len(suts)
    seconds = plan.tail_views / plan.tail_rate
    print(f"\n== 3. tail: {TAIL_FAULT} on every catalog replica; open-loop strong order views, "
          f"{plan.tail_rate:g}/s to each of {len(suts)} systems taking turns request by request, "
          f"{DEADLINE:g} s deadlines", flush=True)
    targets = [s.gateway for s in suts]
    async with contextlib.AsyncExitStack() as stack:
        for sut in suts:
            await stack.enter_async_context(faults(sut, TAIL_FAULT))
        if plan.tail_warm:
            await pool.open_loop(targets, [Phase("warm", plan.tail_warm, rate)], "strong", DEADLINE)
        gateways = {s.label: s.metrics[topology.ENTRY] for s in suts}
        before = await scrape.read_all(gateways)
        meter = cpu.Meter()
        result, _ = await pool.open_loop(targets, [Phase("tail", seconds, rate)], "strong", DEADLINE)
        usage = meter.usage()
        after = await scrape.read_all(gateways)
    print(f"{'system':<22} {'views':>6} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'max ms':>7} "
          f"{'hedges':>6} {'calls':>6} {'extra':>6}")
    rows: dict[str, tuple[float, float]] = {}
    for index, sut in enumerate(suts):
        shots = [s for s in result.shots if s.target == index]
        lat = [s.latency if s.code == "OK" else DEADLINE for s in shots]  # an error is as bad as no answer
        errors = sum(1 for s in shots if s.code != "OK")
        hedges, calls = catalog_calls(after[sut.label].minus(before[sut.label]))
        extra = hedges / calls if calls else math.nan
        rows[sut.label] = (q(lat, 0.999), extra)
        print(f"{sut.label:<22} {len(shots):6d} {errors:6d} {ms(q(lat, 0.5)):>7} {ms(q(lat, 0.99)):>7} "
              f"{ms(q(lat, 0.999)):>8} {ms(max(lat, default=math.nan)):>7} {hedges:6.0f} {calls:6.0f} {extra:6.1%}")
    print(f"generator: send lag p99 {ms(result.lag(0.99))} ms, max {ms(result.lag(1.0))} ms")
    print(usage.line())
    print("Latency of every view, an error counted as the whole deadline; p99.9 of n views rests on the slowest "
          "n/1000 of them. extra = hedges sent / catalog calls at the gateway (resilience_hedges_sent_total / "
          "resilience_call_duration_seconds_count).")
    on = rows[suts[0].label]
    out = [Target("tail", "p99.9 <= 40 ms with hedging", f"{ms(on[0])} ms", on[0] <= 0.040),
           Target("tail", "extra requests <= 5% with hedging", f"{on[1]:.1%}", on[1] <= 0.05)]
    if len(suts) > 1:
        off = rows[suts[1].label]
        out[0] = Target("tail", out[0].name, f"{ms(on[0])} ms (without hedging {ms(off[0])} ms)", on[0] <= 0.040)
    return out


# -- the run -------------------------------------------------------------------------------------------------


async def run(quick: bool = False, out: Path = Path("."), only: Sequence[str] = SCENARIOS) -> list[Target]:
    """Run the chosen scenarios, print their tables and the targets; the targets, for a caller to inspect."""
    plan = QUICK if quick else FULL
    began = time.monotonic()
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    print(f"overload benchmark on {machine()}", flush=True)
    targets: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="pullgate-overload-") as tmp:
        base = Path(tmp)
        async with workers(2) as pool:
            print(pool.describe(), flush=True)
            if quick:
                # A smoke run: one system serves every scenario (each start costs 10-30 s here); figures mean
                # nothing, only that every part of the harness ran.
                async with up(base / "all", "replicas 1", 1) as shared:
                    if "spike" in only:
                        targets += await spike(pool, shared, plan, out)
                    if "gray" in only:
                        targets += await gray(shared, plan, out)
                    if "tail" in only:
                        targets += await tail(pool, [shared], plan)
            else:
                if "spike" in only:
                    async with up(base / "spike", "replicas 1", 1) as sut:
                        targets += await spike(pool, sut, plan, out)
                if "gray" in only:
                    async with up(base / "gray", "replicas 2", 2) as sut:
                        targets += await gray(sut, plan, out)
                if "tail" in only:
                    async with (up(base / "tail-on", "replicas 3, hedging on", 3, faults=TAIL_FAULT) as on,
                                up(base / "tail-off", "replicas 3, hedging off", 3, HEDGING_OFF, TAIL_FAULT) as off):
                        targets += await tail(pool, [on, off], plan)
    print("\n== targets (issue 13)")
    for target in targets:
        print(target.line())
    print(f"{'quick' if quick else 'full'} run took {time.monotonic() - began:.0f} s")
    return targets


__all__ = ["FULL", "QUICK", "SCENARIOS", "Plan", "Target", "run"]
