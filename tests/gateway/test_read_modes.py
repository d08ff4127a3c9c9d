"""Each read mode through the gateway, against real owners that are up, down, slow or hanging.

Time passes only when a test advances the system's clock (tests/gateway/system.py): that is how a cached copy
gets old, and how an injected delay ends. A test that waits out grpc's own deadline on the wire, which grpc keeps
in real time, runs the gateway on the real clock, and gives the owner it waits out a short per-attempt timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import pytest

from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from resilience import SYSTEM_CLOCK
from tests.gateway.system import System, system
from tests.support import rpc_error

STRONG, BOUNDED, AVAILABLE = pb.CONSISTENCY_STRONG, pb.CONSISTENCY_BOUNDED_STALENESS, pb.CONSISTENCY_AVAILABLE
NOT_STRONG = [pytest.param(BOUNDED, id="bounded"), pytest.param(AVAILABLE, id="available")]
MODES = [pytest.param(STRONG, id="strong"), *NOT_STRONG]

# Order 1 of the demo data: customer 1, three lines.
SKUS = ("SKU-001", "SKU-002", "SKU-003")
ORDER_PARTS = {"order:1", "customer:1", *(f"product:{s}" for s in SKUS), *(f"stock:{s}" for s in SKUS)}

AGED = 5.0
"""How far a test moves the clock after a good read, in seconds: past the default cache TTL (1 s), so the next
read asks the owner and what it sees after a failure is stale-if-error, not a hit; within the default max
staleness (30 s), so a stale copy may still serve it."""
SLOW_CALLER = 1.5
"""The caller's timeout, in seconds, in tests where an owner is slower than that."""
GIVE_UP = 0.1
"""The per-attempt timeout, in seconds, of an owner that is slow or hangs. Tests wait it out in real time (grpc
keeps the deadline it is sent in real time), so it is short; the other owners keep the default 1 s, which a
loaded test machine does not make them miss."""


def _waiting_out(*owners: str, margin: float | None = 0.25) -> dict[str, Any]:
    """The config of a test that waits out grpc's deadline on `owners`, each given up on after GIVE_UP per attempt.

    No fresh cache (every read asks the owner), so what a test sees after a failure is stale-if-error, not a hit;
    a wide response margin (None: the default) so a loaded test machine still answers before the caller's deadline.
    """
    config: dict[str, Any] = {"resilience": {"default": {"cache": {"ttl": 1e-6}}}}
    config["resilience"].update({owner: {"timeout": {"per_attempt": GIVE_UP}} for owner in owners})
    if margin is not None:
        config["gateway"] = {"response_margin": margin}
    return config


def _read(consistency: pb.Consistency.ValueType, max_staleness: float | None = None) -> pb.ReadOptions:
    read = pb.ReadOptions(consistency=consistency)
    if max_staleness is not None:
        read.max_staleness.FromNanoseconds(int(max_staleness * 1e9))
    return read


def _view(s: System, consistency: pb.Consistency.ValueType, *, timeout: float = 10.0,
          max_staleness: float | None = None, order_id: str = "1") -> Awaitable[pb.GetOrderViewResponse]:
    request = pb.GetOrderViewRequest(order_id=order_id, read=_read(consistency, max_staleness))
    return s.stub.GetOrderView(request, timeout=timeout)


def _parts(response: Any) -> dict[str, pb.PartStatus]:
    parts = {part.part: part for part in response.parts}
    assert len(parts) == len(response.parts), "each part is listed once"
    return parts


def _sources(response: Any) -> dict[str, str]:
    return {name: pb.Source.Name(part.source) for name, part in _parts(response).items()}


def _age(part: pb.PartStatus) -> float:
    return part.age.ToTimedelta().total_seconds()


def _of(parts: dict[str, pb.PartStatus], kind: str) -> list[pb.PartStatus]:
    return [part for name, part in parts.items() if name.startswith(f"{kind}:")]


@pytest.fixture
async def s(tmp_path: Path) -> AsyncIterator[System]:
    async with system(tmp_path) as running:
        yield running


# Every owner up


@pytest.mark.parametrize("consistency", MODES)
async def test_every_part_is_live_when_every_owner_is_up(s: System, consistency: pb.Consistency.ValueType) -> None:
    """With every owner up, each mode lists every part of the view as live, age zero, no reason, not degraded."""
    response = await _view(s, consistency)
    parts = _parts(response)
    assert set(parts) == ORDER_PARTS
    assert all(p.source == pb.SOURCE_LIVE and _age(p) == 0 and not p.reason for p in parts.values())
    assert not response.degraded
    assert [line.product.sku for line in response.view.lines] == list(SKUS)


