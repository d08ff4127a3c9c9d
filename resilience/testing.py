"""Test helpers for code that uses the layer: a clock that only moves when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools


class FakeClock:
    """A Clock whose time moves only on `advance()`; `sleep()` waits until time has passed its wake time.

    >>> clock = FakeClock()
    >>> task = asyncio.create_task(clock.sleep(1.0))
    >>> await clock.advance(1.0)   # the sleeper wakes, and gets to run before advance() returns
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), wake))
        await wake

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (cancelled ones excluded)."""
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def stall(self, seconds: float) -> None:
        """The event loop is blocked for `seconds` (a long synchronous call, a starved process): time jumps, and
        everything that fell due meanwhile runs late, in wake order, once the loop gets back to it."""
        self._now += seconds
        await self.advance(0.0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking each sleeper in wake order and letting it run."""
        target = self._now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            wake_at, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, wake_at)
            if not future.done():
                future.set_result(None)
                await settle()
        self._now = target
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until the loop has nothing left to do right now."""
    for _ in range(rounds):
        await asyncio.sleep(0)
