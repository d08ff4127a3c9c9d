"""The layer's metrics and span events, through the OpenTelemetry API only: free when no SDK is installed.

The instruments are created once, at import, on the API's global meter, except the per-call histogram
(`CALL_DURATION`, resilience.hotpath: the SDK's record costs too much for every call). Until a process
installs an SDK MeterProvider (pullgate.telemetry does), each `add()`/`record()` is a no-op of about 0.1 µs; after, the
numbers flow to whatever reader that provider has. Events go to the current span only when it is recording,
so without tracing an event costs one context lookup, and events are rare (a retry, a hedge, a breaker
decision). The per-call work (the logical call's span and latency) is in resilience.traced.

Metric names follow OpenTelemetry's conventions (dots, a unit); Prometheus shows them with underscores
and the unit appended, e.g. `resilience_call_duration_seconds_bucket`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.util.types import AttributeValue

from resilience.criticality import Criticality

SCOPE = "resilience"

BREAKER_STATES: Mapping[str, int] = {"closed": 0, "half-open": 1, "open": 2}
"""The breaker-state gauge's values."""

_meter = metrics.get_meter(SCOPE)

RETRIES = _meter.create_counter(
    "resilience.retries", unit="{attempt}", description="Attempts sent again after a retryable failure",
)
HEDGES_SENT = _meter.create_counter(
    "resilience.hedges.sent", unit="{attempt}", description="Hedged attempts sent because the first was slow",
)
HEDGES_WON = _meter.create_counter(
    "resilience.hedges.won", unit="{call}", description="Calls answered by a hedged attempt rather than the first",
)
BUDGET_REFUSALS = _meter.create_counter(
    "resilience.budget.refusals", unit="{attempt}",
    description="Retries or hedges not sent because the retry budget (or the hedging cap) was spent",
)
BREAKER_REJECTIONS = _meter.create_counter(
    "resilience.breaker.rejections", unit="{attempt}", description="Attempts refused by an open breaker",
)
BREAKER_TRANSITIONS = _meter.create_counter(
    "resilience.breaker.transitions", unit="{transition}", description="Breaker state changes, by the new state",
)
BULKHEAD_REJECTIONS = _meter.create_counter(
    "resilience.bulkhead.rejections", unit="{attempt}",
    description="Attempts refused because the downstream's concurrency limit stayed full",
)

THROTTLE_REJECTIONS = _meter.create_counter(
    "resilience.throttle.rejections", unit="{attempt}",
    description="Attempts the adaptive throttle refused here because the owner has been refusing calls as overloaded",
)
LOCAL_DEADLINES = _meter.create_counter(
    "resilience.deadline.local", unit="{attempt}",
    description="Attempts whose deadline ran out in this process (event loop behind, or too short a slice left): "
    "not counted against the owner",
)
OUTLIER_EJECTIONS = _meter.create_counter(
    "resilience.outlier.ejections", unit="{ejection}",
    description="Replicas ejected by outlier detection (hedge races lost or timeouts in a row)",
)


class _Breaker(Protocol):
    downstream: str
    replica: str

    @property
    def state(self) -> str: ...


_breakers: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_breaker(breaker: _Breaker) -> None:
    """Report `breaker`'s state on the `resilience.breaker.state` gauge for as long as it lives."""
    _breakers.add(breaker)


def _breaker_states(options: CallbackOptions) -> Iterable[Observation]:
    for b in list(_breakers):
        yield Observation(BREAKER_STATES.get(b.state, -1), {"downstream": b.downstream, "replica": b.replica})


_meter.create_observable_gauge(
    "resilience.breaker.state", callbacks=[_breaker_states], unit="1",
    description="Each replica's breaker: 0 closed, 1 half-open, 2 open",
)


class _Outliers(Protocol):
    downstream: str

    def ejected_now(self) -> int: ...


class _Throttle(Protocol):
    downstream: str

    def probability(self) -> float: ...


_outliers: weakref.WeakSet[Any] = weakref.WeakSet()
_throttles: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_outliers(detector: _Outliers) -> None:
    """Report how many of the downstream's replicas `detector` has ejected, on `resilience.outlier.ejected`."""
    _outliers.add(detector)


def watch_throttle(throttle: _Throttle) -> None:
    """Report `throttle`'s rejection probability on `resilience.throttle.probability`."""
    _throttles.add(throttle)


class _Balance(Protocol):
    downstream: str
    sent: dict[str, int]


_balances: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_balance(balance: _Balance) -> None:
    """Report the attempts `balance` sent to each replica, on `resilience.attempts`."""
    _balances.add(balance)


def _attempts(options: CallbackOptions) -> Iterable[Observation]:
    for b in list(_balances):
        for replica, count in list(b.sent.items()):
            yield Observation(count, {"downstream": b.downstream, "replica": replica})


_meter.create_observable_counter(
    "resilience.attempts", callbacks=[_attempts], unit="{attempt}",
    description="Attempts sent to each replica (first attempts, retries and hedges), by downstream and replica",
)


class _ReplicaSet(Protocol):
    live: tuple[str, ...]
    leaving: set[str]


_replica_sets: dict[str, weakref.WeakSet[Any]] = {}


def watch_replicas(downstream: str, replicas: _ReplicaSet) -> None:
    """Report how many replicas `downstream` has, live and leaving, on `resilience.replicas`."""
    _replica_sets.setdefault(downstream, weakref.WeakSet()).add(replicas)


