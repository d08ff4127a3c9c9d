"""A downstream: one owner service, its replicas, and the stack every call to it goes through."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from resilience import deadline
from resilience.breaker import StateListener
from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.config import DownstreamConfig
from resilience.context import Call, CallContext
from resilience.discovery import Discovery, DnsTarget, Resolver, is_dns
from resilience.errors import ResilienceError
from resilience.instruments import watch_replicas, zero
from resilience.method import Method, Req, Resp
from resilience.replicas import Replicas
from resilience.result import Result
from resilience.stack import Stack, build
from resilience.transport import INSECURE, ChannelFactory, Transport


class Downstream:
    """Calls to one owner through the resilience stack.

    >>> customers = Downstream("customers", ["127.0.0.1:50051", "127.0.0.1:50061"])
    >>> result = await customers.call(GET_CUSTOMER, GetCustomerRequest(customer_id="42"))
    >>> result.value.customer.name, result.provenance.source

    Or by a DNS name, whose replicas come and go (resilience.discovery):

    >>> customers = Downstream("customers", ["dns:///customers.pullgate.svc:50051"])
    """

    def __init__(
        self,
        name: str,
        addresses: list[str] | tuple[str, ...],
        config: DownstreamConfig = DownstreamConfig(),  # noqa: B008 (frozen)
        clock: Clock = SYSTEM_CLOCK,
        *,
        endpoint: Call | None = None,
        rng: random.Random | None = None,
        interceptors: Sequence[grpc.aio.UnaryUnaryClientInterceptor[Any, Any]] = (),
        channels: ChannelFactory = INSECURE,
        resolver: Resolver | None = None,
    ) -> None:
        """`addresses` are the replicas' `HOST:PORT`s, or one DNS name (`dns:///HOST:PORT`) whose addresses are
        the replicas, resolved again as they change (resolution starts with the first call).

        `endpoint` replaces the grpc transport (tests script calls with it); `rng` drives every random
        choice (replica picks, backoff jitter), so tests can seed it; `interceptors` (grpc.aio client
        interceptors, e.g. OpenTelemetry's) wrap every attempt, run by the transport itself; `channels` makes the
        transport's channels (plaintext by default; pullgate.security.tls.TlsChannels for mutual TLS), to which
        it gives the downstream's name as the TLS authority, also for addresses found by DNS; `resolver` finds a
        DNS name's addresses (aiodns by default; tests pass a fake)."""
        self.name = name
        self.addresses = tuple(addresses)
        self.config = config
        self._clock = clock
        self._methods: tuple[str, ...] = ()
        targets = [a for a in self.addresses if is_dns(a)]
        if targets and len(self.addresses) > 1:
            raise ValueError(f"{name}: a DNS name is the only address of its downstream, got {', '.join(addresses)}")
        self.replicas = Replicas(() if targets else self.addresses)
        watch_replicas(name, self.replicas)
        self.discovery = (
            Discovery(name, DnsTarget.parse(targets[0]), self.replicas, config.discovery, clock, resolver)
            if targets else None
        )
        if not targets and not self.addresses:
            raise ValueError(f"{name}: no addresses")
        self._transport = (
            Transport(name, list(self.replicas.live), clock, interceptors, channels) if endpoint is None else None
        )
        self.stack: Stack = build(
            name, config, self.replicas, endpoint or self._transport or _unreachable, clock, rng or random.Random()
        )
        if self._transport is not None:
            self.replicas.subscribe(self._transport)
        self.replicas.subscribe(self)

    def joined(self, replica: str) -> None:
        """A replica found by DNS: its counters start at 0 too (see `expect`)."""
        if self._methods:
            zero(self.name, (replica,), self._methods)

    def left(self, replica: str) -> None:
        pass

    def expect(self, methods: Iterable[str]) -> None:
        """Start this downstream's counters at 0 for each of `methods` (names, e.g. "GetProduct") and each replica,
        so that dashboards show 0, not "no data", before the first retry, hedge or refusal."""
        self._methods = tuple(methods)
        zero(self.name, self.replicas.known(), self._methods)

    async def call(
        self, method: Method[Req, Resp], request: Req, max_staleness: float | None = None
    ) -> Result[Resp]:
        """Call `method`, bounded by the current deadline; raise ResilienceError when no answer can be had.

        `max_staleness`: None = the config's default bound; 0.0 = strong (never read a cache, may fill it);
        a number of seconds = cached or stale data only if younger; math.inf = anything the stale store holds.
        """
        if max_staleness is not None and (math.isnan(max_staleness) or max_staleness < 0):
            raise ValueError(f"max_staleness must be >= 0 or None, got {max_staleness}")
        ctx = CallContext(method, self.name, deadline.current(), max_staleness)
        discovery = self.discovery
        if discovery is not None and not discovery.resolved:
            await self._first_resolution(ctx)
        try:
            value = await self.stack.call(request, ctx)
        except ResilienceError as error:
            error.attempts = max(1, ctx.stats.attempts)
            raise
        return Result(value, ctx.stats.provenance())

    async def _first_resolution(self, ctx: CallContext) -> None:
        """Wait for the DNS name's first answer, within the call's deadline (or the total timeout)."""
        assert self.discovery is not None
        limit = self._clock.now() + self.config.timeout.total
        bound = limit if ctx.deadline is None else min(limit, ctx.deadline.at)
        await self.discovery.ready(bound)

    def add_breaker_listener(self, listener: StateListener) -> None:
        """Call `listener(downstream, replica, old, new)` on every breaker state change (also logged)."""
        breaker = self.stack.get("breaker")
        if breaker is not None:
            breaker.add_listener(listener)

    def breaker_states(self) -> dict[str, str]:
        """Each replica's breaker state: "closed", "open" or "half-open" (empty when breakers are off)."""
        breaker = self.stack.get("breaker")
        return {} if breaker is None else {r: b.state for r, b in breaker.breakers.items()}

    async def close(self) -> None:
        if self.discovery is not None:
            await self.discovery.close()
        if self._transport is not None:
            await self._transport.close()


async def _unreachable(request: Any, ctx: CallContext) -> Any:
    raise AssertionError("no endpoint")
