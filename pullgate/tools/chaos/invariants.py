"""The nine promises a chaos run checks, each a pure function of what the run recorded, so each can be tested
with a planted violation and none can be argued with: it either held on this evidence or it names the case.

1 deadline      no call took longer than its deadline plus a stated tolerance
2 provenance    every LIVE/CACHED/STALE part equals what its owner held at some moment within the age it states
3 strong        a STRONG read never returned a part that was not LIVE
4 placement     every OK placement exists once, with one order per key; none PENDING; stock adds up
5 heal          once the faults stopped, non-degraded answers came back within a stated bound
6 processes     nothing died but what was killed, and every process's peak memory stayed under a bound
7 goodput       during an overload, goodput stayed above a share of capacity, and refusals came fast
8 breakers      no breaker opened because of an overload
9 gray          with one replica of several frozen, reads stopped failing within a stated settling time

7 to 9 judge a fault only while it is "clear": no other fault in force, and none ended within the heal bound
before it began. Otherwise a breaker, an error or a lost second has more than one possible cause, and the
verdict says how many faults it could not judge.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pullgate import topology
from pullgate.tools.chaos.history import History
from pullgate.tools.chaos.owners import OrderRecord
from pullgate.tools.chaos.record import Call, FaultRun, entity
from pullgate.tools.chaos.spike import REFUSALS, Spike, per_second
from pullgate.tools.chaos.system import State
from pullgate.tools.stats import percentile

EXAMPLES = 5
"""Violations quoted per invariant; the count covers all of them."""


@dataclass(frozen=True)
class Limits:
    """The tolerances and bounds the invariants are judged by; durations in seconds."""

    deadline_tolerance: float = 0.5
    """Lateness allowed past a call's deadline: the load generator's own event loop on a busy machine."""
    staleness_tolerance: float = 1.0
    """Slack on each side of a part's window: the owner call's own duration and clock stamps taken before commit."""
    heal_bound: float = 8.0
    """Breaker reset (5 s by default) plus one probe (1 s attempt timeout) plus 2 s for a loaded machine."""
    heal_quiet: float = 1.0
    """Clean answers needed after the last bad one before the system counts as healed."""
    max_rss_mib: float = 500.0
    goodput_share: float = 0.5
    """Goodput a spike must keep in each second after its first, as a share of the capacity measured before the run
    (of what was offered, if that was less). The benchmark's target is 0.8 of a machine the system has to itself;
    here the chaos load, the chaos tool and the spike's generator share the same two cores with the system."""
    refusal_bound: float = 0.25
    """A spike's refusals (RESOURCE_EXHAUSTED, CANCELLED) at p99, from when each view was due: a refusal the caller
    waits a sixth of its deadline for is no longer "fast". Generous for a two-core machine under a spike."""
    gray_settle: float = 2.0
    """After a gray freeze, how long the callers may take to stop sending to the frozen replica."""


@dataclass
class Verdict:
    """One invariant's outcome: held or not, what was measured, and the violations (quoted up to EXAMPLES)."""

    number: int
    name: str
    promise: str
    held: bool = True
    summary: str = ""
    count: int = 0
    violations: list[str] = field(default_factory=list)
    measured: dict[str, float | int | str | None] = field(default_factory=dict)

    def violate(self, text: str) -> None:
        self.held = False
        self.count += 1
        if len(self.violations) < EXAMPLES:
            self.violations.append(text)


def _when(call: Call, origin: float) -> str:
    what = {"order_view": "order view", "customer_overview": "overview", "place_order": "placement"}[call.op]
    return f"{what} {call.target} ({call.mode}) sent at {call.sent - origin:.2f}s"


def deadlines(calls: Sequence[Call], limits: Limits, origin: float) -> Verdict:
    verdict = Verdict(1, "deadline", f"no response later than its deadline + {limits.deadline_tolerance:g}s")
    worst = -math.inf
    for call in calls:
        over = call.latency - call.deadline
        worst = max(worst, over)
        if over > limits.deadline_tolerance:
            verdict.violate(f"{_when(call, origin)}: {call.code} after {call.latency:.3f}s, "
                            f"deadline {call.deadline:g}s")
    expired = Counter(c.mode for c in calls if c.code == "DEADLINE_EXCEEDED")
    verdict.measured = {"calls": len(calls), "worst_overshoot_s": None if worst == -math.inf else round(worst, 3),
                        **{f"deadline_exceeded_{mode}": n for mode, n in sorted(expired.items())}}
    verdict.summary = (f"{len(calls)} calls; latest {max(worst, 0.0) * 1000:+.0f} ms past the deadline"
                       if calls else "no calls")
    return verdict


