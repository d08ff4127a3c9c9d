"""Telemetry for every pullgate process: traces over OTLP, metrics for Prometheus, logs with trace ids.

    telemetry = Telemetry.setup("gateway", host="127.0.0.1")   # reads OTEL_* and PULLGATE_* variables
    server = grpc.aio.server(interceptors=[*telemetry.server_interceptors(), ...])
    ...
    telemetry.shutdown()                                         # flushes batched spans

The SDK lives here only; the resilience layer, the gateway and the services use the OpenTelemetry API (and
the helpers in pullgate.telemetry.views). See docs/observability.md.
"""

from __future__ import annotations

from typing import Any

from pullgate.telemetry import logs, metrics, tracing
from pullgate.telemetry.views import annotate_view, placement_step, recovering

__all__ = ["Telemetry", "annotate_view", "client_interceptors", "placement_step", "recovering"]


def client_interceptors() -> list[Any]:
    """The client interceptors of this process's tracing (none while it is off): the resilience layer's
    transports run them around every attempt (`Downstream(..., interceptors=...)`)."""
    return [] if tracing.installed is None else [tracing.installed.client]


class Telemetry:
    """What one process installed: tracing (when OTEL_* ask for it) and a metrics endpoint (when a port is set)."""

    def __init__(self, tracing_: tracing.Tracing | None, metrics_: metrics.Metrics | None) -> None:
        self.tracing = tracing_
        self.metrics = metrics_

    @classmethod
    def setup(cls, service: str, host: str = "127.0.0.1", metrics_port: int | None = None) -> Telemetry:
        """Configure logs, then tracing and metrics from the environment; `metrics_port` overrides
        PULLGATE_METRICS_PORT. ValueError names a bad variable."""
        logs.configure(service)
        port = metrics.requested_port() if metrics_port is None else metrics_port
        traced = tracing.Tracing(service) if tracing.requested() else None
        measured = None
        if port is not None:
            resource = traced.provider.resource if traced is not None else tracing.resource(service)
            measured = metrics.Metrics(resource, host, port)
        return cls(traced, measured)

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics is None else self.metrics.port

    def server_interceptors(self) -> list[Any]:
        """Interceptors that make server spans; none when tracing is off."""
        return [] if self.tracing is None else self.tracing.server_interceptors()

    def shutdown(self) -> None:
        if self.tracing is not None:
            self.tracing.shutdown()
        if self.metrics is not None:
            self.metrics.shutdown()
