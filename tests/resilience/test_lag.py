"""The event-loop lag monitor: a late tick is time the loop was behind; an idle process runs no timer."""

from __future__ import annotations

import pytest

from resilience.lag import INTERVAL, LoopLag, monitor
from resilience.testing import FakeClock, settle


async def test_a_blocked_loop_is_measured_while_overdue_and_after() -> None:
    """A 2 s stall during an attempt reads as about 2 s of lag, before and after the late tick has run."""
    clock = FakeClock()
    lag = LoopLag(clock)
    lag.enter()
    await settle()  # the monitor's timer is armed
    start = clock.now()
    await clock.advance(0.01)
    clock._now += 2.0  # the loop is blocked: nothing has run yet, the tick is overdue
    assert lag.during(start, clock.now()) == pytest.approx(2.0 + 0.01 - INTERVAL)
    await clock.advance(0.0)  # the loop gets back: the tick runs late and is remembered
    assert lag.during(start, clock.now()) == pytest.approx(2.0 + 0.01 - INTERVAL)
    lag.leave()


async def test_time_that_passes_normally_is_no_lag() -> None:
    """Ticks that run on time add nothing, however long the attempt."""
    clock = FakeClock()
    lag = LoopLag(clock)
    lag.enter()
    start = clock.now()
    for _ in range(30):
        await clock.advance(0.1)
    assert lag.during(start, clock.now()) == 0.0
    lag.leave()


async def test_only_the_part_of_a_stall_inside_the_interval_counts() -> None:
    """A stall that ended before the attempt began, or began after it ended, is not the attempt's lag."""
    clock = FakeClock()
    lag = LoopLag(clock)
    lag.enter()
    await settle()  # the monitor's timer is armed
    await clock.stall(1.0)
    later = clock.now()
    await clock.advance(0.5)
    assert lag.during(later, clock.now()) == 0.0
    before = clock.now()
    await clock.stall(1.0)
    assert lag.during(before - 0.5, before) == 0.0
    assert lag.during(before, clock.now()) == pytest.approx(1.0, abs=INTERVAL)
    lag.leave()


async def test_the_timer_runs_only_while_attempts_are_in_flight() -> None:
    """With no attempt in flight the monitor's timer stops; the next attempt starts it again."""
    clock = FakeClock()
    lag = LoopLag(clock)
    lag.enter()
    await settle()
    assert clock.sleepers == 1
    lag.leave()
    await clock.advance(INTERVAL)
    assert clock.sleepers == 0
    lag.enter()
    await settle()
    assert clock.sleepers == 1
    lag.leave()


def test_one_monitor_per_clock() -> None:
    """Every downstream on a clock shares its monitor."""
    clock = FakeClock()
    assert monitor(clock) is monitor(clock)
    assert monitor(clock) is not monitor(FakeClock())
