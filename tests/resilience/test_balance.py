"""Balancing on latency: peak EWMA, hedge losers as samples, outlier ejection of a hung replica, deeper hedging."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from pullgate.catalog.v1 import catalog_pb2
from resilience import Downstream, DownstreamConfig, HedgingConfig, OutlierDetectionConfig
from resilience.balance import Balance
from resilience.config import BudgetConfig, BulkheadConfig, CacheConfig, RetryConfig
from resilience.ewma import PRIOR, TAU, PeakEwma
from resilience.outlier import LOST_RACE, OutlierDetector
from resilience.testing import FakeClock
from tests.resilience.scripted import READ, Prompt, Scripted, Step

REQUEST = catalog_pb2.GetProductRequest(sku="x")
# Hedging with room to hedge every call, so that what is tested is the balancer, not the caps.
HEDGED = DownstreamConfig(
    cache=CacheConfig(enabled=False),
    hedging=HedgingConfig(hedging_delay=0.01, max_extra_load=1.0),
    budget=BudgetConfig(token_ratio=1.0),
    bulkhead=BulkheadConfig(max_concurrent=1000),
)


def test_peak_ewma_takes_peaks_at_once_and_forgets_them_slowly() -> None:
    """A higher sample replaces the estimate; lower ones pull it down over TAU; with no samples it decays to 0."""
    latency = PeakEwma()
    assert latency.value(0.0) == PRIOR
    latency.observe(0.002, 0.0)
    assert latency.value(0.0) == 0.002  # the first sample replaces the prior
    latency.observe(0.5, 1.0)
    assert latency.value(1.0) == 0.5  # a peak, at once
    latency.observe(0.002, 1.0 + TAU)
    assert latency.value(1.0 + TAU) == pytest.approx(0.5 / math.e + 0.002 * (1 - 1 / math.e))
    assert latency.value(1.0 + 4 * TAU) == pytest.approx(latency.estimate / math.e**3)


def test_lower_bounds_only_raise_and_refusals_double() -> None:
    """`at_least` never lowers the estimate; `penalize` doubles it."""
    latency = PeakEwma()
    latency.observe(0.010, 0.0)
    latency.at_least(0.001, 0.0)
    assert latency.value(0.0) == 0.010
    latency.at_least(0.200, 0.0)
    assert latency.value(0.0) == 0.200
    latency.penalize(0.0)
    assert latency.value(0.0) == 0.400


async def test_most_calls_go_to_the_faster_replica() -> None:
    """Of two replicas, one ten times slower, the faster gets the great majority of sequential calls."""
    clock = FakeClock()
    owner = Prompt(clock, delays={"slow:1": 0.02, "fast:1": 0.002})
    config = DownstreamConfig(cache=CacheConfig(enabled=False), hedging=HedgingConfig(enabled=False))
    downstream = Downstream("catalog", ["slow:1", "fast:1"], config, clock, endpoint=owner, rng=random.Random(1))
    for _ in range(200):
        call = asyncio.create_task(downstream.call(READ, REQUEST))
        while not call.done():
            await clock.advance(0.001)
    assert owner.calls.count("fast:1") > 0.9 * len(owner.calls)


def test_a_replica_with_no_answer_yet_is_priced_as_the_average() -> None:
    """A new replica competes at the known replicas' average, so it gets its share at once."""
    clock = FakeClock()
    balance = Balance(["a", "b", "new"], random.Random(1), clock=clock)
    balance.latency["a"].observe(0.002, clock.now())
    balance.latency["b"].observe(0.004, clock.now())
    assert balance.estimate("new") == pytest.approx(0.003)
    balance.outstanding["a"] = balance.outstanding["b"] = 1
    assert balance.pick() == "new"


async def rounds(downstream: Downstream, clock: FakeClock, n: int, width: int = 20) -> None:
    """`n` rounds of `width` concurrent calls, each round run to its end."""
    for _ in range(n):
        calls = [asyncio.create_task(downstream.call(READ, REQUEST)) for _ in range(width)]
        while not all(c.done() for c in calls):
            await clock.advance(0.005)
        for call in calls:
            call.result()


