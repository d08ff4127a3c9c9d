"""What an overload run does and how it is judged: how long each part runs, the deadline every view gets, and
a target's verdict (PASS, MISS, or n/a when this code cannot measure it). Shared by the scenario modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pullgate.tools.stats import percentile

DEADLINE = 1.0
"""Seconds every view is given."""


@dataclass(frozen=True)
class Plan:
    """How long each part runs. Durations are seconds."""

    warm: float = 3.0
    """Closed-loop load before capacity is measured, not counted: connections, caches, hedging's latency window."""
    capacity: float = 5.0
    """Closed-loop load counted for capacity."""
    before: float = 5.0
    """Open loop at 0.5x capacity before the spike."""
    spike: float = 10.0
    """Open loop at 3x capacity."""
    after: float = 10.0
    """Open loop at 0.5x capacity after the spike."""
    gray_before: float = 3.0
    """Sequential views before the freeze."""
    gray_settle: float = 2.0
    """From the freeze to the first counted view."""
    gray_views: int = 300
    """Views counted while the replica is frozen."""
    gray_cap: float = 120.0
    """The counted views stop after this long even if fewer than `gray_views` were made (each may take 1 s)."""
    gray_after: float = 3.0
    """Sequential views after the thaw."""
    tail_warm: float = 10.0
    """Open loop before the tail is counted: connections, and the hedge delay's latency window."""
    tail_rate: float = 40.0
    """Views per second to each system, at most: a modest load on the machine these figures were first made on."""
    tail_load: float = 0.4
    """The tail's load, all systems together, as a share of what closed-loop callers got from them: where the
    machine is slower than `tail_rate` assumes, the rate comes down to this (the tail of an idle-enough machine,
    not its queueing)."""
    tail_views: int = 20_000
    """Views per system, at most."""
    tail_seconds: float = 500.0
    """The counted tail lasts at most this long (fewer views where the rate came down)."""
    tail_floor: float = 60.0
    """Seconds of the same load before the fault is set: what this machine gives without it (the tail's floor)."""
    cost_rounds: int = 3
    """Rounds of the cost scenario, each every load in turn."""
    cost_seconds: float = 6.0
    """Seconds of each load in a round of the cost scenario (the first not counted)."""


FULL = Plan()
QUICK = Plan(warm=0.5, capacity=1.0, before=1.0, spike=2.0, after=2.0, gray_before=1.0, gray_views=30,
             gray_cap=4.0, gray_after=1.0, tail_warm=0.0, tail_rate=40.0, tail_views=80,
             tail_floor=1.0, cost_rounds=1, cost_seconds=1.5)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets and how this run did: passed None means it could not be measured."""

    scenario: str
    name: str
    figure: str
    passed: bool | None

    def line(self) -> str:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[self.passed]
        return f"{verdict}  {self.scenario:5}  {self.name}: {self.figure}"


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def q(values: Sequence[float], quantile: float) -> float:
    """The quantile by nearest rank, NaN for no values."""
    return percentile(list(values), quantile) if values else math.nan


__all__ = ["DEADLINE", "FULL", "QUICK", "Plan", "Target", "ms", "q"]
