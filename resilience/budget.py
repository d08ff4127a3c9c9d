"""A retry budget: retries and hedges may add at most a fixed fraction of extra load, plus a small floor.

Why budgets and not only max attempts? `max_attempts = 3` alone lets a sick owner receive three times its
normal load exactly when it can least take it: a retry storm. A budget ties extra requests to real ones: each
request deposits `token_ratio` of a token, each retry or hedge withdraws a whole one, so at most 20% (by
default) of the traffic is extra, whatever the failure rate. A floor of `min_per_second` tokens keeps retries
possible for a client that sends little. Deposits expire after `ttl` seconds, so a burst of old successes
cannot pay for a storm much later. This is Finagle's RetryBudget (deposit / try_withdraw / balance), shared by
retries and backup requests; Envoy and Linkerd have the same idea.
"""

from __future__ import annotations

import math
from collections import deque

from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.config import BudgetConfig


class Budget:
    """Tokens for extra requests over a sliding window of `ttl` seconds, kept in one-second buckets."""

    def __init__(self, config: BudgetConfig = BudgetConfig(), clock: Clock = SYSTEM_CLOCK) -> None:  # noqa: B008
        self.enabled = config.enabled
        self._ratio = config.token_ratio
        self._floor = config.min_per_second * config.ttl
        self._ttl = config.ttl
        self._clock = clock
        # (second, deposits, withdrawals), oldest first
        self._buckets: deque[list[float]] = deque()
        self._deposits = 0.0
        self._withdrawals = 0.0
        self._second = -math.inf
        """The second of the newest bucket: within it, a deposit only adds (every call deposits)."""

    def _bucket(self) -> list[float]:
        second = math.floor(self._clock.now())
        if second == self._second:
            return self._buckets[-1]
        self._second = second
        buckets = self._buckets
        while buckets and buckets[0][0] <= second - self._ttl:
            _, deposits, withdrawals = buckets.popleft()
            self._deposits -= deposits
            self._withdrawals -= withdrawals
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0.0, 0.0])
        return buckets[-1]

    def deposit(self) -> None:
        """Record one request (not a retry or hedge)."""
        self._bucket()[1] += 1.0
        self._deposits += 1.0

    def try_withdraw(self, keep: float = 0.0) -> bool:
        """Take one token for a retry or hedge; False (and nothing taken) when the budget is spent, or when taking
        it would leave fewer than `keep` tokens."""
        if not self.enabled:
            return True
        bucket = self._bucket()
        if self._balance() - keep < 1.0:
            return False
        bucket[2] += 1.0
        self._withdrawals += 1.0
        return True

    @property
    def balance(self) -> float:
        """How many retries or hedges could be sent now."""
        self._bucket()
        return self._balance()

    @property
    def allowance(self) -> float:
        """How many retries or hedges the window allows in all: the floor plus the ratio of its requests."""
        self._bucket()
        return self._floor + self._ratio * self._deposits

    def _balance(self) -> float:
        return self._floor + self._ratio * self._deposits - self._withdrawals
