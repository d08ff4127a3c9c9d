"""Metrics for Prometheus: the OpenTelemetry SDK's meter provider, read by a Prometheus endpoint on its own port.

The metrics recorded on every call (`rpc.server.duration`, `rpc.client.duration`, `resilience.call.duration`,
the cache's lookups, the gateway's parts) are kept by hand for their cost (resilience/hotpath.py);
`HotPathCollector` hands them to the same endpoint when it is scraped, named and labelled as the SDK's
Prometheus exporter would name them.

`PULLGATE_METRICS_PORT` chooses the port (0 = any free one; unset = no endpoint); the launcher sets it for
each process it starts and reads the bound port back from `<run dir>/<name>.metrics-port`. The resilience
layer's instruments (resilience.instruments) and the gateway's (pullgate.telemetry.views) come alive once the
provider is installed; their histograms advise bucket boundaries in seconds, which the SDK honours.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from resilience import Counter, Histogram

PORT_VARIABLE = "PULLGATE_METRICS_PORT"


def requested_port(env: Mapping[str, str] = os.environ) -> int | None:
    """The port asked for in PULLGATE_METRICS_PORT, or None for no endpoint; ValueError names a bad value."""
    text = env.get(PORT_VARIABLE, "").strip()
    if not text or text.lower() == "off":
        return None
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{PORT_VARIABLE}={text!r}: expected a port number (0 = any free port) or 'off'")
    return int(text)


def port_file(grpc_port_file: Path) -> Path:
    """Where a server records its metrics port, next to the file with its gRPC port."""
    return grpc_port_file.with_suffix(".metrics-port")


class HotPathCollector:
    """A prometheus_client collector of every hand-kept histogram and counter (resilience.Histogram, Counter)."""

    def collect(self) -> Iterator[Metric]:
        for counter in Counter.instances:
            counted = CounterMetricFamily(counter.name, counter.description, labels=counter.label_names)
            for key, value in counter.collect():
                counted.add_metric(list(key), value)
            yield counted
        for histogram in Histogram.instances:
            family = HistogramMetricFamily(histogram.name, histogram.description, labels=histogram.label_names)
            bounds = [*(repr(float(bound)) for bound in histogram.bounds), "+Inf"]
            for series in histogram.collect():
                family.add_metric(list(series.labels), list(zip(bounds, series.cumulative, strict=True)),
                                  series.total)
            yield family


class Metrics:
    """An installed meter provider and its Prometheus endpoint; `port` is the one bound."""

    def __init__(self, resource: Resource, host: str, port: int) -> None:
        self._reader = PrometheusMetricReader()
        self.provider = MeterProvider(resource=resource, metric_readers=[self._reader])
        metrics.set_meter_provider(self.provider)
        self._hot = HotPathCollector()
        REGISTRY.register(self._hot)
        self._server: WSGIServer
        self._server, _ = start_http_server(port, addr=host)
        self.port: int = self._server.server_port

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        REGISTRY.unregister(self._hot)
        self.provider.shutdown()
