"""One private SQLite database per service, owned by one thread, so DB work never blocks the event loop.

Every service opens its database through `Database.open()`: the file is put in WAL mode, the schema is
brought to the newest version (PRAGMA user_version counts the migrations applied), and a new database gets
its demo data in the same transaction as its first schema, so a database is either empty or seeded, never
half of it. All work then runs as `await db.transaction(fn)`: `fn(conn)` runs on the database's single
thread inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK if it raises). One thread means transactions are
serialized: a read-check-write inside one `fn` cannot interleave with another. (`services._postgres` keeps
the same promise on PostgreSQL; `services._db` is the interface both implement.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from services._db import Connection, Migration, Seed, is_postgres

log = logging.getLogger("pullgate.services.sqlite")

T = TypeVar("T")

__all__ = ["SEQUENCES_TABLE", "Database", "Migration", "Seed", "next_id", "script"]


class Database:
    """A SQLite connection that lives on its own thread; use `open()`, then `transaction()`, then `close()`."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self.path = path
        self._executor = executor
        self._conn = conn

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[Migration], seed: Seed | None = None) -> Database:
        """Open (creating if needed) the database at `path`, migrate it, and seed it if it was new."""
        path.parent.mkdir(parents=True, exist_ok=True)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{path.stem}")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, path)
            db = cls(path, executor, conn)
            await db.transaction(lambda c: _migrate(c, path, migrations, seed))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return db

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one serialized transaction on the database thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _in_transaction, self._conn, fn)

    @contextlib.asynccontextmanager
    async def claim(self, key: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """Always granted: a SQLite file has one writer at a time and its processes claim nothing from each other."""
        yield True

    async def close(self) -> None:
        """Close the connection (after any transaction in progress) and stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._conn.close)
        self._executor.shutdown(wait=True)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
    conn.row_factory = sqlite3.Row
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        conn.close()
        raise OSError(f"{path}: cannot switch to WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration], seed: Seed | None) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(migrations):
        raise RuntimeError(f"{path}: schema version {version} is newer than this code knows ({len(migrations)})")
    for step in range(version, len(migrations)):
        migrations[step](conn)
    if version < len(migrations):
        conn.execute(f"PRAGMA user_version = {len(migrations)}")
        log.info("%s: schema migrated from version %d to %d", path, version, len(migrations))
    if version == 0 and seed is not None:
        seed(conn)
        log.info("%s: new database seeded with demo data", path)


def script(*statements: str) -> Migration:
    """A migration that runs the given SQL statements in order (inside the open transaction).

    The statements are SQLite's; on PostgreSQL a table's STRICT (SQLite's "check the declared types", which
    PostgreSQL always does) is left out, the one difference the schemas have.
    """

    def run(conn: Connection) -> None:
        for statement in statements:
            if is_postgres(conn) and statement.endswith(") STRICT"):
                statement = statement.removesuffix(" STRICT")
            conn.execute(statement)

    return run


SEQUENCES_TABLE = "CREATE TABLE id_sequences (kind TEXT PRIMARY KEY, last INTEGER NOT NULL) STRICT"
"""The table `next_id()` draws from; a schema that assigns ids includes it."""


def next_id(conn: Connection, kind: str) -> int:
    """The next number in the sequence named `kind` (1, 2, ...); only valid inside a transaction."""
    row = conn.execute(
        "INSERT INTO id_sequences (kind, last) VALUES (?, 1) "
        "ON CONFLICT (kind) DO UPDATE SET last = id_sequences.last + 1 RETURNING last",
        (kind,),
    ).fetchone()
    return int(row[0])
