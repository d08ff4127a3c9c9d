"""OrderService with the three owners running in-process: reads, paging, and placing orders end to end."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pullgate import topology
from pullgate.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from pullgate.methods import Upstreams
from pullgate.orders.v1 import orders_pb2 as pb
from pullgate.orders.v1 import orders_pb2_grpc
from resilience import ResilienceConfig
from services import demo
from services.orders.placement import Placement
from services.orders.recovery import Recovery
from services.orders.store import OrderStore
from tests.services.conftest import StoreTarget
from tests.support import count_rows, rpc_error, services_running, start_service

if TYPE_CHECKING:
    from pullgate.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub
    from pullgate.orders.v1.orders_pb2_grpc import OrderServiceAsyncStub

AVAILABLE = {s.sku: s.initial - demo.reserved(s.sku) for s in demo.STOCK}
CONFIRMED, CANCELLED, PENDING = pb.ORDER_STATUS_CONFIRMED, pb.ORDER_STATUS_CANCELLED, pb.ORDER_STATUS_PENDING


@dataclass
class System:
    data_dir: Path
    upstreams: dict[str, tuple[str, ...]]
    orders: OrderServiceAsyncStub
    inventory: InventoryServiceAsyncStub

    def reservations(self, order_id: str) -> int:
        return count_rows(self.data_dir / "inventory.db", "reservations", f"reservation_id = '{order_id}'")

    def orders_with_key(self, key: str) -> int:
        return count_rows(self.data_dir / "orders.db", "orders", f"idempotency_key = '{key}'")

    async def stock(self, *skus: str) -> list[inventory_pb2.Stock]:
        return list((await self.inventory.BatchGetStock(inventory_pb2.BatchGetStockRequest(skus=skus))).stocks)


@contextlib.asynccontextmanager
async def owners_running(data_dir: Path) -> AsyncIterator[dict[str, tuple[str, ...]]]:
    async with services_running(data_dir, topology.service("orders").upstreams) as addresses:
        yield addresses


@contextlib.asynccontextmanager
async def system_running(data_dir: Path, upstreams: dict[str, tuple[str, ...]]) -> AsyncIterator[System]:
    async with (
        start_service("orders", data_dir, upstreams) as address,
        grpc.aio.insecure_channel(address) as channel,
        grpc.aio.insecure_channel(upstreams["inventory"][0]) as inventory_channel,
    ):
        yield System(
            data_dir,
            upstreams,
            orders_pb2_grpc.OrderServiceStub(channel),
            inventory_pb2_grpc.InventoryServiceStub(inventory_channel),
        )


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    async with owners_running(tmp_path) as upstreams, system_running(tmp_path, upstreams) as running:
        yield running


def unused_address() -> str:
    """An address nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def create(key: str, customer_id: str = "2", **lines: int) -> pb.CreateOrderRequest:
    return pb.CreateOrderRequest(
        idempotency_key=key,
        customer_id=customer_id,
        lines=[pb.OrderLine(sku=sku.replace("_", "-"), quantity=q) for sku, q in lines.items()],
    )


async def test_get_order_returns_the_seeded_order(system: System) -> None:
    """Order "1" is customer "1"'s, CONFIRMED, with the demo lines and time."""
    order = (await system.orders.GetOrder(pb.GetOrderRequest(order_id="1"))).order
    first = demo.ORDERS[0]
    assert (order.order_id, order.customer_id, order.status) == ("1", "1", CONFIRMED)
    assert [(line.sku, line.quantity) for line in order.lines] == list(first.lines)
    assert order.create_time.ToDatetime(demo.EPOCH.tzinfo) == first.create_time


async def test_get_order_errors(system: System) -> None:
    """An unknown order is NOT_FOUND naming it; an empty id is INVALID_ARGUMENT."""
    assert await rpc_error(system.orders.GetOrder(pb.GetOrderRequest(order_id="999"))) == (
        grpc.StatusCode.NOT_FOUND, "order '999' not found"
    )
    assert await rpc_error(system.orders.GetOrder(pb.GetOrderRequest())) == (
        grpc.StatusCode.INVALID_ARGUMENT, "order_id: must not be empty"
    )


async def test_list_orders_pages_newest_first(system: System) -> None:
    """ListOrders walks a customer's orders newest first with opaque tokens, ending with an empty one."""
    expected = [o.order_id for o in reversed(demo.ORDERS) if o.customer_id == "1"]
    pages: list[list[str]] = []
    token = ""
    while True:
        response = await system.orders.ListOrders(pb.ListOrdersRequest(customer_id="1", page_size=2, page_token=token))
        pages.append([o.order_id for o in response.orders])
        token = response.next_page_token
        if not token:
            break
    assert pages == [expected[i : i + 2] for i in range(0, len(expected), 2)]
    everything = await system.orders.ListOrders(pb.ListOrdersRequest(customer_id="1"))
    assert ([o.order_id for o in everything.orders], everything.next_page_token) == (expected, "")
    nobody = await system.orders.ListOrders(pb.ListOrdersRequest(customer_id="no-such-customer"))
    assert list(nobody.orders) == []


