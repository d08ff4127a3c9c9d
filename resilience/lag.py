"""How far behind the event loop is running, so that a deadline that ran out in this process is not blamed on the owner.

Under overload the caller's own event loop falls behind: a request leaves late, an answer is read late, and the
attempt's slice is gone before the owner had a fair chance. A DEADLINE_EXCEEDED looks the same either way, so
the attempt timeout asks this monitor how long the loop was behind during the attempt (resilience.outcome,
"Whose deadline").

The monitor is one timer, re-armed every `INTERVAL` seconds, that measures its own lateness: a tick due at t
that runs at t + late means the loop was busy with other work from t to t + late (to within one interval). Only
late ticks are kept, with when they ran, so asking about an attempt is a short walk back through recent ones;
a tick that is overdue right now counts too (the loop may reach the attempt's failure before it reaches the
tick). The per-attempt cost is two counter updates: the timer runs only while attempts are in flight, so an
idle process (or a test on a fake clock) has no timer at all. One monitor per clock is shared by every
downstream; it follows the running event loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

from resilience.clock import Clock, Timer, call_later

INTERVAL = 0.05
"""Seconds between ticks: 20 wake-ups a second while calls are in flight (a few µs each)."""
NOISE = 0.002
"""Lateness below this is the timer's resolution and one ordinary turn of the loop, not lag."""
HISTORY = 256
"""Late ticks remembered: several seconds of a loop that is always behind, longer than an attempt's slice."""


class LoopLag:
    """The lateness of a repeating loop timer, kept while attempts are in flight; `during(start, end)` sums it."""

    __slots__ = ("__weakref__", "_clock", "_due", "_late", "_loop", "_timer", "in_flight")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._timer: Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._late: deque[tuple[float, float]] = deque(maxlen=HISTORY)
        """(when the tick ran, how late it was) for late ticks, oldest first."""
        self.in_flight = 0

    def enter(self) -> None:
        """An attempt starts: make sure the loop is being watched."""
        self.in_flight += 1
        if self._timer is None:
            self._arm()

    def leave(self) -> None:
        """An attempt ended."""
        self.in_flight -= 1

    def _arm(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._due = self._clock.now() + INTERVAL
        self._timer = call_later(self._clock, INTERVAL, self._tick)

    def _tick(self) -> None:
        now = self._clock.now()
        late = now - self._due
        if late > NOISE:
            self._late.append((now, late))
        self._timer = None
        if self.in_flight > 0:
            self._arm()

    def during(self, start: float, end: float) -> float:
        """Seconds of [start, end] during which the event loop was behind."""
        if self._loop is not asyncio.get_running_loop():
            # The timer was armed on a loop that is gone (a process that ran several loops one after another):
            # nothing is known about this one yet. Watch it from now on, and blame no lag meanwhile.
            self._late.clear()
            self._arm()
            return 0.0
        total = 0.0
        for ran, late in reversed(self._late):
            if ran <= start:
                break  # this tick and all older ones ended before the attempt began
            total += max(0.0, min(ran, end) - max(ran - late, start))
        if self._timer is not None:
            total += max(0.0, end - max(self._due, start))  # the next tick is overdue: behind right now
        return total


_monitors: weakref.WeakKeyDictionary[Clock, LoopLag] = weakref.WeakKeyDictionary()


def monitor(clock: Clock) -> LoopLag:
    """The one monitor of `clock` (a new one if the clock cannot be weakly referenced)."""
    try:
        found = _monitors.get(clock)
        if found is None:
            found = _monitors[clock] = LoopLag(clock)
        return found
    except TypeError:
        return LoopLag(clock)
