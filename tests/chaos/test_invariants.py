"""Each invariant holds on clean evidence and names a violation planted in it."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from pullgate.tools.chaos import invariants
from pullgate.tools.chaos.history import History, Sample
from pullgate.tools.chaos.invariants import Limits, Peak
from pullgate.tools.chaos.owners import OrderRecord, Reservation, order_spans, stock_spans
from pullgate.tools.chaos.record import Call, FaultRun, PartSeen, Value
from pullgate.tools.chaos.spike import Answer, Spike
from pullgate.tools.chaos.system import Proc, State

T0 = 1_000.0
LIMITS = Limits()
CUSTOMER = ("Ada Lovelace", "ada@example.com", 1, 0)


def view(sent: float, *parts: PartSeen, mode: str = "bounded", code: str = "OK", latency: float = 0.01,
         degraded: bool = False) -> Call:
    return Call("order_view", mode, "1", T0 + sent, latency, 1.5, code, degraded=degraded, parts=parts)


def part(name: str, value: Value | None, source: str = "LIVE", age: float = 0.0) -> PartSeen:
    return PartSeen(name, source, age, "" if source == "LIVE" else "customers: circuit open", value)


def history() -> History:
    h = History()
    h.add_samples(("customer", "1"), [Sample(T0, T0 + 0.01, CUSTOMER), Sample(T0 + 10, T0 + 10.01, CUSTOMER)],
                  static=True)
    return h


def test_deadline_holds_within_the_tolerance_and_names_a_late_call() -> None:
    """A call later than its deadline plus the tolerance is a violation; one within it is not."""
    on_time = view(1, latency=1.5 + LIMITS.deadline_tolerance - 0.01, code="DEADLINE_EXCEEDED")
    assert invariants.deadlines([on_time], LIMITS, T0).held
    late = view(2, latency=1.5 + LIMITS.deadline_tolerance + 0.2, code="DEADLINE_EXCEEDED")
    verdict = invariants.deadlines([on_time, late], LIMITS, T0)
    assert not verdict.held and verdict.count == 1 and "sent at 2.00s" in verdict.violations[0]


def test_provenance_accepts_what_the_owner_held_within_the_stated_age() -> None:
    """Live, cached and stale parts equal to the owner's value within their age window hold."""
    calls = [view(1, part("customer:1", CUSTOMER)), view(5, part("customer:1", CUSTOMER, "STALE", 4.0)),
             view(6, part("customer:1", None, "MISSING"))]
    verdict = invariants.provenance(calls, history(), LIMITS, T0)
    assert verdict.held and verdict.measured["parts_checked"] == 2


def test_provenance_names_a_part_its_owner_never_held() -> None:
    """A part whose value the owner did not hold is a violation naming the part and its label."""
    wrong = ("Ada Lovelace", "someone@else.example", 1, 0)
    verdict = invariants.provenance([view(3, part("customer:1", wrong, "CACHED", 0.5))], history(), LIMITS, T0)
    assert not verdict.held and "customer:1 CACHED age 0.50s" in verdict.violations[0]


def test_provenance_checks_the_age_against_when_the_owner_held_the_value() -> None:
    """A stale stock figure is right only if the owner held it at the moment its age points to."""
    h = History()
    stock_spans(h, [Reservation("r1", T0 + 10, None, (("SKU-001", 2, 8, 2),))])
    assert h.held(("stock", "SKU-001"), (10, 0), T0 + 5, T0 + 6)
    before = view(12, part("stock:SKU-001", (10, 0), "STALE", 9.0))  # points at T0 + 3: 10 were available then
    too_young = view(12, part("stock:SKU-001", (10, 0), "STALE", 0.5))  # points at T0 + 11.5: 8 were
    assert invariants.provenance([before], h, LIMITS, T0).held
    verdict = invariants.provenance([too_young], h, LIMITS, T0)
    assert not verdict.held and "stock:SKU-001 STALE" in verdict.violations[0]


def test_provenance_names_a_labelled_part_without_a_value() -> None:
    """A part labelled LIVE that carries nothing is a violation."""
    verdict = invariants.provenance([view(1, part("customer:1", None))], history(), LIMITS, T0)
    assert not verdict.held and "carries no value" in verdict.violations[0]


