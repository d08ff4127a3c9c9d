"""Server-side half of deadline propagation, and the base for interceptors that wrap unary handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from resilience import deadline
from resilience.clock import SYSTEM_CLOCK, Clock

Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
"""A unary-unary handler: (request, context) -> response."""


class UnaryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A server interceptor for unary-unary calls; a subclass says in `wrap()` how to wrap a handler."""

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
        wrapped = self.wrap(handler.unary_unary, handler_call_details)  # type: ignore[arg-type]
        if wrapped is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


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
