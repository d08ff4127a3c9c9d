"""Reservation holds: a hold expires unless committed, commit and release are idempotent, a released id stays dead."""

from __future__ import annotations

import datetime
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pullgate.errors import FailedPrecondition, NotFound
from pullgate.inventory.v1 import inventory_pb2 as pb
from pullgate.inventory.v1 import inventory_pb2_grpc
from services import demo
from services._db import open_database
from services.inventory.holds import HOLD_ENV, hold_from_env, sweep_interval
from services.inventory.store import MIGRATIONS, InventoryStore
from tests.services.conftest import StoreTarget
from tests.support import query, rpc_error

if TYPE_CHECKING:
    from pullgate.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub as Stub

INITIAL = {s.sku: s.initial for s in demo.STOCK}
T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


class FakeClock:
    """UTC time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


@pytest.fixture
async def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(target: StoreTarget, clock: FakeClock) -> AsyncIterator[InventoryStore]:
    """The inventory store, once on SQLite and once on PostgreSQL."""
    opened = await InventoryStore.open(target("inventory"), hold=10.0, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def stub(inventory_channel: grpc.aio.Channel) -> Stub:
    return inventory_pb2_grpc.InventoryServiceStub(inventory_channel)


async def adds_up(store: InventoryStore, sku: str) -> bool:
    [row] = await store.get_many([sku])
    return row.available + row.reserved == INITIAL[sku] and row.reserved == (await store.held()).get(sku, 0)


async def test_an_uncommitted_hold_expires_and_its_stock_returns(store: InventoryStore, clock: FakeClock) -> None:
    """A hold nobody commits is released by the sweep once its time is up, not before."""
    [before] = await store.get_many(["SKU-006"])
    made = await store.reserve("r1", [("SKU-006", 3)])
    assert made.expire_time == "2030-01-01T00:00:10.000000Z"
    clock.advance(9.999)
    assert await store.sweep() == []
    clock.advance(0.001)
    assert await store.sweep() == ["r1"]
    assert await store.get_many(["SKU-006"]) == [before]
    assert await adds_up(store, "SKU-006")
    assert await store.sweep() == []


async def test_a_committed_hold_never_expires(store: InventoryStore, clock: FakeClock) -> None:
    """Committing within the hold makes the reservation permanent; replays then report no expiry."""
    await store.reserve("r1", [("SKU-006", 3)])
    assert await store.commit("r1") is True
    assert await store.commit("r1") is False
    clock.advance(3600)
    assert await store.sweep() == []
    replay = await store.reserve("r1", [("SKU-006", 3)])
    assert replay.expire_time is None
    assert (await store.held())["SKU-006"] == demo.reserved("SKU-006") + 3


async def test_an_expired_hold_cannot_be_committed_or_replayed(store: InventoryStore, clock: FakeClock) -> None:
    """Past its expiry (swept or not) a hold is released on sight; commit and replay are refused naming it."""
    await store.reserve("r1", [("SKU-006", 3)])
    clock.advance(10)
    with pytest.raises(FailedPrecondition) as refused:
        await store.commit("r1")
    assert str(refused.value) == (
        "reservation 'r1' expired at 2030-01-01T00:00:10.000000Z before it was committed and holds no stock; "
        "reserve under a new reservation_id"
    )
    with pytest.raises(FailedPrecondition, match="'r1' expired at"):
        await store.reserve("r1", [("SKU-006", 3)])
    assert await adds_up(store, "SKU-006")
    assert await store.sweep() == []


async def test_a_released_reservation_is_never_reserved_again(store: InventoryStore) -> None:
    """Release is idempotent, and replaying a released id is refused instead of holding stock again."""
    await store.reserve("r1", [("SKU-006", 3)])
    await store.commit("r1")
    assert (await store.release("r1"), await store.release("r1")) == (True, False)
    with pytest.raises(FailedPrecondition, match=re.escape("'r1' was released at 2030-01-01T00:00:00.000000Z")):
        await store.reserve("r1", [("SKU-006", 3)])
    with pytest.raises(FailedPrecondition, match="'r1' was released"):
        await store.commit("r1")
    assert await adds_up(store, "SKU-006")


async def test_committing_an_unknown_reservation_is_not_found(store: InventoryStore) -> None:
    """CommitReservation of an id never reserved is NOT_FOUND naming it."""
    with pytest.raises(NotFound, match="reservation 'never' not found"):
        await store.commit("never")


async def test_a_hold_must_be_positive(tmp_path: Path) -> None:
    """A store with a zero hold is refused before it opens anything."""
    with pytest.raises(ValueError, match="hold must be a positive number of seconds"):
        await InventoryStore.open(tmp_path / "inventory.db", hold=0)


async def test_migration_counts_old_reservations_as_committed(target: StoreTarget, clock: FakeClock) -> None:
    """A database from before holds keeps its open reservations as committed, so none of them expires."""
    path = target("inventory")
    old = await open_database(path, MIGRATIONS[:1])
    await old.transaction(lambda conn: conn.execute("INSERT INTO stock VALUES ('S', 5, 2)"))
    await old.transaction(lambda conn: conn.executemany(
        "INSERT INTO reservations (reservation_id, create_time, release_time) VALUES (?, ?, ?)",
        [("open", "2020-01-01T00:00:00.000000Z", None), ("gone", "2020-01-01T00:00:00.000000Z", "2020-01-02")],
    ))
    await old.close()
    store = await InventoryStore.open(path, hold=1.0, clock=clock)
    try:
        clock.advance(3600)
        assert await store.sweep() == []
        assert await store.commit("open") is False
    finally:
        await store.close()
    assert query(path, "SELECT commit_time FROM reservations WHERE reservation_id = 'gone'") == [(None,)]


@pytest.mark.parametrize(
    ("value", "hold"), [(None, 60.0), ("", 60.0), ("2.5", 2.5), (" 0.2 ", 0.2), ("500ms", 0.5), ("2m", 120.0)]
)
def test_the_hold_comes_from_the_environment(value: str | None, hold: float) -> None:
    """PULLGATE_RESERVATION_HOLD sets the hold in seconds; unset or empty means 60."""
    environ = {} if value is None else {HOLD_ENV: value}
    assert hold_from_env(environ) == hold


@pytest.mark.parametrize(("value", "problem"), [
    ("0", "must be more than 0"),
    ("0ms", "must be more than 0"),
    ("-1", "'-1' is not a duration: use a number with a unit, like 500ms, 2s or 1.5m"),
    ("soon", "'soon' is not a duration"),
    ("inf", "'inf' is not a duration"),
    ("nan", "'nan' is not a duration"),
])
def test_a_bad_hold_names_the_variable(value: str, problem: str) -> None:
    """A hold that is not a positive duration is an error naming the variable, the value and the problem."""
    with pytest.raises(ValueError, match=re.escape(f"{HOLD_ENV}='{value}': {problem}")):
        hold_from_env({HOLD_ENV: value})


def test_the_sweep_runs_a_few_times_per_hold() -> None:
    """The sweeper looks four times per hold, at least every 5 s and at most every 50 ms."""
    assert (sweep_interval(60), sweep_interval(2), sweep_interval(0.1)) == (5.0, 0.5, 0.05)


async def test_commit_and_release_over_grpc(stub: Stub) -> None:
    """ReserveStock answers with the expiry; CommitReservation and ReleaseReservation say whether they acted."""
    reserved = await stub.ReserveStock(pb.ReserveStockRequest(
        reservation_id="r1", lines=[pb.ReservationLine(sku="SKU-006", quantity=2)]))
    assert reserved.HasField("expire_time")
    first = await stub.CommitReservation(pb.CommitReservationRequest(reservation_id="r1"))
    again = await stub.CommitReservation(pb.CommitReservationRequest(reservation_id="r1"))
    assert (first.committed, again.committed) == (True, False)
    replay = await stub.ReserveStock(pb.ReserveStockRequest(
        reservation_id="r1", lines=[pb.ReservationLine(sku="SKU-006", quantity=2)]))
    assert not replay.HasField("expire_time")
    assert (await stub.ReleaseReservation(pb.ReleaseReservationRequest(reservation_id="r1"))).released
    code, details = await rpc_error(stub.ReserveStock(pb.ReserveStockRequest(
        reservation_id="r1", lines=[pb.ReservationLine(sku="SKU-006", quantity=2)])))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and details.startswith("reservation 'r1' was released at")
    assert await rpc_error(stub.CommitReservation(pb.CommitReservationRequest(reservation_id="nope"))) == (
        grpc.StatusCode.NOT_FOUND, "reservation 'nope' not found"
    )
    assert await rpc_error(stub.CommitReservation(pb.CommitReservationRequest())) == (
        grpc.StatusCode.INVALID_ARGUMENT, "reservation_id: must not be empty"
    )
