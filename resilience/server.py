"""Server-side half of deadline propagation, and the base for interceptors that wrap unary handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import grpc

from resilience import deadline
from resilience.clock import SYSTEM_CLOCK, Clock

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
"""A unary-unary handler: (request, context) -> response."""


class HandlerMemo:
    """The wrapped handler made for each inner handler, so a method's handler is wrapped once, not per call.

    grpc.aio asks every interceptor for a handler on every call, and an interceptor that wraps builds a new
    closure and a new RpcMethodHandler each time. When the wrapping depends only on the inner handler (and so
    on the method), the result can be kept: grpc returns the same handler object for a method on every call,
    and so does an interceptor below that keeps its own. Bounded: an inner interceptor that wraps afresh per
    call (fault injection draws its faults per call) only makes this start over now and then.
    """

    __slots__ = ("_kept",)
    LIMIT: ClassVar[int] = 256

    def __init__(self) -> None:
        self._kept: dict[int, tuple[Any, Any]] = {}

    def get(self, handler: Any) -> Any | None:
        found = self._kept.get(id(handler))
        return found[1] if found is not None and found[0] is handler else None

    def put(self, handler: Any, wrapped: Any) -> Any:
        if len(self._kept) >= self.LIMIT:
            self._kept.clear()
        self._kept[id(handler)] = (handler, wrapped)  # the handler is kept alive, so its id stays its own
        return wrapped


class UnaryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A server interceptor for unary-unary calls; a subclass says in `wrap()` how to wrap a handler."""

    per_method: ClassVar[bool] = True
    """`wrap()` depends only on the handler and its method, so its result is kept per handler (HandlerMemo).
    False for an interceptor that decides per call (fault injection)."""

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior | None:
        """The handler to run instead of `behavior`, or None to leave the call untouched."""
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        memo: HandlerMemo | None = None
        if self.per_method:
            memo = self.__dict__.get("_memo")
            if memo is None:
                memo = self.__dict__["_memo"] = HandlerMemo()
            kept: grpc.RpcMethodHandler[Any, Any] | None = memo.get(handler)
            if kept is not None:
                return kept
        wrapped = self.wrap(handler.unary_unary, handler_call_details)  # type: ignore[arg-type]
        result = handler if wrapped is None else grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        return result if memo is None else memo.put(handler, result)


class DeadlineInterceptor(UnaryInterceptor):
    """Runs each unary-unary handler inside `deadline.scope()` of the caller's deadline.

    Every call made through the layer while the handler runs is then bounded by what is left of the
    caller's deadline, without any servicer passing timeouts by hand.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior:
        clock = self._clock

        async def bounded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            remaining = context.time_remaining()
            incoming = None if remaining is None else deadline.Deadline.after(remaining, clock)
            with deadline.scope(incoming):
                return await behavior(request, context)

        return bounded
