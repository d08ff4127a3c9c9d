"""One chaos run from start to verdict: load and faults together, then healing, recovery, and the invariants.

The phases, and why in this order:
1. read the system (pullgate-up.json: its processes, and how they are secured) and what it allows (FaultService
   or not), and fix the schedule;
2. sample the owners and memory first, so every history starts before the first request; for a schedule with
   an overload, start the spike's worker processes and measure capacity, before the chaos load adds its own;
3. load and faults together for `duration` seconds; if the system has not healed by then, the load goes on
   until it has, or until the heal bound has passed (the run is bounded either way);
4. stop the load, give orders time to settle what was left PENDING (bounded), take the owners' last word;
5. judge the nine invariants on the records, and write the report and the picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import grpc

from pullgate import topology
from pullgate.tools.chaos import invariants, timeline
from pullgate.tools.chaos.actions import Actions, FaultClient, InjectionUnavailable
from pullgate.tools.chaos.load import DEFAULT_MIX, Load
from pullgate.tools.chaos.memory import MemoryWatch
from pullgate.tools.chaos.overload import CALLERS, Overload, overload
from pullgate.tools.chaos.owners import Sampler, build, read_orders, read_reservations
from pullgate.tools.chaos.progress import Progress
from pullgate.tools.chaos.record import Call, Record
from pullgate.tools.chaos.report import Report
from pullgate.tools.chaos.schedule import DEFAULT_KINDS, INJECTED, Fault, ScheduleError, parse_schedule, random_schedule
from pullgate.tools.chaos.system import State, SystemUnusable, alive, read_state
from pullgate.tools.openloop import Gateway
from services.invariants import check_placement

REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
"""How a server answers a caller it does not let in: the chaos tool's credentials do not fit the system."""

REPORT_FILE = "pullgate-chaos.json"
PICTURE_FILE = "pullgate-chaos.png"


@dataclass(frozen=True)
class Settings:
    """What to run; durations in seconds."""

    data_dir: Path
    duration: float = 60.0
    rate: float = 20.0
    seed: int = 0
    deadline: float = 1.5
    schedule: str = ""
    """An explicit schedule (see schedule.py); empty means random from `seed`."""
    kinds: tuple[str, ...] = DEFAULT_KINDS
    targets: tuple[str, ...] = ()
    """Processes a random schedule may hit; empty means every one."""
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    limits: invariants.Limits = field(default_factory=invariants.Limits)
    settle: float = 20.0
    """How long orders may take after the load to settle orders left PENDING."""
    warmup: float = 3.0
    out: Path = Path()
    picture: bool = True
    max_in_flight: int = 200


def _replicas(state: State, service: str) -> list[str]:
    return [p.name for p in state.procs if p.service == service]


def _gray(fault: Fault, state: State) -> Fault:
    """A gray fault aimed at one process: the named replica, or a named service's last one; ScheduleError unless
    its service runs several."""
    service = fault.target if fault.target in topology.names() else state.proc(fault.target).service
    replicas = _replicas(state, service)
    if not replicas:
        state.proc(fault.target)  # SystemUnusable naming the processes there are
    if len(replicas) < 2:
        raise ScheduleError(f"bad schedule: '{fault.at:g}s {fault.label}': {service} runs one process "
                            f"({', '.join(replicas)}), and gray freezes one replica of several; start the system with "
                            "`pullgate up --replicas 2` (or `pullgate chaos --start --replicas 2`)")
    return dataclasses.replace(fault, target=replicas[-1] if fault.target == service else fault.target)


def _one_gray_at_a_time(schedule: list[Fault], state: State) -> None:
    grays = [f for f in schedule if f.kind == "gray"]
    for i, first in enumerate(grays):
        for second in grays[i + 1:]:
            same = state.proc(first.target).service == state.proc(second.target).service
            if same and second.at < first.at + first.duration:
                raise ScheduleError(f"bad schedule: '{second.at:g}s {second.label}' overlaps '{first.at:g}s "
                                    f"{first.label}': a gray fault freezes one replica of a service at a time")


