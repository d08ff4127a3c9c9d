"""check_placement: quiet on the demo seed, and names each broken placement promise planted in the databases (on
SQLite and on PostgreSQL)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from services._db import Target
from services.invariants import PlacementCheck, check_placement
from services.inventory.store import InventoryStore
from services.orders.store import OrderStore
from tests.services.conftest import StoreTarget


@dataclass(frozen=True)
class Seeded:
    """Fresh orders and inventory databases (SQLite files under `data_dir`, or PostgreSQL databases)."""

    data_dir: Path
    orders: Target
    inventory: Target

    def check(self, initial_stock: Mapping[str, int] | None = None) -> PlacementCheck:
        return check_placement(self.data_dir, initial_stock, databases={"orders": self.orders,
                                                                        "inventory": self.inventory})


@pytest.fixture
async def seeded(tmp_path: Path, target: StoreTarget) -> Seeded:
    await (await OrderStore.open(target("orders"))).close()
    await (await InventoryStore.open(target("inventory"))).close()
    return Seeded(tmp_path, target("orders"), target("inventory"))


def plant(db: Target, *statements: str) -> None:
    if isinstance(db, str):
        with psycopg.connect(db, autocommit=True) as pg:
            for statement in statements:
                pg.execute(statement.encode())
        return
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for statement in statements:
            conn.execute(statement)


def test_the_demo_seed_is_settled(seeded: Seeded) -> None:
    """The seeded databases break no promise and have nothing in between."""
    result = seeded.check()
    assert result.settled
    assert str(result) == "placement invariants hold; nothing pending"


def test_a_confirmed_order_without_its_reservation(seeded: Seeded) -> None:
    """A CONFIRMED order whose reservation was released is named."""
    plant(seeded.inventory,
          "UPDATE reservations SET release_time = '2030', release_reason = 'released' WHERE reservation_id = '3'",
          "UPDATE stock SET available = available + 1, reserved = reserved - 1 WHERE sku = 'SKU-006'")
    assert seeded.check().violations == ("CONFIRMED order 3 holds no reservation",)


def test_a_confirmed_order_on_a_hold_never_committed(seeded: Seeded) -> None:
    """A CONFIRMED order whose reservation is only held is named, and the hold is listed."""
    plant(seeded.inventory, "UPDATE reservations SET commit_time = NULL, expire_time = '2099' "
                                   "WHERE reservation_id = '3'")
    result = seeded.check()
    assert result.violations == ("CONFIRMED order 3's reservation is held, never committed",)
    assert result.held_reservations == ("3",)


def test_a_cancelled_order_holding_stock(seeded: Seeded) -> None:
    """A CANCELLED order with a live reservation is named."""
    plant(seeded.inventory,
          "INSERT INTO reservations (reservation_id, create_time, commit_time) VALUES ('4', '2030', '2030')",
          "INSERT INTO reservation_lines VALUES ('4', 'SKU-007', 1, 0, 0)",
          "UPDATE stock SET available = available - 1, reserved = reserved + 1 WHERE sku = 'SKU-007'")
    assert seeded.check().violations == ("CANCELLED order 4 still holds a reservation of {'SKU-007': 1}",)


def test_stock_that_does_not_add_up(seeded: Seeded) -> None:
    """Units that vanished, or reserved units no reservation holds, are named per sku."""
    plant(seeded.inventory,
          "UPDATE stock SET available = available - 2 WHERE sku = 'SKU-010'",
          "UPDATE stock SET reserved = reserved + 1 WHERE sku = 'SKU-011'")
    violations = seeded.check({"SKU-010": 100}).violations
    assert violations[0].startswith("sku SKU-010: available ")
    assert violations[0].endswith(", not the initial 100")
    assert violations[1].startswith("sku SKU-011: reserved is ")
    assert len(violations) == 2, "SKU-011 is not checked against an initial figure it was not given"


def test_a_committed_reservation_of_no_order(seeded: Seeded) -> None:
    """A committed reservation whose id is no order is named; a pending order is listed, not a violation."""
    plant(seeded.inventory,
          "INSERT INTO reservations (reservation_id, create_time, commit_time) VALUES ('ghost', '2030', '2030')")
    plant(seeded.orders, "UPDATE orders SET status = 1 WHERE order_id = '3'")
    result = seeded.check()
    assert result.violations == ("committed reservation ghost belongs to no order",)
    assert result.pending_orders == ("3",)
    assert not result.settled
