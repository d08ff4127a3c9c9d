"""Scenario 4, the cost of a good view: the system's CPU per OK view under a closed loop, and open loop below, at
and above capacity, taking turns on one system. No target: it says where a spike's goodput goes.

Why: the spike's goodput is judged against a capacity measured with closed-loop callers, scaled to the cores the
load left the system (pullgate.tools.machine). That scaling holds for a plain neighbour: a process taking the
generator's 0.5 cores at nice -15 left the views' cost unchanged (5.0-5.3 ms each, with it and without). What it
does not hold for is the load's shape. A closed loop sends the next view the moment the last one answered, so every
process always has work; an open loop's views arrive on their own schedule, and above capacity most of them are
refused, at the edge, each at a cost. This measures both, by process: the edge's column is what refusing costs,
per view served. Beside the CPU, each part's context switches per view (/proc): voluntary ones say how often
its threads waited and woke again, involuntary ones how often the kernel gave its core to another process.

One `--replicas 1` system (the spike's shape). Each round: CALLERS closed-loop callers (the round's capacity),
then open loop at each of LOADS times that, each for `plan.cost_seconds` with the first second not counted; the
rounds take turns so a slow minute of the machine falls on every row. CPU from /proc (pullgate.tools.machine).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.overload_plan import DEADLINE, Plan, ms, q
from benchmarks.overload_system import System
from pullgate.tools import machine
from pullgate.tools.openloop import Phase, Result, Workers

CALLERS = 12
"""Closed-loop callers: enough to fill the system on two cores (8, 12 and 20 gave the same views per second, within
3%), without the refusals 32 get at the edge (32 gave 5-9% fewer)."""

LOADS = (0.5, 0.95, 1.5, 3.0)
"""Open-loop rates, as multiples of the round's closed-loop capacity."""

SKIP = 1.0
"""Seconds at the start of each load not counted (the limit and the hedge delay settling)."""


@dataclass
class Row:
    """One load's figures, a value per round."""

    name: str
    ok: list[float] = field(default_factory=list)
    """OK views per second."""
    other: list[float] = field(default_factory=list)
    """Not-OK answers per second (refusals, above capacity)."""
    p50: list[float] = field(default_factory=list)
    rest: list[float] = field(default_factory=list)
    """Cores the processes outside the system used (the load generator, mostly)."""
    per_view: dict[str, list[float]] = field(default_factory=dict)
    """CPU seconds per OK view, by part of the system ("system" is every part)."""
    switches: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Context switches per OK view, by part: (voluntary: a thread waited for something, so the process woke up
    again afterwards; involuntary: the kernel took the core away)."""

    def cost(self, part: str) -> float:
        return statistics.fmean(self.per_view.get(part) or [float("nan")])

    def switched(self, part: str, kind: int) -> float:
        return statistics.fmean([each[kind] for each in self.switches.get(part, ())] or [float("nan")])


def part(name: str) -> str:
    """The part of the system a process name belongs to: gateway, edge, or owners (the launcher counts as owners;
    it uses next to nothing)."""
    return name if name in ("gateway", "edge") else "owners"


Switches = dict[str, tuple[int, int]]


def switches(names: dict[int, str]) -> Switches:
    """Context switches so far by part of the system (machine.switches), processes gone left out."""
    out: dict[str, tuple[int, int]] = {}
    for pid, name in names.items():
        counted = machine.switches(pid)
        if counted is not None:
            key = part(name)
            voluntary, involuntary = out.get(key, (0, 0))
            out[key] = (voluntary + counted[0], involuntary + counted[1])
    return out


def record(row: Row, result: Result, start: float, end: float, trace: machine.Trace, names: dict[int, str],
           counted: Sequence[float], switched: tuple[Switches, Switches]) -> None:
    """Add one round's figures for the answers whose start falls in `counted` (seconds from the origin), the CPU
    of the window `start`-`end` (`time.monotonic()`), and the context switches from `switched[0]` to
    `switched[1]` over all of the load's OK views."""
    before, after = switched
    served = sum(1 for s in result.shots if s.code == "OK")
    for key in before.keys() & after.keys() if served else ():
        row.switches.setdefault(key, []).append(((after[key][0] - before[key][0]) / served,
                                                 (after[key][1] - before[key][1]) / served))
    seconds = counted[1] - counted[0]
    shots = [s for s in result.shots if counted[0] <= s.due < counted[1]]
    oks = [s.latency for s in shots if s.code == "OK"]
    ok = len(oks) / seconds
    share = trace.between(start, end)
    by_pid = trace.processes(start, end)
    row.ok.append(ok)
    row.other.append((len(shots) - len(oks)) / seconds)
    row.p50.append(q(oks, 0.5))
    row.rest.append(share.others if share is not None else float("nan"))
    if not ok or not by_pid:
        return
    parts: dict[str, float] = {"system": sum(by_pid.values())}
    for pid, cores in by_pid.items():
        key = part(names.get(pid, "owners"))
        parts[key] = parts.get(key, 0.0) + cores
    for key, cores in parts.items():
        row.per_view.setdefault(key, []).append(cores / ok)