def plan(settings: Settings, state: State, injectable: bool) -> tuple[list[Fault], list[str]]:
    """The schedule to run and notes for the report; InjectionUnavailable if an explicit one needs FaultService,
    ScheduleError if a gray fault names a service with one process."""
    notes: list[str] = []
    if settings.schedule:
        schedule = [_gray(f, state) if f.kind == "gray" else f for f in parse_schedule(settings.schedule)]
        for fault in schedule:
            state.proc(fault.target)
            if fault.injected and not injectable:
                raise InjectionUnavailable(
                    f"'{fault.label}' needs the admin FaultService, but the system was started without "
                    "--allow-fault-injection; restart it with `pullgate up --allow-fault-injection` "
                    "(or use `pullgate chaos --start`), or schedule only kill, freeze, gray and overload")
        _one_gray_at_a_time(schedule, state)
        return schedule, notes
    kinds = list(settings.kinds)
    if not injectable and any(k in INJECTED for k in kinds):
        kinds = [k for k in kinds if k not in INJECTED]
        notes.append("the system runs without --allow-fault-injection: the random schedule leaves out slow, fail "
                     "and hang (they need the admin FaultService)")
    targets = list(settings.targets) or state.names
    for name in targets:
        state.proc(name)
    services = Counter(p.service for p in state.procs)
    replicas = [n for n in targets if services[state.proc(n).service] > 1]
    if "gray" in kinds and not replicas:
        notes.append("no service runs two or more processes among the targets: the random schedule has no gray "
                     "fault (start with --replicas 2 for one)")
    end = settings.duration - settings.limits.heal_bound - 2.0
    return random_schedule(settings.seed, settings.warmup, end, targets, kinds, replicas=replicas,
                           clear=settings.limits.heal_bound + 1.0), notes


class Healing:
    """Sets `done` once every read sent after the faults ended has answered in full for `quiet` seconds."""

    def __init__(self, calls: list[Call], quiet: float) -> None:
        self._calls = calls
        self._quiet = quiet
        self._since: float | None = None
        self.done = asyncio.Event()

    def watch(self, since: float) -> None:
        self._since = since
        self.check()

    def check(self) -> None:
        if self._since is None or self.done.is_set():
            return
        after = [c for c in self._calls if c.read and c.sent >= self._since]
        last_bad = max((c.received for c in after if not c.ok or c.degraded), default=self._since)
        clean = [c for c in after if c.sent >= last_bad]
        if clean and clean[-1].received - last_bad >= self._quiet:
            self.done.set()


async def _pending_settled(data_dir: Path, since: float, within: float) -> bool:
    """Wait (bounded) until no order created since `since` is PENDING; False if some still are."""
    deadline = time.monotonic() + within
    while True:
        with contextlib.suppress(OSError, ValueError, LookupError):
            orders = await asyncio.to_thread(read_orders, data_dir)
            if not any(o.created >= since and o.status == "ORDER_STATUS_PENDING" for o in orders):
                return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.25)


