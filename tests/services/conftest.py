"""Fixtures for the owner services: each starts the real server on port 0 over a fresh data dir; `target` is where a
store lives, once per backend (a SQLite file, a fresh PostgreSQL database)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from services._db import Target
from tests.support import start_service

BACKENDS = ("sqlite", "postgres")

StoreTarget = Callable[[str], Target]
"""Where service `name`'s store lives in this test: the same place each time it is asked for."""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each store test runs once on SQLite and once on PostgreSQL."""
    return str(request.param)


@pytest.fixture
def target(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> StoreTarget:
    """`target(name)`: `name`'s SQLite file under tmp_path, or a fresh PostgreSQL database of its own."""
    if backend == "sqlite":
        return lambda name: tmp_path / f"{name}.db"
    databases = request.getfixturevalue("postgres")
    urls: dict[str, Target] = {}

    def make(name: str) -> Target:
        if name not in urls:
            urls[name] = databases.new(name)
        return urls[name]

    return make


def _url(target: Target) -> str | None:
    """What start_service is given for a store at `target`: its URL, or None for the SQLite file it picks itself."""
    return target if isinstance(target, str) else None


@pytest.fixture
async def customers_channel(tmp_path: Path, target: StoreTarget) -> AsyncIterator[grpc.aio.Channel]:
    async with (
        start_service("customers", tmp_path, database_url=_url(target("customers"))) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield channel


@pytest.fixture
async def catalog_channel(tmp_path: Path, target: StoreTarget) -> AsyncIterator[grpc.aio.Channel]:
    async with (
        start_service("catalog", tmp_path, database_url=_url(target("catalog"))) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield channel


@pytest.fixture
async def inventory_channel(tmp_path: Path, target: StoreTarget) -> AsyncIterator[grpc.aio.Channel]:
    async with (
        start_service("inventory", tmp_path, database_url=_url(target("inventory"))) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield channel

