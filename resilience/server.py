"""Server-side half of deadline propagation: an interceptor that makes the incoming deadline the current one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from resilience import deadline
from resilience.clock import SYSTEM_CLOCK, Clock

_Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class DeadlineInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Runs each unary-unary handler inside `deadline.scope()` of the caller's deadline.

    Every call made through the layer while the handler runs is then bounded by what is left of the
    caller's deadline, without any servicer passing timeouts by hand.
    """

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior: _Behavior = handler.unary_unary  # type: ignore[assignment]
        clock = self._clock

        async def bounded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            remaining = context.time_remaining()
            incoming = None if remaining is None else deadline.Deadline.after(remaining, clock)
            with deadline.scope(incoming):
                return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            bounded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
