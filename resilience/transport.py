"""The bottom of the stack: one grpc.aio channel per replica, and the only place that touches grpc errors.

A replica that joins (resilience.replicas) gets its channel at once; one that leaves has its channel closed once
its last attempt has ended, gracefully.

grpc's own retries are switched off on these channels (`grpc.enable_retries = 0`): grpc Python applies a
service config `retryPolicy` by default, and its retries would multiply with the layer's (3 x 3 = 9 attempts
for one call, none of them counted by the budget or the breaker). grpc Python ignores `hedgingPolicy`
altogether, so the layer hedges itself.

Client interceptors (grpc.aio's `UnaryUnaryClientInterceptor`, e.g. OpenTelemetry's client span and trace
propagation) are run here, in the attempt's own task, rather than by the channel: a channel's interceptors
cost each call an extra task, an `InterceptedUnaryUnaryCall` and several turns of the event loop, which on
loopback is a sizeable share of the call itself (docs/observability.md, Cost).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc

from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.context import CallContext
from resilience.criticality import outgoing_metadata
from resilience.errors import (
    ORIGIN_METADATA,
    OVERLOADED_METADATA,
    REFUSED_METADATA,
    DeadlineExceeded,
    NoReplicas,
    Overloaded,
    ResilienceError,
    StatusError,
)
from resilience.hotpath import RPC_CLIENT_DURATION

CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    # Our retries and hedges own the extra load; grpc's would multiply with them (and ignore our budget).
    ("grpc.enable_retries", 0),
    ("grpc.keepalive_time_ms", 30_000),
    # grpc backs off reconnecting up to 120 s by default, so a replica that was down for a while stays
    # unreachable long after it is back. The breaker already keeps load off a dead replica; reconnect quickly
    # so its half-open probe finds the replica as soon as it returns.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # Each channel owns its connections. grpc shares subchannels between channels to the same address by
    # default, and with them a cached failure: a new channel to an address where an earlier server died (a
    # restarted owner on the same port, which tests do often) was refused at once from the other channel's
    # backoff, attempt after attempt, without trying to connect.
    ("grpc.use_local_subchannel_pool", 1),
)


class ChannelFactory(Protocol):
    """Makes the channels a transport sends on: how it reaches a replica (plaintext, TLS with which identity).

    `version()` is asked before every attempt and must be cheap; when it changes (rotated credentials), the
    transport makes new channels and closes the old ones gracefully.
    """

    def version(self) -> int: ...

    def channel(self, authority: str, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A channel to `address`, a replica of the downstream called `authority`."""
        ...


class InsecureChannels:
    """Plaintext channels: for tests and for an explicitly insecure deployment."""

    def version(self) -> int:
        return 0

    def channel(self, authority: str, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(address, options=options)


INSECURE = InsecureChannels()

CLOSE_GRACE = 5.0
"""Seconds that calls in flight on a replaced channel get to finish before it closes."""

_OK = grpc.StatusCode.OK.value[0]
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]


