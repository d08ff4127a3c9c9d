"""A scripted catalog owner on port 0: each test says what status and latency each call gets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from resilience.server import DeadlineInterceptor


@dataclass
class Script:
    """What the owner does on a call: wait `delay` seconds, then answer `code` (OK = a product)."""

    delay: float = 0.0
    code: grpc.StatusCode = grpc.StatusCode.OK


@dataclass
class Owner:
    """The servicer's record of calls: what it saw, and how each ended."""

    name: str = "owner"
    script: Callable[[int], Script] = lambda n: Script()
    calls: int = 0
    cancelled: int = 0
    time_remaining: list[float | None] = field(default_factory=list)
    cancelled_event: asyncio.Event = field(default_factory=asyncio.Event)
    address: str = ""


class _Servicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, owner: Owner) -> None:
        self.owner = owner

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.GetProductResponse:
        owner = self.owner
        n = owner.calls
        owner.calls += 1
        owner.time_remaining.append(context.time_remaining())
        step = owner.script(n)
        try:
            if step.delay:
                await asyncio.sleep(step.delay)
        except asyncio.CancelledError:
            owner.cancelled += 1
            owner.cancelled_event.set()
            raise
        if step.code is not grpc.StatusCode.OK:
            await context.abort(step.code, f"scripted {step.code.name}")
        return catalog_pb2.GetProductResponse(
            product=catalog_pb2.Product(sku=request.sku, title=owner.name, price_cents=n)
        )


    async def BatchGetProducts(
        self, request: catalog_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.BatchGetProductsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")


@contextlib.asynccontextmanager
async def serving(owner: Owner | None = None) -> AsyncIterator[Owner]:
    """A started owner on 127.0.0.1:<free port>, stopped on exit."""
    owner = owner or Owner()
    server = grpc.aio.server(interceptors=[DeadlineInterceptor()])
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(_Servicer(owner), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    owner.address = f"127.0.0.1:{port}"
    try:
        yield owner
    finally:
        await server.stop(None)
