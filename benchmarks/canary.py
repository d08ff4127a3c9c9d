"""How fast the machine's cores run right now: a fixed piece of work timed in its own thread's CPU time.

A benchmark on a shared VM sees the same work cost more CPU in some seconds than in others, and cannot tell a
system that got worse from cores that got slower (a host that lowers its clock under sustained load, a
neighbour sharing a core's caches). The canary tells them apart. Every `every` seconds a thread does the same
work (SHA-256 over 256 KiB, which releases the GIL, and a short loop of Python) and records the CPU time its
own thread spent on it (`time.thread_time`): time spent waiting for a core is not counted, only how fast the
core ran it once it had one. Where a second's work took longer than while capacity was measured, the machine
itself was slower then. It costs about 0.4 ms of CPU every 50 ms (under 1% of a core).

Written by hand: the tools that time a machine (sysbench, stress-ng) run whole cores for seconds, which would
be the very load this must not add.
"""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

_BUFFER = bytes(range(256)) * 1024
"""256 KiB to hash: the same bytes every time."""


def work() -> int:
    """The fixed piece of work; its result, so that nothing is optimised away."""
    digest = hashlib.sha256()
    digest.update(_BUFFER)
    total = 0
    for i in range(3000):
        total += i * i
    return total + digest.digest()[0]


@dataclass(frozen=True)
class Timing:
    """One run of the work: when it started (`time.monotonic()`) and the CPU seconds it took."""

    at: float
    cpu: float


class Canary:
    """Runs `work()` every `every` seconds on a thread of its own while started; `cost(start, end)` reads it."""

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.timings: list[Timing] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            at, before = time.monotonic(), time.thread_time()
            work()
            self.timings.append(Timing(at, time.thread_time() - before))
            self._stop.wait(self.every)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def cost(self, start: float, end: float) -> float | None:
        """The median CPU seconds the work took in runs started between `start` and `end` (`time.monotonic()`);
        None without a run there."""
        inside = [t.cpu for t in self.timings if start <= t.at < end]
        return statistics.median(inside) if inside else None


@contextlib.contextmanager
def running(every: float = 0.05) -> Iterator[Canary]:
    """A Canary timing its work while inside."""
    canary = Canary(every)
    canary.start()
    try:
        yield canary
    finally:
        canary.stop()


__all__ = ["Canary", "Timing", "running", "work"]
