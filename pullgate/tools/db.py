"""`pullgate db init`: one PostgreSQL database and one role per owner, so the database itself keeps data private.

Each owner gets a role and a database of the same name (`<prefix><service>`, `pullgate_orders` by default): the
role owns its database, may log in, and nothing more (no superuser, no CREATEDB, no CREATEROLE, no BYPASSRLS);
the database's CONNECT is taken from PUBLIC and given to its role alone. So orders' role cannot even connect to
customers' database, let alone read it. Running it again changes nothing that is right and repairs what is not.

Other databases of the cluster (`postgres`, ...) let PUBLIC connect unless told otherwise, and PUBLIC includes
the owners' roles; `--revoke-public` takes that from them too (it changes databases pullgate does not own, so
it is asked for, never assumed). `check_grants` is the other side: what the audit reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from pullgate import topology
from services._db import redact

DEFAULT_PREFIX = "pullgate_"
URL_SCHEMES = ("postgresql://", "postgres://")


class DbError(Exception):
    """An admin URL or prefix that cannot be used; the message says which and why."""


def _names(prefix: str) -> dict[str, str]:
    """Each owner's role and database name."""
    allowed = all(c.isascii() and (c.isalnum() or c == "_") for c in prefix)
    if not prefix or not allowed or not prefix[0].isalpha() or prefix != prefix.lower():
        raise DbError(f"--prefix: {prefix!r} must be lower-case letters, digits and _, starting with a letter")
    return {s.name: f"{prefix}{s.name}" for s in topology.owners()}


def service_url(admin_url: str, name: str) -> str:
    """The URL a service uses: the admin URL's host and port, its own role (no password) and database."""
    parts = urlsplit(admin_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{name}@{host}", path=f"/{name}"))


def _connect(admin_url: str) -> psycopg.Connection[tuple[object, ...]]:
    if not admin_url.startswith(URL_SCHEMES):
        raise DbError(f"--admin-url: must be a PostgreSQL URL (postgresql://user@host:port/database), "
                      f"got {admin_url!r}")
    try:
        return psycopg.connect(admin_url, autocommit=True, connect_timeout=10)
    except psycopg.Error as error:
        raise DbError(f"--admin-url {redact(admin_url)}: cannot connect: {str(error).strip()}") from None


@dataclass
class InitReport:
    """What `init` did: each owner's URL, and what it created or changed."""

    urls: dict[str, str] = field(default_factory=dict)
    template: str = ""
    """The URLs as one, with {service} for the owner's name (the config's `[database] url`)."""
    created: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)


def init(admin_url: str, prefix: str = DEFAULT_PREFIX, *, revoke_public: bool = False) -> InitReport:
    """Create (or repair) every owner's role and database on the server of `admin_url`; the report.

    The admin role needs CREATEROLE and CREATEDB (a superuser has both); DbError says what it was refused.
    """
    try:
        return _init(admin_url, prefix, revoke_public)
    except psycopg.Error as error:
        raise DbError(f"--admin-url {redact(admin_url)}: {str(error).strip()}") from None


def _init(admin_url: str, prefix: str, revoke_public: bool) -> InitReport:
    names = _names(prefix)
    report = InitReport(template=service_url(admin_url, prefix + "{service}"))
    with _connect(admin_url) as conn:
        for name in names.values():  # every role first: the grants below name the others
            role = sql.Identifier(name)
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
                report.created.append(f"role {name}")
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
                         .format(role))
        for service, name in names.items():
            role = sql.Identifier(name)
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
                report.created.append(f"database {name}")
            conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(role, role))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(role))
            for other in names.values():  # a grant to another owner's role, made by hand, is taken back
                if other != name:
                    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(role, sql.Identifier(other)))
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(role, role))
            report.urls[service] = service_url(admin_url, name)
        if revoke_public:
            for (database,) in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT (datname = ANY(%s)) "
                "AND has_database_privilege('public', oid, 'CONNECT') ORDER BY datname", (list(names.values()),)
            ).fetchall():
                conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(str(database))))
                report.revoked.append(str(database))
    return report


def check_grants(admin_url: str, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Every way an owner's role reaches beyond its own database, in words; empty when the grants keep each
    owner to its own. Read-only; DbError if the server cannot be asked."""
    try:
        return _check_grants(admin_url, prefix)
    except psycopg.Error as error:
        raise DbError(f"--database-url {redact(admin_url)}: {str(error).strip()}") from None


def _check_grants(admin_url: str, prefix: str) -> list[str]:
    names = _names(prefix)
    problems: list[str] = []
    with _connect(admin_url) as conn:
        databases = [str(d) for (d,) in conn.execute(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname").fetchall()]
        for service, name in names.items():
            role = conn.execute(
                "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles "
                "WHERE rolname = %s", (name,)).fetchone()
            if role is None:
                problems.append(f"{service}: no role {name} (run `pullgate db init`)")
                continue
            powers = [p for p, held in zip(("SUPERUSER", "CREATEDB", "CREATEROLE", "BYPASSRLS"), role[1:], strict=True)
                      if held]
            if powers:
                problems.append(f"{service}: role {name} has {', '.join(powers)}")
            if name not in databases:
                problems.append(f"{service}: no database {name} (run `pullgate db init`)")
            for (member_of,) in conn.execute(
                "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s", (name,)).fetchall():
                problems.append(f"{service}: role {name} is a member of {member_of} and has its rights")
            reached: list[str] = []
            public: list[str] = []
            for database in databases:
                if database == name:
                    continue
                reach = conn.execute(
                    "SELECT has_database_privilege(%s, %s, 'CONNECT'), "
                    "has_database_privilege('public', %s, 'CONNECT')", (name, database, database)).fetchone()
                if reach is not None and reach[0]:
                    (public if reach[1] else reached).append(database)
            if reached:
                problems.append(f"{service}: role {name} can connect to {', '.join(reached)}")
            if public:
                problems.append(f"{service}: role {name} can connect to {', '.join(public)} (every role may: "
                                "`pullgate db init --revoke-public` takes CONNECT from PUBLIC)")
    return problems


def render_init(report: InitReport) -> str:
    """What `pullgate db init` prints: what it did, each owner's URL, and the config that uses them."""
    lines = [f"created {item}" for item in report.created] or ["nothing to create: every role and database exists"]
    lines += [f"revoked CONNECT from PUBLIC on database {d}" for d in report.revoked]
    lines.append("")
    lines += [f"{service:<10} {url}" for service, url in report.urls.items()]
    lines += ["", "pullgate serve NAME --database-url URL, or in the config file:", "", "[database]",
              f'url = "{report.template}"']
    return "\n".join(lines)


def urls(admin_url: str, prefix: str = DEFAULT_PREFIX) -> Mapping[str, str]:
    """Each owner's URL on the server of `admin_url` (what `init` makes), without connecting."""
    return {service: service_url(admin_url, name) for service, name in _names(prefix).items()}
