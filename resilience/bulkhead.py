"""Bounded concurrency per downstream: a slow owner may hold at most `max_concurrent` of our calls.

Without it, a stuck owner collects every task the caller has, and the caller stops answering anything else.
When the bulkhead is full a call waits at most `max_wait` (and never past its deadline) for a slot, then
fails with RESOURCE_EXHAUSTED: fail fast, never queue without bound. Waiters are served first come, first
served; a waiter that gives up leaves the queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from resilience.clock import SYSTEM_CLOCK, Clock, wait_for
from resilience.config import BulkheadConfig
from resilience.context import Call, CallContext
from resilience.errors import BulkheadFull
from resilience.instruments import BULKHEAD_REJECTIONS, event, labels


class Bulkhead:
    """A FIFO semaphore with a bounded wait."""

    def __init__(self, downstream: str, config: BulkheadConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self.downstream = downstream
        self.limit = config.max_concurrent
        self.in_flight = 0
        self._max_wait = config.max_wait
        self._clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def _acquire(self, ctx: CallContext) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        until = self._clock.now() + self._max_wait
        if ctx.deadline is not None:
            until = min(until, ctx.deadline.at)
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await wait_for(asyncio.shield(slot), until, self._clock)
        except (TimeoutError, asyncio.CancelledError) as error:
            if slot.done() and not slot.cancelled():
                self._release()  # handed a slot just as we gave up: pass it on
            else:
                slot.cancel()
                self._waiters.remove(slot)
            if isinstance(error, TimeoutError):
                BULKHEAD_REJECTIONS.add(1, labels(self.downstream, ctx.method.descriptor.name))
                event("bulkhead full", {"resilience.limit": self.limit})
                raise BulkheadFull(self.downstream, self.limit) from None
            raise

    def _release(self) -> None:
        while self._waiters:
            slot = self._waiters.popleft()
            if not slot.done():
                slot.set_result(None)  # the slot passes to the waiter; in_flight stays
                return
        self.in_flight -= 1

    async def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Any:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1  # a free slot, and nobody queued before us: the common case, no wait
        else:
            await self._acquire(ctx)
        try:
            return await inner(request, ctx)
        finally:
            self._release()
