"""The report as text, as JSON, and as a picture."""

from __future__ import annotations

import json
from pathlib import Path

from pullgate.tools.chaos import invariants, timeline
from pullgate.tools.chaos.invariants import Limits, Peak
from pullgate.tools.chaos.record import Call, FaultRun, PartSeen
from pullgate.tools.chaos.report import SCHEMA, Report

T0 = 1_000.0


def report() -> Report:
    calls = [Call("order_view", mode, "1", T0 + i / 10, 0.005 + i / 1000, 1.5, "OK", degraded=i % 7 == 0,
                  parts=(PartSeen("order:1", "LIVE", 0.0, "", None),))
             for i, mode in enumerate(["strong", "bounded", "available"] * 20)]
    calls.append(Call("place_order", "fresh", "k1", T0 + 2, 0.02, 1.5, "UNAVAILABLE", detail="orders: circuit open"))
    faults = [FaultRun("kill customers", "kill", "customers", T0 + 1, T0 + 2.5),
              FaultRun("freeze catalog for 2s", "freeze", "catalog", T0 + 4, None, note="stopped early")]
    verdicts = [invariants.deadlines(calls, Limits(), T0), invariants.strong(calls, T0)]
    verdicts[1].violate("order view 1 (strong): customer:1 is CACHED")
    return Report({"duration": 6, "rate": 10, "seed": 7, "deadline": 1.5, "data_dir": "var"}, calls, faults,
                  verdicts, [Peak("gateway", 98_304, (12,))], T0, shed=2)


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
    assert data["faults"][1]["end_s"] is None
    assert [(i["name"], i["held"], i["violations"]) for i in data["invariants"]] == [("deadline", True, 0),
                                                                                     ("strong", False, 1)]
    assert data["processes"] == [{"name": "gateway", "peak_rss_mib": 96.0, "pids": [12]}]


def test_text_names_each_invariant_and_quotes_its_violations() -> None:
    """The printed report has one line per invariant and ends with the names of the violated ones."""
    text = report().text()
    assert "1 deadline    held" in text and "3 strong      VIOLATED" in text
    assert "- order view 1 (strong): customer:1 is CACHED" in text
    assert "never ended" in text and text.endswith("VIOLATED: strong")


def test_the_timeline_is_a_png(tmp_path: Path) -> None:
    """The picture is written as a non-empty PNG."""
    r = report()
    path = tmp_path / "timeline.png"
    timeline.draw(r.calls, r.faults, T0, path, "test")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 10_000
