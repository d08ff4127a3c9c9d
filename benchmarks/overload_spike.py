"""Scenario 1, the spike: does the system keep serving its capacity when offered three times as much, and is it
back at once afterwards?

One `--replicas 1` system. Capacity first: OK strong order views per second from 32 closed-loop callers (runs
differ, so it is measured, not assumed). Then open loop at 0.5x capacity, 3x for 10 s, 0.5x for 10 s, every
view with a 1 s deadline, and a table per second by when each request was due: offered, good (OK within the
deadline), refused by code, latency of OK answers (from when each was due) and of refusals (from when each was
sent: how long the caller waited for the "no"; the generator's own lateness in sending is the last column), and
the generator's send lag. Then the same closed loop again. The spike's goodput is judged second against second:
its seconds, lowest first, each against the closed loops' seconds at the same rank, scaled to the cores the
load left the system; a closed loop with no overload has had its lowest second 7-28% under its own mean here, so
a verdict against the mean would ask the spike to be steadier than the machine (docs/overload.md).
A refusal is RESOURCE_EXHAUSTED made at arrival (by the edge, HAProxy in front of the
gateway, or by admission control in Python) or CANCELLED (grpc's core, when its queue in front of Python is full):
all are counted, and the target names how many came from each; a view the gateway admitted and an owner then
refused a part of (trailer `resilience-failure-origin`) is a failure, not a refusal.
Breakers are counted from `resilience_breaker_transitions_total{state="open"}` on the gateway and on every
orders process, read before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import canary, cpu, overload_plot
from benchmarks.canary import Canary
from benchmarks.overload_plan import DEADLINE, Plan, Target, ms, q
from benchmarks.overload_system import System
from pullgate.tools import machine, scrape
from pullgate.tools.openloop import REFUSALS, Gateway, Phase, Result, Shot, Workers
from resilience import Criticality

CALLERS = 32
"""Closed-loop callers that measure capacity."""
SHARE = 0.8
"""Each spike second after the first must serve this share of the closed loops' second at its rank."""


@dataclass
class Second:
    """One second of the open loop, by when its requests were due."""

    t: int
    phase: str
    offered: int
    kinds: Counter[str]
    ok: list[float]
    refused: list[float]
    """Latencies of refusals (RESOURCE_EXHAUSTED or CANCELLED)."""
    lag: list[float]
    overloaded: int
    lost: int = 0
    """Views the gateway admitted and an owner then refused a part of (its work was spent for nothing)."""
    cores: float | None = None
    """Cores the system's processes (servers and edge) used in this second; None where not sampled."""
    idle: float | None = None
    """Cores the machine left idle in this second (nobody's work); None where not sampled."""
    room: int | None = None
    """The fewest places the edge gave reads (SHEDDABLE) at any sample in this second; None without an edge."""
    in_flight: int | None = None
    """The most requests the edge had in flight to the gateway at any sample in this second; None without one."""
    speed: float | None = None
    """How fast the machine's cores ran in this second against while capacity was measured (benchmarks.canary):
    1.00 the same, 0.80 when the same work took 1.25 times the CPU; None where not timed."""

    @property
    def good(self) -> int:
        return self.kinds["good"]

    @property
    def cost(self) -> float:
        """The system's CPU in this second per good view, in seconds (NaN where unknown or none were good)."""
        return self.cores / self.good if self.cores is not None and self.good else math.nan


def per_second(shots: Sequence[Shot], deadline: float) -> list[Second]:
    buckets: dict[int, list[Shot]] = defaultdict(list)
    for shot in shots:
        buckets[math.floor(shot.due)].append(shot)
    return [Second(t, bucket[0].phase, len(bucket), Counter(overload_plot.kind(s, deadline) for s in bucket),
                   [s.latency for s in bucket if s.code == "OK"],
                   [s.latency - s.lag for s in bucket if s.refused],
                   [s.lag for s in bucket], sum(s.overloaded for s in bucket),
                   sum(1 for s in bucket if s.relayed and s.code in REFUSALS))
            for t, bucket in sorted(buckets.items())]


