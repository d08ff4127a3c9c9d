"""The overload and gray-failure benchmark (issue 13), against real `pullgate up` systems on this machine.

Four scenarios, all in one run, each printed as a table, the first three with their targets marked PASS or MISS
(never asserted: the figures are the point, before and after the mechanisms land):

1. spike (`--replicas 1`): capacity for strong order views (32 closed-loop callers), then open loop at 0.5x,
   3x for 10 s and 0.5x again, with 1 s deadlines, then capacity again. Targets: goodput in the spike >= 80% of
   capacity in every second after the first (each against the closed loops' second at its rank); back to
   >= 90% of offered within 5 s after it; no breaker of a healthy owner opened
   (gateway's and orders' `resilience_breaker_transitions_total{state="open"}`); refusals answered
   fast, p99 < 5 ms (RESOURCE_EXHAUSTED from admission control, or CANCELLED from grpc's core queue).
2. gray failure (`--replicas 2`): one catalog replica frozen with SIGSTOP; from 2 s after the freeze, 300
   sequential strong order views. Targets: 0 errors, p99 < 50 ms, the frozen replica's share of attempts
   <= 5% (from `resilience_attempts_total{downstream,replica}`, where the gateway has it).
3. tail (`--replicas 3`, `--faults catalog=delay:500ms@2%`): open-loop strong order views at a modest rate to
   a system with hedging and one without, taking turns request by request. Targets: p99.9 <= 40 ms and
   hedges sent <= 5% of catalog calls, with hedging.
4. cost (`--replicas 1`): the system's CPU per OK view, by process, under a closed loop and open loop at 0.5x,
   0.95x, 1.5x and 3x of it, taking turns. No target: it says where the spike's goodput goes.

The load comes from worker processes (pullgate/tools/openloop.py); latency counts from when each request was due.
One module per scenario (overload_spike, overload_gray, overload_tail, overload_cost); overload_plan holds the
durations and the verdicts, overload_system starts the systems, scrape reads their metrics, cpu says where the
machine's CPU went, overload_plot draws the pictures.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks import overload_cost, overload_gray, overload_spike, overload_tail
from benchmarks.overload_plan import FULL, QUICK, Target
from benchmarks.overload_system import up
from benchmarks.resilience_bench import machine
from pullgate.tools import native
from pullgate.tools.openloop import workers

SCENARIOS = ("spike", "gray", "tail", "cost")

GENERATORS = ("auto", "native", "python")
"""The load workers: native (pullgate/tools/loadgen.c), Python (pullgate/tools/openloop.py), or native where it
builds (auto)."""


async def native_wanted(generator: str) -> bool:
    """Whether to use the native workers for `generator`; auto says why not where they cannot be built."""
    if generator == "python":
        return False
    reason = await asyncio.to_thread(native.unavailable)
    if reason is None:
        return True
    if generator == "native":
        raise native.NativeUnavailable(reason)
    print(f"load: Python workers, because the native one is unavailable: {reason}", flush=True)
    return False


async def run(quick: bool = False, out: Path = Path("."), only: Sequence[str] = SCENARIOS,
              edge: str = "auto", generator: str = "auto") -> list[Target]:
    """Run the chosen scenarios, print their tables and the targets; the targets, for a caller to inspect.
    `edge` is every system's `pullgate up --edge` (auto: HAProxy in front of the gateway when installed);
    `generator` one of GENERATORS."""
    plan = QUICK if quick else FULL
    edged = ("--edge", edge)
    began = time.monotonic()
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    print(f"overload benchmark on {machine()}", flush=True)
    targets: list[Target] = []
    with tempfile.TemporaryDirectory(prefix="pullgate-overload-") as tmp:
        base = Path(tmp)
        async with workers(2, await native_wanted(generator)) as pool:
            print(pool.describe(), flush=True)
            if quick:
                # A smoke run: one system serves every scenario (each start costs 10-30 s here); figures mean
                # nothing, only that every part of the harness ran.
                async with up(base / "all", "replicas 1", 1, flags=edged) as shared:
                    if "spike" in only:
                        targets += await overload_spike.run(pool, shared, plan, out)
                    if "gray" in only:
                        targets += await overload_gray.run(shared, plan, out)
                    if "tail" in only:
                        targets += await overload_tail.run(pool, [shared], plan, out)
                    if "cost" in only:
                        await overload_cost.run(pool, shared, plan)
            else:
                if "spike" in only:
                    async with up(base / "spike", "replicas 1", 1, flags=edged) as sut:
                        targets += await overload_spike.run(pool, sut, plan, out)
                if "gray" in only:
                    async with up(base / "gray", "replicas 2", 2, flags=edged) as sut:
                        targets += await overload_gray.run(sut, plan, out)
                if "tail" in only:
                    off = overload_tail.HEDGING_OFF  # the fault is set once the floor is measured
                    async with (up(base / "tail-on", "replicas 3, hedging on", 3, flags=edged) as hedging,
                                up(base / "tail-off", "replicas 3, hedging off", 3, off, flags=edged) as plain):
                        targets += await overload_tail.run(pool, [hedging, plain], plan, out)
                if "cost" in only:
                    async with up(base / "cost", "replicas 1", 1, flags=edged) as sut:
                        await overload_cost.run(pool, sut, plan)
    print("\n== targets (issue 13)")
    for target in targets:
        print(target.line())
    print(f"{'quick' if quick else 'full'} run took {time.monotonic() - began:.0f} s")
    return targets


__all__ = ["GENERATORS", "SCENARIOS", "native_wanted", "run"]