async def test_list_orders_shows_a_new_order_first(system: System) -> None:
    """An order placed now comes before the seeded ones."""
    placed = (await system.orders.CreateOrder(create("k1", "1", SKU_003=1))).order
    first = await system.orders.ListOrders(pb.ListOrdersRequest(customer_id="1", page_size=1))
    assert [o.order_id for o in first.orders] == [placed.order_id]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.ListOrdersRequest(), "customer_id: must not be empty"),
        (pb.ListOrdersRequest(customer_id="1", page_size=101), "page_size: must be between 0 and 100"),
        (pb.ListOrdersRequest(customer_id="1", page_size=-1), "page_size: must be between 0 and 100"),
        (pb.ListOrdersRequest(customer_id="1", page_token="garbage!"),
         "page_token: is not a token from a previous ListOrders response"),
    ],
)
async def test_list_orders_rejects_bad_fields(system: System, request_: pb.ListOrdersRequest, message: str) -> None:
    """A bad ListOrders request is INVALID_ARGUMENT naming the field and rule."""
    assert await rpc_error(system.orders.ListOrders(request_)) == (grpc.StatusCode.INVALID_ARGUMENT, message)


async def test_a_page_token_is_bound_to_its_customer(system: System) -> None:
    """A token from one customer's listing is refused for another customer."""
    page = await system.orders.ListOrders(pb.ListOrdersRequest(customer_id="1", page_size=1))
    code, details = await rpc_error(
        system.orders.ListOrders(pb.ListOrdersRequest(customer_id="2", page_token=page.next_page_token))
    )
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "page_token: was issued for a different customer_id")


async def test_create_order_reserves_stock_and_confirms(system: System) -> None:
    """CreateOrder returns a CONFIRMED order whose lines are reserved under its id."""
    before = await system.stock("SKU-003", "SKU-006")
    order = (await system.orders.CreateOrder(create("k1", "2", SKU_003=2, SKU_006=1))).order
    assert (order.customer_id, order.status) == ("2", CONFIRMED)
    assert [(line.sku, line.quantity) for line in order.lines] == [("SKU-003", 2), ("SKU-006", 1)]
    assert order.create_time.seconds > 0
    assert (await system.orders.GetOrder(pb.GetOrderRequest(order_id=order.order_id))).order == order
    after = await system.stock("SKU-003", "SKU-006")
    assert [a.reserved - b.reserved for a, b in zip(after, before, strict=True)] == [2, 1]
    assert system.reservations(order.order_id) == 1


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (create("k", "999", SKU_003=1), "customer '999' not found"),
        (create("k", "2", SKU_003=1, SKU_999=1), "product 'SKU-999' not found"),
        (create("k", "2", SKU_003=1, SKU_001=100),
         f"insufficient stock for sku 'SKU-001': 100 requested, {AVAILABLE['SKU-001']} available"),
        (create("k", "2", SKU_030=1), "insufficient stock for sku 'SKU-030': 1 requested, 0 available"),
    ],
)
async def test_a_refused_order_is_cancelled_and_holds_nothing(
    system: System, request_: pb.CreateOrderRequest, message: str
) -> None:
    """An unknown customer or sku, or too little stock: FAILED_PRECONDITION naming it, CANCELLED, nothing held."""
    skus = [line.sku for line in request_.lines if line.sku != "SKU-999"]
    before = await system.stock(*skus)
    assert await rpc_error(system.orders.CreateOrder(request_)) == (grpc.StatusCode.FAILED_PRECONDITION, message)
    assert await system.stock(*skus) == before
    [cancelled] = (await system.orders.ListOrders(pb.ListOrdersRequest(customer_id=request_.customer_id,
                                                                         page_size=1))).orders
    assert cancelled.status == CANCELLED
    assert system.reservations(cancelled.order_id) == 0
    # Replaying the key gives the same answer and changes nothing.
    assert await rpc_error(system.orders.CreateOrder(request_)) == (grpc.StatusCode.FAILED_PRECONDITION, message)
    assert system.orders_with_key("k") == 1


async def test_replaying_a_key_returns_the_same_order(system: System) -> None:
    """The same key and request returns the first order and reserves nothing more."""
    first = (await system.orders.CreateOrder(create("k1", "2", SKU_003=2, SKU_006=1))).order
    stock = await system.stock("SKU-003", "SKU-006")
    again = (await system.orders.CreateOrder(create("k1", "2", SKU_003=2, SKU_006=1))).order
    reordered = (await system.orders.CreateOrder(create("k1", "2", SKU_006=1, SKU_003=2))).order
    assert again == first == reordered
    assert await system.stock("SKU-003", "SKU-006") == stock
    assert system.orders_with_key("k1") == 1


