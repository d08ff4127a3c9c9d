"""Typed, frozen, validated configuration, in gRPC's own words (gRFC A6). Durations are in seconds.

A duration key (a field typed `Seconds`) takes a number of seconds or a duration string like "20ms"
(the one grammar, in resilience/durations.py); every other number key takes only a number.

With no file, every downstream gets the defaults below. A TOML file overrides them per downstream::

    [resilience.default.retry]          # every downstream
    max_attempts = 2

    [resilience.catalog.hedging]        # only catalog; keys not given come from [resilience.default.*]
    hedging_delay = "20ms"              # or 0.02

    [resilience.inventory.cache]
    enabled = false                     # every policy can be switched off

    [resilience.catalog.discovery]      # a downstream named by DNS: how often it is resolved again
    refresh_interval = "5s"

A wrong key or value raises ConfigError naming the key path and the file, before anything starts.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from resilience.durations import DurationError, Seconds, parse_seconds


class ConfigError(ValueError):
    """A configuration key has a wrong name or value. `key` is its dotted path, `source` the file."""

    def __init__(self, key: str, problem: str, source: str = "<defaults>") -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.key = key
        self.problem = problem
        self.source = source


def read_toml(path: str | Path, key: str = "(file)") -> dict[str, Any]:
    """The parsed TOML file at `path`; ConfigError under `key` naming the file when it cannot be read or parsed."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(key, f"not valid TOML: {error}", str(path)) from None
    except OSError as error:
        raise ConfigError(key, f"cannot read: {error.strerror}", str(path)) from None


class _Checked:
    """Validation shared by the policy configs: each field's rule is `_rules[name] = (predicate, text)`."""

    _rules: ClassVar[dict[str, tuple[typing.Callable[[Any], bool], str]]] = {}

    def __post_init__(self) -> None:
        for name, (ok, text) in self._rules.items():
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise ConfigError(name, f"must be {text}, got {value!r}")


def _positive(v: float) -> bool:
    return v > 0 and math.isfinite(v)


def _non_negative(v: float) -> bool:
    return v >= 0 and math.isfinite(v)


def _fraction(v: float) -> bool:
    return 0 <= v <= 1


@dataclass(frozen=True, slots=True)
class TimeoutConfig(_Checked):
    """`total` bounds a whole call (all attempts) when the caller's deadline is later or absent; `per_attempt`
    bounds each attempt (0 = only the total). Both are clipped by the caller's deadline."""

    enabled: bool = True
    total: Seconds = 5.0
    per_attempt: Seconds = 1.0
    _rules: ClassVar = {"total": (_positive, "> 0"), "per_attempt": (_non_negative, ">= 0")}


@dataclass(frozen=True, slots=True)
class RetryConfig(_Checked):
    """Retries for idempotent methods: exponential backoff with full jitter, drawn from the budget."""

    enabled: bool = True
    max_attempts: int = 3
    initial_backoff: Seconds = 0.02
    max_backoff: Seconds = 0.5
    backoff_multiplier: float = 2.0
    _rules: ClassVar = {
        "max_attempts": (lambda v: 1 <= v <= 10, "1..10"),
        "initial_backoff": (_non_negative, ">= 0"),
        "max_backoff": (_non_negative, ">= 0"),
        "backoff_multiplier": (lambda v: 1 <= v <= 100, "1..100"),
    }


@dataclass(frozen=True, slots=True)
class HedgingConfig(_Checked):
    """Hedged requests for reads: another attempt after `hedging_delay` or the method's recent `percentile`
    latency, whichever is larger, and another after as long again, up to `max_attempts` in all, each to a replica
    not tried yet; at most `max_extra_load` extra requests (a fraction of requests). A hedge sent at the first
    delay leaves `reserve` of that allowance unspent, for calls that are already slower than twice the delay."""

    enabled: bool = True
    max_attempts: int = 3
    hedging_delay: Seconds = 0.01
    percentile: float = 0.95
    max_extra_load: float = 0.05
    reserve: float = 0.5
    _rules: ClassVar = {
        "max_attempts": (lambda v: 1 <= v <= 5, "1..5"),
        "hedging_delay": (_non_negative, ">= 0"),
        "percentile": (lambda v: 0.5 <= v < 1, "in [0.5, 1)"),
        "max_extra_load": (_fraction, "in [0, 1]"),
        "reserve": (lambda v: 0 <= v < 1, "in [0, 1)"),
    }


@dataclass(frozen=True, slots=True)
class BudgetConfig(_Checked):
    """The retry budget shared by retries and hedges: `token_ratio` extra requests per request over the last
    `ttl` seconds, plus `min_per_second` always allowed (so a quiet client can still retry)."""

    enabled: bool = True
    token_ratio: float = 0.2
    min_per_second: float = 10.0
    ttl: Seconds = 10.0
    _rules: ClassVar = {
        "token_ratio": (lambda v: 0 <= v <= 10, "in [0, 10]"),
        "min_per_second": (_non_negative, ">= 0"),
        "ttl": (lambda v: 1 <= v <= 600, "in [1, 600]"),
    }