async def chaos(settings: Settings, out: TextIO = sys.stdout) -> Report:
    """Run chaos against the system recorded in `settings.data_dir`; the report (also written to `settings.out`)."""
    before = read_state(settings.data_dir)
    data_dir, access = before.data_dir, before.access
    faults = FaultClient(access)
    checks = await asyncio.gather(*(faults.available(p) for p in before.procs), return_exceptions=True)
    for proc, answer in zip(before.procs, checks, strict=True):
        if isinstance(answer, grpc.aio.AioRpcError) and answer.code() in REFUSED:
            raise SystemUnusable(f"{proc.name} refused the chaos tool's FaultService call as the operator: "
                                 f"{answer.code().name}: {answer.details()}")
    injectable = all(c is True for c in checks)
    schedule, notes = plan(settings, before, injectable)
    limits = settings.limits
    print(f"pullgate chaos: {len(before.procs)} processes in {data_dir}; seed {settings.seed}; "
          f"{len(schedule)} faults: {'; '.join(f'{f.at:g}s {f.label}' for f in schedule) or 'none'}",
          file=out, flush=True)

    record = Record()
    sampler = Sampler(before.addresses("customers")[0], before.addresses("catalog")[0],
                      before.addresses("inventory")[0], access=access)
    watch = MemoryWatch(settings.data_dir)
    spiker: Overload | None = None
    actions = Actions(settings.data_dir, record, faults)
    progress = Progress(out, out.isatty(), lambda: list(actions.current))
    healing = Healing(record.calls, limits.heal_quiet)

    def on_call(call: Call) -> None:
        progress.add(call)
        healing.check()

    load = Load(before.entry, settings.rate, record, settings.seed, settings.deadline,
                settings.mix, settings.max_in_flight, on_call=on_call, access=access)
    stop_watching, stop_load, stop_faults = asyncio.Event(), asyncio.Event(), asyncio.Event()
    workers = contextlib.AsyncExitStack()
    if any(f.kind == "overload" for f in schedule):
        # Started before this process has calls in flight: grpc skips its fork handlers while it has.
        print("overload: starting the load worker processes and measuring capacity ...", file=out, flush=True)
        spiker = actions.overload = await workers.enter_async_context(
            overload(Gateway.of(load.target, access), data_dir, settings.deadline))
    watching = [asyncio.create_task(sampler.run(stop_watching)), asyncio.create_task(watch.run(stop_watching))]
    loop = asyncio.get_running_loop()
    try:
        if spiker is not None:
            capacity = await spiker.measure()
            print(f"overload: capacity {capacity:.0f} OK strong order views/s ({CALLERS} closed-loop callers; "
                  f"{spiker.workers})", file=out, flush=True)
        await asyncio.wait_for(sampler.first.wait(), 30)  # the owners' histories start before the first request
        record.started = time.time()
        origin = loop.time()
        loading = asyncio.create_task(load.run(stop_load))
        showing = asyncio.create_task(progress.run(stop_load))
        faulting = asyncio.create_task(actions.run(schedule, origin, stop_faults))
        try:
            await asyncio.sleep(settings.duration)
            await faulting
            if record.faults:
                over = max(f.end or time.time() for f in record.faults)
                healing.watch(over)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(healing.done.wait(), max(
                        0.0, over + limits.heal_bound + limits.heal_quiet + settings.deadline - time.time()))
        finally:
            stop_faults.set()
            stop_load.set()
            await asyncio.gather(faulting, loading, showing, return_exceptions=True)
        ended = time.time()
        if not await _pending_settled(data_dir, record.started, settings.settle):
            notes.append(f"orders were still PENDING {settings.settle:g}s after the load stopped")
    finally:
        stop_watching.set()
        await asyncio.gather(*watching, return_exceptions=True)
        await workers.aclose()

    try:
        after: State | None = read_state(settings.data_dir)
    except SystemUnusable:
        after = None
    orders = read_orders(data_dir)
    reservations = read_reservations(data_dir)
    check = check_placement(data_dir)
    frozen: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for fault in record.faults:
        if fault.kind in ("freeze", "gray"):
            frozen[before.proc(fault.target).service].append((fault.start, fault.end or ended))
    history = build(sampler, orders, reservations, frozen)
    t0 = record.started
    verdicts = [
        invariants.deadlines(record.calls, limits, t0),
        invariants.provenance(record.calls, history, limits, t0),
        invariants.strong(record.calls, t0),
        invariants.placements(record.calls, orders, check.violations, t0, t0),
        invariants.heal(record.calls, record.faults, limits, t0),
        invariants.processes(before, after, record.kills, watch.peaks(), alive(before.launcher_pid), limits),
        invariants.goodput(record.spikes, record.faults, limits, t0),
        invariants.breakers(record.spikes, record.faults, limits, t0),
        invariants.gray(record.calls, record.faults, limits, t0),
    ]
    shown = {**asdict(settings), "data_dir": str(data_dir), "out": str(settings.out), "mix": dict(settings.mix),
             "schedule": [f.label if not f.at else f"{f.at:g}s {f.label}" for f in schedule],
             "explicit_schedule": bool(settings.schedule), "fault_injection": injectable,
             "capacity_per_s": None if spiker is None else round(spiker.capacity, 1)}
    report = Report(shown, record.calls, record.faults, verdicts, watch.peaks(), t0, record.shed, notes,
                    record.spikes)
    settings.out.mkdir(parents=True, exist_ok=True)
    report.write_json(settings.out / REPORT_FILE)
    if settings.picture:
        timeline.draw(record.calls, record.faults, t0, settings.out / PICTURE_FILE,
                      f"pullgate chaos: seed {settings.seed}, {settings.rate:g} req/s "
                      f"({'every invariant held' if report.held else 'VIOLATED'})", verdicts)
    return report


__all__ = ["PICTURE_FILE", "REPORT_FILE", "Settings", "chaos", "plan"]
