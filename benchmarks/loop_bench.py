"""uvloop against asyncio's loop, whole system (issue 17): two `pullgate up` systems side by side, one on each
loop, the same load taking turns, so whatever the machine does meanwhile hits both alike.

1. Throughput: 32 closed-loop callers of strong order views (a caller pauses after a refusal, as in the overload
   benchmark), 1 s warm-up then 4 s counted, alternating systems, `ROUNDS` rounds, the order flipped every
   round. CPU per view is every process of the system (from /proc), over its counted rounds.
2. Latency: open loop at half the lower throughput in all, both systems at once, taking turns request by request
   (each gets a quarter of what it served alone: they share the machine now).

The issue's rule: uvloop becomes the default if the whole system is at least 10% better.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.overload_system import System, up
from benchmarks.resilience_bench import machine
from pullgate.tools.chaos import system as chaos_system
from pullgate.tools.openloop import Phase, Workers, workers
from pullgate.tools.stats import percentile

CALLERS = 32
DEADLINE = 1.0
WARM, COUNTED = 1.0, 4.0
LOOPS = ("asyncio", "uvloop")


@dataclass
class Tally:
    """What one system did over the counted rounds."""

    ok: list[float] = field(default_factory=list)
    """OK views per second, one figure per round."""
    views: int = 0
    cpu: float = 0.0
    """CPU seconds of every process of the system."""
    refused: Counter[str] = field(default_factory=Counter)


def _ticks(sut: System) -> float:
    """CPU seconds so far of every process of `sut` (the launcher's children; the launcher itself idles)."""
    total = 0
    for proc in chaos_system.read_state(sut.data_dir).procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


async def _round(pool: Workers, sut: System, tally: Tally) -> None:
    before = _ticks(sut)
    result, _ = await pool.closed_loop([sut.gateway], CALLERS, WARM + COUNTED, "strong", DEADLINE)
    counted = [s for s in result.shots if WARM <= s.end < WARM + COUNTED]
    ok = sum(1 for s in counted if s.code == "OK")
    tally.ok.append(ok / COUNTED)
    tally.views += ok
    tally.cpu += _ticks(sut) - before  # the warm-up's CPU too: a small, equal share on both sides
    tally.refused.update(s.code for s in counted if s.code != "OK")


async def run(quick: bool = False) -> dict[str, Tally]:
    rounds = 2 if quick else 8
    print(f"loop benchmark on {machine()}", flush=True)
    tallies = {name: Tally() for name in LOOPS}
    with tempfile.TemporaryDirectory(prefix="pullgate-loop-") as tmp:
        async with (
            workers(2) as pool,
            up(Path(tmp) / "asyncio", "asyncio", 1) as on_asyncio,
            up(Path(tmp) / "uvloop", "uvloop", 1, flags=("--loop", "uvloop")) as on_uvloop,
        ):
            print(pool.describe(), flush=True)
            systems = {"asyncio": on_asyncio, "uvloop": on_uvloop}
            for r in range(rounds):
                order = LOOPS if r % 2 == 0 else LOOPS[::-1]
                for name in order:
                    await _round(pool, systems[name], tallies[name])
                print(f"round {r + 1}: " + ", ".join(f"{n} {tallies[n].ok[-1]:.0f}/s" for n in LOOPS), flush=True)
            rate = min(sum(t.ok) / len(t.ok) for t in tallies.values()) / 2
            seconds = 5.0 if quick else 30.0
            result, _ = await pool.open_loop([on_asyncio.gateway, on_uvloop.gateway],
                                             [Phase("latency", seconds, rate)], "strong", DEADLINE)
    print(f"\n{'loop':8} {'OK/s mean':>9} {'min':>5} {'max':>5} {'CPU ms/view':>11}  {'p50 ms':>7} {'p99 ms':>7}  "
          f"(latency: open loop {rate / 2:.0f}/s each, {seconds:g} s)  not OK in the closed loop")
    for i, name in enumerate(LOOPS):
        t = tallies[name]
        lat = [s.latency if s.code == "OK" else DEADLINE for s in result.shots if s.target == i]
        print(f"{name:8} {sum(t.ok) / len(t.ok):9.0f} {min(t.ok):5.0f} {max(t.ok):5.0f} "
              f"{1000 * t.cpu / max(t.views, 1):11.2f}  {1000 * percentile(lat, 0.5):7.2f} "
              f"{1000 * percentile(lat, 0.99):7.2f}  {dict(t.refused) or '-'}")
    a, u = (sum(tallies[n].ok) / len(tallies[n].ok) for n in LOOPS)
    ca, cu = (tallies[n].cpu / max(tallies[n].views, 1) for n in LOOPS)
    print(f"uvloop/asyncio: throughput {u / a:.2f}x, CPU per view {cu / ca:.2f}x; the rule (>= 1.10x throughput "
          f"makes uvloop the default): {'MET' if u / a >= 1.10 else 'not met'}")
    return tallies


__all__ = ["run"]
