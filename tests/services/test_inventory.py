"""InventoryService against the demo seed, over a real channel: stock, reservations, dedup, no oversell."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest

from pullgate.inventory.v1 import inventory_pb2 as pb
from pullgate.inventory.v1 import inventory_pb2_grpc
from services import demo
from tests.services.conftest import StoreTarget
from tests.support import count_rows, rpc_error

if TYPE_CHECKING:
    from pullgate.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub as Stub

INITIAL = {s.sku: s.initial for s in demo.STOCK}


@pytest.fixture
def stub(inventory_channel: grpc.aio.Channel) -> Stub:
    return inventory_pb2_grpc.InventoryServiceStub(inventory_channel)


def line(sku: str, quantity: int) -> pb.ReservationLine:
    return pb.ReservationLine(sku=sku, quantity=quantity)


async def stock(stub: Stub, *skus: str) -> list[pb.Stock]:
    return list((await stub.BatchGetStock(pb.BatchGetStockRequest(skus=skus))).stocks)


async def test_get_stock_counts_the_seeded_reservations(stub: Stub) -> None:
    """GetStock of a seeded sku shows the demo orders' reservations as reserved."""
    response = await stub.GetStock(pb.GetStockRequest(sku="SKU-001"))
    assert response.stock == pb.Stock(
        sku="SKU-001", available=INITIAL["SKU-001"] - demo.reserved("SKU-001"), reserved=demo.reserved("SKU-001")
    )


async def test_batch_get_keeps_request_order(stub: Stub) -> None:
    """BatchGetStock answers in request order."""
    assert [s.sku for s in await stock(stub, "SKU-005", "SKU-001", "SKU-030")] == ["SKU-005", "SKU-001", "SKU-030"]


async def test_unknown_sku_is_not_found(stub: Stub) -> None:
    """An unknown sku is NOT_FOUND naming it; in a batch, the first one."""
    code, details = await rpc_error(stub.GetStock(pb.GetStockRequest(sku="SKU-999")))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "stock for sku 'SKU-999' not found")
    code, details = await rpc_error(stub.BatchGetStock(pb.BatchGetStockRequest(skus=["SKU-001", "A", "B"])))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "stock for sku 'A' not found")


async def test_reserve_moves_units_from_available_to_reserved(stub: Stub) -> None:
    """ReserveStock answers with the stock right after, in line order, and GetStock agrees."""
    [before_6, before_2] = await stock(stub, "SKU-006", "SKU-002")
    response = await stub.ReserveStock(
        pb.ReserveStockRequest(reservation_id="r1", lines=[line("SKU-006", 3), line("SKU-002", 1)])
    )
    assert response.reservation_id == "r1"
    assert list(response.stocks) == [
        pb.Stock(sku="SKU-006", available=before_6.available - 3, reserved=before_6.reserved + 3),
        pb.Stock(sku="SKU-002", available=before_2.available - 1, reserved=before_2.reserved + 1),
    ]
    assert await stock(stub, "SKU-006", "SKU-002") == list(response.stocks)


async def test_insufficient_stock_reserves_nothing(stub: Stub, target: StoreTarget) -> None:
    """Too little stock for one line is FAILED_PRECONDITION naming the sku, and no line is reserved."""
    before = await stock(stub, "SKU-006", "SKU-001")
    too_many = before[1].available + 1
    request = pb.ReserveStockRequest(reservation_id="r1", lines=[line("SKU-006", 1), line("SKU-001", too_many)])
    code, details = await rpc_error(stub.ReserveStock(request))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == f"insufficient stock for sku 'SKU-001': {too_many} requested, {before[1].available} available"
    assert await stock(stub, "SKU-006", "SKU-001") == before
    assert count_rows(target("inventory"), "reservations", "reservation_id = 'r1'") == 0


async def test_reserve_of_an_unknown_sku_is_not_found(stub: Stub) -> None:
    """A line with an unknown sku is NOT_FOUND naming it, and nothing is reserved."""
    before = await stock(stub, "SKU-006")
    request = pb.ReserveStockRequest(reservation_id="r1", lines=[line("SKU-006", 1), line("NOPE", 1)])
    code, details = await rpc_error(stub.ReserveStock(request))
    assert (code, details) == (grpc.StatusCode.NOT_FOUND, "stock for sku 'NOPE' not found")
    assert await stock(stub, "SKU-006") == before


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (pb.ReserveStockRequest(lines=[line("SKU-001", 1)]), "reservation_id: must not be empty"),
        (pb.ReserveStockRequest(reservation_id="r" * 129, lines=[line("SKU-001", 1)]),
         "reservation_id: must be at most 128 characters"),
        (pb.ReserveStockRequest(reservation_id="r"), "lines: must have at least 1 item"),
        (pb.ReserveStockRequest(reservation_id="r", lines=[line(f"S{i}", 1) for i in range(101)]),
         "lines: at most 100 items"),
        (pb.ReserveStockRequest(reservation_id="r", lines=[line("SKU-002", 1), line("", 1)]),
         "lines[1].sku: must not be empty"),
        (pb.ReserveStockRequest(reservation_id="r", lines=[line("SKU-002", 1), line("SKU-003", 1),
                                                           line("SKU-004", 0)]),
         "lines[2].quantity: must be at least 1"),
        (pb.ReserveStockRequest(reservation_id="r", lines=[line("SKU-002", 1), line("SKU-003", -5)]),
         "lines[1].quantity: must be at least 1"),
        (pb.ReserveStockRequest(reservation_id="r", lines=[line("SKU-002", 1), line("SKU-002", 1)]),
         "lines[1].sku: must not repeat 'SKU-002' (already in line 0)"),
    ],
)
async def test_reserve_rejects_bad_fields(
    stub: Stub, target: StoreTarget, request_: pb.ReserveStockRequest, message: str
) -> None:
    """A bad reservation is INVALID_ARGUMENT naming the field and rule, and nothing is written."""
    before = count_rows(target("inventory"), "reservations")
    code, details = await rpc_error(stub.ReserveStock(request_))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert count_rows(target("inventory"), "reservations") == before


