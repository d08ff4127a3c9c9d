"""Admission control's decisions, with plain numbers and a fake clock: the limit, the shares, the service time."""

from __future__ import annotations

import random

import pytest

from resilience.admission import Admission, AdmissionConfig, GradientLimit, ServiceTime
from resilience.config import ConfigError
from resilience.criticality import Criticality

ONE = 1
"""The tests of the update rule itself give it one request per window (`window=1`); the window's own tests
below use the default."""


def run(limit: GradientLimit, latency: float, samples: int, in_flight: int | None = None) -> list[float]:
    """Feed `samples` finished requests of `latency`, each found the limit full (or `in_flight`)."""
    return [limit.update(latency, int(limit.limit) if in_flight is None else in_flight) for _ in range(samples)]


def test_the_limit_grows_while_latency_stays_low_up_to_max_limit() -> None:
    """Steady latency with the limit in use: the limit only grows, and stops at max_limit."""
    limit = GradientLimit(AdmissionConfig(window=ONE, initial_limit=20, max_limit=60))
    seen = run(limit, 0.010, 200)
    assert seen == sorted(seen)
    assert seen[10] > 20
    assert seen[-1] == 60


def test_the_limit_shrinks_when_latency_rises_down_to_min_limit() -> None:
    """Latency well past the tolerance of its long-term average: the limit only falls, and stops at min_limit."""
    limit = GradientLimit(AdmissionConfig(window=ONE, initial_limit=40, min_limit=8))
    run(limit, 0.010, 50)
    before = limit.limit
    seen = run(limit, 0.050, 60)
    assert seen == sorted(seen, reverse=True)
    assert seen[0] < before
    assert seen[-1] == 8


def test_a_slow_request_within_the_tolerance_does_not_shrink_the_limit() -> None:
    """A request up to `tolerance` times slower than usual is not taken for queueing."""
    limit = GradientLimit(AdmissionConfig(window=ONE, tolerance=1.5))
    run(limit, 0.010, 50)
    before = limit.limit
    assert limit.update(0.014, int(before)) > before


def test_one_slow_request_costs_at_most_half_of_smoothing() -> None:
    """The gradient is kept at 0.5 or more: one outlier shrinks the limit by at most smoothing / 2."""
    limit = GradientLimit(AdmissionConfig(window=ONE, initial_limit=100, smoothing=0.2))
    run(limit, 0.010, 20)
    before = limit.limit
    assert limit.update(10.0, int(before)) == pytest.approx(before * 0.9 + 0.2 * before**0.5)


def test_the_limit_stays_put_while_the_server_is_lightly_used() -> None:
    """Fewer than half the limit in flight: latency, fast or slow, does not move the limit."""
    limit = GradientLimit(AdmissionConfig(window=ONE, initial_limit=20))
    run(limit, 0.010, 50, in_flight=3)
    run(limit, 0.500, 50, in_flight=3)
    assert limit.limit == 20


def test_the_limit_grows_back_once_the_overload_is_over() -> None:
    """After an overload pulled the limit down, latency back to normal lets it grow again."""
    limit = GradientLimit(AdmissionConfig(window=ONE, initial_limit=40, min_limit=5, max_limit=200))
    run(limit, 0.010, 600)
    run(limit, 0.100, 300)  # long enough for the baseline to drift up
    low = limit.limit
    seen = run(limit, 0.010, 100)
    assert seen[-1] > low + 20


def test_the_limit_moves_once_per_window_on_its_average() -> None:
    """Nine requests of a window of ten leave the limit; the tenth moves it, as one sample of their average."""
    windowed = GradientLimit(AdmissionConfig(initial_limit=20))
    single = GradientLimit(AdmissionConfig(window=ONE, initial_limit=20))
    run(windowed, 0.010, 100)
    run(single, 0.010, 10)  # the same ten samples of the baseline, one per window
    assert windowed.limit == pytest.approx(single.limit)
    before = windowed.limit
    latencies = [0.010] * 9 + [0.110]  # average 20 ms: past the tolerance of a 10 ms baseline
    seen = [windowed.update(latency, 30) for latency in latencies]
    assert seen[:9] == [before] * 9 and seen[9] < before
    assert seen[9] == pytest.approx(single.update(0.020, 30))


def test_the_fast_requests_of_a_busy_window_count() -> None:
    """Latency that varies (a process waiting for a core at random): most requests are fast and found few in
    flight, one in ten waited behind a crowd. One request at a time, only the slow ones pass the "in use" rule
    and the limit falls to min_limit; a window of ten averages them with the fast ones and the limit holds."""
    single = GradientLimit(AdmissionConfig(window=ONE, initial_limit=10, min_limit=5))
    windowed = GradientLimit(AdmissionConfig(initial_limit=10, min_limit=5))
    for limit in (single, windowed):
        for _ in range(100):
            for _ in range(9):
                limit.update(0.004, 2)
            limit.update(0.016, 8)
    assert single.limit == 5
    assert windowed.limit >= 10


