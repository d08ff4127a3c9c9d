"""Fault injection: the spec grammar, the seeded plan, and faults on real grpc.aio servers with and without admin."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.faults import (
    Clause,
    Delay,
    Error,
    Fault,
    FaultInjector,
    FaultSpec,
    FaultSpecError,
    Hang,
    parse_faults,
)
from pullgate.serving import Binding, ServeOptions, run, running

NOT_A_DURATION = "is not a duration: use a number with a unit, like 500ms, 2s or 1.5m"
CATALOG = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name
FAULT_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name

# ---------------------------------------------------------------------------------------------------------------
# The grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", FaultSpec()),
        ("   ", FaultSpec()),
        ("delay:50ms", FaultSpec((Clause((Delay(0.05),)),))),
        ("hang@1%", FaultSpec((Clause((Hang(1.0),)),))),
        ("error:unavailable@0.5%", FaultSpec((Clause((Error(grpc.StatusCode.UNAVAILABLE, 0.5),)),))),
        ("catalog=delay:1.5s@100%", FaultSpec((Clause((Delay(1.5),), "catalog"),))),
        ("delay:1.5m;delay:1h", FaultSpec((Clause((Delay(90.0),)), Clause((Delay(3600.0),))))),
        (
            "catalog=delay:500ms@2%,error:UNAVAILABLE@1%;inventory=delay:500ms@2%",
            FaultSpec(
                (
                    Clause((Delay(0.5, 2.0), Error(grpc.StatusCode.UNAVAILABLE, 1.0)), "catalog"),
                    Clause((Delay(0.5, 2.0),), "inventory"),
                )
            ),
        ),
        (
            " catalog.GetProduct = error:NOT_FOUND @ 10% ; delay:0ms@0% ",
            FaultSpec(
                (
                    Clause((Error(grpc.StatusCode.NOT_FOUND, 10.0),), "catalog", "GetProduct"),
                    Clause((Delay(0.0, 0.0),)),
                )
            ),
        ),
    ],
)
def test_parses_good_specs(text: str, expected: FaultSpec) -> None:
    """A good spec parses to the clauses and faults it says, in order."""
    assert parse_faults(text) == expected


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("delay:50ms", "delay:50ms@100%"),
        ("delay:1.5s@2.50%", "delay:1500ms@2.5%"),
        ("delay:2000ms", "delay:2s@100%"),
        ("delay:0.5m", "delay:30s@100%"),
        ("catalog=error:unavailable@1%,hang@0.0001%", "catalog=error:UNAVAILABLE@1%,hang@0.0001%"),
        ("catalog.GetProduct=delay:0s ; orders=hang", "catalog.GetProduct=delay:0ms@100%;orders=hang@100%"),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    """str() of a spec is its canonical form: every chance written, codes upper case, whole seconds as s."""
    assert str(parse_faults(text)) == canonical


@pytest.mark.parametrize(
    ("text", "clause", "problem"),
    [
        ("catalog=delay:500@2%", "clause 1 'catalog=delay:500@2%'", f"'500' {NOT_A_DURATION}"),
        ("catalog=delay:fast", "clause 1", f"'fast' {NOT_A_DURATION}"),
        ("catalog=delay:-5ms", "clause 1", f"'-5ms' {NOT_A_DURATION}"),
        ("catalog=delay:2d", "clause 1", f"'2d' {NOT_A_DURATION}"),
        ("catalog=delay:0.5ms", "clause 1", "duration '0.5ms' is finer than 1ms"),
        ("catalog=delay:1.0005s", "clause 1", "duration '1.0005s' is finer than 1ms"),
        ("catalog=delay:2h", "clause 1", "duration '2h' is longer than 3600s"),
        ("catalog=delay:3601s", "clause 1", "longer than 3600s"),
        ("catalog=delay:60.5m", "clause 1", "longer than 3600s"),
        ("catalog=delay", "clause 1", "delay needs a duration"),
        ("catalog=delay:1s;inventory=error:UNAVAILBLE@1%", "clause 2 'inventory=error:UNAVAILBLE@1%'", "not a gRPC"),
        ("error:OK", "clause 1", "not a gRPC status code"),
        ("error", "clause 1", "error needs a status code"),
        ("hang:5s", "clause 1", "hang takes no argument"),
        ("explode@1%", "clause 1", "unknown fault 'explode'"),
        ("delay:5ms@2", "clause 1", "must be a percent"),
        ("delay:5ms@101%", "clause 1", "more than 100%"),
        ("delay:5ms@-1%", "clause 1", "must be a percent"),
        ("delay:5ms@0.00001%", "clause 1", "more than 4 decimals"),
        ("delay:5ms@1%@2%", "clause 1", "must be a percent"),
        ("Catalog=hang", "clause 1", "target 'Catalog'"),
        ("catalog.getProduct=hang", "clause 1", "target 'catalog.getProduct'"),
        ("catalog.Get.Product=hang", "clause 1", "target 'catalog.Get.Product'"),
        ("=hang", "clause 1", "target ''"),
        ("catalog=", "clause 1", "empty fault"),
        ("catalog=hang,", "clause 1", "empty fault"),
        ("catalog=hang;;inventory=hang", "clause 2 ''", "empty clause"),
        ("catalog=hang;", "clause 2", "empty clause"),
    ],
)
def test_rejects_bad_specs_naming_the_clause(text: str, clause: str, problem: str) -> None:
    """A bad spec raises FaultSpecError whose message names the clause and what is wrong with it."""
    with pytest.raises(FaultSpecError) as caught:
        parse_faults(text)
    assert clause in str(caught.value)
    assert problem in str(caught.value)


def test_values_are_validated_on_construction() -> None:
    """A spec built in code is held to the same rules as a parsed one."""
    with pytest.raises(FaultSpecError, match="between 0% and 100%"):
        Delay(0.1, 150.0)
    with pytest.raises(FaultSpecError, match="finer than 1ms"):
        Delay(0.0005)
    with pytest.raises(FaultSpecError, match="not an error"):
        Error(grpc.StatusCode.OK)
    with pytest.raises(FaultSpecError, match="needs a service"):
        Clause((Hang(),), None, "GetProduct")
    with pytest.raises(FaultSpecError, match="at least one fault"):
        Clause(())


_percents = st.integers(0, 100 * 10**4).map(lambda basis: basis / 10**4)
_faults: st.SearchStrategy[Fault] = st.one_of(
    st.builds(Delay, st.integers(0, 3_600_000).map(lambda ms: ms / 1000), _percents),
    st.builds(Error, st.sampled_from([c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]), _percents),
    st.builds(Hang, _percents),
)
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_services = st.builds(str.__add__, st.sampled_from(_LOWER), st.text(_LOWER + "0123456789_-", max_size=8))
_methods = st.builds(str.__add__, st.sampled_from(_LOWER.upper()), st.text(_LOWER + _LOWER.upper() + "09", max_size=8))


@st.composite
def _clauses(draw: st.DrawFn) -> Clause:
    faults = tuple(draw(st.lists(_faults, min_size=1, max_size=4)))
    service = draw(st.none() | _services)
    method = None if service is None else draw(st.none() | _methods)
    return Clause(faults, service, method)


@given(st.lists(_clauses(), max_size=4).map(lambda clauses: FaultSpec(tuple(clauses))))
def test_canonical_form_round_trips(spec: FaultSpec) -> None:
    """Formatting a spec and parsing it back gives the same spec."""
    assert parse_faults(str(spec)) == spec


# ---------------------------------------------------------------------------------------------------------------
# Which faults fire


def test_clauses_apply_to_their_server_and_method() -> None:
    """A call gets the faults of unprefixed clauses, its server's clauses and its method's, in the order written."""
    spec = parse_faults("hang@1%;catalog=delay:1s;inventory=error:INTERNAL;catalog.GetProduct=error:UNAVAILABLE")
    assert spec.faults_for("catalog", "GetProduct") == (Hang(1.0), Delay(1.0), Error(grpc.StatusCode.UNAVAILABLE))
    assert spec.faults_for("catalog", "BatchGetProducts") == (Hang(1.0), Delay(1.0))
    assert spec.faults_for("orders", "GetOrder") == (Hang(1.0),)
    assert str(spec.for_server("catalog")) == "hang@1%;catalog=delay:1s@100%;catalog.GetProduct=error:UNAVAILABLE@100%"


def test_plan_is_deterministic_with_a_seed() -> None:
    """With a seeded random source, the same spec fires the same faults call after call."""
    spec = parse_faults("catalog=delay:500ms@20%,error:UNAVAILABLE@5%")

    def plans(seed: int) -> list[tuple[Fault, ...]]:
        injector = FaultInjector("catalog", spec, rng=random.Random(seed).random)
        return [injector.plan("GetProduct") for _ in range(2000)]

    first = plans(7)
    assert first == plans(7)
    delays = sum(Delay(0.5, 20.0) in plan for plan in first)
    errors = sum(Error(grpc.StatusCode.UNAVAILABLE, 5.0) in plan for plan in first)
    assert 300 < delays < 500
    assert 50 < errors < 150


def test_zero_and_hundred_percent_are_exact() -> None:
    """0% never fires and 100% always does, whatever the random source returns in [0, 1)."""
    spec = parse_faults("delay:1s@0%,hang@100%")
    for draw in (0.0, 0.5, 0.9999999999):
        assert FaultInjector("x", spec, rng=_constant(draw)).plan("M") == (Hang(100.0),)


def _constant(value: float) -> Callable[[], float]:
    return lambda: value


# ---------------------------------------------------------------------------------------------------------------
# Real servers


class _Catalog(catalog_pb2_grpc.CatalogServiceServicer):
    """A catalog that knows every sku and counts the calls that reached it."""

    def __init__(self) -> None:
        self.calls = 0

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> catalog_pb2.GetProductResponse:
        self.calls += 1
        return catalog_pb2.GetProductResponse(product=catalog_pb2.Product(sku=request.sku, title="a thing"))

    async def BatchGetProducts(
        self, request: catalog_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> catalog_pb2.BatchGetProductsResponse:
        self.calls += 1
        return catalog_pb2.BatchGetProductsResponse(products=[catalog_pb2.Product(sku=s) for s in request.skus])


class _WatchedClock:
    """The real clock, which also records each wait and tells when one began and when one was cancelled."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class _InstantClock(_WatchedClock):
    """A clock whose waits are recorded and end at once."""

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


