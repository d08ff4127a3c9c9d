"""Tracing from the standard OTEL_* variables: OTLP/gRPC, batched, and grpc.aio spans with W3C propagation.

Tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, unless
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Off, nothing is installed at all: no tracer
provider, no interceptors, so the API's no-op tracer is what the resilience layer sees. On, the SDK reads the
rest itself: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*`,
`OTEL_EXPORTER_OTLP_*` (an `http://` endpoint means plaintext gRPC).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler

from pullgate.telemetry.grpc_client import CancellingUnaryUnary, client_interceptor
from pullgate.telemetry.grpc_server import server_interceptor

UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                     "grpc.reflection.v1.ServerReflection")
"""Probes and tool discovery make no spans: a health check every few seconds would bury the requests."""

_UNTRACED_PREFIXES = tuple(f"/{service}/" for service in UNTRACED_SERVICES)


def traced_method(details: Any) -> bool:
    """The server interceptor's filter: False for a method of UNTRACED_SERVICES.

    One str.startswith per call. The library's `filters.negate(filters.any_of(filters.service_name(...)))` says
    the same, but each service_name test runs isinstance against grpc's abstract call-details classes (a
    typing.Protocol check) and splits the path with os.path: about 30 µs per served call against 0.25 µs
    here, on every process's every request (docs/observability.md, Cost).
    """
    method = getattr(details, "method", None) or ""
    if isinstance(method, bytes):
        method = method.decode()
    return not method.startswith(_UNTRACED_PREFIXES)


def requested(env: Mapping[str, str] = os.environ) -> bool:
    """Do the OTEL_* variables ask for traces to be exported?"""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class _Resource(Resource):
    """A Resource that hashes once. The OTLP encoder groups every exported span by `span.resource`, a dict key,
    and the SDK's Resource.__hash__ json.dumps its attributes each time: 3-10 µs per span on the export thread,
    under the GIL the request path needs. A resource never changes, so neither does its hash."""

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other)


def resource(service: str, env: Mapping[str, str] = os.environ) -> Resource:
    """The process's resource: OTEL_SERVICE_NAME if set, else `pullgate-<service>`; the instance if known."""
    attributes: dict[str, Any] = {}
    if not env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = f"pullgate-{service}"
    if env.get("PULLGATE_INSTANCE"):
        attributes["service.instance.id"] = env["PULLGATE_INSTANCE"]
    created = Resource.create(attributes)
    return _Resource(created.attributes, created.schema_url)


def drops_unsampled_parents(sampler: Sampler) -> bool:
    """Does `sampler` drop every span whose parent was not sampled? True for the SDK's parent-based samplers as
    OTEL_TRACES_SAMPLER makes them (`parentbased_*`: their not-sampled delegates are ALWAYS_OFF), and for
    ALWAYS_OFF itself; False for anything else, which then gets the SDK's full path."""
    if sampler is ALWAYS_OFF:
        return True
    if not isinstance(sampler, ParentBased):
        return False
    return (getattr(sampler, "_remote_parent_not_sampled", None) is ALWAYS_OFF
            and getattr(sampler, "_local_parent_not_sampled", None) is ALWAYS_OFF)


installed: Tracing | None = None
"""This process's tracing, once set up (None while tracing is off)."""


class Tracing:
    """The installed tracer provider and grpc instrumentation; `shutdown()` flushes what is batched."""

    def __init__(self, service: str) -> None:
        self.provider = TracerProvider(resource=resource(service))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(self.provider)
        self.final = drops_unsampled_parents(self.provider.sampler)
        """An unsampled parent means an unsampled child, whatever else: the interceptors then make no span."""
        self.client: CancellingUnaryUnary = client_interceptor(tracer_provider=self.provider)
        """The client span and propagation, run by the resilience layer's transports around every attempt."""
        self.client.unsampled_is_final = self.final
        global installed
        installed = self

    def server_interceptors(self) -> list[Any]:
        """The library's grpc.aio server interceptor, with its cheaper unary path (grpc_server.py): the server
        span, in the caller's trace context taken from the metadata."""
        interceptor = server_interceptor(tracer_provider=self.provider, filter_=traced_method)
        interceptor.unsampled_is_final = self.final
        return [interceptor]

    def shutdown(self) -> None:
        global installed
        if installed is self:
            installed = None
        self.provider.shutdown()
