"""Order placement across crashes, replicas and unreachable owners: nothing lost, nothing duplicated, stock adds up.

Each test runs with orders' store on SQLite and on PostgreSQL (the owners it calls keep their SQLite files).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pullgate.errors import FailedPrecondition
from pullgate.faults import FaultInjector, parse_faults
from pullgate.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from pullgate.methods import Upstreams
from pullgate.orders.v1 import orders_pb2 as pb
from pullgate.orders.v1 import orders_pb2_grpc
from resilience import ResilienceConfig
from resilience.config import BreakerConfig, DownstreamConfig
from services import _time
from services._db import Target
from services.invariants import PlacementCheck, check_placement
from services.inventory.store import InventoryStore
from services.orders.placement import Placement
from services.orders.recovery import Backoff, Recovery
from services.orders.store import OrderRow, OrderStore
from tests.services.conftest import StoreTarget
from tests.services.test_orders import create, unused_address
from tests.support import count_rows, rpc_error, services_running, start_service, until

if TYPE_CHECKING:
    from pullgate.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub

CONFIRMED, CANCELLED, PENDING = pb.ORDER_STATUS_CONFIRMED, pb.ORDER_STATUS_CANCELLED, pb.ORDER_STATUS_PENDING
NO_BREAKER = ResilienceConfig(default=DownstreamConfig(breaker=BreakerConfig(enabled=False)))
"""Owners' clients without breakers, so an owner that is back is asked at once, not after a reset timeout."""


@dataclass
class Owned:
    """The three owners running over `data_dir`, customers with a fault switch, and orders' own store."""

    data_dir: Path
    orders_db: Target
    """orders' store: orders.db under data_dir, or a PostgreSQL database (the owners keep their SQLite files)."""
    upstreams: dict[str, tuple[str, ...]]
    customers_faults: FaultInjector
    store: OrderStore
    owners: Upstreams
    inventory: InventoryServiceAsyncStub

    async def stranded(self, key: str, *, reserved: bool = False, committed: bool = False) -> OrderRow:
        """An order as a crash leaves it: PENDING, and optionally its stock reserved (and committed)."""
        order = await self.store.begin(key, "2", [("SKU-003", 2), ("SKU-006", 1)])
        if reserved:
            order = await self.store.mark_reserve_attempted(order.order_id)
            await self.inventory.ReserveStock(inventory_pb2.ReserveStockRequest(
                reservation_id=order.order_id,
                lines=[inventory_pb2.ReservationLine(sku=s, quantity=q) for s, q in order.lines],
            ))
        if committed:
            commit = inventory_pb2.CommitReservationRequest(reservation_id=order.order_id)
            await self.inventory.CommitReservation(commit)
        return order

    @property
    def database_url(self) -> str | None:
        """What an orders server over the same store is given (None: the SQLite file under data_dir)."""
        return self.orders_db if isinstance(self.orders_db, str) else None

    def check(self) -> PlacementCheck:
        return check_placement(self.data_dir, databases={"orders": self.orders_db})

    async def recover_once(self) -> list[str]:
        recovery = Recovery(self.store, Placement(self.store, self.owners))
        await recovery.adopt()
        return await recovery.run_once()


@pytest.fixture
async def owned(tmp_path: Path, target: StoreTarget) -> AsyncIterator[Owned]:
    faults = FaultInjector("customers")
    async with contextlib.AsyncExitStack() as stack:
        customers = await stack.enter_async_context(start_service("customers", tmp_path, faults=faults))
        upstreams = await stack.enter_async_context(services_running(tmp_path, ["catalog", "inventory"]))
        upstreams["customers"] = (customers,)
        orders_db = target("orders")
        store = await OrderStore.open(orders_db)
        stack.push_async_callback(store.close)
        owners = Upstreams.connect("orders", upstreams, NO_BREAKER)
        stack.push_async_callback(owners.close)
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(upstreams["inventory"][0]))
        inventory = inventory_pb2_grpc.InventoryServiceStub(channel)
        yield Owned(tmp_path, orders_db, upstreams, faults, store, owners, inventory)


