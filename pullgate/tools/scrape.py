"""Reading a process's Prometheus endpoint, so a benchmark can count what the system did (breakers opened, hedges
sent, attempts per replica) from the same counters an operator would watch, not from a private hook.

A counter is read before and after a stretch of load and the two readings subtracted (`Reading.minus`). A
series that does not exist yet counts as 0: OpenTelemetry exports a counter's series only once it has moved.
`has()` tells a counter nobody has added apart from one at 0 (a metric a branch does not have yet).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pullgate.tools.launcher import STATE_FILE

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Reading:
    """Every sample of one endpoint at one moment: (sample name, labels) -> value."""

    samples: Mapping[tuple[str, Labels], float]

    def has(self, name: str) -> bool:
        """True if the endpoint exports a sample called `name` (e.g. `resilience_attempts_total`)."""
        return any(n == name for n, _ in self.samples)

    def total(self, name: str, **match: str) -> float:
        """The sum of the samples called `name` whose labels include `match`."""
        wanted = set(match.items())
        return sum(v for (n, labels), v in self.samples.items() if n == name and wanted <= labels)

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        """`total(name, **match)` split by the value of `label`."""
        wanted = set(match.items())
        out: dict[str, float] = defaultdict(float)
        for (n, labels), v in self.samples.items():
            if n == name and wanted <= labels:
                out[dict(labels).get(label, "")] += v
        return dict(out)

    def minus(self, before: Reading) -> Reading:
        """What every counter added since `before` (a series new since then counts from 0)."""
        return Reading({key: v - before.samples.get(key, 0.0) for key, v in self.samples.items()})


def parse(text: str) -> Reading:
    """A Reading of the Prometheus text format."""
    return Reading({(s.name, frozenset(s.labels.items())): s.value
                    for family in text_string_to_metric_families(text) for s in family.samples})


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def read(url: str) -> Reading:
    """Scrape `url` (in a thread: the HTTP client blocks)."""
    return parse(await asyncio.to_thread(_get, url))


async def read_all(urls: Mapping[str, str]) -> dict[str, Reading]:
    """Scrape every process named in `urls` at once."""
    readings = await asyncio.gather(*(read(url) for url in urls.values()))
    return dict(zip(urls, readings, strict=True))


def endpoints(data_dir: Path) -> dict[str, str]:
    """Each process's metrics URL as `pullgate up` recorded it in pullgate-up.json, by process name."""
    services = json.loads((data_dir / STATE_FILE).read_text())["services"]
    return {entry["name"]: entry["metrics"] for entries in services.values() for entry in entries
            if entry.get("metrics")}


__all__ = ["Reading", "endpoints", "parse", "read", "read_all"]
