"""One private SQLite database per service: writes on the database's own thread, point reads on the event loop.

Every service opens its database through `Database.open()`: the file is put in WAL mode, the schema is
brought to the newest version (PRAGMA user_version counts the migrations applied), and a new database gets
its demo data in the same transaction as its first schema, so a database is either empty or seeded, never
half of it. Work then runs as `await db.transaction(fn)`: `fn(conn)` runs on the database's single
thread inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK if it raises). One thread means transactions are
serialized: a read-check-write inside one `fn` cannot interleave with another. (`services._postgres` keeps
the same promise on PostgreSQL; `services._db` is the interface both implement.)

A bounded read (the point lookups every view makes) runs as `await db.read(fn)`: on the event loop's own
thread, on a second, read-only connection, in a deferred transaction that sees everything committed before it
began (WAL: a reader never waits for the writer). Why not on the thread: handing a call to it and back costs
about 100 us of CPU (a queue, two wake-ups, the GIL passed twice), the read itself 10-15 us (measured on the
2-core machines of docs/overload.md), and every view reads from four owners. The loop is held for those
microseconds; a read that cannot go at once (SQLite answers "busy", which WAL makes rare: recovery, a writer
in exclusive mode) goes to the thread instead, where it may wait. Reads that scan without bound (recovery's
`pending`, the invariants' `held`) stay transactions.
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
    """A SQLite database: a writing connection on its own thread, a read-only one on the event loop's; use
    `open()`, then `transaction()` and `read()`, then `close()`."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor, conn: sqlite3.Connection,
                 reader: sqlite3.Connection | None = None) -> None:
        """`reader`: the read-only connection `read()` uses on the event loop's thread (opened there by `open()`);
        without one, reads go to the database's thread as transactions."""
        self.path = path
        self._executor = executor
        self._conn = conn
        self._reader = reader

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
            db._reader = _connect_reader(path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return db

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in one serialized transaction on the database thread and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _in_transaction, self._conn, fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)`, which only reads, on this thread in one deferred transaction (see the module's
        docstring); on the database's thread if SQLite cannot start it at once. A write in `fn` raises."""
        reader = self._reader
        if reader is None:
            return await self.transaction(fn)
        try:
            return _in_transaction(reader, fn, "BEGIN")
        except sqlite3.OperationalError as error:
            if not _busy(error):
                raise
            return await self.transaction(fn)

    @contextlib.asynccontextmanager
    async def claim(self, key: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """Always granted: a SQLite file has one writer at a time and its processes claim nothing from each other."""
        yield True

    async def close(self) -> None:
        """Close the connection (after any transaction in progress) and stop the thread."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
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


def _connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection that answers "busy" at once rather than wait (it is used on the event loop)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=0.0)
    conn.row_factory = sqlite3.Row
    return conn


def _busy(error: sqlite3.OperationalError) -> bool:
    """Is this SQLite's "busy" or "locked" (try again elsewhere), not a mistake in the statement?"""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)


def _in_transaction(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], begin: str = "BEGIN IMMEDIATE"
) -> T:
    """`fn(conn)` between `begin` and COMMIT, or ROLLBACK if it raises (a deferred BEGIN for reads)."""
    conn.execute(begin)
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
