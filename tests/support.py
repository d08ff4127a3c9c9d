"""Helpers for tests that run real pullgate servers in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from pullgate import topology
from pullgate.faults import FaultInjector
from pullgate.security.access import Access
from pullgate.security.setup import INSECURE_SECURITY, Security
from pullgate.serving import ServeOptions, running
from pullgate.tools.apps import load_app
from pullgate.tools.launcher import REPLICA_PORT_STEP


@contextlib.asynccontextmanager
async def start_service(
    name: str, data_dir: Path, upstreams: Mapping[str, Sequence[str]] | None = None,
    faults: FaultInjector | None = None, security: Security = INSECURE_SECURITY, database_url: str | None = None,
) -> AsyncIterator[str]:
    """Run service `name` on 127.0.0.1, port 0, over `data_dir`; yields its address ("127.0.0.1:PORT").

    `upstreams` maps each service it calls to its addresses, as the launcher passes them. With `faults`, that
    injector's faults are in force and can be changed at run time. `security` is how it listens and whom it lets
    in (plaintext and open by default), and how it reaches its upstreams. With `database_url` its store is that
    PostgreSQL database instead of its SQLite file. The server and its database close on exit.
    """
    options = ServeOptions(
        name=name,
        data_dir=data_dir,
        upstreams={owner: tuple(addresses) for owner, addresses in (upstreams or {}).items()},
        security=security,
        database_url=database_url,
    )
    async with (
        load_app(name)(options) as bindings,
        running(bindings, "127.0.0.1", 0, faults=faults, allow_fault_injection=faults is not None,
                security=security) as (_, port, _h),
    ):
        yield f"127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def services_running(data_dir: Path, names: Sequence[str]) -> AsyncIterator[dict[str, tuple[str, ...]]]:
    """Run the services `names` in-process in the topology's start order, each wired to the ones it calls;
    yields each one's address, as upstreams for whatever calls them."""
    wanted = [n for n in topology.names() if n in names]
    async with contextlib.AsyncExitStack() as stack:
        addresses: dict[str, tuple[str, ...]] = {}
        for name in wanted:
            upstreams = {u: addresses[u] for u in topology.service(name).upstreams}
            addresses[name] = (await stack.enter_async_context(start_service(name, data_dir, upstreams)),)
        yield addresses


async def rpc_error(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


def query(db: Path | str, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of `sql` (with `?` placeholders), read through a separate connection (tests only); `db` is a
    SQLite file (opened read-only) or a PostgreSQL URL."""
    if isinstance(db, str) and db.startswith("postgresql://"):
        with psycopg.connect(db, autocommit=True) as pg:
            return list(pg.execute(sql.replace("?", "%s"), tuple(parameters) or None).fetchall())
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return [tuple(row) for row in conn.execute(sql, tuple(parameters)).fetchall()]


def count_rows(db: Path | str, table: str, where: str = "1=1") -> int:
    """Rows of `table` matching `where`, read through a separate read-only connection (tests only); `db` is a
    SQLite file or a PostgreSQL URL."""
    [(count,)] = query(db, f"SELECT count(*) FROM {table} WHERE {where}")
    return int(count)


def free_ports(count: int, replicas: int = 1) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now, each with its replicas' ports (port + 10 * k, as
    `pullgate up --replicas` uses them) free too and clear of the others'; for fixed `--port NAME=PORT` flags.

    They stay free until something else binds them, which the kernel's choice of ephemeral ports makes unlikely
    within a test.
    """
    with contextlib.ExitStack() as held:  # every port tried stays bound until all are chosen
        ports: list[int] = []
        for _ in range(100 * count):
            first = held.enter_context(socket.socket())
            first.bind(("127.0.0.1", 0))
            port: int = first.getsockname()[1]
            try:
                for k in range(1, replicas):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port + REPLICA_PORT_STEP * k))
            except (OSError, OverflowError):  # taken, or beyond 65535
                continue
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"found no {count} free ports with {replicas} replicas each")


async def until(condition: Callable[[], bool], within: float = 10.0, every: float = 0.02) -> None:
    """Wait until `condition()` is true, checking every `every` seconds; TimeoutError after `within` seconds.

    For state that lives in other components or processes (a database, a recovery loop), where there is no
    event to await: polling the condition is the honest wait.
    """
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - see the docstring
            await asyncio.sleep(every)


def scrape(url: str) -> list[Sample]:
    """Every sample a Prometheus endpoint serves now."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


class Recorded:
    """What a running `pullgate up` recorded about itself in `<data_dir>/pullgate-up.json`, for test harnesses."""

    data_dir: Path

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.data_dir / "pullgate-up.json").read_text())
        return state

    def address(self, service: str) -> str:
        return str(self.state["services"][service][0]["address"])

    @property
    def access(self) -> Access:
        """How pullgate's tools reach this system (TLS with the operator's certificate, or plaintext)."""
        return Access.from_state(self.state)

    def channel(self, service: str, *, customer: str | None = None, address: str | None = None) -> grpc.aio.Channel:
        """A channel to `service` (its first replica, or `address`) as pullgate's tools reach it. To the gateway it
        carries a token with the admin and operator scopes (it reads any customer's data and may set the gateway's
        faults) acting for `customer` (whose orders it may place)."""
        token = None
        if service == topology.ENTRY:
            token = self.access.mint(subject="tests" if customer is None else f"customer:{customer}",
                                     customer_id=customer, scopes=["admin", "operator"])
        return self.access.channel(service, address or self.address(service), token=token)

    def recorded(self, name: str) -> dict[str, Any]:
        """The record of process `name` (`catalog`, `catalog-1`, ...): its address, pid and metrics URL."""
        found: dict[str, Any] = next(p for ps in self.state["services"].values() for p in ps if p["name"] == name)
        return found

    def metrics(self, name: str) -> list[Sample]:
        """What process `name` serves on its metrics endpoint now."""
        return scrape(str(self.recorded(name)["metrics"]))