def test_order_history_allows_pending_only_before_the_update() -> None:
    """An order's PENDING status is accepted before it was confirmed, not after."""
    h = History()
    order_spans(h, [OrderRecord("16", "k", "1", "ORDER_STATUS_CONFIRMED", (("SKU-001", 1),), T0, T0 + 2, (1, 0))])
    pending = ("1", "ORDER_STATUS_PENDING", (("SKU-001", 1),), 1, 0)
    assert h.held(("order", "16"), pending, T0 + 1, T0 + 1.5)
    assert not h.held(("order", "16"), pending, T0 + 3, T0 + 4)


def test_strong_names_a_part_that_is_not_live() -> None:
    """A STRONG read that answered with a cached part is a violation; failing instead is not."""
    good = view(1, part("customer:1", CUSTOMER), mode="strong")
    failed = view(2, mode="strong", code="UNAVAILABLE")
    assert invariants.strong([good, failed], T0).held
    bad = view(3, part("customer:1", CUSTOMER, "CACHED", 0.2), mode="strong")
    verdict = invariants.strong([good, bad], T0)
    assert not verdict.held and "customer:1 is CACHED" in verdict.violations[0]


def order(order_id: str, key: str, status: str = "ORDER_STATUS_CONFIRMED", created: float = T0 + 1) -> OrderRecord:
    return OrderRecord(order_id, key, "1", status, (("SKU-001", 1),), created, created + 0.1, (1, 0))


def placed(key: str, order_id: str, code: str = "OK") -> Call:
    return Call("place_order", "fresh", key, T0 + 1, 0.05, 1.5, code, order_id=order_id)


def test_placement_holds_when_each_ok_key_has_its_one_confirmed_order() -> None:
    """OK placements, replays answering the same order and settled orders hold."""
    calls = [placed("a", "16"), placed("a", "16"), placed("b", "", code="UNAVAILABLE")]
    orders = [order("16", "a"), order("17", "b", "ORDER_STATUS_CANCELLED")]
    assert invariants.placements(calls, orders, [], T0, T0).held


def test_placement_names_lost_duplicated_pending_and_unbalanced() -> None:
    """A lost order, a key answered twice differently, a PENDING order and broken stock are each named."""
    calls = [placed("lost", "20"), placed("twice", "16"), placed("twice", "17")]
    orders = [order("16", "twice"), order("18", "stuck", "ORDER_STATUS_PENDING"),
              order("5", "old", "ORDER_STATUS_PENDING", created=T0 - 100)]
    verdict = invariants.placements(calls, orders, ["sku SKU-001: reserved is 3 but live reservations hold 2"], T0,
                                    T0)
    text = "\n".join(verdict.violations)
    assert not verdict.held and verdict.count == 4
    assert "'lost' returned OK" in text and "different orders ['16', '17']" in text
    assert "order 18" in text and "PENDING" in text and "order 5 " not in text and "SKU-001" in text


def test_heal_measures_the_time_to_full_answers_after_the_last_fault() -> None:
    """The time to heal runs from the end of the last fault to the last degraded answer after it."""
    faults = [FaultRun("kill customers", "kill", "customers", T0 + 1, T0 + 2)]
    calls = [view(2.5, degraded=True), view(3.0, code="UNAVAILABLE"), *(view(3.5 + i / 10) for i in range(20))]
    verdict = invariants.heal(calls, faults, LIMITS, T0)
    took = verdict.measured["time_to_heal_s"]
    assert verdict.held and isinstance(took, float) and math.isclose(took, 1.01, abs_tol=1e-6)


def test_heal_names_a_slow_recovery_and_one_that_never_came() -> None:
    """Healing later than the bound, not healing at all, and a fault that never ended are violations."""
    faults = [FaultRun("kill customers", "kill", "customers", T0 + 1, T0 + 2)]
    slow = [view(2 + LIMITS.heal_bound + 1, degraded=True), *(view(12 + i / 5) for i in range(10))]
    assert "over the 8s bound" in invariants.heal(slow, faults, LIMITS, T0).violations[0]
    never = [view(3 + i, degraded=True) for i in range(5)]
    assert "not healed" in invariants.heal(never, faults, LIMITS, T0).violations[0]
    unended = [FaultRun("kill orders", "kill", "orders", T0 + 1, None, note="not restarted within 60s")]
    assert "never ended" in invariants.heal(slow, unended, LIMITS, T0).violations[0]


def state(restarts: int = 0, pid: int = 11) -> State:
    return State(1, Path("var"), (Proc("customers", "customers", "127.0.0.1:1", pid, restarts),
                                  Proc("gateway", "gateway", "127.0.0.1:2", 12, 0)))


