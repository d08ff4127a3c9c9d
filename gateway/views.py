"""The two read views: each pulls its parts from their owners, concurrently, with a fixed number of calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from gateway.parts import Provenance, each, fetch
from gateway.reads import ReadMode
from pullgate import methods
from pullgate.catalog.v1 import catalog_pb2
from pullgate.customers.v1 import customers_pb2
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.inventory.v1 import inventory_pb2
from pullgate.methods import Upstreams
from pullgate.orders.v1 import orders_pb2
from resilience import deadline


async def _all(*calls: Awaitable[Any]) -> list[Any]:
    """Run the calls concurrently; on the first error cancel the rest and raise it (unlike gather)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()


@contextlib.contextmanager
def _leave_time_to_answer(margin: float) -> Iterator[None]:
    """Stop waiting for owners `margin` seconds before the caller's deadline, so the gateway still answers in
    time: with the late parts stale or missing, or (strong, or a required part) with an error naming the owner,
    instead of the caller's own DEADLINE_EXCEEDED that says nothing."""
    current = deadline.current()
    if current is None:
        yield
        return
    with deadline.scope(deadline.Deadline(current.at - margin)):
        yield


def _unique(skus: list[str]) -> list[str]:
    return list(dict.fromkeys(skus))


async def order_view(
    owners: Upstreams, order_id: str, mode: ReadMode, margin: float,
    visible: Callable[[str], bool] = lambda _customer_id: True,
) -> tuple[pb.OrderView, Provenance]:
    """An order with its customer, and each line with its product and stock: four owner calls in two rounds.

    Without its order (only an available read gets this far without one) the view is empty and says so. An order
    of a customer that is not `visible` to the caller stops the view there: it holds the order alone, for the
    caller to refuse, and nothing more is fetched for it."""
    provenance = Provenance()
    with _leave_time_to_answer(margin):
        order_part = await fetch(owners["orders"], methods.GET_ORDER, orders_pb2.GetOrderRequest(order_id=order_id),
                                 mode, f"order:{order_id}", required=True)
        provenance.add("order", order_id, order_part)
        if order_part.value is None:
            return pb.OrderView(), provenance
        order = order_part.value.order
        if not visible(order.customer_id):
            return pb.OrderView(order=order), provenance
        skus = _unique([line.sku for line in order.lines])
        customer, products, stock = await _all(
            fetch(owners["customers"], methods.GET_CUSTOMER,
                  customers_pb2.GetCustomerRequest(customer_id=order.customer_id), mode,
                  f"customer:{order.customer_id}"),
            fetch(owners["catalog"], methods.BATCH_GET_PRODUCTS, catalog_pb2.BatchGetProductsRequest(skus=skus), mode,
                  f"products {', '.join(skus)}"),
            fetch(owners["inventory"], methods.BATCH_GET_STOCK, inventory_pb2.BatchGetStockRequest(skus=skus), mode,
                  f"stock of {', '.join(skus)}"),
        )
    provenance.add("customer", order.customer_id, customer)
    by_sku_product = {p.sku: p for p in products.value.products} if products.value else {}
    by_sku_stock = {s.sku: s for s in stock.value.stocks} if stock.value else {}
    for sku in skus:
        provenance.add("product", sku, each(products, by_sku_product, sku))
        provenance.add("stock", sku, each(stock, by_sku_stock, sku))
    view = pb.OrderView(order=order)
    if customer.value is not None:
        view.customer.CopyFrom(customer.value.customer)
    for line in order.lines:
        view.lines.append(pb.LineView(sku=line.sku, quantity=line.quantity,
                                      product=by_sku_product.get(line.sku), stock=by_sku_stock.get(line.sku)))
    return view, provenance


async def customer_overview(
    owners: Upstreams, customer_id: str, page_size: int, mode: ReadMode, margin: float
) -> tuple[pb.CustomerOverview, Provenance]:
    """A customer with their recent orders, each line with its product: three owner calls in two rounds."""
    provenance = Provenance()
    with _leave_time_to_answer(margin):
        customer, listed = await _all(
            fetch(owners["customers"], methods.GET_CUSTOMER,
                  customers_pb2.GetCustomerRequest(customer_id=customer_id), mode, f"customer:{customer_id}",
                  required=True),
            fetch(owners["orders"], methods.LIST_ORDERS,
                  orders_pb2.ListOrdersRequest(customer_id=customer_id, page_size=page_size), mode,
                  f"orders:{customer_id}"),
        )
        provenance.add("customer", customer_id, customer)
        provenance.add("orders", customer_id, listed)
        orders = list(listed.value.orders) if listed.value is not None else []
        skus = _unique([line.sku for order in orders for line in order.lines])
        by_sku: dict[str, catalog_pb2.Product] = {}
        if skus:
            products = await fetch(owners["catalog"], methods.BATCH_GET_PRODUCTS,
                                   catalog_pb2.BatchGetProductsRequest(skus=skus), mode, f"products {', '.join(skus)}")
            by_sku = {p.sku: p for p in products.value.products} if products.value else {}
            for sku in skus:
                provenance.add("product", sku, each(products, by_sku, sku))
    overview = pb.CustomerOverview()
    if customer.value is not None:
        overview.customer.CopyFrom(customer.value.customer)
    for order in orders:
        overview.orders.append(pb.OrderView(
            order=order,
            lines=[pb.LineView(sku=line.sku, quantity=line.quantity, product=by_sku.get(line.sku))
                   for line in order.lines],
        ))
    return overview, provenance
