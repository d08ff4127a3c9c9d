"""Fault schedules: explicit ones parse as written, random ones repeat exactly for a seed."""

from __future__ import annotations

import itertools

import pytest

from pullgate import topology
from pullgate.tools.chaos.schedule import KINDS, Fault, ScheduleError, parse_schedule, random_schedule

NOT_A_DURATION = "is not a duration: use a number with a unit, like 500ms, 2s or 1.5m"
TARGETS = sorted([*topology.names(), "customers-1"])


def test_a_seed_gives_the_same_schedule_every_time() -> None:
    """The same seed and arguments draw the same faults, in the same order."""
    assert random_schedule(7, 5, 50, TARGETS) == random_schedule(7, 5, 50, list(reversed(TARGETS)))


def test_another_seed_gives_another_schedule() -> None:
    """Different seeds draw different schedules."""
    assert random_schedule(7, 5, 50, TARGETS) != random_schedule(8, 5, 50, TARGETS)


@pytest.mark.parametrize("seed", range(20))
def test_random_faults_stay_in_the_window_one_at_a_time(seed: int) -> None:
    """Faults start after `start`, end before `end`, never overlap, and hit only the given targets and kinds."""
    faults = random_schedule(seed, 3, 40, TARGETS, kinds=("kill", "freeze", "slow"))
    assert faults
    ends = 3.0
    for fault in faults:
        assert fault.at >= ends and fault.target in TARGETS and fault.kind in ("kill", "freeze", "slow")
        ends = fault.at + (2.0 if fault.kind == "kill" else fault.duration)
    assert ends <= 40


def test_no_room_means_no_faults() -> None:
    """A window too short for one fault gives an empty schedule."""
    assert random_schedule(1, 5, 6, TARGETS) == []


def test_times_and_durations_take_any_unit() -> None:
    """AT, for DURATION and a delay are durations of the one grammar: ms, s, m and h."""
    faults = parse_schedule("1.5m slow inventory 0.5s@50% for 1m; 500ms freeze catalog for 2500ms")
    assert [(f.at, f.kind, f.duration) for f in faults] == [(0.5, "freeze", 2.5), (90.0, "slow", 60.0)]
    assert faults[1].server_spec("inventory") == "inventory=delay:0.5s@50%"


def test_every_action_of_an_explicit_schedule_parses() -> None:
    """Each action becomes a fault with its target, duration and the spec its server is sent."""
    faults = parse_schedule(
        "8s slow inventory 300ms@50% for 3s; 2s kill customers-1; 5s freeze catalog for 2s;"
        "12s fail catalog UNAVAILABLE@50% for 3s; 16s hang customers 20% for 2s;"
        "20s inject inventory.ReserveStock delay:200ms for 4s"
    )
    assert [(f.at, f.kind, f.target) for f in faults] == [
        (2, "kill", "customers-1"), (5, "freeze", "catalog"), (8, "slow", "inventory"), (12, "fail", "catalog"),
        (16, "hang", "customers"), (20, "slow", "inventory"),
    ]
    assert faults[2].server_spec("inventory") == "inventory=delay:300ms@50%"
    assert faults[3].server_spec("catalog") == "catalog=error:UNAVAILABLE@50%"
    assert faults[4].server_spec("customers") == "customers=hang@20%"
    assert faults[5].server_spec("inventory") == "inventory.ReserveStock=delay:200ms"
    assert [f.duration for f in faults] == [0, 2, 3, 3, 2, 4]
    assert {f.kind for f in faults} <= set(KINDS)


@pytest.mark.parametrize(("text", "words"), [
    ("2s explode customers", "unknown action 'explode'"),
    ("2s freeze catalog", "freeze needs a duration"),
    ("2s kill catalog for 3s", "kill takes no duration"),
    ("2 kill catalog", f"'2' {NOT_A_DURATION}"),
    ("2s freeze catalog for 2", f"'2' {NOT_A_DURATION}"),
    ("2s slow catalog 300 for 2s", f"'300' {NOT_A_DURATION}"),
    ("2s slow catalog 0.5ms for 2s", "duration '0.5ms' is finer than 1ms"),
    ("2s fail catalog UNAVAILBLE for 2s", "not a gRPC status code"),
    ("1s kill orders; 2s slow catalog", "step 2 '2s slow catalog'"),
    ("2s overload catalog 3x for 5s", f"overload sends order views to the entry service: '2s overload "
                                       f"{topology.ENTRY} 3x for 5s', not 'catalog'"),
    (f"2s overload {topology.ENTRY} for 5s", "overload takes a multiple of capacity, e.g."),
    (f"2s overload {topology.ENTRY} 3 for 5s", "'3' is not a multiple of capacity: use e.g. 3x"),
    (f"2s overload {topology.ENTRY} 11x for 5s", "at most 10x"),
    (f"2s overload {topology.ENTRY} 3x for 1500ms", "overload needs a duration of at least 2s"),
    (f"1s kill orders; 2s overload {topology.ENTRY} 3x", "step 2 '2s overload gateway 3x': overload needs a duration"),
    ("2s gray catalog", "gray needs a duration, e.g. 'for 6s'"),
    ("2s gray catalog 50% for 6s", "gray takes only a service or one of its replicas"),
])
def test_a_bad_step_is_named_with_what_is_wrong(text: str, words: str) -> None:
    """A bad schedule is refused with an error naming the step and the problem."""
    with pytest.raises(ScheduleError, match="bad schedule") as error:
        parse_schedule(text)
    assert words in str(error.value)


def test_overload_and_gray_parse() -> None:
    """An overload names the entry service and a multiple of capacity; a gray fault a service and a duration."""
    faults = parse_schedule(f"5s overload {topology.ENTRY} 2.5x for 5s; 4s gray catalog for 6s")
    assert faults == [Fault(4, "gray", "catalog", 6), Fault(5, "overload", topology.ENTRY, 5, multiple=2.5)]
    assert [f.label for f in faults] == ["gray catalog for 6s", f"overload {topology.ENTRY} 2.5x for 5s"]
    assert not any(f.injected for f in faults)


def test_a_random_schedule_draws_gray_only_on_replicas_and_overload_only_on_the_entry() -> None:
    """Gray faults hit only the replicas given, overloads only the entry; with no replicas, no gray is drawn."""
    drawn = [f for seed in range(10) for f in random_schedule(seed, 3, 120, TARGETS, kinds=("gray", "overload"),
                                                            replicas=["customers", "customers-1"])]
    assert {f.kind for f in drawn} == {"gray", "overload"}
    assert {f.target for f in drawn if f.kind == "gray"} <= {"customers", "customers-1"}
    assert {(f.target, f.multiple) for f in drawn if f.kind == "overload"} == {(topology.ENTRY, 3.0)}
    assert all(f.duration > 2 for f in drawn)
    assert random_schedule(1, 3, 120, TARGETS, kinds=("gray",)) == []
    no_entry = [t for t in TARGETS if t != topology.ENTRY]
    assert random_schedule(1, 3, 120, no_entry, kinds=("overload",)) == []


def test_a_random_gray_or_overload_starts_clear_of_the_fault_before() -> None:
    """A gray fault or an overload starts at least `clear` seconds after the previous fault ended."""
    for seed in range(10):
        faults = random_schedule(seed, 3, 200, TARGETS, kinds=("kill", "freeze", "gray", "overload"),
                                 replicas=["customers-1"], clear=9.0)
        for before, fault in itertools.pairwise(faults):
            if fault.kind in ("gray", "overload"):
                assert fault.at >= before.at + (2.0 if before.kind == "kill" else before.duration) + 9.0 - 1e-6
