"""The grpc client and server spans: what the transports' interceptor and the lean server path make, on port 0."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import SpanKind, StatusCode

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.methods import GET_PRODUCT
from pullgate.telemetry.grpc_client import CancellingUnaryUnary, client_interceptor
from pullgate.telemetry.grpc_server import Behavior, LeanServerInterceptor, server_interceptor, unsampled_parent
from pullgate.telemetry.tracing import drops_unsampled_parents, traced_method
from resilience import CacheConfig, Downstream, DownstreamConfig, HedgingConfig, StatusError

PLAIN = DownstreamConfig(cache=CacheConfig(enabled=False), hedging=HedgingConfig(enabled=False))


@dataclass
class Seen:
    """What the server's handler saw: the trace context it ran in, and the metadata keys."""

    contexts: list[trace.SpanContext] = field(default_factory=list)
    metadata: list[set[str]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


class _Servicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, seen: Seen) -> None:
        self.seen = seen

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.GetProductResponse:
        self.seen.contexts.append(trace.get_current_span().get_span_context())
        self.seen.metadata.append({key for key, _ in context.invocation_metadata() or ()})
        self.seen.started.set()
        if request.sku in ("NOT_FOUND", "INTERNAL"):
            await context.abort(grpc.StatusCode[request.sku], "scripted")
        if request.sku == "slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.seen.cancelled.set()
                raise
        return catalog_pb2.GetProductResponse(product=catalog_pb2.Product(sku=request.sku))

    async def BatchGetProducts(
        self, request: catalog_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.BatchGetProductsResponse:
        raise NotImplementedError


@dataclass
class Traced:
    provider: TracerProvider
    spans: InMemorySpanExporter
    interceptor: LeanServerInterceptor
    downstream: Downstream
    seen: Seen
    client: CancellingUnaryUnary

    def finished(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.kind is kind]


@contextlib.asynccontextmanager
async def traced(sampler: Sampler = ALWAYS_ON, shortcut: bool = False) -> AsyncIterator[Traced]:
    """A server with the lean server interceptor, and a Downstream whose transport runs the client interceptor;
    both on one tracer provider that keeps its spans in memory. `shortcut`: the interceptors make no span
    under an unsampled parent, as pullgate.telemetry.tracing sets them for a parent-based sampler."""
    spans = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    interceptor = server_interceptor(tracer_provider=provider, filter_=traced_method)
    client = client_interceptor(tracer_provider=provider)
    interceptor.unsampled_is_final = client.unsampled_is_final = shortcut
    seen = Seen()
    server = grpc.aio.server(interceptors=[interceptor])
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(_Servicer(seen), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    downstream = Downstream("catalog", [f"127.0.0.1:{port}"], PLAIN, interceptors=[client])
    try:
        yield Traced(provider, spans, interceptor, downstream, seen, client)
    finally:
        await downstream.close()
        await server.stop(None)
        provider.shutdown()


@contextlib.contextmanager
def inside(span: trace.Span) -> Iterator[None]:
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)


@pytest.mark.parametrize("shortcut", [False, True])
async def test_server_span_is_the_child_of_the_client_span_with_the_librarys_attributes(shortcut: bool) -> None:
    """With the unsampled shortcut on (and a parent-based sampler), a sampled trace keeps every span as before."""
    async with traced(ParentBased(ALWAYS_ON) if shortcut else ALWAYS_ON, shortcut) as t:
        root = t.provider.get_tracer("test").start_span("request")
        with inside(root):
            await t.downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="a"))
        root.end()
        (client,) = t.finished(SpanKind.CLIENT)
        (server,) = t.finished(SpanKind.SERVER)
        assert client.parent is not None and client.parent.span_id == root.get_span_context().span_id
        assert server.parent is not None and server.parent.span_id == client.context.span_id
        assert server.context.trace_id == root.get_span_context().trace_id
        assert server.name == "/pullgate.catalog.v1.CatalogService/GetProduct"
        assert server.attributes is not None
        assert {k: server.attributes[k] for k in ("rpc.system", "rpc.service", "rpc.method", "net.peer.ip")} == {
            "rpc.system": "grpc", "rpc.service": "pullgate.catalog.v1.CatalogService", "rpc.method": "GetProduct",
            "net.peer.ip": "127.0.0.1"}
        assert server.attributes["rpc.grpc.status_code"] == 0
        assert server.status.status_code is StatusCode.UNSET
        assert t.seen.contexts[0].span_id == server.context.span_id  # the handler ran inside the span


