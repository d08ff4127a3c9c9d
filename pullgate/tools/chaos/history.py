"""What each owner held, and when: the evidence the provenance invariant compares every labelled part with.

An entity's history is a list of spans `(start, end, value)`: the owner held `value` at some moment in
[start, end], or throughout it. Spans come from two places (see owners.py): the owners' own records, read
after the run (orders and inventory stamp every change), and samples of the owners' RPCs during the run (a
value read between `sent` and `received` was held then; with the samples on either side it may have been held
from the one before to the one after, since the change happened somewhere in between).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pullgate.tools.chaos.record import Value


@dataclass(frozen=True, slots=True)
class Span:
    start: float
    end: float
    value: Value


@dataclass(frozen=True, slots=True)
class Sample:
    """One read of one entity straight from its owner."""

    sent: float
    received: float
    value: Value


@dataclass
class History:
    """Per entity (`("stock", "SKU-001")`), the spans in which each of its values was held."""

    spans: dict[tuple[str, str], list[Span]] = field(default_factory=lambda: defaultdict(list))

    def add(self, key: tuple[str, str], start: float, end: float, value: Value) -> None:
        self.spans[key].append(Span(start, end, value))

    def add_samples(self, key: tuple[str, str], samples: Sequence[Sample], *, static: bool = False) -> None:
        """Spans from samples in time order. `static`: the entity never changes but by an outside hand, so the
        first value is taken to hold before the first sample and the last after the last one."""
        ordered = sorted(samples, key=lambda s: s.sent)
        for i, sample in enumerate(ordered):
            start = ordered[i - 1].received if i > 0 else (-math.inf if static else sample.sent)
            end = ordered[i + 1].sent if i + 1 < len(ordered) else (math.inf if static else sample.received)
            self.add(key, start, end, sample.value)

    def knows(self, key: tuple[str, str]) -> bool:
        return key in self.spans

    def held(self, key: tuple[str, str], value: Value, start: float, end: float) -> bool:
        """Did the owner hold `value` at some moment in [start, end]?"""
        return any(s.value == value and s.start <= end and start <= s.end for s in self.spans.get(key, ()))

    def values(self, key: tuple[str, str]) -> list[Value]:
        return list(dict.fromkeys(s.value for s in self.spans.get(key, ())))


__all__ = ["History", "Sample", "Span"]
