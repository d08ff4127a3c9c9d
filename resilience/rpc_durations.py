"""Per-method gRPC call durations by status code, recorded in about a microsecond and read when scraped.

`rpc.client.duration` and `rpc.server.duration` are the OpenTelemetry RPC semantic conventions' standard
metrics: a histogram per method (`rpc.system`, `rpc.service`, `rpc.method`) and status code
(`rpc.grpc.status_code`), in milliseconds. Every call records one, so the record is on every hot path: the
client's per attempt (resilience.transport), the server's per call (pullgate.telemetry.rpc_metrics).

Why not the OpenTelemetry SDK's histogram, as the layer's other metrics are: one `record()` with four
attributes costs about 10 µs here (measured over 10,000 records with the SDK's provider installed; the SDK
builds a frozenset of the attributes, takes a lock and finds the bucket each time), and a view makes five or six
of them, a few per cent of the gateway's CPU per view. Why not grpcio-observability (gRPC's own plugin, gRFC A66):
on grpc.aio it reports every method as "other" (grpc/grpc#39061, #41573). So this keeps plain counters per
(method, status code), found by a dict lookup and a bisect, and hands them over only when a collector asks
(pullgate.telemetry.metrics exposes them on the Prometheus endpoint, with the names and labels the SDK's
Prometheus exporter would give them: `rpc_client_duration_milliseconds_bucket{rpc_method=...}`).

Records happen on the event loop's thread; the collector runs on the scrape's thread and copies each series,
so a scrape may see a sum one record ahead of its buckets, which no rate over a scrape interval notices.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Upper bounds in milliseconds (the layer's LATENCY_BUCKETS): from a cache hit to a call that used a deadline."""


class _Series:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_MS) + 1)
        """Records per bucket (not cumulative); the last is above every bound."""
        self.total = 0.0
        """Sum of the recorded milliseconds."""


@dataclass(frozen=True)
class Series:
    """One (method, status code)'s histogram as collected: cumulative counts per upper bound, then +Inf."""

    service: str
    method: str
    code: int
    cumulative: tuple[int, ...]
    total_ms: float

    @property
    def count(self) -> int:
        return self.cumulative[-1]


class RpcDurations:
    """One standard duration histogram (`name`, e.g. "rpc.client.duration"); `record()` is the hot path."""

    bounds: ClassVar[tuple[float, ...]] = BUCKETS_MS
    """The buckets' upper bounds in milliseconds (the last bucket is above all of them)."""
    instances: ClassVar[list[RpcDurations]] = []
    """Every histogram made, for the collector."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description
        self._series: dict[tuple[str, int], _Series] = {}
        RpcDurations.instances.append(self)

    def record(self, path: str, code: int, seconds: float) -> None:
        """A call to `path` ("/package.Service/Method") ended with status `code` (its number) after `seconds`."""
        series = self._series.get((path, code))
        if series is None:
            series = self._series[(path, code)] = _Series()
        ms = seconds * 1000.0
        series.counts[bisect_left(BUCKETS_MS, ms)] += 1
        series.total += ms

    def collect(self) -> Iterator[Series]:
        """A copy of every series recorded so far."""
        for (path, code), series in list(self._series.items()):
            counts, total = list(series.counts), series.total
            cumulative, running = [], 0
            for n in counts:
                running += n
                cumulative.append(running)
            service, _, method = path.lstrip("/").partition("/")
            yield Series(service, method, code, tuple(cumulative), total)

    def clear(self) -> None:
        """Forget every series (a test that starts over)."""
        self._series.clear()


RPC_CLIENT_DURATION = RpcDurations(
    "rpc.client.duration",
    "Outbound gRPC calls on the wire, one per attempt (OpenTelemetry RPC semantic conventions), in ms",
)