def provenance(calls: Sequence[Call], history: History, limits: Limits, origin: float) -> Verdict:
    verdict = Verdict(2, "provenance", "every LIVE/CACHED/STALE part equals what its owner held within its age")
    checked: Counter[str] = Counter()
    unknown = 0
    tolerance = limits.staleness_tolerance
    for call in calls:
        if not call.ok:
            continue
        for part in call.parts:
            kind, _ = key = entity(part.name)
            if part.source == "MISSING" or kind == "orders":  # a list's orders are checked one by one
                continue
            if part.value is None:
                verdict.violate(f"{_when(call, origin)}: {part.name} labelled {part.source} but carries no value")
                continue
            if not history.knows(key):
                unknown += 1
                continue
            checked[part.source] += 1
            start = call.sent - part.age - tolerance
            end = call.received - part.age + tolerance
            if not history.held(key, part.value, start, end):
                held = [v for v in history.values(key) if v != part.value][:3]
                verdict.violate(f"{_when(call, origin)}: {part.name} {part.source} age {part.age:.2f}s = "
                                f"{part.value!r}, which its owner did not hold between {start - origin:.2f}s and "
                                f"{end - origin:.2f}s (it held e.g. {held!r})")
    total = sum(checked.values())
    verdict.measured = {"parts_checked": total, **{f"{s.lower()}": n for s, n in sorted(checked.items())},
                        "not_checkable": unknown}
    verdict.summary = (f"{total} parts checked against the owners' records "
                       f"({', '.join(f'{n} {s}' for s, n in sorted(checked.items())) or 'none'})"
                       + (f"; {unknown} with no owner record" if unknown else ""))
    return verdict


def strong(calls: Sequence[Call], origin: float) -> Verdict:
    verdict = Verdict(3, "strong", "a STRONG read never returns a part that is not LIVE")
    answered = [c for c in calls if c.read and c.mode == "strong" and c.ok]
    for call in answered:
        for part in call.parts:
            if part.source != "LIVE":
                verdict.violate(f"{_when(call, origin)}: {part.name} is {part.source} ({part.reason})")
    failed = sum(1 for c in calls if c.read and c.mode == "strong" and not c.ok)
    verdict.measured = {"strong_answered": len(answered), "strong_failed": failed}
    verdict.summary = f"{len(answered)} strong reads answered, all parts live; {failed} failed instead"
    if not verdict.held:
        verdict.summary = f"{len(answered)} strong reads answered; {verdict.count} parts not live"
    return verdict


def placements(calls: Sequence[Call], orders: Sequence[OrderRecord], stock_violations: Sequence[str],
               since: float, origin: float) -> Verdict:
    """`stock_violations`: what services.invariants.check_placement found (stock and reservations against orders);
    `since`: when the run began, so only the run's own orders must have left PENDING."""
    verdict = Verdict(4, "placement", "every OK placement exists once; one order per key; none PENDING; "
                                      "stock adds up")
    by_key: dict[str, list[OrderRecord]] = defaultdict(list)
    for order in orders:
        by_key[order.key].append(order)
    for key, found in by_key.items():
        if len(found) > 1:
            verdict.violate(f"idempotency key {key!r} maps to orders {[o.order_id for o in found]}")
    ids = Counter(o.order_id for o in orders)
    for order_id, n in ids.items():
        if n > 1:
            verdict.violate(f"order {order_id} exists {n} times")
    answers: dict[str, set[str]] = defaultdict(set)
    for call in calls:
        if call.op == "place_order" and call.ok:
            answers[call.target].add(call.order_id)
    for key, order_ids in answers.items():
        if len(order_ids) > 1:
            verdict.violate(f"key {key!r} was answered with different orders {sorted(order_ids)}")
        found = by_key.get(key, [])
        if not found:
            verdict.violate(f"placement with key {key!r} returned OK (order {sorted(order_ids)}) but no order "
                            "has that key")
        elif found[0].order_id not in order_ids:
            verdict.violate(f"key {key!r} returned order {sorted(order_ids)} but the key is order "
                            f"{found[0].order_id}")
        elif found[0].status != "ORDER_STATUS_CONFIRMED":
            verdict.violate(f"order {found[0].order_id} (key {key!r}) returned OK but is {found[0].status}")
    pending = [o for o in orders if o.created >= since and o.status == "ORDER_STATUS_PENDING"]
    for order in pending:
        verdict.violate(f"order {order.order_id} (key {order.key!r}, created at {order.created - origin:.2f}s) "
                        "is still PENDING after recovery")
    for violation in stock_violations:
        verdict.violate(violation)
    placed = sum(1 for c in calls if c.op == "place_order")
    confirmed = sum(1 for o in orders if o.created >= since and o.status == "ORDER_STATUS_CONFIRMED")
    cancelled = sum(1 for o in orders if o.created >= since and o.status == "ORDER_STATUS_CANCELLED")
    verdict.measured = {"placements_sent": placed, "keys_ok": len(answers), "orders_confirmed": confirmed,
                        "orders_cancelled": cancelled, "orders_pending": len(pending),
                        "stock_violations": len(stock_violations)}
    verdict.summary = (f"{placed} placements ({len(answers)} keys OK): {confirmed} orders confirmed, "
                       f"{cancelled} cancelled, {len(pending)} pending; stock and reservations "
                       + ("add up" if not stock_violations else f"broken in {len(stock_violations)} ways"))
    return verdict


