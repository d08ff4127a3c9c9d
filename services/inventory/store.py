"""The inventory database: stock per sku and the reservations that hold some of it, each held, committed or released.

Why holds: a reservation is made before its order is confirmed, and the order's owner may die in between. So a
new reservation is only HELD until `expire_time`; the owner makes it permanent with `commit`, or gives it back
with `release`; a hold nobody committed in time is released by `sweep` (and by any call that finds it expired).
A released or expired reservation never holds stock again: replaying its id is refused, so a late replay cannot
resurrect stock for an order that was meanwhile given up on.

Every reservation keeps its lines and the stock figures right after it was made, so a replay can return
the first result, and so `initial stock == available + reserved` can be checked against the rows:
`reserved` is the sum of the lines of reservations not yet released.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pullgate.errors import AlreadyExists, FailedPrecondition, NotFound
from pullgate.orders.v1 import orders_pb2
from services import _time, demo
from services._db import Connection, Database, Target, open_database
from services._sqlite import script

DEFAULT_HOLD = 60.0
"""Seconds a reservation is held before it expires unless committed."""

RELEASED = "released"
EXPIRED = "expired"

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
    script(
        # Held until expire_time unless committed first; release_reason says who ended it.
        "ALTER TABLE reservations ADD COLUMN expire_time TEXT",
        "ALTER TABLE reservations ADD COLUMN commit_time TEXT",
        "ALTER TABLE reservations ADD COLUMN release_reason TEXT "
        f"CHECK (release_reason IN ('{RELEASED}', '{EXPIRED}'))",
        # Reservations made before holds existed were final when made: they count as committed.
        "UPDATE reservations SET commit_time = create_time WHERE release_time IS NULL",
        "CREATE INDEX reservations_held ON reservations (expire_time) "
        "WHERE commit_time IS NULL AND release_time IS NULL",
    ),
]


@dataclass(frozen=True)
class StockRow:
    sku: str
    available: int
    reserved: int


@dataclass(frozen=True)
class Reservation:
    """A reservation as ReserveStock answers it: the stock right after it was made, and when its hold ends."""

    reservation_id: str
    stocks: list[StockRow]
    expire_time: str | None
    """None once committed."""


T = TypeVar("T")

Clock = Callable[[], datetime.datetime]


def _stock(conn: Connection, sku: str) -> StockRow:
    row = conn.execute("SELECT sku, available, reserved FROM stock WHERE sku = ?", (sku,)).fetchone()
    if row is None:
        raise NotFound("stock for sku", sku)
    return StockRow(*row)


def _describe(lines: dict[str, int]) -> str:
    return ", ".join(f"{sku} x{quantity}" for sku, quantity in sorted(lines.items()))


def _header(conn: Connection, reservation_id: str) -> Any | None:
    return conn.execute(
        "SELECT expire_time, commit_time, release_time, release_reason FROM reservations WHERE reservation_id = ?",
        (reservation_id,),
    ).fetchone()


def _release(conn: Connection, reservation_id: str, reason: str, now: str) -> bool:
    """Return a live reservation's units to available; False if it was already released."""
    done = conn.execute(
        "UPDATE reservations SET release_time = ?, release_reason = ? "
        "WHERE reservation_id = ? AND release_time IS NULL",
        (now, reason, reservation_id),
    ).rowcount
    if done:
        conn.execute(
            "UPDATE stock SET available = available + l.quantity, reserved = reserved - l.quantity "
            "FROM reservation_lines AS l WHERE l.reservation_id = ? AND l.sku = stock.sku",
            (reservation_id,),
        )
    return bool(done)


def _live(conn: Connection, reservation_id: str, now: str) -> Any | None:
    """The reservation's header after releasing it if its hold has run out; None if there is no such reservation."""
    header = _header(conn, reservation_id)
    if header is None:
        return None
    held = header["commit_time"] is None and header["release_time"] is None
    if held and header["expire_time"] <= now:
        _release(conn, reservation_id, EXPIRED, now)
        header = _header(conn, reservation_id)
    return header


def _gone(reservation_id: str, header: Any) -> FailedPrecondition:
    if header["release_reason"] == EXPIRED:
        how = f"expired at {header['expire_time']} before it was committed"
    else:
        how = f"was released at {header['release_time']}"
    return FailedPrecondition(
        f"reservation {reservation_id!r} {how} and holds no stock; reserve under a new reservation_id"
    )


def _reserve(
    conn: Connection, reservation_id: str, lines: Sequence[tuple[str, int]], now: str, expire: str
) -> Reservation | FailedPrecondition:
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
        header = _live(conn, reservation_id, now)
        assert header is not None, "reservation lines without a reservation"
        if header["release_time"] is not None:
            return _gone(reservation_id, header)  # returned, not raised: releasing an expired hold must commit
        after = {row["sku"]: StockRow(row["sku"], row["available_after"], row["reserved_after"]) for row in held}
        expire_time = None if header["commit_time"] is not None else header["expire_time"]
        return Reservation(reservation_id, [after[sku] for sku, _ in lines], expire_time)
    # Check every line before writing any, so a refusal writes nothing.
    for sku, quantity in lines:
        stock = _stock(conn, sku)
        if stock.available < quantity:
            raise FailedPrecondition(
                f"insufficient stock for sku {sku!r}: {quantity} requested, {stock.available} available"
            )
    conn.execute(
        "INSERT INTO reservations (reservation_id, create_time, expire_time) VALUES (?, ?, ?)",
        (reservation_id, now, expire),
    )
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
    return Reservation(reservation_id, result, expire)