async def test_status_rules_a_callers_mistake_is_not_a_server_error_an_internal_one_is() -> None:
    async with traced() as t:
        for sku in ("NOT_FOUND", "INTERNAL"):
            with pytest.raises(StatusError):
                await t.downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku=sku))
        not_found, internal = t.finished(SpanKind.SERVER)
        assert not_found.attributes is not None and internal.attributes is not None
        assert not_found.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
        assert not_found.status.status_code is StatusCode.UNSET
        assert internal.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
        assert internal.status.status_code is StatusCode.ERROR
        assert internal.status.description == "StatusCode.INTERNAL:scripted"


@pytest.mark.parametrize("shortcut", [False, True])
async def test_a_dropped_trace_is_still_propagated_unsampled_and_records_nothing(shortcut: bool) -> None:
    """The owner runs in the caller's trace, flagged not sampled, so a parent-based sampler there drops it too.
    With the shortcut no span object is made on the way: the owner's handler runs in the root's own context."""
    async with traced(ParentBased(ALWAYS_OFF), shortcut) as t:
        root = t.provider.get_tracer("test").start_span("request")
        assert not root.is_recording()
        with inside(root):
            await t.downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="a"))
        assert t.spans.get_finished_spans() == ()
        assert "traceparent" in t.seen.metadata[0]
        assert t.seen.contexts[0].trace_id == root.get_span_context().trace_id
        assert not t.seen.contexts[0].trace_flags.sampled
        assert (t.seen.contexts[0].span_id == root.get_span_context().span_id) is shortcut


@pytest.mark.parametrize(("name", "argument", "final"), [
    ("parentbased_traceidratio", "0.01", True), ("parentbased_always_on", "", True), ("always_off", "", True),
    ("always_on", "", False), ("traceidratio", "0.5", False),
])
def test_the_shortcut_is_taken_only_for_samplers_that_drop_unsampled_parents_children(
        name: str, argument: str, final: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    assert drops_unsampled_parents(TracerProvider().sampler) is final


async def test_a_methods_handler_is_wrapped_once_not_per_call() -> None:
    async with traced() as t:
        wrapped = 0
        original = t.interceptor._intercept_aio_server_unary

        def counting(behavior: Behavior, details: Any) -> Behavior:
            nonlocal wrapped
            wrapped += 1
            return original(behavior, details)

        t.interceptor._intercept_aio_server_unary = counting  # type: ignore[method-assign,assignment]
        for _ in range(3):
            await t.downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="a"))
        assert wrapped == 1
        assert len(t.finished(SpanKind.SERVER)) == 3


async def test_a_cancelled_call_through_the_interceptor_is_cancelled_at_the_server() -> None:
    async with traced() as t:
        call = asyncio.ensure_future(t.downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="slow")))
        await asyncio.wait_for(t.seen.started.wait(), 5)
        call.cancel()
        await asyncio.wait_for(t.seen.cancelled.wait(), 5)
        (client,) = t.finished(SpanKind.CLIENT)
        assert client.attributes is not None
        assert client.attributes["pullgate.cancelled"] is True


