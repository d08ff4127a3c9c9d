"""The demo data set for all four services, defined once so that the ids agree across their databases.

Each service seeds its own part into its own database on first start: customers the people, catalog the
products, inventory the stock and one reservation per CONFIRMED order (reservation_id = order_id), orders
the orders. Everything is a pure function of this module, so two fresh starts hold the same data, and for
every sku `initial stock == available + reserved` holds from the start.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from pullgate.orders.v1 import orders_pb2

EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
"""The seed's clock: customers join and orders are placed at fixed offsets from here."""


@dataclass(frozen=True)
class Customer:
    customer_id: str
    name: str
    email: str
    create_time: datetime.datetime


@dataclass(frozen=True)
class Product:
    sku: str
    title: str
    price_cents: int
    currency: str


@dataclass(frozen=True)
class Stock:
    """A sku's stock before any order: what is on the shelf in total."""

    sku: str
    initial: int


@dataclass(frozen=True)
class Order:
    order_id: str
    customer_id: str
    status: orders_pb2.OrderStatus.ValueType
    lines: tuple[tuple[str, int], ...]
    create_time: datetime.datetime

    @property
    def idempotency_key(self) -> str:
        return f"demo-order-{self.order_id}"


_FIRST = ["Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Donald", "Margaret", "Ken", "Radia",
          "Tony", "Leslie", "Niklaus", "Sophie", "John", "Shafi", "Dennis", "Adele", "Butler", "Karen"]
_LAST = ["Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Knuth", "Hamilton", "Thompson",
         "Perlman", "Hoare", "Lamport", "Wirth", "Wilson", "Backus", "Goldwasser", "Ritchie", "Goldberg",
         "Lampson", "Sparck Jones"]

CUSTOMERS: tuple[Customer, ...] = tuple(
    Customer(
        customer_id=str(i + 1),
        name=f"{first} {last}",
        email=f"{first.lower()}.{last.lower().replace(' ', '-')}@example.com",
        create_time=EPOCH + datetime.timedelta(days=i),
    )
    for i, (first, last) in enumerate(zip(_FIRST, _LAST, strict=True))
)

_TITLES = ["Espresso beans 1 kg", "Pour-over kettle", "Burr grinder", "Ceramic dripper", "Paper filters (100)",
           "Milk frother", "Travel mug", "Digital scale", "Tamper 58 mm", "Knock box",
           "Cold brew jar", "Moka pot", "French press", "Cupping spoon", "Barista towel",
           "Green tea 250 g", "Teapot 1 l", "Tea strainer", "Matcha whisk", "Matcha 30 g",
           "Oat milk 1 l", "Sugar cubes", "Cocoa powder", "Chai spice", "Honey jar",
           "Espresso cups (2)", "Latte glasses (2)", "Descaler", "Water filter", "Gift card"]

PRODUCTS: tuple[Product, ...] = tuple(
    Product(sku=f"SKU-{i + 1:03d}", title=title, price_cents=299 + (i * 1733) % 9700, currency="EUR")
    for i, title in enumerate(_TITLES)
)

STOCK: tuple[Stock, ...] = tuple(
    # A spread of 20 to 100 units; SKU-030 (the gift card) starts at 0 so "out of stock" can be shown.
    Stock(sku=product.sku, initial=0 if product.sku == "SKU-030" else 20 + (i * 37) % 81)
    for i, product in enumerate(PRODUCTS)
)

_CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
_CANCELLED = orders_pb2.ORDER_STATUS_CANCELLED


def _order(order_id: int, customer_id: int, status: orders_pb2.OrderStatus.ValueType, *skus: int) -> Order:
    lines = tuple((f"SKU-{sku:03d}", 1 + (order_id + sku) % 3) for sku in skus)
    return Order(str(order_id), str(customer_id), status, lines, EPOCH + datetime.timedelta(days=30, hours=order_id))


ORDERS: tuple[Order, ...] = (
    _order(1, 1, _CONFIRMED, 1, 2, 3),
    _order(2, 2, _CONFIRMED, 4, 5),
    _order(3, 1, _CONFIRMED, 6),
    _order(4, 3, _CANCELLED, 7, 8),
    _order(5, 4, _CONFIRMED, 1, 9, 10, 11),
    _order(6, 1, _CONFIRMED, 12, 13),
    _order(7, 5, _CONFIRMED, 14),
    _order(8, 2, _CANCELLED, 15, 16),
    _order(9, 6, _CONFIRMED, 17, 18, 19),
    _order(10, 1, _CONFIRMED, 20),
    _order(11, 7, _CONFIRMED, 21, 22),
    _order(12, 8, _CONFIRMED, 23, 24, 25),
    _order(13, 1, _CANCELLED, 26),
    _order(14, 9, _CONFIRMED, 27, 28),
    _order(15, 10, _CONFIRMED, 29, 2),
)
"""Customer "1" has five orders (paging); order "1" is theirs, CONFIRMED, with three lines."""


def reserved(sku: str) -> int:
    """Units of `sku` held by the reservations of the CONFIRMED demo orders."""
    return sum(qty for order in ORDERS if order.status == _CONFIRMED for s, qty in order.lines if s == sku)
