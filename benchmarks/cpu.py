"""Where the machine's CPU went during a stretch of a benchmark: all of it (/proc/stat), the benchmark's own
process tree (the systems it started, its load workers, itself), and so everything else.

Why: overload figures are figures about a saturated machine. On a small shared machine another program (a test
suite, a build) can take a core for itself, and then capacity, goodput and the generator's lag all move. Each
scenario says how busy the machine was and how much of that was not ours, so a reader can tell a real
regression from a noisy neighbour. Linux only; elsewhere the figures are None.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pullgate.tools.machine import machine_busy

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of it and of its children it has waited for)."""
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        out[int(entry.name)] = (int(fields[1]), (utime + stime + cutime + cstime) / _TICK)
    return out


def tree_cpu(root: int | None = None) -> float | None:
    """CPU seconds used by `root` (this process by default) and every live descendant, and by the descendants
    they have waited for."""
    if not Path("/proc/self/stat").exists():
        return None
    stats = _stats()
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += children.get(pid, [])
    return total


def process_cpu(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds each named process has used so far (0 for one that is gone)."""
    stats = _stats()
    out: dict[str, float] = {}
    for name, pid in pids.items():
        found = stats.get(pid)
        out[name] = 0.0 if found is None else found[1]
    return out


class Split:
    """The cores each named process used on average between `Split(pids)` and `line()`."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._at = time.monotonic()
        self._before = process_cpu(self._pids)

    def cores(self) -> dict[str, float]:
        seconds = max(1e-9, time.monotonic() - self._at)
        after = process_cpu(self._pids)
        return {name: (after[name] - self._before[name]) / seconds for name in self._pids}

    def line(self) -> str:
        cores = sorted(self.cores().items(), key=lambda item: -item[1])
        return "by process (cores): " + ", ".join(f"{name} {used:.2f}" for name, used in cores)


@dataclass(frozen=True)
class Usage:
    """Average cores busy over a stretch: in all, and by processes outside this benchmark."""

    seconds: float
    busy: float | None
    others: float | None

    def line(self) -> str:
        if self.busy is None or self.others is None:
            return "machine: no /proc, CPU use not measured"
        return (f"machine: {self.busy:.2f} of {os.cpu_count()} cores busy on average over {self.seconds:.0f} s, "
                f"{max(0.0, self.others):.2f} of them by processes outside this benchmark")


class Meter:
    """Measures the Usage between `Meter()` and `usage()`."""

    def __init__(self) -> None:
        self._at = time.monotonic()
        self._busy = machine_busy()
        self._ours = tree_cpu()

    def usage(self) -> Usage:
        seconds = max(1e-9, time.monotonic() - self._at)
        busy, ours = machine_busy(), tree_cpu()
        if busy is None or ours is None or self._busy is None or self._ours is None:
            return Usage(seconds, None, None)
        used = (busy - self._busy) / seconds
        return Usage(seconds, used, used - (ours - self._ours) / seconds)


__all__ = ["Meter", "Split", "Usage", "machine_busy", "process_cpu", "tree_cpu"]
