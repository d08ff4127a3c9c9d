"""opentelemetry-instrumentation-grpc's grpc.aio server span, made per call at a fraction of the library's cost.

The library's aio server interceptor (OpenTelemetryAioServerInterceptor) is kept: its filter, its tracer and
its `intercept_service`, which wraps each handler. What it runs around a unary call is replaced by `unary`
below, which makes the same span (name, kind, attributes, parent from the W3C headers, status rules) with
less work, for the traces the sampler keeps and, above all, for the ones it drops:

- the span is started with start_span + attach, not through two generator-based context managers
  (`_set_remote_context`, `start_as_current_span`) and the API's `use_span`;
- the attributes are built only for a span that records, and those that depend only on the method (system,
  service, method) or the peer (ip, port, name) once per method and per peer, not split and unquoted per call;
- the status comes from the servicer context itself (`context.code()`, `context.details()`) once the handler
  is done, instead of a wrapt proxy around the context that intercepts `abort`, `set_code` and
  `set_details` (every attribute access of the handler on its context went through the proxy).

Where it differs from the library, on purpose or as a consequence: an exception the handler raises is
recorded once (the library records it twice); the status is read once the handler is done, so a code set and
then set back to OK leaves the span without an error; an abort with empty details is described with the
code's own name. Streaming methods keep the library's own path. docs/observability.md (Cost) has the
measurements.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote

import grpc
from opentelemetry import context, trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.grpc._aio_server import OpenTelemetryAioServerInterceptor
from opentelemetry.instrumentation.grpc._server import _wrap_rpc_behavior
from opentelemetry.instrumentation.grpc._utilities import _server_status
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagate import extract, get_global_textmap
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from pullgate.telemetry.grpc_client import rpc_attributes
from resilience import HandlerMemo

W3C_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})
"""The headers of OpenTelemetry's default propagators (W3C trace context and baggage)."""
_NO_PARENT = context.Context()
"""What `extract` gives for headers that carry none of the propagators' fields: no parent."""
_TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
"""A version-00 W3C traceparent, nothing around it (as the TraceContext propagator accepts it, less whitespace)."""
_OK = grpc.StatusCode.OK
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_PEERS_KEPT = 1024
"""Peers whose attributes are remembered; the memo starts over when full (peers are connections: few)."""

Behavior = Callable[[Any, Any], Awaitable[Any]]


