"""The CLI's text output shows every part that is not live, with its age and reason."""

from __future__ import annotations

from pullgate.catalog.v1 import catalog_pb2
from pullgate.customers.v1 import customers_pb2
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.orders.v1 import orders_pb2
from pullgate.tools import render


def _part(name: str, source: int, age: float = 0.0, reason: str = "") -> pb.PartStatus:
    part = pb.PartStatus(part=name, source=source, reason=reason)  # type: ignore[arg-type]
    part.age.FromNanoseconds(int(age * 1e9))
    return part


def test_order_view_marks_stale_and_missing_parts_and_gives_each_reason_once() -> None:
    """Stale and missing parts carry a marker; each distinct reason is listed once with its parts."""
    lines = [orders_pb2.OrderLine(sku="A", quantity=1), orders_pb2.OrderLine(sku="B", quantity=2)]
    order = orders_pb2.Order(order_id="7", customer_id="1", status=orders_pb2.ORDER_STATUS_CONFIRMED, lines=lines)
    view = pb.OrderView(order=order, customer=customers_pb2.Customer(customer_id="1", name="Ada", email="a@x"),
                        lines=[pb.LineView(sku="A", quantity=1, product=catalog_pb2.Product(sku="A", title="Tea")),
                               pb.LineView(sku="B", quantity=2)])
    response = pb.GetOrderViewResponse(view=view, degraded=True, parts=[
        _part("order:7", pb.SOURCE_LIVE),
        _part("customer:1", pb.SOURCE_STALE, 12.34, "customers: circuit open"),
        _part("product:A", pb.SOURCE_CACHED, 0.5),
        _part("product:B", pb.SOURCE_MISSING, reason="catalog: deadline exceeded"),
        _part("stock:A", pb.SOURCE_MISSING, reason="catalog: deadline exceeded"),
    ])
    text = render.order_view(response)
    assert "Ada <a@x>  [stale 12.3s]" in text
    assert "[cached 0.5s]" in text
    assert "[missing]" in text
    assert "parts: 1 cached, 1 live, 2 missing, 1 stale  (DEGRADED)" in text
    assert text.count("catalog: deadline exceeded") == 1
    assert "missing: catalog: deadline exceeded  (product:B, stock:A)" in text
    assert "stale: customers: circuit open  (customer:1)" in text


def test_a_live_view_says_so_and_nothing_more() -> None:
    """An all-live view has no markers and no reasons."""
    response = pb.GetOrderViewResponse(view=pb.OrderView(order=orders_pb2.Order(order_id="1")),
                                       parts=[_part("order:1", pb.SOURCE_LIVE)])
    text = render.order_view(response)
    assert "[" not in text
    assert text.endswith("parts: 1 live")


def test_an_available_view_without_its_order_says_the_order_is_missing() -> None:
    """When the order itself could not be had, the output names it as missing, with the reason."""
    response = pb.GetOrderViewResponse(degraded=True, parts=[
        _part("order:42", pb.SOURCE_MISSING, reason="orders: circuit open"),
    ])
    assert render.order_view(response).splitlines() == [
        "order 42: missing", "parts: 1 missing  (DEGRADED)", "  missing: orders: circuit open  (order:42)"]


def test_an_overview_without_its_customer_says_the_customer_is_missing() -> None:
    """When the customer could not be had, the overview names it as missing."""
    response = pb.GetCustomerOverviewResponse(degraded=True, parts=[
        _part("customer:7", pb.SOURCE_MISSING, reason="customers: deadline exceeded"),
    ])
    assert render.customer_overview(response).startswith("customer 7: missing\n")
