"""Traces of the whole system as separate processes: one trace per request, every hop, every decision."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from pullgate import topology
from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from tests.observability.conftest import System, running
from tests.observability.receiver import Receiver, Span

Gateway = gateway_pb2_grpc.GatewayServiceStub

pytestmark = pytest.mark.e2e

STRONG = pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG)
OWNERS = topology.service("gateway").upstreams


@pytest.fixture
async def gateway(system: System) -> AsyncIterator[gateway_pb2_grpc.GatewayServiceStub]:
    async with system.channel("gateway", customer="1") as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)


async def set_faults(system: System, service: str, spec: str) -> None:
    async with system.channel(service) as channel:
        await admin_pb2_grpc.FaultServiceStub(channel).SetFaults(admin_pb2.SetFaultsRequest(spec=spec), timeout=5)


def trace_of(spans: list[Span], root_name: str, since_ns: int) -> str | None:
    """The trace id of the first gateway server span called `root_name` that started at or after `since_ns`.

    By start time, not by arrival: spans arrive in batches, so those of an earlier call (one made without
    waiting for its trace) may arrive after the call made here began.
    """
    found = None
    for span in spans:
        gateway_root = span.is_server and span.service == "pullgate-gateway" and span.name.endswith(root_name)
        if gateway_root and span.start_ns >= since_ns and (found is None or span.start_ns < found.start_ns):
            found = span
    return None if found is None else found.trace_id


def in_trace(spans: list[Span], trace_id: str) -> list[Span]:
    return [s for s in spans if s.trace_id == trace_id]


def logical(spans: list[Span], service: str, name: str) -> list[Span]:
    """The resilience layer's spans for calls from `service` named like `customers/GetCustomer`."""
    return [s for s in spans if s.service == f"pullgate-{service}" and s.name == name]


async def traced_call(system: System, root: str, call: object, until: tuple[str, ...]) -> list[Span]:
    """Make `call` (awaitable), then wait until its trace holds a server span of each service in `until`.

    The call's trace is the first gateway trace that began after this one was made: `call` is sequential
    with anything else the test sends to the gateway."""
    since = time.time_ns()
    await call  # type: ignore[misc]

    def complete(spans: list[Span]) -> bool:
        trace_id = trace_of(spans, root, since)
        if trace_id is None:
            return False
        servers = {s.service for s in in_trace(spans, trace_id) if s.is_server}
        return all(f"pullgate-{name}" in servers for name in until)

    spans = system.receiver.wait_for(complete)
    trace_id = trace_of(spans, root, since)
    assert trace_id is not None
    return in_trace(spans, trace_id)


def check_parents(spans: list[Span]) -> None:
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        if span.is_server and span.parent_id:
            parent = by_id[span.parent_id]
            assert parent.is_client, f"{span.name} in {span.service}: parent {parent.name} is not a client span"
            assert parent.name == span.name, (parent.name, span.name)
            assert parent.service != span.service
        if span.is_client:
            caller = by_id[span.parent_id]
            assert caller.attributes["resilience.downstream"], f"{span.name}: not under a resilience span"


async def test_order_view_is_one_trace_across_every_owner(system: System, gateway: Gateway) -> None:
    """A GetOrderView is one trace through every owner, each server span under its caller's client span."""
    spans = await traced_call(system, "GetOrderView", gateway.GetOrderView(
        pb.GetOrderViewRequest(order_id="1", read=STRONG), timeout=5), ("gateway", *OWNERS))
    check_parents(spans)
    root = next(s for s in spans if s.is_server and s.service == "pullgate-gateway")
    assert root.parent_id == ""
    assert root.attributes["pullgate.read.consistency"] == "strong"
    assert root.attributes["pullgate.degraded"] is False
    assert any(p.startswith("customer:1=live") for p in root.attributes["pullgate.parts"])
    call = logical(spans, "gateway", "customers/GetCustomer")[0]
    assert call.parent_id == root.span_id
    assert call.attributes["resilience.source"] == "live"
    assert call.attributes["resilience.attempts"] >= 1
    assert call.attributes["resilience.breaker_state"] == "closed"
    assert call.attributes["resilience.replica"] == system.address("customers")


