"""What order placement promises, checked against the databases themselves, so a claim becomes a test.

After any crash and restart, once orders has settled what it was doing:
- every CONFIRMED order has exactly its reservation (reservation_id = order_id, the same lines), committed;
- no CANCELLED order holds a reservation;
- for every sku, stock adds up: initial = available + reserved, and reserved = the lines of the live (held or
  committed, not released) reservations;
- no committed reservation belongs to no order.
PENDING orders and HELD reservations are in-between states, not violations: they are listed, and `settled` says
whether there are none. Only orders and inventory are read, read-only (SQLite files or PostgreSQL databases);
usable on a running system (orders is read before inventory, so an order that settles between the two reads
cannot raise a false alarm), or as `python -m services.invariants DATA_DIR` (which reads the PostgreSQL databases
a `pullgate up --postgres` over DATA_DIR recorded, and the SQLite files there otherwise).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pullgate import topology
from pullgate.orders.v1 import orders_pb2
from services import demo
from services._db import Connection, Target, is_url

STATE_FILE = "pullgate-up.json"
"""What `pullgate up` records about itself under its data dir (pullgate.tools.launcher.STATE_FILE)."""

__all__ = ["PlacementCheck", "check_placement", "recorded_databases"]

_CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
_CANCELLED = orders_pb2.ORDER_STATUS_CANCELLED
_PENDING = orders_pb2.ORDER_STATUS_PENDING


@dataclass(frozen=True)
class PlacementCheck:
    """The outcome of `check_placement`: each broken promise in words, and what is still in between."""

    violations: tuple[str, ...]
    pending_orders: tuple[str, ...]
    held_reservations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """No promise is broken."""
        return not self.violations

    @property
    def settled(self) -> bool:
        """No promise is broken and nothing is in between: no PENDING order, no HELD reservation."""
        return self.ok and not self.pending_orders and not self.held_reservations

    def __str__(self) -> str:
        lines = [f"violation: {v}" for v in self.violations]
        lines += [f"pending order {o}" for o in self.pending_orders]
        lines += [f"held reservation {r}" for r in self.held_reservations]
        return "\n".join(lines) or "placement invariants hold; nothing pending"


@dataclass(frozen=True)
class _Reservation:
    lines: dict[str, int]
    committed: bool
    released: bool


@contextlib.contextmanager
def _snapshot(db: Target) -> Iterator[Connection]:
    """A read-only connection holding one read transaction, so every query sees the same moment."""
    if is_url(db):
        with psycopg.connect(str(db), autocommit=True) as pg:
            pg.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield pg  # type: ignore[misc]
            finally:
                pg.execute("COMMIT")
        return
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")


def _orders(db: Target) -> dict[str, tuple[int, dict[str, int]]]:
    with _snapshot(db) as conn:
        lines: dict[str, dict[str, int]] = {}
        for order_id, sku, quantity in conn.execute("SELECT order_id, sku, quantity FROM order_lines"):
            lines.setdefault(order_id, {})[sku] = quantity
        return {
            order_id: (status, lines.get(order_id, {}))
            for order_id, status in conn.execute("SELECT order_id, status FROM orders")
        }


def _inventory(db: Target) -> tuple[dict[str, tuple[int, int]], dict[str, _Reservation]]:
    with _snapshot(db) as conn:
        stock = {sku: (available, reserved) for sku, available, reserved in conn.execute(
            "SELECT sku, available, reserved FROM stock"
        )}
        lines: dict[str, dict[str, int]] = {}
        found = conn.execute("SELECT reservation_id, sku, quantity FROM reservation_lines")
        for reservation_id, sku, quantity in found:
            lines.setdefault(reservation_id, {})[sku] = quantity
        reservations = {
            reservation_id: _Reservation(lines.get(reservation_id, {}), commit is not None, release is not None)
            for reservation_id, commit, release in conn.execute(
                "SELECT reservation_id, commit_time, release_time FROM reservations"
            )
        }
        return stock, reservations


def _by_id(item: tuple[str, object]) -> tuple[int, str]:
    """Numeric ids in number order ("2" before "10")."""
    return len(item[0]), item[0]


def check_placement(
    data_dir: Path, initial_stock: Mapping[str, int] | None = None, *, databases: Mapping[str, Target] | None = None
) -> PlacementCheck:
    """Check `data_dir`'s orders.db and inventory.db, or the databases (file or PostgreSQL URL) that `databases`
    names for "orders" or "inventory"; `initial_stock` per sku defaults to the demo seed's."""
    initial = dict(initial_stock) if initial_stock is not None else {s.sku: s.initial for s in demo.STOCK}
    where = dict(databases or {})
    orders = _orders(where.get("orders") or topology.database_path("orders", data_dir))
    stock, reservations = _inventory(where.get("inventory") or topology.database_path("inventory", data_dir))
    live = {rid: r for rid, r in reservations.items() if not r.released}
    violations: list[str] = []

    for order_id, (status, lines) in sorted(orders.items(), key=_by_id):
        held = live.get(order_id)
        if status == _CONFIRMED:
            if held is None:
                violations.append(f"CONFIRMED order {order_id} holds no reservation")
            elif held.lines != lines:
                violations.append(f"CONFIRMED order {order_id} has lines {lines} but its reservation {held.lines}")
            elif not held.committed:
                violations.append(f"CONFIRMED order {order_id}'s reservation is held, never committed")
        elif status == _CANCELLED and held is not None:
            violations.append(f"CANCELLED order {order_id} still holds a reservation of {held.lines}")

    for reservation_id, reservation in sorted(live.items()):
        if reservation.committed and reservation_id not in orders:
            violations.append(f"committed reservation {reservation_id} belongs to no order")

    totals: dict[str, int] = {}
    for reservation in live.values():
        for sku, quantity in reservation.lines.items():
            totals[sku] = totals.get(sku, 0) + quantity
    for sku, (available, reserved) in sorted(stock.items()):
        if reserved != totals.get(sku, 0):
            violations.append(f"sku {sku}: reserved is {reserved} but live reservations hold {totals.get(sku, 0)}")
        if sku in initial and available + reserved != initial[sku]:
            violations.append(
                f"sku {sku}: available {available} + reserved {reserved} = {available + reserved}, "
                f"not the initial {initial[sku]}"
            )

    return PlacementCheck(
        violations=tuple(violations),
        pending_orders=tuple(o for o, (status, _) in sorted(orders.items(), key=_by_id) if status == _PENDING),
        held_reservations=tuple(r for r, res in sorted(live.items()) if not res.committed),
    )


def recorded_databases(data_dir: Path) -> dict[str, Target]:
    """The PostgreSQL databases a `pullgate up --postgres` running over `data_dir` recorded for its owners (none:
    every owner keeps its SQLite file there)."""
    state = data_dir / STATE_FILE
    if not state.exists():
        return {}
    return {name: str(url) for name, url in json.loads(state.read_text()).get("databases", {}).items()}


if __name__ == "__main__":
    where = Path(sys.argv[1] if len(sys.argv) > 1 else "var")
    result = check_placement(where, databases=recorded_databases(where))
    print(result)
    sys.exit(0 if result.ok else 1)
