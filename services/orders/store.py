"""The orders database: orders and their lines (foreign ids only), idempotency keys, and the demo orders.

An order is recorded PENDING before any owner is asked, and only this module changes its status, once:
to CONFIRMED or CANCELLED (`finish`). `reserve_attempted` says whether stock may be held under the
order's id, so a cancellation knows whether it has a reservation to release.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pullgate.errors import AlreadyExists, InvalidArgument, NotFound
from pullgate.orders.v1 import orders_pb2
from services import _time, demo
from services._db import Connection, Database, Target, open_database
from services._sqlite import SEQUENCES_TABLE, next_id, script

PENDING = orders_pb2.ORDER_STATUS_PENDING
CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
CANCELLED = orders_pb2.ORDER_STATUS_CANCELLED

MIGRATIONS = [
    script(
        SEQUENCES_TABLE,
        """CREATE TABLE orders (
            seq INTEGER PRIMARY KEY,
            order_id TEXT NOT NULL UNIQUE,
            idempotency_key TEXT NOT NULL UNIQUE,
            customer_id TEXT NOT NULL,
            status INTEGER NOT NULL CHECK (status IN (1, 2, 3)),
            create_time TEXT NOT NULL,
            update_time TEXT NOT NULL,
            reserve_attempted INTEGER NOT NULL DEFAULT 0,
            cancel_reason TEXT
        ) STRICT""",
        "CREATE INDEX orders_by_customer ON orders (customer_id, seq)",
        "CREATE INDEX orders_by_status ON orders (status) WHERE status = 1",
        """CREATE TABLE order_lines (
            order_id TEXT NOT NULL REFERENCES orders (order_id),
            line_no INTEGER NOT NULL,
            sku TEXT NOT NULL,
            quantity INTEGER NOT NULL CHECK (quantity >= 1),
            PRIMARY KEY (order_id, line_no)
        ) STRICT""",
    ),
]

Lines = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    customer_id: str
    status: orders_pb2.OrderStatus.ValueType
    lines: Lines
    create_time: str
    reserve_attempted: bool
    cancel_reason: str | None


_COLUMNS = "order_id, customer_id, status, create_time, reserve_attempted, cancel_reason"


def _row(conn: Connection, found: Any) -> OrderRow:
    lines = conn.execute(
        "SELECT sku, quantity FROM order_lines WHERE order_id = ? ORDER BY line_no", (found["order_id"],)
    ).fetchall()
    return OrderRow(
        order_id=found["order_id"],
        customer_id=found["customer_id"],
        status=found["status"],
        lines=tuple((sku, quantity) for sku, quantity in lines),
        create_time=found["create_time"],
        reserve_attempted=bool(found["reserve_attempted"]),
        cancel_reason=found["cancel_reason"],
    )


def _get(conn: Connection, order_id: str) -> OrderRow:
    found = conn.execute(f"SELECT {_COLUMNS} FROM orders WHERE order_id = ?", (order_id,)).fetchone()
    if found is None:
        raise NotFound("order", order_id)
    return _row(conn, found)


def _insert(
    conn: Connection, key: str, customer_id: str, lines: Sequence[tuple[str, int]], now: str
) -> OrderRow:
    order_id = str(next_id(conn, "order"))
    conn.execute(
        "INSERT INTO orders (seq, order_id, idempotency_key, customer_id, status, create_time, update_time) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (int(order_id), order_id, key, customer_id, PENDING, now, now),
    )
    conn.executemany(
        "INSERT INTO order_lines (order_id, line_no, sku, quantity) VALUES (?, ?, ?, ?)",
        [(order_id, line_no, sku, quantity) for line_no, (sku, quantity) in enumerate(lines)],
    )
    return _get(conn, order_id)


def _finish(
    conn: Connection,
    order_id: str,
    status: orders_pb2.OrderStatus.ValueType,
    reason: str | None,
    now: str,
    unless_reserve_attempted: bool = False,
) -> OrderRow:
    conn.execute(
        "UPDATE orders SET status = ?, cancel_reason = ?, update_time = ? WHERE order_id = ? AND status = ? "
        "AND NOT (? AND reserve_attempted <> 0)",
        (status, reason, now, order_id, PENDING, unless_reserve_attempted),
    )
    return _get(conn, order_id)


def seed(conn: Connection) -> None:
    for order in demo.ORDERS:
        when = _time.to_db(order.create_time)
        row = _insert(conn, order.idempotency_key, order.customer_id, order.lines, when)
        assert row.order_id == order.order_id, "demo ids must match the sequence"
        confirmed = order.status == CONFIRMED
        conn.execute("UPDATE orders SET reserve_attempted = ? WHERE order_id = ?", (int(confirmed), row.order_id))
        _finish(conn, row.order_id, order.status, None if confirmed else "cancelled by the customer (demo)", when)


@dataclass(frozen=True)
class Page:
    orders: list[OrderRow]
    next_page_token: str


def _encode_token(customer_id: str, seq: int) -> str:
    raw = json.dumps({"c": customer_id, "s": seq}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(customer_id: str, token: str) -> int:
    """The seq to continue below; InvalidArgument if the token is not one of ours for this customer."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        owner, seq = data["c"], data["s"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise InvalidArgument("page_token", "is not a token from a previous ListOrders response") from None
    if not isinstance(seq, int) or not isinstance(owner, str):
        raise InvalidArgument("page_token", "is not a token from a previous ListOrders response")
    if owner != customer_id:
        raise InvalidArgument("page_token", "was issued for a different customer_id")
    return seq


