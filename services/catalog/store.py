"""The catalog database: products with their titles and prices, and the demo products."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pullgate.errors import NotFound
from services import demo
from services._db import Connection, Database, Target, open_database
from services._sqlite import script

MIGRATIONS = [
    script(
        """CREATE TABLE products (
            sku TEXT PRIMARY KEY,
            title TEXT NOT NULL,
            price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
            currency TEXT NOT NULL CHECK (length(currency) = 3)
        ) STRICT""",
    ),
]


@dataclass(frozen=True)
class ProductRow:
    sku: str
    title: str
    price_cents: int
    currency: str


def seed(conn: Connection) -> None:
    conn.executemany(
        "INSERT INTO products (sku, title, price_cents, currency) VALUES (?, ?, ?, ?)",
        [(p.sku, p.title, p.price_cents, p.currency) for p in demo.PRODUCTS],
    )


class ProductStore:
    """Reads products; every method is one transaction."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    async def open(cls, target: Target) -> ProductStore:
        return cls(await open_database(target, MIGRATIONS, seed))

    async def close(self) -> None:
        await self._db.close()

    async def get_many(self, skus: Sequence[str]) -> list[ProductRow]:
        """The products in the order asked; NotFound naming the first sku that does not exist."""

        def read(conn: Connection) -> list[ProductRow]:
            found: dict[str, ProductRow] = {}
            for sku in skus:
                if sku in found:
                    continue
                row = conn.execute(
                    "SELECT sku, title, price_cents, currency FROM products WHERE sku = ?", (sku,)
                ).fetchone()
                if row is None:
                    raise NotFound("product", sku)
                found[sku] = ProductRow(*row)
            return [found[sku] for sku in skus]

        return await self._db.read(read)
