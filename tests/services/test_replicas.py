"""Several replicas of one owner (several stores on one database) at once, on each backend: the guarantees hold."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from pullgate.errors import AlreadyExists, FailedPrecondition
from services import demo
from services.customers.store import CustomerStore
from services.inventory.store import InventoryStore
from services.orders.store import OrderStore
from tests.services.conftest import StoreTarget

REPLICAS = 3
S = TypeVar("S", InventoryStore, OrderStore, CustomerStore)


@contextlib.asynccontextmanager
async def replicas(open_store: Callable[[], Awaitable[S]]) -> AsyncIterator[list[S]]:
    """REPLICAS stores on one database, the first opened (migrated, seeded) before the others, as replicas start."""
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for _ in range(REPLICAS):
            store = await open_store()
            stack.push_async_callback(store.close)
            stores.append(store)
        yield stores


async def test_concurrent_reservations_on_several_replicas_never_oversell(target: StoreTarget) -> None:
    """40 reservations of one sku at once over three replicas: all or nothing each, never below zero, adds up."""
    sku = "SKU-006"
    initial = next(s.initial for s in demo.STOCK if s.sku == sku)
    async with replicas(lambda: InventoryStore.open(target("inventory"))) as stores:
        [before] = await stores[0].get_many([sku])
        quantity = before.available // 10 + 1  # enough that some must be refused

        async def reserve(i: int) -> int:
            try:
                made = await stores[i % REPLICAS].reserve(f"r{i}", [(sku, quantity), ("SKU-001", 1)])
            except FailedPrecondition:
                return 0
            assert all(row.available >= 0 for row in made.stocks)
            return 1

        granted = sum(await asyncio.gather(*(reserve(i) for i in range(40))))
        [after] = await stores[1].get_many([sku])
        held = await stores[2].held()
    assert granted == before.available // quantity
    assert after.available == before.available - granted * quantity >= 0
    assert after.available + after.reserved == initial
    assert held[sku] == after.reserved


async def test_one_reservation_id_on_several_replicas_reserves_once(target: StoreTarget) -> None:
    """20 reservations with one id at once over three replicas hold the stock once and all answer alike."""
    async with replicas(lambda: InventoryStore.open(target("inventory"))) as stores:
        [before] = await stores[0].get_many(["SKU-006"])
        made = await asyncio.gather(*(stores[i % REPLICAS].reserve("same", [("SKU-006", 2)]) for i in range(20)))
        [after] = await stores[0].get_many(["SKU-006"])
    assert len({(m.reservation_id, tuple(m.stocks), m.expire_time) for m in made}) == 1
    assert (after.available, after.reserved) == (before.available - 2, before.reserved + 2)


async def test_one_idempotency_key_on_several_replicas_records_one_order(target: StoreTarget) -> None:
    """20 begins with one key at once over three replicas record one order; another request with it is refused."""
    async with replicas(lambda: OrderStore.open(target("orders"))) as stores:
        begun = await asyncio.gather(*(stores[i % REPLICAS].begin("k", "3", [("SKU-006", 2)]) for i in range(20)))
        with pytest.raises(AlreadyExists, match="idempotency_key 'k' was already used"):
            await stores[1].begin("k", "3", [("SKU-006", 3)])
        pending = await stores[2].pending()
    assert len({order.order_id for order in begun}) == 1
    assert [order.order_id for order in pending] == [begun[0].order_id]


async def test_one_email_on_several_replicas_makes_one_customer(target: StoreTarget) -> None:
    """Ten creations with one email (in any case) at once over three replicas make one customer."""
    async with replicas(lambda: CustomerStore.open(target("customers"))) as stores:
        results = await asyncio.gather(
            *(stores[i % REPLICAS].create("Ada", f"ADA{i}@example.org".lower() if i % 2 else "Ada@Example.org")
              for i in range(10)), return_exceptions=True)
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(made) + len(refused) == 10, [r for r in results if isinstance(r, BaseException)]
    assert len({c.customer_id for c in made}) == len(made) == 1 + 5  # one Ada@Example.org, five distinct others
    assert len(refused) == 4


async def test_a_claim_is_held_by_one_replica_at_a_time(target: StoreTarget, backend: str) -> None:
    """On PostgreSQL a claimed order is refused to another replica until let go; on SQLite every claim is granted."""
    async with replicas(lambda: OrderStore.open(target("orders"))) as stores:
        async with stores[0].claim("7") as first:
            async with stores[1].claim("7", wait=False) as second:
                pass
            async with stores[1].claim("8", wait=False) as other:
                pass
        async with stores[1].claim("7", wait=False) as after:
            pass
    assert (first, other, after) == (True, True, True)
    assert second is (backend == "sqlite")
