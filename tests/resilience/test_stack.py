"""The stack's order is part of its design; this pins it."""

from __future__ import annotations

from resilience import Downstream, DownstreamConfig
from resilience.config import BreakerConfig, CacheConfig, ThrottleConfig
from resilience.stack import LAYERS
from resilience.testing import FakeClock
from tests.resilience.scripted import Scripted

ORDER = (
    "traced",
    "cached",
    "total_timeout",
    "retry_or_hedge",
    "throttle",
    "balance",
    "breaker",
    "bulkhead",
    "attempt_timeout",
)


def test_layers_are_in_the_designed_order_and_each_says_why() -> None:
    """LAYERS lists the policies outermost first, each with its reason."""
    assert tuple(name for name, _ in LAYERS) == ORDER
    assert all(len(why) > 30 for _, why in LAYERS)


def test_built_stack_follows_layers() -> None:
    """A downstream's stack holds the policies in LAYERS order."""
    clock = FakeClock()
    downstream = Downstream("catalog", ["a:1"], DownstreamConfig(), clock, endpoint=Scripted(clock))
    assert downstream.stack.names == ORDER


def test_switched_off_policies_are_left_out() -> None:
    """`enabled = false` removes the policy from the stack; the order of the rest holds."""
    clock = FakeClock()
    config = DownstreamConfig(
        cache=CacheConfig(enabled=False), breaker=BreakerConfig(enabled=False), throttle=ThrottleConfig(enabled=False)
    )
    downstream = Downstream("catalog", ["a:1"], config, clock, endpoint=Scripted(clock))
    assert downstream.stack.names == tuple(n for n in ORDER if n not in {"cached", "breaker", "throttle"})
