"""Choosing the schedule for a system, and refusing what it cannot do."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullgate import topology
from pullgate.tools.chaos.actions import InjectionUnavailable
from pullgate.tools.chaos.runner import Settings, plan
from pullgate.tools.chaos.schedule import ScheduleError
from pullgate.tools.chaos.system import Proc, State, SystemUnusable, parse_state
from pullgate.tools.cli import main

STATE = State(1, Path("var"), (Proc("customers", "customers", "127.0.0.1:1", 10, 0),
                               Proc("customers-1", "customers", "127.0.0.1:2", 11, 0),
                               Proc(topology.ENTRY, topology.ENTRY, "127.0.0.1:3", 12, 0)))


def test_explicit_faults_that_need_the_admin_service_are_refused_without_it() -> None:
    """A slow fault against a system without --allow-fault-injection is refused with what to do instead."""
    settings = Settings(Path("var"), schedule="2s kill customers; 4s slow customers-1 300ms for 2s")
    with pytest.raises(InjectionUnavailable, match="--allow-fault-injection"):
        plan(settings, STATE, injectable=False)
    faults, notes = plan(settings, STATE, injectable=True)
    assert [f.target for f in faults] == ["customers", "customers-1"] and not notes


def test_a_random_schedule_keeps_to_signals_without_the_admin_service_and_says_so() -> None:
    """Without FaultService a random schedule uses only kill, freeze and gray, and the report notes why."""
    faults, notes = plan(Settings(Path("var"), duration=120, seed=3), STATE, injectable=False)
    assert faults and {f.kind for f in faults} <= {"kill", "freeze", "gray"}
    assert "leaves out slow, fail and hang" in notes[0]


def test_a_gray_fault_freezes_one_replica_of_several() -> None:
    """A service name means its last replica; a replica name means that one."""
    faults, _ = plan(Settings(Path("var"), schedule="1s gray customers for 3s; 6s gray customers for 2s"), STATE,
                     injectable=False)
    assert [f.target for f in faults] == ["customers-1", "customers-1"]
    faults, _ = plan(Settings(Path("var"), schedule="1s gray customers-1 for 3s"), STATE, injectable=False)
    assert faults[0].target == "customers-1"


def test_a_gray_fault_on_a_service_with_one_process_is_refused() -> None:
    """Gray on a service that runs one process is refused, naming the step and how to get replicas."""
    with pytest.raises(ScheduleError, match=rf"'1s gray {topology.ENTRY} for 3s': {topology.ENTRY} runs one "
                                            rf"process \({topology.ENTRY}\).*--replicas 2"):
        plan(Settings(Path("var"), schedule=f"1s gray {topology.ENTRY} for 3s"), STATE, injectable=True)


def test_two_gray_faults_on_one_service_at_once_are_refused() -> None:
    """Freezing both replicas is no longer gray: overlapping gray faults on one service are refused."""
    with pytest.raises(ScheduleError, match="overlaps '1s gray customers-1 for 3s'"):
        plan(Settings(Path("var"), schedule="1s gray customers for 3s; 2s gray customers for 3s"), STATE,
             injectable=True)


def test_a_random_gray_fault_needs_replicas_and_says_so() -> None:
    """A random schedule draws gray faults among replicated services' processes, and notes when there are none."""
    faults, notes = plan(Settings(Path("var"), duration=200, seed=5, kinds=("gray",)), STATE, injectable=True)
    assert faults and {f.target for f in faults} <= {"customers", "customers-1"} and not notes
    alone = State(1, Path("var"), (STATE.procs[0], STATE.procs[2]))
    faults, notes = plan(Settings(Path("var"), duration=200, seed=5, kinds=("gray",)), alone, injectable=True)
    assert not faults and "--replicas 2" in notes[0]


def test_an_unknown_target_is_named() -> None:
    """A schedule naming a process the system does not run is refused, listing the ones it does."""
    with pytest.raises(SystemUnusable, match="customers, customers-1, gateway"):
        plan(Settings(Path("var"), schedule="1s kill custmers"), STATE, injectable=True)


def test_the_state_file_is_read_with_replicas() -> None:
    """pullgate-up.json becomes one Proc per process, replicas included."""
    state = parse_state({"launcher_pid": 5, "data_dir": "/tmp/x", "services": {
        "customers": [{"name": "customers", "address": "127.0.0.1:1", "pid": 6, "restarts": 0},
                      {"name": "customers-1", "address": "127.0.0.1:2", "pid": 7, "restarts": 2}]}})
    assert state.proc("customers-1") == Proc("customers-1", "customers", "127.0.0.1:2", 7, 2)
    assert state.addresses("customers") == ["127.0.0.1:1", "127.0.0.1:2"]


def test_without_a_running_system_the_command_says_how_to_start_one(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`pullgate chaos` with no pullgate-up.json exits 2 and names both ways to get a system."""
    assert main(["chaos", "--data-dir", str(tmp_path), "--duration", "5"]) == 2
    err = capsys.readouterr().err
    assert "pullgate up --allow-fault-injection" in err and "--start" in err


def test_a_bad_flag_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A zero rate is a usage error naming the flag."""
    assert main(["chaos", "--data-dir", str(tmp_path), "--rate", "0"]) == 2
    assert "--rate" in capsys.readouterr().err
