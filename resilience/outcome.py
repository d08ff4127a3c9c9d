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
    OVERLOADED       the owner refused the call to shed load:          breaker: nothing; the throttle's refusal;
                     RESOURCE_EXHAUSTED with the OVERLOADED_METADATA   retried only on a replica not yet tried
                     trailer (without it, RESOURCE_EXHAUSTED is a      (never the same one), on the budget
                     FAILURE)
    LOCAL_DEADLINE   DEADLINE_EXCEEDED on the wire, but the time ran   breaker: nothing; not retried (the caller
                     out here (see "Whose deadline" below)             is behind: more work would not help)
    DROPPED          no answer and no news about the owner:            breaker: nothing; not retried
                     cancellation (a hedge loser, a caller that left), a deadline that expired before sending,
                     an open circuit, a full bulkhead, a call the throttle refused here, no replica at all

The throttle counts every outcome with news of the owner as a request (all but DROPPED and LOCAL_DEADLINE), and
all of those but OVERLOADED as accepted.

Whose deadline. A DEADLINE_EXCEEDED says only that the time ran out, not where. Under overload it mostly ran
out in the caller: its event loop was behind (the request left late, or the slice went on its own queueing),
or the caller's deadline had been spent before the attempt began. Counting those against the owner opened
every breaker of a healthy system at once. So the attempt timeout, which gave the slice, judges it
(`owner_had_time`): the owner is blamed only if, of the attempt's slice, at least `fair` seconds passed with
the event loop keeping up (resilience.lag measures how far behind it ran):

    slice - lag >= fair,   fair = min(FAIR_SHARE * configured slice, max(FAIR_FLOOR, FAIR_MULTIPLE * estimate))

where `estimate` is the replica's latency (resilience.ewma). A healthy owner answering in 2 ms has had a fair
chance after 10 ms; the configured slice (halved, so timer jitter never excuses a hung owner whose estimate
has grown with its own timeouts) is always fair. Anything less is LOCAL_DEADLINE.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Sequence

import grpc

from resilience.errors import (
    BulkheadFull,
    CircuitOpen,
    DeadlineExceeded,
    LocalDeadline,
    NoReplicas,
    Overloaded,
    ResilienceError,
    Throttled,
)

FAIR_SHARE = 0.5
"""Half the configured slice is always a fair chance, whatever the replica's estimate."""
FAIR_FLOOR = 0.01
"""Below 10 ms nobody is blamed: timer and scheduling noise alone can take that much."""
FAIR_MULTIPLE = 4.0
"""Four times the replica's usual latency, with the loop keeping up, is a fair chance to answer."""


class Outcome(enum.Enum):
    SUCCESS = "success"
    CALLER_ERROR = "caller_error"
    RETRYABLE = "retryable"
    FAILURE = "failure"
    DEPENDENCY = "dependency"
    OVERLOADED = "overloaded"
    LOCAL_DEADLINE = "local_deadline"
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

    @property
    def news(self) -> bool:
        """The attempt reached the owner and we heard back (the throttle counts it as a request)."""
        return self is not Outcome.DROPPED and self is not Outcome.LOCAL_DEADLINE


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
        if isinstance(error, LocalDeadline):
            return Outcome.LOCAL_DEADLINE
        return Outcome.RETRYABLE if error.sent else Outcome.DROPPED
    if isinstance(error, Overloaded):
        return Outcome.OVERLOADED
    if isinstance(error, CircuitOpen | BulkheadFull | Throttled | NoReplicas):
        return Outcome.DROPPED  # the layer refused; nothing reached the owner
    if isinstance(error, ResilienceError):
        return classify_code(error.code)
    return Outcome.FAILURE


def again(outcome: Outcome, tried: Sequence[str], elsewhere: Callable[[Sequence[str]], bool]) -> bool:
    """May another attempt follow one that ended so (idempotency aside)? A retryable outcome may; an overloaded
    refusal only if `elsewhere(tried)` finds a usable replica the call has not tried (the SRE book retries an
    overloaded task's refusal on another task, on the budget; the same replica would only refuse again)."""
    return outcome.retryable or (outcome is Outcome.OVERLOADED and elsewhere(tried))


def fair_slice(configured: float, estimate: float) -> float:
    """The time an owner must have had, with the event loop keeping up, for its timeout to count (see above)."""
    return min(FAIR_SHARE * configured, max(FAIR_FLOOR, FAIR_MULTIPLE * estimate))


def owner_had_time(slice: float, lag: float, configured: float, estimate: float) -> bool:
    """Whether a DEADLINE_EXCEEDED on the wire is the owner's: `slice - lag >= fair_slice(configured, estimate)`."""
    return slice - lag >= fair_slice(configured, estimate)
