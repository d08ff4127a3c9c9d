"""Reading the owners directly, never through the gateway: samples of their RPCs during a run, and their own
records (the orders and inventory databases, opened read-only) after it, to build each entity's history.

Why both: customers and products never change under the load, so a sample a second shows what they held.
Stock and orders change with every placement, faster than any sampling sees; but their owners stamp every
change (an order's create and update time; each reservation's time and the stock figures right after it, each
release's time), so their history is exact from their own records.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from pullgate import topology
from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.customers.v1 import customers_pb2, customers_pb2_grpc
from pullgate.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from pullgate.security.access import Access
from pullgate.tools.chaos.history import History, Sample
from pullgate.tools.chaos.record import Value, customer_value, product_value, stock_value
from services import demo

if TYPE_CHECKING:
    from pullgate.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub
    from pullgate.customers.v1.customers_pb2_grpc import CustomerServiceAsyncStub
    from pullgate.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub

CUSTOMER_IDS = tuple(c.customer_id for c in demo.CUSTOMERS)
SKUS = tuple(p.sku for p in demo.PRODUCTS)


@dataclass(frozen=True)
class OrderRecord:
    """One row of the orders database."""

    order_id: str
    key: str
    customer_id: str
    status: str
    lines: tuple[tuple[str, int], ...]
    created: float
    updated: float
    create_micros: tuple[int, int]
    """The create time as (seconds, microseconds), as the Order message carries it."""


@dataclass(frozen=True)
class Reservation:
    """One reservation in the inventory database, with the stock of each sku right after it was made."""

    reservation_id: str
    created: float
    released: float | None
    lines: tuple[tuple[str, int, int, int], ...]
    """(sku, quantity, available_after, reserved_after)."""


def _stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC).timestamp()


def _connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def read_orders(data_dir: Path) -> list[OrderRecord]:
    """Every order in `<data_dir>/orders.db`, oldest first."""
    with contextlib.closing(_connect(topology.database_path("orders", data_dir))) as conn:
        lines: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for row in conn.execute("SELECT order_id, sku, quantity FROM order_lines ORDER BY order_id, line_no"):
            lines[row["order_id"]].append((row["sku"], row["quantity"]))
        records = []
        for row in conn.execute("SELECT order_id, idempotency_key, customer_id, status, create_time, update_time "
                                "FROM orders ORDER BY seq"):
            created = datetime.datetime.strptime(row["create_time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.UTC)
            records.append(OrderRecord(
                row["order_id"], row["idempotency_key"], row["customer_id"],
                orders_pb2.OrderStatus.Name(row["status"]), tuple(lines[row["order_id"]]),
                created.timestamp(), _stamp(row["update_time"]),
                (int(created.timestamp()), created.microsecond),
            ))
        return records


def read_reservations(data_dir: Path) -> list[Reservation]:
    """Every reservation in `<data_dir>/inventory.db` with its lines."""
    with contextlib.closing(_connect(topology.database_path("inventory", data_dir))) as conn:
        lines: dict[str, list[tuple[str, int, int, int]]] = defaultdict(list)
        for row in conn.execute("SELECT reservation_id, sku, quantity, available_after, reserved_after "
                                "FROM reservation_lines"):
            lines[row["reservation_id"]].append(
                (row["sku"], row["quantity"], row["available_after"], row["reserved_after"]))
        return [
            Reservation(row["reservation_id"], _stamp(row["create_time"]),
                        _stamp(row["release_time"]) if row["release_time"] else None,
                        tuple(lines[row["reservation_id"]]))
            for row in conn.execute("SELECT reservation_id, create_time, release_time FROM reservations")
        ]


def order_spans(history: History, orders: Sequence[OrderRecord]) -> None:
    """An order was PENDING from its creation until its update, then in its final status for good."""
    for order in orders:
        def value(status: str, order: OrderRecord = order) -> Value:
            return (order.customer_id, status, order.lines, *order.create_micros)

        key = ("order", order.order_id)
        if order.status == "ORDER_STATUS_PENDING":
            history.add(key, order.created, math.inf, value(order.status))
        else:
            history.add(key, order.created, order.updated, value("ORDER_STATUS_PENDING"))
            history.add(key, order.updated, math.inf, value(order.status))


def stock_spans(history: History, reservations: Sequence[Reservation]) -> None:
    """Each sku's stock figures, walked through its reservations and releases in time order.

    A reservation gives the figures right before it (after minus the quantity) and right after it, exactly,
    whatever happened in between; a release moves the last figures back by its quantity.
    """
    events: dict[str, list[tuple[float, int, int, tuple[int, int] | None]]] = defaultdict(list)
    for r in reservations:
        for sku, quantity, available, reserved in r.lines:
            events[sku].append((r.created, 0, quantity, (available, reserved)))
            if r.released is not None:
                events[sku].append((r.released, 1, quantity, None))
    for sku, sku_events in events.items():
        key = ("stock", sku)
        sku_events.sort(key=lambda e: (e[0], e[1]))
        current: tuple[int, int] | None = None
        previous = -math.inf
        points: list[tuple[float, tuple[int, int]]] = []
        for at, _, quantity, after in sku_events:
            if after is not None:
                history.add(key, previous, at, (after[0] + quantity, after[1] - quantity))
                current = after
            elif current is not None:
                current = (current[0] + quantity, current[1] - quantity)
            if current is not None:
                points.append((at, current))
            previous = at
        for i, (at, figures) in enumerate(points):
            history.add(key, at, points[i + 1][0] if i + 1 < len(points) else math.inf, figures)


def stretch_over(history: History, kind: str, frozen: Sequence[tuple[float, float]]) -> None:
    """A change stamped just before its owner froze is seen only once it thaws: a span of `kind` that ends
    inside a freeze lasts until the freeze ends."""
    for key, spans in history.spans.items():
        if key[0] != kind:
            continue
        for i, span in enumerate(spans):
            for start, end in frozen:
                if start <= span.end <= end:
                    spans[i] = type(span)(span.start, end, span.value)


class Sampler:
    """Reads customers, products and stock from their owners at a steady pace while the load runs, at the addresses
    given and reached through `access` (as the operator, whom the owners' policy lets read)."""

    def __init__(self, customers: str, catalog: str, inventory: str, *, access: Access, every: float = 1.0,
                 stock_every: float = 0.25) -> None:
        self._customers, self._catalog, self._inventory = customers, catalog, inventory
        self._access = access
        self._every = every
        self._stock_every = stock_every
        self.samples: dict[tuple[str, str], list[Sample]] = defaultdict(list)
        self.failures = 0
        self.first = asyncio.Event()
        """Set once some owner has answered, so the load can start after the histories do."""

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until `stop` is set; then once more, so every history ends after the run."""
        customers = self._access.channel("customers", self._customers)
        catalog = self._access.channel("catalog", self._catalog)
        inventory = self._access.channel("inventory", self._inventory)
        try:
            stubs = (customers_pb2_grpc.CustomerServiceStub(customers), catalog_pb2_grpc.CatalogServiceStub(catalog),
                     inventory_pb2_grpc.InventoryServiceStub(inventory))
            await asyncio.gather(self._loop(stop, self._every, self._static, *stubs[:2]),
                                 self._loop(stop, self._stock_every, self._stock, stubs[2]))
        finally:
            for channel in (customers, catalog, inventory):
                await channel.close(None)

    async def _loop(self, stop: asyncio.Event, every: float, once: object, *stubs: object) -> None:
        while True:
            stopping = stop.is_set()
            await once(*stubs)  # type: ignore[operator]
            if stopping:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    async def _static(self, customers: CustomerServiceAsyncStub,
                      catalog: CatalogServiceAsyncStub) -> None:
        sent = time.time()
        try:
            found = await customers.BatchGetCustomers(
                customers_pb2.BatchGetCustomersRequest(customer_ids=CUSTOMER_IDS), timeout=0.5)
            self._keep("customer", sent, {c.customer_id: customer_value(c) for c in found.customers})
        except grpc.aio.AioRpcError:
            self.failures += 1
        sent = time.time()
        try:
            products = await catalog.BatchGetProducts(catalog_pb2.BatchGetProductsRequest(skus=SKUS), timeout=0.5)
            self._keep("product", sent, {p.sku: product_value(p) for p in products.products})
        except grpc.aio.AioRpcError:
            self.failures += 1

    async def _stock(self, inventory: InventoryServiceAsyncStub) -> None:
        sent = time.time()
        try:
            found = await inventory.BatchGetStock(inventory_pb2.BatchGetStockRequest(skus=SKUS), timeout=0.5)
            self._keep("stock", sent, {s.sku: stock_value(s) for s in found.stocks})
        except grpc.aio.AioRpcError:
            self.failures += 1

    def _keep(self, kind: str, sent: float, values: dict[str, Value]) -> None:
        received = time.time()
        self.first.set()
        for key, value in values.items():
            self.samples[(kind, key)].append(Sample(sent, received, value))


def build(sampler: Sampler, orders: Sequence[OrderRecord], reservations: Sequence[Reservation],
          frozen: dict[str, list[tuple[float, float]]]) -> History:
    """Every entity's history from the samples and the owners' records; `frozen`: owner -> its freezes."""
    history = History()
    for key, samples in sampler.samples.items():
        history.add_samples(key, samples, static=key[0] in ("customer", "product"))
    order_spans(history, orders)
    stock_spans(history, reservations)
    stretch_over(history, "order", frozen.get("orders", []))
    stretch_over(history, "stock", frozen.get("inventory", []))
    return history


__all__ = ["CUSTOMER_IDS", "SKUS", "OrderRecord", "Reservation", "Sampler", "build",
           "order_spans", "read_orders", "read_reservations", "stock_spans", "stretch_over"]
