"""How the machine's CPU divided between the system under test and everything else (the load, the tool, neighbours).

Why: an overload test on one small machine runs its load generator beside the system it overloads. Offered three
times capacity, the generator's own cost triples (sending, and reading every refusal), and the cores it takes are
cores the system had while capacity was measured with a light closed loop. Measured on two cores: the generator and
the tool took 0.2 cores while capacity was measured and 0.55 in a 3x spike, so the system had 1.8 cores for its
capacity and 1.45 for the spike. Judging the spike's goodput against the first figure blames the system for what
its test harness costs; real callers sit on other machines.

So a window's `Share` says how busy the machine was (/proc/stat) and how much of that was the system's own
processes (the launcher's state file names them: every server, the edge, the launcher), and `room` is what the rest
left the system. `fair_capacity` scales a capacity by the room of the window it is applied to. Cores the system
left idle are still room: a system that throttles itself to half the machine is judged against the whole of its
capacity. Linux only (/proc); elsewhere nothing is measured and capacity is taken as measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pullgate.tools.launcher import STATE_FILE

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy() -> float | None:
    """CPU seconds the whole machine spent busy since boot (all cores; idle and iowait excluded); None without
    /proc."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def own_cpu(pid: int) -> float | None:
    """CPU seconds process `pid` itself has used (user + system, all threads; not its children); None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def switches(pid: int) -> tuple[int, int] | None:
    """Context switches of process `pid`, all its threads summed: (voluntary, the thread waited for something;
    involuntary, the kernel took the core away); None if gone."""
    voluntary = involuntary = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        voluntary += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        involuntary += int(line.split()[1])
    except OSError:
        return None
    return voluntary, involuntary


def system_pids(data_dir: Path) -> list[int]:
    """The processes of the `pullgate up` whose state file is in `data_dir`: its launcher, every server and the edge;
    [] when there is no readable state file."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
        pids = [int(state["launcher_pid"]),
                *(int(e["pid"]) for entries in state["services"].values() for e in entries if e.get("pid"))]
        edge = state.get("edge") or {}
        if edge.get("pid"):
            pids.append(int(edge["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return pids


@dataclass(frozen=True)
class Share:
    """Cores used on average over a window of `seconds`: by the whole machine, and by the system's processes."""

    seconds: float
    busy: float
    system: float

    @property
    def others(self) -> float:
        """Cores everything but the system used: the load generator, the tool, any neighbour."""
        return max(0.0, self.busy - self.system)

    def room(self, cpus: int) -> float:
        """Cores the others left the system (used or not)."""
        return max(0.0, cpus - self.others)

    def line(self, cpus: int) -> str:
        return (f"{self.busy:.2f} of {cpus} cores busy, the system {self.system:.2f}, the rest {self.others:.2f}: "
                f"room {self.room(cpus):.2f}")


def fair_capacity(capacity: float, measured: Share | None, applied: Share | None, cpus: int) -> float:
    """`capacity`, measured in window `measured`, scaled to the room the system had in `applied`: never above
    `capacity` (a window where the rest took less earns nothing), and `capacity` itself when either is unknown."""
    if measured is None or applied is None or measured.room(cpus) <= 0:
        return capacity
    return capacity * min(1.0, applied.room(cpus) / measured.room(cpus))


async def sampling(sample: Callable[[], None], every: float, stop: asyncio.Event) -> None:
    """Call `sample` every `every` seconds until `stop` is set, and once more then (watchers of other processes)."""
    while not stop.is_set():
        sample()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    sample()


@dataclass(frozen=True)
class _Sample:
    at: float
    busy: float
    cpu: Mapping[int, float]


class Trace:
    """Samples the machine and the system's processes every `every` seconds while `run` goes on, so that any window
    inside can be read afterwards (the windows that matter are known only once a load has run)."""

    def __init__(self, pids: Callable[[], Iterable[int]], every: float = 0.2) -> None:
        """`pids`: the system's processes now (asked at every sample: a restarted process has a new pid)."""
        self._pids = pids
        self._every = every
        self._samples: list[_Sample] = []

    def sample(self) -> None:
        busy = machine_busy()
        if busy is None:
            return
        cpu = {pid: used for pid in self._pids() if (used := own_cpu(pid)) is not None}
        self._samples.append(_Sample(time.monotonic(), busy, cpu))

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until `stop` is set, and once more then."""
        await sampling(self.sample, self._every, stop)

    def _window(self, start: float, end: float) -> tuple[_Sample, _Sample] | None:
        """The samples nearest to `start` and `end`, if they are apart in that order."""
        if len(self._samples) < 2 or end <= start:
            return None
        first = min(self._samples, key=lambda s: abs(s.at - start))
        last = min(self._samples, key=lambda s: abs(s.at - end))
        return (first, last) if last.at > first.at else None

    @staticmethod
    def _cores(first: _Sample, last: _Sample) -> dict[int, float]:
        """Cores each process sampled at both ends used on average between them, by pid."""
        seconds = last.at - first.at
        return {pid: (last.cpu[pid] - first.cpu[pid]) / seconds for pid in last.cpu.keys() & first.cpu.keys()}

    def processes(self, start: float, end: float) -> dict[int, float]:
        """Cores each of the system's processes used on average between `start` and `end` (`time.monotonic()`), by
        pid; {} when not sampled. A process that was not there at both ends is left out."""
        window = self._window(start, end)
        return {} if window is None else self._cores(*window)

    def between(self, start: float, end: float) -> Share | None:
        """The Share over the samples nearest to `start` and `end` (`time.monotonic()`); None when not sampled."""
        window = self._window(start, end)
        if window is None:
            return None
        first, last = window
        seconds = last.at - first.at
        return Share(seconds, (last.busy - first.busy) / seconds, sum(self._cores(first, last).values()))


@contextlib.asynccontextmanager
async def tracing(pids: Callable[[], Iterable[int]], every: float = 0.2) -> AsyncIterator[Trace]:
    """A Trace sampling while inside."""
    trace = Trace(pids, every)
    stop = asyncio.Event()
    task = asyncio.create_task(trace.run(stop), name="cpu trace")
    try:
        yield trace
    finally:
        stop.set()
        await task


__all__ = ["Share", "Trace", "fair_capacity", "machine_busy", "own_cpu", "sampling", "switches", "system_pids",
           "tracing"]
