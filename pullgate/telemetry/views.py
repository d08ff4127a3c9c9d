"""What the gateway and orders add to their traces and metrics: a view's parts, and an order's placement steps.

Both write to the current span (the server span of the request, or nothing when tracing is off) with the
OpenTelemetry API, so a call costs a context lookup when nobody is tracing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import metrics, trace
from opentelemetry.util.types import AttributeValue

from pullgate.gateway.v1 import gateway_pb2 as pb
from resilience import Counter

_meter = metrics.get_meter("pullgate")
_tracer = trace.get_tracer("pullgate.orders")
PARTS = Counter("pullgate_gateway_parts", "Parts of served views, by kind and source", ("part", "source"))
"""Counted by hand (resilience.Counter): five or so per view, where an SDK counter's add costs ~9 µs each."""
DEGRADED = _meter.create_counter(
    "pullgate.gateway.degraded_responses", unit="{response}",
    description="Views answered with a stale or missing part, by consistency and reason (once per reason)",
)

_SOURCES = {pb.SOURCE_LIVE: "live", pb.SOURCE_CACHED: "cached", pb.SOURCE_STALE: "stale",
            pb.SOURCE_MISSING: "missing"}
_CAUSES = {value: name.removeprefix("CAUSE_").lower() for name, value in pb.Cause.items()}


def cause_label(part: pb.PartStatus) -> str:
    """The metric label of why a part is not live: its cause's name (CAUSE_CIRCUIT_OPEN -> "circuit_open"),
    never read from the reason's words, so the label set is the enum's and small."""
    return _CAUSES.get(part.cause, "unspecified")


def annotate_view(consistency: str, entities: Sequence[str], parts: Sequence[pb.PartStatus], degraded: bool) -> None:
    """Put a view's read mode, `degraded` and each part's provenance on the current span, and count the parts
    by `entities` (each part's kind of entity, as the gateway knows it: never parsed from its name)."""
    reasons: set[str] = set()
    labelled: list[str] = []
    span = trace.get_current_span()
    recording = span.is_recording()
    for entity, part in zip(entities, parts, strict=True):
        source = _SOURCES.get(part.source, "unknown")
        PARTS.add((entity, source))
        if source in ("stale", "missing"):
            reasons.add(cause_label(part))
        if recording:
            age = part.age.ToNanoseconds() / 1e9
            labelled.append(f"{part.part}={source}" + (f" age={age:.3f}s" if source != "live" else "")
                            + (f" ({part.reason})" if part.reason else ""))
    for reason in reasons:
        DEGRADED.add(1, {"consistency": consistency, "reason": reason})
    if recording:
        attributes: dict[str, AttributeValue] = {
            "pullgate.read.consistency": consistency,
            "pullgate.degraded": degraded,
            "pullgate.parts": labelled,
        }
        if reasons:
            attributes["pullgate.degraded.reasons"] = sorted(reasons)
        span.set_attributes(attributes)


def placement_step(step: str, order_id: str, **attributes: AttributeValue) -> None:
    """Mark a step of placing an order (pending, customer check, product check, reservation, confirm, cancel)
    as an event on the current span."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(f"placement: {step}", {"pullgate.order_id": order_id, **attributes})


@contextlib.contextmanager
def recovering(order_id: str) -> Iterator[None]:
    """A root span for driving one order to its end outside any request (orders' recovery), so that a
    recovered placement is a trace of its own: its steps as events, its calls to the owners beneath it."""
    with _tracer.start_as_current_span(
        "orders.recover", kind=trace.SpanKind.INTERNAL, attributes={"pullgate.order_id": order_id}
    ):
        yield
