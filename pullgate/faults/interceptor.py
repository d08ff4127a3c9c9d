"""The server interceptor that applies a FaultInjector's faults before the handler runs.

Why an interceptor: every pullgate server runs through `pullgate.serving`, so one interceptor gives every owner
and the gateway the same faults, on the application services only (never health, reflection or admin).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from pullgate.faults.injector import FaultInjector
from resilience import Behavior, UnaryInterceptor

__all__ = ["FaultInterceptor"]


class FaultInterceptor(UnaryInterceptor):
    """Applies the injector's faults to unary-unary calls of the application services, before the handler runs.

    The chances are drawn when the call arrives; a call with nothing to inject gets the handler untouched.
    """

    per_method = False  # faults are drawn per call, so the wrapped handler is not kept

    def __init__(self, injector: FaultInjector, services: Iterable[str]) -> None:
        self._injector = injector
        self._services = frozenset(services)

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior | None:
        path = details.method
        service, _, method = path.lstrip("/").partition("/")
        if service not in self._services:
            return None
        faults = self._injector.plan(method)
        if not faults:
            return None
        injector = self._injector

        async def faulty(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await injector.apply(faults, path, context)
            return await behavior(request, context)

        return faulty
