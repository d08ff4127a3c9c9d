"""The one classification of outcomes that every policy reads."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from resilience.errors import (
    OVERLOADED_METADATA,
    REFUSED_METADATA,
    BulkheadFull,
    CircuitOpen,
    DeadlineExceeded,
    LocalDeadline,
    Overloaded,
    StatusError,
    Throttled,
)
from resilience.outcome import Outcome, classify, fair_slice, owner_had_time
from resilience.transport import translate


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, Outcome.SUCCESS),
        (StatusError(grpc.StatusCode.NOT_FOUND, "catalog", "no such sku"), Outcome.CALLER_ERROR),
        (StatusError(grpc.StatusCode.INVALID_ARGUMENT, "catalog", "sku: empty"), Outcome.CALLER_ERROR),
        (StatusError(grpc.StatusCode.UNAVAILABLE, "catalog", "down"), Outcome.RETRYABLE),
        (DeadlineExceeded("catalog", sent=True), Outcome.RETRYABLE),
        (DeadlineExceeded("catalog", sent=False), Outcome.DROPPED),
        (StatusError(grpc.StatusCode.INTERNAL, "catalog", "bug"), Outcome.FAILURE),
        (StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, "catalog", "busy"), Outcome.FAILURE),
        (asyncio.CancelledError(), Outcome.DROPPED),
        (CircuitOpen("catalog"), Outcome.DROPPED),
        (BulkheadFull("catalog", 10), Outcome.DROPPED),
        (Throttled("catalog", 0.5), Outcome.DROPPED),
        (Overloaded(grpc.StatusCode.RESOURCE_EXHAUSTED, "catalog", "overloaded"), Outcome.OVERLOADED),
        (LocalDeadline("catalog", "a:1", slice=1.0, lag=0.9, fair=0.5), Outcome.LOCAL_DEADLINE),
    ],
)
def test_each_outcome(error: BaseException | None, outcome: Outcome) -> None:
    """Answers, sick owners, and calls that never reached the owner are told apart."""
    assert classify(error) is outcome


def _relayed(code: grpc.StatusCode) -> StatusError:
    error = StatusError(code, "orders", "customers: down")
    error.origin = "customers"
    return error


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL])
def test_a_failure_that_began_further_down_is_not_the_owners(code: grpc.StatusCode) -> None:
    """A relayed failure counts as the owner answering: not a breaker failure, not retried."""
    outcome = classify(_relayed(code))
    assert outcome is Outcome.DEPENDENCY
    assert outcome.owner_answered
    assert not outcome.owner_failed
    assert not outcome.retryable


def test_a_relayed_caller_error_stays_a_caller_error() -> None:
    """NOT_FOUND from further down is still an answer about the request."""
    assert classify(_relayed(grpc.StatusCode.NOT_FOUND)) is Outcome.CALLER_ERROR


@pytest.mark.parametrize("outcome", [Outcome.OVERLOADED, Outcome.LOCAL_DEADLINE, Outcome.DROPPED])
def test_what_never_counts_against_the_owner(outcome: Outcome) -> None:
    """An overloaded refusal, a deadline that ran out here, and no news at all are neither failure nor success."""
    assert not outcome.owner_failed
    assert not outcome.owner_answered
    assert not outcome.retryable


def _rpc_error(code: grpc.StatusCode, *trailers: tuple[str, str]) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), "scripted", "")


def test_the_transport_reads_the_overloaded_trailer() -> None:
    """RESOURCE_EXHAUSTED with `resilience-overloaded: 1` is an Overloaded refusal; without it, a FAILURE as before."""
    refused = translate(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, (OVERLOADED_METADATA, "1")), "catalog", "a:1")
    plain = translate(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED), "catalog", "a:1")
    other = translate(_rpc_error(grpc.StatusCode.UNAVAILABLE, (OVERLOADED_METADATA, "1")), "catalog", "a:1")
    assert isinstance(refused, Overloaded)
    assert classify(refused) is Outcome.OVERLOADED
    assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert classify(plain) is Outcome.FAILURE
    assert classify(other) is Outcome.RETRYABLE


def test_a_call_the_server_cancelled_is_an_overloaded_refusal() -> None:
    """CANCELLED sent by the server (grpc's core shedding a call that found too many waiting) is OVERLOADED."""
    shed = translate(_rpc_error(grpc.StatusCode.CANCELLED), "catalog", "a:1")
    assert isinstance(shed, Overloaded)
    assert classify(shed) is Outcome.OVERLOADED
    assert "a:1" in str(shed)


def test_a_refusal_at_arrival_for_lack_of_time_counts_for_nothing() -> None:
    """DEADLINE_EXCEEDED with `resilience-refused: deadline` was never started: no breaker, no retry, no blame."""
    refused = translate(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, (REFUSED_METADATA, "deadline")), "catalog", "a:1")
    timed_out = translate(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), "catalog", "a:1")
    assert classify(refused) is Outcome.DROPPED
    assert classify(timed_out) is Outcome.RETRYABLE
    assert "too close" in str(refused)


def test_an_overloaded_refusal_relayed_from_further_down_is_a_dependency() -> None:
    """The owner passing on its own dependency's refusal is healthy: DEPENDENCY, as for any relayed failure."""
    error = translate(
        _rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, (OVERLOADED_METADATA, "1"), ("resilience-failure-origin", "x")),
        "orders", "a:1",
    )
    assert classify(error) is Outcome.DEPENDENCY


@pytest.mark.parametrize(
    ("slice_", "lag", "estimate", "owners"),
    [
        (1.0, 0.0, 0.002, True),  # a full slice, the loop keeping up: the owner did not answer
        (1.0, 0.0, 5.0, True),  # a hung replica's estimate has grown: half the configured slice is still fair
        (1.0, 0.9, 0.002, True),  # 100 ms clear is 25 times the owner's usual latency
        (1.0, 0.999, 0.002, False),  # 1 ms clear is not
        (1.0, 2.0, 0.002, False),  # the loop was blocked for longer than the slice
        (0.005, 0.0, 0.002, False),  # the caller's own queueing left 5 ms: too short to blame anyone
        (0.05, 0.0, 0.002, True),  # 50 ms for a 2 ms owner is a fair chance
        (0.05, 0.0, 0.02, False),  # not for a 20 ms one
    ],
)
def test_whose_deadline(slice_: float, lag: float, estimate: float, owners: bool) -> None:
    """The owner is blamed only when slice - lag >= min(half the configured slice, max(10 ms, 4 x its estimate))."""
    assert owner_had_time(slice_, lag, configured=1.0, estimate=estimate) is owners
    assert fair_slice(1.0, estimate) == min(0.5, max(0.01, 4 * estimate))