async def test_every_server_span_names_its_caller(system: System, gateway: Gateway) -> None:
    """Who called is on every server span: the token's subject at the gateway, the caller's certificate identity
    (its SPIFFE id) at each owner: the gateway's, or orders' for what orders asks during a placement."""
    request = pb.PlaceOrderRequest(idempotency_key=str(uuid.uuid4()), customer_id="1",
                                   lines=[orders_pb2.OrderLine(sku="SKU-001", quantity=1)])
    spans = await traced_call(system, "PlaceOrder", gateway.PlaceOrder(request, timeout=5), ("gateway", *OWNERS))
    servers = {s.service.removeprefix("pullgate-"): s for s in spans if s.is_server}
    assert servers["gateway"].attributes["pullgate.caller"] == "customer:1"
    assert servers["gateway"].attributes["enduser.id"] == "customer:1"
    assert servers["orders"].attributes["pullgate.caller"] == "spiffe://pullgate.local/gateway"
    for owner in ("customers", "inventory"):
        assert servers[owner].attributes["pullgate.caller"] == "spiffe://pullgate.local/orders"


async def test_a_cache_hit_shows_as_a_hit_with_its_age(system: System, gateway: Gateway) -> None:
    """A second bounded read within the TTL is answered from the gateway's cache, and its span says so."""
    await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="2"), timeout=5)  # type: ignore[misc]
    spans = await traced_call(system, "GetOrderView", gateway.GetOrderView(
        pb.GetOrderViewRequest(order_id="2"), timeout=5), ("gateway",))
    hit = logical(spans, "gateway", "orders/GetOrder")[0]
    assert hit.attributes["resilience.cache"] == "hit"
    assert hit.attributes["resilience.source"] == "cached"
    assert hit.attributes["resilience.attempts"] == 0
    assert 0 < hit.attributes["resilience.data_age_s"] < 1.0
    assert not [s for s in spans if s.parent_id == hit.span_id], "a hit sends no attempt"


async def test_place_order_shows_every_hop_and_the_placement_steps(
    system: System, gateway: Gateway
) -> None:
    """A PlaceOrder is one trace: gateway, orders, and the three owners orders asks; its steps are events."""
    request = pb.PlaceOrderRequest(idempotency_key=str(uuid.uuid4()), customer_id="1",
                                   lines=[orders_pb2.OrderLine(sku="SKU-002", quantity=1)])
    spans = await traced_call(system, "PlaceOrder", gateway.PlaceOrder(request, timeout=5), ("gateway", *OWNERS))
    check_parents(spans)
    create = logical(spans, "gateway", "orders/CreateOrder")[0]
    assert create.attributes["resilience.idempotency"] == "idempotent"
    assert "resilience.cache" not in create.attributes
    orders_server = next(s for s in spans if s.is_server and s.service == "pullgate-orders")
    steps = [name for name, _ in orders_server.events if name.startswith("placement: ")]
    assert steps == ["placement: pending", "placement: customer check", "placement: product check",
                     "placement: reservation", "placement: confirm"]
    strong = logical(spans, "orders", "customers/GetCustomer")[0]
    assert strong.attributes["resilience.cache"] == "miss"
    assert strong.attributes["resilience.max_staleness_s"] == 0.0


async def test_a_slow_owner_with_one_replica_is_not_hedged(system: System, gateway: Gateway) -> None:
    """A hedge goes only to a replica the call has not tried: with catalog slowed and one replica of it, the call
    waits for its one attempt, and its span says so."""
    await set_faults(system, "catalog", "catalog.BatchGetProducts=delay:200ms")
    try:
        spans = await traced_call(system, "GetOrderView", gateway.GetOrderView(
            pb.GetOrderViewRequest(order_id="1", read=STRONG), timeout=5), ("gateway",))
    finally:
        await set_faults(system, "catalog", "")
    call = logical(spans, "gateway", "catalog/BatchGetProducts")[0]
    assert call.attributes["resilience.attempts"] == 1
    assert call.attributes["resilience.hedged"] is False
    assert "hedge" not in call.event_names()