def heal(calls: Sequence[Call], faults: Sequence[FaultRun], limits: Limits, origin: float) -> Verdict:
    verdict = Verdict(5, "heal", f"non-degraded answers return within {limits.heal_bound:g}s of the last fault")
    if not faults:
        verdict.summary = "no faults: nothing to heal from"
        verdict.measured = {"time_to_heal_s": 0.0}
        return verdict
    unended = [f for f in faults if f.end is None]
    for fault in unended:
        verdict.violate(f"{fault.label} never ended ({fault.note or 'the process did not come back'})")
    if unended:
        verdict.summary = "a fault never ended"
        verdict.measured = {"time_to_heal_s": None}
        return verdict
    over = max(f.end for f in faults if f.end is not None)
    after = sorted((c for c in calls if c.read and c.sent >= over), key=lambda c: c.sent)
    bad = [c for c in after if not c.ok or c.degraded]
    healed_at = max((c.received for c in bad), default=over)
    clean = [c for c in after if c.sent >= healed_at]
    took = healed_at - over
    verdict.measured = {"faults_ended_at_s": round(over - origin, 3), "time_to_heal_s": round(took, 3),
                        "bad_reads_after_faults": len(bad)}
    if not clean or clean[-1].received - healed_at < limits.heal_quiet:
        verdict.violate(f"not healed by the end of the run: {len(bad)} of {len(after)} reads after the last fault "
                        f"(ended at {over - origin:.2f}s) were degraded or failed, the last one at "
                        f"{healed_at - origin:.2f}s")
        verdict.measured["time_to_heal_s"] = None
        verdict.summary = "did not heal within the run"
        return verdict
    if took > limits.heal_bound:
        worst = max(bad, key=lambda c: c.received)
        verdict.violate(f"healed {took:.2f}s after the last fault, over the {limits.heal_bound:g}s bound; the last "
                        f"bad answer: {_when(worst, origin)}: {worst.code}{' degraded' if worst.degraded else ''} "
                        f"{worst.detail or _first_reason(worst)}")
    verdict.summary = f"healed {took:.2f}s after the last fault ended ({len(bad)} degraded or failed reads meanwhile)"
    return verdict


def _first_reason(call: Call) -> str:
    return next((f"{p.name}: {p.source} {p.reason}" for p in call.parts if p.source != "LIVE" and p.reason), "")


@dataclass(frozen=True)
class Peak:
    """A process's highest resident set seen (VmHWM), over every pid it had (a restart starts afresh)."""

    name: str
    peak_kib: int
    pids: tuple[int, ...]


