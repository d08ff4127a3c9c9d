"""Every attempt's outcome is classified here, once; retries, hedging, breakers and caches all read this answer.

Why one place: a NOT_FOUND is an answer, not a sick owner. If the breaker, the retry policy and the cache each
decided on their own, they would disagree (gRFC A6 counts only retryable codes against throttling "to avoid
conflating server failure with responses to malformed requests"; Finagle has one ResponseClassifier).

    SUCCESS          the owner answered OK                             breaker: success
    CALLER_ERROR     the owner answered, and the answer is "no":       breaker: success (the owner is healthy)
                     NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, ALREADY_EXISTS, OUT_OF_RANGE,
                     PERMISSION_DENIED, UNAUTHENTICATED, ABORTED, UNIMPLEMENTED
    RETRYABLE        the owner could not answer, another try may work: breaker: failure; retried
                     UNAVAILABLE (nothing was processed, or the replica is gone),
                     DEADLINE_EXCEEDED on the wire (a slow replica; a retry goes elsewhere)
    FAILURE          the owner failed in a way a retry will not fix:   breaker: failure; not retried
                     INTERNAL, UNKNOWN, DATA_LOSS, RESOURCE_EXHAUSTED (retrying an overloaded owner adds load)
    DEPENDENCY       the owner answered with a failure that began      breaker: success; not retried
                     further down (its ORIGIN_METADATA trailer names    (the owner is healthy: counting this
                     where): UNAVAILABLE, DEADLINE_EXCEEDED, ...         would open the breaker of every
                                                                         service between the caller and the
                                                                         sick one; another replica of the
                                                                         owner would meet the same dependency)
    DROPPED          no answer and no news about the owner:            breaker: nothing; not retried
                     cancellation (a hedge loser, a caller that left), a deadline that expired before sending,
                     an open circuit, a full bulkhead
"""

from __future__ import annotations

import asyncio
import enum

import grpc

from resilience.errors import BulkheadFull, CircuitOpen, DeadlineExceeded, ResilienceError


class Outcome(enum.Enum):
    SUCCESS = "success"
    CALLER_ERROR = "caller_error"
    RETRYABLE = "retryable"
    FAILURE = "failure"
    DEPENDENCY = "dependency"
    DROPPED = "dropped"

    @property
    def retryable(self) -> bool:
        """Another attempt (of an idempotent method) may succeed."""
        return self is Outcome.RETRYABLE

    @property
    def owner_failed(self) -> bool:
        """Counts against the owner's health (the breaker's failure)."""
        return self is Outcome.RETRYABLE or self is Outcome.FAILURE

    @property
    def owner_answered(self) -> bool:
        """The owner is healthy enough to answer (the breaker's success)."""
        return self is Outcome.SUCCESS or self is Outcome.CALLER_ERROR or self is Outcome.DEPENDENCY


_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
_FAILURE = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def classify_code(code: grpc.StatusCode) -> Outcome:
    """The outcome of a status the owner (or grpc on its behalf) answered with."""
    if code is grpc.StatusCode.OK:
        return Outcome.SUCCESS
    if code in _RETRYABLE:
        return Outcome.RETRYABLE
    if code in _FAILURE:
        return Outcome.FAILURE
    if code is grpc.StatusCode.CANCELLED:
        return Outcome.DROPPED
    return Outcome.CALLER_ERROR


def classify(error: BaseException | None) -> Outcome:
    """The outcome of an attempt that returned (None) or raised `error`."""
    if error is None:
        return Outcome.SUCCESS
    if isinstance(error, asyncio.CancelledError):
        return Outcome.DROPPED
    if isinstance(error, ResilienceError) and error.origin is not None and error.code is not grpc.StatusCode.OK:
        outcome = classify_code(error.code)
        return Outcome.DEPENDENCY if outcome.owner_failed else outcome
    if isinstance(error, DeadlineExceeded):
        return Outcome.RETRYABLE if error.sent else Outcome.DROPPED
    if isinstance(error, CircuitOpen | BulkheadFull):
        return Outcome.DROPPED  # the layer refused; nothing reached the owner
    if isinstance(error, ResilienceError):
        return classify_code(error.code)
    return Outcome.FAILURE
