"""Short-lived caches of read answers, single-flight of identical calls, and stale-if-error.

Per downstream method, in memory only, bounded:

- `fresh`: a cachetools TTLCache (injected clock) of answers younger than `ttl`. A caller reads it only if the
  entry is also younger than the caller's `max_staleness`; a strong read (0.0) never reads it but fills it,
  and never joins a shared call either (that call may have started, and been answered, before the read).
- single-flight: concurrent identical calls (same method, same request bytes) share one downstream call.
  Each waiter keeps its own deadline: a waiter that times out or is cancelled leaves, and the shared call is
  cancelled only when its last waiter is gone. The shared call runs under its first waiter's deadline; a later
  waiter with more time left, whose shared call ran out of time, starts another.
- `stale`: a second, separate TTLCache holding the last good answer for `max_stale` seconds (the longest
  staleness any caller may accept). When the owner cannot answer (not when it answers "no", like NOT_FOUND),
  a caller gets this answer if it is within its `max_staleness`, labelled STALE with the reason.

cachetools is not thread-safe and knows nothing of asyncio; all of this runs on one event loop, between awaits.
Cached answers are shared objects: callers must treat `Result.value` as read-only.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from resilience.clock import SYSTEM_CLOCK, Clock, call_later
from resilience.config import CacheConfig
from resilience.context import Call, CallContext, CallStats
from resilience.deadline import Deadline
from resilience.errors import DeadlineExceeded, ResilienceError
from resilience.hotpath import CACHE_REQUESTS
from resilience.outcome import Outcome, classify
from resilience.result import Source
from resilience.timeouts import TotalTimeout


@dataclass(slots=True)
class _Flight:
    stats: CallStats
    deadline: Deadline | None
    task: asyncio.Task[Any] | None = None
    waiters: int = 0
    slots: list[asyncio.Future[Any]] = field(default_factory=list)
    """One future per waiter that joined; the shared call resolves them itself when it ends."""


@dataclass(slots=True)
class MethodCache:
    """The caches of one method, and its calls in flight."""

    fresh: TTLCache[bytes, tuple[Any, float]]
    stale: TTLCache[bytes, tuple[Any, float]] | None
    flights: dict[bytes, _Flight] = field(default_factory=dict)
    downstream_calls: int = 0


class Cached:
    """Answers reads from the cache when the caller allows it, shares identical calls, and serves stale on error."""

    def __init__(self, config: CacheConfig, total: TotalTimeout, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self._total = total
        self._clock = clock
        self.methods: dict[str, MethodCache] = {}

    def cache(self, path: str) -> MethodCache:
        found = self.methods.get(path)
        if found is None:
            c = self.config
            timer = self._clock.now
            stale: TTLCache[bytes, tuple[Any, float]] | None = None
            if c.max_stale > 0:
                stale = TTLCache(c.max_stale_entries, c.max_stale, timer=timer)
            found = self.methods[path] = MethodCache(TTLCache(c.max_entries, c.ttl, timer=timer), stale)
        return found

    async def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Any:
        if not ctx.method.cacheable:
            return await inner(request, ctx)
        bound = self.config.max_staleness if ctx.max_staleness is None else ctx.max_staleness
        cache = self.cache(ctx.method.path)
        key: bytes = request.SerializeToString(deterministic=True)
        if bound > 0:
            hit = cache.fresh.get(key)
            if hit is not None:
                age = self._clock.now() - hit[1]
                if age <= bound:
                    ctx.stats.source, ctx.stats.age, ctx.stats.attempts = Source.CACHED, age, 0
                    self._count(ctx, "hit")
                    return hit[0]
        if bound <= 0:
            # A strong read wants an answer the owner gave after the read began: it neither reads the cache
            # nor joins a shared call that started before it (its answer could predate the read). It fills
            # the caches for those who accept older data.
            self._count(ctx, "miss")
            response = await inner(request, ctx)
            self._store(key, response, cache)
            return response
        try:
            return await self._shared(key, request, ctx, inner, cache)
        except ResilienceError as error:
            if cache.stale is None or classify(error) is Outcome.CALLER_ERROR:
                raise
            old = cache.stale.get(key)
            if old is None:
                raise
            age = self._clock.now() - old[1]
            if age > bound:
                raise
            error.attempts = max(1, ctx.stats.attempts)
            ctx.stats.source, ctx.stats.age, ctx.stats.error = Source.STALE, age, error
            self._count(ctx, "stale")
            return old[0]

    def _count(self, ctx: CallContext, result: str) -> None:
        """Count a lookup's result and note it on the call (the span reads it)."""
        ctx.stats.cache = result
        CACHE_REQUESTS.add((ctx.downstream, ctx.method.descriptor.name, result))

    async def _shared(self, key: bytes, request: Any, ctx: CallContext, inner: Call, cache: MethodCache) -> Any:
        mine = self._total.deadline_for(ctx)
        loop = asyncio.get_running_loop()
        while True:
            flight = cache.flights.get(key)
            if flight is None:
                flight = self._start(key, request, ctx, mine, inner, cache)
                self._count(ctx, "miss")
            else:
                self._count(ctx, "coalesced")
            # Each waiter awaits its own future, which the shared call resolves as it ends: a waiter that
            # leaves cancels only its own future (never the shared call), and no shield or done-callback
            # stands between the answer and the waiter (each would cost a turn of the event loop).
            slot: asyncio.Future[Any] = loop.create_future()
            flight.slots.append(slot)
            flight.waiters += 1
            # A timer only for a waiter with less time than the shared call: the shared call runs under its
            # first waiter's deadline, which the layers below enforce (TotalTimeout, grpc's own timeout), so
            # the first waiter, and any with more time, are answered by the time theirs runs out.
            timer = None
            if mine is not None and (flight.deadline is None or mine.at < flight.deadline.at):
                timer = call_later(self._clock, mine.remaining(self._clock), functools.partial(_expire, slot))
            try:
                response = await slot
            except TimeoutError:
                raise DeadlineExceeded(ctx.downstream, "deadline exceeded", sent=False) from None
            except DeadlineExceeded:
                ran_out_first = flight.deadline is not None and (mine is None or flight.deadline.at < mine.at)
                if ran_out_first and (mine is None or not mine.expired(self._clock)):
                    continue  # the shared call had less time than this waiter; try again with ours
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                if slot.done() and not slot.cancelled():
                    slot.exception()  # retrieved, even by a waiter cancelled as its answer came in
                flight.waiters -= 1
                if flight.waiters == 0 and flight.task is not None and not flight.task.done():
                    flight.task.cancel()
                    if cache.flights.get(key) is flight:
                        del cache.flights[key]
                ctx.stats.copy_from(flight.stats)
            return response

    def _start(
        self, key: bytes, request: Any, ctx: CallContext, deadline: Deadline | None, inner: Call, cache: MethodCache
    ) -> _Flight:
        shared = CallContext(ctx.method, ctx.downstream, deadline, ctx.max_staleness)
        flight = _Flight(shared.stats, deadline)
        cache.flights[key] = flight
        cache.downstream_calls += 1
        flight.task = asyncio.get_running_loop().create_task(self._fill(key, request, shared, inner, cache, flight))
        return flight

    async def _fill(
        self, key: bytes, request: Any, ctx: CallContext, inner: Call, cache: MethodCache, flight: _Flight
    ) -> None:
        """Make the shared call, store its answer, and hand the answer (or the error) to every waiter."""
        try:
            response = await inner(request, ctx)
        except BaseException as error:
            self._land(key, cache, flight)
            for slot in flight.slots:
                if slot.done():
                    continue
                if isinstance(error, asyncio.CancelledError):
                    slot.cancel()
                else:
                    slot.set_exception(error)
            if isinstance(error, asyncio.CancelledError):
                raise
            return  # the waiters have the error; the task itself ends quietly (nothing left to retrieve)
        self._store(key, response, cache)
        self._land(key, cache, flight)
        for slot in flight.slots:
            if not slot.done():
                slot.set_result(response)

    def _store(self, key: bytes, response: Any, cache: MethodCache) -> None:
        """Keep a good answer, stamped now, for readers within the TTL and for stale-if-error."""
        now = self._clock.now()
        cache.fresh[key] = (response, now)
        if cache.stale is not None:
            cache.stale[key] = (response, now)

    @staticmethod
    def _land(key: bytes, cache: MethodCache, flight: _Flight) -> None:
        # Before any waiter is answered, so that a caller arriving later starts a new call instead of
        # joining one that has ended.
        if cache.flights.get(key) is flight:
            del cache.flights[key]


def _expire(slot: asyncio.Future[Any]) -> None:
    """A waiter's own deadline passed: it stops waiting (the shared call goes on for the others)."""
    if not slot.done():
        slot.set_exception(TimeoutError())