@dataclass(frozen=True, slots=True)
class BreakerConfig(_Checked):
    """A circuit breaker per replica: open after `fail_max` consecutive failures, probe after `reset_timeout`."""

    enabled: bool = True
    fail_max: int = 5
    reset_timeout: Seconds = 5.0
    _rules: ClassVar = {"fail_max": (lambda v: v >= 1, ">= 1"), "reset_timeout": (_positive, "> 0")}


@dataclass(frozen=True, slots=True)
class ThrottleConfig(_Checked):
    """Adaptive throttling (Google SRE book, "Handling Overload"): while the owner refuses calls as overloaded,
    reject attempts here with probability `(requests - ratio_for_accepts * accepts) / (requests + requests_padding)`
    over the last `window` seconds. `ratio_for_accepts` is the book's K; `requests_padding` is 1 in the book and
    8 in gRPC's own throttler (a quiet client is not throttled hard on one refusal)."""

    enabled: bool = True
    ratio_for_accepts: float = 2.0
    requests_padding: float = 8.0
    window: Seconds = 10.0
    _rules: ClassVar = {
        "ratio_for_accepts": (lambda v: 1 <= v <= 100, "in [1, 100] (below 1 it throttles an owner that accepts all)"),
        "requests_padding": (lambda v: 1 <= v <= 1000, "in [1, 1000] (below 1 a throttle could never reopen)"),
        "window": (lambda v: 1 <= v <= 600, "in [1, 600]"),
    }


@dataclass(frozen=True, slots=True)
class BalanceConfig(_Checked):
    """Power of two choices over each replica's peak-EWMA latency; `decay` is the EWMA's time constant: how long a
    peak takes to fade to a third, and so how soon an avoided replica (a recovered one) is tried again."""

    decay: Seconds = 10.0
    _rules: ClassVar = {"decay": (_positive, "> 0")}


@dataclass(frozen=True, slots=True)
class OutlierDetectionConfig(_Checked):
    """Ejects a replica that keeps failing quietly (`consecutive_failures` hedge races lost or timeouts in a row,
    spanning at least `min_silence` with no answer) for `base_ejection_time` times the number of its ejections,
    at most `max_ejection_time`; never more than `max_ejection_percent` of the replicas at once (gRFC A50 and
    Envoy names)."""

    enabled: bool = True
    consecutive_failures: int = 5
    min_silence: Seconds = 0.2
    """The run of failures must also span this long with no answer, from the send of its first failed attempt:
    a moment's stall (a process starved of CPU on a busy machine) loses several concurrent races at once but is
    not a hung replica. Five timeouts span at least the attempt timeout by themselves."""
    base_ejection_time: Seconds = 30.0
    max_ejection_time: Seconds = 300.0
    max_ejection_percent: int = 50
    _rules: ClassVar = {
        "consecutive_failures": (lambda v: v >= 1, ">= 1"),
        "min_silence": (lambda v: v >= 0, ">= 0"),
        "base_ejection_time": (_positive, "> 0"),
        "max_ejection_time": (_positive, "> 0"),
        "max_ejection_percent": (lambda v: 0 <= v <= 100, "in [0, 100]"),
    }

    def __post_init__(self) -> None:
        _Checked.__post_init__(self)
        if self.max_ejection_time < self.base_ejection_time:
            raise ConfigError(
                "max_ejection_time", f"must be >= base_ejection_time ({self.base_ejection_time}), "
                f"got {self.max_ejection_time}"
            )


@dataclass(frozen=True, slots=True)
class CacheConfig(_Checked):
    """A per-method cache of read answers (`ttl` seconds, at most `max_entries`), and a stale store keeping the
    last good answer up to `max_stale` seconds for stale-if-error. `max_staleness` is what a caller accepts
    when it does not say (the default bound); no caller can get anything older than `max_stale`."""

    enabled: bool = True
    ttl: Seconds = 1.0
    max_entries: int = 10_000
    max_staleness: Seconds = 30.0
    max_stale: Seconds = 300.0
    max_stale_entries: int = 10_000
    _rules: ClassVar = {
        "ttl": (_positive, "> 0"),
        "max_entries": (lambda v: v >= 1, ">= 1"),
        "max_staleness": (_non_negative, ">= 0"),
        "max_stale": (_non_negative, ">= 0"),
        "max_stale_entries": (lambda v: v >= 1, ">= 1"),
    }

    def __post_init__(self) -> None:
        _Checked.__post_init__(self)
        if self.max_staleness > self.max_stale:
            raise ConfigError("max_staleness", f"must be <= max_stale ({self.max_stale}), got {self.max_staleness}")


@dataclass(frozen=True, slots=True)
class BulkheadConfig(_Checked):
    """At most `max_concurrent` calls in flight to one downstream; a call waits at most `max_wait` for a slot."""

    enabled: bool = True
    max_concurrent: int = 100
    max_wait: Seconds = 0.05
    _rules: ClassVar = {"max_concurrent": (lambda v: v >= 1, ">= 1"), "max_wait": (_non_negative, ">= 0")}


