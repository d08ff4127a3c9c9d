"""Per-replica breakers on pybreaker: what counts, failing fast, one half-open probe, observable changes."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2
from resilience import BreakerConfig, CircuitOpen, Downstream, DownstreamConfig, StatusError
from resilience.config import CacheConfig, HedgingConfig, RetryConfig
from resilience.testing import FakeClock, settle
from tests.resilience.scripted import OK, READ, Scripted, Step, fails

ONE_ATTEMPT = DownstreamConfig(
    retry=RetryConfig(enabled=False),
    hedging=HedgingConfig(enabled=False),
    cache=CacheConfig(enabled=False),
    breaker=BreakerConfig(fail_max=3, reset_timeout=5.0),
)
REQUEST = catalog_pb2.GetProductRequest(sku="x")


async def fail_n(downstream: Downstream, n: int) -> None:
    for _ in range(n):
        with pytest.raises(StatusError):
            await downstream.call(READ, REQUEST)


async def test_opens_after_fail_max_and_fails_fast_naming_the_downstream() -> None:
    """Three UNAVAILABLEs open the breaker; the next call fails with UNAVAILABLE without reaching the owner."""
    clock = FakeClock()
    script = Scripted(clock, fails(grpc.StatusCode.UNAVAILABLE))
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=script)
    await fail_n(downstream, 3)
    with pytest.raises(CircuitOpen) as raised:
        await downstream.call(READ, REQUEST)
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert raised.value.downstream == "catalog"
    assert "circuit open" in str(raised.value)
    assert "catalog" in str(raised.value)
    assert len(script.calls) == 3


async def test_caller_errors_do_not_open_the_breaker() -> None:
    """Any number of NOT_FOUNDs leave the breaker closed."""
    clock = FakeClock()
    script = Scripted(clock, fails(grpc.StatusCode.NOT_FOUND))
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=script)
    await fail_n(downstream, 10)
    assert downstream.breaker_states() == {"a:1": "closed"}


async def test_cancellation_is_not_a_failure() -> None:
    """Callers that give up mid-call (cancelled) never open the breaker."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(delay=1.0))
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=script)
    for _ in range(5):
        call = asyncio.create_task(downstream.call(READ, REQUEST))
        await settle()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert len(script.cancelled) == 5
    assert downstream.breaker_states() == {"a:1": "closed"}


async def test_half_open_admits_exactly_one_probe_under_concurrency() -> None:
    """After reset_timeout, of ten concurrent calls one reaches the owner; the rest fail fast until it succeeds."""
    clock = FakeClock()
    healthy = [False]
    script = Scripted(clock, lambda n, r: Step(delay=0.5) if healthy[0] else Step(code=grpc.StatusCode.UNAVAILABLE))
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=script)
    await fail_n(downstream, 3)
    healthy[0] = True
    await clock.advance(5.0)
    calls = [asyncio.create_task(downstream.call(READ, REQUEST)) for _ in range(10)]
    await settle()
    assert len(script.calls) == 3 + 1
    assert downstream.breaker_states() == {"a:1": "half-open"}
    refused = [c for c in calls if c.done()]
    assert len(refused) == 9
    assert all(isinstance(c.exception(), CircuitOpen) for c in refused)
    await clock.advance(0.5)
    await asyncio.gather(*[c for c in calls if c not in refused])
    assert downstream.breaker_states() == {"a:1": "closed"}


async def test_failed_probe_reopens_and_a_cancelled_probe_frees_the_slot() -> None:
    """A cancelled probe leaves the breaker half-open for the next probe; a failed probe opens it again."""
    clock = FakeClock()
    plan = [Step(delay=1.0)]
    script = Scripted(clock, lambda n, r: Step(code=grpc.StatusCode.UNAVAILABLE) if n < 3 else plan[0])
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=script)
    await fail_n(downstream, 3)
    await clock.advance(5.0)
    probe = asyncio.create_task(downstream.call(READ, REQUEST))
    await settle()
    probe.cancel()
    await settle()
    assert downstream.breaker_states() == {"a:1": "half-open"}
    plan[0] = Step(code=grpc.StatusCode.INTERNAL)
    with pytest.raises(StatusError):
        await downstream.call(READ, REQUEST)
    assert downstream.breaker_states() == {"a:1": "open"}


async def test_state_changes_reach_listeners() -> None:
    """A listener sees closed -> open -> half-open -> closed with the downstream and replica."""
    clock = FakeClock()
    healthy = [False]
    script = Scripted(clock, lambda n, r: OK if healthy[0] else Step(code=grpc.StatusCode.UNAVAILABLE))
    downstream = Downstream("catalog", ["a:1"], ONE_ATTEMPT, clock, endpoint=script)
    seen: list[tuple[str, str, str, str]] = []
    downstream.add_breaker_listener(lambda *change: seen.append(change))
    await fail_n(downstream, 3)
    healthy[0] = True
    await clock.advance(5.0)
    await downstream.call(READ, REQUEST)
    changes = [(old, new) for _, _, old, new in seen]
    assert changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    assert {(d, r) for d, r, _, _ in seen} == {("catalog", "a:1")}


async def test_balance_avoids_a_replica_whose_breaker_is_open() -> None:
    """Once a's breaker is open, calls go to b without failing fast."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, r: Step(code=grpc.StatusCode.UNAVAILABLE) if r == "a:1" else OK)
    downstream = Downstream("catalog", ["a:1", "b:1"], ONE_ATTEMPT, clock, endpoint=script)
    for _ in range(30):
        with contextlib.suppress(StatusError):
            await downstream.call(READ, REQUEST)
    assert downstream.breaker_states()["a:1"] == "open"
    before = len(script.calls)
    results = [await downstream.call(READ, REQUEST) for _ in range(5)]
    assert all(r.provenance.replica == "b:1" for r in results)
    assert script.calls[before:] == ["b:1"] * 5