@pytest.mark.parametrize("recovers", [True, False])
async def test_a_hung_replica_is_found_through_hedge_losers_ejected_and_probed_back(recovers: bool) -> None:
    """A replica that never answers, hedged around: its losers raise its estimate and eject it; it then gets no
    attempts; after the ejection time it is tried again, and stays if healthy, or is ejected for twice as long."""
    clock = FakeClock()
    owner = Prompt(clock, delays={"a:1": 1000.0})
    downstream = Downstream("catalog", ["a:1", "b:1"], HEDGED, clock, endpoint=owner, rng=random.Random(2))
    balance = downstream.stack.get("balance")
    assert isinstance(balance, Balance) and isinstance(balance.outliers, OutlierDetector)
    outliers = balance.outliers

    async def until_ejected() -> float:
        """Rounds, a tenth of a second apart, until a:1 is ejected; how long that took."""
        began = clock.now()
        while not outliers.ejected("a:1") and clock.now() - began < 60.0:
            await rounds(downstream, clock, 1)
            await clock.advance(0.1)
        assert outliers.ejected("a:1")
        return clock.now() - began

    await rounds(downstream, clock, 1)
    assert "a:1" in owner.cancelled  # its attempts lost the race and were cancelled
    assert balance.estimate("a:1") > 3 * balance.estimate("b:1")
    assert not balance.outliers.ejected("a:1")  # a round's races, lost at once: one observation, maybe a stall
    # Still not answering over later rounds, for min_silence: out.
    assert await until_ejected() >= OutlierDetectionConfig().min_silence
    assert downstream.breaker_states() == {"a:1": "closed", "b:1": "closed"}  # losers are not failures
    sent = owner.calls.count("a:1")
    await rounds(downstream, clock, 10)
    assert owner.calls.count("a:1") == sent  # ejected: no attempts at all
    await clock.advance(OutlierDetectionConfig().base_ejection_time)
    if recovers:
        owner.delays["a:1"] = 0.002
    await rounds(downstream, clock, 5)
    assert owner.calls.count("a:1") > sent  # probed back
    if recovers:
        assert not balance.outliers.ejected("a:1")
        assert balance.outliers.out == 0
        await rounds(downstream, clock, 5)
        assert not balance.outliers.ejected("a:1")
    else:
        await until_ejected()
        await clock.advance(OutlierDetectionConfig().base_ejection_time)
        assert balance.outliers.ejected("a:1")  # the second ejection is twice as long
        await clock.advance(OutlierDetectionConfig().base_ejection_time)
        assert not balance.outliers.ejected("a:1")


async def test_a_timed_out_attempt_raises_the_estimate_and_counts_towards_ejection() -> None:
    """Without hedging, a replica whose attempts time out gets the timeout as its latency, and is ejected."""
    clock = FakeClock()
    owner = Prompt(clock, delays={"a:1": 1000.0})
    config = DownstreamConfig(
        cache=CacheConfig(enabled=False), hedging=HedgingConfig(enabled=False), retry=RetryConfig(enabled=False),
        bulkhead=BulkheadConfig(max_concurrent=1000),
    )
    downstream = Downstream("catalog", ["a:1", "b:1"], config, clock, endpoint=owner, rng=random.Random(2))
    balance = downstream.stack.get("balance")
    calls = [asyncio.create_task(downstream.call(READ, REQUEST)) for _ in range(20)]
    while not all(c.done() for c in calls):
        await clock.advance(0.05)
    assert sum(1 for c in calls if c.exception() is not None) == owner.calls.count("a:1")
    assert balance.estimate("a:1") >= 0.9  # the 1 s slice it did not answer in
    assert balance.outliers.ejected("a:1")