def processes(before: State, after: State | None, kills: Mapping[str, int], peaks: Sequence[Peak],
              launcher_alive: bool, limits: Limits) -> Verdict:
    verdict = Verdict(6, "processes", f"nothing died but what was killed; peak RSS under {limits.max_rss_mib:g} MiB")
    if not launcher_alive or after is None:
        verdict.violate(f"the launcher (pid {before.launcher_pid}) is gone")
    restarts = 0
    for proc in before.procs:
        now = next((p for p in after.procs if p.name == proc.name), None) if after else None
        if now is None:
            continue
        died = now.restarts - proc.restarts
        restarts += died
        killed = kills.get(proc.name, 0)
        if died > killed:
            verdict.violate(f"{proc.name} died {died - killed} time(s) without being killed "
                            f"(restarts {proc.restarts} -> {now.restarts}, killed {killed})")
        elif died < killed:
            verdict.violate(f"{proc.name} was killed {killed} time(s) but the launcher restarted it {died} time(s)")
    for peak in peaks:
        if peak.peak_kib / 1024 > limits.max_rss_mib:
            verdict.violate(f"{peak.name} peaked at {peak.peak_kib / 1024:.0f} MiB RSS")
    top = max(peaks, key=lambda p: p.peak_kib, default=None)
    verdict.measured = {"restarts": restarts, "killed": sum(kills.values()),
                        **{f"peak_rss_mib_{p.name}": round(p.peak_kib / 1024, 1) for p in peaks}}
    verdict.summary = (f"{len(before.procs)} processes, {restarts} restarts for {sum(kills.values())} kills; "
                       + (f"highest peak RSS {top.peak_kib / 1024:.0f} MiB ({top.name})" if top else "no RSS read"))
    return verdict


def _clear(start: float, end: float, fault: FaultRun | None, faults: Sequence[FaultRun], limits: Limits) -> list[str]:
    """Labels of the other faults that were in force during [start, end] or ended within the heal bound before it;
    faults of the same kind as `fault` (two overloads at once are one overload) and `fault` itself do not count."""
    others = []
    for other in faults:
        if other is fault or (fault is not None and other.kind == fault.kind):
            continue
        other_end = other.end if other.end is not None else math.inf
        if other.start <= end and other_end + limits.heal_bound >= start:
            others.append(other.label)
    return others


def _overload_fault(spike: Spike, faults: Sequence[FaultRun]) -> FaultRun | None:
    return next((f for f in faults if f.kind == "overload" and f.label == spike.label
                 and abs(f.start - spike.start) < 1.0), None)


def goodput(spikes: Sequence[Spike], faults: Sequence[FaultRun], limits: Limits, origin: float) -> Verdict:
    share = limits.goodput_share
    verdict = Verdict(7, "goodput", f"during an overload, every second after the first: goodput >= {share:.0%} of "
                                    f"capacity; refusals p99 <= {limits.refusal_bound * 1000:.0f} ms")
    if not spikes:
        verdict.summary = "no overload fault: nothing to judge"
        return verdict
    judged = 0
    skipped: list[str] = []
    lowest = math.inf
    worst_refusal = 0.0
    codes: Counter[str] = Counter()
    for spike in spikes:
        fault = _overload_fault(spike, faults)
        if others := _clear(spike.start, spike.start + spike.seconds, fault, faults, limits):
            skipped.append(f"{spike.label} (with {', '.join(others)})")
            continue
        at = spike.start - origin
        for second in per_second(spike)[1:]:
            judged += 1
            capacity = spike.judged_capacity
            bound = share * min(capacity, second.offered)
            lowest = min(lowest, second.good / capacity if capacity else 0.0)
            codes += second.codes
            if second.good < bound:
                rest = ", ".join(f"{code} {n}" for code, n in second.codes.most_common()) or "nothing else"
                verdict.violate(f"{spike.label} at {at:.2f}s, its second {second.t}: {second.good} good of "
                                f"{second.offered} offered, under {share:.0%} of the {capacity:.0f}/s capacity "
                                f"({bound:.0f}); the rest: {rest}")
        refusals = [a.latency for a in spike.answers if a.code in REFUSALS]
        if refusals:
            p99 = percentile(refusals, 0.99)
            worst_refusal = max(worst_refusal, p99)
            if p99 > limits.refusal_bound:
                verdict.violate(f"{spike.label} at {at:.2f}s: its {len(refusals)} refusals took {p99 * 1000:.0f} ms "
                                f"at p99 (over {limits.refusal_bound * 1000:.0f} ms): callers waited to be refused")
    verdict.measured = {"capacity_per_s": round(min(s.capacity for s in spikes), 1),
                        "judged_capacity_per_s": round(min(s.judged_capacity for s in spikes), 1),
                        "seconds_judged": judged,
                        "spikes_not_judged": len(skipped),
                        "lowest_goodput_share": None if lowest == math.inf else round(lowest, 3),
                        "refusal_p99_ms": round(worst_refusal * 1000, 1),
                        **{f"answers_{'ok_late' if code == 'OK' else code.lower()}": n
                           for code, n in sorted(codes.items())}}
    verdict.summary = (f"{judged} spike seconds judged against "
                       f"{', '.join(f'{s.judged_capacity:.0f}/s' for s in spikes)} capacity (for the cores left to "
                       f"the system); lowest goodput "
                       + ("n/a" if lowest == math.inf else f"{lowest:.0%} of capacity")
                       + f"; refusals p99 {worst_refusal * 1000:.0f} ms"
                       + _not_judged(skipped))
    return verdict


