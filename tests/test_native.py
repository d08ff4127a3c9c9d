"""The native load worker's job and answer lines (pullgate/tools/native.py), and what it says where it cannot be
built; tests/e2e/test_native_load.py runs it against a real system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.tools import native
from pullgate.tools.openloop import ORDER_IDS, Gateway, Job, Phase, Shot


def test_a_job_becomes_counted_phases_targets_and_one_body_per_order() -> None:
    job = Job((Gateway("127.0.0.1:4000", "/pki", "tok"), Gateway("[::1]:4001")), "strong", 1.0, 0.0,
              (Phase("before", 2.0, 10.5), Phase("spike", 0.5, 3.0)), worker=1, workers=2)
    lines = native.job_lines(job)
    assert lines[0].split() == ["job", "1", "2", "0", "0.0", "1.0", "0.05"]
    assert lines[1] == "path /pullgate.gateway.v1.GatewayService/GetOrderView"
    assert lines[2].split() == ["target", "127.0.0.1", "4000", "gateway", "/pki/ca.pem", "/pki/operator.pem",
                                "/pki/operator.key", "tok"]
    assert lines[3].split() == ["target", "::1", "4001", "gateway", "-", "-", "-", "-"]
    # Python's own rounding (21 slots, then round(1.5) = 2), each phase starting where the last ended.
    assert lines[4:6] == ["phase 21 10.5 0.0", "phase 2 3.0 2.0"]
    bodies = [line.removeprefix("body ") for line in lines[6:-1]]
    assert [pb.GetOrderViewRequest.FromString(bytes.fromhex(b)).order_id for b in bodies] == list(ORDER_IDS)
    assert pb.GetOrderViewRequest.FromString(bytes.fromhex(bodies[0])).read.consistency == pb.CONSISTENCY_STRONG
    assert lines[-1] == "end"


def test_an_answer_line_becomes_a_shot_named_by_its_phase() -> None:
    job = Job((), "strong", 1.0, 0.0, (Phase("before", 1.0, 1.0), Phase("spike", 1.0, 1.0)))
    assert native.shot("s 1 0 1.5 0.001 0.002 RESOURCE_EXHAUSTED 1 0 1 0", job) == Shot(
        "spike", 0, 1.5, 0.001, 0.002, "RESOURCE_EXHAUSTED", overloaded=True, at_edge=True)
    assert native.shot("s -1 2 0.1 0.0 0.02 OK 0 1 0 0", job).phase == "closed"
    with pytest.raises(ValueError, match="unknown code"):
        native.shot("s 0 0 0.1 0.0 0.02 NOPE 0 0 0 0", job)


def test_without_a_compiler_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing built yet
    monkeypatch.setenv("CC", "no-such-compiler")
    with pytest.raises(native.NativeUnavailable, match=r"apt-get install .*libnghttp2-dev"):
        native.build()
    assert os.listdir(tmp_path) == []


def test_a_cache_it_cannot_write_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    with pytest.raises(native.NativeUnavailable, match="a-file"):
        native.build()
