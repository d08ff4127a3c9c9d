"""The report as text, as JSON, and as a picture."""

from __future__ import annotations

import json
from pathlib import Path

from pullgate.tools.chaos import invariants, timeline
from pullgate.tools.chaos.invariants import Limits, Peak
from pullgate.tools.chaos.record import Call, FaultRun, PartSeen
from pullgate.tools.chaos.report import SCHEMA, Report
from pullgate.tools.chaos.spike import Answer, Spike

T0 = 1_000.0


def report() -> Report:
    calls = [Call("order_view", mode, "1", T0 + i / 10, 0.005 + i / 1000, 1.5, "OK", degraded=i % 7 == 0,
                  parts=(PartSeen("order:1", "LIVE", 0.0, "", None),))
             for i, mode in enumerate(["strong", "bounded", "available"] * 20)]
    calls.append(Call("place_order", "fresh", "k1", T0 + 2, 0.02, 1.5, "UNAVAILABLE", detail="orders: circuit open"))
    faults = [FaultRun("kill customers", "kill", "customers", T0 + 1, T0 + 2.5),
              FaultRun("freeze catalog for 2s", "freeze", "catalog", T0 + 4, None, note="stopped early"),
              FaultRun("gray catalog-1 for 2s", "gray", "catalog-1", T0 + 4.5, T0 + 6.5, service="catalog"),
              FaultRun("overload gateway 3x for 2s", "overload", "gateway", T0 + 5, T0 + 7, service="gateway")]
    answers = [Answer(i / 30, 0.01, "OK") for i in range(40)] + [Answer(1 + i / 30, 0.001, "CANCELLED")
                                                                 for i in range(20)]
    spike = Spike("overload gateway 3x for 2s", T0 + 5, 2.0, 30.0, 10.0, 1.0, answers, lag_p99=0.002,
                  fair_capacity=8.0, cpu="the spike left the system 1.60 cores")
    verdicts = [invariants.deadlines(calls, Limits(), T0), invariants.strong(calls, T0)]
    verdicts[1].violate("order view 1 (strong): customer:1 is CACHED")
    return Report({"duration": 6, "rate": 10, "seed": 7, "deadline": 1.5, "data_dir": "var"}, calls, faults,
                  verdicts, [Peak("gateway", 98_304, (12,))], T0, shed=2, spikes=[spike])


def test_json_holds_every_section_with_times_since_the_start() -> None:
    """The JSON has the schema, traffic, errors, faults (seconds since the start), invariants and processes."""
    data = json.loads(json.dumps(report().to_json()))
    assert data["schema"] == SCHEMA and data["held"] is False and data["shed"] == 2
    assert {row["mode"] for row in data["traffic"]} == {"strong", "bounded", "available", "fresh"}
    assert sum(row["sent"] for row in data["traffic"]) == 61
    assert data["errors"] == [{"op": "place_order", "code": "UNAVAILABLE", "detail": "orders: circuit open",
                               "count": 1}]
    assert data["faults"][0] == {"label": "kill customers", "kind": "kill", "target": "customers", "start_s": 1.0,
                                 "end_s": 2.5, "recovered_after_s": 1.04, "note": ""}
    assert data["faults"][1]["end_s"] is None and [f["kind"] for f in data["faults"][2:]] == ["gray", "overload"]
    assert data["spikes"] == [{
        "label": "overload gateway 3x for 2s", "start_s": 5.0, "capacity_per_s": 10.0, "rate_per_s": 30.0,
        "judged_capacity_per_s": 8.0, "cpu": "the spike left the system 1.60 cores", "views": 60, "good": 40,
        "refusal_p99_ms": 1.0, "overloaded_trailer": 0, "send_lag_p99_ms": 2.0,
        "seconds": [{"t": 0, "offered": 30, "good": 30}, {"t": 1, "offered": 30, "good": 10, "CANCELLED": 20}],
        "metrics_unread": []}]
    assert [(i["name"], i["held"], i["violations"]) for i in data["invariants"]] == [("deadline", True, 0),
                                                                                     ("strong", False, 1)]
    assert data["processes"] == [{"name": "gateway", "peak_rss_mib": 96.0, "pids": [12]}]


def test_text_names_each_invariant_and_quotes_its_violations() -> None:
    """The printed report has one line per invariant and ends with the names of the violated ones."""
    text = report().text()
    assert "1 deadline    held" in text and "3 strong      VIOLATED" in text
    assert "- order view 1 (strong): customer:1 is CACHED" in text
    assert "never ended" in text and text.endswith("VIOLATED: strong")
    assert "overload overload gateway 3x for 2s at 5.00s: 30 strong views/s against a capacity of 10/s" in text
    assert "judged against 8/s, the capacity for the cores the rest left the system: the spike left" in text
    assert "second  1:    10 good of    30, CANCELLED 20" in text


def test_the_timeline_is_a_png(tmp_path: Path) -> None:
    """The picture, every kind of fault shaded and the verdicts beneath, is written as a non-empty PNG."""
    r = report()
    path = tmp_path / "timeline.png"
    timeline.draw(r.calls, r.faults, T0, path, "test", r.verdicts)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 10_000
