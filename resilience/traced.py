"""The tracing slot: the outermost place in the stack, where one span per logical call will start.

Tracing is a later issue. This policy is the hook point: it sits above the cache so that a span would see
cache hits, stale answers and every attempt below as attributes and events under one span. Today it only
passes the call through.
"""

from __future__ import annotations

from typing import Any

from resilience.context import Call, CallContext


class Traced:
    """Pass-through until tracing lands; keep it first in resilience.stack.LAYERS."""

    async def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Any:
        return await inner(request, ctx)