class Transport:
    """Sends one attempt to `ctx.replica` with the time left of `ctx.attempt_deadline` (or `ctx.deadline`)."""

    def __init__(
        self,
        downstream: str,
        addresses: list[str],
        clock: Clock = SYSTEM_CLOCK,
        interceptors: Sequence[grpc.aio.UnaryUnaryClientInterceptor[Any, Any]] = (),
        channels: ChannelFactory = INSECURE,
    ) -> None:
        """`interceptors` wrap every attempt, the first outermost, as they would on a channel; `channels` makes
        the channels (plaintext unless told otherwise). `addresses` may be empty when the replicas join later
        (`joined`, from a resilience.replicas set)."""
        self.downstream = downstream
        self._clock = clock
        self._interceptors = tuple(interceptors)
        self._direct = _direct_hooks(self._interceptors)
        self._factory = channels
        self._version = channels.version()
        self._channels = {a: channels.channel(downstream, a, CHANNEL_OPTIONS) for a in addresses}
        self._callables: dict[tuple[str, str], grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def joined(self, replica: str) -> None:
        """A new replica (resilience.replicas): a channel to it, made now so it connects before its first call."""
        self._channels[replica] = self._factory.channel(self.downstream, replica, CHANNEL_OPTIONS)

    def left(self, replica: str) -> None:
        """A removed replica whose last attempt has ended: its channel closes, giving anything still on it (a
        cancelled call winding down) `CLOSE_GRACE` to finish."""
        channel = self._channels.pop(replica, None)
        for key in [key for key in self._callables if key[0] == replica]:
            del self._callables[key]
        if channel is not None:
            self._close_later(channel)

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        task = asyncio.get_running_loop().create_task(channel.close(CLOSE_GRACE))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _renew(self, version: int) -> None:
        """New channels for every replica (the factory's credentials changed); the old ones close once the calls
        in flight on them have had `CLOSE_GRACE` to finish."""
        old = self._channels
        self._version = version
        self._channels = {a: self._factory.channel(self.downstream, a, CHANNEL_OPTIONS) for a in old}
        self._callables.clear()
        for channel in old.values():
            self._close_later(channel)

    async def __call__(self, request: Any, ctx: CallContext) -> Any:
        if (version := self._factory.version()) != self._version:
            self._renew(version)
        replica = ctx.replica or next(iter(self._channels), "")
        if not replica:
            raise NoReplicas(self.downstream, "no replica")
        bound = ctx.attempt_deadline or ctx.deadline
        timeout = None
        if bound is not None:
            timeout = bound.remaining(self._clock)
            if timeout <= 0.0:
                raise DeadlineExceeded(self.downstream, sent=False)
        key = (replica, ctx.method.path)
        callable_ = self._callables.get(key)
        if callable_ is None:
            callable_ = self._channels[replica].unary_unary(
                ctx.method.path,
                request_serializer=ctx.method.request_type.SerializeToString,
                response_deserializer=ctx.method.response_type.FromString,
            )
            self._callables[key] = callable_
        # The criticality of the work in progress goes on, as the deadline does (made once per level: a lookup).
        metadata = outgoing_metadata()
        path = ctx.method.path
        now = self._clock.now
        start = now()
        code = _OK
        try:
            if self._interceptors:
                extra = self._direct_metadata()
                if extra is None:
                    return await self._intercepted(callable_, request, timeout, path, metadata)
                if extra:
                    metadata = extra if metadata is None else (*metadata, *extra)
            call = callable_(request, timeout=timeout, metadata=metadata)
            try:
                return await call
            except asyncio.CancelledError:
                call.cancel()  # the owner sees the cancellation and can stop working
                raise
        except asyncio.CancelledError:
            code = _CANCELLED
            raise
        except grpc.aio.AioRpcError as error:
            code = error.code().value[0]
            raise translate(error, self.downstream, replica) from None
        finally:
            RPC_CLIENT_DURATION.record((path, code), now() - start)

    def _direct_metadata(self) -> tuple[tuple[str, str], ...] | None:
        """What the interceptors would add to this attempt's metadata, when that is all they would do (every one
        says so through its `direct_metadata()`: tracing's client interceptor under a trace the sampler dropped);
        None when any of them must run around the attempt."""
        if self._direct is None:
            return None
        extra: tuple[tuple[str, str], ...] = ()
        for hook in self._direct:
            more = hook()
            if more is None:
                return None
            extra += more
        return extra

    async def _intercepted(
        self,
        callable_: grpc.aio.UnaryUnaryMultiCallable[Any, Any],
        request: Any,
        time_left: float | None,
        path: str,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> Any:
        """The attempt through the interceptors, each given the next as its continuation, as grpc.aio does."""
        calls: list[grpc.aio.Call] = []

        async def send(details: grpc.aio.ClientCallDetails, message: Any) -> grpc.aio.Call:
            call = callable_(message, timeout=details.timeout, metadata=details.metadata)
            calls.append(call)
            return call

        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]] = send
        for interceptor in reversed(self._interceptors):
            continuation = functools.partial(interceptor.intercept_unary_unary, continuation)
        try:
            # An interceptor returns the call it was given (or one wrapping it), or the response itself.
            # A Metadata of its own per call: an interceptor may add to it (trace propagation does).
            details = grpc.aio.ClientCallDetails(
                path, time_left, None if metadata is None else grpc.aio.Metadata(*metadata), None, None
            )
            answer = await continuation(details, request)
            return await answer if isinstance(answer, grpc.aio.UnaryUnaryCall) else answer
        except asyncio.CancelledError:
            for call in calls:
                call.cancel()  # the owner sees the cancellation and can stop working
            raise

    async def close(self) -> None:
        await asyncio.gather(*(channel.close(None) for channel in self._channels.values()), *self._closing)


