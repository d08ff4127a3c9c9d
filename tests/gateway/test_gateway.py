"""The gateway against the four real owners, each a grpc.aio server on a free port over its own database."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

import gateway
from pullgate import topology
from pullgate.customers.v1 import customers_pb2
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from pullgate.serving import ServeOptions, running
from resilience import Downstream, Method
from tests.support import rpc_error, services_running

if TYPE_CHECKING:
    from pullgate.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub as GatewayStub


@contextlib.asynccontextmanager
async def system(data_dir: Path) -> AsyncIterator[GatewayStub]:
    async with contextlib.AsyncExitStack() as stack:
        upstreams = await stack.enter_async_context(services_running(data_dir, topology.service("gateway").upstreams))
        bindings = await stack.enter_async_context(gateway.app(ServeOptions(name="gateway", upstreams=upstreams)))
        _, port, _ = await stack.enter_async_context(running(bindings))
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        yield gateway_pb2_grpc.GatewayServiceStub(channel)


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[GatewayStub]:
    async with system(tmp_path) as stub:
        yield stub


async def test_order_view_joins_every_part_live(stub: GatewayStub) -> None:
    """Order 1 comes with its customer and each line's product and stock, every part labelled live."""
    response = await stub.GetOrderView(pb.GetOrderViewRequest(order_id="1"), timeout=10)
    view = response.view
    assert view.order.order_id == "1" and view.customer.customer_id == view.order.customer_id
    assert view.customer.name
    assert all(line.product.sku == line.sku and line.stock.sku == line.sku for line in view.lines)
    names = {part.part for part in response.parts}
    assert {"order:1", f"customer:{view.order.customer_id}"} <= names
    assert {f"product:{line.sku}" for line in view.lines} <= names
    assert {f"stock:{line.sku}" for line in view.lines} <= names
    assert all(part.source == pb.SOURCE_LIVE for part in response.parts)
    assert not response.degraded


async def test_owner_calls_do_not_grow_with_order_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-line order and a many-line order cost the same four owner calls."""
    counted: list[str] = []
    call = Downstream.call

    async def counting(self: Downstream, method: Method[Any, Any], request: Any, **kwargs: Any) -> Any:
        counted.append(method.path)
        return await call(self, method, request, **kwargs)

    monkeypatch.setattr(Downstream, "call", counting)
    async with system(tmp_path) as stub:
        placed = []
        for skus in (["SKU-001"], [f"SKU-{i:03d}" for i in range(1, 9)]):
            lines = [orders_pb2.OrderLine(sku=sku, quantity=1) for sku in skus]
            request = pb.PlaceOrderRequest(idempotency_key=f"k-{len(skus)}", customer_id="2", lines=lines)
            placed.append((await stub.PlaceOrder(request, timeout=10)).order.order_id)
        costs = []
        for order_id in placed:
            counted.clear()
            await stub.GetOrderView(pb.GetOrderViewRequest(order_id=order_id), timeout=10)
            costs.append(sorted(counted))
    assert costs[0] == costs[1]
    assert len(costs[0]) == 4


async def test_customer_overview_lists_recent_orders_with_products(stub: GatewayStub) -> None:
    """The overview carries the customer and their orders, newest first, each line with its product."""
    response = await stub.GetCustomerOverview(pb.GetCustomerOverviewRequest(customer_id="1", page_size=3), timeout=10)
    overview = response.overview
    assert overview.customer.customer_id == "1"
    assert 0 < len(overview.orders) <= 3
    assert all(o.order.customer_id == "1" for o in overview.orders)
    times = [o.order.create_time.ToNanoseconds() for o in overview.orders]
    assert times == sorted(times, reverse=True)
    assert all(line.product.title for o in overview.orders for line in o.lines)
    assert not response.degraded


async def test_place_order_is_forwarded_and_replays(stub: GatewayStub) -> None:
    """PlaceOrder creates a confirmed order once; the same key returns the same order."""
    request = pb.PlaceOrderRequest(idempotency_key="gw-1", customer_id="3",
                                   lines=[orders_pb2.OrderLine(sku="SKU-002", quantity=1)])
    first = (await stub.PlaceOrder(request, timeout=10)).order
    again = (await stub.PlaceOrder(request, timeout=10)).order
    assert first.status == orders_pb2.ORDER_STATUS_CONFIRMED
    assert again.order_id == first.order_id


@pytest.mark.parametrize(
    ("request_", "code", "needle"),
    [
        (pb.GetOrderViewRequest(order_id=""), grpc.StatusCode.INVALID_ARGUMENT, "order_id: must not be empty"),
        (pb.GetOrderViewRequest(order_id="x" * 129), grpc.StatusCode.INVALID_ARGUMENT, "order_id"),
        (pb.GetOrderViewRequest(order_id="424242"), grpc.StatusCode.NOT_FOUND, "424242"),
        (pb.GetCustomerOverviewRequest(customer_id=""), grpc.StatusCode.INVALID_ARGUMENT, "customer_id"),
        (pb.GetCustomerOverviewRequest(customer_id="1", page_size=101), grpc.StatusCode.INVALID_ARGUMENT,
         "page_size: must be between 0 and 100"),
        (pb.GetCustomerOverviewRequest(customer_id="424242"), grpc.StatusCode.NOT_FOUND, "424242"),
        (pb.PlaceOrderRequest(idempotency_key="", customer_id="1",
                              lines=[orders_pb2.OrderLine(sku="SKU-001", quantity=1)]),
         grpc.StatusCode.INVALID_ARGUMENT, "idempotency_key"),
        (pb.PlaceOrderRequest(idempotency_key="k", customer_id="1",
                              lines=[orders_pb2.OrderLine(sku="SKU-001", quantity=0)]),
         grpc.StatusCode.INVALID_ARGUMENT, "lines[0].quantity"),
    ],
)
async def test_bad_requests_get_a_code_naming_what_is_wrong(
    stub: GatewayStub, request_: Any, code: grpc.StatusCode, needle: str
) -> None:
    """Malformed requests are INVALID_ARGUMENT naming the field; unknown entities are NOT_FOUND naming them."""
    method: Any = {pb.GetOrderViewRequest: stub.GetOrderView, pb.GetCustomerOverviewRequest: stub.GetCustomerOverview,
              pb.PlaceOrderRequest: stub.PlaceOrder}[type(request_)]
    got, details = await rpc_error(method(request_, timeout=10))
    assert got == code
    assert needle in details


async def test_the_callers_deadline_bounds_the_owner_calls(stub: GatewayStub) -> None:
    """A deadline that has no room for the owner calls fails as DEADLINE_EXCEEDED, not later."""
    got, _ = await rpc_error(stub.GetOrderView(pb.GetOrderViewRequest(order_id="1"), timeout=0.0005))
    assert got == grpc.StatusCode.DEADLINE_EXCEEDED


def test_customer_message_is_what_the_view_embeds() -> None:
    """The view embeds the owners' own messages, so a client sees exactly what each owner said."""
    assert pb.OrderView.DESCRIPTOR.fields_by_name["customer"].message_type is customers_pb2.Customer.DESCRIPTOR
