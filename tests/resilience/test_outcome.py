"""The one classification of outcomes that every policy reads."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from resilience.errors import BulkheadFull, CircuitOpen, DeadlineExceeded, StatusError
from resilience.outcome import Outcome, classify


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