def test_sheddable_requests_fill_only_their_share_while_critical_ones_fill_the_limit() -> None:
    """With half the limit in flight, SHEDDABLE is refused and CRITICAL admitted; at the limit, both are refused."""
    admission = Admission(AdmissionConfig(initial_limit=20, sheddable_share=0.5, sheddable_plus_share=0.75))
    assert [admission.room(level) for level in Criticality] == [10, 15, 20, 20]
    for _ in range(10):
        assert admission.try_acquire(Criticality.SHEDDABLE)
    assert not admission.try_acquire(Criticality.SHEDDABLE)
    assert admission.try_acquire(Criticality.SHEDDABLE_PLUS)
    for _ in range(9):
        assert admission.try_acquire(Criticality.CRITICAL)
    assert admission.in_flight == 20
    assert not admission.try_acquire(Criticality.CRITICAL)
    assert not admission.try_acquire(Criticality.CRITICAL_PLUS)
    admission.release(0.01, 20)
    assert admission.in_flight == 19
    assert not admission.try_acquire(Criticality.SHEDDABLE)
    assert admission.try_acquire(Criticality.CRITICAL)


def test_critical_plus_can_have_room_of_its_own() -> None:
    """With critical_share below 1, CRITICAL_PLUS still gets in once CRITICAL's share is full."""
    admission = Admission(AdmissionConfig(initial_limit=10, critical_share=0.8, sheddable_plus_share=0.75,
                                          sheddable_share=0.5))
    for _ in range(8):
        assert admission.try_acquire(Criticality.CRITICAL)
    assert not admission.try_acquire(Criticality.CRITICAL)
    assert admission.try_acquire(Criticality.CRITICAL_PLUS)


def test_every_level_keeps_a_place_at_the_smallest_limit() -> None:
    """At a limit of one, a SHEDDABLE request still gets the one place when it is free."""
    admission = Admission(AdmissionConfig(initial_limit=1, min_limit=1, sheddable_share=0.1, sheddable_plus_share=0.1))
    assert admission.try_acquire(Criticality.SHEDDABLE)
    assert not admission.try_acquire(Criticality.CRITICAL)


def test_the_shares_follow_the_limit_as_it_moves() -> None:
    """As released requests shrink the limit, each level's room shrinks with it."""
    admission = Admission(AdmissionConfig(window=ONE, initial_limit=40, min_limit=6, max_limit=40, sheddable_share=0.5))
    assert admission.room(Criticality.SHEDDABLE) == 20
    for latency in [0.010] * 100 + [0.200] * 60:
        assert admission.try_acquire(Criticality.CRITICAL)
        admission.release(latency, admission.limit)
    assert admission.limit == 6
    assert admission.room(Criticality.SHEDDABLE) == 3
    assert admission.in_flight == 0


def test_the_service_time_tracks_a_low_percentile() -> None:
    """Latencies spread evenly over 10-20 ms: the estimate settles near the 10th percentile (11 ms)."""
    service = ServiceTime(percentile=0.1)
    rng = random.Random(7)
    for i in range(3000):
        service.record(rng.uniform(0.010, 0.020), now=i * 0.001)
    assert 0.0105 <= service.estimate <= 0.0120


def test_the_service_time_says_nothing_before_enough_samples() -> None:
    """Until MIN_SAMPLES requests have finished, nothing is refused for its deadline (unless it is spent)."""
    service = ServiceTime()
    for _ in range(ServiceTime.MIN_SAMPLES - 1):
        service.record(0.100, now=0.0)
    assert not service.too_late(0.001, now=0.0)
    assert service.too_late(0.0, now=0.0)
    service.record(0.100, now=0.0)
    assert service.too_late(0.001, now=0.0)
    assert not service.too_late(0.200, now=0.0)


def test_the_service_time_fades_while_nothing_finishes() -> None:
    """A method that was slow and then refused everything: after a few half-lives it admits again."""
    service = ServiceTime()
    for _ in range(20):
        service.record(0.400, now=100.0)
    assert service.too_late(0.100, now=100.0)
    assert service.too_late(0.100, now=100.0 + ServiceTime.HALF_LIFE)
    assert not service.too_late(0.100, now=100.0 + 3 * ServiceTime.HALF_LIFE)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"min_limit": 0}, "min_limit"),
        ({"min_limit": 50, "max_limit": 40, "initial_limit": 45}, "min_limit"),
        ({"initial_limit": 300}, "initial_limit"),
        ({"smoothing": 0.0}, "smoothing"),
        ({"tolerance": 0.9}, "tolerance"),
        ({"sheddable_share": 0.0}, "sheddable_share"),
        ({"sheddable_share": 0.96}, "sheddable_share"),
        ({"sheddable_plus_share": 0.8, "critical_share": 0.7}, "sheddable_plus_share"),
        ({"service_time_percentile": 0.9}, "service_time_percentile"),
    ],
)
def test_a_bad_config_names_its_key(changes: dict[str, float], key: str) -> None:
    """Each wrong value is refused on construction, naming the key."""
    with pytest.raises(ConfigError) as raised:
        AdmissionConfig(**changes)  # type: ignore[arg-type]
    assert raised.value.key == key


def test_a_config_table_is_checked_with_its_file_and_key_path() -> None:
    """From a TOML table: an unknown key or a wrong type names `admission.<key>` and the file."""
    assert AdmissionConfig.from_mapping({"max_limit": 100}).max_limit == 100
    with pytest.raises(ConfigError) as raised:
        AdmissionConfig.from_mapping({"max_limt": 100}, source="pullgate.toml")
    assert (raised.value.key, raised.value.source) == ("admission.max_limt", "pullgate.toml")
    with pytest.raises(ConfigError) as raised:
        AdmissionConfig.from_mapping({"initial_limit": 0.5}, source="pullgate.toml")
    assert raised.value.key == "admission.initial_limit"
