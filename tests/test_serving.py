"""The shared server runtime across real gRPC: how a server's errors reach its callers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from pullgate import methods
from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.customers.v1 import customers_pb2
from pullgate.errors import InvalidArgument
from pullgate.serving import Binding, running
from resilience import Downstream, DownstreamConfig, ResilienceError
from resilience.config import BreakerConfig, CacheConfig, HedgingConfig, RetryConfig

QUIET = DownstreamConfig(cache=CacheConfig(enabled=False), retry=RetryConfig(enabled=False),
                         hedging=HedgingConfig(enabled=False), breaker=BreakerConfig(fail_max=2, reset_timeout=60))


class Middle(catalog_pb2_grpc.CatalogServiceServicer):
    """A server that needs another service to answer: it asks `dependency` for a customer first."""

    def __init__(self, dependency: Downstream | None) -> None:
        self.dependency = dependency

    async def GetProduct(self, request: catalog_pb2.GetProductRequest, context: Any) -> catalog_pb2.GetProductResponse:
        if not request.sku:
            raise InvalidArgument("sku", "must not be empty")
        if self.dependency is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this server itself is failing")
            raise AssertionError("abort returns only by raising")
        await self.dependency.call(methods.GET_CUSTOMER, customers_pb2.GetCustomerRequest(customer_id="1"))
        return catalog_pb2.GetProductResponse()

    async def BatchGetProducts(
        self, request: catalog_pb2.BatchGetProductsRequest, context: Any
    ) -> catalog_pb2.BatchGetProductsResponse:
        raise NotImplementedError


@contextlib.asynccontextmanager
async def middle(dependency: Downstream | None) -> AsyncIterator[str]:
    binding = Binding("pullgate.catalog.v1.CatalogService", catalog_pb2_grpc.add_CatalogServiceServicer_to_server,
                      Middle(dependency))
    async with running([binding]) as (_, port, _health):
        yield f"127.0.0.1:{port}"


async def _dead_address() -> str:
    async with running([]) as (_, port, _health):
        address = f"127.0.0.1:{port}"
    return address  # nothing listens there any more


async def test_a_dependency_failure_does_not_open_the_callers_breaker() -> None:
    """When the middle server's dependency is down, the middle's callers keep their breaker closed."""
    dependency = Downstream("customers", [await _dead_address()], QUIET)
    async with middle(dependency) as address:
        client = Downstream("middle", [address], QUIET)
        try:
            for _ in range(5):
                with pytest.raises(ResilienceError) as raised:
                    await client.call(methods.GET_PRODUCT, catalog_pb2.GetProductRequest(sku="A"))
                assert raised.value.code is grpc.StatusCode.UNAVAILABLE
                assert raised.value.origin == "customers"
            assert client.breaker_states() == {address: "closed"}
        finally:
            await client.close()
    await dependency.close()


async def test_the_servers_own_failure_opens_the_callers_breaker() -> None:
    """When the middle server itself fails, its callers' breaker opens as usual."""
    async with middle(None) as address:
        client = Downstream("middle", [address], QUIET)
        try:
            for _ in range(3):
                with pytest.raises(ResilienceError) as raised:
                    await client.call(methods.GET_PRODUCT, catalog_pb2.GetProductRequest(sku="A"))
            assert raised.value.origin is None
            assert client.breaker_states() == {address: "open"}
        finally:
            await client.close()


async def test_a_bad_request_is_invalid_argument_naming_the_field() -> None:
    """A ServiceError raised by a servicer reaches the caller as its code and message."""
    async with middle(None) as address, grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await catalog_pb2_grpc.CatalogServiceStub(channel).GetProduct(catalog_pb2.GetProductRequest(sku=""))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "sku: must not be empty"
