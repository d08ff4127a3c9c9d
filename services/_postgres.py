"""One private PostgreSQL database per service: a connection pool, each transaction SERIALIZABLE and rerun on conflict.

The stores were written for SQLite, where one writer at a time makes each `fn(conn)` run as if alone: a
read-check-write (enough stock? key seen before?) cannot interleave with another. On PostgreSQL several
replicas write at once, so every transaction runs at SERIALIZABLE, the isolation level that promises exactly
that: the outcome of some one-at-a-time order, or SQLSTATE 40001 (or a deadlock, 40P01) for a transaction that
could not be placed in one. Such a transaction is rolled back whole and run again from the start, a few times,
with a short random pause. Nothing half-done is ever committed; a crash leaves each transaction done or not.

The store's `fn(conn)` is synchronous (the same function serves SQLite), so it runs on a worker thread with a
connection from a psycopg_pool.ConnectionPool; `conn` is a thin adapter that takes `?` placeholders. Claims
(`claim()`) are session advisory locks held on one asyncio connection of their own: a lock dies with its
process, so a crashed replica's claims are free at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg
from psycopg import errors
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool

from services._db import DatabaseError, Migration, Seed, redact

log = logging.getLogger("pullgate.services.postgres")

T = TypeVar("T")

POOL_SIZE = 8
"""Connections (and worker threads) per store: the transactions one process runs at once."""

ATTEMPTS = 50
"""How often a transaction that lost a serialization conflict is run before its error is raised."""

CONNECT_TIMEOUT = 10
"""Seconds to wait for the server when opening a store."""

_RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)

_MIGRATION_LOCK = 0x70756C6C  # "pull": the advisory lock that lets one process at a time migrate
_CLAIM_SPACE = 0x676174  # "gat": the first key of every claim's advisory lock


class Row(tuple[Any, ...]):
    """A row that answers to `row[0]` and to `row["column"]`, as sqlite3.Row does."""

    _names: dict[str, int]

    def __new__(cls, values: Sequence[Any], names: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self._names[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._names)


def _rows(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, names)


def _sql(statement: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s` (a literal `%` doubled); the stores' SQL has no `?` in text."""
    return statement.replace("%", "%%").replace("?", "%s")


class Connection:
    """What a store's `fn(conn)` gets on PostgreSQL: `execute` and `executemany` with `?` placeholders."""

    dialect = "postgres"

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Row]:
        return self._conn.execute(_sql(sql), tuple(parameters) or None)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(_sql(sql), [tuple(p) for p in parameters])


class Database:
    """A pool of connections to one PostgreSQL database; use `open()`, then `transaction()`, then `close()`."""

    def __init__(self, url: str, pool: ConnectionPool[psycopg.Connection[Row]], executor: ThreadPoolExecutor) -> None:
        self.url = url
        self._pool = pool
        self._executor = executor
        self._locks: psycopg.AsyncConnection[Any] | None = None
        self._locks_guard = asyncio.Lock()
        self._claimed: set[str] = set()

    @classmethod
    async def open(cls, url: str, migrations: Sequence[Migration], seed: Seed | None = None) -> Database:
        """Connect to the database at `url`, migrate it, and seed it if it was new; DatabaseError if unreachable."""
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="db-postgres")
        try:
            await loop.run_in_executor(executor, _migrate, url, migrations, seed)
            pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
                url, min_size=1, max_size=POOL_SIZE, open=False, configure=_configure,
                kwargs={"row_factory": _rows, "connect_timeout": CONNECT_TIMEOUT},
                name=f"pullgate-{redact(url)}",
            )
            await loop.run_in_executor(executor, lambda: pool.open(wait=True, timeout=CONNECT_TIMEOUT))
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(url, pool, executor)

    async def transaction(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)` in one SERIALIZABLE transaction (again, if it lost a conflict) and return its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn(conn)`, which only reads, as a transaction: a pooled connection is a thread's either way."""
        return await self.transaction(fn)

    def _run(self, fn: Callable[[Connection], T]) -> T:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self._pool.connection() as conn:  # commits at the end, rolls back if anything raised
                    return fn(Connection(conn))
            except _RETRYABLE as error:
                if attempt == ATTEMPTS:
                    raise
                log.debug("transaction lost a conflict (%s); attempt %d of %d", error.sqlstate, attempt + 1, ATTEMPTS)
                time.sleep(random.uniform(0, min(0.002 * attempt, 0.05)))
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def claim(self, key: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """Hold `key` against every other process on this database while the block runs; yields whether it is
        held. `wait` waits for a holder to let go; otherwise a key held elsewhere yields False at once.

        A session advisory lock: freed by the block's end, or by the server when the process dies.
        """
        lock = (_CLAIM_SPACE, _signed32(zlib.crc32(key.encode())))
        held = False
        try:
            while True:
                held = key not in self._claimed and await self._try_lock(lock)
                if held or not wait:
                    break
                await asyncio.sleep(0.05)
            if held:
                self._claimed.add(key)
            yield held
        finally:
            if held:
                self._claimed.discard(key)
                await self._unlock(lock)

    async def _locks_conn(self) -> psycopg.AsyncConnection[Any]:
        if self._locks is None or self._locks.closed:
            self._locks = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        return self._locks

    async def _try_lock(self, lock: tuple[int, int]) -> bool:
        async with self._locks_guard:
            conn = await self._locks_conn()
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", lock)).fetchone()
            return bool(row and row[0])

    async def _unlock(self, lock: tuple[int, int]) -> None:
        async with self._locks_guard:
            if self._locks is not None and not self._locks.closed:
                with contextlib.suppress(psycopg.Error):  # a lost session has let go of its locks already
                    await self._locks.execute("SELECT pg_advisory_unlock(%s, %s)", lock)

    async def close(self) -> None:
        """Close every connection (after the transactions in progress) and stop the threads."""
        loop = asyncio.get_running_loop()
        if self._locks is not None:
            await self._locks.close()
        await loop.run_in_executor(self._executor, self._pool.close)
        self._executor.shutdown(wait=True)


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE


def _migrate(url: str, migrations: Sequence[Migration], seed: Seed | None) -> None:
    """Bring the schema to the newest version, and seed a new database, in one transaction.

    The transaction takes an advisory lock first, so replicas starting together migrate one at a time, and the
    next one sees the schema the first left (READ COMMITTED: each statement sees what committed before it).
    PostgreSQL's DDL is transactional: a database is left either as it was or migrated and seeded.
    """
    where = redact(url)
    try:
        conn = psycopg.connect(url, row_factory=_rows, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.OperationalError as error:
        raise DatabaseError(f"{where}: cannot connect: {str(error).strip()}") from None
    with conn, conn.transaction():
        wrapped = Connection(conn)
        wrapped.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        wrapped.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = wrapped.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row[0])
        if version > len(migrations):
            raise DatabaseError(f"{where}: schema version {version} is newer than this code knows ({len(migrations)})")
        for step in range(version, len(migrations)):
            migrations[step](wrapped)
        if version < len(migrations):
            wrapped.execute("DELETE FROM schema_version")
            wrapped.execute("INSERT INTO schema_version (version) VALUES (?)", (len(migrations),))
            log.info("%s: schema migrated from version %d to %d", where, version, len(migrations))
        if version == 0 and seed is not None:
            seed(wrapped)
            log.info("%s: new database seeded with demo data", where)
