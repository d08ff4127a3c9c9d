"""One span per logical call, and its latency by outcome: the outermost layer, so it sees everything below.

It sits above the cache, so the span covers a cache hit as well as every attempt, hedge, backoff and breaker
decision below; those add events to it (resilience.instruments.event) and each attempt's grpc client span
(opentelemetry-instrumentation-grpc) is its child, because attempts run in the span's context. When the call
ends, what `CallStats` learned becomes the span's attributes (docs/observability.md lists them).

Cheap when tracing is off: a span is started only under a recording parent (the server span of the request
being served, or a step span), so a process without a tracer provider, or a request the sampler dropped,
pays one context lookup. The latency histogram is always recorded (a no-op without a meter provider).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.context import Call, CallContext, CallStats
from resilience.errors import ResilienceError
from resilience.hotpath import CALL_DURATION
from resilience.instruments import SCOPE
from resilience.outcome import Outcome, classify


class Traced:
    """Starts the logical call's span (under a recording parent) and records its duration and outcome."""

    def __init__(
        self, downstream: str, breaker_state: Callable[[str], str] | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._downstream = downstream
        self._breaker_state = breaker_state
        self._clock = clock
        self._tracer = trace.get_tracer(SCOPE)
        self._names: dict[str, str] = {}

    def _measure(self, ctx: CallContext, outcome: Outcome, start: float) -> None:
        CALL_DURATION.record((self._downstream, ctx.method.descriptor.name, outcome.value), self._clock.now() - start)

    async def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Any:
        start = self._clock.now()
        if trace.get_current_span().is_recording():
            return await self._traced(request, ctx, inner, start)
        try:
            response = await inner(request, ctx)
        except BaseException as error:
            self._measure(ctx, classify(error), start)
            raise
        self._measure(ctx, Outcome.SUCCESS, start)
        return response

    async def _traced(self, request: Any, ctx: CallContext, inner: Call, start: float) -> Any:
        method = ctx.method
        attributes: dict[str, AttributeValue] = {
            "resilience.downstream": self._downstream,
            "resilience.method": method.path,
            "resilience.idempotency": method.idempotency.value,
        }
        if ctx.max_staleness is not None and math.isfinite(ctx.max_staleness):
            attributes["resilience.max_staleness_s"] = ctx.max_staleness
        if ctx.deadline is not None:
            attributes["resilience.deadline_s"] = round(ctx.deadline.remaining(self._clock), 6)
        name = self._names.get(method.path)
        if name is None:
            name = self._names[method.path] = f"{self._downstream}/{method.descriptor.name}"
        # start_span + attach rather than start_as_current_span: the same span and context, without the
        # generator-based context managers (about a fifth of this layer's tracing cost per call).
        span = self._tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        try:
            response = await inner(request, ctx)
        except BaseException as error:
            outcome = classify(error)
            self._annotate(span, ctx.stats, outcome, str(error) or type(error).__name__)
            if outcome is not Outcome.CALLER_ERROR:
                span.set_status(Status(StatusCode.ERROR, str(error) if isinstance(error, ResilienceError)
                                       else type(error).__name__))
            self._measure(ctx, outcome, start)
            raise
        else:
            self._annotate(span, ctx.stats, Outcome.SUCCESS)
            self._measure(ctx, Outcome.SUCCESS, start)
            return response
        finally:
            context.detach(token)
            span.end()

    def _annotate(self, span: Span, stats: CallStats, outcome: Outcome, error: str | None = None) -> None:
        """What the call learned (and its error, if any), as the span's attributes, in one call."""
        attributes: dict[str, AttributeValue] = {
            "resilience.outcome": outcome.value,
            "resilience.source": stats.source.value,
            "resilience.data_age_s": round(stats.age, 6),
            "resilience.attempts": stats.attempts,
            "resilience.hedged": stats.hedged,
            "resilience.hedge_won": stats.hedge_won,
            "resilience.budget_refusals": stats.budget_refusals,
        }
        if error is not None:
            attributes["resilience.error"] = error
        if stats.cache:
            attributes["resilience.cache"] = stats.cache
        if stats.error is not None:
            attributes["resilience.reason"] = stats.error.reason
        if stats.tried:
            attributes["resilience.tried"] = list(stats.tried)
        replica = stats.replica or (stats.tried[-1] if stats.tried else None)
        if stats.replica is not None and outcome is not Outcome.DROPPED:
            attributes["resilience.winning_attempt"] = stats.won
        if replica is not None:
            attributes["resilience.replica"] = replica
            if self._breaker_state is not None:
                attributes["resilience.breaker_state"] = self._breaker_state(replica)
        span.set_attributes(attributes)
