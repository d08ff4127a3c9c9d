"""Time as a dependency: policies read `now()` and `sleep()` from a Clock, so tests drive time instead of waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """A monotonic clock in seconds, and a way to wait on it."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.monotonic` and `asyncio.sleep`."""

    # time.monotonic itself rather than a method that calls it: a call reads the clock about fifteen times
    # (deadlines, budgets, caches, latency), and a Python frame each time was a measurable part of its cost.
    now = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK: Clock = SystemClock()


async def wait_for(aw: Awaitable[T], deadline_at: float | None, clock: Clock = SYSTEM_CLOCK) -> T:
    """Await `aw` until `deadline_at` on `clock`; raise TimeoutError after (and cancel `aw`).

    On the real clock this is `asyncio.timeout_at` (a timer handle, no extra task); on any other clock a
    watchdog task sleeps on that clock, so tests drive the timeout by moving time.
    """
    if deadline_at is None:
        return await aw
    if isinstance(clock, SystemClock):
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(loop.time() + (deadline_at - clock.now())):
            return await aw
    task = asyncio.ensure_future(aw)
    watchdog = asyncio.ensure_future(clock.sleep(deadline_at - clock.now()))
    try:
        await asyncio.wait((task, watchdog), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watchdog.cancel()
    if not task.done():
        task.cancel()
        raise TimeoutError
    return task.result()


class Timer(Protocol):
    def cancel(self) -> object: ...


def call_later(clock: Clock, delay: float, callback: Callable[[], object]) -> Timer:
    """Run `callback` after `delay` seconds on `clock`; cancel() the returned timer to stop it.

    On the real clock this is a loop timer handle (no task); on any other clock a task sleeping on it.
    """
    if isinstance(clock, SystemClock):
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)
    task = asyncio.ensure_future(clock.sleep(delay))
    task.add_done_callback(lambda t: None if t.cancelled() else callback())
    return task
