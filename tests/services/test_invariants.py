"""check_placement: quiet on the demo seed, and names each broken placement promise planted in the databases."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from services.invariants import check_placement
from services.inventory.store import InventoryStore
from services.orders.store import OrderStore


@pytest.fixture
async def seeded(tmp_path: Path) -> Path:
    await (await OrderStore.open(tmp_path / "orders.db")).close()
    await (await InventoryStore.open(tmp_path / "inventory.db")).close()
    return tmp_path


def plant(db: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for statement in statements:
            conn.execute(statement)


def test_the_demo_seed_is_settled(seeded: Path) -> None:
    """The seeded databases break no promise and have nothing in between."""
    result = check_placement(seeded)
    assert result.settled
    assert str(result) == "placement invariants hold; nothing pending"


def test_a_confirmed_order_without_its_reservation(seeded: Path) -> None:
    """A CONFIRMED order whose reservation was released is named."""
    plant(seeded / "inventory.db",
          "UPDATE reservations SET release_time = '2030', release_reason = 'released' WHERE reservation_id = '3'",
          "UPDATE stock SET available = available + 1, reserved = reserved - 1 WHERE sku = 'SKU-006'")
    assert check_placement(seeded).violations == ("CONFIRMED order 3 holds no reservation",)


def test_a_confirmed_order_on_a_hold_never_committed(seeded: Path) -> None:
    """A CONFIRMED order whose reservation is only held is named, and the hold is listed."""
    plant(seeded / "inventory.db", "UPDATE reservations SET commit_time = NULL, expire_time = '2099' "
                                   "WHERE reservation_id = '3'")
    result = check_placement(seeded)
    assert result.violations == ("CONFIRMED order 3's reservation is held, never committed",)
    assert result.held_reservations == ("3",)


def test_a_cancelled_order_holding_stock(seeded: Path) -> None:
    """A CANCELLED order with a live reservation is named."""
    plant(seeded / "inventory.db",
          "INSERT INTO reservations (reservation_id, create_time, commit_time) VALUES ('4', '2030', '2030')",
          "INSERT INTO reservation_lines VALUES ('4', 'SKU-007', 1, 0, 0)",
          "UPDATE stock SET available = available - 1, reserved = reserved + 1 WHERE sku = 'SKU-007'")
    assert check_placement(seeded).violations == ("CANCELLED order 4 still holds a reservation of {'SKU-007': 1}",)


def test_stock_that_does_not_add_up(seeded: Path) -> None:
    """Units that vanished, or reserved units no reservation holds, are named per sku."""
    plant(seeded / "inventory.db",
          "UPDATE stock SET available = available - 2 WHERE sku = 'SKU-010'",
          "UPDATE stock SET reserved = reserved + 1 WHERE sku = 'SKU-011'")
    violations = check_placement(seeded, {"SKU-010": 100}).violations
    assert violations[0].startswith("sku SKU-010: available ")
    assert violations[0].endswith(", not the initial 100")
    assert violations[1].startswith("sku SKU-011: reserved is ")
    assert len(violations) == 2, "SKU-011 is not checked against an initial figure it was not given"


def test_a_committed_reservation_of_no_order(seeded: Path) -> None:
    """A committed reservation whose id is no order is named; a pending order is listed, not a violation."""
    plant(seeded / "inventory.db",
          "INSERT INTO reservations (reservation_id, create_time, commit_time) VALUES ('ghost', '2030', '2030')")
    plant(seeded / "orders.db", "UPDATE orders SET status = 1 WHERE order_id = '3'")
    result = check_placement(seeded)
    assert result.violations == ("committed reservation ghost belongs to no order",)
    assert result.pending_orders == ("3",)
    assert not result.settled
