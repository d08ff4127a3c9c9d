"""Gateway responses as text for a person at a terminal, with every part's provenance in view."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.orders.v1 import orders_pb2


def _money(cents: int, currency: str) -> str:
    return f"{currency} {cents / 100:,.2f}"


def _status(order: orders_pb2.Order) -> str:
    return orders_pb2.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_")


def _when(order: orders_pb2.Order) -> str:
    return order.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC") if order.HasField("create_time") else "-"


def _label(part: pb.PartStatus) -> str:
    label = pb.Source.Name(part.source).removeprefix("SOURCE_").lower()
    if part.source in (pb.SOURCE_CACHED, pb.SOURCE_STALE):
        label += f" {part.age.ToTimedelta().total_seconds():.1f}s"
    return label


def _marks(parts: Sequence[pb.PartStatus]) -> dict[str, str]:
    """A short marker for each part that is not live, e.g. `  [stale 12.3s]`; reasons go in `_summary`."""
    return {part.part: f"  [{_label(part)}]" for part in parts if part.source != pb.SOURCE_LIVE}


def _summary(parts: Sequence[pb.PartStatus], degraded: bool) -> str:
    """A tally of the sources, then each distinct reason once, with the parts it explains."""
    counts: dict[str, int] = {}
    reasons: dict[str, list[str]] = {}
    for part in parts:
        name = pb.Source.Name(part.source).removeprefix("SOURCE_").lower()
        counts[name] = counts.get(name, 0) + 1
        if part.reason:
            reasons.setdefault(f"{name}: {part.reason}", []).append(part.part)
    tally = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    out = [f"parts: {tally}" + ("  (DEGRADED)" if degraded else "")]
    out += [f"  {why}  ({', '.join(names)})" for why, names in reasons.items()]
    return "\n".join(out)


def _lines(lines: Iterable[pb.LineView], marks: dict[str, str], with_stock: bool) -> list[str]:
    header = f"    {'sku':<10} {'qty':>4}  {'product':<28} {'price':>12}"
    out = [header + ("  available/reserved" if with_stock else "")]
    for line in lines:
        title = line.product.title if line.HasField("product") else "?"
        price = _money(line.product.price_cents, line.product.currency) if line.HasField("product") else "?"
        row = f"    {line.sku:<10} {line.quantity:>4}  {title:<28.28} {price:>12}"
        if with_stock:
            stock = f"{line.stock.available}/{line.stock.reserved}" if line.HasField("stock") else "?"
            row += f"  {stock:>18}"
        row += marks.get(f"product:{line.sku}", "") or (marks.get(f"stock:{line.sku}", "") if with_stock else "")
        out.append(row)
    return out


def _missing_root(parts: Sequence[pb.PartStatus], kind: str, summary: str) -> str | None:
    """An available read may answer without its root (the order, the customer): say so plainly."""
    root = next((p for p in parts if p.part.startswith(f"{kind}:")), None)
    if root is None or root.source != pb.SOURCE_MISSING:
        return None
    return f"{kind} {root.part.partition(':')[2]}: missing\n{summary}"


def order_view(response: pb.GetOrderViewResponse) -> str:
    view, marks = response.view, _marks(response.parts)
    if not view.HasField("order"):
        missing = _missing_root(response.parts, "order", _summary(response.parts, response.degraded))
        if missing is not None:
            return missing
    order = view.order
    customer = (f"{view.customer.name} <{view.customer.email}>" if view.HasField("customer") else "?")
    return "\n".join([
        f"order {order.order_id}  {_status(order)}  {_when(order)}" + marks.get(f"order:{order.order_id}", ""),
        f"  customer {order.customer_id}: {customer}" + marks.get(f"customer:{order.customer_id}", ""),
        *_lines(view.lines, marks, with_stock=True),
        _summary(response.parts, response.degraded),
    ])


def customer_overview(response: pb.GetCustomerOverviewResponse) -> str:
    overview, marks = response.overview, _marks(response.parts)
    if not overview.HasField("customer"):
        missing = _missing_root(response.parts, "customer", _summary(response.parts, response.degraded))
        if missing is not None:
            return missing
    customer = overview.customer
    out = [f"customer {customer.customer_id}: {customer.name} <{customer.email}>"
           + marks.get(f"customer:{customer.customer_id}", "")]
    out.append(f"  {len(overview.orders)} recent orders" + marks.get(f"orders:{customer.customer_id}", ""))
    for view in overview.orders:
        total = sum(line.product.price_cents * line.quantity for line in view.lines if line.HasField("product"))
        currency = next((line.product.currency for line in view.lines if line.HasField("product")), "")
        out.append(f"  order {view.order.order_id}  {_status(view.order)}  {_when(view.order)}  "
                   f"total {_money(total, currency)}")
        out.extend("  " + row for row in _lines(view.lines, marks, with_stock=False))
    out.append(_summary(response.parts, response.degraded))
    return "\n".join(out)


def placed_order(response: pb.PlaceOrderResponse, key: str) -> str:
    order = response.order
    lines = ", ".join(f"{line.sku} x{line.quantity}" for line in order.lines)
    return (f"order {order.order_id}  {_status(order)}  for customer {order.customer_id}: {lines}\n"
            f"  idempotency key {key} (repeat it to retry safely)")