async def test_replaying_a_reservation_returns_the_first_result(stub: Stub) -> None:
    """The same reservation_id with the same lines returns the first answer and reserves nothing more."""
    request = pb.ReserveStockRequest(reservation_id="r1", lines=[line("SKU-006", 2), line("SKU-003", 1)])
    first = await stub.ReserveStock(request)
    await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="r2", lines=[line("SKU-006", 1)]))
    replay = await stub.ReserveStock(request)
    assert replay == first
    reordered = pb.ReserveStockRequest(reservation_id="r1", lines=[line("SKU-003", 1), line("SKU-006", 2)])
    assert list((await stub.ReserveStock(reordered)).stocks) == [first.stocks[1], first.stocks[0]]
    [now] = await stock(stub, "SKU-006")
    assert now.reserved == demo.reserved("SKU-006") + 3


async def test_reusing_a_reservation_id_for_other_lines_already_exists(stub: Stub) -> None:
    """The same reservation_id with different lines is ALREADY_EXISTS naming the id, and reserves nothing."""
    await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="r1", lines=[line("SKU-006", 2)]))
    before = await stock(stub, "SKU-006")
    code, details = await rpc_error(
        stub.ReserveStock(pb.ReserveStockRequest(reservation_id="r1", lines=[line("SKU-006", 3)]))
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert details.startswith("reservation_id 'r1' was already used for different lines (SKU-006 x2)")
    assert await stock(stub, "SKU-006") == before


async def test_release_returns_units_once(stub: Stub) -> None:
    """ReleaseReservation returns the units to available on the first call only."""
    before = await stock(stub, "SKU-006", "SKU-003")
    await stub.ReserveStock(pb.ReserveStockRequest(reservation_id="r1", lines=[line("SKU-006", 2), line("SKU-003", 4)]))
    first = await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="r1"))
    second = await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="r1"))
    unknown = await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="never"))
    assert (first.released, second.released, unknown.released) == (True, False, False)
    assert await stock(stub, "SKU-006", "SKU-003") == before


async def test_release_of_a_seeded_order_reservation(stub: Stub) -> None:
    """The demo order "1" holds a reservation under its id that can be released."""
    response = await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="1"))
    assert response.released
    [sku_001] = await stock(stub, "SKU-001")
    assert sku_001.available + sku_001.reserved == INITIAL["SKU-001"]


async def test_release_requires_an_id(stub: Stub) -> None:
    """An empty reservation_id is INVALID_ARGUMENT."""
    code, details = await rpc_error(stub.ReleaseReservation(pb.ReleaseReservationRequest()))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "reservation_id: must not be empty")


async def test_concurrent_reservations_never_oversell(stub: Stub, target: StoreTarget) -> None:
    """50 concurrent two-line reservations: exactly as many succeed as the scarce sku allows, each all or none."""
    [scarce, plenty] = await stock(stub, "SKU-012", "SKU-025")
    assert 0 < scarce.available < 50 <= plenty.available
    requests = [
        pb.ReserveStockRequest(reservation_id=f"c{i}", lines=[line("SKU-025", 1), line("SKU-012", 1)])
        for i in range(50)
    ]
    results = await asyncio.gather(*(stub.ReserveStock(r) for r in requests), return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert all(r.code() == grpc.StatusCode.FAILED_PRECONDITION for r in refused)
    assert len(results) - len(refused) == scarce.available
    [scarce_after, plenty_after] = await stock(stub, "SKU-012", "SKU-025")
    assert scarce_after.available == 0
    assert plenty_after.reserved == plenty.reserved + scarce.available, "a refused reservation took no line"
    for s in (scarce_after, plenty_after):
        assert s.available + s.reserved == INITIAL[s.sku]
    assert count_rows(target("inventory"), "reservations", "reservation_id LIKE 'c%'") == scarce.available
