"""`pullgate db init` and the grants audit: a database and a role per owner, each role kept to its own database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from pullgate import topology
from pullgate.tools.cli import main
from pullgate.tools.db import DbError, check_grants, init, service_url
from services import demo
from services.customers.store import CustomerStore
from tests.postgres import Databases, Server, throwaway_cluster_or_skip

OWNERS = [s.name for s in topology.owners()]


def _drop(admin_url: str, prefix: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for service in OWNERS:
            conn.execute(f'DROP DATABASE IF EXISTS "{prefix}{service}" WITH (FORCE)'.encode())
        for service in OWNERS:
            conn.execute(f'DROP ROLE IF EXISTS "{prefix}{service}"'.encode())


@pytest.fixture
def server(postgres: Databases) -> Server:
    return postgres.server


@pytest.fixture
def prefix(server: Server) -> Iterator[str]:
    """A prefix no other test uses (roles are the cluster's, not a database's); its roles and databases go after."""
    chosen = f"t{uuid.uuid4().hex[:10]}_"
    try:
        yield chosen
    finally:
        _drop(server.admin_url, chosen)


def test_init_makes_a_database_and_a_role_per_owner_and_is_idempotent(server: Server, prefix: str) -> None:
    """Each owner gets a role and a database of its name; a second run creates nothing and gives the same URLs."""
    first = init(server.admin_url, prefix)
    assert first.created == [f"role {prefix}{s}" for s in OWNERS] + [f"database {prefix}{s}" for s in OWNERS]
    assert first.urls == {s: service_url(server.admin_url, f"{prefix}{s}") for s in OWNERS}
    assert first.template.count("{service}") == 2
    again = init(server.admin_url, prefix)
    assert (again.created, again.urls) == ([], first.urls)


async def test_each_role_reaches_its_own_database_only(server: Server, prefix: str) -> None:
    """An owner's role opens its store on its own database, and is refused by every other owner's."""
    urls = init(server.admin_url, prefix).urls
    store = await CustomerStore.open(urls["customers"])
    try:
        assert len(await store.get_many([c.customer_id for c in demo.CUSTOMERS])) == len(demo.CUSTOMERS)
    finally:
        await store.close()
    for service in OWNERS:
        if service != "customers":
            foreign = urls["customers"].rpartition("/")[0] + f"/{prefix}{service}"
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(foreign).close()
    problems = check_grants(server.admin_url, prefix)
    assert not [p for p in problems if "every role may" not in p], problems


def test_the_audit_names_a_grant_too_many_and_init_repairs_it(server: Server, prefix: str) -> None:
    """A role given another owner's database, or CREATEDB, is named by the audit; init takes both back."""
    init(server.admin_url, prefix)
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f'GRANT CONNECT ON DATABASE "{prefix}customers" TO "{prefix}orders"'.encode())
        conn.execute(f'ALTER ROLE "{prefix}catalog" CREATEDB'.encode())
    problems = check_grants(server.admin_url, prefix)
    assert f"orders: role {prefix}orders can connect to {prefix}customers" in problems
    assert f"catalog: role {prefix}catalog has CREATEDB" in problems
    init(server.admin_url, prefix)
    assert not [p for p in check_grants(server.admin_url, prefix) if "every role may" not in p]


def test_the_audit_of_a_server_without_init_says_what_is_missing(server: Server, prefix: str) -> None:
    """Before `db init` the audit says each role is missing."""
    assert check_grants(server.admin_url, prefix) == [
        f"{s}: no role {prefix}{s} (run `pullgate db init`)" for s in OWNERS]


def test_revoke_public_leaves_each_role_nothing_but_its_own() -> None:
    """On a cluster of its own, `--revoke-public` takes CONNECT from PUBLIC everywhere else: the audit is clean."""
    with throwaway_cluster_or_skip("to revoke PUBLIC's grants on") as admin_url:
        report = init(admin_url, revoke_public=True)
        assert "postgres" in report.revoked and "template1" in report.revoked
        assert check_grants(admin_url) == []
        assert main(["audit", "--database-url", admin_url]) == 0


def test_db_init_prints_the_urls_and_the_config(
        server: Server, prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`pullgate db init` prints each owner's URL and the [database] table that uses them."""
    assert main(["db", "init", "--admin-url", server.admin_url, "--prefix", prefix]) == 0
    out = capsys.readouterr().out
    for service in OWNERS:
        assert service_url(server.admin_url, f"{prefix}{service}") in out
    assert "[database]" in out and "{service}" in out


@pytest.mark.parametrize(("argv", "problem"), [
    (["db", "init", "--admin-url", "mysql://x/y"], "--admin-url: must be a PostgreSQL URL"),
    (["db", "init", "--admin-url", "postgresql://x/y", "--prefix", "Bad-"], "--prefix: 'Bad-' must be lower-case"),
    (["db", "init", "--admin-url", "postgresql://nobody:secret@127.0.0.1:1/x"], "cannot connect"),
])
def test_db_init_refuses_bad_input(argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A URL that is not PostgreSQL's, a prefix that is no identifier, a server that does not answer: named."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert problem in err and "secret" not in err


def test_init_refuses_an_unusable_prefix() -> None:
    """The prefix becomes role and database names: letters, digits and _ only."""
    with pytest.raises(DbError, match="--prefix"):
        init("postgresql://x/y", "x; DROP")


def test_an_admin_without_the_rights_is_named(server: Server, prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An admin URL whose role may not create roles stops `db init` with the server's refusal, no traceback."""
    weak = f"{prefix}weak"
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{weak}" LOGIN'.encode())
    try:
        url = service_url(server.admin_url, weak).rpartition("/")[0] + "/postgres"
        assert main(["db", "init", "--admin-url", url, "--prefix", prefix]) == 2
        err = capsys.readouterr().err
        assert "permission denied to create role" in err and weak in err
    finally:
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{weak}"'.encode())