# An owner down


@pytest.mark.parametrize("consistency", NOT_STRONG)
async def test_a_down_owner_with_nothing_cached_leaves_its_parts_missing(
    s: System, consistency: pb.Consistency.ValueType
) -> None:
    """With catalog down and nothing cached, non-strong reads answer with every product missing, naming catalog."""
    await s.stop("catalog")
    response = await _view(s, consistency)
    parts = _parts(response)
    assert set(parts) == ORDER_PARTS
    for part in _of(parts, "product"):
        assert part.source == pb.SOURCE_MISSING and _age(part) == 0
        assert part.reason.startswith("catalog: ")
    assert all(p.source == pb.SOURCE_LIVE for n, p in parts.items() if not n.startswith("product:"))
    assert response.degraded
    assert not any(line.HasField("product") for line in response.view.lines)
    assert all(line.HasField("stock") for line in response.view.lines)


async def test_a_strong_read_fails_unavailable_naming_the_down_owner(s: System) -> None:
    """A strong read with catalog down fails UNAVAILABLE, naming catalog and why."""
    await s.stop("catalog")
    code, details = await rpc_error(_view(s, STRONG))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details.startswith("strong read: products SKU-001, SKU-002, SKU-003 could not be fetched live: catalog: ")


async def test_a_strong_read_fails_unavailable_when_an_owner_errors(s: System) -> None:
    """An owner answering INTERNAL makes a strong read UNAVAILABLE, with the owner's code in the message."""
    s.fault("customers", "error:INTERNAL")
    code, details = await rpc_error(_view(s, STRONG))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "customer:1 could not be fetched live: customers: INTERNAL: injected fault" in details


@pytest.mark.parametrize("consistency", NOT_STRONG)
async def test_a_down_owner_is_served_stale_with_its_age_and_reason(
    s: System, consistency: pb.Consistency.ValueType
) -> None:
    """After a good read, inventory going down leaves each stock part stale, with one age and reason per batch."""
    before = await _view(s, BOUNDED)
    await s.stop("inventory")
    await s.clock.advance(AGED)
    response = await _view(s, consistency)
    parts = _parts(response)
    stock = _of(parts, "stock")
    assert {pb.Source.Name(p.source) for p in stock} == {"SOURCE_STALE"}
    assert len({(_age(p), p.reason) for p in stock}) == 1, "parts of one batched call carry that call's provenance"
    assert _age(stock[0]) == AGED
    assert stock[0].reason.startswith("inventory: ")
    assert all(p.source == pb.SOURCE_LIVE for p in _of(parts, "product"))
    assert [line.stock for line in response.view.lines] == [line.stock for line in before.view.lines]
    assert response.degraded


async def test_stale_data_beyond_the_callers_bound_is_missing(s: System) -> None:
    """A bounded read whose max_staleness is shorter than the stale copy's age gets the parts missing instead."""
    await _view(s, BOUNDED)
    await s.stop("inventory")
    await s.clock.advance(AGED)
    within = await _view(s, BOUNDED, max_staleness=60.0)
    beyond = await _view(s, BOUNDED, max_staleness=AGED / 2)
    assert all(p.source == pb.SOURCE_STALE for p in _of(_parts(within), "stock"))
    for part in _of(_parts(beyond), "stock"):
        assert part.source == pb.SOURCE_MISSING and part.reason.startswith("inventory: ")
    assert not any(line.HasField("stock") for line in beyond.view.lines)
    assert beyond.degraded


async def test_a_strong_read_never_uses_the_stale_copy(s: System) -> None:
    """After a good read, a strong read with inventory down still fails UNAVAILABLE naming inventory."""
    await _view(s, BOUNDED)
    await s.stop("inventory")
    await s.clock.advance(AGED)
    code, details = await rpc_error(_view(s, STRONG))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "stock of SKU-001, SKU-002, SKU-003 could not be fetched live: inventory: " in details


async def test_the_default_bound_is_each_owners_configured_staleness(tmp_path: Path) -> None:
    """With no max_staleness in the request, each owner's `[resilience.<owner>.cache] max_staleness` applies."""
    config = {"resilience": {"catalog": {"cache": {"max_staleness": AGED / 2}}}}
    async with system(tmp_path, config) as s:
        await _view(s, BOUNDED)
        await s.stop("catalog")
        await s.stop("customers")
        await s.clock.advance(AGED)
        response = await _view(s, BOUNDED)
    parts = _parts(response)
    assert parts["customer:1"].source == pb.SOURCE_STALE
    assert all(p.source == pb.SOURCE_MISSING for p in _of(parts, "product"))