def table(rows: Sequence[Row]) -> str:
    base = rows[0].cost("system")
    lines = [f"{'load':12} {'OK/s':>6} {'not OK/s':>8} {'OK p50':>7} {'rest':>5}  {'system':>6} {'x closed':>8} "
             f"{'gateway':>7} {'owners':>6} {'edge':>5}  {'gw wait/pre':>11} {'own wait/pre':>12}"]
    for row in rows:
        lines.append(f"{row.name:12} {statistics.fmean(row.ok):6.0f} {statistics.fmean(row.other):8.0f} "
                     f"{ms(statistics.fmean(row.p50)):>7} {statistics.fmean(row.rest):5.2f}  "
                     f"{row.cost('system') * 1000:6.2f} {row.cost('system') / base:8.2f} "
                     f"{row.cost('gateway') * 1000:7.2f} {row.cost('owners') * 1000:6.2f} "
                     f"{row.cost('edge') * 1000:5.2f}  "
                     f"{row.switched('gateway', 0):5.1f}/{row.switched('gateway', 1):<5.1f} "
                     f"{row.switched('owners', 0):6.1f}/{row.switched('owners', 1):<5.1f}")
    lines.append("CPU in ms per OK view; rest in cores (the generator, mostly); context switches per OK view, "
                 "voluntary (a thread waited) / involuntary (preempted), the gateway's and all owners'")
    return "\n".join(lines)


async def run(pool: Workers, sut: System, plan: Plan) -> list[Row]:
    print(f"\n== 4. cost of a good view: closed loop ({CALLERS} callers) and open loop at "
          f"{', '.join(f'{f:g}x' for f in LOADS)} of it, {plan.cost_rounds} rounds taking turns, gateway "
          f"{sut.label}", flush=True)
    names = {pid: name.split("-")[0] for name, pid in sut.pids().items()}
    rows = [Row(f"closed {CALLERS}"), *(Row(f"open {f:g}x") for f in LOADS)]
    seconds = plan.cost_seconds
    skip = min(SKIP, seconds / 3)
    async with machine.tracing(lambda: machine.system_pids(sut.data_dir)) as trace:
        for _ in range(plan.cost_rounds):
            before = switches(names)
            result, origin = await pool.closed_loop([sut.gateway], CALLERS, seconds, "strong", DEADLINE)
            # a closed-loop shot's `due` is when it was sent
            record(rows[0], result, origin + skip, origin + seconds, trace, names, (skip, seconds),
                   (before, switches(names)))
            capacity = rows[0].ok[-1]
            for row, load in zip(rows[1:], LOADS, strict=True):
                before = switches(names)
                result, origin = await pool.open_loop([sut.gateway], [Phase(row.name, seconds, load * capacity)],
                                                      "strong", DEADLINE)
                record(row, result, origin + skip, origin + seconds, trace, names, (skip, seconds),
                       (before, switches(names)))
    print(table(rows))
    return rows


__all__ = ["CALLERS", "LOADS", "Row", "part", "run", "switches", "table"]