async def sweep_as_if_expired(data_dir: Path) -> list[str]:
    """Release every uncommitted hold now, as inventory's sweeper does once the hold time has passed."""
    later = _time.utc_now() + datetime.timedelta(days=1)
    store = await InventoryStore.open(data_dir / "inventory.db", clock=lambda: later)
    try:
        return await store.sweep()
    finally:
        await store.close()


async def test_twenty_calls_with_one_key_on_two_replicas_place_one_order(owned: Owned) -> None:
    """20 concurrent calls with one key, split over two orders processes sharing orders.db, make one order."""
    async with contextlib.AsyncExitStack() as stack:
        stubs = []
        for _ in range(2):
            address = await stack.enter_async_context(start_service(
                "orders", owned.data_dir, owned.upstreams, database_url=owned.database_url))
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(address))
            stubs.append(orders_pb2_grpc.OrderServiceStub(channel))
        responses = await asyncio.gather(
            *(stubs[i % 2].CreateOrder(create("shared", "3", SKU_006=2), timeout=10) for i in range(20))
        )
    assert len({r.order.SerializeToString(deterministic=True) for r in responses}) == 1
    order = responses[0].order
    assert order.status == CONFIRMED
    assert count_rows(owned.orders_db, "orders", "idempotency_key = 'shared'") == 1
    assert count_rows(owned.data_dir / "inventory.db", "reservations", f"reservation_id = '{order.order_id}'") == 1
    assert owned.check().settled


async def test_customers_unreachable_refuses_the_order_and_holds_nothing(owned: Owned) -> None:
    """With customers down, CreateOrder is UNAVAILABLE naming customers, and no stock is held for the order."""
    down = {**owned.upstreams, "customers": (unused_address(),)}
    async with (
        start_service("orders", owned.data_dir, down, database_url=owned.database_url) as address,
        grpc.aio.insecure_channel(address) as channel,
    ):
        code, details = await rpc_error(
            orders_pb2_grpc.OrderServiceStub(channel).CreateOrder(create("k1", "2", SKU_003=1), timeout=5)
        )
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details.startswith("customers:")
    [order] = [o for o in await owned.store.pending() if o.customer_id == "2"]
    assert not order.reserve_attempted
    assert count_rows(owned.data_dir / "inventory.db", "reservations", f"reservation_id = '{order.order_id}'") == 0
    assert owned.check().ok


async def test_recovery_keeps_trying_until_an_unreachable_owner_is_back(owned: Owned) -> None:
    """While customers fails, recovery backs off and holds nothing; once it answers, the order is CONFIRMED."""
    owned.customers_faults.replace(parse_faults("customers=error:UNAVAILABLE"))
    order = await owned.stranded("k1")
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    recovery = Recovery(owned.store, Placement(owned.store, owned.owners), Backoff(0.5, 2.0), sleep=pause)
    task = asyncio.create_task(recovery.run())
    try:
        await until(lambda: len(pauses) >= 4)
        assert pauses[:4] == [0.5, 1.0, 2.0, 2.0]
        assert (await owned.store.get(order.order_id)).status == PENDING
        assert count_rows(owned.data_dir / "inventory.db", "reservations", f"reservation_id = '{order.order_id}'") == 0
        owned.customers_faults.replace(parse_faults(""))
        await until(lambda: not recovery.unsettled)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert (await owned.store.get(order.order_id)).status == CONFIRMED
    assert owned.check().settled


async def test_a_placement_left_pending_is_settled_in_the_background(owned: Owned) -> None:
    """An order a call left PENDING (customers failing) is confirmed by recovery once customers answers."""
    owned.customers_faults.replace(parse_faults("customers=error:UNAVAILABLE"))
    placement = Placement(owned.store, owned.owners)
    recovery = Recovery(owned.store, placement, Backoff(0.01, 0.05))
    task = asyncio.create_task(recovery.run())
    try:
        with pytest.raises(Exception, match="customers"):
            await placement.place("k1", "2", [("SKU-003", 1)])
        await until(lambda: bool(recovery.unsettled))
        owned.customers_faults.replace(parse_faults(""))
        await until(lambda: not recovery.unsettled)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert (await placement.place("k1", "2", [("SKU-003", 1)])).status == CONFIRMED
    assert owned.check().settled


