"""The benchmarks still run end to end (a few calls of each part; their figures are not judged here)."""

from __future__ import annotations

import re
import statistics
import threading
from collections import Counter
from pathlib import Path
from typing import cast

import pytest

from benchmarks import canary, loop_bench, overload_bench, overload_cost, overload_spike, resilience_bench
from benchmarks.canary import Canary
from pullgate.tools.machine import Share, Trace
from pullgate.tools.openloop import Shot


async def test_the_resilience_benchmark_measures_every_row() -> None:
    """Each part runs against real owner processes and prints a row with latencies and its note."""
    rows = await resilience_bench.overhead(20)
    rows += await resilience_bench.tail(24)
    rows += await resilience_bench.open_loop(24)
    rows += await resilience_bench.fail_fast(20)
    names = [row.name for row in rows]
    assert names == [
        "raw grpc.aio stub",
        "full stack, cache miss",
        "full stack, cache hit",
        "stack w/o cache",
        "stack w/o cache+hedging",
        "raw grpc.aio stub, mTLS",
        "full stack, cache miss, mTLS",
        "2% x 500 ms, hedging off",
        "2% x 500 ms, hedging on",
        "3 x 2% x 500 ms, open, 1 hedge",
        "3 x 2% x 500 ms, open, 2 hedges",
        "owner killed, breaker open",
    ]
    assert all(len(row.latencies) > 0 and all(t > 0 for t in row.latencies) for row in rows)
    assert "target <= 1.10x" in rows[1].note
    assert "extra requests" in rows[8].note
    # Over mutual TLS, one handshake per channel, however many calls: two channels, none after the warm-up.
    assert "x the plaintext miss (target <= 1.10x)" in rows[6].note
    assert re.search(r"handshakes: 2 for \d+ calls over 2 channels \(0 after the warm-up\)", rows[5].note), rows[5].note
    table = resilience_bench.table(rows)
    assert all(name in table for name in names)


@pytest.mark.e2e
async def test_the_overload_benchmark_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A quick run starts a real system, runs the four scenarios and writes their tables, targets and pictures."""
    targets = await overload_bench.run(quick=True, out=tmp_path)
    out = capsys.readouterr().out
    for heading in ("== 1. spike", "== 2. gray failure", "== 3. tail", "== 4. cost", "== targets"):
        assert heading in out
    assert "x closed gateway owners  edge" in out
    assert "open 3x" in out
    assert "offered  good RESEXH CANCEL UNAVAIL DEADLN" in out
    assert "send lag p50" in out
    assert [t.scenario for t in targets] == ["spike"] * 4 + ["gray"] * 3 + ["tail"] * 2
    assert all(t.line() in out for t in targets)
    assert (tmp_path / "overload-timeline.png").stat().st_size > 0
    assert (tmp_path / "overload-freeze.png").stat().st_size > 0
    assert (tmp_path / "overload-tail.png").stat().st_size > 0


@pytest.mark.e2e
async def test_the_loop_benchmark_runs_both_loops_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    """A quick run starts a system on each loop, counts views and CPU for both, and prints the ratio."""
    tallies = await loop_bench.run(quick=True)
    out = capsys.readouterr().out
    assert set(tallies) == {"asyncio", "uvloop"}
    assert all(t.views > 0 and t.cpu > 0 and len(t.ok) == 2 for t in tallies.values())
    assert "uvloop/asyncio: throughput" in out


def test_the_cost_table_divides_each_parts_cpu_by_the_views_served() -> None:
    """Per view, by part (the launcher and owners together), each load against the closed loop's cost, and the
    context switches per view, averaged over the rounds."""
    closed = overload_cost.Row("closed 12", ok=[300.0], other=[0.0], p50=[0.03], rest=[0.2],
                               per_view={"system": [0.005], "gateway": [0.002], "owners": [0.0028], "edge": [0.0002]},
                               switches={"gateway": [(20.0, 12.0), (22.0, 12.0)], "owners": [(48.0, 20.0)]})
    spike = overload_cost.Row("open 3x", ok=[240.0], other=[780.0], p50=[0.1], rest=[0.55],
                              per_view={"system": [0.006], "gateway": [0.0022], "owners": [0.0031], "edge": [0.0007]},
                              switches={"gateway": [(22.0, 15.0)], "owners": [(47.0, 21.0)]})
    lines = overload_cost.table([closed, spike]).splitlines()
    assert lines[1].split() == ["closed", "12", "300", "0", "30.0", "0.20", "5.00", "1.00", "2.00", "2.80", "0.20",
                                "21.0/12.0", "48.0/20.0"]
    assert lines[2].split() == ["open", "3x", "240", "780", "100.0", "0.55", "6.00", "1.20", "2.20", "3.10", "0.70",
                                "22.0/15.0", "47.0/21.0"]
    assert [overload_cost.part(n) for n in ("gateway", "edge", "catalog", "launcher")] == [
        "gateway", "edge", "owners", "owners"]


class _Trace:
    """A trace that knows the system's cores in the spike's seconds 0 and 1 only (a stand-in for machine.Trace)."""

    def between(self, start: float, end: float) -> Share | None:
        return {100.0: Share(1.0, 1.9, 1.4), 101.0: Share(1.0, 1.95, 1.2)}.get(start)


class _Canary:
    """A canary whose work took 1 ms in the spike's second 0 and 1.25 ms in second 1 (a stand-in for Canary)."""

    def cost(self, start: float, end: float) -> float | None:
        return {100.0: 0.001, 101.0: 0.00125}.get(start)