def _replica_counts(options: CallbackOptions) -> Iterable[Observation]:
    for downstream, sets in list(_replica_sets.items()):
        for r in list(sets):
            yield Observation(len(r.live), {"downstream": downstream, "state": "live"})
            yield Observation(len(r.leaving), {"downstream": downstream, "state": "leaving"})


_meter.create_observable_gauge(
    "resilience.replicas", callbacks=[_replica_counts], unit="{replica}",
    description="Each downstream's replicas: live (may be picked) and leaving (removed by discovery, draining calls)",
)


def _ejected(options: CallbackOptions) -> Iterable[Observation]:
    for d in list(_outliers):
        yield Observation(d.ejected_now(), {"downstream": d.downstream})


def _throttled(options: CallbackOptions) -> Iterable[Observation]:
    for t in list(_throttles):
        yield Observation(t.probability(), {"downstream": t.downstream})


_meter.create_observable_gauge(
    "resilience.outlier.ejected", callbacks=[_ejected], unit="{replica}",
    description="Replicas of each downstream ejected by outlier detection now",
)
_meter.create_observable_gauge(
    "resilience.throttle.probability", callbacks=[_throttled], unit="1",
    description="Each downstream's adaptive throttle: the probability that an attempt is refused here",
)


def event(name: str, attributes: Mapping[str, AttributeValue]) -> None:
    """Add an event to the current span (the logical call's), if it is recording."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, attributes)


def labels(downstream: str, method: str, **extra: str) -> dict[str, AttributeValue]:
    """The attributes every per-method series carries."""
    return {"downstream": downstream, "method": method, **extra}


def zero(downstream: str, replicas: Iterable[str], methods: Iterable[str]) -> None:
    """Start the downstream's counters at 0 for every method and replica it may see, so that a dashboard shows 0
    rather than "no data" for what has not happened yet, and a rate over a first event is right (Prometheus's
    instrumentation advice: avoid missing metrics). The cache's series start with the cache's first lookup."""
    replicas, methods = tuple(replicas), tuple(methods)
    for method in methods:
        per_method = labels(downstream, method)
        for counter in (RETRIES, HEDGES_SENT, HEDGES_WON, BULKHEAD_REJECTIONS, THROTTLE_REJECTIONS, LOCAL_DEADLINES):
            counter.add(0, per_method)
        for kind in ("retry", "hedge"):
            BUDGET_REFUSALS.add(0, labels(downstream, method, kind=kind))
        for replica in replicas:
            BREAKER_REJECTIONS.add(0, labels(downstream, method, replica=replica))
    for replica in replicas:
        OUTLIER_EJECTIONS.add(0, {"downstream": downstream, "replica": replica})
        for state in BREAKER_STATES:
            BREAKER_TRANSITIONS.add(0, {"downstream": downstream, "replica": replica, "state": state})


# Server admission control (resilience.server.AdmissionInterceptor). Every instrument is observable: the
# interceptor keeps plain counts, and the SDK reads them when it exports, so an admitted or refused request
# costs an integer increment rather than a counter's attribute lookup.

class _Admission(Protocol):
    @property
    def limit(self) -> int: ...

    in_flight: int


class _MethodAdmissions(Protocol):
    name: str
    admitted: list[int]
    refused_limit: list[int]
    refused_deadline: list[int]


class _AdmissionInterceptor(Protocol):
    name: str

    @property
    def admission(self) -> _Admission | None: ...

    @property
    def methods(self) -> Mapping[str, _MethodAdmissions]: ...


_admissions: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_admission(interceptor: _AdmissionInterceptor) -> None:
    """Report `interceptor`'s limit, requests in flight and decisions for as long as it lives."""
    _admissions.add(interceptor)


def _admission_gauge(read: str) -> Any:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        for a in list(_admissions):
            if a.admission is not None:
                yield Observation(getattr(a.admission, read), {"server": a.name})

    return observe


def _admission_counts(options: CallbackOptions, *, refused: bool) -> Iterable[Observation]:
    for a in list(_admissions):
        for m in list(a.methods.values()):
            kinds = (("limit", m.refused_limit), ("deadline", m.refused_deadline)) if refused else (("", m.admitted),)
            for reason, counts in kinds:
                for level, count in enumerate(counts):
                    # A refusal series starts at 0 once its level was seen at all, so a rate over the first one
                    # is right and a dashboard shows 0 rather than "no data".
                    if count or (refused and (m.admitted[level] or m.refused_limit[level]
                                              or m.refused_deadline[level])):
                        attributes = {"server": a.name, "method": m.name, "criticality": Criticality(level).name}
                        if reason:
                            attributes["reason"] = reason
                        yield Observation(count, attributes)


_meter.create_observable_gauge(
    "resilience.server.limit", callbacks=[_admission_gauge("limit")], unit="{request}",
    description="The adaptive concurrency limit: how many requests the server admits at once",
)
_meter.create_observable_gauge(
    "resilience.server.in_flight", callbacks=[_admission_gauge("in_flight")], unit="{request}",
    description="Requests admitted and not yet answered",
)
_meter.create_observable_counter(
    "resilience.server.admitted", callbacks=[lambda options: _admission_counts(options, refused=False)],
    unit="{request}", description="Requests admitted by admission control, by method and criticality",
)
_meter.create_observable_counter(
    "resilience.server.refused", callbacks=[lambda options: _admission_counts(options, refused=True)],
    unit="{request}",
    description="Requests refused at arrival, by method, criticality and reason: limit (the server is over its "
    "concurrency limit) or deadline (less time left than the method takes)",
)
