"""Overload and gray failure across real processes: fast refusals, no breaker opened by load, a frozen replica
routed around and taken back, and a read that meets an overloaded owner answered stale, saying so."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from resilience import OVERLOADED_METADATA
from resilience.errors import ORIGIN_METADATA
from tests.e2e.test_up import System, pullgate_up
from tests.support import until, value

if TYPE_CHECKING:
    from pullgate.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub as GatewayStub

pytestmark = pytest.mark.e2e

STRONG = pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG)
AVAILABLE = pb.ReadOptions(consistency=pb.CONSISTENCY_AVAILABLE)


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pullgate.toml"
    path.write_text(text)
    return str(path)


async def _outcome(call: Awaitable[Any]) -> tuple[grpc.StatusCode, dict[str, str]]:
    """The status a call ended with, and its trailers."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        metadata: Any = error.trailing_metadata() or ()
        return error.code(), {key: value for key, value in metadata if isinstance(value, str)}
    return grpc.StatusCode.OK, {}


def _opened(system: System, name: str) -> float:
    """How many times process `name`'s breakers have opened."""
    return value(system.metrics(name), "resilience_breaker_transitions_total", state="open")


async def test_a_spike_is_refused_at_once_and_opens_no_breaker(tmp_path: Path) -> None:
    """Beyond the gateway's limit, views are refused (RESOURCE_EXHAUSTED "overloaded", or shed by grpc's core)
    before any admitted one finishes, and no breaker of a healthy owner opens."""
    # Every owner answers after 300 ms, so an admitted view holds its place that long; the gateway admits 4.
    config = _config(tmp_path, "[admission.gateway]\ninitial_limit = 4\nmin_limit = 4\nmax_limit = 4\n")
    async with pullgate_up(tmp_path, "--config", config, "--faults", "orders=delay:300ms") as system:
        async with system.channel("gateway") as channel:
            gateway: GatewayStub = gateway_pb2_grpc.GatewayServiceStub(channel)
            finished: list[grpc.StatusCode] = []

            async def view() -> tuple[grpc.StatusCode, dict[str, str]]:
                code, trailers = await _outcome(gateway.GetOrderView(
                    pb.GetOrderViewRequest(order_id="1", read=STRONG), timeout=10))
                finished.append(code)
                return code, trailers

            outcomes = await asyncio.gather(*(view() for _ in range(30)))
        codes = [code for code, _ in outcomes]
        assert codes.count(grpc.StatusCode.OK) >= 1
        # Refused either by admission (RESOURCE_EXHAUSTED, "overloaded") or, before Python saw them, by grpc's
        # core for finding too many calls waiting (CANCELLED; max_pending_requests).
        shed = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED)
        refused = [(code, t) for code, t in outcomes if code in shed]
        assert len(refused) >= 20, codes
        said = [t for code, t in refused if code is grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert all(t.get(OVERLOADED_METADATA) == "1" for t in said)
        # Refusals come back before the first admitted view does (that one waits 300 ms on orders): at once.
        assert finished.index(grpc.StatusCode.OK) >= len(refused)
        assert set(codes) <= {grpc.StatusCode.OK, *shed}
        assert _opened(system, "gateway") == 0


async def test_an_available_read_under_an_overloaded_owner_is_stale_and_says_overloaded(tmp_path: Path) -> None:
    """catalog, full with one call, sheds the view's product lookup; the view serves the last good answer, STALE
    with cause OVERLOADED, and nobody's breaker opens. A strong read, which may not be served stale, is refused
    RESOURCE_EXHAUSTED (back off; not UNAVAILABLE, which gRPC clients retry at once), saying it began at catalog."""
    config = _config(tmp_path, "[admission.catalog]\ninitial_limit = 1\nmin_limit = 1\nmax_limit = 1\n"
                               "[resilience.default.cache]\nttl = 0.000001\n")
    async with (
        pullgate_up(tmp_path, "--config", config, "--faults", "catalog.GetProduct=delay:20s") as system,
        system.channel("gateway") as to_gateway,
        system.channel("catalog") as to_catalog,
    ):
        gateway: GatewayStub = gateway_pb2_grpc.GatewayServiceStub(to_gateway)
        request = pb.GetOrderViewRequest(order_id="1", read=AVAILABLE)
        before = await gateway.GetOrderView(request, timeout=5)
        assert not before.degraded
        # A direct call holds catalog's one place for 20 s (no criticality sent: CRITICAL).
        held = asyncio.ensure_future(catalog_pb2_grpc.CatalogServiceStub(to_catalog).GetProduct(
            catalog_pb2.GetProductRequest(sku="SKU-001"), timeout=30))
        await until(lambda: value(system.metrics("catalog"), "resilience_server_in_flight") == 1)
        during = await gateway.GetOrderView(request, timeout=5)
        strong, trailers = await _outcome(gateway.GetOrderView(
            pb.GetOrderViewRequest(order_id="1", read=STRONG), timeout=5))
        held.cancel()
    assert strong == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailers.get(ORIGIN_METADATA) == "catalog"
    products = [p for p in during.parts if p.part.startswith("product:")]
    assert products and all(p.source == pb.SOURCE_STALE for p in products)
    assert all(p.cause == pb.CAUSE_OVERLOADED for p in products)
    assert all("RESOURCE_EXHAUSTED" in p.reason and "catalog" in p.reason for p in products)
    assert during.degraded


async def test_a_frozen_replica_stops_getting_attempts_and_is_taken_back(tmp_path: Path) -> None:
    """With the catalog replica that carries the views frozen, views stay good (hedged to the other), the frozen
    one loses its races and is ejected; from then on it gets next to no attempts; after SIGCONT it is tried
    again and gets attempts back."""
    # No cache, so every view reaches catalog; a short EWMA decay, so an avoided replica is retried within seconds;
    # an ejection long enough for the 200 views, short enough to see the return soon after.
    config = _config(tmp_path, "[resilience.default.cache]\nenabled = false\n"
                               "[resilience.default.balance]\ndecay = \"1s\"\n"
                               "[resilience.default.outlier_detection]\nbase_ejection_time = \"10s\"\n")
    async with (
        pullgate_up(tmp_path, "--config", config, "--replicas", "2") as system,
        system.channel("gateway") as channel,
    ):
        gateway: GatewayStub = gateway_pb2_grpc.GatewayServiceStub(channel)
        replicas = {p["address"]: p for p in system.state["services"]["catalog"]}

        def attempts() -> dict[str, float]:
            samples = system.metrics("gateway")
            return {a: value(samples, "resilience_attempts_total", downstream="catalog", replica=a) for a in replicas}

        def ejections(replica: str) -> float:
            return value(system.metrics("gateway"), "resilience_outlier_ejections_total", downstream="catalog",
                         replica=replica)

        async def views(n: int) -> None:
            for _ in range(n):
                response = await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="1", read=STRONG), timeout=5)
                assert not response.degraded

        await views(20)
        before = attempts()
        busy = max(before, key=lambda a: before[a])
        os.kill(replicas[busy]["pid"], signal.SIGSTOP)
        try:
            # Before the ejection peak-EWMA already keeps it to the odd probe (its decay, 1 s); each probe is
            # overtaken by its hedge, and five in a row (consecutive_failures) eject it.
            async def ejected_by_lost_races() -> None:
                while not ejections(busy):
                    await views(10)

            await asyncio.wait_for(ejected_by_lost_races(), 60)
            assert ejections(busy) == 1
            ejected = attempts()
            await views(200)
            during = attempts()
        finally:
            os.kill(replicas[busy]["pid"], signal.SIGCONT)
        sent = {a: during[a] - ejected[a] for a in replicas}
        # Of the 200 views' catalog attempts after the ejection, the frozen replica got next to none.
        assert sent[busy] <= 0.05 * sum(sent.values()), sent

        async def taken_back() -> None:
            while attempts()[busy] <= during[busy] + 5:
                await views(10)

        await asyncio.wait_for(taken_back(), 60)
        assert _opened(system, "gateway") == 0