async def test_two_hedges_go_to_two_distinct_replicas_other_than_the_first() -> None:
    """With every replica slow, the first attempt and its two hedges go to three different replicas."""
    for seed in range(10):
        clock = FakeClock()
        script = Scripted(clock, lambda n, r: Step(delay=1.0))
        config = DownstreamConfig(cache=CacheConfig(enabled=False), hedging=HedgingConfig(hedging_delay=0.05))
        replicas = ["a:1", "b:1", "c:1", "d:1"]
        downstream = Downstream("catalog", replicas, config, clock, endpoint=script, rng=random.Random(seed))
        call = asyncio.create_task(downstream.call(READ, REQUEST))
        await clock.advance(0.04)
        assert len(script.calls) == 1
        await clock.advance(0.02)
        assert len(script.calls) == 2
        await clock.advance(0.05)
        assert len(script.calls) == 3
        assert len(set(script.calls)) == 3
        await clock.advance(1.0)
        result = await call
        assert result.provenance.hedged
        assert len(script.calls) == 3  # max_attempts = 3: the first and two hedges


def test_an_ejected_replica_is_drawn_only_when_nothing_else_is_usable() -> None:
    """Ejected a, open b: a is drawn (a retry would rather go back to a tried replica than to an ejected one)."""
    clock = FakeClock()
    outliers = OutlierDetector("catalog", ["a", "b"], OutlierDetectionConfig(), clock)
    for _ in range(5):
        outliers.failed("a", "timed out", clock.now() - 1.0)  # attempts of a second, unanswered
    usable = {"a": True, "b": True}
    balance = Balance(["a", "b"], random.Random(1), lambda r: usable[r], clock, outliers)
    assert all(balance.pick() == "b" for _ in range(20))
    assert balance.pick(["b"]) == "b"
    usable["b"] = False
    assert balance.pick() == "a"
    assert not balance.elsewhere(["b"])


async def test_attempts_are_counted_per_replica() -> None:
    """Every attempt sent is counted for its replica (the `resilience.attempts` metric), as the owner saw them."""
    clock = FakeClock()
    owner = Prompt(clock, delays={"slow:1": 0.02, "fast:1": 0.002})
    config = DownstreamConfig(cache=CacheConfig(enabled=False))
    downstream = Downstream("catalog", ["slow:1", "fast:1"], config, clock, endpoint=owner, rng=random.Random(1))
    for _ in range(50):
        call = asyncio.create_task(downstream.call(READ, REQUEST))
        while not call.done():
            await clock.advance(0.001)
    balance = downstream.stack.get("balance")
    assert balance.downstream == "catalog"
    assert balance.sent == {r: owner.calls.count(r) for r in ("slow:1", "fast:1")}
    assert sum(balance.sent.values()) >= 50


@pytest.mark.parametrize(("first", "hedge", "counted"), [(1.0, 0.002, True), (0.012, 0.005, False)])
async def test_only_an_overtaken_attempt_counts_as_a_lost_race(first: float, hedge: float, counted: bool) -> None:
    """The first attempt, overtaken by its hedge, lost a race; a hedge that loses to the attempt sent before it
    did not (the first was merely slowish), whoever's replica it went to."""
    clock = FakeClock()
    script = Scripted(clock, lambda n, replica: Step(delay=first if n % 2 == 0 else hedge))
    downstream = Downstream("catalog", ["a:1", "b:1"], HEDGED, clock, endpoint=script, rng=random.Random(3))
    balance = downstream.stack.get("balance")
    assert isinstance(balance, Balance) and balance.outliers is not None
    lost: list[tuple[str, str]] = []

    def failed(replica: str, why: str, since: float | None = None) -> None:
        lost.append((replica, why))

    balance.outliers.failed = failed  # type: ignore[method-assign]
    for _ in range(10):  # fewer than the hedge delay's first recomputation (25 samples): every call is hedged
        call = asyncio.create_task(downstream.call(READ, REQUEST))
        while not call.done():
            await clock.advance(0.001)
        assert call.result().provenance.hedged
    losers = script.cancelled
    assert len(losers) == 10
    firsts = script.calls[0::2]
    assert lost == ([(replica, LOST_RACE) for replica in firsts] if counted else [])