@dataclass(frozen=True, slots=True)
class DiscoveryConfig(_Checked):
    """For a downstream named by DNS (`dns:///catalog.pullgate.svc:50052`, resilience.discovery): the name is
    resolved again every `refresh_interval`, and sooner when a replica could not be reached, though never twice
    within `min_time_between_resolutions` (gRPC's `dns_min_time_between_resolutions`); a DNS query gives up after
    `query_timeout`. Ignored for a downstream given as a list of addresses."""

    refresh_interval: Seconds = 5.0
    min_time_between_resolutions: Seconds = 1.0
    query_timeout: Seconds = 2.0
    _rules: ClassVar = {
        "refresh_interval": (_positive, "> 0"),
        "min_time_between_resolutions": (_non_negative, ">= 0"),
        "query_timeout": (_positive, "> 0"),
    }


@dataclass(frozen=True, slots=True)
class DownstreamConfig:
    """Everything the layer needs for one downstream. `DownstreamConfig()` is the default for all."""

    timeout: TimeoutConfig = field(default_factory=TimeoutConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    hedging: HedgingConfig = field(default_factory=HedgingConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    bulkhead: BulkheadConfig = field(default_factory=BulkheadConfig)
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    outlier_detection: OutlierDetectionConfig = field(default_factory=OutlierDetectionConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)


POLICIES: dict[str, type[Any]] = typing.get_type_hints(DownstreamConfig)
"""The policy tables a downstream may have, by name."""


@dataclass(frozen=True, slots=True)
class ResilienceConfig:
    """The `[resilience]` table: a default for every downstream and overrides by downstream name."""

    default: DownstreamConfig = field(default_factory=DownstreamConfig)
    downstreams: Mapping[str, DownstreamConfig] = field(default_factory=dict)
    source: str = "<defaults>"

    def for_downstream(self, name: str) -> DownstreamConfig:
        """The config of downstream `name`: its overrides on top of `[resilience.default]`."""
        return self.downstreams.get(name, self.default)

    @classmethod
    def load(cls, path: str | Path, known_downstreams: Collection[str] | None = None) -> ResilienceConfig:
        """Read the `[resilience]` table of a TOML file (other tables are left to their owners)."""
        table = read_toml(path, "resilience").get("resilience", {})
        return cls.from_mapping(table, source=str(path), known_downstreams=known_downstreams)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], source: str = "<mapping>", known_downstreams: Collection[str] | None = None
    ) -> ResilienceConfig:
        """Build from the contents of a `[resilience]` table. With `known_downstreams`, any other name than
        those and `default` is an error (a typo would otherwise configure nothing)."""
        if not isinstance(data, Mapping):
            raise ConfigError("resilience", "must be a table", source)
        default = _downstream(DownstreamConfig(), data.get("default", {}), "resilience.default", source)
        overrides = {}
        for name, table in data.items():
            if name == "default":
                continue
            if known_downstreams is not None and name not in known_downstreams:
                known = ", ".join(["default", *sorted(known_downstreams)])
                raise ConfigError(f"resilience.{name}", f"unknown downstream; expected one of {known}", source)
            overrides[name] = _downstream(default, table, f"resilience.{name}", source)
        return cls(default=default, downstreams=types.MappingProxyType(overrides), source=source)


def _downstream(base: DownstreamConfig, table: Any, path: str, source: str) -> DownstreamConfig:
    if not isinstance(table, Mapping):
        raise ConfigError(path, "must be a table", source)
    changes = {}
    for policy, values in table.items():
        kind = POLICIES.get(policy)
        if kind is None:
            raise ConfigError(f"{path}.{policy}", f"unknown policy; expected one of {', '.join(POLICIES)}", source)
        changes[policy] = _policy(getattr(base, policy), values, f"{path}.{policy}", source)
    return dataclasses.replace(base, **changes)


def _policy(base: Any, table: Any, path: str, source: str) -> Any:
    if not isinstance(table, Mapping):
        raise ConfigError(path, "must be a table", source)
    hints = typing.get_type_hints(type(base), include_extras=True)
    names = [f.name for f in dataclasses.fields(base)]
    values = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"{path}.{key}", f"unknown key; expected one of {', '.join(names)}", source)
        values[key] = _value(hints[key], value, f"{path}.{key}", source)
    try:
        return dataclasses.replace(base, **values)
    except ConfigError as error:
        raise ConfigError(f"{path}.{error.key}", error.problem, source) from None


def _value(want: Any, value: Any, key: str, source: str) -> Any:
    """One key's value as its field's type: a `Seconds` field takes a number of seconds or a duration string."""
    if want == Seconds:
        try:
            return parse_seconds(value)
        except DurationError as error:
            raise ConfigError(key, str(error), source) from None
    if want is bool:
        ok = isinstance(value, bool)
    elif want is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(key, f"must be {want.__name__}, got {value!r}", source)
    return value