def _commit(conn: Connection, reservation_id: str, now: str) -> bool | FailedPrecondition:
    header = _live(conn, reservation_id, now)
    if header is None:
        raise NotFound("reservation", reservation_id)
    if header["release_time"] is not None:
        return _gone(reservation_id, header)  # returned, not raised: releasing an expired hold must commit
    if header["commit_time"] is not None:
        return False
    conn.execute("UPDATE reservations SET commit_time = ? WHERE reservation_id = ?", (now, reservation_id))
    return True


def _sweep(conn: Connection, now: str) -> list[str]:
    expired = [
        row[0]
        for row in conn.execute(
            "SELECT reservation_id FROM reservations "
            "WHERE commit_time IS NULL AND release_time IS NULL AND expire_time <= ? ORDER BY expire_time",
            (now,),
        ).fetchall()
    ]
    for reservation_id in expired:
        _release(conn, reservation_id, EXPIRED, now)
    return expired


def _raised(outcome: T | FailedPrecondition) -> T:
    """The outcome of a transaction that may have ended in a refusal it had to commit first (an expired hold)."""
    if isinstance(outcome, FailedPrecondition):
        raise outcome
    return outcome


def seed(conn: Connection) -> None:
    conn.executemany(
        "INSERT INTO stock (sku, available, reserved) VALUES (?, ?, 0)", [(s.sku, s.initial) for s in demo.STOCK]
    )
    for order in demo.ORDERS:
        if order.status == orders_pb2.ORDER_STATUS_CONFIRMED:
            when = _time.to_db(order.create_time)
            expire = _time.to_db(order.create_time + datetime.timedelta(seconds=DEFAULT_HOLD))
            _reserve(conn, order.order_id, order.lines, when, expire)
            _commit(conn, order.order_id, when)


class InventoryStore:
    """Reads stock and holds, commits, releases and expires reservations; every method is one transaction.

    `hold` is how many seconds a new reservation is held before it expires unless committed; `clock` is the
    time (UTC) the store goes by, injected so tests can move it.
    """

    def __init__(self, db: Database, hold: float = DEFAULT_HOLD, clock: Clock = _time.utc_now) -> None:
        if not hold > 0:
            raise ValueError(f"hold must be a positive number of seconds, got {hold}")
        self._db = db
        self.hold = hold
        self._clock = clock

    @classmethod
    async def open(cls, target: Target, hold: float = DEFAULT_HOLD, clock: Clock = _time.utc_now) -> InventoryStore:
        return cls(await open_database(target, MIGRATIONS, seed), hold, clock)

    async def close(self) -> None:
        await self._db.close()

    async def get_many(self, skus: Sequence[str]) -> list[StockRow]:
        """The stock of each sku in the order asked; NotFound naming the first sku without stock."""
        return await self._db.read(lambda conn: [_stock(conn, sku) for sku in skus])

    async def reserve(self, reservation_id: str, lines: Sequence[tuple[str, int]]) -> Reservation:
        """Hold every line or none for `hold` seconds; the stock of each line's sku right after, in line order.

        A reservation_id seen before with the same lines returns that first result and reserves nothing more,
        while it is held or committed; once released or expired it raises FailedPrecondition; with other lines
        it raises AlreadyExists. A sku without stock raises NotFound, too little stock FailedPrecondition;
        either way nothing is written.
        """
        moment = self._clock()
        now = _time.to_db(moment)
        expire = _time.to_db(moment + datetime.timedelta(seconds=self.hold))
        return _raised(await self._db.transaction(lambda conn: _reserve(conn, reservation_id, lines, now, expire)))

    async def commit(self, reservation_id: str) -> bool:
        """Make a held reservation permanent; True only for the call that did it.

        NotFound for an unknown id; FailedPrecondition if it was released or its hold ran out.
        """
        now = _time.to_db(self._clock())
        return _raised(await self._db.transaction(lambda conn: _commit(conn, reservation_id, now)))

    async def release(self, reservation_id: str) -> bool:
        """Return a reservation's units (held or committed) to available; True only for the call that did it."""
        now = _time.to_db(self._clock())
        return await self._db.transaction(lambda conn: _release(conn, reservation_id, RELEASED, now))

    async def sweep(self) -> list[str]:
        """Release every reservation whose hold has run out without a commit; their ids, oldest first."""
        now = _time.to_db(self._clock())
        return await self._db.transaction(lambda conn: _sweep(conn, now))

    async def held(self) -> dict[str, int]:
        """Units per sku held by reservations not yet released (what `reserved` must equal)."""

        def read(conn: Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT l.sku, sum(l.quantity) FROM reservation_lines AS l "
                "JOIN reservations AS r USING (reservation_id) WHERE r.release_time IS NULL GROUP BY l.sku"
            ).fetchall()
            return {sku: int(total) for sku, total in rows}

        return await self._db.transaction(read)