def test_the_spike_table_gives_each_seconds_cost_and_what_the_edge_enforced() -> None:
    """Each second's row ends with the views lost to an owner's refusal, the cores the system used, those the
    machine left idle, the system's CPU per good view, the fewest places the edge gave reads, the most requests it
    had in flight, and how fast the machine ran against while capacity was measured; a second the trace, the
    edge's samples or the canary did not cover, or with no good view, says so with a dash."""
    shots = [Shot("spike", 0, 0.001 * k, 0.0, 0.05, "OK") for k in range(200)]
    shots += [Shot("spike", 0, 1.0 + 0.001 * k, 0.0, 0.05, "OK" if k < 150 else "RESOURCE_EXHAUSTED", True)
              for k in range(600)]
    shots += [Shot("spike", 0, 1.9, 0.0, 0.05, "RESOURCE_EXHAUSTED", relayed=True)]
    shots += [Shot("spike", 0, 2.5, 0.0, 0.002, "RESOURCE_EXHAUSTED", True)]
    edge = [overload_spike.EdgeSample(100.1, 26, 20), overload_spike.EdgeSample(100.6, 15, 24),
            overload_spike.EdgeSample(101.2, 17, 9)]
    seconds = overload_spike.with_cores(overload_spike.per_second(shots, 1.0), cast(Trace, _Trace()), 100.0, 2)
    seconds = overload_spike.with_edge(seconds, edge, 100.0)
    seconds = overload_spike.with_speed(seconds, cast(Canary, _Canary()), 100.0, 0.001)
    rows = [line.split() for line in overload_spike.table(seconds).splitlines()]
    assert rows[0][-8:] == ["lost", "cores", "idle", "CPU/OK", "room", "infl", "speed", "(ms)"]
    assert (rows[1][3], rows[1][-7:]) == ("200", ["0", "1.40", "0.10", "7.0", "15", "24", "1.00"])
    assert (rows[2][3], rows[2][4], rows[2][-7:]) == ("150", "451", ["1", "1.20", "0.05", "8.0", "17", "9", "0.80"])
    assert (rows[3][3], rows[3][-7:]) == ("0", ["0", "-", "-", "-", "-", "-", "-"])
    assert overload_spike.with_speed(seconds, cast(Canary, _Canary()), 100.0, None) == seconds


def test_the_canary_times_its_work_in_its_own_threads_cpu() -> None:
    """The canary's work, run while the main thread only waits, costs CPU time that is read back by window."""
    with canary.running(every=0.01) as timer:
        while len(timer.timings) < 5:
            threading.Event().wait(0.01)  # polls the condition above; the canary has no hook to await
    assert all(t.cpu > 0 for t in timer.timings)
    first, last = timer.timings[0].at, timer.timings[-1].at
    assert timer.cost(first, last + 1) == statistics.median(t.cpu for t in timer.timings)
    assert timer.cost(last + 1, last + 2) is None


def test_a_value_at_a_rank_interpolates_between_neighbours() -> None:
    assert overload_spike.at_rank([30.0, 10.0, 20.0], 0.0) == 10.0
    assert overload_spike.at_rank([30.0, 10.0, 20.0], 0.25) == 15.0
    assert overload_spike.at_rank([30.0, 10.0, 20.0], 1.0) == 30.0
    assert overload_spike.at_rank([7.0], 0.4) == 7.0


def _spike(goods: list[int]) -> list[overload_spike.Second]:
    """A spike's seconds with these good views, the first (never judged) with none."""
    return [overload_spike.Second(t, "spike", 1000, Counter(good=good), [], [], [], 0)
            for t, good in enumerate([0, *goods])]


def test_each_spike_second_is_judged_against_the_closed_loops_second_at_its_rank() -> None:
    """The spike's seconds, lowest first, each against the closed loops' at the same rank: a spike as uneven as a
    closed loop on the same machine passes where its lowest second is under 80% of their mean; one lower than
    theirs at any rank by more than a fifth misses, and the figure says at which and by how much."""
    reference = [300.0, 300.0, 400.0, 400.0, 400.0, 400.0, 500.0, 500.0]  # mean 400; lowest 75% of it
    pairs = overload_spike.by_rank(_spike([400, 250, 420, 410])[1:], reference)
    assert [(s.good, against) for s, against in pairs] == [(250, 300.0), (400, 400.0), (410, 400.0), (420, 500.0)]
    uneven = overload_spike.targets(_spike([260, 330, 400, 410, 390, 420, 480, 450]), 450.0, reference, {}, [])[0]
    assert uneven.passed is True
    assert "lowest 260/s = 87% of the closed loops' 300/s at its rank" in uneven.figure
    assert "65% of their mean 400/s, whose own lowest was 75% of it" in uneven.figure
    assert "0 of 8 seconds below 80% of theirs" in uneven.figure
    # Every second well above the closed loops' lowest, but the middle and the top a fifth and more below theirs.
    sagging = overload_spike.targets(_spike([260, 300, 310, 310, 320, 330, 340, 350]), 450.0, reference, {}, [])[0]
    assert sagging.passed is False
    assert "4 of 8 seconds below 80% of theirs" in sagging.figure


def test_closed_loops_that_served_nothing_leave_the_spike_unjudged() -> None:
    """Zero against zero is no pass: with no capacity measured the target says it could not be judged."""
    goodput = overload_spike.targets(_spike([0, 0, 0]), 0.0, [0.0, 0.0], {}, [])[0]
    assert goodput.passed is None
    assert "n/a of the closed loops' 0/s at its rank" in goodput.figure
