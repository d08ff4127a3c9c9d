"""The live line while a run goes on: rate, OK, degraded, errors, p99 and the fault in force.

On a terminal it rewrites one line twice a second; into a pipe or a file it prints a plain line every few
seconds, so logs stay readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

from pullgate.tools.chaos.record import Call
from pullgate.tools.stats import percentile


class Progress:
    """Counts calls as they finish and shows them on `out`."""

    def __init__(self, out: TextIO, tty: bool, faults: Callable[[], list[str]], window: float = 5.0) -> None:
        self._out = out
        self._tty = tty
        self._faults = faults
        self._window = window
        self._recent: deque[tuple[float, float]] = deque()
        self.ok = self.degraded = self.errors = 0
        self._started = time.monotonic()

    def add(self, call: Call) -> None:
        now = time.monotonic()
        self._recent.append((now, call.latency))
        if call.failed:
            self.errors += 1
        elif call.degraded:
            self.degraded += 1
        else:
            self.ok += 1

    def line(self) -> str:
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - self._window:
            self._recent.popleft()
        span = min(self._window, max(now - self._started, 1e-9))
        p99 = percentile([latency for _, latency in self._recent], 0.99)
        fault = ", ".join(self._faults()) or "none"
        return (f"{now - self._started:5.0f}s  {len(self._recent) / span:5.1f} req/s  ok {self.ok}  "
                f"degraded {self.degraded}  errors {self.errors}  p99 {p99 * 1000:.0f} ms  fault: {fault}")

    async def run(self, stop: asyncio.Event) -> None:
        every = 0.5 if self._tty else 5.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if self._tty:
                self._out.write("\r\033[K" + self.line())
            else:
                self._out.write(self.line() + "\n")
            self._out.flush()
        if self._tty:
            self._out.write("\n")
            self._out.flush()


__all__ = ["Progress"]