def _not_judged(skipped: Sequence[str]) -> str:
    return f"; not judged, other faults in force: {'; '.join(skipped)}" if skipped else ""


def breakers(spikes: Sequence[Spike], faults: Sequence[FaultRun], limits: Limits, origin: float) -> Verdict:
    verdict = Verdict(8, "breakers", "no breaker opened across an overload that no other fault overlapped")
    if not spikes:
        verdict.summary = "no overload fault: nothing to judge"
        return verdict
    judged = opened = 0
    skipped: list[str] = []
    for spike in spikes:
        start, end = spike.read_at
        fault = _overload_fault(spike, faults)
        if others := _clear(start, end, fault, faults, limits):
            skipped.append(f"{spike.label} (with {', '.join(others)})")
            continue
        judged += 1
        window = f"between {start - origin:.2f}s and {end - origin:.2f}s"
        for unread in spike.unread:
            verdict.violate(f"{spike.label}: could not read {unread}, so its breakers {window} are unknown")
        for process, after in sorted(spike.opens_after.items()):
            before = spike.opens_before.get(process)
            if before is None:
                continue  # not read before: named among `unread`
            for downstream, count in sorted(after.items()):
                more = count - before.get(downstream, 0.0)
                if more > 0:
                    opened += round(more)
                    verdict.violate(f"{spike.label}: {process}'s breaker for {downstream} opened {more:.0f} time(s) "
                                    f"{window}, with no other fault in force")
    verdict.measured = {"spikes_judged": judged, "spikes_not_judged": len(skipped), "breakers_opened": opened}
    verdict.summary = (f"{judged} overload window(s) read on every process: {opened} breaker(s) opened"
                       + _not_judged(skipped))
    return verdict


def _owned_by(service: str) -> frozenset[str]:
    """The part kinds (`product`, `orders`, ...) naming the entities `service` owns, singular and plural."""
    if service not in topology.names():
        return frozenset()
    return frozenset(w for e in topology.service(service).entities for w in (e, f"{e}s"))


def gray(calls: Sequence[Call], faults: Sequence[FaultRun], limits: Limits, origin: float) -> Verdict:
    settle = limits.gray_settle
    verdict = Verdict(9, "gray", f"from {settle:g}s after one replica of several froze until it thawed, no read "
                                 "failed, and none lacked a live or cached part of the frozen replica's service")
    grays = [f for f in faults if f.kind == "gray"]
    if not grays:
        verdict.summary = "no gray fault: nothing to judge"
        return verdict
    judged = reads = 0
    skipped: list[str] = []
    for fault in grays:
        end = fault.end if fault.end is not None else max((c.received for c in calls), default=fault.start)
        if others := _clear(fault.start, end, fault, faults, limits):
            skipped.append(f"{fault.label} (with {', '.join(others)})")
            continue
        judged += 1
        owned = _owned_by(fault.service)
        for call in calls:
            if not (call.read and fault.start + settle <= call.sent < end):
                continue
            reads += 1
            where = f"{_when(call, origin)}, {call.sent - fault.start:.2f}s into {fault.label}"
            if call.failed:
                verdict.violate(f"{where}: {call.code} {call.detail}")
                continue
            for part in call.parts:
                if part.source in ("STALE", "MISSING") and entity(part.name)[0] in owned:
                    verdict.violate(f"{where}: {part.name} {part.source} ({part.reason})")
                    break
    verdict.measured = {"grays_judged": judged, "grays_not_judged": len(skipped), "reads_judged": reads}
    verdict.summary = (f"{reads} reads judged in {judged} gray window(s): {verdict.count} failed or degraded by the "
                       "frozen replica's service" + _not_judged(skipped))
    return verdict


__all__ = ["EXAMPLES", "Limits", "Peak", "Verdict", "breakers", "deadlines", "goodput", "gray", "heal", "placements",
           "processes", "provenance", "strong"]
