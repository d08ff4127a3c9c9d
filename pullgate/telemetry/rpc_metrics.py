"""The standard server-side gRPC metric, `rpc.server.duration` by method and status code, for every call a
pullgate server answers (refusals included); the client side is resilience.hotpath' RPC_CLIENT_DURATION, per attempt.

The OpenTelemetry RPC semantic conventions name it and its attributes (rpc.system, rpc.service, rpc.method,
rpc.grpc.status_code), so standard gRPC dashboards read it: in Prometheus `rpc_server_duration_milliseconds`.
Why it is recorded by hand rather than through the OpenTelemetry SDK or gRPC's own plugin: see
resilience/hotpath.py (cost per call; the plugin reports grpc.aio methods as "other").
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from resilience import Behavior, RpcDurations, UnaryInterceptor

SERVER_DURATION = RpcDurations(
    "rpc.server.duration",
    "Inbound gRPC calls, from the first interceptor to the answer (OpenTelemetry RPC semantic conventions), in ms",
)

_OK = grpc.StatusCode.OK.value[0]
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]


class ServerMetrics(UnaryInterceptor):
    """Records each unary call's duration and final status code. Outermost, so a refused call is counted too."""

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior:
        path: str = details.method
        record = SERVER_DURATION.record
        clock = time.perf_counter

        async def measured(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = clock()
            code = _OK
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = _CANCELLED  # the caller went away (or its deadline passed): grpc has answered CANCELLED
                raise
            except BaseException:
                code = _code(context, grpc.StatusCode.UNKNOWN.value[0])
                raise
            finally:
                if code == _OK:
                    code = _code(context, _OK)
                record((path, code), clock() - start)

        return measured


def _code(context: grpc.aio.ServicerContext[Any, Any], otherwise: int) -> int:
    """The status number the handler set or aborted with, or `otherwise` if none."""
    code: Any = context.code()
    if code is None:
        return otherwise
    return code if isinstance(code, int) else code.value[0]


__all__ = ["SERVER_DURATION", "ServerMetrics"]