async def test_an_open_circuit_is_named_in_the_reason(tmp_path: Path) -> None:
    """Once catalog's breaker opens, its parts say "catalog: circuit open (replica)"."""
    config = {"resilience": {"catalog": {"breaker": {"fail_max": 1, "reset_timeout": 60.0}}}}
    async with system(tmp_path, config) as s:
        s.fault("catalog", "error:UNAVAILABLE")
        reasons = []
        for _ in range(10):
            reasons.append(_parts(await _view(s, BOUNDED))["product:SKU-001"].reason)
            if "circuit open" in reasons[-1]:
                break
    assert reasons[-1].startswith("catalog: circuit open (127.0.0.1:"), reasons


# The order itself


@pytest.mark.parametrize(("consistency", "needle"), [
    pytest.param(STRONG, "strong read: order:1 could not be fetched live: orders: ", id="strong"),
    pytest.param(BOUNDED, "bounded_staleness read: order:1 is required and could not be had live or within "
                 "max staleness 30s: orders: ", id="bounded"),
])
async def test_without_the_order_strong_and_bounded_reads_fail(
    s: System, consistency: pb.Consistency.ValueType, needle: str
) -> None:
    """With orders down, strong and bounded reads fail UNAVAILABLE, naming the order, orders and why."""
    await s.stop("orders")
    code, details = await rpc_error(_view(s, consistency))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details.startswith(needle)


async def test_without_the_order_an_available_read_still_answers(s: System) -> None:
    """With orders down and nothing cached, an available read answers an empty view whose order is missing."""
    await s.stop("orders")
    response = await _view(s, AVAILABLE)
    assert _sources(response) == {"order:1": "SOURCE_MISSING"}
    assert response.parts[0].reason.startswith("orders: ")
    assert not response.view.HasField("order")
    assert response.degraded


async def test_an_order_that_does_not_exist_is_not_found_in_every_mode(s: System) -> None:
    """An unknown order is NOT_FOUND even for an available read: the owner's answer, not an outage."""
    for consistency in (STRONG, BOUNDED, AVAILABLE):
        code, details = await rpc_error(_view(s, consistency, order_id="424242"))
        assert code == grpc.StatusCode.NOT_FOUND
        assert "424242" in details


# A slow owner


async def test_a_strong_read_of_a_slow_owner_fails_in_time_naming_it(tmp_path: Path) -> None:
    """A strong read with inventory slower than its deadline fails DEADLINE_EXCEEDED with the gateway's message."""
    async with system(tmp_path, _waiting_out("inventory"), gateway_clock=SYSTEM_CLOCK) as s:
        s.fault("inventory", "delay:30s")
        code, details = await rpc_error(_view(s, STRONG, timeout=SLOW_CALLER))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "stock of SKU-001, SKU-002, SKU-003 could not be fetched live: inventory: deadline exceeded" in details


async def test_a_bounded_read_of_a_slow_owner_answers_with_its_parts_missing(tmp_path: Path) -> None:
    """A bounded read with inventory too slow and nothing cached answers in time, stock missing for the deadline."""
    async with system(tmp_path, _waiting_out("inventory"), gateway_clock=SYSTEM_CLOCK) as s:
        s.fault("inventory", "delay:30s")
        response = await _view(s, BOUNDED, timeout=SLOW_CALLER)
    parts = _parts(response)
    for part in _of(parts, "stock"):
        assert part.source == pb.SOURCE_MISSING
        assert part.reason.startswith("inventory: deadline exceeded")
    assert all(p.source == pb.SOURCE_LIVE for p in _of(parts, "product"))
    assert response.degraded


async def test_a_slow_owner_within_the_deadline_is_live(s: System) -> None:
    """An owner slower than usual but within the deadline gives live parts."""
    s.fault("catalog", "delay:100ms")
    call = _view(s, STRONG)  # under way: catalog holds it until the clock passes the delay
    await s.held("catalog")
    await s.clock.advance(0.1)
    response = await call
    assert set(_sources(response).values()) == {"SOURCE_LIVE"}


@pytest.mark.parametrize("margin", [pytest.param(None, id="default-margin"), pytest.param(0.25, id="wide-margin")])
async def test_an_available_read_answers_before_the_deadline_while_owners_hang(
    tmp_path: Path, margin: float | None
) -> None:
    """With customers, catalog and inventory hanging, an available read answers in time with their stale copies."""
    hanging = topology.service("orders").upstreams
    async with system(tmp_path, _waiting_out(*hanging, margin=margin), gateway_clock=SYSTEM_CLOCK) as s:
        before = await _view(s, AVAILABLE)
        for owner in hanging:
            s.fault(owner, "hang")
        response = await _view(s, AVAILABLE, timeout=SLOW_CALLER)
    parts = _parts(response)
    assert parts.pop("order:1").source == pb.SOURCE_LIVE
    for name, part in parts.items():
        assert part.source == pb.SOURCE_STALE, name
        assert "deadline exceeded" in part.reason
    assert response.view.customer == before.view.customer
    assert response.degraded


