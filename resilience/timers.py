"""Many short-lived timers on one event-loop timer: the hedge delay of every call, most of them cancelled.

Every hedged call arms a timer for its hedge delay, and nearly every one is cancelled unfired, because the
first attempt answers in time. An asyncio timer per call is costly for that: a TimerHandle (and a copy of the
context), a push onto the loop's heap, whose entries compare by a Python `__lt__`, and a pop of the cancelled
handle later, on the loop's own path. Measured with callgrind, that was about a tenth of all the work the
resilience stack does on a call. Here a call's timer is an entry in this queue's own heap of plain tuples, and
the queue keeps one loop timer, for its earliest live entry. A cancelled entry is only marked (and lets go of
its callback), and is dropped when it reaches the head. Finagle and Netty do the same with a hashed wheel
timer; with one delay per method, a heap is simpler and as cheap.

As with a loop timer, each callback runs in the context (contextvars) of the code that armed it, not in
whichever call's context armed the one loop timer: a hedge belongs to its own call's trace. And as on the
loop, a callback that raises is reported to the loop's exception handler and stops nothing else.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
from collections.abc import Callable

from resilience.clock import Clock, Timer, call_later


class Entry:
    """One timer of a TimerQueue; `cancel()` stops it (its callback will not run)."""

    __slots__ = ("callback", "cancelled", "context")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback: Callable[[], object] | None = callback
        self.context: contextvars.Context | None = contextvars.copy_context()
        self.cancelled = False

    def cancel(self) -> None:
        """Stop it, and let go of the callback (and what it holds) at once, as a loop timer does."""
        self.cancelled = True
        self.callback = self.context = None

    def run(self) -> None:
        callback, context = self.callback, self.context
        self.cancel()  # ran: a later cancel() is a no-op, as for a loop timer
        if callback is not None and context is not None:
            context.run(callback)


class TimerQueue:
    """`call_later(delay, callback)` for many timers, with one loop timer (on `clock`) for the earliest."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Entry]] = []
        self._order = itertools.count()
        self._timer: Timer | None = None
        self._armed_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        """Entries held, cancelled ones included until they reach the head."""
        return len(self._heap)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Entry:
        """Run `callback` after `delay` seconds, unless the returned entry is cancelled first."""
        entry = Entry(callback)
        when = self._clock.now() + delay
        heapq.heappush(self._heap, (when, next(self._order), entry))
        if self._timer is None or when < self._armed_at or self._loop is not asyncio.get_running_loop():
            self._arm(when)
        return entry

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._loop = asyncio.get_running_loop()
        self._armed_at = when
        self._timer = call_later(self._clock, when - self._clock.now(), self._run)

    def _run(self) -> None:
        """The loop timer fired: run every entry that is due, then arm for the next live one."""
        self._timer = None
        self._armed_at = math.inf  # a callback that arms the next entry sets it
        heap = self._heap
        now = self._clock.now()
        while heap and (heap[0][2].cancelled or heap[0][0] <= now):
            _, _, entry = heapq.heappop(heap)
            if entry.cancelled:
                continue
            try:
                entry.run()
            except Exception as error:  # as the loop does for its own callbacks: report, and go on
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "exception in a TimerQueue callback", "exception": error})
        if heap and heap[0][0] < self._armed_at:
            self._arm(heap[0][0])
