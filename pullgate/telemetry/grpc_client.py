"""opentelemetry-instrumentation-grpc's grpc.aio client span and propagation, with cancellation handled.

The interceptor is handed to the resilience layer's transport, which runs it around each attempt itself,
rather than installed on the channels (GrpcAioInstrumentorClient): grpc.aio's channel interceptor machinery
costs each call an extra task and several turns of the event loop (docs/observability.md, Cost). The span,
its attributes and the W3C propagation are the library's. Under a trace the sampler dropped there is no span to
make, so the transport does not run the interceptor at all: it asks `direct_metadata()` for the headers and adds
them itself (docs/performance.md, "Call by call, and propagation without the interceptor machinery").

The library's unary-unary interceptor awaits the call's status inside grpc's interceptor task. When the caller
cancels (a hedge loser, a caller that left), that await is cancelled but the call underneath is not, so the
owner never sees the cancellation, and the client span is never ended (it is opened with end_on_exit=False),
so it is lost. This subclass cancels the call underneath and ends the span marked as cancelled, and as a
hedge loser when the resilience layer cancelled it as one. Everything else is the library's own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import context, trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.instrumentation.grpc._aio_client import UnaryUnaryAioClientInterceptor
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagate import inject
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from resilience import HEDGE_LOSER

CANCELLED_CODE = grpc.StatusCode.CANCELLED.value[0]


def mark_cancelled(span: Span, cancelled: asyncio.CancelledError) -> None:
    """Label a client span whose call was cancelled by its caller; a hedge loser says so."""
    span.set_attribute("rpc.grpc.status_code", CANCELLED_CODE)
    span.set_attribute("pullgate.cancelled", True)
    span.set_attribute("resilience.hedge_loser", HEDGE_LOSER in cancelled.args)


@functools.lru_cache(maxsize=1024)
def rpc_attributes(method: str) -> dict[str, AttributeValue]:
    """The library's attributes of a call to `method` ("/package.Service/Method"), built once per method for
    client and server spans alike: system, service, method, and status OK until a call says otherwise.
    Shared: copy before changing."""
    attributes: dict[str, AttributeValue] = {"rpc.system": "grpc", "rpc.grpc.status_code": grpc.StatusCode.OK.value[0]}
    if method:
        service, name = method.lstrip("/").split("/", 1)
        attributes.update({"rpc.method": name, "rpc.service": service})
    return attributes


class CancellingUnaryUnary(UnaryUnaryAioClientInterceptor):
    """The library's unary-unary client interceptor; a cancelled caller cancels the call and ends the span.

    intercept_unary_unary is the library's, step for step (filter, span, propagation, request hook, response
    wrapping), with the span made current by start_span + attach instead of start_as_current_span (a
    generator-based context manager per call), the span's attributes (system, service, method, status OK)
    built once per method instead of splitting the path on every call, and, for a trace the sampler dropped,
    only the propagation: no waiting for the status to set it on a span that records nothing.
    """

    unsampled_is_final = False
    """Set when the sampler drops every child of an unsampled parent (pullgate.telemetry.tracing): then, under
    such a parent, no span is made at all; the parent's own context is injected as it is (same trace, sampled
    flag off), which is all the owner needs to drop its spans too."""

    _kept: tuple[context.Context, tuple[tuple[str, str], ...] | None] | None = None
    """The last context `direct_metadata` was asked about, and its answer: the answer depends on nothing else, and
    a view's calls to its owners are all made in the one context of the view's (unsampled) root."""

    def direct_metadata(self) -> tuple[tuple[str, str], ...] | None:
        """The propagation headers of the current context, if it is a trace the sampler dropped and the shortcut
        is on; else None. Then propagating is all this interceptor would do, so the transport adds them and calls
        directly (resilience.transport), and they are worked out once per context, not per call: the same
        headers `intercept_unary_unary` would inject, through the same propagator."""
        if not self.unsampled_is_final or self._filter is not None:
            return None
        current = context.get_current()
        kept = self._kept
        if kept is not None and kept[0] is current:
            return kept[1]
        headers: tuple[tuple[str, str], ...] | None = None
        parent = trace.get_current_span(current).get_span_context()
        if not is_instrumentation_enabled():
            headers = ()  # tracing_skipped: the library passes the call on untouched
        elif parent.is_valid and not parent.trace_flags.sampled:
            carrier: dict[str, str] = {}
            inject(carrier, context=current)
            headers = tuple(carrier.items())
        self._kept = (current, headers)
        return headers

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        if self.tracing_skipped(client_call_details):  # type: ignore[no-untyped-call]
            return await continuation(client_call_details, request)
        if self.unsampled_is_final:
            parent = trace.get_current_span().get_span_context()
            if parent.is_valid and not parent.trace_flags.sampled:
                return await continuation(self.propagate_trace_in_details(client_call_details), request)
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        span = self._tracer.start_span(method, kind=SpanKind.CLIENT, attributes=rpc_attributes(method))
        token = context.attach(trace.set_span_in_context(span))
        if not span.is_recording():
            # A trace the sampler dropped: the owner still gets its context (sampled flag off, so a
            # parent-based sampler there drops it too), but there is no status to wait for and nothing to
            # record, so the call is not wrapped.
            try:
                details = self.propagate_trace_in_details(client_call_details)
            finally:
                context.detach(token)
            return await continuation(details, request)
        try:
            details = self.propagate_trace_in_details(client_call_details)
            if self._request_hook:
                self._call_request_hook(span, request)  # type: ignore[no-untyped-call]
            return await self._wrap_unary_response(functools.partial(continuation, details, request), span)
        finally:
            context.detach(token)

    async def _wrap_unary_response(self, continuation: Callable[[], Awaitable[Any]], span: Span) -> Any:
        calls: list[Any] = []

        async def capturing() -> Any:
            call = await continuation()
            calls.append(call)
            return call

        try:
            return await super()._wrap_unary_response(capturing, span)  # type: ignore[no-untyped-call]
        except asyncio.CancelledError as cancelled:
            for call in calls:
                call.cancel()  # the owner sees the cancellation, as it does without instrumentation
            mark_cancelled(span, cancelled)
            span.end()
            raise


def client_interceptor(**kwargs: Any) -> CancellingUnaryUnary:
    """The library's aio unary-unary client interceptor (its tracer, filter and hooks), as CancellingUnaryUnary."""
    first = aio_client_interceptors(**kwargs)[0]  # type: ignore[no-untyped-call]
    return CancellingUnaryUnary(  # type: ignore[no-untyped-call]
        first._tracer, filter_=first._filter, request_hook=first._request_hook, response_hook=first._response_hook
    )
