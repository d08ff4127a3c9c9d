"""Retry or hedge, one or the other per method (gRFC A6), decided by the method's idempotency.

    NO_SIDE_EFFECTS (a read)    hedged when hedging is on, else retried
    IDEMPOTENT (a keyed write)  retried, never hedged (two concurrent writes are a race, even if deduplicated)
    unset                       one attempt, never retried
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from resilience.context import Call, CallContext
from resilience.hedge import Hedge
from resilience.retry import Retry


class RetryOrHedge:
    """Routes each call to the Hedge or the Retry policy, or straight through."""

    def __init__(self, retry: Retry | None, hedge: Hedge | None) -> None:
        self.retry = retry
        self.hedge = hedge

    def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Awaitable[Any]:
        method = ctx.method
        if self.hedge is not None and method.hedgeable:
            return self.hedge(request, ctx, inner)
        if self.retry is not None and method.retryable:
            return self.retry(request, ctx, inner)
        return inner(request, ctx)
