"""Open-loop load through the gateway: requests start on a clock, not when earlier ones finish.

Why open loop: a closed loop (send, wait, send) slows down exactly when the system does, so it hides the
latency a real crowd of callers would see (coordinated omission). Here arrivals are a Poisson process at the
given rate, drawn from the seed; each request runs on its own, bounded only by its deadline and by a cap on
requests in flight (beyond it a request is counted as shed, not queued).

The mix is what a shop sees: order views and customer overviews in all three read modes, and placements, some
with a fresh idempotency key and some replaying an earlier key with the same request (a client retrying).

Each call carries a token (where the system checks them): the reads one that may read every customer's data
(scope `admin`), a placement one that acts for the customer it places for, minted on first use and kept. They go
as per-call metadata, which costs less than a call-credentials plugin on the channel.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from pullgate.security.access import Access
from pullgate.security.tokens import ADMIN_SCOPE
from pullgate.tools.chaos.owners import CUSTOMER_IDS, SKUS
from pullgate.tools.chaos.record import Call, Record, order_view_parts, overview_parts
from pullgate.tools.gateway_channel import CHANNEL_OPTIONS, MODES, Metadata
from services import demo

if TYPE_CHECKING:
    from pullgate.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub

DEFAULT_MIX: Mapping[str, float] = {
    "view-bounded": 25, "view-strong": 10, "view-available": 10,
    "overview-bounded": 15, "overview-strong": 7.5, "overview-available": 7.5,
    "place-fresh": 15, "place-replay": 10,
}
"""Relative weights of each kind of request."""

PLACEABLE = tuple(s for s in SKUS if dict((x.sku, x.initial) for x in demo.STOCK)[s] > 0)

READER = "chaos-load"
"""The subject of the token the load reads with."""


def parse_mix(text: str) -> dict[str, float]:
    """`view-bounded=3,place-fresh=1` -> weights; ValueError naming a wrong entry."""
    mix: dict[str, float] = {}
    for item in (i.strip() for i in text.split(",") if i.strip()):
        name, sep, weight = item.partition("=")
        if not sep or name not in DEFAULT_MIX:
            raise ValueError(f"--mix: {item!r}: expected NAME=WEIGHT with NAME one of {', '.join(DEFAULT_MIX)}")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise ValueError(f"--mix: {item!r}: {weight!r} is not a number") from None
        if mix[name] < 0:
            raise ValueError(f"--mix: {item!r}: a weight must not be negative")
    if not any(mix.values()):
        raise ValueError("--mix: give at least one positive weight")
    return mix


@dataclass
class Load:
    """Sends requests to the gateway at `rate` per second until stopped, recording each into `record`; reaches it
    through `access` (TLS and tokens from the system's key, or plaintext)."""

    target: str
    rate: float
    record: Record
    seed: int
    deadline: float = 1.5
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    max_in_flight: int = 200
    on_call: Callable[[Call], None] | None = None
    access: Access = field(kw_only=True)
    _rng: random.Random = field(init=False)
    _reads: Metadata = field(init=False)
    """The metadata of every read: a token with the admin scope."""
    _placers: dict[str, Metadata] = field(init=False, default_factory=dict)
    """Customer id -> the metadata of a placement for them: a token that acts for that customer."""
    _run: str = field(init=False)
    _keys: list[tuple[str, pb.PlaceOrderRequest]] = field(init=False, default_factory=list)
    _orders: list[str] = field(init=False, default_factory=lambda: [o.order_id for o in demo.ORDERS])
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._run = uuid.uuid4().hex[:8]  # keys differ between runs with one seed: a replay is a replay of this run
        self._reads = self.access.metadata(self.access.mint(subject=READER, scopes=[ADMIN_SCOPE]))

    def _placing(self, customer_id: str) -> Metadata:
        """The metadata of a placement for `customer_id`: the admin scope reads anyone's data but places for
        nobody, so each customer's own token, minted once."""
        metadata = self._placers.get(customer_id)
        if metadata is None:
            token = self.access.mint(subject=f"customer:{customer_id}", customer_id=customer_id)
            metadata = self._placers[customer_id] = self.access.metadata(token)
        return metadata

    async def run(self, stop: asyncio.Event) -> None:
        """Start requests on a Poisson clock until `stop`; then wait for those in flight (each ends by its deadline)."""
        kinds, weights = list(self.mix), list(self.mix.values())
        loop = asyncio.get_running_loop()
        async with self.access.channel(topology.ENTRY, self.target, options=CHANNEL_OPTIONS) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            next_at = loop.time()
            while not stop.is_set():
                next_at += self._rng.expovariate(self.rate)
                delay = next_at - loop.time()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                kind = self._rng.choices(kinds, weights)[0]
                if len(self._tasks) >= self.max_in_flight:
                    self.record.shed += 1
                    continue
                task = asyncio.create_task(self._send(stub, kind))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self, stub: GatewayServiceAsyncStub, kind: str) -> None:
        what, _, how = kind.partition("-")
        if what == "place":
            call = await self._place(stub, how)
        else:
            call = await self._read(stub, what, how)
        self.record.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)

    async def _read(self, stub: GatewayServiceAsyncStub, what: str, mode: str) -> Call:
        read = pb.ReadOptions(consistency=MODES[mode])
        sent, start = time.time(), time.perf_counter()
        if what == "view":
            target = self._rng.choice(self._orders)
            op = "order_view"
            try:
                view = await stub.GetOrderView(pb.GetOrderViewRequest(order_id=target, read=read),
                                               timeout=self.deadline, metadata=self._reads)
            except grpc.aio.AioRpcError as error:
                return _failed(op, mode, target, sent, time.perf_counter() - start, self.deadline, error)
            return Call(op, mode, target, sent, time.perf_counter() - start, self.deadline, "OK",
                        degraded=view.degraded, parts=order_view_parts(view))
        target = self._rng.choice(CUSTOMER_IDS)
        op = "customer_overview"
        try:
            overview = await stub.GetCustomerOverview(
                pb.GetCustomerOverviewRequest(customer_id=target, page_size=5, read=read), timeout=self.deadline,
                metadata=self._reads)
        except grpc.aio.AioRpcError as error:
            return _failed(op, mode, target, sent, time.perf_counter() - start, self.deadline, error)
        return Call(op, mode, target, sent, time.perf_counter() - start, self.deadline, "OK",
                    degraded=overview.degraded, parts=overview_parts(overview))

    async def _place(self, stub: GatewayServiceAsyncStub, how: str) -> Call:
        if how == "replay" and self._keys:
            key, request = self._rng.choice(self._keys)
        else:
            how = "fresh"
            key = f"chaos-{self._run}-{len(self._keys) + 1}"
            skus = self._rng.sample(PLACEABLE, self._rng.choice((1, 1, 2)))
            request = pb.PlaceOrderRequest(idempotency_key=key, customer_id=self._rng.choice(CUSTOMER_IDS),
                                           lines=[orders_pb2.OrderLine(sku=sku, quantity=1) for sku in skus])
            self._keys.append((key, request))
        sent, start = time.time(), time.perf_counter()
        try:
            placed = await stub.PlaceOrder(request, timeout=self.deadline,
                                           metadata=self._placing(request.customer_id))
        except grpc.aio.AioRpcError as error:
            return _failed("place_order", how, key, sent, time.perf_counter() - start, self.deadline, error)
        order_id = placed.order.order_id
        if order_id not in self._orders:
            self._orders.append(order_id)
        return Call("place_order", how, key, sent, time.perf_counter() - start, self.deadline, "OK",
                    order_id=order_id)


def _failed(op: str, mode: str, target: str, sent: float, latency: float, deadline: float,
            error: grpc.aio.AioRpcError) -> Call:
    return Call(op, mode, target, sent, latency, deadline, error.code().name, detail=error.details() or "")


__all__ = ["DEFAULT_MIX", "Load", "parse_mix"]