async def test_concurrent_calls_with_one_key_place_one_order(system: System) -> None:
    """20 concurrent calls with one key all get the same CONFIRMED order, reserved once."""
    [before] = await system.stock("SKU-006")
    responses = await asyncio.gather(
        *(system.orders.CreateOrder(create("same", "3", SKU_006=2), timeout=10) for _ in range(20))
    )
    orders = {r.order.SerializeToString(deterministic=True) for r in responses}
    assert len(orders) == 1
    assert responses[0].order.status == CONFIRMED
    [after] = await system.stock("SKU-006")
    assert after.reserved == before.reserved + 2
    assert system.orders_with_key("same") == 1


@pytest.mark.parametrize(
    "conflicting", [create("k1", "2", SKU_003=3), create("k1", "3", SKU_003=2), create("k1", "2", SKU_003=2, SKU_006=1)]
)
async def test_reusing_a_key_for_another_order_already_exists(
    system: System, conflicting: pb.CreateOrderRequest
) -> None:
    """The same key with another customer or other lines is ALREADY_EXISTS naming the key, and writes nothing."""
    first = (await system.orders.CreateOrder(create("k1", "2", SKU_003=2))).order
    stock = await system.stock("SKU-003", "SKU-006")
    code, details = await rpc_error(system.orders.CreateOrder(conflicting))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert details.startswith(f"idempotency_key 'k1' was already used for a different order ({first.order_id})")
    assert await system.stock("SKU-003", "SKU-006") == stock
    assert count_rows(system.data_dir / "orders.db", "orders") == len(demo.ORDERS) + 1


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (create("", "2", SKU_003=1), "idempotency_key: must not be empty"),
        (create("k" * 129, "2", SKU_003=1), "idempotency_key: must be at most 128 characters"),
        (create("k", "", SKU_003=1), "customer_id: must not be empty"),
        (create("k", "2"), "lines: must have at least 1 item"),
        (create("k", "2", **{f"S{i}": 1 for i in range(101)}), "lines: at most 100 items"),
        (create("k", "2", SKU_003=1, SKU_004=1, SKU_005=0), "lines[2].quantity: must be at least 1"),
        (pb.CreateOrderRequest(idempotency_key="k", customer_id="2", lines=[pb.OrderLine(quantity=1)]),
         "lines[0].sku: must not be empty"),
        (pb.CreateOrderRequest(
            idempotency_key="k",
            customer_id="2",
            lines=[pb.OrderLine(sku="SKU-003", quantity=1), pb.OrderLine(sku="SKU-003", quantity=2)],
        ),
         "lines[1].sku: must not repeat 'SKU-003' (already in line 0)"),
    ],
)
async def test_create_order_rejects_bad_fields(system: System, request_: pb.CreateOrderRequest, message: str) -> None:
    """A bad CreateOrder is INVALID_ARGUMENT naming the field and rule, and no order is recorded."""
    assert await rpc_error(system.orders.CreateOrder(request_)) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert count_rows(system.data_dir / "orders.db", "orders") == len(demo.ORDERS)


async def test_an_unreachable_owner_leaves_the_order_pending_until_a_replay(tmp_path: Path) -> None:
    """With inventory down the error names it and the order stays PENDING; a replay once it is up confirms it."""
    async with owners_running(tmp_path) as upstreams:
        down = {**upstreams, "inventory": (unused_address(),)}
        async with system_running(tmp_path, down) as broken:
            code, details = await rpc_error(broken.orders.CreateOrder(create("k1", "2", SKU_003=1), timeout=3))
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert "inventory" in details
            [pending] = (await broken.orders.ListOrders(pb.ListOrdersRequest(customer_id="2", page_size=1))).orders
            assert pending.status == PENDING
            assert broken.reservations(pending.order_id) == 0
        async with system_running(tmp_path, upstreams) as healed:
            order = (await healed.orders.CreateOrder(create("k1", "2", SKU_003=1), timeout=10)).order
            assert (order.order_id, order.status) == (pending.order_id, CONFIRMED)
            assert healed.reservations(order.order_id) == 1


async def test_recovery_drives_pending_orders_to_an_end_state(tmp_path: Path, target: StoreTarget) -> None:
    """A recovery pass confirms a PENDING order the owners accept and cancels one they refuse (either backend)."""
    async with owners_running(tmp_path / "owners") as upstreams:
        store = await OrderStore.open(target("orders"))
        owners = Upstreams.connect("orders", upstreams, ResilienceConfig())
        try:
            good = await store.begin("good", "2", [("SKU-003", 1)])
            bad = await store.begin("bad", "2", [("SKU-030", 1)])
            recovery = Recovery(store, Placement(store, owners))
            await recovery.adopt()
            assert await recovery.run_once() == []
            assert (await store.get(good.order_id)).status == CONFIRMED
            refused = await store.get(bad.order_id)
            assert (refused.status, refused.cancel_reason) == (
                CANCELLED, "insufficient stock for sku 'SKU-030': 1 requested, 0 available"
            )
            assert await store.pending() == []
        finally:
            await owners.close()
            await store.close()
