"""Placing orders through `pullgate up` while processes die: every order settles and the stock adds up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from services.invariants import check_placement
from services.inventory.holds import HOLD_ENV
from tests.e2e.test_up import READY_TIMEOUT, System, _read_until, pullgate_up
from tests.support import until

pytestmark = pytest.mark.e2e

HOLD = "4"
"""Seconds a reservation is held uncommitted: short, so a hold left by a crash expires within the test."""

STALL_COMMIT = "inventory.CommitReservation=delay:60s"
"""Keeps orders between reservation and confirmation: every commit waits until its caller gives up."""

SETTLE_TIMEOUT = 30.0


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A short reservation hold for every process, and breakers that probe again soon after an owner is back."""
    monkeypatch.setenv(HOLD_ENV, HOLD)
    path = tmp_path / "pullgate.toml"
    path.write_text("[resilience.default.breaker]\nreset_timeout = 0.5\n")
    return path


@contextlib.asynccontextmanager
async def system_up(data_dir: Path, config: Path) -> AsyncIterator[System]:
    async with pullgate_up(data_dir, "--allow-fault-injection", "--config", str(config)) as system:
        yield system


async def set_faults(system: System, service: str, spec: str) -> None:
    async with system.channel(service) as channel:
        await admin_pb2_grpc.FaultServiceStub(channel).SetFaults(admin_pb2.SetFaultsRequest(spec=spec), timeout=5)


def query(db: Path, sql: str, *args: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql, args).fetchall()


def order_of(data_dir: Path, key: str) -> tuple[str, int] | None:
    """The (order_id, status) recorded under the idempotency key, if any."""
    found = query(data_dir / "orders.db", "SELECT order_id, status FROM orders WHERE idempotency_key = ?", key)
    return (str(found[0][0]), int(str(found[0][1]))) if found else None


def held(data_dir: Path, key: str) -> bool:
    """Whether the order under `key` has its reservation held and not yet committed."""
    order = order_of(data_dir, key)
    return order is not None and bool(query(
        data_dir / "inventory.db",
        "SELECT 1 FROM reservations WHERE reservation_id = ? AND commit_time IS NULL AND release_time IS NULL",
        order[0],
    ))


def place(key: str) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(idempotency_key=key, customer_id="2",
                                lines=[orders_pb2.OrderLine(sku="SKU-003", quantity=2),
                                       orders_pb2.OrderLine(sku="SKU-006", quantity=1)])


@contextlib.asynccontextmanager
async def placing(system: System, key: str) -> AsyncIterator[None]:
    """PlaceOrder through the gateway in the background (its answer does not matter: processes will die)."""
    async with system.channel("gateway", customer="2") as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)

        async def call_gateway() -> None:
            await stub.PlaceOrder(place(key), timeout=20)

        call = asyncio.create_task(call_gateway())
        try:
            yield
        finally:
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await call


async def kill(system: System, service: str) -> None:
    """SIGKILL the service's process and wait until the launcher says it is back."""
    os.kill(system.state["services"][service][0]["pid"], signal.SIGKILL)
    await asyncio.wait_for(_read_until(system.process, f"{service} is back", system.output), READY_TIMEOUT)


async def settled(system: System, key: str) -> int:
    """Wait until nothing is pending or held anywhere; the order's end state. Fails on any broken invariant."""
    await until(lambda: check_placement(system.data_dir).settled, SETTLE_TIMEOUT)
    result = check_placement(system.data_dir)
    assert result.settled, str(result)
    order = order_of(system.data_dir, key)
    assert order is not None
    assert order[1] in (orders_pb2.ORDER_STATUS_CONFIRMED, orders_pb2.ORDER_STATUS_CANCELLED)
    return order[1]


async def replay(system: System, key: str) -> pb.PlaceOrderResponse | grpc.StatusCode:
    """PlaceOrder with `key` again, as a client retries, until the gateway reaches the restarted orders."""
    async with system.channel("gateway", customer="2") as channel, asyncio.timeout(SETTLE_TIMEOUT):
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        while True:
            try:
                return await stub.PlaceOrder(place(key), timeout=10)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    return error.code()
            await asyncio.sleep(0.1)


async def test_orders_killed_between_reservation_and_confirmation(tmp_path: Path, config: Path) -> None:
    """orders dies holding a reservation; restarted, it settles the order, and a replay of the key agrees."""
    async with system_up(tmp_path, config) as system:
        await set_faults(system, "inventory", STALL_COMMIT)
        key = str(uuid.uuid4())
        async with placing(system, key):
            await until(lambda: held(tmp_path, key), SETTLE_TIMEOUT)
            await set_faults(system, "inventory", "")
            await kill(system, "orders")
            status = await settled(system, key)
        replayed = await replay(system, key)
        if status == orders_pb2.ORDER_STATUS_CONFIRMED:
            assert isinstance(replayed, pb.PlaceOrderResponse) and replayed.order.status == status
        else:
            assert replayed == grpc.StatusCode.FAILED_PRECONDITION
        assert check_placement(tmp_path).settled


async def test_inventory_killed_during_placement_leaks_no_reservation(tmp_path: Path, config: Path) -> None:
    """inventory dies while an order's stock is held; once it is back the hold is committed or gone."""
    async with system_up(tmp_path, config) as system:
        await set_faults(system, "inventory", STALL_COMMIT)
        key = str(uuid.uuid4())
        async with placing(system, key):
            await until(lambda: held(tmp_path, key), SETTLE_TIMEOUT)
            await kill(system, "inventory")  # it comes back without the runtime fault
            await settled(system, key)


async def test_customers_down_refuses_the_order_and_reserves_nothing(tmp_path: Path, config: Path) -> None:
    """With customers failing, PlaceOrder is UNAVAILABLE and no stock is held for the order."""
    async with system_up(tmp_path, config) as system:
        await set_faults(system, "customers", "customers=error:UNAVAILABLE")
        key = str(uuid.uuid4())
        async with system.channel("gateway", customer="2") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await gateway_pb2_grpc.GatewayServiceStub(channel).PlaceOrder(place(key), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "customers" in (refused.value.details() or "")
        order = order_of(tmp_path, key)
        assert order is not None and order[1] == orders_pb2.ORDER_STATUS_PENDING
        assert query(tmp_path / "inventory.db", "SELECT 1 FROM reservations WHERE reservation_id = ?", order[0]) == []
        assert check_placement(tmp_path).ok
