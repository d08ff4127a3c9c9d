"""The shipped Grafana dashboard as tests read it: its file, its PromQL with Grafana's variables filled in, and
the metric names each expression reads."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "pullgate.json"

# Grafana's variables, as a query over the last few minutes of a small test system would have them.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$job": ".*"}
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
BARE = re.compile(r"\b((?:resilience|rpc|pullgate)_[a-zA-Z0-9_:]*)\b(?!\s*\{)")
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\{[^}]*\}")


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL as Prometheus would get it) for every target of every panel."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, text in VARIABLES.items():
                expr = expr.replace(variable, text)
            found.append((panel["title"], expr))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (every one is written with a `{...}` selector; a test checks)."""
    return set(SELECTOR.findall(expr)) - {"by", "without", "on", "ignoring"}


def bare_names(expr: str) -> set[str]:
    """pullgate's metric names in `expr` not written with a selector (which metric_names would miss)."""
    without_labels = LABEL_LISTS.sub(lambda m: "{}" if m.group().startswith("{") else "", expr)
    return set(BARE.findall(without_labels))
