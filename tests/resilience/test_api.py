"""The public surface: `resilience.__all__` is exactly what docs/resilience.md documents."""

from __future__ import annotations

import re
from pathlib import Path

import resilience

DOCS = Path(__file__).resolve().parents[2] / "docs" / "resilience.md"

DOCUMENTED = {
    "BreakerConfig",
    "BudgetConfig",
    "BulkheadConfig",
    "BulkheadFull",
    "CacheConfig",
    "CircuitOpen",
    "Clock",
    "ConfigError",
    "Deadline",
    "DeadlineExceeded",
    "DeadlineInterceptor",
    "Downstream",
    "DownstreamConfig",
    "HedgingConfig",
    "Idempotency",
    "LocalDeadline",
    "Method",
    "OVERLOADED_METADATA",
    "Outcome",
    "OutlierDetectionConfig",
    "Overloaded",
    "Provenance",
    "ResilienceConfig",
    "ResilienceError",
    "Result",
    "RetryConfig",
    "SYSTEM_CLOCK",
    "Source",
    "StatusError",
    "SystemClock",
    "ThrottleConfig",
    "Throttled",
    "TimeoutConfig",
    "classify",
}


def test_all_is_the_documented_list() -> None:
    """__all__ holds exactly the documented names, and each is importable."""
    assert set(resilience.__all__) == DOCUMENTED
    for name in resilience.__all__:
        assert getattr(resilience, name) is not None


def test_docs_list_the_same_names() -> None:
    """The public API section of docs/resilience.md names every exported name, and no other."""
    text = DOCS.read_text()
    section = text.split("## Public API", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `(\w+)`", section, re.M))
    assert listed == DOCUMENTED
