"""The one store interface every owner uses, whichever database is behind it: SQLite (embedded) or PostgreSQL.

A store writes each of its operations as `fn(conn)`, a plain function over a DB-API connection with `?`
placeholders, and runs it as `await db.transaction(fn)`: one transaction that behaves as if it ran alone; a
bounded read that writes nothing may run as `await db.read(fn)`, which SQLite answers without a thread hop.
`open_database(target, ...)` picks the backend from the target: a path is a SQLite file
(`services._sqlite`), a `postgresql://` URL a PostgreSQL database (`services._postgres`). See docs/storage.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

URL_SCHEMES = ("postgresql://", "postgres://")
"""How a PostgreSQL target begins; anything else is a SQLite file."""

Target = Path | str
"""Where a store lives: a SQLite file, or a PostgreSQL URL (`postgresql://user@host:port/database`)."""


class DatabaseError(RuntimeError):
    """A store's database that cannot be opened or used as it is; the message names it (never its password)."""


class Cursor(Protocol):
    """What a store reads from a statement: rows that answer to both `row[0]` and `row["column"]`."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the stores use: `?` placeholders on both backends."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


Migration = Callable[[Any], None]
"""One step of a schema's history; step i (from 0) brings the schema version from i to i + 1."""

Seed = Callable[[Any], None]
"""Writes the demo data into a freshly created database."""


class Database(Protocol):
    """An open store database: run transactions, claim work, close."""

    async def transaction(self, fn: Callable[[Any], T]) -> T: ...

    async def read(self, fn: Callable[[Any], T]) -> T:
        """Run `fn(conn)`, which only reads, in one transaction that sees everything committed before it began."""
        ...

    def claim(self, key: str, *, wait: bool = True) -> contextlib.AbstractAsyncContextManager[bool]: ...

    async def close(self) -> None: ...


def is_url(target: Target) -> bool:
    """Whether `target` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


async def open_database(target: Target, migrations: Sequence[Migration], seed: Seed | None = None) -> Database:
    """Open (creating if needed) the database at `target`, migrate it, and seed it if it was new."""
    if is_url(target):
        from services._postgres import Database as Postgres

        return await Postgres.open(str(target), migrations, seed)
    from services._sqlite import Database as Sqlite

    return await Sqlite.open(Path(target), migrations, seed)


def is_postgres(conn: object) -> bool:
    """Whether a transaction's `conn` is PostgreSQL's (for the few statements the dialects spell differently)."""
    return getattr(conn, "dialect", "sqlite") == "postgres"



def redact(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
