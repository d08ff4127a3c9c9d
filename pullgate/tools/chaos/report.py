"""The end of a run in words and in JSON: what was sent, what each fault was, and each invariant's verdict.

The text is for a person at a terminal (tables, one line per invariant, the first violations quoted); the
JSON holds the same and every measured figure, for scripts and for comparing runs.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pullgate.tools.chaos.invariants import Peak, Verdict
from pullgate.tools.chaos.record import Call, FaultRun
from pullgate.tools.chaos.spike import REFUSALS, Spike, per_second
from pullgate.tools.stats import percentile

SCHEMA = "pullgate.chaos.report/v1"


@dataclass
class Report:
    """Everything a run concluded."""

    settings: dict[str, Any]
    calls: Sequence[Call]
    faults: Sequence[FaultRun]
    verdicts: Sequence[Verdict]
    peaks: Sequence[Peak]
    origin: float
    """When the load started (wall clock); every time in the report is seconds after it."""
    shed: int = 0
    notes: list[str] = field(default_factory=list)
    spikes: Sequence[Spike] = ()

    @property
    def held(self) -> bool:
        return all(v.held for v in self.verdicts)

    def traffic(self) -> list[dict[str, Any]]:
        """One row per kind of request: counts by outcome and latency percentiles in milliseconds."""
        groups: dict[tuple[str, str], list[Call]] = defaultdict(list)
        for call in self.calls:
            groups[(call.op, call.mode)].append(call)
        rows = []
        for (op, mode), calls in sorted(groups.items()):
            latencies = [c.latency for c in calls]
            rows.append({
                "op": op, "mode": mode, "sent": len(calls),
                "ok": sum(1 for c in calls if c.ok and not c.degraded),
                "degraded": sum(1 for c in calls if c.ok and c.degraded),
                "refused": sum(1 for c in calls if not c.ok and not c.failed),
                "failed": sum(1 for c in calls if c.failed),
                "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
                "max_ms": round(max(latencies) * 1000, 1),
            })
        return rows

    def recovered(self) -> list[float | None]:
        """Per fault: seconds from its end to the last degraded or failed read before the next fault began,
        if clean reads followed; None if the system had not recovered when the next fault (or the run) began."""
        result: list[float | None] = []
        ordered = sorted(self.faults, key=lambda f: f.start)
        for i, fault in enumerate(ordered):
            if fault.end is None:
                result.append(None)
                continue
            until = ordered[i + 1].start if i + 1 < len(ordered) else float("inf")
            reads = [c for c in self.calls if c.read and fault.end <= c.sent < until]
            last_bad = max((c.received for c in reads if not c.ok or c.degraded), default=fault.end)
            clean = [c for c in reads if c.sent >= last_bad]
            result.append(round(last_bad - fault.end, 3) if clean else None)
        return result

    def errors(self, top: int = 8) -> list[dict[str, Any]]:
        """The most frequent failures: request, code and message (numbers masked so alike ones group)."""
        counts: Counter[tuple[str, str, str]] = Counter()
        for call in self.calls:
            if not call.ok:
                counts[(call.op, call.code, re.sub(r"\d+(\.\d+)?", "N", call.detail)[:160])] += 1
        return [{"op": op, "code": code, "detail": detail, "count": n}
                for (op, code, detail), n in counts.most_common(top)]

    def spike_rows(self) -> list[dict[str, Any]]:
        """Per overload fault: what it offered, and per whole second the good answers and the rest by code."""
        rows = []
        for spike in self.spikes:
            refusals = [a.latency for a in spike.answers if a.code in REFUSALS]
            rows.append({
                "label": spike.label, "start_s": round(spike.start - self.origin, 3),
                "capacity_per_s": round(spike.capacity, 1), "rate_per_s": round(spike.rate, 1),
                "judged_capacity_per_s": round(spike.judged_capacity, 1), "cpu": spike.cpu,
                "views": len(spike.answers), "good": sum(1 for a in spike.answers if spike.good(a)),
                "refusal_p99_ms": round(percentile(refusals, 0.99) * 1000, 1),
                "overloaded_trailer": sum(1 for a in spike.answers if a.overloaded),
                "send_lag_p99_ms": round(spike.lag_p99 * 1000, 1),
                "seconds": [{"t": s.t, "offered": s.offered, "good": s.good, **dict(s.codes.most_common())}
                            for s in per_second(spike)],
                "metrics_unread": list(spike.unread),
            })
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "held": self.held,
            "settings": self.settings,
            "traffic": self.traffic(),
            "shed": self.shed,
            "errors": self.errors(),
            "faults": [{"label": f.label, "kind": f.kind, "target": f.target,
                        "start_s": round(f.start - self.origin, 3),
                        "end_s": None if f.end is None else round(f.end - self.origin, 3),
                        "recovered_after_s": recovered, "note": f.note}
                       for f, recovered in zip(sorted(self.faults, key=lambda f: f.start), self.recovered(),
                                               strict=True)],
            "spikes": self.spike_rows(),
            "invariants": [{"number": v.number, "name": v.name, "promise": v.promise, "held": v.held,
                            "summary": v.summary, "violations": v.count, "examples": v.violations,
                            "measured": v.measured} for v in self.verdicts],
            "processes": [{"name": p.name, "peak_rss_mib": round(p.peak_kib / 1024, 1), "pids": list(p.pids)}
                          for p in sorted(self.peaks, key=lambda p: p.name)],
            "notes": self.notes,
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def text(self) -> str:
        s = self.settings
        lines = [f"pullgate chaos: {s.get('duration')}s at {s.get('rate')} req/s, seed {s.get('seed')}, "
                 f"deadline {s.get('deadline')}s, against {s.get('data_dir')}", ""]
        head = f"  {'request':<30} {'sent':>5} {'ok':>5} {'degr':>5} {'refus':>5} {'fail':>5} " \
               f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        lines += ["traffic", head]
        for row in self.traffic():
            lines.append(f"  {row['op'] + ' ' + row['mode']:<30} {row['sent']:>5} {row['ok']:>5} "
                         f"{row['degraded']:>5} {row['refused']:>5} {row['failed']:>5} {row['p50_ms']:>8.1f} "
                         f"{row['p99_ms']:>8.1f} {row['max_ms']:>8.1f}")
        if self.shed:
            lines.append(f"  ({self.shed} requests shed: too many in flight)")
        errors = self.errors()
        if errors:
            lines += ["", "most frequent errors"]
            lines += [f"  {e['count']:>5}  {e['op']} {e['code']}: {e['detail']}" for e in errors]
        lines += ["", "faults (start .. end, then full answers again after)"]
        for fault, recovered in zip(sorted(self.faults, key=lambda f: f.start), self.recovered(), strict=True):
            end = "never ended" if fault.end is None else f"{fault.end - self.origin:6.2f}s"
            again = "not recovered" if recovered is None else f"+{recovered:.2f}s"
            note = f"  ({fault.note})" if fault.note else ""
            lines.append(f"  {fault.start - self.origin:6.2f}s .. {end:<11} {again:>14}  {fault.label}{note}")
        if not self.faults:
            lines.append("  none")
        for spike in self.spike_rows():
            lines += ["", f"overload {spike['label']} at {spike['start_s']:.2f}s: {spike['rate_per_s']:.0f} strong "
                          f"views/s against a capacity of {spike['capacity_per_s']:.0f}/s; refusals p99 "
                          f"{spike['refusal_p99_ms']:.1f} ms; generator send lag p99 {spike['send_lag_p99_ms']:.1f} ms"]
            if spike["cpu"]:
                lines.append(f"  judged against {spike['judged_capacity_per_s']:.0f}/s, the capacity for the cores "
                             f"the rest left the system: {spike['cpu']}")
            for second in spike["seconds"]:
                rest = {k: v for k, v in second.items() if k not in ("t", "offered", "good")}
                lines.append(f"  second {second['t']:>2}: {second['good']:>5} good of {second['offered']:>5}"
                             + "".join(f", {code} {n}" for code, n in rest.items()))
        lines += ["", "processes (peak RSS, VmHWM)"]
        for peak in sorted(self.peaks, key=lambda p: p.name):
            lines.append(f"  {peak.name:<14} {peak.peak_kib / 1024:7.1f} MiB   pids {', '.join(map(str, peak.pids))}")
        lines += ["", "invariants"]
        for v in self.verdicts:
            lines.append(f"  {v.number} {v.name:<11} {'held' if v.held else 'VIOLATED':<9} {v.summary}")
            for example in v.violations:
                lines.append(f"      - {example}")
            if v.count > len(v.violations):
                lines.append(f"      ... and {v.count - len(v.violations)} more")
        lines += [f"  note: {note}" for note in self.notes]
        broken = [v.name for v in self.verdicts if not v.held]
        lines += ["", "every invariant held" if not broken else f"VIOLATED: {', '.join(broken)}"]
        return "\n".join(lines)


__all__ = ["SCHEMA", "Report"]
