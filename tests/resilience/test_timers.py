"""The timer queue behind hedge delays: many timers, one loop timer, cancelled entries never run."""

from __future__ import annotations

import asyncio
import contextvars

from resilience.clock import SYSTEM_CLOCK
from resilience.testing import FakeClock
from resilience.timers import TimerQueue


async def test_due_entries_run_in_time_order_and_cancelled_ones_never() -> None:
    clock = FakeClock()
    timers = TimerQueue(clock)
    ran: list[str] = []
    timers.call_later(0.3, lambda: ran.append("c"))
    timers.call_later(0.1, lambda: ran.append("a"))
    cancelled = timers.call_later(0.2, lambda: ran.append("cancelled"))
    timers.call_later(0.2, lambda: ran.append("b"))
    cancelled.cancel()
    await clock.advance(0.15)
    assert ran == ["a"]
    await clock.advance(0.2)
    assert ran == ["a", "b", "c"]
    assert len(timers) == 0


async def test_one_loop_timer_for_many_entries() -> None:
    """A hundred pending entries hold one sleep on the clock, re-armed only for an earlier entry."""
    clock = FakeClock()
    timers = TimerQueue(clock)
    for i in range(100):
        timers.call_later(1.0 + i / 1000, lambda: None)
    await asyncio.sleep(0)
    assert clock.sleepers == 1
    timers.call_later(0.5, lambda: None)  # earlier than the armed one: the loop timer moves
    await asyncio.sleep(0)
    assert clock.sleepers == 1


async def test_an_entry_added_by_a_callback_runs_too() -> None:
    """A hedge that fires may arm the next one (a third attempt); that entry is not lost."""
    clock = FakeClock()
    timers = TimerQueue(clock)
    ran: list[int] = []

    def first() -> None:
        ran.append(1)
        timers.call_later(0.1, lambda: ran.append(2))

    timers.call_later(0.1, first)
    await clock.advance(0.1)
    assert ran == [1]
    await clock.advance(0.1)
    assert ran == [1, 2]


async def test_cancelling_an_entry_after_it_ran_is_harmless() -> None:
    clock = FakeClock()
    timers = TimerQueue(clock)
    ran: list[int] = []
    entry = timers.call_later(0.1, lambda: ran.append(1))
    await clock.advance(0.2)
    entry.cancel()
    assert ran == [1]


def test_a_queue_used_on_a_new_event_loop_arms_a_timer_there() -> None:
    """The loop timer belongs to one event loop; a queue outliving it arms afresh on the next loop."""
    timers = TimerQueue(SYSTEM_CLOCK)

    async def wait_for_one(delay: float) -> None:
        fired = asyncio.Event()
        timers.call_later(delay, fired.set)
        await asyncio.wait_for(fired.wait(), 5.0)

    async def leave_one_pending() -> None:
        timers.call_later(0.05, lambda: None)  # armed on this loop, which closes before it fires

    asyncio.run(leave_one_pending())
    asyncio.run(wait_for_one(0.2))  # later than the entry armed on the dead loop: must still get a timer


async def test_a_callback_runs_in_the_context_of_the_code_that_armed_it() -> None:
    """Not in the context of whoever armed the one loop timer: a hedge belongs to its own call (and trace)."""
    clock = FakeClock()
    timers = TimerQueue(clock)
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who")
    ran: list[str] = []

    async def arm(name: str, delay: float) -> None:
        who.set(name)
        timers.call_later(delay, lambda: ran.append(who.get()))

    await asyncio.create_task(arm("first", 0.1))  # arms the loop timer, in its own context
    await asyncio.create_task(arm("second", 0.2))
    await clock.advance(0.3)
    assert ran == ["first", "second"]


async def test_a_callback_that_raises_stops_nothing_else() -> None:
    clock = FakeClock()
    timers = TimerQueue(clock)
    reported: list[BaseException] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx["exception"]))
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    timers.call_later(0.1, boom)
    timers.call_later(0.1, lambda: ran.append(1))
    timers.call_later(0.2, lambda: ran.append(2))
    await clock.advance(0.3)
    assert ran == [1, 2]
    assert [str(e) for e in reported] == ["boom"]


async def test_an_entry_armed_by_a_callback_does_not_delay_an_earlier_one() -> None:
    clock = FakeClock()
    timers = TimerQueue(clock)
    ran: list[str] = []
    timers.call_later(0.1, lambda: timers.call_later(1.0, lambda: ran.append("late")))
    timers.call_later(0.2, lambda: ran.append("early"))
    await clock.advance(0.25)
    assert ran == ["early"]


def test_a_cancelled_entry_lets_go_of_its_callback() -> None:
    async def main() -> None:
        entry = TimerQueue(SYSTEM_CLOCK).call_later(60.0, lambda: None)
        entry.cancel()
        assert entry.callback is None

    asyncio.run(main())