class LeanServerInterceptor(OpenTelemetryAioServerInterceptor):
    """The library's aio server interceptor with a cheaper unary path, making the same span."""

    def __init__(self, tracer: Any, filter_: Any = None) -> None:
        super().__init__(tracer, filter_=filter_)  # type: ignore[no-untyped-call]
        self._memo = HandlerMemo()
        self._peers: dict[str, dict[str, AttributeValue]] = {}

    async def intercept_service(  # type: ignore[override]
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        """The library's, but a unary handler is wrapped once per method (HandlerMemo), not on every call."""
        handler = await continuation(handler_call_details)
        if handler is None or not is_instrumentation_enabled():
            return handler
        if self._filter is not None and not self._filter(handler_call_details):
            return handler
        if handler.request_streaming or handler.response_streaming:  # the library's own path, per call
            def wrapper(behavior: Any, request_streaming: bool, response_streaming: bool) -> Any:
                if response_streaming:
                    return self._intercept_aio_server_stream(behavior, handler_call_details)  # type: ignore[no-untyped-call]
                return self._intercept_aio_server_unary(behavior, handler_call_details)

            return _wrap_rpc_behavior(handler, wrapper)  # type: ignore[no-untyped-call]
        kept = self._memo.get(handler)
        if kept is not None:
            return kept
        wrapped = self._intercept_aio_server_unary(handler.unary_unary, handler_call_details)
        return self._memo.put(handler, grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer))

    unsampled_is_final = False
    """Set when the sampler drops every child of an unsampled parent (pullgate.telemetry.tracing): then a call
    whose caller's trace was not sampled makes no span; the caller's context is made current as it came, so
    the handler's own calls carry it on (same trace, sampled flag off)."""

    def _intercept_aio_server_unary(self, behavior: Behavior, handler_call_details: Any) -> Behavior:
        method: str = handler_call_details.method
        base = rpc_attributes(method)
        tracer = self._tracer
        final = self.unsampled_is_final
        # The headers the configured propagators read (OTEL_PROPAGATORS; set up before any handler is wrapped):
        # a request with none of them has no parent, without asking them; and only W3C's own propagators may
        # have an unsampled traceparent read by hand.
        fields = frozenset(get_global_textmap().fields)
        by_hand = final and fields == W3C_FIELDS

        async def unary(request: Any, servicer_context: Any) -> Any:
            metadata = servicer_context.invocation_metadata()
            parent = None
            if metadata:
                headers = {md.key: md.value for md in metadata}
                dropped = unsampled_parent(headers) if by_hand else None
                if dropped is None:
                    parent = extract(headers) if not fields.isdisjoint(headers) else _NO_PARENT
                    if final:
                        caller = trace.get_current_span(parent).get_span_context()
                        if caller.is_valid and not caller.trace_flags.sampled:
                            dropped = parent
                if dropped is not None:
                    token = context.attach(dropped)
                    try:
                        return await behavior(request, servicer_context)
                    finally:
                        context.detach(token)
            span = tracer.start_span(method, context=parent, kind=SpanKind.SERVER, set_status_on_exception=False)
            recording = span.is_recording()
            if recording:  # attributes only for a span that keeps them (the library builds them always)
                attributes = dict(base)
                for key, value in metadata or ():
                    if key == "user-agent":
                        attributes["rpc.user_agent"] = value
                attributes.update(self._peer_attributes(servicer_context.peer()))
                span.set_attributes(attributes)
            token = context.attach(trace.set_span_in_context(span, parent))
            try:
                return await behavior(request, servicer_context)
            except Exception as error:
                # As the library: a bare Exception is an abort, whose status the context holds; anything
                # else is the handler's own error, recorded on the span.
                if recording and type(error) is not Exception:
                    span.record_exception(error)
                raise
            finally:
                try:
                    if recording:
                        _set_status(span, servicer_context)
                finally:
                    context.detach(token)
                    span.end()

        return unary

    def _peer_attributes(self, peer: str) -> dict[str, AttributeValue]:
        peers = self._peers
        found = peers.get(peer)
        if found is None:
            found = {}
            if not peer.startswith("unix:"):
                try:  # the library's parsing: "ipv4:127.0.0.1:57284", "ipv6:[::1]:57284"
                    ip, port = peer.split(",")[0].split(":", 1)[1].rsplit(":", 1)
                    ip = unquote(ip)
                    found = {"net.peer.ip": ip, "net.peer.port": port}
                    if ip in ("[::1]", "127.0.0.1"):
                        found["net.peer.name"] = "localhost"
                except (IndexError, ValueError):
                    found = {}
            if len(peers) >= _PEERS_KEPT:
                peers.clear()
            peers[peer] = found
        return found


def unsampled_parent(headers: Mapping[str, str]) -> context.Context | None:
    """The caller's context, if its only propagation header is a well-formed W3C `traceparent` (version 00) of a
    trace the sampler dropped (its sampled flag off); else None, and the propagators read the headers as usual.

    The call's common case when tracing is on but this request is not kept, so it is read by hand: slicing a
    header of a fixed layout costs about half of the configured propagators' `extract` (a regex, and a baggage
    propagator that looks for a header that is not there). The context is the one `extract` would give."""
    value = headers.get("traceparent")
    if value is None or "tracestate" in headers or "baggage" in headers or _TRACEPARENT.fullmatch(value) is None:
        return None
    trace_id, span_id, flags = int(value[3:35], 16), int(value[36:52], 16), int(value[53:55], 16)
    if flags & 1 or trace_id == 0 or span_id == 0:
        return None
    span = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags)))
    return trace.set_span_in_context(span)


def _set_status(span: Span, servicer_context: Any) -> None:
    """The call's status code on the span, and its status by the library's rules (`_server_status`: an error
    only for the server's own faults, such as UNKNOWN, INTERNAL or UNAVAILABLE, not for NOT_FOUND)."""
    code = servicer_context.code()
    if code is None or code == _OK:
        return
    if isinstance(code, int):  # a code set by number
        code = _BY_NUMBER[code]
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    status = _server_status(code, servicer_context.details() or code.value[1])  # type: ignore[no-untyped-call]
    if status.status_code is StatusCode.ERROR:
        span.set_status(status)


def server_interceptor(**kwargs: Any) -> LeanServerInterceptor:
    """The library's aio server interceptor (its tracer and filter), as LeanServerInterceptor."""
    library = aio_server_interceptor(**kwargs)  # type: ignore[no-untyped-call]
    return LeanServerInterceptor(library._tracer, filter_=library._filter)