def with_cores(seconds: Sequence[Second], trace: machine.Trace, origin: float, cpus: int) -> list[Second]:
    """`seconds` with the cores the system used in each and those the machine left idle (`origin`: the
    schedule's, as `time.monotonic()`; `cpus`: the machine's cores)."""
    out = []
    for s in seconds:
        share = trace.between(origin + s.t, origin + s.t + 1)
        out.append(s if share is None else replace(s, cores=share.system, idle=max(0.0, cpus - share.busy)))
    return out


@dataclass(frozen=True)
class EdgeSample:
    """What the edge enforced at one moment: the room for reads, and the requests it had in flight."""

    at: float
    room: int
    in_flight: int


async def sample_edge(sut: System, stop: asyncio.Event, every: float = 0.2) -> list[EdgeSample]:
    """The edge's room for reads and its requests in flight every `every` seconds until `stop` is set ([] without
    an edge). Read from HAProxy's runtime API, which costs the edge microseconds and the gateway nothing."""
    edge = sut.edge()
    samples: list[EdgeSample] = []
    if edge is None:
        return samples
    api, rooms = edge
    while not stop.is_set():
        with contextlib.suppress(OSError, ValueError, KeyError, TimeoutError):
            room = (await api.rooms(rooms))[int(Criticality.SHEDDABLE)]
            samples.append(EdgeSample(time.monotonic(), room, await api.in_flight()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    return samples


def with_edge(seconds: Sequence[Second], samples: Sequence[EdgeSample], origin: float) -> list[Second]:
    """`seconds` with the edge's fewest places for reads and most requests in flight in each (`origin`: the
    schedule's, as `time.monotonic()`); seconds without a sample are left as they are."""
    out = []
    for s in seconds:
        inside = [e for e in samples if origin + s.t <= e.at < origin + s.t + 1]
        out.append(replace(s, room=min(e.room for e in inside), in_flight=max(e.in_flight for e in inside))
                   if inside else s)
    return out


def with_speed(seconds: Sequence[Second], canary: Canary, origin: float, reference: float | None) -> list[Second]:
    """`seconds` with the machine's speed in each against `reference` (the canary's cost while capacity was measured;
    `origin`: the schedule's, as `time.monotonic()`); seconds without a timing, or without a reference, as they are."""
    out = []
    for s in seconds:
        cost = canary.cost(origin + s.t, origin + s.t + 1)
        out.append(s if cost is None or not reference else replace(s, speed=reference / cost))
    return out


def _cores(cores: float | None) -> str:
    return "-" if cores is None else f"{cores:.2f}"


def _count(count: int | None) -> str:
    return "-" if count is None else str(count)


def table(seconds: Sequence[Second]) -> str:
    """Per second: offered, good, not good by code, latencies, views lost to an owner's refusal, the system's cores,
    the machine's idle cores, and the system's CPU per good view; behind an edge, its fewest places for reads and
    most requests in flight; and how fast the machine ran (the canary's `speed`)."""
    lines = [f"{'s':>3} {'phase':7} {'offered':>7} {'good':>5} {'RESEXH':>6} {'CANCEL':>6} {'UNAVAIL':>7} "
             f"{'DEADLN':>6} {'other':>5}  {'OK p50':>7} {'OK p99':>7} {'ref p99':>7} {'lag p99':>7}  "
             f"{'lost':>4}  {'cores':>5} {'idle':>5} {'CPU/OK':>6} {'room':>4} {'infl':>4} {'speed':>5}  (ms)"]
    for s in seconds:
        lines.append(f"{s.t:3d} {s.phase:7} {s.offered:7d} {s.good:5d} {s.kinds['RESOURCE_EXHAUSTED']:6d} "
                     f"{s.kinds['CANCELLED']:6d} "
                     f"{s.kinds['UNAVAILABLE']:7d} {s.kinds['DEADLINE_EXCEEDED']:6d} {s.kinds['other']:5d}  "
                     f"{ms(q(s.ok, 0.5)):>7} {ms(q(s.ok, 0.99)):>7} {ms(q(s.refused, 0.99)):>7} "
                     f"{ms(q(s.lag, 0.99)):>7}  {s.lost:4d}  {_cores(s.cores):>5} {_cores(s.idle):>5} {ms(s.cost):>6} "
                     f"{_count(s.room):>4} {_count(s.in_flight):>4} {_cores(s.speed):>5}")
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


@dataclass(frozen=True)
class Closed:
    """A closed loop's measure of capacity: OK answers per second on average and in each second counted, every
    answer counted, and the window counted (`time.monotonic()`)."""

    capacity: float
    each: list[int]
    result: Result
    window: tuple[float, float]

    def line(self) -> str:
        oks = [s.latency for s in self.result.shots if s.code == "OK"]
        failed = Counter(s.code for s in self.result.shots if s.code != "OK")
        spread = f"{min(self.each)}-{max(self.each)}/s by second, " if self.each else ""
        return (f"{self.capacity:.0f} OK views/s with {CALLERS} closed-loop callers over {len(self.each)} s "
                f"({spread}p50 {ms(q(oks, 0.5))} ms, p99 {ms(q(oks, 0.99))} ms; not OK: "
                f"{', '.join(f'{code} {n}' for code, n in failed.most_common()) or 'none'})")


async def closed(pool: Workers, targets: Sequence[Gateway], plan: Plan) -> Closed:
    """OK answers per second with CALLERS closed-loop callers (sending to `targets` in turn), after `plan.warm`
    seconds not counted, for `plan.capacity` seconds. A caller pauses after a refusal (openloop.REFUSED_PAUSE), as
    a client that honours "overloaded" does: one that re-sent at once would measure how fast the gateway refuses,
    not what it serves."""
    result, origin = await pool.closed_loop(targets, CALLERS, plan.warm + plan.capacity, "strong", DEADLINE)
    counted = [s for s in result.shots if plan.warm <= s.end < plan.warm + plan.capacity]
    each = Counter(math.floor(s.end - plan.warm) for s in counted if s.code == "OK")
    window = (origin + plan.warm, origin + plan.warm + plan.capacity)
    return Closed(sum(each.values()) / plan.capacity, [each[i] for i in range(math.ceil(plan.capacity))],
                  Result(counted, result.cpu), window)


def at_rank(values: Sequence[float], share: float) -> float:
    """The `share` quantile of `values`, interpolated between neighbouring ranks (NaN for no values)."""
    ranked = sorted(values)
    if not ranked:
        return math.nan
    position = min(max(share, 0.0), 1.0) * (len(ranked) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ranked) - 1)
    return ranked[below] + (position - below) * (ranked[above] - ranked[below])


def by_rank(seconds: Sequence[Second], reference: Sequence[float]) -> list[tuple[Second, float]]:
    """Each of `seconds`, lowest goodput first, beside the `reference` second at the same rank: the quantile at
    the same plotting position, (i + 0.5) / n, so that n seconds and a reference of any length compare. With no
    reference, each beside nothing (NaN)."""
    ranked = sorted(seconds, key=lambda s: s.good)
    return [(s, at_rank(reference, (i + 0.5) / len(ranked))) for i, s in enumerate(ranked)]


async def run(pool: Workers, sut: System, plan: Plan, out: Path) -> list[Target]:
    print(f"\n== 1. spike: strong order views, {DEADLINE:g} s deadlines, gateway {sut.label}", flush=True)
    cpus = os.cpu_count() or 1
    with canary.running() as timer:
        return await _run(pool, sut, plan, out, cpus, timer)


async def _run(pool: Workers, sut: System, plan: Plan, out: Path, cpus: int, timer: Canary) -> list[Target]:
    """The spike itself, between two closed loops, with `timer` timing the machine's speed throughout."""
    async with machine.tracing(lambda: machine.system_pids(sut.data_dir)) as trace:
        meter = cpu.Meter()
        first = await closed(pool, [sut.gateway], plan)
        cap = first.capacity
        print(f"capacity: {first.line()}; {meter.usage().line()}", flush=True)
        phases = [Phase("before", plan.before, cap / 2), Phase("spike", plan.spike, 3 * cap),
                  Phase("after", plan.after, cap / 2)]
        callers = sut.callers()
        before = await scrape.read_all(callers)
        meter = cpu.Meter()
        split = cpu.Split(sut.pids())
        stop = asyncio.Event()
        edge = asyncio.create_task(sample_edge(sut, stop), name="edge samples")
        try:
            result, origin = await pool.open_loop([sut.gateway], phases, "strong", DEADLINE)
        finally:
            stop.set()
            edge_samples = await edge
        usage = meter.usage()
        by_process = split.line()
        await asyncio.sleep(1.0)  # let the last transitions be counted
        opened = breakers_opened(before, await scrape.read_all(callers))
        # The same closed loop again, so that the spike is judged against the machine on both sides of it.
        again = await closed(pool, [sut.gateway], plan)
    seconds = with_edge(with_cores(per_second(result.shots, DEADLINE), trace, origin, cpus), edge_samples, origin)
    seconds = with_speed(seconds, timer, origin, timer.cost(*first.window))
    print(table(seconds))
    print("lost: views the gateway admitted and an owner then refused a part of; "
          "cores: the system's (servers and edge) in that second; idle: the machine's cores nobody used; "
          "CPU/OK: the system's CPU per good view; room: the fewest places the edge gave reads (SHEDDABLE) in that "
          "second (from the gateway's limit); infl: the most requests it had in flight to the gateway; speed: how fast "
          "the machine's cores ran in that second against while capacity was measured (a fixed piece of work timed "
          "in its thread's CPU time, benchmarks/canary.py; 0.80: the same work took 1.25x the CPU)")
    other = Counter(s.code for s in result.shots if overload_plot.kind(s, DEADLINE) == "other")
    if other:
        print("other: " + ", ".join(f"{code} {n}" for code, n in other.most_common()))
    duration = sum(p.seconds for p in phases)
    print(f"generator: send lag p50 {ms(result.lag(0.5))} ms, p99 {ms(result.lag(0.99))} ms, "
          f"max {ms(result.lag(1.0))} ms; {len(result.shots)} requests; its CPU {result.cpu:.1f} s over "
          f"{duration:g} s ({result.cpu / duration:.0%} of one core)")
    print(usage.line())
    print(by_process)
    print(f"capacity again, after the spike: {again.line()}")
    # Goodput is judged against the closed loops' own seconds, each scaled to the cores the load left the system
    # (pullgate.tools.machine): the machine's second-to-second noise with no overload at all.
    spike = trace.between(origin + plan.before + 1.0, origin + plan.before + plan.spike)
    reference: list[float] = []
    for loop, when in ((first, "before"), (again, "after")):
        share = trace.between(*loop.window)
        scale = machine.fair_capacity(1.0, share, spike, cpus)
        reference += [good * scale for good in loop.each]
        if share is not None and spike is not None:
            print(f"the system's room: in the closed loop {when} the spike {share.line(cpus)}; in the spike after its "
                  f"first second {spike.line(cpus)}; so {loop.capacity:.0f}/s x {scale:.2f} = "
                  f"{loop.capacity * scale:.0f}/s for the spike's room")
    fair = mean_of(reference, cap)
    bars = {s.t: SHARE * against for s, against in by_rank([s for s in seconds if s.phase == "spike"][1:], reference)}
    path = out / "overload-timeline.png"
    overload_plot.spike(result.shots, phases, cap, DEADLINE, path,
                        f"pullgate spike: 3x capacity ({3 * cap:.0f}/s) for {plan.spike:g} s, strong order views, "
                        f"{DEADLINE:g} s deadlines", target=SHARE * fair, bars=bars)
    print(f"picture: {path}")
    return targets(seconds, cap, reference, opened, result.shots)


def mean_of(reference: Sequence[float], cap: float) -> float:
    """The closed loops' mean OK views per second for the spike's room; `cap` where there is no reference."""
    return sum(reference) / len(reference) if reference else cap


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole > 0 else "n/a"


def targets(seconds: Sequence[Second], cap: float, reference: Sequence[float], opened: Mapping[str, float],
            shots: Sequence[Shot]) -> list[Target]:
    """The spike's four targets. Goodput is judged second against second: the spike's seconds after the first,
    lowest first, each against the closed loops' second at the same rank (`reference`: the closed loops' OK views
    in each of their seconds, before and after the spike, scaled to the cores the load generator and the rest left
    the system in the spike; pullgate.tools.machine). The figure also gives the lowest against their mean, which is
    what the picture draws 80% of."""
    in_spike = [s for s in seconds if s.phase == "spike"][1:]
    after = [s for s in seconds if s.phase == "after"]
    fair = mean_of(reference, cap)
    pairs = by_rank(in_spike, reference if reference else [fair])
    short = sum(1 for s, against in pairs if s.good < SHARE * against)
    low = min(in_spike, key=lambda s: s.good, default=None)
    noise = f", whose own lowest was {_share(min(reference), fair)} of it" if reference else ""
    goodput = Target(
        "spike", "goodput in every spike second after the first >= 80% of capacity (for the cores left to it; each "
                 "second against the closed loops' at the same rank)",
        "no spike seconds" if low is None else
        f"lowest {low.good}/s = {_share(low.good, pairs[0][1])} of the closed loops' {pairs[0][1]:.0f}/s at its rank "
        f"(second {low.t}; {_share(low.good, fair)} of their mean {fair:.0f}/s{noise}; {_share(low.good, cap)} of the "
        f"{cap:.0f}/s measured before, with the lighter load); {short} of {len(pairs)} seconds below 80% of theirs",
        None if fair <= 0 else low is not None and short == 0)  # no capacity measured: nothing to judge against
    back = recovered_after(after, 0.9)
    recovery = Target(
        "spike", "after it, goodput >= 90% of offered within 5 s",
        f"after {back} s" if back is not None else f"not within the {len(after)} s measured",
        back is not None and back <= 5)
    breakers = Target(
        "spike", "breakers of healthy owners opened",
        ", ".join(f"{k} {v:.0f}" for k, v in sorted(opened.items())) or "none", not opened)
    refused = [s for s in shots if s.refused]
    codes = Counter(s.code for s in shots if s.code != "OK")
    if refused:
        # A refusal is timed from when its request was sent: how long the caller waited for the "no". From when
        # it was due adds the generator's own lateness in sending (its timer, its loop), which no server causes
        # or removes; that figure is printed too.
        kinds = Counter(s.code for s in refused)
        marked = sum(s.overloaded for s in refused)
        p99 = q([s.latency - s.lag for s in refused], 0.99)
        due = q([s.latency for s in refused], 0.99)
        edge = [s.latency - s.lag for s in refused if s.at_edge]
        behind = [s.latency - s.lag for s in refused if not s.at_edge]
        where = f"; the edge's {len(edge)} p99 {ms(q(edge, 0.99))} ms, " if edge else "; "
        where += f"the others' {len(behind)} p99 {ms(q(behind, 0.99))} ms" if behind else "no others"
        relayed = [s.latency - s.lag for s in shots if s.relayed and s.code in REFUSALS]
        if relayed:
            where += (f"; not counted: {len(relayed)} views admitted and then refused a part by an owner "
                      f"(p99 {ms(q(relayed, 0.99))} ms)")
        fast = Target("spike", "refusals p99 < 5 ms",
                      f"{ms(p99)} ms from sending ({ms(due)} ms from when due) over {len(refused)}: "
                      f"{kinds['RESOURCE_EXHAUSTED']} RESOURCE_EXHAUSTED ({marked} with resilience-overloaded: 1), "
                      f"{kinds['CANCELLED']} CANCELLED by grpc's core" + where, p99 < 0.005)
    else:
        others = ", ".join(f"{code} {n}" for code, n in codes.most_common()) or "none"
        fast = Target("spike", "refusals p99 < 5 ms", f"none refused (failures: {others})", False)
    return [goodput, recovery, breakers, fast]


__all__ = ["run"]
