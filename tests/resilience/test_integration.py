"""The layer against real grpc.aio servers on port 0: deadlines across processes' wire, hedges, retries, breakers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.methods import GET_PRODUCT
from resilience import (
    BreakerConfig,
    CircuitOpen,
    DeadlineInterceptor,
    Downstream,
    DownstreamConfig,
    HedgingConfig,
    ResilienceError,
    RetryConfig,
    StatusError,
)
from resilience.config import CacheConfig, TimeoutConfig
from tests.resilience.owner import Owner, Script, serving

REQUEST = catalog_pb2.GetProductRequest(sku="x")
NO_CACHE = CacheConfig(enabled=False)
# Only the 5 s total bounds a call (no per-attempt slice): an owner that sees less than a second left can only
# have got it from the incoming deadline.
ONLY_TOTAL = DownstreamConfig(cache=NO_CACHE, timeout=TimeoutConfig(total=5.0, per_attempt=0.0))


class _Front(catalog_pb2_grpc.CatalogServiceServicer):
    """A server whose handler calls the owner through the layer, passing no timeout by hand."""

    def __init__(self, downstream: Downstream) -> None:
        self.downstream = downstream

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.GetProductResponse:
        return (await self.downstream.call(GET_PRODUCT, request)).value

    async def BatchGetProducts(
        self, request: catalog_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.BatchGetProductsResponse:
        raise NotImplementedError


@contextlib.asynccontextmanager
async def front(downstream: Downstream) -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[DeadlineInterceptor()])
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(_Front(downstream), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_incoming_deadline_bounds_the_outgoing_call() -> None:
    """A client's 0.5 s deadline on the front reaches the owner as at most 0.5 s, though the total timeout is 5 s."""
    async with serving() as owner:
        downstream = Downstream("catalog", [owner.address], ONLY_TOTAL)
        async with front(downstream) as address, grpc.aio.insecure_channel(address) as channel:
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            await stub.GetProduct(REQUEST, timeout=0.5)
        await downstream.close()
    # Every attempt (a hedge may have gone too) had the front's 0.5 s, not the layer's own 5 s total. gRPC rounds
    # a timeout up when it puts it on the wire (a coarser value compresses better in HPACK), so the owner may
    # see a little more than the front had left: the bound sits between the two budgets, not at the front's.
    assert owner.time_remaining
    assert all(remaining is not None and 0.0 < remaining < 1.0 for remaining in owner.time_remaining)


async def test_owner_too_slow_for_the_incoming_deadline_fails_with_deadline_exceeded() -> None:
    """The front's caller gets DEADLINE_EXCEEDED at its own deadline, not the layer's 5 s total."""
    async with serving(Owner(script=lambda n: Script(delay=2.0))) as owner:
        downstream = Downstream("catalog", [owner.address], ONLY_TOTAL)
        async with front(downstream) as address, grpc.aio.insecure_channel(address) as channel:
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetProduct(REQUEST, timeout=0.3)
            # The owner's handler is cancelled (the call was cut at the front's deadline, not waited out).
            await asyncio.wait_for(owner.cancelled_event.wait(), 5.0)
        await downstream.close()
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    # Every attempt had the front's 0.3 s (rounded up on the wire, see above), not the layer's 5 s total.
    assert owner.time_remaining
    assert all(remaining is not None and remaining < 1.0 for remaining in owner.time_remaining)


async def test_server_sees_the_hedge_losers_cancellation() -> None:
    """The slow replica's handler is cancelled once the hedge to the fast replica has answered."""
    slow = Owner(name="slow", script=lambda n: Script(delay=5.0))
    fast = Owner(name="fast")
    async with serving(slow), serving(fast):
        config = DownstreamConfig(cache=NO_CACHE, hedging=HedgingConfig(hedging_delay=0.05))
        downstream = Downstream("catalog", [slow.address, fast.address], config)
        try:
            for _ in range(20):  # the first attempt goes to the slow replica on some of these
                result = await downstream.call(GET_PRODUCT, REQUEST)
                if slow.calls:
                    break
            assert result.value.product.title == "fast"
            await asyncio.wait_for(slow.cancelled_event.wait(), 2.0)
        finally:
            await downstream.close()
    assert slow.cancelled >= 1
    assert result.provenance.hedge_won


