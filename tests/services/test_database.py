"""The services' databases: WAL mode, migrations, a deterministic and consistent seed, data that survives a restart."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from pullgate import topology
from pullgate.customers.v1 import customers_pb2, customers_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from services import demo
from services._db import Target, open_database
from services._sqlite import Database, script
from services.catalog.store import ProductStore
from services.customers.store import CustomerStore
from services.inventory.store import InventoryStore
from services.orders.store import OrderStore
from tests.services.conftest import StoreTarget
from tests.support import count_rows, query, start_service

Store = CustomerStore | ProductStore | InventoryStore | OrderStore
STORES: tuple[Callable[[Target], Awaitable[Store]], ...] = (
    CustomerStore.open, ProductStore.open, InventoryStore.open, OrderStore.open,
)
"""How each owner opens its database (one per service of pullgate.topology.owners())."""


def _name(open_store: object) -> str:
    return getattr(open_store, "__qualname__", "store").partition(".")[0]


def dump(db: Target) -> list[str]:
    """Every table's every row, in order, as text (SQLite's own dump; on PostgreSQL, each table sorted)."""
    if isinstance(db, Path):
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            return list(conn.iterdump())
    tables = query(db, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
    return [f"{table}: {row}" for (table,) in tables for row in query(db, f"SELECT * FROM {table} ORDER BY 1")]


def test_every_owner_has_a_store() -> None:
    """The stores tested here are as many as the topology's owners."""
    assert len(STORES) == len(topology.owners())


@pytest.mark.parametrize("open_store", STORES, ids=_name)
async def test_seed_is_deterministic(
    target: StoreTarget, backend: str, open_store: Callable[[Target], Awaitable[Store]]
) -> None:
    """Two fresh databases of one service hold exactly the same rows."""
    name = _name(open_store)
    a, b = (target(f"{run}/{name}" if backend == "sqlite" else f"{run}_{name.lower()}") for run in "ab")
    for where in (a, b):
        await (await open_store(where)).close()
    assert dump(a) == dump(b)
    assert len(dump(a)) > 1


@pytest.mark.parametrize("open_store", STORES, ids=_name)
async def test_database_is_wal_and_at_the_newest_version(
    tmp_path: Path, open_store: Callable[[Path], Awaitable[Store]]
) -> None:
    """A service's database is in WAL mode with user_version at its number of migrations."""
    name = _name(open_store)
    store = await open_store(tmp_path / f"{name}.db")
    try:
        with contextlib.closing(sqlite3.connect(tmp_path / f"{name}.db")) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    finally:
        await store.close()


async def test_seeded_stock_adds_up(target: StoreTarget) -> None:
    """For every sku, initial = available + reserved, and reserved = the open reservations' lines."""
    store = await InventoryStore.open(target("inventory"))
    try:
        rows = await store.get_many([s.sku for s in demo.STOCK])
        held = await store.held()
    finally:
        await store.close()
    for initial, row in zip(demo.STOCK, rows, strict=True):
        assert row.available + row.reserved == initial.initial, row.sku
        assert row.reserved == held.get(row.sku, 0) == demo.reserved(row.sku), row.sku
        assert row.available >= 0


async def test_seeded_orders_match_seeded_reservations(target: StoreTarget) -> None:
    """Each CONFIRMED demo order holds a reservation of exactly its lines under its id; others hold none."""
    await (await OrderStore.open(target("orders"))).close()
    await (await InventoryStore.open(target("inventory"))).close()
    held = set(query(
        target("inventory"),
        "SELECT reservation_id, sku, quantity FROM reservation_lines "
        "JOIN reservations USING (reservation_id) WHERE release_time IS NULL",
    ))
    ordered = set(query(
        target("orders"),
        "SELECT order_id, sku, quantity FROM order_lines JOIN orders USING (order_id) WHERE status = ?",
        (orders_pb2.ORDER_STATUS_CONFIRMED,),
    ))
    statuses = dict(query(target("orders"), "SELECT order_id, status FROM orders"))
    assert held == ordered
    assert statuses == {o.order_id: o.status for o in demo.ORDERS}


def test_demo_ids_agree_across_services() -> None:
    """Every demo order names a demo customer and demo products; order "1" is customer "1"'s, confirmed, 3+ lines."""
    customer_ids = {c.customer_id for c in demo.CUSTOMERS}
    skus = {p.sku for p in demo.PRODUCTS}
    assert {s.sku for s in demo.STOCK} == skus
    for order in demo.ORDERS:
        assert order.customer_id in customer_ids
        assert {sku for sku, _ in order.lines} <= skus
    first = demo.ORDERS[0]
    assert (first.order_id, first.customer_id, first.status) == ("1", "1", orders_pb2.ORDER_STATUS_CONFIRMED)
    assert len(first.lines) >= 3
    assert [o.order_id for o in demo.ORDERS] == [str(i) for i in range(1, len(demo.ORDERS) + 1)]


