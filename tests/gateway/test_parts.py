"""A part's outcome stays a value (kind, cause, bound, attempts) until its PartStatus is built, and is rendered once."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc
import pytest

from gateway.parts import Kind, Omitted, Part, each, fetch, missing
from gateway.reads import ReadMode
from pullgate.catalog.v1 import catalog_pb2
from pullgate.gateway.v1 import gateway_pb2 as pb
from resilience import (
    CacheConfig,
    Cause,
    Downstream,
    DownstreamConfig,
    HedgingConfig,
    Overloaded,
    ResilienceError,
    StatusError,
    Throttled,
)
from resilience.testing import FakeClock
from tests.resilience.scripted import OK, READ, Scripted, Step

T = TypeVar("T")
BOUNDED = ReadMode(pb.CONSISTENCY_BOUNDED_STALENESS, 30.0)
AVAILABLE = ReadMode(pb.CONSISTENCY_AVAILABLE, math.inf)
CONFIG = DownstreamConfig(hedging=HedgingConfig(enabled=False), cache=CacheConfig(ttl=1.0))
REQUEST = catalog_pb2.GetProductRequest(sku="SKU-001")


async def _driven(clock: FakeClock, call: Coroutine[Any, Any, T]) -> T:
    """Await `call`, moving the fake clock on while it waits (retries back off on it)."""
    task = asyncio.ensure_future(call)
    while not task.done():
        await clock.advance(0.05)
    return task.result()


def _catalog(clock: FakeClock, healthy: list[bool]) -> Downstream:
    script = Scripted(clock, lambda n, r: OK if healthy[0] else Step(code=grpc.StatusCode.UNAVAILABLE))
    return Downstream("catalog", ["a:1"], CONFIG, clock, endpoint=script)


async def test_a_stale_part_carries_its_cause_bound_and_attempts() -> None:
    """A part served stale after the owner failed every attempt says so as values, and in words once."""
    clock, healthy = FakeClock(), [True]
    catalog = _catalog(clock, healthy)
    await fetch(catalog, READ, REQUEST, BOUNDED, "product:SKU-001")
    healthy[0] = False
    await clock.advance(5.0)
    part = await _driven(clock, fetch(catalog, READ, REQUEST, BOUNDED, "product:SKU-001"))
    assert (part.kind, part.bound, part.attempts) == (Kind.STALE, 30.0, 3)
    assert part.age >= 5.0
    assert isinstance(part.why, ResilienceError) and part.why.cause is Cause.UNAVAILABLE
    status = part.status("product:SKU-001")
    assert (status.source, status.cause, status.attempts) == (pb.SOURCE_STALE, pb.CAUSE_UNAVAILABLE, 3)
    assert status.max_staleness.ToTimedelta().total_seconds() == 30.0
    assert status.reason == "catalog: UNAVAILABLE: scripted after 3 attempts"


async def test_a_cached_part_has_no_cause_and_no_attempts() -> None:
    """A cache hit is CACHED, made no attempt, and names the bound it was judged by."""
    clock = FakeClock()
    catalog = _catalog(clock, [True])
    await fetch(catalog, READ, REQUEST, BOUNDED, "product:SKU-001")
    part = await fetch(catalog, READ, REQUEST, BOUNDED, "product:SKU-001")
    status = part.status("product:SKU-001")
    assert (status.source, status.cause, status.attempts) == (pb.SOURCE_CACHED, pb.CAUSE_UNSPECIFIED, 0)
    assert status.reason == "catalog: cached, within max staleness 30s"


async def test_a_missing_part_of_an_available_read_has_no_bound() -> None:
    """An available read accepts any age, so its parts carry no max_staleness; a missing part keeps its cause."""
    clock = FakeClock()
    catalog = _catalog(clock, [False])
    part = await _driven(clock, fetch(catalog, READ, REQUEST, AVAILABLE, "product:SKU-001"))
    status = part.status("product:SKU-001")
    assert (status.source, status.cause) == (pb.SOURCE_MISSING, pb.CAUSE_UNAVAILABLE)
    assert not status.HasField("max_staleness")


def test_a_key_left_out_of_a_batch_is_missing_as_not_found() -> None:
    """A batch answer without a key makes that key's part MISSING with cause NOT_FOUND, naming the owner."""
    batch = Part(catalog_pb2.BatchGetProductsResponse(), Kind.LIVE, 30.0, attempts=1, downstream="catalog")
    part = each(batch, {}, "SKU-404")
    assert part.why == Omitted("catalog", "SKU-404")
    status = part.status("product:SKU-404")
    assert (status.source, status.cause, status.reason) == (
        pb.SOURCE_MISSING, pb.CAUSE_NOT_FOUND, "catalog: no answer for SKU-404")
    assert each(batch, {"SKU-404": object()}, "SKU-404") is batch


@pytest.mark.parametrize(("code", "cause"), [
    (grpc.StatusCode.UNAVAILABLE, pb.CAUSE_UNAVAILABLE),
    (grpc.StatusCode.INTERNAL, pb.CAUSE_OWNER_FAILED),
    (grpc.StatusCode.NOT_FOUND, pb.CAUSE_NOT_FOUND),
    (grpc.StatusCode.FAILED_PRECONDITION, pb.CAUSE_REFUSED),
    (grpc.StatusCode.DEADLINE_EXCEEDED, pb.CAUSE_DEADLINE_EXCEEDED),
])
def test_every_owner_status_maps_to_a_cause(code: grpc.StatusCode, cause: pb.Cause.ValueType) -> None:
    """The owner's status code decides the part's cause; the words never do."""
    status = missing(StatusError(code, "catalog", "whatever the message says: circuit open"), 30.0, 1).status("p")
    assert status.cause == cause


def test_every_cause_of_the_layer_has_a_cause_on_the_wire() -> None:
    """Each resilience Cause maps to its own gateway Cause, so no failure reaches a client unlabelled."""
    from gateway.parts import _CAUSES

    assert set(_CAUSES) == set(Cause)
    assert len(set(_CAUSES.values())) == len(Cause)


@pytest.mark.parametrize(("error", "cause"), [
    (Overloaded(grpc.StatusCode.RESOURCE_EXHAUSTED, "catalog", "over its limit"), pb.CAUSE_OVERLOADED),
    (StatusError(grpc.StatusCode.RESOURCE_EXHAUSTED, "catalog", "quota"), pb.CAUSE_OWNER_FAILED),
    (Throttled("catalog", 0.5), pb.CAUSE_THROTTLED),
])
def test_shedding_is_labelled_as_such(error: ResilienceError, cause: pb.Cause.ValueType) -> None:
    """An owner's overloaded refusal and the caller's own throttling say so; a plain RESOURCE_EXHAUSTED does not."""
    assert missing(error, 30.0, 1).status("p").cause == cause
