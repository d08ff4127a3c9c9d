"""The inventory database: stock per sku and the reservations that hold some of it.

Every reservation keeps its lines and the stock figures right after it was made, so a replay can return
the first result, and so `initial stock == available + reserved` can be checked against the rows:
`reserved` is the sum of the lines of reservations not yet released.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pullgate.errors import AlreadyExists, FailedPrecondition, NotFound
from pullgate.orders.v1 import orders_pb2
from services import _time, demo
from services._sqlite import Database, script

MIGRATIONS = [
    script(
        """CREATE TABLE stock (
            sku TEXT PRIMARY KEY,
            available INTEGER NOT NULL CHECK (available >= 0),
            reserved INTEGER NOT NULL CHECK (reserved >= 0)
        ) STRICT""",
        """CREATE TABLE reservations (
            reservation_id TEXT PRIMARY KEY,
            create_time TEXT NOT NULL,
            release_time TEXT
        ) STRICT""",
        """CREATE TABLE reservation_lines (
            reservation_id TEXT NOT NULL REFERENCES reservations (reservation_id),
            sku TEXT NOT NULL REFERENCES stock (sku),
            quantity INTEGER NOT NULL CHECK (quantity >= 1),
            available_after INTEGER NOT NULL,
            reserved_after INTEGER NOT NULL,
            PRIMARY KEY (reservation_id, sku)
        ) STRICT""",
    ),
]


@dataclass(frozen=True)
class StockRow:
    sku: str
    available: int
    reserved: int


def _stock(conn: sqlite3.Connection, sku: str) -> StockRow:
    row = conn.execute("SELECT sku, available, reserved FROM stock WHERE sku = ?", (sku,)).fetchone()
    if row is None:
        raise NotFound("stock for sku", sku)
    return StockRow(*row)


def _describe(lines: dict[str, int]) -> str:
    return ", ".join(f"{sku} x{quantity}" for sku, quantity in sorted(lines.items()))


def _reserve(
    conn: sqlite3.Connection, reservation_id: str, lines: Sequence[tuple[str, int]], now: str
) -> list[StockRow]:
    asked = dict(lines)
    held = conn.execute(
        "SELECT sku, quantity, available_after, reserved_after FROM reservation_lines WHERE reservation_id = ?",
        (reservation_id,),
    ).fetchall()
    if held:
        before = {row["sku"]: row["quantity"] for row in held}
        if before != asked:
            raise AlreadyExists(
                f"reservation_id {reservation_id!r} was already used for different lines ({_describe(before)}); "
                "use a new reservation_id for a different reservation"
            )
        after = {row["sku"]: StockRow(row["sku"], row["available_after"], row["reserved_after"]) for row in held}
        return [after[sku] for sku, _ in lines]
    # Check every line before writing any, so a refusal writes nothing.
    for sku, quantity in lines:
        stock = _stock(conn, sku)
        if stock.available < quantity:
            raise FailedPrecondition(
                f"insufficient stock for sku {sku!r}: {quantity} requested, {stock.available} available"
            )
    conn.execute("INSERT INTO reservations (reservation_id, create_time) VALUES (?, ?)", (reservation_id, now))
    result = []
    for sku, quantity in lines:
        row = conn.execute(
            "UPDATE stock SET available = available - ?, reserved = reserved + ? WHERE sku = ? "
            "RETURNING sku, available, reserved",
            (quantity, quantity, sku),
        ).fetchone()
        stock = StockRow(*row)
        conn.execute(
            "INSERT INTO reservation_lines (reservation_id, sku, quantity, available_after, reserved_after) "
            "VALUES (?, ?, ?, ?, ?)",
            (reservation_id, sku, quantity, stock.available, stock.reserved),
        )
        result.append(stock)
    return result


def seed(conn: sqlite3.Connection) -> None:
    conn.executemany(
        "INSERT INTO stock (sku, available, reserved) VALUES (?, ?, 0)", [(s.sku, s.initial) for s in demo.STOCK]
    )
    for order in demo.ORDERS:
        if order.status == orders_pb2.ORDER_STATUS_CONFIRMED:
            _reserve(conn, order.order_id, order.lines, _time.to_db(order.create_time))


class InventoryStore:
    """Reads stock and makes and releases reservations; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> InventoryStore:
        return cls(await Database.open(path, MIGRATIONS, seed))

    async def close(self) -> None:
        await self._db.close()

    async def get_many(self, skus: Sequence[str]) -> list[StockRow]:
        """The stock of each sku in the order asked; NotFound naming the first sku without stock."""
        return await self._db.transaction(lambda conn: [_stock(conn, sku) for sku in skus])

    async def reserve(self, reservation_id: str, lines: Sequence[tuple[str, int]]) -> list[StockRow]:
        """Reserve every line or none; the stock of each line's sku right after, in line order.

        A reservation_id seen before with the same lines returns that first result and reserves nothing
        more (even if it has been released since); with other lines it raises AlreadyExists. A sku without
        stock raises NotFound, too little stock FailedPrecondition; either way nothing is written.
        """
        now = _time.to_db(_time.utc_now())
        return await self._db.transaction(lambda conn: _reserve(conn, reservation_id, lines, now))

    async def release(self, reservation_id: str) -> bool:
        """Return a reservation's units to available; True only for the call that did it."""
        now = _time.to_db(_time.utc_now())

        def release(conn: sqlite3.Connection) -> bool:
            done = conn.execute(
                "UPDATE reservations SET release_time = ? WHERE reservation_id = ? AND release_time IS NULL",
                (now, reservation_id),
            ).rowcount
            if not done:
                return False
            conn.execute(
                "UPDATE stock SET available = available + l.quantity, reserved = reserved - l.quantity "
                "FROM reservation_lines AS l WHERE l.reservation_id = ? AND l.sku = stock.sku",
                (reservation_id,),
            )
            return True

        return await self._db.transaction(release)

    async def held(self) -> dict[str, int]:
        """Units per sku held by reservations not yet released (what `reserved` must equal)."""

        def read(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT l.sku, sum(l.quantity) FROM reservation_lines AS l "
                "JOIN reservations AS r USING (reservation_id) WHERE r.release_time IS NULL GROUP BY l.sku"
            ).fetchall()
            return {sku: int(total) for sku, total in rows}

        return await self._db.transaction(read)