class OrderStore:
    """Records orders and moves them from PENDING to an end state; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    async def open(cls, target: Target) -> OrderStore:
        return cls(await open_database(target, MIGRATIONS, seed))

    async def close(self) -> None:
        await self._db.close()

    def claim(self, order_id: str, *, wait: bool = True) -> contextlib.AbstractAsyncContextManager[bool]:
        """Hold the right to drive `order_id` against every other orders process on this database; yields whether
        it is held (with `wait`, once the holder lets go; without, False at once if another process holds it)."""
        return self._db.claim(f"order:{order_id}", wait=wait)

    async def begin(self, key: str, customer_id: str, lines: Sequence[tuple[str, int]]) -> OrderRow:
        """The order recorded under `key`: a new PENDING one, or the one a same request recorded before.

        AlreadyExists if `key` was used for a different request (another customer or other lines).
        """
        now = _time.to_db(_time.utc_now())

        def begin(conn: Connection) -> OrderRow:
            found = conn.execute(f"SELECT {_COLUMNS} FROM orders WHERE idempotency_key = ?", (key,)).fetchone()
            if found is None:
                return _insert(conn, key, customer_id, lines, now)
            order = _row(conn, found)
            if order.customer_id != customer_id or dict(order.lines) != dict(lines):
                raise AlreadyExists(
                    f"idempotency_key {key!r} was already used for a different order ({order.order_id}); "
                    "use a new idempotency_key for a new order"
                )
            return order

        return await self._db.transaction(begin)

    async def get(self, order_id: str) -> OrderRow:
        return await self._db.read(lambda conn: _get(conn, order_id))

    async def page(self, customer_id: str, page_size: int, page_token: str) -> Page:
        """One page of the customer's orders, newest (most recently recorded) first."""
        below = _decode_token(customer_id, page_token) if page_token else None

        def read(conn: Connection) -> Page:
            # Two statements, not `? IS NULL OR seq < ?`: PostgreSQL cannot type a parameter that is only NULL.
            below_seq = "" if below is None else " AND seq < ?"
            found = conn.execute(
                f"SELECT seq, {_COLUMNS} FROM orders WHERE customer_id = ?{below_seq} ORDER BY seq DESC LIMIT ?",
                (customer_id, *([] if below is None else [below]), page_size + 1),
            ).fetchall()
            page = found[:page_size]
            more = len(found) > page_size
            token = _encode_token(customer_id, page[-1]["seq"]) if more and page else ""
            return Page([_row(conn, r) for r in page], token)

        return await self._db.read(read)

    async def pending(self) -> list[OrderRow]:
        """Every order still PENDING, oldest first."""

        def read(conn: Connection) -> list[OrderRow]:
            found = conn.execute(f"SELECT {_COLUMNS} FROM orders WHERE status = ? ORDER BY seq", (PENDING,))
            return [_row(conn, r) for r in found.fetchall()]

        return await self._db.transaction(read)

    async def mark_reserve_attempted(self, order_id: str) -> OrderRow:
        """Note, before asking inventory, that stock may from now on be held under this order's id; the order.

        Only a PENDING order is marked: one that another process has meanwhile ended is returned as it stands.
        """

        def mark(conn: Connection) -> OrderRow:
            conn.execute(
                "UPDATE orders SET reserve_attempted = 1 WHERE order_id = ? AND status = ?", (order_id, PENDING)
            )
            return _get(conn, order_id)

        return await self._db.transaction(mark)

    async def finish(
        self,
        order_id: str,
        status: orders_pb2.OrderStatus.ValueType,
        reason: str | None = None,
        *,
        unless_reserve_attempted: bool = False,
    ) -> OrderRow:
        """Move a PENDING order to `status` (with the reason, if cancelled); the order as it then stands.

        An order already in an end state is left as it is; so is one with `reserve_attempted` set, when
        `unless_reserve_attempted` (a refusal found before asking for stock must not undo another process's
        reservation in progress).
        """
        now = _time.to_db(_time.utc_now())
        return await self._db.transaction(
            lambda conn: _finish(conn, order_id, status, reason, now, unless_reserve_attempted)
        )