DirectMetadata = Callable[[], tuple[tuple[str, str], ...] | None]
"""An interceptor's optional `direct_metadata()`: the metadata it would add to the attempt about to start, if adding
it is all it would do (() for nothing), or None if it must run around the attempt. Then the transport adds it
and makes the call itself, without the interceptor machinery (call details, a continuation per interceptor, a
coroutine each), which cost a traced process about as much as the rest of an unsampled request's tracing."""


def _direct_hooks(interceptors: Sequence[Any]) -> tuple[DirectMetadata, ...] | None:
    """The interceptors' `direct_metadata` methods, if every one has one; else None (always the full path)."""
    hooks = tuple(getattr(interceptor, "direct_metadata", None) for interceptor in interceptors)
    return None if any(hook is None for hook in hooks) else hooks  # type: ignore[return-value]


def translate(error: grpc.aio.AioRpcError, downstream: str, replica: str) -> ResilienceError:
    """A grpc error as one of the layer's errors."""
    code = error.code()
    details = error.details() or ""
    origin, overloaded, refused_late = _trailers(error)
    translated: ResilienceError
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and refused_late:
        # The owner refused it on arrival: less time was left than the method takes. Nothing was started, and
        # the time went before it arrived (the caller's own queueing), so it counts against nobody.
        translated = DeadlineExceeded(downstream, f"deadline too close when it reached {replica}", sent=False)
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        translated = DeadlineExceeded(downstream, f"deadline exceeded at {replica}", sent=True)
    elif code is grpc.StatusCode.RESOURCE_EXHAUSTED and overloaded:
        translated = Overloaded(code, downstream, details, replica)
    elif code is grpc.StatusCode.CANCELLED:
        # The caller's own cancellations never get here (they are asyncio.CancelledError); a CANCELLED the server
        # sent is grpc's core refusing a call that found too many waiting to be taken (max_pending_requests):
        # the owner shed it before it started, as an overloaded refusal does.
        translated = Overloaded(code, downstream, f"shed before it started, too many calls waiting at {replica}",
                                replica)
    else:
        translated = StatusError(code, downstream, details, replica)
    translated.origin = origin
    return translated


def _trailers(error: grpc.aio.AioRpcError) -> tuple[str | None, bool, bool]:
    """What the owner's trailers say: where the failure began (ORIGIN_METADATA), whether it refused the call
    because it is overloaded (OVERLOADED_METADATA = "1"), and whether it refused it on arrival because too
    little time was left (REFUSED_METADATA = "deadline")."""
    origin: str | None = None
    overloaded = refused_late = False
    trailers: Any = error.trailing_metadata() or ()
    for key, value in trailers:
        if key == ORIGIN_METADATA:
            origin = value if isinstance(value, str) else bytes(value).decode(errors="replace")
        elif key == OVERLOADED_METADATA:
            overloaded = value in ("1", b"1")
        elif key == REFUSED_METADATA:
            refused_late = value in ("deadline", b"deadline")
    return origin, overloaded, refused_late
