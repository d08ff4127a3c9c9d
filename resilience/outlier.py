"""Outlier detection: a replica that keeps failing quietly is ejected for a while, never more than half of them.

Why: a replica that is alive but does not answer (gray failure: frozen, swapping, a lost route) never opens its
breaker when its calls are hedged. Its attempts lose the race and are cancelled, and a cancelled attempt is not
a failure (it must not be: most losers are healthy replicas that were a little slower). Latency-aware balancing
sends it less, but not nothing, and every call that goes there costs a hedge and the hedge delay. So this
counts what says "it does not answer": hedge races it lost (another replica answered while it had not) and
timeouts the owner is to blame for (resilience.outcome). After `consecutive_failures` of them with no answer
between, the replica is ejected, and Balance sends it nothing while another replica is usable. Loud failures
(UNAVAILABLE, INTERNAL) are the breaker's: they are fast, and the breaker stops them and probes on its own.

Envoy's outlier detection and gRPC's (gRFC A50) are the model. An ejection lasts base_ejection_time times the
number of times the replica has been ejected, at most max_ejection_time, so a replica that keeps misbehaving
stays out longer each time; the count drops by one for every base_ejection_time the replica then stays in.
At most max_ejection_percent of the replicas are out at once, rounded down (two replicas: one; one: none):
ejecting more would overload the rest, and when most replicas look sick the likelier culprit is the caller.
When its time is up the replica is eligible again, and its next calls are the probe. Every ejection and return
is a warning on the `resilience.outlier` logger, a span event and a metric. The cap counts the replicas known
now: a replica that joins the set (resilience.replicas) raises it, one that has left lowers it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.config import OutlierDetectionConfig
from resilience.instruments import OUTLIER_EJECTIONS, event, watch_outliers

log = logging.getLogger("resilience.outlier")

LOST_RACE = "lost a hedge race"
TIMED_OUT = "timed out"


class _Replica:
    __slots__ = ("ejections", "failures", "last_lost", "quiet_since", "since", "until")

    def __init__(self) -> None:
        self.failures = 0
        """Quiet failures in a row, with no answer between."""
        self.last_lost = -math.inf
        """When the last lost race that counted was reported."""
        self.quiet_since = 0.0
        """When the first attempt of the current run of failures was sent (no answer from it since)."""
        self.until = 0.0
        """Ejected until this time; 0.0 when in."""
        self.ejections = 0
        """The multiplier: ejections not yet forgiven."""
        self.since = 0.0
        """When the replica last came back in (forgiveness counts from here)."""


class OutlierDetector:
    """Counts each replica's quiet failures and decides ejections; Balance asks `ejected()` and reports outcomes."""

    def __init__(
        self,
        downstream: str,
        replicas: Sequence[str],
        config: OutlierDetectionConfig = OutlierDetectionConfig(),  # noqa: B008 (frozen)
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.downstream = downstream
        self.config = config
        self.out = 0
        """How many replicas are ejected now (returns are noticed when asked)."""
        self._clock = clock
        self._replicas = {r: _Replica() for r in replicas}
        self.max_ejected = 0
        self._cap()
        watch_outliers(self)

    def _cap(self) -> None:
        self.max_ejected = len(self._replicas) * self.config.max_ejection_percent // 100

    def joined(self, replica: str) -> None:
        """A new replica (resilience.replicas): in, with no failures; the cap grows with the set."""
        self._replicas[replica] = _Replica()
        self._cap()

    def left(self, replica: str) -> None:
        """A removed replica whose last attempt has ended: forgotten (an ejection it was serving ends with it)."""
        state = self._replicas.pop(replica, None)
        if state is not None and state.until:
            self.out -= 1
        self._cap()

    def ejected(self, replica: str) -> bool:
        """Is `replica` ejected now? (Notices, and reports, a return whose time has come.)"""
        state = self._replicas[replica]
        if not state.until:
            return False
        now = self._clock.now()
        if now < state.until:
            return True
        self._return(replica, state, now)
        return False

    def ejected_now(self) -> int:
        """How many replicas are ejected at this moment (read-only; for the gauge)."""
        now = self._clock.now()
        return sum(1 for state in self._replicas.values() if state.until > now)

    def answered(self, replica: str) -> None:
        """The replica answered (OK, or an answer about the request): its run of quiet failures ends."""
        state = self._replicas[replica]
        if state.failures:
            state.failures = 0

    def failed(self, replica: str, why: str, since: float | None = None) -> None:
        """The replica failed quietly (`LOST_RACE` or `TIMED_OUT`) in an attempt sent at `since` (now if None):
        eject it if that makes `consecutive_failures` in a row spanning `min_silence` from the first one's send.

        Races lost by attempts that were sent before the last counted loss was known are that same observation
        (a replica stalled for a moment loses every race it is in at once), and do not count again. A timeout
        always counts: it is a whole attempt timeout of silence by itself."""
        state = self._replicas[replica]
        now = self._clock.now()
        sent = now if since is None else since
        if why == LOST_RACE:
            if sent < state.last_lost:
                return
            state.last_lost = now
        state.failures += 1
        if state.failures == 1:
            state.quiet_since = sent
        if state.failures < self.config.consecutive_failures or state.until:
            return
        if now - state.quiet_since < self.config.min_silence:
            return  # within a moment: a stall, not (yet) a hung replica
        if self.out:
            for name, other in self._replicas.items():  # make room: returns that are due
                if other.until and self._clock.now() >= other.until:
                    self._return(name, other, self._clock.now())
        if self.out >= self.max_ejected:
            return
        self._eject(replica, state, why)

    def _eject(self, replica: str, state: _Replica, why: str) -> None:
        config, now = self.config, self._clock.now()
        if state.ejections:
            state.ejections = max(0, state.ejections - int((now - state.since) / config.base_ejection_time))
        # Counted no higher than the cap needs, so that forgiveness never takes longer than the longest ejection.
        state.ejections = min(state.ejections + 1, math.ceil(config.max_ejection_time / config.base_ejection_time))
        seconds = min(config.max_ejection_time, config.base_ejection_time * state.ejections)
        state.until = now + seconds
        self.out += 1
        log.warning("outlier %s/%s ejected for %.1f s: %s %d times in a row over %.0f ms (ejection %d)",
                    self.downstream, replica, seconds, why, state.failures, (now - state.quiet_since) * 1000,
                    state.ejections)
        state.failures = 0
        OUTLIER_EJECTIONS.add(1, {"downstream": self.downstream, "replica": replica})
        event("replica ejected", {"resilience.replica": replica, "resilience.outlier.reason": why,
                                  "resilience.outlier.ejection_s": seconds,
                                  "resilience.outlier.ejections": state.ejections})

    def _return(self, replica: str, state: _Replica, now: float) -> None:
        state.until = 0.0
        state.since = now
        self.out -= 1
        log.warning("outlier %s/%s back in after its ejection (ejection %d); its next calls are the probe",
                    self.downstream, replica, state.ejections)
        event("replica returned", {"resilience.replica": replica, "resilience.outlier.ejections": state.ejections})