async def test_an_available_read_answers_in_time_while_orders_hangs(tmp_path: Path) -> None:
    """With orders hanging and nothing cached, an available read answers before the deadline, the order missing."""
    async with system(tmp_path, _waiting_out("orders"), gateway_clock=SYSTEM_CLOCK) as s:
        s.fault("orders", "hang")
        response = await _view(s, AVAILABLE, timeout=SLOW_CALLER)
    assert _sources(response) == {"order:1": "SOURCE_MISSING"}
    assert response.parts[0].reason.startswith("orders: deadline exceeded")


# The fresh cache


async def test_cached_parts_carry_their_real_age_and_strong_reads_skip_the_cache(tmp_path: Path) -> None:
    """A second bounded read is served from the cache with a real age; a strong read after it is live."""
    async with system(tmp_path, {"resilience": {"default": {"cache": {"ttl": 600.0}}}}) as s:
        await _view(s, BOUNDED)
        await s.clock.advance(AGED)
        cached = await _view(s, BOUNDED)
        strong = await _view(s, STRONG)
        available = await _view(s, AVAILABLE)
    parts = _parts(cached)
    assert parts.pop("order:1").source == pb.SOURCE_CACHED
    for name, part in parts.items():
        assert part.source == pb.SOURCE_CACHED, name
        assert _age(part) == AGED
        assert part.reason.endswith(": cached, within max staleness 30s")
    assert _parts(cached)["product:SKU-001"].reason == "catalog: cached, within max staleness 30s"
    assert not cached.degraded
    assert set(_sources(strong).values()) == {"SOURCE_LIVE"}
    assert _parts(available)["stock:SKU-001"].reason == "inventory: cached, within any age"


# The customer overview


def _overview(s: System, consistency: pb.Consistency.ValueType) -> Awaitable[pb.GetCustomerOverviewResponse]:
    return s.stub.GetCustomerOverview(
        pb.GetCustomerOverviewRequest(customer_id="1", page_size=3, read=_read(consistency)), timeout=10
    )


async def test_an_overview_lists_the_customer_the_orders_and_each_product(s: System) -> None:
    """An overview's parts are the customer, the order list and each product of the listed orders, all live."""
    response = await _overview(s, BOUNDED)
    skus = {line.sku for order in response.overview.orders for line in order.order.lines}
    assert set(_parts(response)) == {"customer:1", "orders:1", *(f"product:{sku}" for sku in skus)}
    assert set(_sources(response).values()) == {"SOURCE_LIVE"}


@pytest.mark.parametrize(("consistency", "needle"), [
    pytest.param(STRONG, "strong read: customer:1 could not be fetched live: customers: ", id="strong"),
    pytest.param(BOUNDED, "bounded_staleness read: customer:1 is required and could not be had", id="bounded"),
])
async def test_an_overview_without_its_customer_fails_unless_available(
    s: System, consistency: pb.Consistency.ValueType, needle: str
) -> None:
    """With customers down, strong and bounded overviews fail UNAVAILABLE naming the customer and customers."""
    await s.stop("customers")
    code, details = await rpc_error(_overview(s, consistency))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details.startswith(needle)


async def test_an_available_overview_without_its_customer_still_lists_the_orders(s: System) -> None:
    """With customers down, an available overview has the customer missing and the orders and products live."""
    await s.stop("customers")
    response = await _overview(s, AVAILABLE)
    sources = _sources(response)
    assert sources.pop("customer:1") == "SOURCE_MISSING"
    assert sources and set(sources.values()) == {"SOURCE_LIVE"}
    assert not response.overview.HasField("customer")
    assert response.overview.orders
    assert response.degraded


async def test_an_overview_with_catalog_down_has_its_products_missing(s: System) -> None:
    """With catalog down, a bounded overview answers with every product missing and says it is degraded."""
    await s.stop("catalog")
    response = await _overview(s, BOUNDED)
    parts = _parts(response)
    assert parts.pop("customer:1").source == pb.SOURCE_LIVE
    assert parts.pop("orders:1").source == pb.SOURCE_LIVE
    assert parts and all(p.source == pb.SOURCE_MISSING and p.reason.startswith("catalog: ") for p in parts.values())
    assert response.degraded