async def test_a_forced_hedge_shows_three_attempts_two_cancelled(receiver: Receiver, tmp_path: Path) -> None:
    """With three catalog replicas all slow, the gateway hedges twice (hedging.max_attempts = 3), each attempt to
    another replica: three attempts under the call's span, the two losers cancelled."""
    flags = ("--replicas", "3", "--faults", "catalog.BatchGetProducts=delay:200ms")
    with running(receiver, tmp_path, *flags) as system:
        async with system.channel("gateway", customer="1") as channel:
            spans = await traced_call(system, "GetOrderView", Gateway(channel).GetOrderView(
                pb.GetOrderViewRequest(order_id="1", read=STRONG), timeout=5), ("gateway",))
            call = logical(spans, "gateway", "catalog/BatchGetProducts")[0]
            attempts = system.receiver.wait_for(
                lambda received: len([s for s in received if s.parent_id == call.span_id and s.is_client]) == 3)
    assert call.attributes["resilience.hedged"] is True
    assert call.attributes["resilience.attempts"] == 3
    assert "hedge" in call.event_names()
    loser_event = dict(call.events)["hedge loser cancelled"]
    clients = [s for s in attempts if s.parent_id == call.span_id and s.is_client]
    losers = [attributes["resilience.replica"] for name, attributes in call.events if name == "hedge loser cancelled"]
    assert len({*losers, call.attributes["resilience.replica"]}) == 3  # the winner and two losers: three replicas
    cancelled = [s for s in clients if s.attributes.get("pullgate.cancelled")]
    assert len(cancelled) == 2
    assert all(s.attributes["resilience.hedge_loser"] is True for s in cancelled)
    assert all(s.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0] for s in cancelled)
    assert loser_event["resilience.attempt"] != call.attributes["resilience.winning_attempt"]


async def test_an_open_breaker_shows_the_rejection(system: System, gateway: Gateway) -> None:
    """Once customers fails often enough the gateway's breaker opens; the next call's span shows the rejection."""
    await set_faults(system, "customers", "customers.GetCustomer=error:UNAVAILABLE")
    try:
        def rejected(spans: list[Span]) -> bool:
            calls = logical(spans, "gateway", "customers/GetCustomer")
            return any("breaker rejected" in s.event_names() for s in calls)

        for _ in range(10):
            with pytest.raises(grpc.aio.AioRpcError):
                await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="1", read=STRONG), timeout=5)  # type: ignore[misc]
        spans = system.receiver.wait_for(rejected)
    finally:
        await set_faults(system, "customers", "")
    calls = logical(spans, "gateway", "customers/GetCustomer")
    opened = [s for s in calls if "breaker state change" in s.event_names()]
    assert opened and dict(opened[0].events)["breaker state change"]["resilience.breaker.to"] == "open"
    refused = next(s for s in calls if "breaker rejected" in s.event_names())
    assert refused.attributes["resilience.breaker_state"] == "open"
    assert refused.attributes["resilience.outcome"] == "dropped"
    assert refused.status_code == 2  # ERROR


async def test_a_recovered_placement_is_a_trace_of_its_own(system: System, gateway: Gateway) -> None:
    """An order left PENDING by an unreachable owner is settled by orders' recovery, under a root span of its own."""
    key = str(uuid.uuid4())
    request = pb.PlaceOrderRequest(idempotency_key=key, customer_id="4",
                                   lines=[orders_pb2.OrderLine(sku="SKU-005", quantity=1)])
    await set_faults(system, "customers", "customers.GetCustomer=error:UNAVAILABLE")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with system.channel("gateway", customer="4") as channel:
                await Gateway(channel).PlaceOrder(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await set_faults(system, "customers", "")

    def confirmed(span: Span) -> bool:
        return span.name == "orders.recover" and "placement: confirm" in span.event_names()

    spans = system.receiver.wait_for(lambda received: any(confirmed(s) for s in received), timeout=30)
    recovered = next(s for s in spans if confirmed(s))
    assert recovered.parent_id == ""
    assert recovered.service == "pullgate-orders"
    async with system.channel("gateway", customer="4") as channel:
        order = (await Gateway(channel).PlaceOrder(request, timeout=5)).order
    assert recovered.attributes["pullgate.order_id"] == order.order_id
    assert order.status == orders_pb2.ORDER_STATUS_CONFIRMED
    beneath = [s for s in spans if s.trace_id == recovered.trace_id and s.parent_id == recovered.span_id]
    assert "customers/GetCustomer" in {s.name for s in beneath}
