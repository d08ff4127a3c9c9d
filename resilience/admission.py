"""Server admission control: admit a request only while the server can still answer it in time.

Why a limit on requests in flight, and why one that adapts? A server that accepts everything under overload
answers everything late: every request waits behind all the others, callers time out and retry, and the
work the server does is for callers that have already left. A fixed limit is either too low for a good day or
too high for a bad one (a slow disk, a noisy neighbour on the two cores, a dependency that got slower), so the
limit follows latency, as TCP's congestion window follows delay: while requests finish as fast as they
usually do, it grows; when they take clearly longer, requests are queueing inside the server, and it
shrinks. This is Netflix concurrency-limits' Gradient2 with its `rttTolerance` (docs/overload.md says why
Gradient2 and not Vegas, Envoy's minRTT gradient or CoDel).

Everything here decides and nothing acts: no grpc, no clock of its own (callers pass times in), so tests drive
it with plain numbers. The interceptor that acts on it is resilience.server.AdmissionInterceptor.

    GradientLimit   the limit, from each finished request's latency
    Admission       requests in flight against that limit, each criticality its share of it
    ServiceTime     the least one method's requests recently took: less time left than that, refuse at once
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from resilience.config import ConfigError, _Checked, _policy
from resilience.criticality import Criticality


def _fraction(v: float) -> bool:
    return 0 < v <= 1


@dataclass(frozen=True, slots=True)
class AdmissionConfig(_Checked):
    """Admission control for one server. Durations are in seconds; the defaults suit a Python process that
    shares two cores with others.

    `initial_limit`, `min_limit`, `max_limit` bound the number of requests in flight. The limit moves once per
    `window` finished requests, on their average latency and the most that were in flight when one of them
    started: `smoothing` is how much of the new estimate it takes at once, and `tolerance` how much slower than
    the long-term average (over about `long_window` windows) a window may be before it counts as queueing.
    CRITICAL_PLUS may fill the whole limit; `critical_share`, `sheddable_plus_share` and `sheddable_share` are
    the fractions of it the other levels may fill. With `check_deadline`, a request with
    less time left than the `service_time_percentile` of its method's recent latency is refused at arrival.

    `max_pending_requests` and `max_pending_requests_hard_limit` bound the queue *in front of* all of that, in
    grpc's core (its own channel arguments, passed to the server by `server_options()`): calls the server has
    received and Python has not yet taken. A grpc.aio server takes one call per method per few turns of its
    event loop, so past what the process can do the calls wait there, unseen by any interceptor, until they
    are nearly expired (measured: ~950 ms of a 1 s deadline at 3x capacity). With the bound, grpc's core
    refuses what arrives while more than the soft limit are waiting (at random, surely past the hard one),
    before Python spends anything on it. grpc answers those with CANCELLED, not RESOURCE_EXHAUSTED (its
    choice, not ours); the layer's transport reads a CANCELLED the server sent as an overloaded refusal.

    `edge_headroom` is for a server with an edge in front (pullgate.edge: a proxy that refuses what the limit has
    no room for, counting every request it has sent on and not seen answered): requests on their way from the edge
    into Python (grpc's core, the accept loop, a task) are counted there and not yet here, so each room grows by
    this many places, at the edge and here alike. It stands where grpc's pending-call bound stood without an edge.

        AdmissionConfig(initial_limit=20, sheddable_share=0.5)
        AdmissionConfig.from_mapping({"max_limit": 100}, source="pullgate.toml")
    """

    enabled: bool = True
    initial_limit: int = 20
    min_limit: int = 5
    max_limit: int = 200
    smoothing: float = 0.2
    tolerance: float = 1.5
    long_window: int = 600
    window: int = 10
    critical_share: float = 1.0
    sheddable_plus_share: float = 0.95
    sheddable_share: float = 0.9
    check_deadline: bool = True
    service_time_percentile: float = 0.1
    max_pending_requests: int = 8
    max_pending_requests_hard_limit: int = 32
    edge_headroom: int = 8
    _rules: ClassVar = {
        "initial_limit": (lambda v: v >= 1, ">= 1"),
        "min_limit": (lambda v: v >= 1, ">= 1"),
        "max_limit": (lambda v: v >= 1, ">= 1"),
        "smoothing": (_fraction, "in (0, 1]"),
        "tolerance": (lambda v: 1 <= v <= 10, "in [1, 10]"),
        "long_window": (lambda v: v >= 10, ">= 10"),
        "window": (lambda v: 1 <= v <= 1000, "in [1, 1000]"),
        "critical_share": (_fraction, "in (0, 1]"),
        "sheddable_plus_share": (_fraction, "in (0, 1]"),
        "sheddable_share": (_fraction, "in (0, 1]"),
        "service_time_percentile": (lambda v: 0 < v <= 0.5, "in (0, 0.5]"),
        "max_pending_requests": (lambda v: v >= 1, ">= 1"),
        "max_pending_requests_hard_limit": (lambda v: v >= 1, ">= 1"),
        "edge_headroom": (lambda v: v >= 0, ">= 0"),
    }

    def __post_init__(self) -> None:
        _Checked.__post_init__(self)
        if self.min_limit > self.max_limit:
            raise ConfigError("min_limit", f"must be <= max_limit ({self.max_limit}), got {self.min_limit}")
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ConfigError(
                "initial_limit",
                f"must be in [min_limit, max_limit] ([{self.min_limit}, {self.max_limit}]), got {self.initial_limit}",
            )
        if self.sheddable_plus_share > self.critical_share:
            raise ConfigError(
                "sheddable_plus_share",
                f"must be <= critical_share ({self.critical_share}), got {self.sheddable_plus_share}",
            )
        if self.max_pending_requests > self.max_pending_requests_hard_limit:
            raise ConfigError(
                "max_pending_requests",
                f"must be <= max_pending_requests_hard_limit ({self.max_pending_requests_hard_limit}), "
                f"got {self.max_pending_requests}",
            )
        if self.sheddable_share > self.sheddable_plus_share:
            raise ConfigError(
                "sheddable_share",
                f"must be <= sheddable_plus_share ({self.sheddable_plus_share}), got {self.sheddable_share}",
            )

    def server_options(self) -> tuple[tuple[str, int], ...]:
        """The grpc server options that bound the queue in front of the application (see `max_pending_requests`);
        none when admission is off."""
        if not self.enabled:
            return ()
        return (
            ("grpc.server.max_pending_requests", self.max_pending_requests),
            ("grpc.server.max_pending_requests_hard_limit", self.max_pending_requests_hard_limit),
        )

    def share(self, level: Criticality) -> float:
        """The fraction of the limit requests of `level` may fill."""
        if level is Criticality.CRITICAL_PLUS:
            return 1.0
        if level is Criticality.CRITICAL:
            return self.critical_share
        if level is Criticality.SHEDDABLE_PLUS:
            return self.sheddable_plus_share
        return self.sheddable_share

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], source: str = "<mapping>", key: str = "admission",
        base: AdmissionConfig | None = None,
    ) -> AdmissionConfig:
        """Build from a TOML table (e.g. `[admission]`), its keys over `base` (default: the defaults); a wrong key
        or value raises ConfigError naming `key.<name>` and `source`."""
        return _policy(base or cls(), data, key, source)  # type: ignore[no-any-return]


class GradientLimit:
    """The concurrency limit, moved by finished requests' latency against the long-term average.

    Samples are taken a window at a time (`window` requests, Netflix's WindowedLimit with its average sample
    window): the window's average latency is its sample, and the most requests in flight when one of its requests
    started says whether the limit was in use. One request at a time would bias the limit down wherever latency
    varies: at a small limit only the requests that found many in flight count as "in use", and those are the
    ones that waited behind the others, so the fast ones never speak; and each fast one pulled the baseline down.
    Measured on two saturated cores (docs/overload.md): orders' limit sat at `min_limit` through a 3x spike, and
    50-223 views the gateway had admitted had a part refused by an owner; with windows of 10, 3-55.

    On each window: gradient = tolerance * long-term average / this latency, kept in [0.5, 1]; the new estimate
    is limit * gradient + sqrt(limit) (the headroom to grow into, Envoy's and Netflix's square root), and the
    limit takes `smoothing` of it. While latency stays within `tolerance` of its average, the gradient is 1
    and the limit grows by smoothing * sqrt(limit) a window; when it rises past that, requests are queueing
    and the limit shrinks (by at most half of `smoothing` a window, so one slow window is not a collapse).
    Under lasting overload it settles at 4 (where limit / 2 = sqrt(limit)), or at `min_limit` if that is
    higher. It does not move while fewer than half of it are in use: latency then says nothing about the
    limit. The long-term average follows latency slowly (it is the baseline); when latency falls back to half
    of it after an overload, it is pulled down faster, so the limit can grow back.
    """

    WARMUP: ClassVar[int] = 10
    """Windows averaged plainly before the long-term average becomes exponential (a first slow window would
    otherwise weigh for hundreds)."""

    __slots__ = ("_alpha", "_busiest", "_count", "_long", "_max", "_min", "_samples", "_smoothing", "_sum",
                 "_tolerance", "_window", "limit")

    def __init__(self, config: AdmissionConfig) -> None:
        self.limit = float(config.initial_limit)
        self._min = float(config.min_limit)
        self._max = float(config.max_limit)
        self._smoothing = config.smoothing
        self._tolerance = config.tolerance
        self._alpha = 2.0 / (config.long_window + 1)
        self._long = 0.0
        self._samples = 0
        self._window = config.window
        self._sum = 0.0
        self._count = 0
        self._busiest = 0

    @property
    def baseline(self) -> float:
        """The long-term average latency in seconds (0 before the first sample)."""
        return self._long

    def update(self, latency: float, in_flight: int) -> float:
        """Take one finished request's `latency` (seconds) and the number in flight when it started; the limit,
        moved if this request closed a window."""
        self._sum += latency
        self._count += 1
        if in_flight > self._busiest:
            self._busiest = in_flight
        if self._count < self._window:
            return self.limit
        latency, in_flight = self._sum / self._count, self._busiest
        self._sum, self._count, self._busiest = 0.0, 0, 0
        return self._take(latency, in_flight)

    def _take(self, latency: float, in_flight: int) -> float:
        """One window's average `latency` and the most in flight during it; the new limit."""
        latency = max(latency, 1e-6)
        if self._samples < self.WARMUP:
            self._samples += 1
            long = self._long + (latency - self._long) / self._samples
        else:
            long = self._long + self._alpha * (latency - self._long)
        if long > 2.0 * latency:  # back to normal after an overload: let the baseline come down quickly
            long *= 0.9
        self._long = long
        limit = self.limit
        if in_flight < limit / 2:
            return limit  # app-limited: the latency of a lightly used server says nothing about its limit
        gradient = self._tolerance * long / latency
        gradient = 0.5 if gradient < 0.5 else 1.0 if gradient > 1.0 else gradient
        estimate = limit * gradient + math.sqrt(limit)
        limit += self._smoothing * (estimate - limit)
        self.limit = self._min if limit < self._min else self._max if limit > self._max else limit
        return self.limit


class Admission:
    """Requests in flight against the adaptive limit; each criticality may fill only its share of it.

    CRITICAL_PLUS may fill the whole limit and SHEDDABLE only `sheddable_share` of it (half by default), so
    as the server fills up, sheddable requests are refused first while critical ones still get in. Every
    level keeps at least one place, so no level starves completely (and each keeps giving latency samples).
    """

    __slots__ = ("_admit", "_gradient", "_room", "_shares", "in_flight", "lenience", "slack")

    def __init__(self, config: AdmissionConfig, slack: int = 0, lenience: int = 0) -> None:
        """`slack`: places added to every level's room; `lenience`: places beyond its room a level may still fill
        here. Behind an edge both are `AdmissionConfig.edge_headroom`: the edge refuses at the rooms, and this
        server refuses only what the edge let in before it heard that the limit fell by more than that."""
        self._gradient = GradientLimit(config)
        self._shares = tuple(config.share(level) for level in Criticality)
        self.in_flight = 0
        self.slack = slack
        self.lenience = lenience
        self._room: list[int] = []
        self._admit: list[int] = []
        self._fit()

    def _fit(self) -> None:
        limit = int(self._gradient.limit)
        self._room = [max(1, int(limit * share)) + self.slack for share in self._shares]
        self._admit = [room + self.lenience for room in self._room]

    @property
    def limit(self) -> int:
        """How many requests may be in flight now (CRITICAL_PLUS's room)."""
        return int(self._gradient.limit)

    @property
    def baseline(self) -> float:
        """The long-term average latency the limit is measured against, in seconds."""
        return self._gradient.baseline

    def room(self, level: Criticality) -> int:
        """How many requests may be in flight when one of `level` is admitted."""
        return self._room[level]

    def try_acquire(self, level: Criticality) -> bool:
        """Take a place for a request of `level`; False (and nothing taken) when its share is full."""
        if self.in_flight < self._admit[level]:
            self.in_flight += 1
            return True
        return False

    def release(self, latency: float, in_flight: int) -> None:
        """Give the place back: the request took `latency` seconds and found `in_flight` (itself included)."""
        self.in_flight -= 1
        before = int(self._gradient.limit)
        if int(self._gradient.update(latency, in_flight)) != before:
            self._fit()


class ServiceTime:
    """A low percentile of one method's recent latency: the least time a request can expect to take here.

    A request with less time left than that would almost surely miss its deadline, so it is refused before it
    starts rather than started and abandoned. The percentile (10th by default) is tracked in O(1) per sample
    without keeping samples: the estimate moves up by a small step for each sample above it and down by a
    larger one for each below, in the ratio that balances at the percentile, in log space so that the steps
    are the same in relative terms for a 1 ms and a 1 s method. It comes down fast (about 9% a sample) and
    goes up slowly (about 1%): wrong on the high side it refuses requests that would have made it, on the
    low side it only lets a few doomed ones in.

    It says nothing before `MIN_SAMPLES` samples, and while no request is admitted (none finishes, so nothing
    would ever correct it) it halves every `HALF_LIFE` seconds: a method that was slow for a while does not
    refuse short deadlines forever.
    """

    MIN_SAMPLES: ClassVar[int] = 10
    HALF_LIFE: ClassVar[float] = 1.0
    RATE: ClassVar[float] = 0.1
    FLOOR: ClassVar[float] = 1e-6

    __slots__ = ("_down", "_gate", "_last", "_up", "estimate", "samples")

    def __init__(self, percentile: float = 0.1) -> None:
        self._up = math.exp(self.RATE * percentile)
        self._down = math.exp(-self.RATE * (1.0 - percentile))
        self.estimate = 0.0
        self.samples = 0
        self._last = -math.inf
        self._gate = 0.0
        """What a request needs left to be admitted without a second look: 0 until MIN_SAMPLES."""

    def record(self, latency: float, now: float) -> None:
        """Take one finished request's latency in seconds, at time `now`."""
        if self.samples == 0:
            self.estimate = max(latency, self.FLOOR)
        elif latency < self.estimate:
            self.estimate = max(self.estimate * self._down, self.FLOOR)
        else:
            self.estimate *= self._up
        self.samples += 1
        self._last = now
        if self.samples >= self.MIN_SAMPLES:
            self._gate = self.estimate

    def least(self, now: float) -> float:
        """The least time a request can expect to take at `now`, in seconds (0 when not known)."""
        if self.samples < self.MIN_SAMPLES:
            return 0.0
        return self.estimate * math.pow(0.5, max(0.0, now - self._last) / self.HALF_LIFE)

    def too_late(self, remaining: float, now: float) -> bool:
        """Whether a request with `remaining` seconds left cannot be answered in time."""
        if remaining >= self._gate:
            return remaining <= 0.0
        return remaining < self.least(now)
