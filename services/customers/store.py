"""The customers database: people, their unique emails, and the demo people."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pullgate.errors import AlreadyExists, NotFound
from services import _time, demo
from services._db import Connection, Database, Target, open_database
from services._sqlite import SEQUENCES_TABLE, next_id, script

MIGRATIONS = [
    script(
        SEQUENCES_TABLE,
        """CREATE TABLE customers (
            customer_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            email TEXT NOT NULL,
            create_time TEXT NOT NULL
        ) STRICT""",
        # Emails are unique regardless of case: Ada@Example.com and ada@example.com are one mailbox.
        "CREATE UNIQUE INDEX customers_email ON customers (lower(email))",
    ),
]


@dataclass(frozen=True)
class CustomerRow:
    customer_id: str
    name: str
    email: str
    create_time: str


def _insert(conn: Connection, name: str, email: str, create_time: str) -> CustomerRow:
    taken = conn.execute("SELECT 1 FROM customers WHERE lower(email) = lower(?)", (email,)).fetchone()
    if taken is not None:
        raise AlreadyExists(f"email {email!r} is already used by another customer")
    row = CustomerRow(str(next_id(conn, "customer")), name, email, create_time)
    conn.execute(
        "INSERT INTO customers (customer_id, name, email, create_time) VALUES (?, ?, ?, ?)",
        (row.customer_id, row.name, row.email, row.create_time),
    )
    return row


def seed(conn: Connection) -> None:
    for customer in demo.CUSTOMERS:
        row = _insert(conn, customer.name, customer.email, _time.to_db(customer.create_time))
        assert row.customer_id == customer.customer_id, "demo ids must match the sequence"


class CustomerStore:
    """Reads and writes customers; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    async def open(cls, target: Target) -> CustomerStore:
        return cls(await open_database(target, MIGRATIONS, seed))

    async def close(self) -> None:
        await self._db.close()

    async def get_many(self, customer_ids: Sequence[str]) -> list[CustomerRow]:
        """The customers in the order asked; NotFound naming the first id that does not exist."""

        def read(conn: Connection) -> list[CustomerRow]:
            found: dict[str, CustomerRow] = {}
            for customer_id in customer_ids:
                if customer_id in found:
                    continue
                row = conn.execute(
                    "SELECT customer_id, name, email, create_time FROM customers WHERE customer_id = ?",
                    (customer_id,),
                ).fetchone()
                if row is None:
                    raise NotFound("customer", customer_id)
                found[customer_id] = CustomerRow(*row)
            return [found[customer_id] for customer_id in customer_ids]

        return await self._db.read(read)

    async def create(self, name: str, email: str) -> CustomerRow:
        """A new customer with the next id; AlreadyExists if the email is taken."""
        now = _time.to_db(_time.utc_now())
        return await self._db.transaction(lambda conn: _insert(conn, name, email, now))