class _Server:
    """A running test server: its channel, the catalog behind it, and the injector."""

    def __init__(self, channel: grpc.aio.Channel, catalog: _Catalog, injector: FaultInjector) -> None:
        self.catalog_stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        self.admin = admin_pb2_grpc.FaultServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        self.catalog = catalog
        self.injector = injector

    def get(self, timeout: float | None = 10.0) -> Awaitable[catalog_pb2.GetProductResponse]:
        return self.catalog_stub.GetProduct(catalog_pb2.GetProductRequest(sku="sku-1"), timeout=timeout)

    def batch(self) -> Awaitable[catalog_pb2.BatchGetProductsResponse]:
        return self.catalog_stub.BatchGetProducts(catalog_pb2.BatchGetProductsRequest(skus=["a"]), timeout=10.0)


@contextlib.asynccontextmanager
async def _serve(
    spec: str = "", *, allow_fault_injection: bool = False, clock: _WatchedClock | None = None
) -> AsyncIterator[_Server]:
    catalog = _Catalog()
    injector = FaultInjector(
        "catalog", parse_faults(spec), rng=random.Random(1).random, clock=clock or _WatchedClock()
    )
    binding = Binding(CATALOG, catalog_pb2_grpc.add_CatalogServiceServicer_to_server, catalog)
    async with (
        running([binding], faults=injector, allow_fault_injection=allow_fault_injection) as (_, port, _h),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield _Server(channel, catalog, injector)


async def _rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def _listed_services(server: _Server) -> set[str]:
    async def ask() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    async for response in server.reflection.ServerReflectionInfo(ask()):
        return {service.name for service in response.list_services_response.service}
    raise AssertionError("no reflection response")


async def test_injected_error_reaches_the_client_and_skips_the_handler() -> None:
    """An error fault aborts with its code and a message saying it was injected, before the handler runs."""
    async with _serve("catalog=error:UNAVAILABLE@100%") as server:
        error = await _rpc_error(server.get())
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "injected fault error:UNAVAILABLE@100%" in (error.details() or "")
        assert server.catalog.calls == 0
        assert server.injector.stats.errors == 1


async def test_delay_runs_before_the_handler() -> None:
    """A delay fault waits its duration, then the handler answers."""
    clock = _InstantClock()
    async with _serve("delay:500ms@100%", clock=clock) as server:
        response = await server.get()
        assert response.product.sku == "sku-1"
        assert clock.waits == [0.5]
        assert server.catalog.calls == 1


async def test_delay_longer_than_the_deadline_is_cancelled() -> None:
    """A delay past the caller's deadline gives DEADLINE_EXCEEDED, and the server stops waiting at once."""
    clock = _WatchedClock()
    async with _serve("catalog=delay:60s@100%", clock=clock) as server:
        error = await _rpc_error(server.get(timeout=0.2))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.wait_for(clock.cancelled.wait(), timeout=10)
        assert server.injector.stats.cancelled == 1
        assert server.catalog.calls == 0


async def test_hang_ends_when_the_caller_cancels() -> None:
    """A hang holds the call until the caller gives up, and the server sees the cancellation."""
    clock = _WatchedClock()
    async with _serve("hang", clock=clock) as server:
        call = server.catalog_stub.GetProduct(catalog_pb2.GetProductRequest(sku="x"))
        await asyncio.wait_for(clock.started.wait(), timeout=10)
        call.cancel()
        await asyncio.wait_for(clock.cancelled.wait(), timeout=10)
        assert server.injector.stats.hangs == 1
        assert server.catalog.calls == 0


async def test_method_and_server_scoping() -> None:
    """A method clause hits only that method; another server's clause hits nothing here."""
    async with _serve("catalog.GetProduct=error:NOT_FOUND;inventory=error:INTERNAL") as server:
        assert (await _rpc_error(server.get())).code() == grpc.StatusCode.NOT_FOUND
        assert len((await server.batch()).products) == 1


async def test_health_and_reflection_are_never_faulted() -> None:
    """With every call of this server set to fail, health and reflection still answer."""
    async with _serve("error:UNAVAILABLE@100%") as server:
        check = await server.health.Check(health_pb2.HealthCheckRequest(service=CATALOG), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        assert CATALOG in await _listed_services(server)
        assert (await _rpc_error(server.get())).code() == grpc.StatusCode.UNAVAILABLE


async def test_admin_sets_and_clears_faults_at_run_time() -> None:
    """With --allow-fault-injection, FaultService replaces, reports and clears the faults of a running server."""
    async with _serve(allow_fault_injection=True) as server:
        assert FAULT_SERVICE in await _listed_services(server)
        await server.get()

        set_response = await server.admin.SetFaults(
            admin_pb2.SetFaultsRequest(spec="catalog=error:resource_exhausted;inventory=hang"), timeout=10
        )
        assert set_response.previous.spec == ""
        assert set_response.faults == admin_pb2.Faults(
            spec="catalog=error:RESOURCE_EXHAUSTED@100%;inventory=hang@100%",
            active_spec="catalog=error:RESOURCE_EXHAUSTED@100%",
            server_name="catalog",
        )
        assert (await _rpc_error(server.get())).code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        got = await server.admin.GetFaults(admin_pb2.GetFaultsRequest(), timeout=10)
        assert got.faults == set_response.faults

        cleared = await server.admin.ClearFaults(admin_pb2.ClearFaultsRequest(), timeout=10)
        assert cleared.previous == set_response.faults
        assert (await server.get()).product.sku == "sku-1"
        assert (await server.admin.GetFaults(admin_pb2.GetFaultsRequest(), timeout=10)).faults.spec == ""


async def test_admin_is_never_faulted() -> None:
    """A fault on every call of this server leaves FaultService usable, so it can always be cleared."""
    async with _serve("hang@100%", allow_fault_injection=True) as server:
        await server.admin.SetFaults(admin_pb2.SetFaultsRequest(spec="error:ABORTED"), timeout=10)
        await server.admin.ClearFaults(admin_pb2.ClearFaultsRequest(), timeout=10)
        await server.get()


async def test_bad_spec_via_admin_is_invalid_argument_and_changes_nothing() -> None:
    """SetFaults with a bad spec is INVALID_ARGUMENT naming the clause, and the faults in force stay as they were."""
    async with _serve("catalog=error:UNAVAILABLE", allow_fault_injection=True) as server:
        error = await _rpc_error(
            server.admin.SetFaults(admin_pb2.SetFaultsRequest(spec="catalog=delay:1s;catalog=delay:1"), timeout=10)
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "clause 2 'catalog=delay:1'" in (error.details() or "")
        assert f"'1' {NOT_A_DURATION}" in (error.details() or "")
        got = await server.admin.GetFaults(admin_pb2.GetFaultsRequest(), timeout=10)
        assert got.faults.spec == "catalog=error:UNAVAILABLE@100%"
        assert (await _rpc_error(server.get())).code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("spec", ["", "catalog=error:UNAVAILABLE"])
async def test_without_the_flag_admin_does_not_exist(spec: str) -> None:
    """Without --allow-fault-injection FaultService is UNIMPLEMENTED and unlisted, whatever --faults says."""
    async with _serve(spec) as server:
        error = await _rpc_error(server.admin.SetFaults(admin_pb2.SetFaultsRequest(spec="hang"), timeout=10))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert FAULT_SERVICE not in await _listed_services(server)
        assert server.injector.spec == parse_faults(spec)


async def test_running_without_faults_keeps_its_old_behaviour() -> None:
    """Existing callers of running() get no faults and no admin service."""
    catalog = _Catalog()
    binding = Binding(CATALOG, catalog_pb2_grpc.add_CatalogServiceServicer_to_server, catalog)
    async with running([binding]) as (_, port, _h), grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        await stub.GetProduct(catalog_pb2.GetProductRequest(sku="a"), timeout=10)
        admin = admin_pb2_grpc.FaultServiceStub(channel)
        error = await _rpc_error(admin.GetFaults(admin_pb2.GetFaultsRequest(), timeout=10))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_run_rejects_a_bad_spec_before_anything_starts() -> None:
    """run() with a bad --faults raises FaultSpecError naming the clause before the app is entered."""
    entered = False

    @contextlib.asynccontextmanager
    async def app(options: ServeOptions) -> AsyncIterator[list[Binding]]:
        nonlocal entered
        entered = True
        yield []

    with pytest.raises(FaultSpecError, match=r"clause 1 'catalog=error:NOPE'"):
        await run(ServeOptions(name="catalog", faults="catalog=error:NOPE"), app)
    assert not entered
