"""A scripted endpoint for unit tests: each call sleeps on the fake clock, then answers as the plan says."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from pullgate.catalog.v1 import catalog_pb2
from pullgate.customers.v1 import customers_pb2
from pullgate.inventory.v1 import inventory_pb2
from resilience import BreakerConfig, DeadlineExceeded, DownstreamConfig, HedgingConfig, Method, StatusError
from resilience.config import CacheConfig, RetryConfig
from resilience.context import CallContext
from resilience.errors import Overloaded
from resilience.testing import FakeClock

ONE_ATTEMPT = DownstreamConfig(
    retry=RetryConfig(enabled=False),
    hedging=HedgingConfig(enabled=False),
    cache=CacheConfig(enabled=False),
    breaker=BreakerConfig(fail_max=1),
)
"""One attempt and nothing else: no retry, hedge or cache, and a breaker that opens on the first failure."""

READ: Method[catalog_pb2.GetProductRequest, catalog_pb2.GetProductResponse] = Method(
    catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].methods_by_name["GetProduct"],
    catalog_pb2.GetProductRequest,
    catalog_pb2.GetProductResponse,
)
KEYED_WRITE: Method[inventory_pb2.ReserveStockRequest, inventory_pb2.ReserveStockResponse] = Method(
    inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].methods_by_name["ReserveStock"],
    inventory_pb2.ReserveStockRequest,
    inventory_pb2.ReserveStockResponse,
)
UNSAFE_WRITE: Method[customers_pb2.CreateCustomerRequest, customers_pb2.CreateCustomerResponse] = Method(
    customers_pb2.DESCRIPTOR.services_by_name["CustomerService"].methods_by_name["CreateCustomer"],
    customers_pb2.CreateCustomerRequest,
    customers_pb2.CreateCustomerResponse,
)


@dataclass(frozen=True)
class Step:
    delay: float = 0.0
    code: grpc.StatusCode = grpc.StatusCode.OK
    overloaded: bool = False
    """With RESOURCE_EXHAUSTED: the owner's overloaded refusal (the OVERLOADED_METADATA trailer)."""


OVERLOADED = Step(code=grpc.StatusCode.RESOURCE_EXHAUSTED, overloaded=True)


OK = Step()


@dataclass
class Scripted:
    """Call n to replica r does `plan(n, r)`; records who was called, and who saw a cancellation."""

    clock: FakeClock
    plan: Callable[[int, str], Step] = lambda n, replica: OK
    calls: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)

    async def __call__(self, request: Any, ctx: CallContext) -> Any:
        replica = ctx.replica or "?"
        n = len(self.calls)
        self.calls.append(replica)
        bound = ctx.attempt_deadline or ctx.deadline
        self.timeouts.append(None if bound is None else bound.remaining(self.clock))
        step = self.plan(n, replica)
        try:
            if step.delay:
                await self.clock.sleep(step.delay)
        except asyncio.CancelledError:
            self.cancelled.append(replica)
            raise
        if step.code is grpc.StatusCode.DEADLINE_EXCEEDED:
            raise DeadlineExceeded(ctx.downstream, f"deadline exceeded at {replica}", sent=True)
        if step.overloaded:
            raise Overloaded(step.code, ctx.downstream, "overloaded", replica)
        if step.code is not grpc.StatusCode.OK:
            raise StatusError(step.code, ctx.downstream, "scripted", replica)
        return ctx.method.response_type()


def fails(code: grpc.StatusCode) -> Callable[[int, str], Step]:
    return lambda n, replica: Step(code=code)


@dataclass
class Prompt:
    """An owner whose replica r answers after `delays.get(r, delay)` seconds. As over grpc, an attempt ends
    DEADLINE_EXCEEDED at its deadline, or when its answer is read after it (the caller's loop was blocked)."""

    clock: FakeClock
    delay: float = 0.002
    delays: dict[str, float] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    async def __call__(self, request: Any, ctx: CallContext) -> Any:
        replica = ctx.replica or "?"
        self.calls.append(replica)
        delay = self.delays.get(replica, self.delay)
        bound = ctx.attempt_deadline or ctx.deadline
        try:
            await self.clock.sleep(delay if bound is None else min(delay, bound.remaining(self.clock)))
        except asyncio.CancelledError:
            self.cancelled.append(replica)
            raise
        if bound is not None and bound.expired(self.clock):
            raise DeadlineExceeded(ctx.downstream, f"deadline exceeded at {replica}", sent=True)
        return ctx.method.response_type()
