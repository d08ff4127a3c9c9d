"""`pullgate audit`: proves from the databases themselves, read-only, that no service stores another's data.

Pull is only worth its price if nothing is copied, so the promise is checked, not claimed. Two checks:

- schema: no table or column of one service's database is named for an attribute or entity another service
  owns (`OWNED`, `ENTITIES`, declared once below). A foreign entity may appear only as its id (`ID_COLUMNS`):
  customer_id, sku, order_id, reservation_id.
- values: no customer name or email, product title or price held by its owner appears in another database.
  Text cells are searched for each owned text, ignoring case: as a substring when it is at least
  `MIN_SUBSTRING` characters long (so it is found inside JSON blobs and messages too), otherwise only as the
  whole cell. Prices are integers (cents) and small integers are everywhere (quantities, counters, statuses),
  so a price is matched only where it means money: as a number in a column whose name says money (`MONEY`),
  and as an amount written out ("29.99", not part of a longer number) inside text. A price copied as a bare
  integer into a column named for something else is not caught by the value check.

On PostgreSQL (`--database-url ADMIN_URL`, the server `pullgate db init` set up) the database enforces the privacy,
so the audit checks the grants first (`pullgate.tools.db.check_grants`): each owner's role can connect to its own
database and no other, and holds no power beyond it. Then it runs the same schema and value checks on each
owner's database, read through the admin URL in read-only transactions.

Exit status: 0 when nothing is found, 1 on any violation, 2 when a database is missing or unreadable.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sqlite3
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import psycopg

from pullgate import topology
from pullgate.tools import db
from services._db import redact

OWNERS = topology.owners()
"""The services that own data, each in its own database under the data dir (pullgate/topology.py)."""


@dataclass(frozen=True)
class Owned:
    """An attribute one service owns: where its owner keeps it, and the words that name it in a column."""

    owner: str
    table: str
    column: str
    words: frozenset[str]
    values: str = ""
    """How its values are searched for in other databases: "text", "price", or "" (not searched)."""


OWNED = (
    Owned("customers", "customers", "name", frozenset({"name"}), "text"),
    Owned("customers", "customers", "email", frozenset({"email", "mail"}), "text"),
    Owned("catalog", "products", "title", frozenset({"title"}), "text"),
    Owned("catalog", "products", "price_cents", frozenset({"price", "cents", "amount", "cost", "total", "subtotal"}),
          "price"),
    Owned("catalog", "products", "currency", frozenset({"currency"})),
    Owned("inventory", "stock", "available", frozenset({"available"})),
    Owned("inventory", "stock", "reserved", frozenset({"reserved"})),
)

ENTITIES = {s.name: frozenset(w for e in s.entities for w in (e, f"{e}s")) for s in OWNERS}
"""The words naming each service's entities (the topology's, singular and plural); another service may hold them
only as an id."""

ID_COLUMNS = {column: s.name for s in OWNERS for column in s.ids}
"""Foreign ids any service may store, and whose entity each names (the topology's `ids`)."""

MONEY = frozenset({"price", "cents", "amount", "cost", "total", "subtotal", "money"})
"""Words in a column name that make a number in it a price."""

MIN_SUBSTRING = 6
"""Owned texts at least this long are found inside longer cells; shorter ones only as the whole cell."""


@dataclass(frozen=True)
class Violation:
    database: str
    table: str
    column: str
    problem: str
    value: str = ""
    row: int | None = None

    def __str__(self) -> str:
        where = f"{self.database}: table {self.table}" + (f", column {self.column}" if self.column else "")
        if self.row is not None:
            where += f", rowid {self.row}"
        value = f": value {self.value!r}" if self.value else ""
        return f"{where}{value}: {self.problem}"


@dataclass
class Report:
    """What was checked and what was found."""

    databases: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """service -> table -> columns."""
    rows: dict[str, int] = field(default_factory=dict)
    owned_values: dict[str, int] = field(default_factory=dict)
    cells: int = 0
    violations: list[Violation] = field(default_factory=list)


class AuditError(Exception):
    """A database the audit needs is missing or unreadable; the message names the file."""


def _database(service: str) -> str:
    """The file name of `service`'s database."""
    name = topology.service(service).database
    assert name is not None, f"{service} owns no data"
    return name


def _of(owner: str) -> str:
    """The possessive: "customers'", "catalog's"."""
    return f"{owner}'" if owner.endswith("s") else f"{owner}'s"


def _words(name: str) -> set[str]:
    return {word for word in re.split(r"[^a-z0-9]+", name.lower()) if word}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def _open(path: Path) -> Iterator[sqlite3.Connection]:
    """The database at `path`, read-only (it is never created or changed); AuditError naming it otherwise."""
    if not path.is_file():
        raise AuditError(f"{path}: no such database (run `pullgate up --data-dir {path.parent}` first?)")
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise AuditError(f"{path}: cannot open read-only: {error}") from None
    try:
        try:
            conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except sqlite3.Error as error:
            raise AuditError(f"{path}: not a readable SQLite database: {error}") from None
        yield conn
    finally:
        conn.close()


Conn = sqlite3.Connection | psycopg.Connection[Any]
"""An owner's database, opened read-only: its SQLite file, or its PostgreSQL database."""


@contextlib.contextmanager
def _open_postgres(url: str) -> Iterator[psycopg.Connection[Any]]:
    """The PostgreSQL database at `url`, every statement in a read-only transaction; AuditError naming it otherwise."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as error:
        raise AuditError(f"{redact(url)}: cannot connect: {str(error).strip()}") from None
    try:
        conn.execute("SET default_transaction_read_only = on")
        yield conn
    finally:
        conn.close()


def _schema(conn: Conn) -> dict[str, list[str]]:
    if isinstance(conn, psycopg.Connection):
        out: dict[str, list[str]] = {}
        for table, column in conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "ORDER BY table_name, ordinal_position"):
            out.setdefault(str(table), []).append(str(column))
        return out
    tables = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {table: [row[1] for row in conn.execute(f"PRAGMA table_info({_quote(table)})")] for table in tables}


def _rows(conn: Conn, table: str) -> Iterator[tuple[int, tuple[object, ...]]]:
    """Each row of `table` with what identifies it in a report: SQLite's rowid, else its position."""
    if isinstance(conn, sqlite3.Connection):
        try:
            for row in conn.execute(f"SELECT rowid, * FROM {_quote(table)}"):
                yield int(row[0]), tuple(row[1:])
            return
        except sqlite3.OperationalError:  # a WITHOUT ROWID table
            pass
    for number, row in enumerate(conn.execute(f"SELECT * FROM {_quote(table)}"), start=1):
        yield number, tuple(row)


def _check_schema(service: str, schema: dict[str, list[str]]) -> list[Violation]:
    found = []
    db = _database(service)
    entity_of = {word: owner for owner, words in ENTITIES.items() if owner != service for word in words}
    for table, columns in schema.items():
        for word in sorted(_words(table) & entity_of.keys()):
            found.append(Violation(db, table, "", f"table named for {_of(entity_of[word])} {word} entity"))
        for column in columns:
            words = _words(column)
            attrs = [a for a in OWNED if a.owner != service and words & a.words]
            for attr in attrs:
                found.append(Violation(db, table, column, f"named for {_of(attr.owner)} {attr.column} "
                                       f"({attr.table}.{attr.column}); only {attr.owner} may store it"))
            entities = sorted(words & entity_of.keys())
            if entities and not attrs and column not in ID_COLUMNS:
                owner = entity_of[entities[0]]
                ids = ", ".join(k for k, v in ID_COLUMNS.items() if v == owner)
                found.append(Violation(db, table, column, f"named for {_of(owner)} {entities[0]} entity; "
                                       f"only its id ({ids}) may be stored"))
    return found


def _owned_values(conns: Mapping[str, Conn], report: Report) -> list[tuple[Owned, str, int | None]]:
    """(attribute, lower-cased text, cents) for every owned value to look for, read from its owner."""
    values: list[tuple[Owned, str, int | None]] = []
    for attr in OWNED:
        if not attr.values or attr.table not in report.databases.get(attr.owner, {}):
            continue  # not searched for, or its owner has not made its tables yet (a database just created)
        rows = conns[attr.owner].execute(
            f"SELECT DISTINCT {_quote(attr.column)} FROM {_quote(attr.table)} WHERE {_quote(attr.column)} IS NOT NULL")
        found = [row[0] for row in rows]
        report.owned_values[f"{attr.table}.{attr.column}"] = len(found)
        for value in found:
            if attr.values == "price":
                values.append((attr, f"{int(value) / 100:.2f}", int(value)))
            elif str(value).strip():
                values.append((attr, str(value).strip().lower(), None))
    return values


def _amount(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\d.]){re.escape(text)}(?!\.?\d)")


