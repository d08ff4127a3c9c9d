"""Log lines that lead to their trace: each carries the current trace and span ids; JSON on request.

`PULLGATE_LOG_FORMAT=json` makes every line one JSON object (time, level, service, logger, message,
trace_id, span_id, exception); anything else keeps the plain text lines, with `trace_id=... span_id=...`
appended when the line was written inside a span.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime

from opentelemetry import trace

FORMAT_VARIABLE = "PULLGATE_LOG_FORMAT"


class TraceIds(logging.Filter):
    """Puts `trace_id` and `span_id` (hex, or "" outside a span) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = record.span_id = ""
        return True


class TextFormatter(logging.Formatter):
    """`<time> <service> <LEVEL> <logger>: <message> [trace_id=... span_id=...]`."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", "")
        return f"{line} trace_id={trace_id} span_id={getattr(record, 'span_id', '')}" if trace_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", ""),
            "span_id": getattr(record, "span_id", ""),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(service: str, env: Mapping[str, str] = os.environ) -> None:
    """Give the root logger's handlers (one to stderr if it has none) trace ids and the chosen format."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.INFO)
    json_lines = env.get(FORMAT_VARIABLE, "").strip().lower() == "json"
    formatter = JsonFormatter(service) if json_lines else TextFormatter(service)
    for handler in root.handlers:
        if not any(isinstance(f, TraceIds) for f in handler.filters):
            handler.addFilter(TraceIds())
        handler.setFormatter(formatter)