async def test_crash_after_reserve_before_commit_recovers_to_confirmed(owned: Owned) -> None:
    """An order whose hold was made but not committed is confirmed by recovery, its hold now committed."""
    order = await owned.stranded("k1", reserved=True)
    assert owned.check().held_reservations == (order.order_id,)
    assert await owned.recover_once() == []
    assert (await owned.store.get(order.order_id)).status == CONFIRMED
    assert owned.check().settled


async def test_crash_after_commit_before_confirmed_recovers_to_confirmed(owned: Owned) -> None:
    """An order whose hold was committed but not yet marked CONFIRMED is confirmed by recovery, reserved once."""
    order = await owned.stranded("k1", reserved=True, committed=True)
    before = owned.check()
    assert before.ok and before.pending_orders == (order.order_id,) and not before.held_reservations
    assert await owned.recover_once() == []
    assert (await owned.store.get(order.order_id)).status == CONFIRMED
    assert owned.check().settled


async def test_a_hold_that_expired_while_orders_was_down_cancels_the_order(owned: Owned) -> None:
    """If the hold ran out before recovery, the order is CANCELLED naming the expiry, and its stock is back."""
    order = await owned.stranded("k1", reserved=True)
    assert await sweep_as_if_expired(owned.data_dir) == [order.order_id]
    assert await owned.recover_once() == []
    cancelled = await owned.store.get(order.order_id)
    assert cancelled.status == CANCELLED
    assert cancelled.cancel_reason is not None
    assert cancelled.cancel_reason.startswith(f"reservation {order.order_id!r} expired at")
    with pytest.raises(FailedPrecondition, match="expired at"):
        await Placement(owned.store, owned.owners).place("k1", "2", [("SKU-003", 2), ("SKU-006", 1)])
    assert owned.check().settled


async def test_a_crash_before_anything_was_reserved_recovers_to_confirmed(owned: Owned) -> None:
    """An order recorded PENDING and nothing more is checked, reserved, committed and confirmed by recovery."""
    order = await owned.stranded("k1")
    assert await owned.recover_once() == []
    assert (await owned.store.get(order.order_id)).status == CONFIRMED
    assert owned.check().settled


class CountingPlacement(Placement):
    """A Placement that counts the orders it drove itself: found PENDING with their claim held."""

    def __init__(self, store: OrderStore, owners: Upstreams) -> None:
        super().__init__(store, owners)
        self.driven: list[str] = []

    async def _complete(self, order_id: str) -> OrderRow:
        if (await self._store.get(order_id)).status == PENDING:  # not one another replica settled a moment ago
            self.driven.append(order_id)
        return await super()._complete(order_id)


async def test_two_replicas_recovering_at_once_settle_each_order_once(owned: Owned, backend: str) -> None:
    """Two orders replicas recover the same stranded orders at once: each ends CONFIRMED, reserved once; on
    PostgreSQL each order is driven by one replica alone (its claim), the other leaves it be."""
    stranded = [await owned.stranded(f"k{i}", reserved=i % 3 != 0, committed=i % 3 == 2) for i in range(8)]
    async with contextlib.AsyncExitStack() as stack:
        replicas = []
        for _ in range(2):
            store = await OrderStore.open(owned.orders_db)
            stack.push_async_callback(store.close)
            replicas.append((store, CountingPlacement(store, owned.owners)))
        recoveries = [Recovery(store, placement, Backoff(0.01, 0.05)) for store, placement in replicas]
        tasks = [asyncio.create_task(recovery.run()) for recovery in recoveries]
        try:
            async with asyncio.timeout(10):
                while await owned.store.pending():  # noqa: ASYNC110 - state in a database: polling is the wait
                    await asyncio.sleep(0.02)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    for order in stranded:
        assert (await owned.store.get(order.order_id)).status == CONFIRMED
        where = f"reservation_id = '{order.order_id}'"
        assert count_rows(owned.data_dir / "inventory.db", "reservations", where) == 1
    assert owned.check().settled
    driven = [order_id for _, placement in replicas for order_id in placement.driven]
    if backend == "postgres":
        assert sorted(driven) == sorted(o.order_id for o in stranded)  # each once, by one replica
