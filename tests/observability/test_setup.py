"""The pieces of pullgate.telemetry that need no running system: switches, ports, log lines, reason labels."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.telemetry import logs, metrics, tracing
from pullgate.telemetry.views import cause_label
from pullgate.tools import launcher


def test_tracing_is_on_only_with_an_endpoint() -> None:
    """No OTLP endpoint, the SDK disabled or the exporter set to none: nothing is installed."""
    assert not tracing.requested({})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317"})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://localhost:4317"})
    assert not tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_SDK_DISABLED": "true"})
    assert not tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_TRACES_EXPORTER": "none"})


def test_the_service_name_defaults_to_pullgate_service() -> None:
    """Without OTEL_SERVICE_NAME the resource is named pullgate-<service>; with it, the variable wins."""
    assert tracing.resource("orders", {}).attributes["service.name"] == "pullgate-orders"
    assert tracing.resource("orders", {"OTEL_SERVICE_NAME": "x"}).attributes["service.name"] != "pullgate-orders"


def test_metrics_port_variable() -> None:
    """PULLGATE_METRICS_PORT: unset or off = no endpoint, a number = that port, anything else is an error."""
    assert metrics.requested_port({}) is None
    assert metrics.requested_port({"PULLGATE_METRICS_PORT": "off"}) is None
    assert metrics.requested_port({"PULLGATE_METRICS_PORT": "0"}) == 0
    with pytest.raises(ValueError, match="PULLGATE_METRICS_PORT"):
        metrics.requested_port({"PULLGATE_METRICS_PORT": "ninety"})
    assert metrics.port_file(Path("run/gateway.port")) == Path("run/gateway.metrics-port")


def test_launcher_metrics_ports_default_override_and_off() -> None:
    """Fixed gRPC ports get the default metrics ports, --any-ports gets free ones; the variable overrides."""
    fixed = launcher.UpSettings()
    assert launcher.metrics_ports(fixed, {}) == {s.name: s.metrics_port for s in topology.SERVICES}
    anywhere = launcher.UpSettings(ports=dict.fromkeys(topology.names(), 0))
    assert set(launcher.metrics_ports(anywhere, {}).values()) == {0}  # type: ignore[union-attr]
    chosen = launcher.metrics_ports(fixed, {"PULLGATE_METRICS_PORTS": "gateway=9100, orders=0"})
    assert chosen is not None and chosen["gateway"] == 9100 and chosen["orders"] == 0
    assert launcher.metrics_ports(fixed, {"PULLGATE_METRICS_PORTS": "off"}) is None
    with pytest.raises(launcher.LaunchError, match="gatewy=1"):
        launcher.metrics_ports(fixed, {"PULLGATE_METRICS_PORTS": "gatewy=1"})


def test_launcher_gives_replicas_their_own_metrics_ports() -> None:
    """Replica k of a service serves metrics on its service's metrics port + 10 * k."""
    children = launcher.Launcher(launcher.UpSettings(replicas=2)).children
    ports = {c.name: c.metrics_port for c in children}
    assert ports["catalog"] == 9466 and ports["catalog-1"] == 9476


def _line(formatter: logging.Formatter) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.TraceIds())
    handler.setFormatter(formatter)
    log = logging.getLogger("tests.observability.logs")
    log.addHandler(handler)
    log.propagate = False
    span = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=TraceFlags(1)))
    try:
        with trace.use_span(span):
            log.warning("breaker open")
    finally:
        log.removeHandler(handler)
    return stream.getvalue().strip()


def test_json_log_lines_carry_trace_and_span_ids() -> None:
    """A JSON line written inside a span names its trace and span, so it leads to the trace."""
    line = json.loads(_line(logs.JsonFormatter("gateway")))
    assert line["trace_id"] == f"{0xABC:032x}" and line["span_id"] == f"{0xDEF:016x}"
    assert (line["service"], line["level"], line["message"]) == ("gateway", "WARNING", "breaker open")


def test_text_log_lines_append_the_ids() -> None:
    """Plain lines keep their shape and end with the ids when written inside a span."""
    assert _line(logs.TextFormatter("gateway")).endswith(f"trace_id={0xABC:032x} span_id={0xDEF:016x}")


def test_degraded_labels_come_from_the_cause_not_the_words() -> None:
    """A part's label is its cause's name, whatever its reason says, so the label set stays the enum's."""
    part = pb.PartStatus(reason="customers: deadline exceeded at 10.0.0.1:1", cause=pb.CAUSE_CIRCUIT_OPEN)
    assert cause_label(part) == "circuit_open"
    assert cause_label(pb.PartStatus(cause=pb.CAUSE_OWNER_FAILED)) == "owner_failed"
    assert {cause_label(pb.PartStatus(cause=c)) for c in pb.Cause.values()} == {
        n.removeprefix("CAUSE_").lower() for n, _ in pb.Cause.items()}
