"""The shipped Grafana dashboard (deploy/grafana/dashboards/pullgate.json) read outside Grafana: its PromQL with
Grafana's variables filled in, the metric names each expression reads (tests check them against a real
Prometheus and a live scrape), and a picture of its panels drawn from a Prometheus's data (`./dev bench
dashboard`; Grafana itself is not installable here, and a README should show what an operator sees)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pullgate.tools.prometheus import Prometheus

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
"""The repository's deploy/ (the dashboard is not part of the installed package: this reads a checkout)."""
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "pullgate.json"

# Grafana's variables, as a query over the last few minutes of a small test system would have them.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$job": ".*"}
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
BARE = re.compile(r"\b((?:resilience|rpc|pullgate)_[a-zA-Z0-9_:]*)\b(?!\s*\{)")
LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\{[^}]*\}")


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def fill(expr: str, variables: dict[str, str] = VARIABLES) -> str:
    """`expr` with Grafana's variables replaced by `variables`' text."""
    for variable, text in variables.items():
        expr = expr.replace(variable, text)
    return expr


def expressions(variables: dict[str, str] = VARIABLES) -> list[tuple[str, str]]:
    """(panel title, PromQL as Prometheus would get it) for every target of every panel."""
    return [(panel["title"], fill(target["expr"], variables))
            for panel in dashboard()["panels"] for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (every one is written with a `{...}` selector; a test checks)."""
    return set(SELECTOR.findall(expr)) - {"by", "without", "on", "ignoring"}


def bare_names(expr: str) -> set[str]:
    """pullgate's metric names in `expr` not written with a selector (which metric_names would miss)."""
    without_labels = LABEL_LISTS.sub(lambda m: "{}" if m.group().startswith("{") else "", expr)
    return set(BARE.findall(without_labels))


LEGEND = 10
"""Series named in a panel's legend at most (a breaker panel has one per caller and replica)."""


def _legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def render(server: Prometheus, start: float, end: float, shaded: list[tuple[float, float, str]], out: Path,
           title: str) -> dict[str, int]:
    """Draw every panel of the dashboard from `server`'s data over [start, end] (Unix seconds), one small chart
    each in the dashboard's own order, with `shaded` spans ((from, to, label), Unix seconds) marked on all, to
    `out`; how many series each panel drew, by title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use(): the backend must be chosen first

    panels = dashboard()["panels"]
    rows = (len(panels) + 1) // 2
    figure, axes = plt.subplots(rows, 2, figsize=(15, 3.1 * rows), sharex=True, squeeze=False)
    variables = {**VARIABLES, "$__rate_interval": "5s"}
    drawn: dict[str, int] = {}
    for panel, ax in zip(panels, axes.flat, strict=False):
        for target in panel["targets"]:
            for series in server.query_range(fill(target["expr"], variables), start, end, 1.0):
                points = [(float(t) - start, float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf")]
                if points:
                    xs, ys = zip(*points, strict=True)
                    ax.plot(xs, ys, linewidth=1.2, label=_legend(target.get("legendFormat", ""), series["metric"]))
        for begin, finish, label in shaded:
            ax.axvspan(begin - start, finish - start, color="#d62728", alpha=0.08)
            ax.text(begin - start, 0.02, f" {label}", transform=ax.get_xaxis_transform(), fontsize=7,
                    va="bottom", color="#d62728")
        drawn[panel["title"]] = len(ax.lines)
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.set_ylabel({"reqps": "per second", "ops": "per second", "ms": "ms"}.get(unit, ""), fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.lines:
            handles, labels = ax.get_legend_handles_labels()
            ax.legend(handles[:LEGEND], labels[:LEGEND], fontsize=6, loc="upper left", ncols=2, framealpha=0.6)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return drawn
