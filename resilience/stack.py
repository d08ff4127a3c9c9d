"""The stack, in one ordered list, outermost first; every line says why it sits where it does.

A call is a function and a policy wraps one (Finagle's Filter, tower's Layer). `compose()` folds the list
around the transport so that `LAYERS[0]` sees the call first and the transport sees it last.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resilience.balance import Balance
from resilience.clock import Clock
from resilience.config import DownstreamConfig
from resilience.context import Call, CallContext, Policy
from resilience.timeouts import AttemptTimeout, TotalTimeout

LAYERS: tuple[tuple[str, str], ...] = (
    ("total_timeout", "the caller's deadline (propagated from the incoming RPC) bounds all attempts"),
    ("balance", "picks a replica per attempt, so each retry or hedge can go to a different one than before"),
    ("attempt_timeout", "each attempt's own slice, clipped by what is left of the call's deadline"),
)
"""(name, why) outermost first; the transport sits below the last one."""


@dataclass(frozen=True, slots=True)
class Stack:
    """The built policies, by name in LAYERS order, and the composed call."""

    policies: tuple[tuple[str, Policy], ...]
    call: Call

    def __getitem__(self, name: str) -> Any:
        return dict(self.policies)[name]


def compose(policies: Sequence[Policy], endpoint: Call) -> Call:
    """`policies[0](request, ctx, policies[1](..., endpoint))`: the first policy is outermost."""
    call = endpoint
    for policy in reversed(policies):
        call = functools.partial(_bind, policy, call)
    return call


async def _bind(policy: Policy, inner: Call, request: Any, ctx: CallContext) -> Any:
    return await policy(request, ctx, inner)


def build(
    config: DownstreamConfig, replicas: Sequence[str], endpoint: Call, clock: Clock, rng: random.Random
) -> Stack:
    """The stack for one downstream."""
    made: dict[str, Policy] = {
        "total_timeout": TotalTimeout(config.timeout, clock),
        "balance": Balance(replicas, rng),
        "attempt_timeout": AttemptTimeout(config.timeout, clock),
    }
    ordered = tuple((name, made[name]) for name, _ in LAYERS)
    return Stack(ordered, compose([p for _, p in ordered], endpoint))
