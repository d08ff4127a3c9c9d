"""The stack, in one ordered list, outermost first; every line says why it sits where it does.

A call is a function and a policy wraps one (Finagle's Filter, tower's Layer). `compose()` folds the list
around the transport so that `LAYERS[0]` sees the call first and the transport sees it last.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from resilience.balance import Balance
from resilience.breaker import Breaker
from resilience.budget import Budget
from resilience.bulkhead import Bulkhead
from resilience.cache import Cached
from resilience.clock import Clock
from resilience.config import DownstreamConfig
from resilience.context import Call, CallContext, Policy
from resilience.hedge import Hedge
from resilience.lag import monitor
from resilience.outlier import OutlierDetector
from resilience.replicas import Replicas
from resilience.retry import Retry, RetryPolicy
from resilience.select import RetryOrHedge
from resilience.throttle import Throttle
from resilience.timeouts import AttemptTimeout, TotalTimeout
from resilience.traced import Traced

LAYERS: tuple[tuple[str, str], ...] = (
    ("traced", "outermost, so one span covers the whole logical call: cache hits, attempts, hedges, breakers"),
    ("cached", "above the timeout and retries: a hit costs no deadline, no attempt, no budget; and on the way "
     "back it sees the final failure of all attempts, so stale-if-error judges the call, not one attempt"),
    ("total_timeout", "the caller's deadline (propagated from the incoming RPC) bounds every attempt and every "
     "backoff or hedge delay below; it never grows back"),
    ("retry_or_hedge", "one or the other per method (gRFC A6), both on one budget; above Balance so each new "
     "attempt is balanced afresh and can go to a different replica"),
    ("throttle", "adaptive throttling, per downstream and per attempt: below retry/hedge so retries and hedges "
     "are requests too (the extra load an overloaded owner can least take); above Balance so a refused attempt "
     "picks no replica, counts in no breaker and holds no slot: nothing below ever sees it (Balance, which sees "
     "every attempt end, tells it which were accepted)"),
    ("balance", "picks a replica per attempt (P2C on peak-EWMA latency x calls in flight), avoiding those tried "
     "before, ejected as outliers or with an open breaker; above the breaker so it sees every attempt end, and "
     "a hedge loser's or a timeout's elapsed time feeds the estimate and outlier detection"),
    ("breaker", "per replica, below retry/hedge so every attempt counts; fails fast before taking a bulkhead "
     "slot; a cancelled hedge loser, an overloaded refusal or a deadline that ran out here is not a failure"),
    ("bulkhead", "bounds calls in flight to the owner; below the breaker so a refused call holds no slot"),
    ("attempt_timeout", "each attempt's own slice, clipped by what is left; lowest, so the slice measures the "
     "network call and not the wait for a bulkhead slot, and so it judges a timeout (the owner's, or the time "
     "ran out here) before the breaker and the balancer above read it"),
)
"""(name, why) outermost first; the transport sits below the last one."""


@dataclass(frozen=True, slots=True)
class Stack:
    """The built policies, by name in LAYERS order, and the composed call."""

    policies: tuple[tuple[str, Policy], ...]
    call: Call

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.policies)

    def get(self, name: str) -> Any:
        """The policy called `name`, or None when it is switched off."""
        return dict(self.policies).get(name)


def compose(policies: Sequence[Policy], endpoint: Call) -> Call:
    """`policies[0](request, ctx, policies[1](..., endpoint))`: the first policy is outermost."""
    call = endpoint
    for policy in reversed(policies):
        call = _bind(policy, call)
    return call


def _bind(policy: Policy, inner: Call) -> Call:
    # A plain function that returns the policy's coroutine: no wrapping coroutine per layer and call.
    def bound(request: Any, ctx: CallContext) -> Awaitable[Any]:
        return policy(request, ctx, inner)

    return bound


def build(
    downstream: str,
    config: DownstreamConfig,
    replicas: Sequence[str] | Replicas,
    endpoint: Call,
    clock: Clock,
    rng: random.Random,
) -> Stack:
    """The stack for one downstream; a policy switched off in the config is left out of it. Its policies that
    keep state per replica are subscribed to `replicas` (a Replicas set, when the replicas may change)."""
    members = replicas if isinstance(replicas, Replicas) else Replicas(replicas)
    known = members.known()
    budget = Budget(config.budget, clock)
    total = TotalTimeout(config.timeout, clock)
    breaker = Breaker(downstream, known, config.breaker, clock) if config.breaker.enabled else None
    lag = monitor(clock)
    outliers = (
        OutlierDetector(downstream, known, config.outlier_detection, clock)
        if config.outlier_detection.enabled else None
    )
    throttle = Throttle(downstream, config.throttle, clock, rng) if config.throttle.enabled else None
    balance = Balance(members, rng, breaker.usable if breaker else _always, clock, outliers, lag,
                      throttle.record if throttle else None, downstream, config.balance.decay)
    for member in (breaker, outliers, balance):
        if member is not None:
            members.subscribe(member)
    retry = Retry(RetryPolicy(config.retry, budget, rng, balance.elsewhere), clock) if config.retry.enabled else None
    hedge = Hedge(config.hedging, budget, clock, balance.elsewhere) if config.hedging.enabled else None
    made: dict[str, Policy | None] = {
        "traced": Traced(downstream, breaker.state_of if breaker else None, clock),
        "cached": Cached(config.cache, total, clock) if config.cache.enabled else None,
        "total_timeout": total,
        "retry_or_hedge": RetryOrHedge(retry, hedge) if retry or hedge else None,
        "throttle": throttle,
        "balance": balance,
        "breaker": breaker,
        "bulkhead": Bulkhead(downstream, config.bulkhead, clock) if config.bulkhead.enabled else None,
        "attempt_timeout": AttemptTimeout(config.timeout, clock, balance.estimate, lag),
    }
    ordered = tuple((name, policy) for name, _ in LAYERS if (policy := made[name]) is not None)
    return Stack(ordered, compose([p for _, p in ordered], endpoint))


def _always(replica: str) -> bool:
    return True