def _check_values(service: str, conn: Conn, schema: dict[str, list[str]],
                  owned: list[tuple[Owned, str, int | None]], report: Report) -> list[Violation]:
    found = []
    db = _database(service)
    foreign = [(attr, text, cents) for attr, text, cents in owned if attr.owner != service]
    amounts = {text: _amount(text) for attr, text, cents in foreign if cents is not None}
    rows_seen = 0
    for table, columns in schema.items():
        money = {column for column in columns if _words(column) & MONEY}
        for rowid, row in _rows(conn, table):
            rows_seen += 1
            for column, cell in zip(columns, row, strict=True):
                if cell is None:
                    continue
                report.cells += 1
                for attr, text, cents in foreign:
                    if _matches(cell, column in money, text, cents, amounts):
                        shown = text if cents is None else f"{cents} cents"
                        found.append(Violation(db, table, column, f"holds {_of(attr.owner)} {attr.column} "
                                               f"{shown!r}; only {attr.owner} may store it", str(cell), rowid))
    report.rows[service] = rows_seen
    return found


def _matches(cell: object, money_column: bool, text: str, cents: int | None,
             amounts: dict[str, re.Pattern[str]]) -> bool:
    if cents is not None:
        if isinstance(cell, int | float) and not isinstance(cell, bool):
            return money_column and cell == cents
        return isinstance(cell, str) and amounts[text].search(cell) is not None
    if not isinstance(cell, str):
        return False
    lowered = cell.strip().lower()
    return text in lowered if len(text) >= MIN_SUBSTRING else text == lowered


