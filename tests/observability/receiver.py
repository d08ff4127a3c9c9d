"""A real OTLP/gRPC trace receiver in the test process: opentelemetry-proto's TraceService on port 0."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class Span:
    """One received span, decoded enough for assertions."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    start_ns: int
    """When the span started (Unix time, ns)."""

    @property
    def is_server(self) -> bool:
        return self.kind == SpanProto.SPAN_KIND_SERVER

    @property
    def is_client(self) -> bool:
        return self.kind == SpanProto.SPAN_KIND_CLIENT

    def event_names(self) -> list[str]:
        return [name for name, _ in self.events]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects every exported span; `wait_for()` polls them until a condition holds."""

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    received.append(Span(
                        service, s.name, s.kind, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                        _attributes(s.attributes), [(e.name, _attributes(e.attributes)) for e in s.events],
                        s.status.code, s.start_time_unix_nano,
                    ))
        with self._lock:
            self._spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def wait_for(self, condition: Callable[[list[Span]], bool], timeout: float = 20.0) -> list[Span]:
        """Poll the received spans until `condition(spans)` holds; AssertionError after `timeout` seconds."""
        end = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if condition(spans):
                return spans
            if time.monotonic() > end:
                summary = "\n".join(f"  {s.service} {s.name} trace={s.trace_id[:8]}" for s in spans[-40:])
                raise AssertionError(f"spans did not arrive within {timeout}s; last received:\n{summary}")
            time.sleep(0.05)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None)
