"""Outlier detection: ejection after quiet failures in a row, growing and forgiven, never more than half."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilience import OutlierDetectionConfig
from resilience.instruments import _ejected
from resilience.outlier import LOST_RACE, TIMED_OUT, OutlierDetector
from resilience.testing import FakeClock

CONFIG = OutlierDetectionConfig(consecutive_failures=5, base_ejection_time=30.0, max_ejection_time=300.0)


SPACING = 0.2
"""Seconds between the failures `fail` reports: five of them span 0.8 s, more than min_silence (0.2 s)."""


def fail(detector: OutlierDetector, replica: str, times: int = 5, why: str = LOST_RACE) -> None:
    """`times` quiet failures of `replica`, SPACING apart on the detector's fake clock."""
    clock = detector._clock
    assert isinstance(clock, FakeClock)
    for k in range(times):
        if k:
            clock._now += SPACING
        detector.failed(replica, why)


def test_five_quiet_failures_in_a_row_eject_and_an_answer_between_resets() -> None:
    """Four failures, an answer, four more: still in; a fifth in a row ejects."""
    clock = FakeClock()
    detector = OutlierDetector("catalog", ["a", "b"], CONFIG, clock)
    fail(detector, "a", 4)
    detector.answered("a")
    fail(detector, "a", 4, TIMED_OUT)
    assert not detector.ejected("a")
    detector.failed("a", TIMED_OUT)
    assert detector.ejected("a")
    assert not detector.ejected("b")


def test_failures_within_a_moment_are_a_stall_and_eject_only_once_the_silence_lasts() -> None:
    """Five concurrent races lost at once (a replica starved of CPU for a moment) do not eject; a failure after
    min_silence of no answers does; an answer between starts the silence over."""
    clock = FakeClock()
    detector = OutlierDetector("catalog", ["a", "b"], CONFIG, clock)
    for _ in range(8):
        detector.failed("a", LOST_RACE)
    assert not detector.ejected("a")
    clock._now += CONFIG.min_silence / 2
    detector.answered("a")
    clock._now += CONFIG.min_silence / 2
    for _ in range(5):
        detector.failed("a", LOST_RACE)
    assert not detector.ejected("a")  # the silence began at the first failure after the answer
    clock._now += CONFIG.min_silence
    detector.failed("a", LOST_RACE)
    assert detector.ejected("a")


def test_races_lost_by_attempts_sent_before_the_last_counted_loss_are_one_observation() -> None:
    """Twenty attempts in flight when the replica stalls all lose at once: one failure. Attempts sent after that
    loss was known, and lost too, are new evidence; five such eject (a timeout always counts)."""
    clock = FakeClock()
    detector = OutlierDetector("catalog", ["a", "b"], CONFIG, clock)
    sent = clock.now()
    clock._now += 0.015
    for _ in range(20):
        detector.failed("a", LOST_RACE, sent)
    assert detector._replicas["a"].failures == 1
    for _ in range(4):
        sent = clock.now()
        clock._now += 0.1
        detector.failed("a", LOST_RACE, sent)
        detector.failed("a", LOST_RACE, sent - 0.05)  # sent before the last counted loss: the same stall
    assert detector.ejected("a")
    detector._replicas["b"].last_lost = clock.now()
    for _ in range(5):
        detector.failed("b", TIMED_OUT, clock.now() - 1.0)
    assert not detector.ejected("b")  # at most half of two: b waits its turn, but its timeouts all counted
    assert detector._replicas["b"].failures == 5


@pytest.mark.parametrize(("replicas", "most"), [(1, 0), (2, 1), (3, 1), (4, 2), (5, 2)])
def test_at_most_half_of_the_replicas_are_ever_ejected(replicas: int, most: int) -> None:
    """Every replica failing quietly: at most half of them (rounded down) are out at once; one replica never."""
    clock = FakeClock()
    names = [f"r{i}" for i in range(replicas)]
    detector = OutlierDetector("catalog", names, CONFIG, clock)
    for _ in range(3):
        for name in names:
            fail(detector, name)
    assert sum(detector.ejected(n) for n in names) == most
    assert detector.out == most


def test_each_ejection_is_longer_until_the_cap_and_good_behaviour_forgives() -> None:
    """30 s, then 60 s, 90 s ... at most 300 s; after staying in, the multiplier drops by one per 30 s."""
    clock = FakeClock()
    detector = OutlierDetector("catalog", ["a", "b"], CONFIG, clock)
    lengths = []
    for _ in range(12):
        fail(detector, "a")
        start = clock.now()
        while detector.ejected("a"):
            clock._now += 1.0
        lengths.append(clock.now() - start)
    assert lengths[:3] == [30.0, 60.0, 90.0]
    assert max(lengths) == 300.0
    clock._now += 300.0  # ten ejection times in, behaving: forgiven ten times over
    fail(detector, "a")
    start = clock.now()
    while detector.ejected("a"):
        clock._now += 1.0
    assert clock.now() - start == 30.0


def test_a_replica_comes_back_by_itself_and_makes_room() -> None:
    """When its time is up an ejected replica is eligible again, and no longer counts against the cap."""
    clock = FakeClock()
    detector = OutlierDetector("catalog", ["a", "b"], CONFIG, clock)
    fail(detector, "a")
    fail(detector, "b")
    assert detector.ejected("a") and not detector.ejected("b")  # one of two at most
    clock._now += 30.0
    fail(detector, "b")
    assert not detector.ejected("a")
    assert detector.ejected("b")


def test_ejection_and_return_are_logged_traced_and_measured(caplog: pytest.LogCaptureFixture) -> None:
    """A warning on resilience.outlier, an event on the current span, and the ejected-replicas gauge."""
    clock = FakeClock()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    span = provider.get_tracer("test").start_span("call")
    detector = OutlierDetector("catalog", ["a:1", "b:1"], CONFIG, clock)
    token = context.attach(trace.set_span_in_context(span))
    try:
        with caplog.at_level(logging.WARNING, logger="resilience.outlier"):
            fail(detector, "a:1")
            gauge = [(o.value, o.attributes) for o in _ejected(None)]  # type: ignore[arg-type]
            out = detector.ejected_now()
            clock._now += 30.0
            detector.ejected("a:1")
    finally:
        context.detach(token)
        span.end()
    assert out == 1
    assert (1, {"downstream": "catalog"}) in gauge  # every live detector reports; this one among them
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert "catalog/a:1 ejected for 30.0 s" in caplog.records[0].getMessage()
    assert "back in" in caplog.records[1].getMessage()
    (finished,) = spans.get_finished_spans()
    assert [e.name for e in finished.events] == ["replica ejected", "replica returned"]
    assert finished.events[0].attributes is not None
    assert finished.events[0].attributes["resilience.replica"] == "a:1"


def test_the_cap_follows_the_replicas_that_join_and_leave() -> None:
    """Two replicas allow one ejection, four allow two; an ejected replica that leaves frees its place."""
    clock = FakeClock()
    detector = OutlierDetector("catalog", ["a", "b"], CONFIG, clock)
    fail(detector, "a")
    fail(detector, "b")
    assert (detector.ejected("a"), detector.ejected("b")) == (True, False)
    detector.joined("c")
    detector.joined("d")
    fail(detector, "b")
    assert (detector.max_ejected, detector.out, detector.ejected("b")) == (2, 2, True)
    detector.left("a")
    assert (detector.max_ejected, detector.out) == (1, 1)
