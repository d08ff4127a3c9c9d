"""Fixtures for the owner services: each starts the real server on port 0 over a fresh data dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.support import start_service


@pytest.fixture
async def customers_channel(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    async with start_service("customers", tmp_path) as address, grpc.aio.insecure_channel(address) as channel:
        yield channel


@pytest.fixture
async def catalog_channel(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    async with start_service("catalog", tmp_path) as address, grpc.aio.insecure_channel(address) as channel:
        yield channel


@pytest.fixture
async def inventory_channel(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    async with start_service("inventory", tmp_path) as address, grpc.aio.insecure_channel(address) as channel:
        yield channel