async def test_under_a_dropped_trace_the_transport_adds_the_headers_itself_and_skips_the_interceptor() -> None:
    """The direct path (resilience.transport, `direct_metadata`): the interceptor's coroutine never runs, the owner
    still gets the caller's context, unsampled, and a sampled trace still goes through the interceptor."""
    async with traced(ParentBased(ALWAYS_OFF), shortcut=True) as t:
        client = t.client
        ran = 0
        original = client.intercept_unary_unary

        async def counting(*args: Any) -> Any:
            nonlocal ran
            ran += 1
            return await original(*args)

        client.intercept_unary_unary = counting  # type: ignore[method-assign,assignment]
        roots = [t.provider.get_tracer("test").start_span("request") for _ in range(2)]
        for root in roots:
            with inside(root):
                for _ in range(2):  # the second is answered from what the first worked out
                    await t.downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="a"))
        assert ran == 0
        assert [c.trace_id for c in t.seen.contexts] == [r.get_span_context().trace_id for r in roots for _ in "ab"]
        assert [c.span_id for c in t.seen.contexts] == [r.get_span_context().span_id for r in roots for _ in "ab"]
        assert not any(c.trace_flags.sampled for c in t.seen.contexts)
    async with traced(ALWAYS_ON, shortcut=True) as t:
        client = t.client
        assert client.direct_metadata() is None  # no parent: the interceptor starts a root span
        root = t.provider.get_tracer("test").start_span("request")
        with inside(root):
            assert client.direct_metadata() is None  # sampled: the client span must be made
            await t.downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="a"))
        assert len(t.finished(SpanKind.CLIENT)) == 1


async def test_a_cancelled_call_on_the_direct_path_is_cancelled_at_the_server() -> None:
    async with traced(ParentBased(ALWAYS_OFF), shortcut=True) as t:
        with inside(t.provider.get_tracer("test").start_span("request")):
            call = asyncio.ensure_future(t.downstream.call(GET_PRODUCT, catalog_pb2.GetProductRequest(sku="slow")))
        await asyncio.wait_for(t.seen.started.wait(), 5)
        call.cancel()
        await asyncio.wait_for(t.seen.cancelled.wait(), 5)
        assert t.spans.get_finished_spans() == ()


TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.mark.parametrize("flags", ["00", "02"])
def test_an_unsampled_traceparent_read_by_hand_gives_the_propagators_context(flags: str) -> None:
    headers = {"traceparent": f"00-{TRACE}-{SPAN}-{flags}", "authorization": "Bearer x"}
    by_hand = unsampled_parent(headers)
    assert by_hand is not None
    assert trace.get_current_span(by_hand).get_span_context() == trace.get_current_span(
        extract(headers)).get_span_context()


@pytest.mark.parametrize("headers", [
    {"traceparent": f"00-{TRACE}-{SPAN}-01"},  # sampled: the span is made
    {"traceparent": f"00-{TRACE}-{SPAN}-00", "tracestate": "vendor=1"},  # more than a traceparent
    {"traceparent": f"00-{TRACE}-{SPAN}-00", "baggage": "k=v"},
    {"traceparent": f"00-{TRACE.upper()}-{SPAN}-00"},  # not lowercase hex
    {"traceparent": f"00-{TRACE[:-1]}_-{SPAN}-00"},  # int() would take the underscore
    {"traceparent": f"01-{TRACE}-{SPAN}-00"},  # another version
    {"traceparent": f"00-{'0' * 32}-{SPAN}-00"},  # an invalid trace id
    {"traceparent": f"00-{TRACE}-{SPAN}-00-extra"},
    {},
])
def test_anything_else_is_left_to_the_propagators(headers: dict[str, str]) -> None:
    assert unsampled_parent(headers) is None


class _OtherPropagator(TextMapPropagator):
    """A propagator that reads a header of its own and nothing of W3C's, as OTEL_PROPAGATORS=b3 would be."""

    def extract(self, carrier: Any, context: Context | None = None, getter: Any = None) -> Context:
        return context if context is not None else Context()

    def inject(self, carrier: Any, context: Context | None = None, setter: Any = None) -> None:
        return None

    @property
    def fields(self) -> set[str]:
        return {"x-other-trace"}


async def test_a_traceparent_is_read_by_hand_only_when_the_propagators_are_w3cs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under other propagators a traceparent means nothing, so the server must not read it by hand either."""
    monkeypatch.setattr(propagate, "_HTTP_TEXT_FORMAT", _OtherPropagator())
    async with traced(ParentBased(ALWAYS_OFF), shortcut=True) as t:
        channel = grpc.aio.insecure_channel(t.downstream.addresses[0])
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        await stub.GetProduct(catalog_pb2.GetProductRequest(sku="a"),
                              metadata=(("traceparent", f"00-{TRACE}-{SPAN}-00"),))
        await channel.close(None)
        assert t.seen.contexts[0].trace_id != int(TRACE, 16)  # a root of its own, not the traceparent's trace
