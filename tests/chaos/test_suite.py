"""The chaos suite: one real `pullgate up`, owners killed, frozen, slowed and overloaded under load, every invariant
held.

One system serves the whole module (starting one costs seconds); each test runs its own schedule against it
and asserts that all nine invariants held, printing the whole report when one did not.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from pullgate import topology
from pullgate.tools import machine
from pullgate.tools.chaos.load import DEFAULT_MIX
from pullgate.tools.chaos.report import Report
from pullgate.tools.chaos.runner import Settings, chaos
from pullgate.tools.chaos.spike import REFUSALS
from pullgate.tools.chaos.system import read_state, start
from pullgate.tools.launcher import STATE_FILE

pytestmark = pytest.mark.e2e

RATE = 12.0  # requests per second: enough to see every fault, modest for two cores shared with five servers


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("chaos-system")
    started = start(data_dir)
    try:
        yield data_dir
    finally:
        started.stop()


async def run(system: Path, out: Path, schedule: str, duration: float,
              mix: Mapping[str, float] | None = None) -> Report:
    settings = Settings(data_dir=system, duration=duration, rate=RATE, seed=11, schedule=schedule, out=out,
                        picture=False, settle=20.0, mix=mix or DEFAULT_MIX)
    report = await chaos(settings, io.StringIO())
    assert [v.name for v in report.verdicts] == ["deadline", "provenance", "strong", "placement", "heal",
                                                 "processes", "goodput", "breakers", "gray"]
    assert report.held, report.text()
    assert all(f.end is not None for f in report.faults), report.text()
    return report


async def test_each_owner_killed_in_turn(system: Path, tmp_path: Path) -> None:
    """SIGKILL customers, catalog and inventory one after another under load; the launcher restarts each."""
    report = await run(system, tmp_path, "1s kill customers; 3.5s kill catalog; 6s kill inventory", 7)
    assert report.verdicts[5].measured["restarts"] == 3
    assert report.verdicts[1].measured["parts_checked"]


async def test_a_frozen_owner(system: Path, tmp_path: Path) -> None:
    """SIGSTOP catalog for two seconds, then SIGCONT: callers see a hang bounded by their deadlines."""
    report = await run(system, tmp_path, "1s freeze catalog for 2s", 4)
    assert any(p.source != "LIVE" for c in report.calls if c.ok for p in c.parts if p.name.startswith("product:"))


async def test_a_slow_owner(system: Path, tmp_path: Path) -> None:
    """Every inventory call delayed by 400 ms for three seconds through its FaultService."""
    report = await run(system, tmp_path, "1s slow inventory 400ms for 3s", 5)
    assert report.faults[0].label == "slow inventory delay:400ms for 3s"


async def test_orders_killed_in_the_middle_of_placements(system: Path, tmp_path: Path) -> None:
    """With reservations slowed so placements are in flight, SIGKILL orders; recovery settles every order."""
    # A 1 s reservation (inside the 1.5 s deadline) keeps every placement of the second before the kill in
    # flight, and the seed's arrivals put several there; 300 ms left it to chance whether one was mid-way.
    report = await run(system, tmp_path, "0.5s inject inventory.ReserveStock delay:1s for 4s; 2s kill orders", 4,
                       mix={"place-fresh": 6, "place-replay": 2, "view-bounded": 2})
    kill = next(f for f in report.faults if f.kind == "kill")
    cut = [c for c in report.calls if c.op == "place_order" and c.sent < kill.start < c.received]
    assert cut, "no placement was in flight when orders was killed"


async def test_an_overload_from_a_second_process(system: Path, tmp_path: Path) -> None:
    """Strong views at 3x the measured capacity for 3 s from the load workers: goodput held, refusals were fast,
    and no breaker opened."""
    report = await run(system, tmp_path, f"1s overload {topology.ENTRY} 3x for 3s", 4)
    goodput, breakers = report.verdicts[6], report.verdicts[7]
    assert goodput.measured["seconds_judged"] == 2 and breakers.measured["spikes_judged"] == 1, report.text()
    assert any(a.code in REFUSALS for a in report.spikes[0].answers), "3x capacity was not refused in part"
    # Judged against the capacity for the cores the generator left the system: measured here, where there is /proc.
    spike = report.spikes[0]
    if machine.machine_busy() is not None:
        assert spike.fair_capacity is not None and 0 < spike.fair_capacity <= spike.capacity, report.text()
        assert "the spike after its first second" in spike.cpu


def test_the_systems_processes_are_known_by_pid(system: Path) -> None:
    """What the CPU split counts as the system: the launcher, every server and the edge the state file records."""
    state = read_state(system)
    pids = set(machine.system_pids(system))
    assert {state.launcher_pid, *(p.pid for p in state.procs)} <= pids
    recorded = json.loads((system / STATE_FILE).read_text())
    if recorded.get("edge"):
        assert int(recorded["edge"]["pid"]) in pids
