"""Each process serves its metrics for Prometheus on its own port; after traffic the series are there."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from tests.observability.conftest import System
from tests.observability.test_traces import set_faults
from tests.support import scrape, until, value

pytestmark = pytest.mark.e2e


async def test_the_gateway_serves_resilience_and_view_metrics(system: System) -> None:
    """After a miss, a hit and a degraded view, the gateway's endpoint has the series with those counts."""
    async with system.channel("gateway", customer="1") as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="3"), timeout=5)
        await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="3"), timeout=5)
        await set_faults(system, "inventory", "inventory.BatchGetStock=error:INTERNAL")
        try:
            live_only = pb.ReadOptions(consistency=pb.CONSISTENCY_BOUNDED_STALENESS, max_staleness=Duration())
            degraded = await gateway.GetOrderView(
                pb.GetOrderViewRequest(order_id="3", read=live_only), timeout=5)
        finally:
            await set_faults(system, "inventory", "")
    assert degraded.degraded
    samples = scrape(system.metrics_url("gateway"))
    calls = {"downstream": "orders", "method": "GetOrder", "outcome": "success"}
    count = value(samples, "resilience_call_duration_seconds_count", **calls)
    assert count >= 2
    assert value(samples, "resilience_call_duration_seconds_bucket", le="10.0", **calls) == count
    assert value(samples, "resilience_call_duration_seconds_bucket", le="0.0005", **calls) < count
    assert 0 < value(samples, "resilience_call_duration_seconds_sum", **calls) < count * 5.0
    assert value(samples, "resilience_cache_requests_total", downstream="orders", result="hit") >= 1
    assert value(samples, "resilience_cache_requests_total", downstream="orders", result="miss") >= 1
    assert value(samples, "resilience_call_duration_seconds_count", downstream="inventory", outcome="failure") >= 1
    reasons = {"consistency": "bounded_staleness", "reason": "owner_failed"}
    assert value(samples, "pullgate_gateway_degraded_responses_total", **reasons) >= 1
    assert value(samples, "pullgate_gateway_parts_total", part="stock") >= 1
    states = [s for s in samples if s.name == "resilience_breaker_state"]
    assert {s.labels["downstream"] for s in states} == set(topology.downstreams())
    assert all(s.value in (0, 1, 2) for s in states)


async def test_every_server_and_client_has_the_standard_rpc_metrics_by_method_and_status(system: System) -> None:
    """rpc.server.duration on every server and rpc.client.duration on every caller, by the RPC semantic
    conventions: a view's calls show up per method with status OK, a view of no order with NOT_FOUND."""
    async with system.channel("gateway", customer="1") as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="2"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="no-such-order"), timeout=5)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    view = {"rpc_system": "grpc", "rpc_service": "pullgate.gateway.v1.GatewayService", "rpc_method": "GetOrderView"}
    ok, not_found = str(grpc.StatusCode.OK.value[0]), str(grpc.StatusCode.NOT_FOUND.value[0])

    def counted(service: str, metric: str, code: str, **labels: str) -> bool:
        return value(scrape(system.metrics_url(service)), metric, rpc_grpc_status_code=code, **labels) >= 1

    # A server sends an abort's status before its interceptors return, so the caller may hear NOT_FOUND a moment
    # before the server has recorded it: wait for the series rather than read it once.
    server, client = "rpc_server_duration_milliseconds_count", "rpc_client_duration_milliseconds_count"
    await until(lambda: counted("gateway", server, not_found, **view))
    assert counted("gateway", server, ok, **view)
    assert counted("gateway", client, ok, rpc_system="grpc", rpc_service="pullgate.orders.v1.OrderService",
                   rpc_method="GetOrder")
    await until(lambda: counted("orders", server, not_found, rpc_method="GetOrder"))
    assert counted("orders", server, ok, rpc_method="GetOrder")


def test_every_process_has_its_own_metrics_port(system: System) -> None:
    """The launcher records a distinct metrics endpoint per process, and each answers."""
    urls = [system.metrics_url(name) for name in topology.names()]
    assert len(set(urls)) == len(topology.names())
    for url in urls:
        assert scrape(url), url


async def test_criticality_travels_from_the_gateway_to_the_owners(system: System) -> None:
    """A view reaches catalog as SHEDDABLE, a placement's checks reach it as CRITICAL; each server counts them."""
    async with system.channel("gateway", customer="1") as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        strong = pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG)
        await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="2", read=strong), timeout=5)
        await gateway.PlaceOrder(pb.PlaceOrderRequest(
            idempotency_key="criticality-test", customer_id="1",
            lines=[orders_pb2.OrderLine(sku="SKU-001", quantity=1)]), timeout=10)
    admitted = "resilience_server_admitted_total"
    batch = {"server": "catalog", "method": "BatchGetProducts"}
    catalog = scrape(system.metrics_url("catalog"))
    assert value(catalog, admitted, criticality="SHEDDABLE", **batch) >= 1
    assert value(catalog, admitted, criticality="CRITICAL", **batch) >= 1
    inventory = scrape(system.metrics_url("inventory"))
    reserve = {"server": "inventory", "method": "ReserveStock"}
    assert value(inventory, admitted, criticality="CRITICAL", **reserve) >= 1
    assert value(inventory, admitted, criticality="SHEDDABLE", **reserve) == 0


async def test_refused_callers_are_counted_by_reason(system: System) -> None:
    """A call without a token is counted at the gateway as unauthenticated; the operator's certificate asking
    inventory for a write is counted there as not permitted."""
    refused = "pullgate_security_refused_total"
    view = {"rpc_method": "/pullgate.gateway.v1.GatewayService/GetOrderView"}
    release = {"rpc_method": "/pullgate.inventory.v1.InventoryService/ReleaseReservation"}
    before = (value(scrape(system.metrics_url("gateway")), refused, reason="unauthenticated", **view),
              value(scrape(system.metrics_url("inventory")), refused, reason="not_permitted", **release))
    async with system.access.channel("gateway", system.address("gateway")) as channel:  # no token
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await gateway_pb2_grpc.GatewayServiceStub(channel).GetOrderView(
                pb.GetOrderViewRequest(order_id="1"), timeout=5)
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with system.channel("inventory") as channel:  # the operator's certificate: reads only
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await inventory_pb2_grpc.InventoryServiceStub(channel).ReleaseReservation(
                inventory_pb2.ReleaseReservationRequest(reservation_id="1"), timeout=5)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert value(scrape(system.metrics_url("gateway")), refused, reason="unauthenticated", **view) == before[0] + 1
    assert value(scrape(system.metrics_url("inventory")), refused, reason="not_permitted", **release) == before[1] + 1


async def test_each_downstreams_replicas_are_counted(system: System) -> None:
    """`resilience_replicas` says how many replicas each caller knows of each owner: what DNS discovery changes."""
    gateway = scrape(system.metrics_url("gateway"))
    for owner in topology.service("gateway").upstreams:
        live = len(system.state["services"][owner])
        assert value(gateway, "resilience_replicas", downstream=owner, state="live") == live
        assert value(gateway, "resilience_replicas", downstream=owner, state="leaving") == 0