async def test_reopened_database_keeps_its_data_and_is_not_reseeded(tmp_path: Path) -> None:
    """A customer created before a restart is there after it, and the demo rows are not added twice."""
    request = customers_pb2.CreateCustomerRequest(name="Joan Clarke", email="joan@example.org")
    async with start_service("customers", tmp_path) as address, grpc.aio.insecure_channel(address) as channel:
        created = await customers_pb2_grpc.CustomerServiceStub(channel).CreateCustomer(request)
    async with start_service("customers", tmp_path) as address, grpc.aio.insecure_channel(address) as channel:
        stub = customers_pb2_grpc.CustomerServiceStub(channel)
        fetched = await stub.GetCustomer(customers_pb2.GetCustomerRequest(customer_id=created.customer.customer_id))
        assert fetched.customer == created.customer
        another = await stub.CreateCustomer(customers_pb2.CreateCustomerRequest(name="Bea", email="bea@example.org"))
        assert int(another.customer.customer_id) == int(created.customer.customer_id) + 1
    assert count_rows(tmp_path / "customers.db", "customers") == len(demo.CUSTOMERS) + 2


async def test_migrations_run_once_and_in_order(tmp_path: Path) -> None:
    """A later migration runs on an existing database without re-running the seed."""
    seeded: list[int] = []
    first = [script("CREATE TABLE t (x INTEGER) STRICT")]
    db = await Database.open(tmp_path / "x.db", first, lambda conn: seeded.append(1))
    await db.close()
    second = [*first, script("ALTER TABLE t ADD COLUMN y INTEGER")]
    db = await Database.open(tmp_path / "x.db", second, lambda conn: seeded.append(2))
    try:
        columns = await db.transaction(lambda conn: [r[1] for r in conn.execute("PRAGMA table_info(t)")])
        version = await db.transaction(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        await db.close()
    assert (columns, version, seeded) == (["x", "y"], 2, [1])


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    """Opening a database whose schema is newer than the code's migrations fails, naming the file."""
    with contextlib.closing(sqlite3.connect(tmp_path / "x.db")) as conn:
        conn.execute("PRAGMA user_version = 5")
    with pytest.raises(RuntimeError, match=r"x\.db: schema version 5 is newer"):
        await Database.open(tmp_path / "x.db", [script("CREATE TABLE t (x INTEGER)")])


async def test_a_failing_transaction_writes_nothing(tmp_path: Path) -> None:
    """An exception inside a transaction rolls back everything it wrote."""
    db = await Database.open(tmp_path / "x.db", [script("CREATE TABLE t (x INTEGER) STRICT")])

    def write_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")
        raise ValueError("boom")

    try:
        with pytest.raises(ValueError, match="boom"):
            await db.transaction(write_then_fail)
        assert await db.transaction(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    finally:
        await db.close()


async def test_a_read_sees_what_was_committed_before_it(target: StoreTarget, backend: str) -> None:
    """`read()` answers from the database as committed: a write's row is there in the next read, on both backends."""
    where = target("x/x.db" if backend == "sqlite" else "x_read")
    if isinstance(where, Path):
        where.parent.mkdir(parents=True, exist_ok=True)
    db = await open_database(where, [script("CREATE TABLE t (x INTEGER)")])
    try:
        assert await db.read(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
        await db.transaction(lambda conn: conn.execute("INSERT INTO t VALUES (7)"))
        assert await db.read(lambda conn: [r[0] for r in conn.execute("SELECT x FROM t")]) == [7]
    finally:
        await db.close()


async def test_a_sqlite_read_runs_on_the_callers_thread_and_cannot_write(tmp_path: Path) -> None:
    """A point read costs no thread hop (the hop is ~100 us of CPU, the read ~12 us), and its connection is read-only:
    a write in `read()` raises and leaves nothing behind."""
    db = await Database.open(tmp_path / "x.db", [script("CREATE TABLE t (x INTEGER) STRICT")])
    try:
        assert await db.read(lambda conn: threading.get_ident()) == threading.get_ident()
        assert await db.transaction(lambda conn: threading.get_ident()) != threading.get_ident()
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await db.read(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
        assert await db.read(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    finally:
        await db.close()


async def test_a_sqlite_read_that_finds_the_database_busy_goes_to_the_databases_thread(tmp_path: Path) -> None:
    """"Busy" on the event loop's thread is not an error: the read runs again on the database's thread, where it may
    wait. Any other error of SQLite's is the caller's, raised at once and not run again."""
    db = await Database.open(tmp_path / "x.db", [script("CREATE TABLE t (x INTEGER) STRICT")])
    ran: list[int] = []

    def busy_once(conn: sqlite3.Connection) -> str:
        ran.append(threading.get_ident())
        if len(ran) == 1:
            raise sqlite3.OperationalError("database is locked")
        return "answered"

    def mistaken(conn: sqlite3.Connection) -> None:
        ran.append(threading.get_ident())
        conn.execute("SELECT x FROM nowhere")

    try:
        assert await db.read(busy_once) == "answered"
        assert ran[0] == threading.get_ident() != ran[1]
        ran.clear()
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await db.read(mistaken)
        assert ran == [threading.get_ident()]
        assert await db.read(lambda conn: conn.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    finally:
        await db.close()