def audit(data_dir: Path, databases: Mapping[str, str] | None = None) -> Report:
    """Check every owner's database: its PostgreSQL database where `databases` gives a URL, else its file in
    `data_dir`; AuditError naming the file or URL if one is missing or unreadable."""
    report = Report()
    where = dict(databases or {})
    with contextlib.ExitStack() as stack:
        conns: dict[str, Conn] = {}
        for s in OWNERS:
            if s.name in where:
                conns[s.name] = stack.enter_context(_open_postgres(where[s.name]))
            else:
                conns[s.name] = stack.enter_context(_open(data_dir / _database(s.name)))
        for service, conn in conns.items():
            report.databases[service] = _schema(conn)
            report.violations += _check_schema(service, report.databases[service])
        owned = _owned_values(conns, report)
        for service, conn in conns.items():
            report.violations += _check_values(service, conn, report.databases[service], owned, report)
    return report


def render(where: Path | str, report: Report, out: TextIO) -> None:
    """What was checked (in `where`: a data dir, or a server), then every violation, for a person."""
    print(f"pullgate audit of {where} (each database opened read-only)", file=out)
    for service, schema in report.databases.items():
        columns = sum(len(c) for c in schema.values())
        rows = report.rows.get(service, 0)
        print(f"  {_database(service):<13} {len(schema)} tables, {columns:>2} columns, {rows:>5} rows: "
              f"{', '.join(schema)}", file=out)
    tables = sum(len(schema) for schema in report.databases.values())
    columns = sum(len(c) for schema in report.databases.values() for c in schema.values())
    print(f"schema: {tables} tables and {columns} columns checked for what other services own; "
          f"foreign ids allowed: {', '.join(ID_COLUMNS)}", file=out)
    for owner in (s.name for s in OWNERS):
        attributes = ", ".join(f"{a.table}.{a.column}" for a in OWNED if a.owner == owner) or "-"
        print(f"  {owner + ' owns':<15} {attributes}; entities: {', '.join(sorted(ENTITIES[owner]))}", file=out)
    counted = ", ".join(f"{n} {what}" for what, n in report.owned_values.items())
    print(f"values: {sum(report.owned_values.values())} owned values ({counted}) searched for in "
          f"{report.cells} cells of the other databases", file=out)
    if not report.violations:
        print("ok: no service stores another's data", file=out)
        return
    print(f"FAILED: {len(report.violations)} violation(s)", file=out)
    for violation in report.violations:
        print(f"  {violation}", file=out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path("var"),
                        help="where the services' databases are (default ./var, as for `pullgate up`)")
    parser.add_argument("--database-url", metavar="ADMIN_URL",
                        help="PostgreSQL instead: check on this server that each owner's role reaches its own "
                             "database and nothing else (the grants `pullgate db init` makes)")
    parser.add_argument("--prefix", default=db.DEFAULT_PREFIX,
                        help=f"with --database-url: of the roles' and databases' names (default {db.DEFAULT_PREFIX})")


def admin_urls(admin_url: str, prefix: str) -> dict[str, str]:
    """Each owner's database on the server of `admin_url`, reached with the admin's own credentials."""
    parts = urlsplit(admin_url)
    return {service: urlunsplit(parts._replace(path="/" + url.rpartition("/")[2]))
            for service, url in db.urls(admin_url, prefix).items()}


def run_grants(admin_url: str, prefix: str, out: TextIO) -> int:
    """`pullgate audit --database-url`: the owners' roles and their grants, then what their databases hold; 1 on
    any finding, 2 if unreachable."""
    try:
        problems = db.check_grants(admin_url, prefix)
        report = audit(Path(), admin_urls(admin_url, prefix))
    except (db.DbError, AuditError) as error:
        print(f"pullgate audit: {error}", file=sys.stderr)
        return 2
    print(f"pullgate audit of the grants on {redact(admin_url)} (read-only)", file=out)
    for service, url in db.urls(admin_url, prefix).items():
        print(f"  {service:<10} role and database {url.rpartition('/')[2]}", file=out)
    if not problems:
        print("ok: each owner's role can connect to its own database and no other, with no power beyond it", file=out)
    else:
        print(f"FAILED: {len(problems)} finding(s)", file=out)
        for problem in problems:
            print(f"  {problem}", file=out)
    render(redact(admin_url), report, out)
    return 1 if problems or report.violations else 0


def run(args: argparse.Namespace) -> int:
    if args.database_url:
        return run_grants(args.database_url, args.prefix, sys.stdout)
    data_dir: Path = args.data_dir
    try:
        report = audit(data_dir)
    except AuditError as error:
        print(f"pullgate audit: {error}", file=sys.stderr)
        return 2
    render(data_dir, report, sys.stdout)
    return 1 if report.violations else 0


__all__ = ["OWNED", "AuditError", "Report", "Violation", "add_arguments", "audit", "run"]
