"""Peak memory per process, read from /proc while the run goes on, because a killed process takes its
VmHWM with it: the peak of a name is the highest over every pid it had."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from pullgate.tools.chaos.invariants import Peak
from pullgate.tools.chaos.system import SystemUnusable, memory, read_state
from pullgate.tools.machine import sampling


class MemoryWatch:
    """Reads VmHWM of every recorded process every `every` seconds until stopped."""

    def __init__(self, data_dir: Path, every: float = 1.0) -> None:
        self._data_dir = data_dir
        self._every = every
        self._peaks: dict[str, dict[int, int]] = {}

    def sample(self) -> None:
        with contextlib.suppress(SystemUnusable, OSError, ValueError):
            for proc in read_state(self._data_dir).procs:
                found = memory(proc.pid)
                if found is not None:
                    pids = self._peaks.setdefault(proc.name, {})
                    pids[proc.pid] = max(pids.get(proc.pid, 0), found[0])

    async def run(self, stop: asyncio.Event) -> None:
        await sampling(self.sample, self._every, stop)

    def peaks(self) -> list[Peak]:
        return [Peak(name, max(pids.values()), tuple(pids)) for name, pids in self._peaks.items()]


__all__ = ["MemoryWatch"]