def test_processes_hold_when_only_the_killed_restarted() -> None:
    """A restart for each kill, and memory under the bound, hold."""
    peaks = [Peak("customers", 90_000, (11, 21)), Peak("gateway", 95_000, (12,))]
    verdict = invariants.processes(state(), state(1, 21), {"customers": 1}, peaks, True, LIMITS)
    assert verdict.held and verdict.measured["restarts"] == 1


def test_processes_name_an_unexpected_death_and_a_memory_peak() -> None:
    """A restart nobody caused, a dead launcher and a process over the memory bound are violations."""
    peaks = [Peak("gateway", int(LIMITS.max_rss_mib * 1024) + 1024, (12,))]
    verdict = invariants.processes(state(), state(1, 21), {}, peaks, False, LIMITS)
    text = "\n".join(verdict.violations)
    assert verdict.count == 3
    assert "customers died 1 time(s) without being killed" in text and "launcher" in text and "gateway peaked" in text


def spike(good: list[int], *, refusal: float = 0.002, capacity: float = 100.0, start: float = 10.0,
          opens_after: dict[str, dict[str, float]] | None = None, unread: tuple[str, ...] = ()) -> Spike:
    """A spike at 3x `capacity` whose second k answered `good[k]` views in time and refused the rest."""
    rate = 3 * capacity
    answers = [Answer(t + i / rate, 0.02 if i < n else refusal, "OK" if i < n else "RESOURCE_EXHAUSTED")
               for t, n in enumerate(good) for i in range(round(rate))]
    before = {"gateway": {"orders": 1.0}, "orders": {}}
    return Spike(f"overload gateway 3x for {len(good)}s", T0 + start, len(good), rate, capacity, 1.0, answers,
                 before, opens_after if opens_after is not None else before,
                 (T0 + start - 0.2, T0 + start + len(good) + 1.0), list(unread))


def overload_run(s: Spike) -> FaultRun:
    return FaultRun(s.label, "overload", "gateway", s.start, s.start + s.seconds, service="gateway")


def test_goodput_holds_above_the_share_and_skips_the_first_second() -> None:
    """A first second of little goodput is allowed; later ones at the share of capacity hold."""
    s = spike([0, 50, 80])
    verdict = invariants.goodput([s], [overload_run(s)], LIMITS, T0)
    assert verdict.held and verdict.measured["seconds_judged"] == 2 and verdict.measured["lowest_goodput_share"] == 0.5


def test_goodput_names_a_second_under_the_share() -> None:
    """A spike second after the first with goodput under the share of capacity is a violation naming it."""
    s = spike([100, 49, 90])
    verdict = invariants.goodput([s], [overload_run(s)], LIMITS, T0)
    assert not verdict.held and verdict.count == 1
    assert "its second 1: 49 good of 300 offered, under 50% of the 100/s capacity (50)" in verdict.violations[0]
    assert "RESOURCE_EXHAUSTED 251" in verdict.violations[0]


def test_goodput_is_judged_against_the_capacity_for_the_cores_left_to_the_system() -> None:
    """Where the spike's generator took cores the capacity run left the system, goodput is judged against the
    capacity scaled to what was left (fair_capacity): 45/s passes against 80/s, and fails against 100/s."""
    s = spike([100, 45, 90])
    assert not invariants.goodput([s], [overload_run(s)], LIMITS, T0).held
    fair = replace(s, fair_capacity=80.0)
    verdict = invariants.goodput([fair], [overload_run(fair)], LIMITS, T0)
    assert verdict.held and verdict.measured["judged_capacity_per_s"] == 80.0
    assert verdict.measured["capacity_per_s"] == 100.0 and verdict.measured["lowest_goodput_share"] == 0.562
    low = replace(s, fair_capacity=95.0)
    violated = invariants.goodput([low], [overload_run(low)], LIMITS, T0)
    assert not violated.held and "under 50% of the 95/s capacity (48)" in violated.violations[0]


def test_goodput_names_slow_refusals() -> None:
    """Refusals slower than the bound at p99 are a violation: the callers waited to be refused."""
    s = spike([90, 90, 90], refusal=LIMITS.refusal_bound + 0.1)
    verdict = invariants.goodput([s], [overload_run(s)], LIMITS, T0)
    assert not verdict.held and "refusals took 350 ms at p99" in verdict.violations[0]


