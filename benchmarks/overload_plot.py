"""The overload benchmark's pictures: the spike (goodput, refusals and latency per second, the spike shaded) and
the freeze (every view's latency, the freeze shaded), so a person sees at a glance whether the system stayed
useful under three times its capacity and how long a frozen replica hurt.

Drawn like the chaos timeline (pullgate/tools/chaos/timeline.py): latency on a log scale above, answers per
second below, the disturbance shaded on both, matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after use(): the backend must be chosen first
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from pullgate.tools.chaos.timeline import COLORS
from pullgate.tools.openloop import REFUSALS, Phase, Shot
from pullgate.tools.stats import percentile

ANSWERS = (  # how each answer is drawn, bottom to top: (label, colour)
    ("good", "#2ca02c"),
    ("RESOURCE_EXHAUSTED", "#1f77b4"),
    ("CANCELLED", "#17becf"),
    ("UNAVAILABLE", "#d62728"),
    ("DEADLINE_EXCEEDED", "#ff7f0e"),
    ("other", "#7f7f7f"),
)


def kind(shot: Shot, deadline: float) -> str:
    """Which of ANSWERS a shot counts as: good is OK within the deadline."""
    if shot.code == "OK":
        return "good" if shot.latency <= deadline else "DEADLINE_EXCEEDED"
    return shot.code if shot.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED", *REFUSALS) else "other"


def _milliseconds(axis: Axes) -> None:
    axis.set_ylabel("latency (ms)")
    low, high = axis.dataLim.intervaly
    if not (math.isfinite(low) and math.isfinite(high) and low > 0):
        axis.set_ylim(1, 1000)  # nothing drawn (no answer of that kind): an empty log axis of 1 ms to 1 s
    elif high <= low * 1.01:
        axis.set_ylim(low / 2, high * 2)  # one value only (every answer at the deadline): give it room
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(ScalarFormatter())  # "40", not "4 x 10^1": these are milliseconds
    axis.yaxis.set_minor_formatter(NullFormatter())
    axis.grid(alpha=0.3)


def _shade(axes: Sequence[Axes], start: float, stop: float, label: str, color: str) -> None:
    for axis in axes:
        axis.axvspan(start, stop, color=color, alpha=0.15)
    axes[0].annotate(label, (start, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
                     textcoords="offset points", fontsize=8, va="top", color=color)


def _save(fig: Figure, axes: Sequence[Axes], title: str, path: Path) -> None:
    """Legends, the title, and the picture written to `path`; the figure is closed."""
    for axis in axes:
        axis.legend(loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def spike(shots: Sequence[Shot], phases: Sequence[Phase], capacity: float, deadline: float, path: Path,
          title: str, target: float | None = None, bars: Mapping[int, float] | None = None) -> None:
    """Write the spike's timeline to `path`: one-second buckets by when each request was due; `target`, if given,
    is 80% of the closed loops' mean (a dotted line), and `bars` the goodput each judged second had to reach, by
    second (a short red line over each)."""
    buckets: dict[int, list[Shot]] = defaultdict(list)
    for shot in shots:
        buckets[math.floor(shot.due)].append(shot)
    seconds = list(range(math.ceil(sum(p.seconds for p in phases))))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, height_ratios=(3, 2))
    middle = [s + 0.5 for s in seconds]
    for q, style in ((0.5, "-"), (0.99, ":")):
        values = [percentile(ok, q) * 1000 if (ok := [x.latency for x in buckets[s] if x.code == "OK"]) else math.nan
                  for s in seconds]
        top.plot(middle, values, style, marker=".", color="#2ca02c", label=f"p{round(q * 100)} of OK answers")
    refused = [percentile(r, 0.99) * 1000 if (r := [x.latency for x in buckets[s] if x.refused]) else math.nan
               for s in seconds]
    top.plot(middle, refused, ":", marker=".", color="#1f77b4", label="p99 of refusals")
    top.axhline(deadline * 1000, color="#7f7f7f", linewidth=0.8, linestyle="--", label="deadline")
    _milliseconds(top)
    base = [0] * len(seconds)
    for label, color in ANSWERS:
        counts = [sum(1 for x in buckets[s] if kind(x, deadline) == label) for s in seconds]
        if any(counts):
            bottom.bar(seconds, counts, width=1.0, bottom=base, color=color, alpha=0.55 if label == "good" else 0.8,
                       label=label, align="edge")
            base = [a + b for a, b in zip(base, counts, strict=True)]
    edges, offered, start = [], [], 0.0
    for phase in phases:
        edges += [start, start + phase.seconds]
        offered += [phase.rate, phase.rate]
        start += phase.seconds
    bottom.plot(edges, offered, color="black", linewidth=1.0, label="offered")
    bottom.axhline(capacity, color="black", linewidth=0.8, linestyle="--", label=f"capacity {capacity:.0f}/s")
    if target is not None:
        bottom.axhline(target, color="#d62728", linewidth=0.8, linestyle=":",
                       label=f"80% of the closed loops' mean {target:.0f}/s")
    if bars:
        judged = sorted(bars)
        bottom.hlines([bars[t] for t in judged], judged, [t + 1 for t in judged], color="#d62728", linewidth=2.0,
                      label="each second's bar (80% of the closed loops' at its rank)")
    bottom.set_ylabel("answers per second")
    bottom.set_xlabel("seconds since the load started (by when each request was due)")
    bottom.grid(alpha=0.3)
    start = 0.0
    for phase in phases:
        if phase.rate > capacity:
            _shade((top, bottom), start, start + phase.seconds, f"{phase.name}: {phase.rate:.0f}/s",
                   COLORS["slow"])
        start += phase.seconds
    _save(fig, (top, bottom), title, path)


def freeze(shots: Sequence[Shot], frozen: tuple[float, float], counted: tuple[float, float], slow: float,
           path: Path, title: str) -> None:
    """Write the freeze's timeline to `path`: every view's latency, and views per second by outcome."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, height_ratios=(3, 2))
    outcomes = {
        ("OK", "#2ca02c"): [s for s in shots if s.code == "OK" and not s.degraded],
        ("degraded", "#ffbf00"): [s for s in shots if s.code == "OK" and s.degraded],
        ("failed", "#d62728"): [s for s in shots if s.code != "OK"],
    }
    for (label, color), chosen in outcomes.items():
        if chosen:
            top.scatter([s.due for s in chosen], [s.latency * 1000 for s in chosen], s=6, color=color, label=label)
    top.axhline(slow * 1000, color="#7f7f7f", linewidth=0.8, linestyle="--", label=f"{slow * 1000:.0f} ms")
    _milliseconds(top)
    buckets: dict[int, list[Shot]] = defaultdict(list)
    for shot in shots:
        buckets[math.floor(shot.due)].append(shot)
    seconds = list(range(max(buckets, default=0) + 1))
    ok = [sum(1 for s in buckets[t] if s.code == "OK" and not s.degraded) for t in seconds]
    degraded = [sum(1 for s in buckets[t] if s.code == "OK" and s.degraded) for t in seconds]
    failed = [sum(1 for s in buckets[t] if s.code != "OK") for t in seconds]
    bottom.bar(seconds, ok, width=1.0, color="#2ca02c", alpha=0.35, label="ok", align="edge")
    bottom.bar(seconds, degraded, width=1.0, bottom=ok, color="#ffbf00", label="degraded", align="edge")
    bottom.bar(seconds, failed, width=1.0, bottom=[a + b for a, b in zip(ok, degraded, strict=True)],
               color="#d62728", label="failed", align="edge")
    bottom.set_ylabel("views per second")
    bottom.set_xlabel("seconds since the views started")
    bottom.grid(alpha=0.3)
    _shade((top, bottom), frozen[0], frozen[1], "catalog replica frozen (SIGSTOP)", COLORS["freeze"])
    for axis in (top, bottom):
        axis.axvline(counted[0], color=COLORS["freeze"], linewidth=0.8)
        axis.axvline(counted[1], color=COLORS["freeze"], linewidth=0.8)
    top.annotate("counted views", (counted[0], 0.0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                 textcoords="offset points", fontsize=8, va="bottom", color=COLORS["freeze"])
    _save(fig, (top, bottom), title, path)





def tail(shots: Sequence[Shot], labels: Sequence[str], deadline: float, path: Path, title: str,
         window: int = 10) -> None:
    """Write the tail's timeline to `path`: per `window` seconds, p99 and max latency of each system's views (an
    error counted as the whole deadline); and per second the generator's worst send lag, so a stretch where the
    machine held everything up shows as such and not as the system's tail."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, height_ratios=(3, 2))
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
    end = max((s.due for s in shots), default=0.0)
    windows = list(range(0, math.floor(end) + 1, window))
    for index, label in enumerate(labels):
        buckets: dict[int, list[float]] = defaultdict(list)
        for shot in shots:
            if shot.target == index:
                buckets[math.floor(shot.due) // window * window].append(
                    shot.latency if shot.code == "OK" else deadline)
        color = colors[index % len(colors)]
        for q, style in ((0.99, "-"), (1.0, ":")):
            values = [percentile(buckets[w], q) * 1000 if buckets[w] else math.nan for w in windows]
            top.step([*windows, windows[-1] + window], [*values, values[-1]], style, where="post", color=color,
                     label=f"{label}: {'max' if q == 1.0 else 'p99'} per {window} s")
    top.axhline(deadline * 1000, color="#7f7f7f", linewidth=0.8, linestyle="--", label="deadline")
    _milliseconds(top)
    lags: dict[int, float] = defaultdict(float)
    for shot in shots:
        lags[math.floor(shot.due)] = max(lags[math.floor(shot.due)], shot.lag * 1000)
    seconds = list(range(math.floor(end) + 1))
    bottom.plot(seconds, [lags[s] for s in seconds], color="#7f7f7f", linewidth=0.8,
                label="generator's worst send lag per second")
    bottom.set_ylabel("send lag (ms)")
    bottom.set_xlabel("seconds since the counted views started")
    bottom.grid(alpha=0.3)
    _save(fig, (top, bottom), title, path)


__all__ = ["ANSWERS", "freeze", "kind", "spike", "tail"]
