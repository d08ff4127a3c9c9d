"""The ownership audit: clean on a seeded or used system, and it names every planted copy of another's data."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.orders.v1 import orders_pb2
from pullgate.tools import audit
from services import demo
from services.catalog.store import ProductStore
from services.customers.store import CustomerStore
from services.inventory.store import InventoryStore
from services.orders.store import OrderStore
from tests.gateway.system import system

ADA = demo.CUSTOMERS[0]
ESPRESSO = demo.PRODUCTS[0]


@pytest.fixture
async def data_dir(tmp_path: Path) -> Path:
    """Four freshly created and seeded databases, opened and closed through the services' own stores."""
    for store, name in ((CustomerStore, "customers"), (ProductStore, "catalog"), (InventoryStore, "inventory"),
                        (OrderStore, "orders")):
        opened = await store.open(tmp_path / f"{name}.db")
        await opened.close()
    return tmp_path


@contextlib.contextmanager
def _writable(data_dir: Path, service: str) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(data_dir / f"{service}.db", isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _run(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    audit.add_arguments(parser)
    code = audit.run(parser.parse_args(["--data-dir", str(data_dir)]))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_freshly_seeded_system_passes_and_says_what_was_checked(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo databases pass, and the output lists each database, the owned attributes and the values counted."""
    code, out, err = _run(data_dir, capsys)
    assert code == 0, out
    assert not err
    for name in ("customers.db", "catalog.db", "inventory.db", "orders.db"):
        assert name in out
    assert "customers owns  customers.name, customers.email" in out
    counts = f"{len(demo.CUSTOMERS)} customers.name, {len(demo.CUSTOMERS)} customers.email, " \
             f"{len(demo.PRODUCTS)} products.title, {len(demo.PRODUCTS)} products.price_cents"
    assert counts in out
    assert out.rstrip().endswith("ok: no service stores another's data")


def test_the_audit_changes_no_database(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every database file is byte for byte the same after an audit, which opens them read-only."""
    def digests() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(data_dir.glob("*.db"))}

    before = digests()
    assert _run(data_dir, capsys)[0] == 0
    assert digests() == before


async def test_a_system_that_served_reads_and_placed_an_order_passes(tmp_path: Path) -> None:
    """After views and a placed order through the gateway, no database holds another's data."""
    async with system(tmp_path) as s:
        await s.stub.GetOrderView(pb.GetOrderViewRequest(order_id="1"), timeout=10)
        await s.stub.GetCustomerOverview(pb.GetCustomerOverviewRequest(customer_id="1"), timeout=10)
        placed = await s.stub.PlaceOrder(pb.PlaceOrderRequest(
            idempotency_key="audit-1", customer_id="2", lines=[orders_pb2.OrderLine(sku="SKU-004", quantity=2)]),
            timeout=10)
        assert placed.order.status == orders_pb2.ORDER_STATUS_CONFIRMED
        report = audit.audit(tmp_path)
    assert report.violations == []


def test_a_column_named_for_a_foreign_attribute_is_caught(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A customer_name column in orders.db fails the audit, naming the database, table, column and owner."""
    with _writable(data_dir, "orders") as conn:
        conn.execute("ALTER TABLE orders ADD COLUMN customer_name TEXT")
    code, out, _ = _run(data_dir, capsys)
    assert code == 1
    assert "orders.db: table orders, column customer_name: named for customers' name (customers.name)" in out


def test_a_foreign_entity_other_than_by_id_is_caught(data_dir: Path) -> None:
    """A product table, or a product column that is not its id, in another database is a violation."""
    with _writable(data_dir, "orders") as conn:
        conn.execute("CREATE TABLE product_cache (sku TEXT, body BLOB)")
        conn.execute("ALTER TABLE order_lines ADD COLUMN product_json TEXT")
    found = {(v.database, v.table, v.column) for v in audit.audit(data_dir).violations}
    assert found == {("orders.db", "product_cache", ""), ("orders.db", "order_lines", "product_json")}


def test_a_copied_name_and_title_are_caught_with_their_values(data_dir: Path) -> None:
    """A customer's name and a product's title written into an orders row are each named with the row's value."""
    planted = f"{ADA.name} ordered {ESPRESSO.title.upper()}"
    with _writable(data_dir, "orders") as conn:
        rowid = conn.execute("UPDATE orders SET cancel_reason = ? WHERE order_id = '4' RETURNING rowid",
                             (planted,)).fetchone()[0]
    violations = audit.audit(data_dir).violations
    assert [(v.database, v.table, v.column, v.value, v.row) for v in violations] == [
        ("orders.db", "orders", "cancel_reason", planted, rowid)
    ] * 2
    assert "customers' name" in violations[0].problem and ADA.name.lower() in violations[0].problem
    assert "catalog's title" in violations[1].problem and ESPRESSO.title.lower() in violations[1].problem


def test_a_copied_email_in_any_database_is_caught(data_dir: Path) -> None:
    """An email held by inventory (as an id of a reservation) is caught there."""
    with _writable(data_dir, "inventory") as conn:
        conn.execute("INSERT INTO reservations (reservation_id, create_time) VALUES (?, 'now')", (ADA.email,))
    [violation] = audit.audit(data_dir).violations
    assert (violation.database, violation.table, violation.column) == ("inventory.db", "reservations", "reservation_id")
    assert violation.value == ADA.email


def test_prices_are_matched_in_money_columns_and_written_amounts_only(data_dir: Path) -> None:
    """A price in a money column or written as an amount is caught; the same number as a quantity is not."""
    cents = ESPRESSO.price_cents
    with _writable(data_dir, "orders") as conn:
        conn.execute("ALTER TABLE order_lines ADD COLUMN unit_price INTEGER")
        conn.execute("UPDATE order_lines SET unit_price = ? WHERE order_id = '1' AND line_no = 1", (cents,))
        conn.execute("UPDATE order_lines SET quantity = ? WHERE order_id = '2'", (cents,))
        conn.execute("UPDATE orders SET cancel_reason = ? WHERE order_id = '4'", (f"was EUR {cents / 100:.2f}",))
        conn.execute("UPDATE orders SET cancel_reason = ? WHERE order_id = '8'", (f"v{cents / 100:.2f}.1",))
    found = {(v.table, v.column, v.value) for v in audit.audit(data_dir).violations}
    assert found == {
        ("order_lines", "unit_price", ""),  # the schema check: a column named for catalog's price
        ("order_lines", "unit_price", str(cents)),
        ("orders", "cancel_reason", f"was EUR {cents / 100:.2f}"),
    }


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_a_missing_or_unreadable_database_is_an_error_naming_it(
    data_dir: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """Without catalog.db, or with garbage in it, the audit exits 2 naming the file."""
    path = data_dir / "catalog.db"
    path.unlink()
    if damage == "garbage":
        path.write_bytes(b"not a database at all, just some bytes" * 100)
    code, out, err = _run(data_dir, capsys)
    assert code == 2
    assert not out
    assert str(path) in err