async def test_a_retry_goes_to_the_other_replica() -> None:
    """With one replica UNAVAILABLE and two attempts, every call succeeds: each retry avoids the failed replica."""
    sick = Owner(name="sick", script=lambda n: Script(code=grpc.StatusCode.UNAVAILABLE))
    well = Owner(name="well")
    async with serving(sick), serving(well):
        config = DownstreamConfig(
            cache=NO_CACHE,
            hedging=HedgingConfig(enabled=False),
            breaker=BreakerConfig(enabled=False),
            retry=RetryConfig(max_attempts=2, initial_backoff=0.001),
        )
        downstream = Downstream("catalog", [sick.address, well.address], config)
        try:
            results = [await downstream.call(GET_PRODUCT, REQUEST) for _ in range(20)]
        finally:
            await downstream.close()
    assert sick.calls > 0
    assert all(r.value.product.title == "well" for r in results)
    assert all(r.provenance.replica == well.address for r in results)


async def test_grpc_does_not_retry_under_us() -> None:
    """With the layer's retries off, an UNAVAILABLE owner sees exactly one call: grpc's own retries are off."""
    owner = Owner(script=lambda n: Script(code=grpc.StatusCode.UNAVAILABLE))
    async with serving(owner):
        no_hedge, no_retry = HedgingConfig(enabled=False), RetryConfig(enabled=False)
        config = DownstreamConfig(cache=NO_CACHE, hedging=no_hedge, retry=no_retry)
        downstream = Downstream("catalog", [owner.address], config)
        try:
            with pytest.raises(StatusError):
                await downstream.call(GET_PRODUCT, REQUEST)
        finally:
            await downstream.close()
    assert owner.calls == 1


async def test_killed_owner_opens_the_breaker_and_calls_fail_fast() -> None:
    """Once the owner is gone and the breaker open, calls fail fast with UNAVAILABLE, without the network."""
    async with serving() as owner:
        address = owner.address
    config = DownstreamConfig(cache=NO_CACHE, breaker=BreakerConfig(fail_max=3, reset_timeout=30.0))
    downstream = Downstream("catalog", [address], config)
    try:
        for _ in range(5):
            with pytest.raises(ResilienceError):
                await downstream.call(GET_PRODUCT, REQUEST)
        assert downstream.breaker_states() == {address: "open"}
        with pytest.raises(CircuitOpen) as raised:
            await downstream.call(GET_PRODUCT, REQUEST)
    finally:
        await downstream.close()
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert address in str(raised.value)


async def test_open_breaker_sends_nothing_to_the_owner() -> None:
    """Once the breaker is open, calls fail fast with CircuitOpen and the owner sees none of them."""
    owner = Owner(script=lambda n: Script(code=grpc.StatusCode.UNAVAILABLE))
    async with serving(owner):
        retry_off = RetryConfig(enabled=False)
        config = DownstreamConfig(cache=NO_CACHE, retry=retry_off, hedging=HedgingConfig(enabled=False),
                                  breaker=BreakerConfig(fail_max=3, reset_timeout=30.0))
        downstream = Downstream("catalog", [owner.address], config)
        try:
            for _ in range(3):
                with pytest.raises(StatusError):
                    await downstream.call(GET_PRODUCT, REQUEST)
            seen = owner.calls
            for _ in range(10):
                with pytest.raises(CircuitOpen):
                    await downstream.call(GET_PRODUCT, REQUEST)
        finally:
            await downstream.close()
    assert seen == 3
    assert owner.calls == seen
