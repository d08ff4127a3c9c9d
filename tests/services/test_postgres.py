"""PostgreSQL as an owner's store: `pullgate serve --database-url`, the config's [database], migrations, errors."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
import pytest

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.tools.cli import main
from services import demo
from services._db import DatabaseError, open_database, redact
from services._sqlite import script
from services.catalog.store import ProductStore
from services.customers.store import CustomerStore
from tests.postgres import Databases
from tests.support import count_rows


async def test_serve_keeps_its_data_in_the_database_url(postgres: Databases, tmp_path: Path) -> None:
    """`pullgate serve catalog --database-url` migrates and seeds that database, answers from it, writes no file."""
    url = postgres.new("catalog")
    port_file = tmp_path / "port"
    server = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "pullgate"), "serve", "catalog", "--insecure", "--data-dir",
        str(tmp_path / "var"), "--database-url", url, "--port-file", str(port_file),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PULLGATE_METRICS_PORT": ""})
    try:
        async with asyncio.timeout(30):
            while not port_file.exists() or not port_file.read_text().strip():
                assert server.returncode is None, "pullgate serve stopped"
                await asyncio.sleep(0.05)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        async with grpc.aio.insecure_channel(address) as channel:
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            answer = await stub.GetProduct(catalog_pb2.GetProductRequest(sku="SKU-001"))
    finally:
        if server.returncode is None:
            server.terminate()
        _, err = await server.communicate()
    assert server.returncode in (0, -15), err.decode()
    assert answer.product.title == demo.PRODUCTS[0].title
    assert count_rows(url, "products") == len(demo.PRODUCTS)
    assert not (tmp_path / "var").exists() or not list((tmp_path / "var").glob("*.db"))


def test_serve_takes_the_url_from_the_config(tmp_path: Path) -> None:
    """Without --database-url an owner's URL comes from [database]; the gateway is given none."""
    from pullgate.tools.cli import _database_url, build_parser

    config = tmp_path / "pullgate.toml"
    config.write_text("[database]\nurl = 'postgresql://db/pg_{service}'\n")
    args = build_parser().parse_args(["serve", "orders", "--config", str(config)])
    assert _database_url(args) == "postgresql://db/pg_orders"
    args = build_parser().parse_args(["serve", "gateway", "--config", str(config)])
    assert _database_url(args) is None
    args = build_parser().parse_args(["serve", "orders"])
    assert _database_url(args) is None


@pytest.mark.parametrize(("argv", "problem"), [
    (["serve", "catalog", "--insecure", "--database-url", "sqlite:///x.db"],
     "--database-url: must be a PostgreSQL URL"),
    (["serve", "gateway", "--insecure", "--database-url", "postgresql://db/g"],
     "--database-url: gateway stores nothing"),
])
def test_serve_refuses_a_wrong_database_url(argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A URL that is not PostgreSQL's, or one for a server that stores nothing, is refused before anything starts."""
    assert main(argv) == 2
    assert problem in capsys.readouterr().err


def test_an_unreachable_database_is_named_without_its_password(
        postgres: Databases, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A database that does not exist stops `serve` with an error naming it, its password left out."""
    parts = urlsplit(postgres.server.admin_url)
    user = parts.username or getpass.getuser()
    with_password = urlunsplit(parts._replace(netloc=f"{user}:hunter2@{parts.netloc.rpartition('@')[2]}",
                                              path="/no_such_database"))
    assert main(["serve", "catalog", "--insecure", "--data-dir", str(tmp_path), "--database-url", with_password]) == 2
    err = capsys.readouterr().err
    assert "no_such_database" in err and "hunter2" not in err and ":***@" in err


def test_redact_hides_only_the_password() -> None:
    """A URL's password becomes ***; a URL without one is left as it is."""
    assert redact("postgresql://u:p@h:5/d") == "postgresql://u:***@h:5/d"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"


async def test_migrations_run_once_and_in_order(postgres: Databases) -> None:
    """A later migration runs on an existing database without re-running the seed; the version is recorded."""
    url = postgres.new()
    seeded: list[int] = []
    first = [script("CREATE TABLE t (x INTEGER) STRICT")]
    db = await open_database(url, first, lambda conn: seeded.append(1))
    await db.close()
    second = [*first, script("ALTER TABLE t ADD COLUMN y INTEGER")]
    db = await open_database(url, second, lambda conn: seeded.append(2))
    try:
        columns = await db.transaction(lambda conn: [c.name for c in conn.execute("SELECT * FROM t").description])
        version = await db.transaction(lambda conn: conn.execute("SELECT version FROM schema_version").fetchall())
    finally:
        await db.close()
    assert (columns, version, seeded) == (["x", "y"], [(2,)], [1])


async def test_a_database_newer_than_the_code_is_refused(postgres: Databases) -> None:
    """Opening a database whose schema is newer than the code's migrations fails, naming the database."""
    url = postgres.new("newer")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (5)")
    with pytest.raises(DatabaseError, match=r"pullgate_test_newer_\w+: schema version 5 is newer"):
        await open_database(url, [script("CREATE TABLE t (x INTEGER)")])


async def test_replicas_starting_together_migrate_and_seed_once(postgres: Databases) -> None:
    """Five stores opened at once on a new database: one migrates and seeds, the others find it done."""
    url = postgres.new("customers")
    stores = await asyncio.gather(*(CustomerStore.open(url) for _ in range(5)))
    for store in stores:
        await store.close()
    assert count_rows(url, "customers") == len(demo.CUSTOMERS)


async def test_a_failing_transaction_writes_nothing(postgres: Databases) -> None:
    """An exception inside a transaction rolls back everything it wrote."""
    store = await ProductStore.open(postgres.new("catalog"))
    db = store._db

    def write_then_fail(conn: object) -> None:
        conn.execute("DELETE FROM products")  # type: ignore[attr-defined]
        raise ValueError("boom")

    try:
        with pytest.raises(ValueError, match="boom"):
            await db.transaction(write_then_fail)
        assert len(await store.get_many([p.sku for p in demo.PRODUCTS])) == len(demo.PRODUCTS)
    finally:
        await store.close()
