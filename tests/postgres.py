"""A real PostgreSQL server for the tests, found or started once per session, and a fresh database per test.

Where the server comes from, first that works:
1. $PULLGATE_TEST_DATABASE_URL (a URL whose role may CREATE DATABASE);
2. the local server at 127.0.0.1:5432, as user postgres or root (trust authentication);
3. a throwaway cluster made with the installed server binaries (initdb and pg_ctl on PATH or under
   /usr/lib/postgresql/*/bin) in a temporary directory, on a free port, stopped and removed at the end;
otherwise the tests that need it are skipped, saying why (a failure under CI=true: tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

ENV = "PULLGATE_TEST_DATABASE_URL"
LOCAL = ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://root@127.0.0.1:5432/postgres")


def with_database(url: str, database: str) -> str:
    """`url` naming `database` instead of the one it names."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def reachable(url: str) -> str | None:
    """None if a connection to `url` works, else why not (in one line)."""
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None


def _binaries() -> Path | None:
    """The directory with initdb and pg_ctl: PATH first, then the newest Debian install."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    for directory in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]), reverse=True):
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def throwaway_cluster_or_skip(purpose: str) -> Iterator[str]:
    """`throwaway_cluster()`, or the test skipped saying it needed one for `purpose` and why there is none."""
    try:
        cluster = throwaway_cluster()
        admin_url = cluster.__enter__()
    except RuntimeError as error:
        pytest.skip(f"no throwaway PostgreSQL cluster {purpose}: {error}")
    try:
        yield admin_url
    finally:
        cluster.__exit__(None, None, None)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """A new cluster in a temporary directory on a free port; yields its admin URL; stopped and removed after.

    initdb refuses to run as root, so as root the cluster is made and run as the `postgres` user.
    """
    bin_dir = _binaries()
    if bin_dir is None:
        raise RuntimeError("no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin")
    as_user: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root and there is no postgres user to run initdb as") from None
        as_user, user = ["runuser", "-u", "postgres", "--"], "postgres"
    root = Path(tempfile.mkdtemp(prefix="pullgate-pg-"))
    data = root / "data"
    if as_user:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = _free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)

    try:
        run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "--no-sync")
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
            f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off", "start")
        try:
            yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"{error.cmd[len(as_user)]} failed: {error.stderr.strip()}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Server:
    """A PostgreSQL server the tests may create databases on."""

    admin_url: str
    source: str
    """Where it came from, for messages."""


@contextlib.contextmanager
def find_server() -> Iterator[Server | str]:
    """The server the tests use (see the module docstring), or why there is none."""
    explicit = os.environ.get(ENV)
    if explicit:  # asked for: that one or none, never another behind the caller's back
        problem = reachable(explicit)
        yield Server(explicit, f"${ENV}") if problem is None else f"${ENV} is set but unusable: {problem}"
        return
    reasons = []
    for url in LOCAL:
        problem = reachable(url)
        if problem is None:
            yield Server(url, url)
            return
        reasons.append(f"{url} ({problem})")
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(throwaway_cluster())
        except RuntimeError as error:
            reasons.append(f"a throwaway cluster ({error})")
            yield "no PostgreSQL server for the tests: tried " + "; ".join(reasons)
            return
        yield Server(url, "a throwaway cluster")


@dataclass
class Databases:
    """Fresh databases on `server`, each named uniquely, all dropped by `drop_all()`."""

    server: Server
    created: list[str] = field(default_factory=list)

    def new(self, label: str = "db") -> str:
        """A new empty database; its URL."""
        name = f"pullgate_test_{label}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.server.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return with_database(self.server.admin_url, name)

    def drop_all(self) -> None:
        with psycopg.connect(self.server.admin_url, autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()
