"""A request body that does not decode as its method's request message is the caller's mistake: INVALID_ARGUMENT.

Why an interceptor that takes decoding over: grpc.aio decodes the request with the handler's
`request_deserializer` itself, after the interceptors have chosen the handler and before any of their wrapped
behaviors runs, and it answers a body the deserializer refuses with UNKNOWN ("Unexpected <class
'DecodeError'>..."), which says "the server failed" when the request was at fault, and no metric, span or log of
pullgate sees the call. `RequestDecoding` hands grpc a handler with no deserializer (grpc then passes the body's
bytes as they came) whose behavior decodes them with the inner handler's deserializer and refuses what does not
decode:

    INVALID_ARGUMENT  request body is not a valid pullgate.orders.v1.GetOrderRequest: Wire format was corrupt

The refusal is set on the context and the call returns, like an admission refusal: no exception, nothing below
runs (no handler, no write). Unary-unary methods only; a streaming method keeps grpc's own decoding.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from resilience import Behavior, HandlerMemo

__all__ = ["RequestDecoding", "message_name"]

_INVALID = grpc.StatusCode.INVALID_ARGUMENT


class RequestDecoding(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Decodes each unary-unary request itself, so a body that does not decode is refused with INVALID_ARGUMENT.

    The handler it returns is made once per inner handler (HandlerMemo): grpc and the interceptors below return
    the same handler for a method on every call, except fault injection, which wraps afresh for a call it
    injects into (then the memo misses, as it does for every interceptor above that one).
    """

    def __init__(self) -> None:
        self._memo = HandlerMemo()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        kept: grpc.RpcMethodHandler[Any, Any] | None = self._memo.get(handler)
        if kept is not None:
            return kept
        decode = handler.request_deserializer
        wrapped: grpc.RpcMethodHandler[Any, Any] = handler  # a behavior that takes bytes: nothing to decode
        if decode is not None:
            name = message_name(decode, handler_call_details.method)
            wrapped = grpc.unary_unary_rpc_method_handler(
                _decoding(handler.unary_unary, decode, name),  # type: ignore[arg-type]
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        self._memo.put(handler, wrapped)
        return wrapped


def message_name(deserializer: Callable[[bytes], Any], method: str) -> str:
    """The full name of the message `deserializer` makes (`SomeMessage.FromString`); else the method's path."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None)
    return name if isinstance(name, str) and name else f"request of {method}"


def _decoding(behavior: Behavior, decode: Callable[[bytes], Any], name: str) -> Behavior:
    prefix = f"request body is not a valid {name}: "

    async def decoding(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            request = decode(body)
        except DecodeError as error:
            context.set_code(_INVALID)
            context.set_details(prefix + _reason(error))
            return None
        return await behavior(request, context)

    return decoding


def _reason(error: DecodeError) -> str:
    """What protobuf says is wrong, without the type name it repeats (upb: "Error parsing message with type
    'pkg.Msg': Wire format was corrupt"; the pure-Python parser: "Truncated message.")."""
    text = str(error)
    if text.startswith("Error parsing message"):
        _, colon, rest = text.partition("': ")
        if colon and rest:
            return rest
    return text or "it does not parse"
