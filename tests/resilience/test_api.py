"""The public surface: `resilience.__all__` is exactly what docs/resilience.md documents."""

from __future__ import annotations

import re
from pathlib import Path

import resilience

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "resilience.md"

DOCUMENTED = {
    "Behavior",
    "Cause",
    "HEDGE_LOSER",
    "HandlerMemo",
    "UnaryInterceptor",
    "deadline",
    "Admission",
    "AdmissionConfig",
    "AdmissionInterceptor",
    "BreakerConfig",
    "BudgetConfig",
    "BulkheadConfig",
    "BulkheadFull",
    "CacheConfig",
    "CircuitOpen",
    "Clock",
    "ConfigError",
    "read_toml",
    "Criticality",
    "Deadline",
    "DeadlineExceeded",
    "DeadlineInterceptor",
    "Downstream",
    "ChannelFactory",
    "InsecureChannels",
    "INSECURE",
    "DownstreamConfig",
    "DurationError",
    "HedgingConfig",
    "Idempotency",
    "LocalDeadline",
    "Method",
    "OVERLOADED_METADATA",
    "RPC_CLIENT_DURATION",
    "RpcDurations",
    "Histogram",
    "Counter",
    "Series",
    "Outcome",
    "OutlierDetectionConfig",
    "BalanceConfig",
    "DiscoveryConfig",
    "DnsTarget",
    "NoReplicas",
    "ResolutionError",
    "Resolver",
    "Overloaded",
    "Provenance",
    "ResilienceConfig",
    "ResilienceError",
    "Result",
    "RetryConfig",
    "SYSTEM_CLOCK",
    "Seconds",
    "Source",
    "StatusError",
    "SystemClock",
    "ThrottleConfig",
    "Throttled",
    "TimeoutConfig",
    "classify",
    "format_duration",
    "parse_duration",
    "parse_seconds",
    "criticality_scope",
}


def test_all_is_the_documented_list() -> None:
    """__all__ holds exactly the documented names, and each is importable."""
    assert set(resilience.__all__) == DOCUMENTED
    for name in resilience.__all__:
        assert getattr(resilience, name) is not None


def test_pullgate_uses_only_the_public_surface() -> None:
    """pullgate, the gateway and the services import from `resilience` itself, never from its modules."""
    inside = re.compile(r"^\s*(?:from resilience\.\w+ import|import resilience\.)", re.M)
    found = [str(p.relative_to(REPO)) for top in ("pullgate", "gateway", "services") for p in (REPO / top).rglob("*.py")
             if inside.search(p.read_text())]
    assert not found, f"import these names from `resilience` (export them in its __all__ if needed): {found}"


def test_docs_list_the_same_names() -> None:
    """The public API section of docs/resilience.md names every exported name, and no other."""
    text = DOCS.read_text()
    section = text.split("## Public API", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `(\w+)`", section, re.M))
    assert listed == DOCUMENTED
