"""Admission control and criticality across real grpc.aio servers on port 0: refusals, health, propagation."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.methods import GET_PRODUCT
from resilience import criticality
from resilience.admission import AdmissionConfig
from resilience.context import CallContext
from resilience.criticality import Criticality
from resilience.errors import OVERLOADED_METADATA, REFUSED_METADATA
from resilience.server import AdmissionInterceptor
from resilience.transport import Transport

SERVICE = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name
GET = f"/{SERVICE}/GetProduct"
REQUEST = catalog_pb2.GetProductRequest(sku="x")
LIMIT_TWO = AdmissionConfig(initial_limit=2, min_limit=2, max_limit=2)


class Catalog(catalog_pb2_grpc.CatalogServiceServicer):
    """GetProduct records its metadata, then waits until `release` is set (or, with `downstream`, calls it)."""

    def __init__(self, hold: int = 0, downstream: Transport | None = None) -> None:
        self.hold = hold
        self.downstream = downstream
        self.held = 0
        self.all_held = asyncio.Event()
        self.release = asyncio.Event()
        self.metadata: list[dict[str, Any]] = []

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.GetProductResponse:
        self.metadata.append(dict(context.invocation_metadata() or ()))
        if self.hold:
            self.held += 1
            if self.held == self.hold:
                self.all_held.set()
            await self.release.wait()
        if self.downstream is not None:
            answer: catalog_pb2.GetProductResponse = await self.downstream(
                request, CallContext(GET_PRODUCT, self.downstream.downstream, None)
            )
            return answer
        return catalog_pb2.GetProductResponse(product=catalog_pb2.Product(sku=request.sku))

    async def BatchGetProducts(
        self, request: catalog_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.BatchGetProductsResponse:
        raise NotImplementedError


@contextlib.asynccontextmanager
async def serving(
    servicer: Catalog, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()  # type: ignore[type-arg]
) -> AsyncIterator[str]:
    """A started server with `servicer` and health (SERVING) on 127.0.0.1:<free port>."""
    server = grpc.aio.server(interceptors=list(interceptors))
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        servicer.release.set()
        await server.stop(None)


async def test_a_burst_beyond_the_limit_is_refused_at_once_and_health_still_answers() -> None:
    """Two calls hold the limit of two: ten more get RESOURCE_EXHAUSTED with the trailer while those two still
    run, their handlers never run, and health checks answer SERVING."""
    catalog = Catalog(hold=2)
    interceptor = AdmissionInterceptor([SERVICE], LIMIT_TWO, name="catalog")
    async with serving(catalog, [interceptor]) as address, grpc.aio.insecure_channel(address) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        held = [asyncio.ensure_future(stub.GetProduct(REQUEST, timeout=10)) for _ in range(2)]
        await catalog.all_held.wait()

        burst = await asyncio.gather(*(stub.GetProduct(REQUEST, timeout=10) for _ in range(10)), return_exceptions=True)
        assert all(isinstance(e, grpc.aio.AioRpcError) for e in burst)
        for error in burst:
            assert isinstance(error, grpc.aio.AioRpcError)
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "catalog overloaded: 2 requests in flight, limit 2" in (error.details() or "")
            trailers: dict[str, Any] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
            assert trailers[OVERLOADED_METADATA] == "1"
            assert trailers[REFUSED_METADATA] == "limit"
        assert not any(call.done() for call in held)
        assert len(catalog.metadata) == 2

        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

        catalog.release.set()
        assert [r.product.sku for r in await asyncio.gather(*held)] == ["x", "x"]
        assert (await stub.GetProduct(REQUEST, timeout=10)).product.sku == "x"
    assert interceptor.methods[GET].refused_limit[Criticality.CRITICAL] == 10


async def test_a_sheddable_request_is_refused_where_a_critical_one_gets_in() -> None:
    """One of two places held: SHEDDABLE (half the limit) is refused over the wire, CRITICAL is answered."""
    catalog = Catalog(hold=1)
    interceptor = AdmissionInterceptor([SERVICE], LIMIT_TWO)
    async with serving(catalog, [interceptor]) as address, grpc.aio.insecure_channel(address) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        held = asyncio.ensure_future(stub.GetProduct(REQUEST, timeout=10))
        await catalog.all_held.wait()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetProduct(REQUEST, timeout=10, metadata=((criticality.METADATA_KEY, "SHEDDABLE"),))
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        catalog.hold = 0  # the next request is answered at once
        answer = await stub.GetProduct(REQUEST, timeout=10, metadata=((criticality.METADATA_KEY, "CRITICAL"),))
        assert answer.product.sku == "x"
        catalog.release.set()
        await held


class Passing(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(client_call_details, request)


@pytest.mark.parametrize("intercepted", [False, True], ids=["plain transport", "transport with interceptors"])
@pytest.mark.parametrize(
    ("sent", "reaches"),
    [
        (None, "CRITICAL"),
        ("SHEDDABLE", "SHEDDABLE"),
        ("SHEDDABLE_PLUS", "SHEDDABLE_PLUS"),
        ("CRITICAL_PLUS", "CRITICAL"),
    ],
)
async def test_criticality_crosses_a_hop_lowered_never_raised(
    sent: str | None, reaches: str, intercepted: bool
) -> None:
    """A client's criticality reaches the front server, and the front's call to a second server carries it on
    (the method's own CRITICAL when none is sent, and never higher)."""
    back = Catalog()
    async with serving(back) as back_address:
        transport = Transport("back", [back_address], interceptors=[Passing()] if intercepted else ())
        front_interceptor = AdmissionInterceptor([SERVICE], criticality={GET: Criticality.CRITICAL})
        try:
            async with (
                serving(Catalog(downstream=transport), [front_interceptor]) as front_address,
                grpc.aio.insecure_channel(front_address) as channel,
            ):
                stub = catalog_pb2_grpc.CatalogServiceStub(channel)
                metadata = None if sent is None else ((criticality.METADATA_KEY, sent),)
                await stub.GetProduct(REQUEST, timeout=10, metadata=metadata)
        finally:
            await transport.close()
    assert back.metadata[0][criticality.METADATA_KEY] == reaches


async def test_a_call_made_outside_any_request_carries_no_criticality() -> None:
    """A client that is not serving (a CLI, a load generator) sends none, so the server uses the method's own."""
    back = Catalog()
    async with serving(back) as address:
        transport = Transport("back", [address])
        try:
            await transport(REQUEST, CallContext(GET_PRODUCT, "back", None))
            with criticality.scope(Criticality.SHEDDABLE):
                await transport(REQUEST, CallContext(GET_PRODUCT, "back", None))
        finally:
            await transport.close()
    assert criticality.METADATA_KEY not in back.metadata[0]
    assert back.metadata[1][criticality.METADATA_KEY] == "SHEDDABLE"
