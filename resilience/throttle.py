"""Adaptive throttling: while an owner refuses calls as overloaded, refuse some here, before they cost anything.

Google SRE book, "Handling Overload": an overloaded owner that refuses a call cheaply still spends something on
each refusal, and a caller that keeps sending at the same rate keeps it overloaded (with retries, it adds
more). So each caller throttles itself. Over the last `window` seconds it counts the attempts that reached the
owner and came back ("requests"; an attempt refused here counts too) and those the owner accepted ("accepts":
anything but an overloaded refusal, resilience.outcome), and refuses a new attempt here with probability

    p = max(0, (requests - K * accepts) / (requests + padding))         K = ratio_for_accepts

While the owner accepts everything p is 0, and the throttle costs two counter updates. K = 2 lets the owner
see up to twice what it accepts, so it learns at once when it can take more; once p > 0 some attempts still go
through, and their answers bring p back down when the owner recovers. The book adds 1 to the divisor; gRPC's own
throttler (grpc-go, for RLS) adds 8, so a quiet client that met one refusal does not reject half its next calls:
`requests_padding` chooses, 8 by default, and its weight fades as requests grow.

Per attempt, per downstream: retries and hedges are requests too (the owner sees them), and are exactly the
extra load an overloaded owner can least take. It sits above Balance, so a refused attempt picks no replica,
counts in no breaker and holds no bulkhead slot: nothing below sees it. The refusal is `Throttled`
(RESOURCE_EXHAUSTED, as the owner would have said), which nothing retries. How each attempt that went through
ended is reported by Balance, which already sees every attempt end (`record()`): so the throttle is a plain
function before the attempt, costs no coroutine of its own, and while the owner accepts everything it is a
comparison of two counters. Randomness is the injected rng, time the
injected clock; the counts are kept in one-second buckets, as the budget's are.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Awaitable
from typing import Any

from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.config import ThrottleConfig
from resilience.context import Call, CallContext
from resilience.errors import Throttled
from resilience.instruments import THROTTLE_REJECTIONS, event, labels, watch_throttle


class Throttle:
    """Refuses an attempt with the SRE book's probability; `record()` counts each attempt's answer (from Balance)."""

    def __init__(
        self,
        downstream: str,
        config: ThrottleConfig = ThrottleConfig(),  # noqa: B008 (frozen)
        clock: Clock = SYSTEM_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        self.downstream = downstream
        self._k = config.ratio_for_accepts
        self._padding = config.requests_padding
        self._window = config.window
        self._clock = clock
        self._rng = rng or random.Random()
        self._buckets: deque[list[float]] = deque()
        """[second, requests, accepts], oldest first."""
        self.requests = 0.0
        self.accepts = 0.0
        self._second = -math.inf
        watch_throttle(self)

    def _rotate(self, second: float) -> None:
        """A new second: drop the buckets that left the window, start this second's."""
        self._second = second
        buckets = self._buckets
        while buckets and buckets[0][0] <= second - self._window:
            _, requests, accepts = buckets.popleft()
            self.requests -= requests
            self.accepts -= accepts
        buckets.append([second, 0.0, 0.0])

    def rejection_probability(self, requests: float, accepts: float) -> float:
        """The SRE book's formula, with this throttle's K and padding."""
        return max(0.0, (requests - self._k * accepts) / (requests + self._padding))

    def probability(self) -> float:
        """The probability that an attempt is refused now (reads the window without changing it)."""
        cutoff = math.floor(self._clock.now()) - self._window
        requests = accepts = 0.0
        for second, r, a in list(self._buckets):  # a snapshot: the metrics reader calls this from its own thread
            if second > cutoff:
                requests += r
                accepts += a
        return self.rejection_probability(requests, accepts)

    def record(self, accepted: bool, now: float) -> None:
        """An attempt came back from the owner at `now`: accepted, or refused as overloaded (Balance reports it)."""
        second = now // 1.0
        if second != self._second:
            self._rotate(second)
        bucket = self._buckets[-1]
        bucket[1] += 1.0
        self.requests += 1.0
        if accepted:
            bucket[2] += 1.0
            self.accepts += 1.0

    def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Awaitable[Any]:
        # A plain function, not a coroutine: it acts only before the attempt (Balance reports how it ended),
        # and reads the clock only when the counts say it might refuse.
        if self.requests > self._k * self.accepts:
            second = self._clock.now() // 1.0
            if second != self._second:
                self._rotate(second)  # the counts must be current before they refuse anything
            excess = self.requests - self._k * self.accepts
            if excess > 0.0:
                p = excess / (self.requests + self._padding)
                if self._rng.random() < p:
                    self._buckets[-1][1] += 1.0
                    self.requests += 1.0
                    THROTTLE_REJECTIONS.add(1, labels(self.downstream, ctx.method.descriptor.name))
                    event("throttled", {"resilience.attempt": ctx.attempt, "resilience.throttle.probability": p})
                    raise Throttled(self.downstream, p)
        return inner(request, ctx)
