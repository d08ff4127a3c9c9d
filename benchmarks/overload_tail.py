"""Scenario 3, the tail: with 2% of catalog calls delayed 500 ms, do hedges keep p99.9 of order views low, and at
what extra load?

Two `--replicas 3` systems side by side, one with hedging and one without (`[resilience.default.hedging] enabled =
false`). Open-loop strong order views (every view reaches catalog; the cache hides nothing) at a modest rate to
each, the two taking turns request by request so whatever the machine does hits both alike. Modest means 40/s each,
or 40% of what closed-loop callers get from the two together where the machine is too slow for that: a tail figure
at 90% of a machine's capacity measures its queueing, not hedging. First the floor: the same load for a minute with
no fault, which says what tail this machine gives on its own (a target of 40 ms means nothing where the fault-free
p99.9 is already above it). Then `catalog=delay:500ms@2%` on every catalog replica of both, 10 s of warm-up (the
hedge delay's latency window), and 20,000 views each (or 500 s). Extra requests are hedges sent per catalog call,
from the gateway's own counters.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from benchmarks import cpu, overload_plot, overload_spike
from benchmarks.overload_plan import DEADLINE, Plan, Target, ms, q
from benchmarks.overload_system import System, faults
from pullgate import topology
from pullgate.tools import scrape
from pullgate.tools.openloop import Phase, Workers

FAULT = "catalog=delay:500ms@2%"
STALL = 0.050
"""A second in which some request went out later than this is one where the machine held the generator up."""
HEDGING_OFF = "[resilience.default.hedging]\nenabled = false\n"


def catalog_calls(reading: scrape.Reading) -> tuple[float, float, float]:
    """(hedges sent, hedges the cap or the budget refused, calls) to catalog, as the gateway counts them."""
    return (reading.total("resilience_hedges_sent_total", downstream="catalog"),
            reading.total("resilience_budget_refusals_total", downstream="catalog", kind="hedge"),
            reading.total("resilience_call_duration_seconds_count", downstream="catalog"))


async def run(pool: Workers, suts: Sequence[System], plan: Plan, out: Path) -> list[Target]:
    who = "one system" if len(suts) == 1 else f"each of {len(suts)} systems, taking turns request by request"
    print(f"\n== 3. tail: {FAULT} on every catalog replica; open-loop strong order views to {who}, "
          f"{DEADLINE:g} s deadlines", flush=True)
    targets = [s.gateway for s in suts]
    cap = (await overload_spike.closed(pool, targets, plan)).capacity
    each = min(plan.tail_rate, plan.tail_load * cap / len(suts)) if cap > 0 else plan.tail_rate
    rate = each * len(suts)
    seconds = min(plan.tail_views / each, plan.tail_seconds)
    print(f"rate: {each:.1f}/s to each system, at most {plan.tail_rate:g}/s and at most {plan.tail_load:.0%} of the "
          f"{cap:.0f} OK views/s that {overload_spike.CALLERS} closed-loop callers got from "
          f"{'it' if len(suts) == 1 else 'them together'}{'' if cap > 0 else ' (none: the most)'}; "
          f"{seconds:.0f} s counted", flush=True)
    floor: dict[str, float] = {}
    if plan.tail_floor:
        result, _ = await pool.open_loop(targets, [Phase("floor", plan.tail_floor, rate)], "strong", DEADLINE)
        print(f"floor, the same load with no fault, {plan.tail_floor:g} s:")
        for index, sut in enumerate(suts):
            lat = [s.latency if s.code == "OK" else DEADLINE for s in result.shots if s.target == index]
            floor[sut.label] = q(lat, 0.999)
            print(f"  {sut.label:<22} {len(lat):6d} views, p50 {ms(q(lat, 0.5))} ms, p99 {ms(q(lat, 0.99))} ms, "
                  f"p99.9 {ms(q(lat, 0.999))} ms, max {ms(max(lat, default=math.nan))} ms")
    async with contextlib.AsyncExitStack() as stack:
        for sut in suts:
            await stack.enter_async_context(faults(sut, "catalog", FAULT))
        if plan.tail_warm:
            await pool.open_loop(targets, [Phase("warm", plan.tail_warm, rate)], "strong", DEADLINE)
        gateways = {s.label: s.metrics[topology.ENTRY] for s in suts}
        before = await scrape.read_all(gateways)
        meter = cpu.Meter()
        result, _ = await pool.open_loop(targets, [Phase("tail", seconds, rate)], "strong", DEADLINE)
        usage = meter.usage()
        after = await scrape.read_all(gateways)
    print(f"{'system':<22} {'views':>6} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'max ms':>7} "
          f"{'hedges':>6} {'refused':>7} {'calls':>6} {'extra':>6}")
    rows: dict[str, tuple[float, float]] = {}
    for index, sut in enumerate(suts):
        shots = [s for s in result.shots if s.target == index]
        lat = [s.latency if s.code == "OK" else DEADLINE for s in shots]  # an error is as bad as no answer
        errors = sum(1 for s in shots if s.code != "OK")
        hedges, refused, calls = catalog_calls(after[sut.label].minus(before[sut.label]))
        extra = hedges / calls if calls else math.nan
        rows[sut.label] = (q(lat, 0.999), extra)
        print(f"{sut.label:<22} {len(shots):6d} {errors:6d} {ms(q(lat, 0.5)):>7} {ms(q(lat, 0.99)):>7} "
              f"{ms(q(lat, 0.999)):>8} {ms(max(lat, default=math.nan)):>7} {hedges:6.0f} {refused:7.0f} "
              f"{calls:6.0f} {extra:6.1%}")
    late: dict[int, float] = defaultdict(float)
    for shot in result.shots:
        late[math.floor(shot.due)] = max(late[math.floor(shot.due)], shot.lag)
    stalled = sum(1 for lag in late.values() if lag > STALL)
    print(f"generator: send lag p99 {ms(result.lag(0.99))} ms, max {ms(result.lag(1.0))} ms; some request went out "
          f"over {STALL * 1000:.0f} ms late in {stalled} of {len(late)} seconds (the machine stalled the generator)")
    print(usage.line())
    print("Latency of every view, an error counted as the whole deadline; p99.9 of n views rests on the slowest "
          "n/1000 of them. extra = hedges sent / catalog calls at the gateway (resilience_hedges_sent_total / "
          "resilience_call_duration_seconds_count); refused = hedges the hedging cap or the retry budget refused "
          "(resilience_budget_refusals_total{kind=\"hedge\"}), each asked again after another delay.")
    path = out / "overload-tail.png"
    overload_plot.tail(result.shots, [s.label for s in suts], DEADLINE, path,
                       f"pullgate tail: {FAULT}, strong order views, {each:.0f}/s to each system")
    print(f"picture: {path}")
    on = rows[suts[0].label]
    notes = [f"without hedging {ms(rows[suts[1].label][0])} ms"] if len(suts) > 1 else []
    if suts[0].label in floor:
        notes.append(f"this machine with no fault at the same load: {ms(floor[suts[0].label])} ms")
    noted = f" ({'; '.join(notes)})" if notes else ""
    return [Target("tail", "p99.9 <= 40 ms with hedging", f"{ms(on[0])} ms{noted}", on[0] <= 0.040),
            Target("tail", "extra requests <= 5% with hedging", f"{on[1]:.1%}", on[1] <= 0.05)]


__all__ = ["FAULT", "HEDGING_OFF", "run"]
