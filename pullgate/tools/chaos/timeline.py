"""The run as a picture: latency percentiles and degraded/failed answers per second, with each fault shaded,
so a person sees at a glance what each fault did and how long the system took to recover.

Rendered with matplotlib's Agg backend: no display needed, the same PNG on a laptop and in CI.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after use(): the backend must be chosen first
from matplotlib.ticker import NullFormatter, ScalarFormatter

from pullgate.tools.chaos.invariants import Verdict
from pullgate.tools.chaos.record import Call, FaultRun
from pullgate.tools.stats import percentile

COLORS = {"kill": "#d62728", "freeze": "#9467bd", "slow": "#ff7f0e", "fail": "#8c564b", "hang": "#7f7f7f",
          "gray": "#17becf", "overload": "#e377c2"}


def draw(calls: Sequence[Call], faults: Sequence[FaultRun], origin: float, path: Path, title: str = "",
         verdicts: Sequence[Verdict] = ()) -> None:
    """Write the timeline PNG to `path`: one-second buckets by when each call was sent, and a line of verdicts."""
    buckets: dict[int, list[Call]] = defaultdict(list)
    for call in calls:
        buckets[max(0, math.floor(call.sent - origin))].append(call)
    seconds = list(range(0, max(buckets, default=0) + 1))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, height_ratios=(3, 2))
    for q, style in ((0.5, "-"), (0.95, "--"), (0.99, ":")):
        values = [percentile([c.latency for c in buckets[s]], q) * 1000 if buckets[s] else math.nan for s in seconds]
        top.plot(seconds, values, style, label=f"p{round(q * 100)}", color="#1f77b4")
    top.set_ylabel("latency (ms)")
    top.set_yscale("log")
    top.yaxis.set_major_formatter(ScalarFormatter())  # "40", not "4 x 10^1": these are milliseconds
    top.yaxis.set_minor_formatter(NullFormatter())
    top.grid(alpha=0.3)
    degraded = [sum(1 for c in buckets[s] if c.ok and c.degraded) for s in seconds]
    failed = [sum(1 for c in buckets[s] if c.failed) for s in seconds]
    ok = [sum(1 for c in buckets[s] if not c.failed and not c.degraded) for s in seconds]
    bottom.bar(seconds, ok, width=1.0, color="#2ca02c", alpha=0.35, label="ok", align="edge")
    bottom.bar(seconds, degraded, width=1.0, bottom=ok, color="#ffbf00", label="degraded", align="edge")
    bottom.bar(seconds, failed, width=1.0, bottom=[a + b for a, b in zip(ok, degraded, strict=True)],
               color="#d62728", label="failed", align="edge")
    bottom.set_ylabel("answers per second")
    bottom.set_xlabel("seconds since the load started")
    bottom.grid(alpha=0.3)
    end = max(seconds, default=0) + 1
    for fault in faults:
        start = fault.start - origin
        stop = (fault.end - origin) if fault.end is not None else end
        color = COLORS.get(fault.kind, "#7f7f7f")
        for axis in (top, bottom):
            axis.axvspan(start, max(stop, start + 0.15), color=color, alpha=0.15)
        top.annotate(fault.label, (start, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                     textcoords="offset points", fontsize=8, va="top", rotation=90, color=color)
    top.legend(loc="upper right", fontsize=8)
    bottom.legend(loc="upper right", fontsize=8)
    fig.suptitle(title or "pullgate chaos", fontsize=11)
    if verdicts:
        line = "   ".join(f"{v.number} {v.name} {'held' if v.held else 'VIOLATED'}" for v in verdicts)
        fig.text(0.5, 0.005, line, ha="center", va="bottom", fontsize=8,
                 color="#2ca02c" if all(v.held for v in verdicts) else "#d62728")
    fig.tight_layout(rect=(0, 0.03 if verdicts else 0, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["draw"]
