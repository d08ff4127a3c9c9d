"""What an overload fault's spike recorded: every view the second process sent and its answer, the capacity it was
measured against, and each process's breaker counters read around it; summed per second for the judges.

Plain data, no grpc and no clock, so the invariants on it are pure functions and tests can plant a spike.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

REFUSALS = ("RESOURCE_EXHAUSTED", "CANCELLED")
"""How an overloaded system refuses fast: admission control's RESOURCE_EXHAUSTED (trailer `resilience-overloaded:
1`), and the CANCELLED grpc's core answers when its queue of calls not yet taken by Python is full."""

Opens = Mapping[str, Mapping[str, float]]
"""Process name -> downstream -> `resilience_breaker_transitions_total{state="open"}` so far."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One view of the spike. Times are seconds; `due` counts from the spike's start, `latency` from `due`."""

    due: float
    latency: float
    code: str
    """OK or the status code's name."""
    overloaded: bool = False
    """It carried the trailer `resilience-overloaded: 1`."""


@dataclass
class Spike:
    """One overload fault as it happened."""

    label: str
    start: float
    """Wall clock when its first view was due."""
    seconds: float
    rate: float
    """Views offered per second: the fault's multiple of `capacity`."""
    capacity: float
    """OK views per second measured before the run, closed loop."""
    deadline: float
    answers: list[Answer] = field(default_factory=list)
    opens_before: Opens = field(default_factory=dict)
    """Breaker counters read just before the first view was due."""
    opens_after: Opens = field(default_factory=dict)
    """Read once every call the spike caused could have ended (one deadline after its last answer)."""
    read_at: tuple[float, float] = (0.0, 0.0)
    """Wall clock of the two readings: the window the breaker invariant judges."""
    unread: list[str] = field(default_factory=list)
    """Processes whose metrics could not be read, and why."""
    lag_p99: float = 0.0
    """How late the generator sent its views, at p99 (seconds): whether it kept its schedule."""
    fair_capacity: float | None = None
    """`capacity` scaled to the cores the generator and everything else left the system during the spike after its
    first second (pullgate.tools.machine.fair_capacity); None when not measured (no /proc, too short a spike)."""
    cpu: str = ""
    """How the machine's CPU divided while capacity was measured and in the spike, for the report."""

    @property
    def judged_capacity(self) -> float:
        """What goodput is judged against: the fair capacity where measured, else the capacity."""
        return self.capacity if self.fair_capacity is None else self.fair_capacity

    def good(self, answer: Answer) -> bool:
        """An OK answer within the deadline: goodput."""
        return answer.code == "OK" and answer.latency <= self.deadline


@dataclass(frozen=True)
class Second:
    """One whole second of a spike, by when its views were due."""

    t: int
    offered: int
    good: int
    codes: Counter[str]
    """What the rest got, by status code (OK here means OK but after the deadline)."""


def per_second(spike: Spike) -> list[Second]:
    """Every whole second of the spike (a last partial second is left out: it offers less than the rate)."""
    whole = math.floor(spike.seconds + 1e-9)
    offered, good = [0] * whole, [0] * whole
    codes: list[Counter[str]] = [Counter() for _ in range(whole)]
    for answer in spike.answers:
        t = math.floor(answer.due)
        if 0 <= t < whole:
            offered[t] += 1
            if spike.good(answer):
                good[t] += 1
            else:
                codes[t][answer.code] += 1
    return [Second(t, offered[t], good[t], codes[t]) for t in range(whole)]


__all__ = ["REFUSALS", "Answer", "Opens", "Second", "Spike", "per_second"]
