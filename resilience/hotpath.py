"""Metrics on every call's hot path, recorded in about a microsecond and read only when scraped.

Histograms recorded on every call: `rpc.client.duration` per attempt (resilience.transport),
`rpc.server.duration` per call answered (pullgate.telemetry.rpc_metrics) and the layer's own
`resilience.call.duration` per logical call (resilience.traced). Counters: the cache's lookups per cacheable
call (resilience.cache) and the gateway's parts per view (pullgate.telemetry.views). A view makes about
twenty such records on the gateway alone.

Why not the OpenTelemetry SDK's instruments, as the layer's rarer metrics are: one histogram `record()` or
counter `add()` with three or four attributes costs about 8-10 µs here (measured over 100,000 of each with the
SDK's provider installed, against 0.7 µs for these; the SDK builds a frozenset of the attributes, takes a lock
and finds the series each time): some 150 µs of a view's 1.5 ms on the gateway.
Why not grpcio-observability (gRPC's own plugin, gRFC A66) for the two RPC ones: on grpc.aio it reports every
method as "other" (grpc/grpc#39061, #41573). So a histogram here is plain counters per key, found by a dict
lookup and a bisect, handed over only when a collector asks: pullgate.telemetry.metrics puts every one on the
process's Prometheus endpoint, with the names and labels the SDK's Prometheus exporter would give it, e.g.
`rpc_client_duration_milliseconds_bucket{rpc_method="GetOrder",...}` and
`resilience_call_duration_seconds_count{downstream="catalog",...}`. They go to Prometheus only, not to an OTLP
metrics exporter (pullgate has none).

Records happen on the event loop's thread; the collector runs on the scrape's thread and copies each series,
so a scrape may see a sum one record ahead of its buckets, which no rate over a scrape interval notices.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import ClassVar

RPC_BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Upper bounds in milliseconds (the OpenTelemetry RPC conventions' unit): a cache hit to a whole deadline."""

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
"""The same bounds in seconds, for the layer's own histogram."""


class _Series:
    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)
        """Records per bucket (not cumulative); the last is above every bound."""
        self.total = 0.0
        """Sum of the recorded values, in the histogram's unit."""


@dataclass(frozen=True)
class Series:
    """One key's histogram as collected: its label values, cumulative counts per upper bound then +Inf, sum."""

    labels: tuple[str, ...]
    cumulative: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        return self.cumulative[-1]


class Histogram:
    """A histogram kept by hand (`name` as Prometheus shows it, e.g. "rpc_client_duration_milliseconds").

    `record(key, seconds)` is the hot path; `labels(key)` turns a key into `label_names`' values, only when
    collected. `scale` converts the seconds recorded into the histogram's unit (1000 for milliseconds).
    """

    instances: ClassVar[list[Histogram]] = []
    """Every histogram made, for the collector."""

    def __init__(self, name: str, description: str, label_names: tuple[str, ...], bounds: tuple[float, ...],
                 scale: float = 1.0) -> None:
        self.name = name
        self.description = description
        self.label_names = label_names
        self.bounds = bounds
        self.scale = scale
        self._series: dict[Hashable, _Series] = {}
        Histogram.instances.append(self)

    def record(self, key: Hashable, seconds: float) -> None:
        """One value, `seconds` long, for `key`."""
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(len(self.bounds))
        value = seconds * self.scale
        series.counts[bisect_left(self.bounds, value)] += 1
        series.total += value

    def labels(self, key: Hashable) -> tuple[str, ...]:
        """The label values of `key`, in `label_names`' order (a key that is already them, by default)."""
        assert isinstance(key, tuple)
        return tuple(str(part) for part in key)

    def collect(self) -> Iterator[Series]:
        """A copy of every series recorded so far."""
        for key, series in list(self._series.items()):
            counts, total = list(series.counts), series.total
            cumulative, running = [], 0
            for n in counts:
                running += n
                cumulative.append(running)
            yield Series(self.labels(key), tuple(cumulative), total)

    def clear(self) -> None:
        """Forget every series (a test that starts over)."""
        self._series.clear()

    def forget(self) -> None:
        """Stop being collected (a histogram made for a test)."""
        Histogram.instances.remove(self)


class Counter:
    """A counter kept by hand (`name` as Prometheus shows it, without `_total`): `add(key)` is the hot path, with
    `key` the label values in `label_names`' order."""

    instances: ClassVar[list[Counter]] = []
    """Every counter made, for the collector."""

    def __init__(self, name: str, description: str, label_names: tuple[str, ...]) -> None:
        self.name = name
        self.description = description
        self.label_names = label_names
        self._counts: dict[tuple[str, ...], int] = {}
        Counter.instances.append(self)

    def add(self, key: tuple[str, ...], n: int = 1) -> None:
        counts = self._counts
        counts[key] = counts.get(key, 0) + n

    def collect(self) -> list[tuple[tuple[str, ...], int]]:
        """A copy of every (label values, count)."""
        return list(self._counts.items())

    def forget(self) -> None:
        """Stop being collected (a counter made for a test)."""
        Counter.instances.remove(self)


class RpcDurations(Histogram):
    """A standard per-method gRPC duration (`rpc.client.duration`, `rpc.server.duration`) in ms, keyed by
    (method path, status code number): `record((path, code), seconds)`."""

    LABELS = ("rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code")

    def __init__(self, name: str, description: str) -> None:
        """`name` as OpenTelemetry names it ("rpc.client.duration"); in Prometheus `<name>_milliseconds`."""
        super().__init__(name.replace(".", "_") + "_milliseconds", description, self.LABELS, RPC_BUCKETS_MS, 1000.0)

    def labels(self, key: Hashable) -> tuple[str, ...]:
        assert isinstance(key, tuple)
        path, code = key
        service, _, method = str(path).lstrip("/").partition("/")
        return ("grpc", service, method, str(code))


RPC_CLIENT_DURATION = RpcDurations(
    "rpc.client.duration",
    "Outbound gRPC calls on the wire, one per attempt (OpenTelemetry RPC semantic conventions), in ms",
)

CALL_DURATION = Histogram(
    "resilience_call_duration_seconds",
    "Logical calls through the layer (all attempts, cache included), by downstream, method and outcome",
    ("downstream", "method", "outcome"), LATENCY_BUCKETS,
)
"""Keyed by (downstream, method name, outcome value)."""

CACHE_REQUESTS = Counter(
    "resilience_cache_requests",
    "Cache lookups of cacheable calls by result: hit, miss, coalesced (joined a call in flight), stale",
    ("downstream", "method", "result"),
)
