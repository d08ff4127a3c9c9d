"""The server-side base interceptor: a handler is wrapped once per method, unless the interceptor decides per call."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from resilience.server import Behavior, HandlerMemo, UnaryInterceptor
from tests.resilience.owner import Owner, _Servicer

if TYPE_CHECKING:
    from pullgate.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub


class Counting(UnaryInterceptor):
    def __init__(self) -> None:
        self.wrapped = 0

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior:
        self.wrapped += 1

        async def passing(request: Any, context: Any) -> Any:
            return await behavior(request, context)

        return passing


class CountingPerCall(Counting):
    per_method = False


@contextlib.asynccontextmanager
async def stub(interceptor: UnaryInterceptor) -> AsyncIterator[CatalogServiceAsyncStub]:
    server = grpc.aio.server(interceptors=[interceptor])
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(_Servicer(Owner()), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield catalog_pb2_grpc.CatalogServiceStub(channel)
    finally:
        await server.stop(None)


@pytest.mark.parametrize(("interceptor", "wraps"), [(Counting(), 1), (CountingPerCall(), 3)],
                         ids=["per method: once", "per call: every call"])
async def test_a_handler_is_wrapped_once_per_method_unless_the_interceptor_decides_per_call(
    interceptor: Counting, wraps: int
) -> None:
    async with stub(interceptor) as catalog:
        for _ in range(3):
            await catalog.GetProduct(catalog_pb2.GetProductRequest(sku="a"), timeout=5)
    assert interceptor.wrapped == wraps


def test_the_memo_is_bounded_and_tells_handlers_apart() -> None:
    memo = HandlerMemo()
    kept = [object() for _ in range(HandlerMemo.LIMIT + 1)]
    for handler in kept:
        memo.put(handler, ("wrapped", handler))
    assert memo.get(kept[-1]) == ("wrapped", kept[-1])
    assert memo.get(kept[0]) is None  # started over when full
    assert memo.get(object()) is None
