"""Picks a replica for each attempt: power of two choices on latency (peak EWMA) times calls in flight.

Two replicas are drawn and the cheaper wins, cost = latency estimate * (outstanding calls + 1): Finagle's and
Linkerd's P2C over peak EWMA (resilience.ewma). Counting calls in flight alone, as this did before, is blind to
gray failure: a replica that does not answer has its hedged calls won elsewhere and cancelled, which frees
their slots, so it kept being chosen and every call sent there paid a hedge. Latency sees it. Every attempt's
end is a sample: an answer's time, or, for an attempt that ended without one (a hedge loser, a timeout, any
cancellation), a lower bound that can only raise the estimate; an overloaded refusal doubles it. Replicas that
have not answered yet are priced as the average of those that have, so a new one gets its share at once.

The replicas are a `resilience.replicas.Replicas` set, which may change while calls run (a downstream found by
DNS): Balance draws only from its live replicas, and counts each replica's attempts in flight in the set itself,
so that a removed replica is forgotten (by Balance, the breakers, outlier detection, the transport) only once
its last attempt has ended.

Which replicas may be drawn: not one this call has tried already (a retry or a hedge goes elsewhere; judged
as the attempt starts, so each hedge avoids every replica tried before it), nor one whose breaker is open,
nor one that outlier detection has ejected (resilience.outlier, which this feeds with races lost and
timeouts), as long as another is left. An ejected replica is drawn only when no other usable replica is
left, not even one this call tried before.

A race lost counts toward ejection only when the replica was overtaken: an attempt sent after its own answered
first. Answers are read in the order they arrive, so a later attempt can only win if this replica's answer had
not arrived by the time the later one's had. A hedge that loses to an attempt sent before it proves nothing
(the first was merely slowish), and is not counted. Nor is a race lost while this process's event loop was
behind for more than half of it: the caller is overloaded, and on a shared machine so are the owners' CPUs; a
replica starved for a moment must not be ejected for 30 s and its load pushed onto the others. (Losers used to
be told by the cancellation's message, which grpc.aio drops: no race lost was ever counted, and a frozen
replica was ejected only once a call to it timed out.)
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.context import Call, CallContext
from resilience.errors import DeadlineExceeded, NoReplicas, StatusError
from resilience.ewma import PRIOR, TAU, PeakEwma
from resilience.instruments import watch_balance
from resilience.lag import LoopLag
from resilience.outcome import Outcome, classify
from resilience.outlier import LOST_RACE, TIMED_OUT, OutlierDetector
from resilience.replicas import Replicas

FLOOR = 1e-4
"""No replica's latency counts as less than 0.1 ms, so its calls in flight always weigh (an estimate that
decayed to nearly nothing would otherwise take every call until its first answer)."""


def _never(replica: str) -> bool:
    return False


class Balance:
    """Sets `ctx.replica`; keeps each replica's calls in flight and latency estimate, and feeds outlier detection."""

    def __init__(
        self,
        replicas: Sequence[str] | Replicas,
        rng: random.Random | None = None,
        usable: Callable[[str], bool] = lambda replica: True,
        clock: Clock = SYSTEM_CLOCK,
        outliers: OutlierDetector | None = None,
        lag: LoopLag | None = None,
        answered: Callable[[bool, float], None] | None = None,
        downstream: str = "",
        decay: float = TAU,
    ) -> None:
        """`answered(accepted, now)` hears of every attempt that came back from the owner: accepted, or refused
        as overloaded (the throttle counts them). `downstream` labels the attempts metric. `replicas` is a fixed
        list, or a Replicas set that may change (the caller subscribes this Balance to it)."""
        self.downstream = downstream
        self.members = replicas if isinstance(replicas, Replicas) else Replicas(replicas)
        self.outstanding = self.members.in_flight
        """Each replica's attempts in flight: the set's own count (it forgets a leaving replica at 0)."""
        self._leaving = self.members.leaving
        self._decay = decay
        known = self.members.known()
        self.sent = dict.fromkeys(known, 0)
        """Attempts sent to each replica, ever (the `resilience.attempts` counter reads it)."""
        self.latency = {r: PeakEwma(tau=decay) for r in known}
        self.outliers = outliers
        self._lag = lag
        self._rng = rng or random.Random()
        self._usable = usable
        self._clock = clock
        self._answered = answered
        watch_balance(self)

    @property
    def replicas(self) -> tuple[str, ...]:
        """The replicas that may be picked now."""
        return self.members.live

    def joined(self, replica: str) -> None:
        """A new replica: no latency sample yet (priced as the average of the others), nothing sent."""
        self.latency[replica] = PeakEwma(tau=self._decay)
        self.sent[replica] = 0

    def left(self, replica: str) -> None:
        self.latency.pop(replica, None)
        self.sent.pop(replica, None)

    def estimate(self, replica: str) -> float:
        """The replica's latency estimate now, in seconds."""
        latency = self.latency[replica]
        now = self._clock.now()
        return latency.value(now) if latency.known else self._prior(now)

    def _prior(self, now: float) -> float:
        known = [e.value(now) for e in self.latency.values() if e.known]
        return sum(known) / len(known) if known else PRIOR

    def _cost(self, replica: str, now: float) -> float:
        latency = self.latency[replica]
        value = latency.value(now) if latency.known else self._prior(now)
        return max(value, FLOOR) * (self.outstanding[replica] + 1)

    def _ejected(self) -> Callable[[str], bool]:
        outliers = self.outliers
        return outliers.ejected if outliers is not None and outliers.out else _never

    def elsewhere(self, tried: Sequence[str]) -> bool:
        """Is there a usable replica, not ejected, that a call which tried `tried` has not tried yet?"""
        ejected, usable = self._ejected(), self._usable
        return any(r not in tried and usable(r) and not ejected(r) for r in self.members.live)

    def pick(self, tried: Sequence[str] = ()) -> str:
        """The replica for an attempt of a call that has tried `tried` so far; NoReplicas when there is none."""
        replicas = self.members.live
        if len(replicas) == 1:
            return replicas[0]
        if not replicas:
            raise NoReplicas(self.downstream, self.members.empty)
        usable, ejected = self._usable, self._ejected()
        candidates = [r for r in replicas if r not in tried and usable(r) and not ejected(r)]
        if not candidates:
            candidates = (
                [r for r in replicas if usable(r) and not ejected(r)]
                or [r for r in replicas if r not in tried and usable(r)]
                or [r for r in replicas if r not in tried]
                or [r for r in replicas if usable(r)]
                or list(replicas)
            )
        n = len(candidates)
        if n == 1:
            return candidates[0]
        rng = self._rng
        if n == 2:
            a, b = candidates
        else:
            i = int(rng.random() * n)
            j = int(rng.random() * (n - 1))
            a, b = candidates[i], candidates[j + 1 if j >= i else j]
        now = self._clock.now()
        cost_a, cost_b = self._cost(a, now), self._cost(b, now)
        if cost_a == cost_b:
            return a if rng.random() < 0.5 else b
        return a if cost_a < cost_b else b

    async def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Any:
        stats = ctx.stats
        replica = self.pick(stats.tried)
        ctx.replica = replica
        stats.attempts += 1
        stats.tried.append(replica)
        self.outstanding[replica] += 1
        self.sent[replica] += 1
        start = self._clock.now()
        try:
            response = await inner(request, ctx)
        except BaseException as error:
            self.outstanding[replica] -= 1
            self._ended(replica, error, start, ctx)
            if self._leaving:
                self.members.drained(replica)
            raise
        self.outstanding[replica] -= 1
        now = self._clock.now()
        self.latency[replica].observe(now - start, now)
        if self.outliers is not None:
            self.outliers.answered(replica)
        if self._answered is not None:
            self._answered(True, now)
        stats.replica = replica
        stats.won = ctx.attempt
        if self._leaving:
            self.members.drained(replica)
        return response

    def _ended(self, replica: str, error: BaseException, start: float, ctx: CallContext) -> None:
        """An attempt ended without a response: what it says about the replica's latency and health."""
        now = self._clock.now()
        elapsed = now - start
        latency, outliers = self.latency[replica], self.outliers
        outcome = classify(error)
        if self._answered is not None and outcome.news:
            self._answered(outcome is not Outcome.OVERLOADED, now)
        if outcome.owner_answered:
            latency.observe(elapsed, now)
            if outliers is not None:
                outliers.answered(replica)
        elif outcome is Outcome.OVERLOADED:
            latency.penalize(now)
        elif isinstance(error, asyncio.CancelledError):
            latency.at_least(elapsed, now)
            if outliers is not None and ctx.stats.won > ctx.attempt and self._kept_up(start, now, elapsed):
                # Overtaken: an attempt sent after this one answered first. (Told by the attempts' numbers, not
                # by the cancellation's message: grpc.aio drops the message when a call is cancelled.)
                outliers.failed(replica, LOST_RACE, start)
        elif outcome.owner_failed:
            latency.at_least(elapsed, now)
            if outliers is not None and isinstance(error, DeadlineExceeded):
                outliers.failed(replica, TIMED_OUT, start)
            elif isinstance(error, StatusError) and error.code is grpc.StatusCode.UNAVAILABLE:
                self.members.unreachable(replica)  # it may be gone: a downstream found by DNS looks again

    def _kept_up(self, start: float, now: float, elapsed: float) -> bool:
        """Was this process's event loop behind for at most half of [start, now]? If not, the caller was
        overloaded, and the machine with it: a replica overtaken then is more likely starved of CPU for a moment
        than sick, and is not blamed (as a deadline that ran out here is not; resilience.timeouts)."""
        return self._lag is None or self._lag.during(start, now) <= elapsed / 2
