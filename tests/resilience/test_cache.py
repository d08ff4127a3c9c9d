"""The cache: hits within max staleness, strong reads, single-flight with per-waiter deadlines, stale-if-error."""

from __future__ import annotations

import asyncio
import math

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2
from resilience import DeadlineExceeded, Downstream, DownstreamConfig, Source, StatusError
from resilience import deadline as dl
from resilience.config import CacheConfig, HedgingConfig, RetryConfig
from resilience.testing import FakeClock, settle
from tests.resilience.scripted import OK, READ, Scripted, Step

CONFIG = DownstreamConfig(
    retry=RetryConfig(enabled=False),
    hedging=HedgingConfig(enabled=False),
    cache=CacheConfig(ttl=1.0, max_staleness=30.0, max_stale=300.0),
)
REQUEST = catalog_pb2.GetProductRequest(sku="x")


def make(clock: FakeClock, script: Scripted) -> Downstream:
    return Downstream("catalog", ["a:1"], CONFIG, clock, endpoint=script)


async def test_second_read_is_a_hit_with_its_age() -> None:
    """A read within the TTL is served from the cache, labelled CACHED with its age, without a call."""
    clock = FakeClock()
    script = Scripted(clock)
    downstream = make(clock, script)
    await downstream.call(READ, REQUEST)
    await clock.advance(0.25)
    result = await downstream.call(READ, REQUEST)
    assert result.provenance.source is Source.CACHED
    assert result.provenance.age == 0.25
    assert len(script.calls) == 1


async def test_strong_read_skips_the_cache_but_fills_it() -> None:
    """max_staleness=0.0 always calls the owner, and the next default read hits what it stored."""
    clock = FakeClock()
    script = Scripted(clock)
    downstream = make(clock, script)
    await downstream.call(READ, REQUEST)
    strong = await downstream.call(READ, REQUEST, max_staleness=0.0)
    assert strong.provenance.source is Source.LIVE
    assert len(script.calls) == 2
    await clock.advance(0.1)
    again = await downstream.call(READ, REQUEST)
    assert again.provenance.source is Source.CACHED
    assert again.provenance.age == pytest.approx(0.1)


async def test_strong_read_does_not_join_a_call_already_in_flight() -> None:
    """A strong read that arrives while an identical read is in flight makes its own call to the owner."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=0.1))
    downstream = make(clock, script)
    earlier = asyncio.create_task(downstream.call(READ, REQUEST))
    await settle()
    strong = asyncio.create_task(downstream.call(READ, REQUEST, max_staleness=0.0))
    joining = asyncio.create_task(downstream.call(READ, REQUEST))
    await clock.advance(0.2)
    await asyncio.gather(earlier, strong, joining)
    assert len(script.calls) == 2  # the earlier read and the strong one; the third bounded read joined
    assert strong.result().provenance.source is Source.LIVE


async def test_entry_older_than_the_callers_bound_is_not_used() -> None:
    """A caller accepting 0.1 s of staleness does not get a 0.5 s old entry."""
    clock = FakeClock()
    script = Scripted(clock)
    downstream = make(clock, script)
    await downstream.call(READ, REQUEST)
    await clock.advance(0.5)
    result = await downstream.call(READ, REQUEST, max_staleness=0.1)
    assert result.provenance.source is Source.LIVE
    assert len(script.calls) == 2


async def test_single_flight_makes_one_call_for_many_waiters() -> None:
    """Twenty concurrent identical reads share one downstream call and all get its answer."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=0.1))
    downstream = make(clock, script)
    calls = [asyncio.create_task(downstream.call(READ, REQUEST)) for _ in range(20)]
    await clock.advance(0.2)
    results = await asyncio.gather(*calls)
    assert len(script.calls) == 1
    assert all(r.provenance.source is Source.LIVE for r in results)


async def test_a_waiters_timeout_does_not_cancel_the_others() -> None:
    """A waiter with a short deadline gives up; the shared call goes on and answers the waiter with more time."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=1.0))
    downstream = make(clock, script)
    patient = asyncio.create_task(downstream.call(READ, REQUEST))
    await settle()
    with dl.scope(dl.Deadline.after(0.3, clock)):
        hasty = asyncio.create_task(downstream.call(READ, REQUEST))  # joins the patient one's call
    await clock.advance(0.5)
    assert hasty.done()
    assert isinstance(hasty.exception(), DeadlineExceeded)
    assert script.cancelled == []
    await clock.advance(0.6)
    assert (await patient).provenance.source is Source.LIVE
    assert len(script.calls) == 1


async def test_the_shared_call_is_cancelled_when_its_last_waiter_leaves() -> None:
    """When every waiter is cancelled, the shared downstream call is cancelled too."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=1.0))
    downstream = make(clock, script)
    calls = [asyncio.create_task(downstream.call(READ, REQUEST)) for _ in range(3)]
    await settle()
    for c in calls[:2]:
        c.cancel()
    await settle()
    assert script.cancelled == []
    calls[2].cancel()
    await settle()
    assert script.cancelled == ["a:1"]


