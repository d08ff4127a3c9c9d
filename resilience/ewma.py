"""A replica's latency as the balancer sees it: a peak-sensitive moving average that decays (Finagle, Linkerd).

Why peak-sensitive: a replica that turned slow must lose its traffic at once, not after an average has caught
up. A sample above the estimate replaces it; one below pulls it down slowly, with time constant `TAU`; and with
no samples at all the estimate decays towards zero, so a replica that was avoided is tried again later (which
is how a slow replica is probed, and a recovered one gets its traffic back). Finagle's PeakEwma and Linkerd
(tower's peak_ewma) work this way, with the same 10 s default.

Why lower bounds too: a replica that never answers gives no samples. Its hedged calls are won by another
replica and its own attempt is cancelled; its timed-out attempts end without an answer. Each of those says
"it took at least this long", so `at_least()` raises the estimate to the elapsed time (never lowers it): a hung
replica's estimate grows though none of its calls completes. An overloaded refusal is fast, and a fast
failure would attract traffic to the replica refusing it; `penalize()` doubles the estimate instead.
"""

from __future__ import annotations

import math

TAU = 10.0
"""Seconds: a peak halves in about 7 s. Long against a call (ms to 1 s), so one quick answer does not restore
trust in a replica that was slow; short enough that a recovered replica has its share back within a minute."""
PRIOR = 0.005
"""The estimate of a replica before any replica of its downstream has answered: a loopback call with margin."""
PENALTY_CAP = 1.0
"""An estimate that refusals keep doubling stops at a second; it decays from there like any other."""


class PeakEwma:
    """One replica's latency estimate in seconds; `value(now)` is what the balancer compares. `tau` is the time
    constant in seconds (`[resilience.<ds>.balance] decay`)."""

    __slots__ = ("estimate", "known", "stamp", "tau")

    def __init__(self, estimate: float = PRIOR, stamp: float = 0.0, tau: float = TAU) -> None:
        self.estimate = estimate
        self.stamp = stamp
        self.tau = tau
        self.known = False
        """A sample has been observed (before that, `estimate` is a prior)."""

    def value(self, now: float) -> float:
        """The estimate, decayed towards zero for the time since it was last updated."""
        return self.estimate * math.exp((self.stamp - now) / self.tau)

    def observe(self, rtt: float, now: float) -> None:
        """An answer took `rtt` seconds: a peak replaces the estimate, a lower value pulls it down over TAU."""
        if not self.known:
            self.known = True
            self.estimate, self.stamp = rtt, now
            return
        w = math.exp((self.stamp - now) / self.tau)
        if rtt >= self.estimate * w:
            self.estimate = rtt
        else:
            self.estimate = self.estimate * w + rtt * (1.0 - w)
        self.stamp = now

    def at_least(self, bound: float, now: float) -> None:
        """No answer came within `bound` seconds (a cancelled hedge loser, a timeout): raise to it, never lower."""
        if bound > self.value(now):
            self.known = True
            self.estimate, self.stamp = bound, now

    def penalize(self, now: float) -> None:
        """The replica refused as overloaded: double the estimate (so its traffic halves), up to PENALTY_CAP."""
        self.estimate = min(PENALTY_CAP, max(2.0 * self.value(now), 2.0 * PRIOR))
        self.stamp = now
        self.known = True
