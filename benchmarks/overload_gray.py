"""Scenario 2, gray failure: one catalog replica alive but frozen (SIGSTOP), as a hung process or a partition
looks to its callers. Do views stay fast and correct, and does the frozen replica stop getting traffic?

One `--replicas 2` system. Sequential strong order views, 1 s deadlines:
a few seconds before the freeze, then `catalog-1` frozen; from 2 s after the freeze, 300 counted views; then
SIGCONT and a few seconds more. Timed in this process, one view at a time, so each latency is one view's.
The frozen replica's share of catalog attempts comes from `resilience_attempts_total{downstream,replica}` on the
gateway. Strong views, because a strong read skips the cache: every view's product lookups reach a replica, so
the share is taken over hundreds of attempts. (Bounded views were tried first: nearly every lookup was a cache hit,
so the share was over a dozen attempts and said little.)
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import cpu, overload_plot
from benchmarks.overload_plan import DEADLINE, Plan, Target, ms, q
from benchmarks.overload_system import System
from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.tools import scrape
from pullgate.tools.chaos import system
from pullgate.tools.openloop import ORDER_IDS, Shot, collector_paused, view

CONSISTENCY = "strong"
"""Every lookup goes to a replica (see above)."""

SLOW = 0.050
"""A view slower than this is slow."""


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
    """Sequential strong views before, while and after `victim` is frozen (SIGSTOP, SIGCONT however this ends)."""
    run = GrayRun()
    gateway_metrics = sut.metrics[topology.ENTRY]
    loop = asyncio.get_running_loop()
    async with sut.gateway.channel() as channel:
        stub, metadata = gateway_pb2_grpc.GatewayServiceStub(channel), sut.gateway.metadata
        await asyncio.wait_for(channel.channel_ready(), 30.0)
        origin = loop.time()
        k = 0

        async def views(phase: str, until: float = math.inf, count: int = 0) -> None:
            nonlocal k
            made = 0
            while loop.time() - origin < until and (not count or made < count):
                sent = loop.time()
                answer = await view(stub, CONSISTENCY, ORDER_IDS[k % len(ORDER_IDS)], DEADLINE, metadata)
                run.shots.append(Shot(phase, 0, sent - origin, 0.0, loop.time() - sent, *answer))
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


async def run(sut: System, plan: Plan, out: Path) -> list[Target]:
    state = system.read_state(sut.data_dir)
    victim = state.proc("catalog-1" if "catalog-1" in state.names else "catalog")
    print(f"\n== 2. gray failure: {victim.name} ({victim.address}) frozen with SIGSTOP; sequential {CONSISTENCY} "
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
    for line in (sut.data_dir / "chaos-up.log").read_text().splitlines():
        if "resilience.outlier" in line:
            print("gateway log: " + line.split("resilience.outlier: ", 1)[-1])
    path = out / "overload-freeze.png"
    overload_plot.freeze(run.shots, (run.frozen_at, run.thawed_at), run.counted, SLOW, path,
                         f"pullgate gray failure: {victim.name} frozen (SIGSTOP), sequential {CONSISTENCY} order views")
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


__all__ = ["run"]