async def test_stale_if_error_within_max_staleness() -> None:
    """When the owner fails, the last good answer is served as STALE, with its age and the reason."""
    clock = FakeClock()
    healthy = [True]
    script = Scripted(clock, lambda n, r: OK if healthy[0] else Step(code=grpc.StatusCode.UNAVAILABLE))
    downstream = make(clock, script)
    await downstream.call(READ, REQUEST)
    healthy[0] = False
    await clock.advance(10.0)
    result = await downstream.call(READ, REQUEST)
    assert result.provenance.source is Source.STALE
    assert result.provenance.age == 10.0
    assert "UNAVAILABLE" in result.provenance.reason


async def test_no_stale_beyond_max_staleness() -> None:
    """An answer older than the caller's bound is not served; the owner's error is raised."""
    clock = FakeClock()
    healthy = [True]
    script = Scripted(clock, lambda n, r: OK if healthy[0] else Step(code=grpc.StatusCode.UNAVAILABLE))
    downstream = make(clock, script)
    await downstream.call(READ, REQUEST)
    healthy[0] = False
    await clock.advance(40.0)
    with pytest.raises(StatusError):
        await downstream.call(READ, REQUEST)  # default bound 30 s
    with pytest.raises(StatusError):
        await downstream.call(READ, REQUEST, max_staleness=0.0)
    assert (await downstream.call(READ, REQUEST, max_staleness=60.0)).provenance.source is Source.STALE
    assert (await downstream.call(READ, REQUEST, max_staleness=math.inf)).provenance.source is Source.STALE


async def test_stale_store_forgets_after_max_stale() -> None:
    """Even math.inf gets nothing older than max_stale: the store drops it."""
    clock = FakeClock()
    healthy = [True]
    script = Scripted(clock, lambda n, r: OK if healthy[0] else Step(code=grpc.StatusCode.UNAVAILABLE))
    downstream = make(clock, script)
    await downstream.call(READ, REQUEST)
    healthy[0] = False
    await clock.advance(301.0)
    with pytest.raises(StatusError):
        await downstream.call(READ, REQUEST, max_staleness=math.inf)


async def test_caller_errors_are_not_answered_with_stale_data() -> None:
    """A NOT_FOUND is the owner's answer: it is raised, never covered by an older cached answer."""
    clock = FakeClock()
    found = [True]
    script = Scripted(clock, lambda n, r: OK if found[0] else Step(code=grpc.StatusCode.NOT_FOUND))
    downstream = make(clock, script)
    await downstream.call(READ, REQUEST)
    found[0] = False
    await clock.advance(2.0)
    with pytest.raises(StatusError) as raised:
        await downstream.call(READ, REQUEST)
    assert raised.value.code is grpc.StatusCode.NOT_FOUND


async def test_only_a_waiter_with_less_time_than_the_shared_call_arms_a_timer() -> None:
    """The first waiter and waiters with more time rely on the shared call's deadline; a hastier one has a timer."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=1.0))
    downstream = make(clock, script)
    first = asyncio.create_task(downstream.call(READ, REQUEST))
    await settle()
    assert clock.sleepers == 2  # the owner's own work, and the loop-lag monitor's tick (resilience.lag)
    with dl.scope(dl.Deadline.after(10.0, clock)):
        patient = asyncio.create_task(downstream.call(READ, REQUEST))
    await settle()
    assert clock.sleepers == 2
    with dl.scope(dl.Deadline.after(0.3, clock)):
        hasty = asyncio.create_task(downstream.call(READ, REQUEST))
    await settle()
    assert clock.sleepers == 3
    await clock.advance(1.1)
    assert isinstance(hasty.exception(), DeadlineExceeded)
    assert (await first).provenance.source is Source.LIVE
    assert (await patient).provenance.source is Source.LIVE
    assert len(script.calls) == 1


async def test_waiters_share_a_failure_and_a_later_caller_starts_a_new_call() -> None:
    """Every waiter gets the shared call's error; a caller arriving after it ended makes its own call."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=0.1, code=grpc.StatusCode.INTERNAL) if n == 0 else OK)
    downstream = make(clock, script)
    calls = [asyncio.create_task(downstream.call(READ, REQUEST)) for _ in range(3)]
    await clock.advance(0.2)
    assert all(isinstance(c.exception(), StatusError) for c in calls)
    assert (await downstream.call(READ, REQUEST)).provenance.source is Source.LIVE
    assert len(script.calls) == 2