def test_goodput_is_not_judged_while_another_fault_is_in_force() -> None:
    """An overload that overlaps a kill is not judged (the kill explains lost goodput), and the verdict says so."""
    s = spike([0, 0, 0])
    kill = FaultRun("kill catalog", "kill", "catalog", T0 + 11, T0 + 12)
    verdict = invariants.goodput([s], [overload_run(s), kill], LIMITS, T0)
    assert verdict.held and verdict.measured["spikes_not_judged"] == 1 and "kill catalog" in verdict.summary
    assert invariants.goodput([], [], LIMITS, T0).summary == "no overload fault: nothing to judge"


def test_breakers_hold_when_no_open_count_grew() -> None:
    """Counters that did not move across a clear overload hold."""
    s = spike([90, 90])
    verdict = invariants.breakers([s], [overload_run(s)], LIMITS, T0)
    assert verdict.held and verdict.measured == {"spikes_judged": 1, "spikes_not_judged": 0, "breakers_opened": 0}


def test_breakers_name_one_opened_by_overload_and_an_unread_process() -> None:
    """A breaker that opened during a clear overload is a violation naming the process and downstream; a process
    whose metrics could not be read is one too, since nobody can say its breakers stayed shut."""
    s = spike([90, 90], opens_after={"gateway": {"orders": 1.0, "catalog": 2.0}, "orders": {"inventory": 1.0}},
              unread=("customers-1: URLError: timed out",))
    verdict = invariants.breakers([s], [overload_run(s)], LIMITS, T0)
    text = "\n".join(verdict.violations)
    assert verdict.count == 3 and verdict.measured["breakers_opened"] == 3
    assert "gateway's breaker for catalog opened 2 time(s) between 9.80s and 13.00s" in text
    assert "orders's breaker for inventory opened 1 time(s)" in text and "could not read customers-1" in text


def test_breakers_are_not_judged_next_to_a_fault_that_opens_them() -> None:
    """An overload that began within the heal bound of a freeze's end is not judged: the freeze may open breakers."""
    s = spike([90, 90], opens_after={"gateway": {"orders": 5.0}})
    freeze = FaultRun("freeze orders for 2s", "freeze", "orders", T0 + 1, T0 + 3)
    verdict = invariants.breakers([s], [overload_run(s), freeze], LIMITS, T0)
    assert verdict.held and "freeze orders for 2s" in verdict.summary


def gray_run(start: float = 1.0, end: float = 7.0) -> FaultRun:
    return FaultRun("gray customers-1 for 6s", "gray", "customers-1", T0 + start, T0 + end, service="customers")


def test_gray_allows_errors_while_callers_settle_then_none() -> None:
    """Errors in the first seconds after the freeze, and stale parts of other services, are allowed."""
    calls = [view(1.5, code="DEADLINE_EXCEEDED", latency=1.5), view(2.9, part("customer:1", None, "MISSING")),
             view(3.5, part("customer:1", CUSTOMER), part("product:SKU-001", ("a", 1, "EUR"), "STALE", 2.0)),
             view(6.5, part("customer:1", CUSTOMER, "CACHED", 0.3)), view(7.5, code="UNAVAILABLE")]
    verdict = invariants.gray(calls, [gray_run()], LIMITS, T0)
    assert verdict.held and verdict.measured["reads_judged"] == 2


def test_gray_names_a_failed_read_and_a_degraded_part_of_the_frozen_service() -> None:
    """After the settling time, a failed read and a STALE part of the frozen replica's service are violations."""
    calls = [view(3.5, code="DEADLINE_EXCEEDED", latency=1.5),
             view(4.0, part("customer:1", CUSTOMER, "STALE", 2.5), degraded=True),
             view(5.0, code="NOT_FOUND")]
    verdict = invariants.gray(calls, [gray_run()], LIMITS, T0)
    text = "\n".join(verdict.violations)
    assert verdict.count == 2
    assert "sent at 3.50s, 2.50s into gray customers-1 for 6s: DEADLINE_EXCEEDED" in text
    assert "customer:1 STALE" in text


def test_gray_is_not_judged_with_another_fault_in_force() -> None:
    """A gray window that overlaps another fault is not judged, and the verdict names it."""
    kill = FaultRun("kill catalog", "kill", "catalog", T0 + 4, T0 + 5)
    verdict = invariants.gray([view(3.5, code="UNAVAILABLE")], [gray_run(), kill], LIMITS, T0)
    assert verdict.held and "kill catalog" in verdict.summary and verdict.measured["grays_not_judged"] == 1
