"""The standard server-side gRPC metric, `rpc.server.duration` by method and status code, per the OpenTelemetry
RPC semantic conventions, for every call every pullgate server answers (refusals included).

Why not gRPC's own plugin (grpcio-observability, gRFC A66): on a grpc.aio server it reports every method as
"other" (grpc/grpc#39061, #41573), and per-method figures are the point. The client side is the resilience
layer's `rpc.client.duration`, recorded per attempt where the call goes on the wire (resilience/transport.py).
Both carry rpc.system, rpc.service, rpc.method and rpc.grpc.status_code, so a standard gRPC dashboard can read
them; in Prometheus they are `rpc_server_duration_milliseconds` and `rpc_client_duration_milliseconds`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import grpc
from opentelemetry import metrics

from resilience import Behavior, UnaryInterceptor

BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Histogram boundaries in milliseconds: the resilience layer's, from a cache hit to a whole deadline."""

SERVER_DURATION = metrics.get_meter("pullgate.rpc").create_histogram(
    "rpc.server.duration", unit="ms",
    description="Inbound gRPC calls, from the first interceptor to the answer (OpenTelemetry RPC semantic "
                "conventions): rpc.system, rpc.service, rpc.method, rpc.grpc.status_code",
    explicit_bucket_boundaries_advisory=BUCKETS_MS,
)

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServerMetrics(UnaryInterceptor):
    """Records each unary call's duration and final status code. Outermost, so a refused call is counted too."""

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior:
        service, _, method = details.method.lstrip("/").partition("/")
        by_code: dict[grpc.StatusCode, Mapping[str, str | int]] = {}

        def attributes(code: grpc.StatusCode) -> Mapping[str, str | int]:
            found = by_code.get(code)
            if found is None:
                found = by_code[code] = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method,
                                         "rpc.grpc.status_code": code.value[0]}
            return found

        async def measured(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            cancelled = False
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:
                cancelled = True  # the caller went away (or its deadline passed): grpc has answered CANCELLED
                raise
            finally:
                code = grpc.StatusCode.CANCELLED if cancelled else _code(context)
                SERVER_DURATION.record((time.perf_counter() - start) * 1000, attributes(code))

        return measured


def _code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The status the handler answered with: what it set or aborted with, OK if nothing."""
    code: Any = context.code()
    if code is None:
        return grpc.StatusCode.OK
    return _BY_NUMBER[code] if isinstance(code, int) else code


__all__ = ["BUCKETS_MS", "SERVER_DURATION", "ServerMetrics"]
