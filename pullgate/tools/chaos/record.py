"""What a chaos run saw: every call sent and its answer, part by part, and every fault as it happened.

The invariants are checked on these records after the run, never during it, so checking costs the load nothing
and the same records feed the report and the picture. Times are wall-clock seconds (`time.time()`), the clock
the services stamp their own records with, so the two can be compared.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from pullgate.catalog.v1 import catalog_pb2
from pullgate.customers.v1 import customers_pb2
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.inventory.v1 import inventory_pb2
from pullgate.orders.v1 import orders_pb2
from pullgate.tools.chaos.spike import Spike

Value = Hashable
"""An entity's attributes in a comparable form (see `customer_value`, `product_value`, ...)."""


@dataclass(frozen=True, slots=True)
class PartSeen:
    """One part of one answer: its label and, unless missing, the value it carried."""

    name: str
    """As the gateway names it: `customer:1`, `product:SKU-001`, `stock:SKU-001`, `order:7`."""
    source: str
    """LIVE, CACHED, STALE or MISSING."""
    age: float
    reason: str
    value: Value | None


@dataclass(frozen=True, slots=True)
class Call:
    """One request of the load and what came back."""

    op: str
    """order_view, customer_overview or place_order."""
    mode: str
    """strong, bounded or available for reads; fresh or replay for placements."""
    target: str
    """The order id, customer id or idempotency key."""
    sent: float
    latency: float
    deadline: float
    """Seconds the call was given."""
    code: str
    """OK or the status code's name."""
    detail: str = ""
    degraded: bool = False
    parts: tuple[PartSeen, ...] = ()
    order_id: str = ""
    """For placements that returned OK: the order."""

    @property
    def received(self) -> float:
        return self.sent + self.latency

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    @property
    def read(self) -> bool:
        return self.op != "place_order"

    @property
    def failed(self) -> bool:
        """Not an answer: an error other than a refusal that is itself the answer (insufficient stock)."""
        return not self.ok and self.code not in ("FAILED_PRECONDITION", "NOT_FOUND", "ALREADY_EXISTS")


@dataclass
class FaultRun:
    """A fault as it happened: started and ended (a kill ends when the launcher has it back), and to whom."""

    label: str
    kind: str
    target: str
    start: float
    end: float | None = None
    note: str = ""
    pid: int = 0
    service: str = ""
    """The service of the process it hit (for a gray fault: the service one of whose replicas froze)."""


@dataclass
class Record:
    """Everything a run saw, filled while it runs."""

    started: float = 0.0
    """When the load began (wall clock)."""
    calls: list[Call] = field(default_factory=list)
    faults: list[FaultRun] = field(default_factory=list)
    shed: int = 0
    """Calls the load generator did not send because too many were already in flight (open loop, bounded)."""
    kills: dict[str, int] = field(default_factory=dict)
    """Process name -> how many times this run SIGKILLed it."""
    spikes: list[Spike] = field(default_factory=list)
    """What each overload fault's second process sent and got, and the breakers around it."""


def customer_value(customer: customers_pb2.Customer) -> Value:
    return (customer.name, customer.email, customer.create_time.seconds, customer.create_time.nanos)


def product_value(product: catalog_pb2.Product) -> Value:
    return (product.title, product.price_cents, product.currency)


def stock_value(stock: inventory_pb2.Stock) -> Value:
    return (stock.available, stock.reserved)


def order_value(order: orders_pb2.Order) -> Value:
    lines = tuple((line.sku, line.quantity) for line in order.lines)
    return (order.customer_id, orders_pb2.OrderStatus.Name(order.status), lines,
            order.create_time.seconds, order.create_time.nanos // 1000)


def _source(status: pb.PartStatus) -> str:
    return pb.Source.Name(status.source).removeprefix("SOURCE_")


def _seen(status: pb.PartStatus, value: Value | None) -> PartSeen:
    age = status.age.seconds + status.age.nanos / 1e9
    return PartSeen(status.part, _source(status), age, status.reason, value)


def order_view_parts(response: pb.GetOrderViewResponse) -> tuple[PartSeen, ...]:
    """Each part of an order view with the value it carried (None where the view has none)."""
    view = response.view
    values: dict[str, Value] = {f"order:{view.order.order_id}": order_value(view.order)}
    if view.HasField("customer"):
        values[f"customer:{view.customer.customer_id}"] = customer_value(view.customer)
    for line in view.lines:
        if line.HasField("product"):
            values[f"product:{line.sku}"] = product_value(line.product)
        if line.HasField("stock"):
            values[f"stock:{line.sku}"] = stock_value(line.stock)
    return tuple(_seen(s, values.get(s.part)) for s in response.parts)


def overview_parts(response: pb.GetCustomerOverviewResponse) -> tuple[PartSeen, ...]:
    """Each part of a customer overview; the `orders:` part becomes one `order:` part per listed order."""
    overview = response.overview
    values: dict[str, Value] = {}
    if overview.HasField("customer"):
        values[f"customer:{overview.customer.customer_id}"] = customer_value(overview.customer)
    for view in overview.orders:
        for line in view.lines:
            if line.HasField("product"):
                values[f"product:{line.sku}"] = product_value(line.product)
    parts: list[PartSeen] = []
    for status in response.parts:
        if status.part.startswith("orders:"):
            parts.append(_seen(status, None if status.source == pb.SOURCE_MISSING else ()))
            parts.extend(_seen(pb.PartStatus(part=f"order:{view.order.order_id}", source=status.source,
                                             age=status.age, reason=status.reason), order_value(view.order))
                         for view in overview.orders)
        else:
            parts.append(_seen(status, values.get(status.part)))
    return tuple(parts)


def entity(part: str) -> tuple[str, str]:
    """`stock:SKU-001` -> ("stock", "SKU-001")."""
    kind, _, key = part.partition(":")
    return kind, key


def reads(calls: Iterable[Call]) -> list[Call]:
    return [c for c in calls if c.read]


__all__ = ["Call", "FaultRun", "PartSeen", "Record", "Value", "customer_value", "entity", "order_value",
           "order_view_parts", "overview_parts", "product_value", "reads", "stock_value"]
