"""Fault schedules, explicit or drawn from a seed, so a chaos run can be repeated exactly.

An explicit schedule is a list of steps separated by `;`, each `AT ACTION TARGET [ARGS] [for DURATION]`:

    2s kill customers                     SIGKILL; the launcher restarts it
    5s freeze catalog for 2s              SIGSTOP, then SIGCONT: a hang, as a partition looks to callers
    8s slow inventory 300ms@50% for 3s    FaultService: delay a share of calls (default 100%)
    12s fail catalog UNAVAILABLE@50% for 3s   FaultService: fail a share of calls with a status code
    16s hang customers 20% for 2s         FaultService: a share of calls never answer
    20s inject inventory.ReserveStock delay:200ms for 4s   any fault spec (docs/faults.md) for one server
    24s gray catalog for 6s               SIGSTOP one replica of several (catalog-1 here), SIGCONT after
    32s overload gateway 3x for 5s        a second process sends strong order views at 3x capacity

TARGET is a process name as `pullgate up` records it (`customers`, `customers-1` for a replica, `gateway`);
`slow`, `fail`, `hang` and `inject` may add `.Method` to hit one RPC only. `gray` takes a service (its last
replica is frozen) or one replica by name; `overload` takes the entry service. AT, DURATION and a delay are
durations with a unit (`500ms`, `2s`, `1.5m`: the one grammar, `resilience.parse_duration`).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pullgate import topology
from pullgate.faults import FaultSpecError, parse_faults
from resilience import parse_duration

KINDS = ("kill", "freeze", "slow", "fail", "hang", "gray", "overload")
"""Every kind a random schedule can draw."""
DEFAULT_KINDS = ("kill", "freeze", "slow", "fail", "hang", "gray")
"""What a random schedule draws unless told: overload only when asked (docs/chaos.md says why)."""
SIGNALS = ("kill", "freeze", "gray")
"""Fault kinds done with a signal."""
INJECTED = ("slow", "fail", "hang")
"""Fault kinds that need the admin FaultService (--allow-fault-injection)."""
MAX_MULTIPLE = 10.0
"""The largest overload, as a multiple of capacity: enough to drown any server, and a bound on the generator."""
MIN_OVERLOAD = 2.0
"""Seconds an overload must last: its goodput is judged from its second second on."""


class ScheduleError(ValueError):
    """A schedule step is wrong; the message names the step and what is wrong."""


@dataclass(frozen=True)
class Fault:
    """One step of a schedule: what to do to which process, when (seconds after the load starts), how long."""

    at: float
    kind: str
    target: str
    duration: float = 0.0
    spec: str = ""
    """For FaultService kinds: the faults for the target's server, e.g. `delay:300ms@50%`."""
    method: str = ""
    multiple: float = 0.0
    """For overload: the rate of the spike as a multiple of the capacity measured before the run."""

    @property
    def injected(self) -> bool:
        return self.kind in INJECTED

    @property
    def process(self) -> str:
        return self.target

    @property
    def label(self) -> str:
        where = f"{self.target}.{self.method}" if self.method else self.target
        text = {"kill": f"kill {where}", "freeze": f"freeze {where}", "gray": f"gray {where}",
                "overload": f"overload {where} {self.multiple:g}x"}.get(self.kind, f"{self.kind} {where} {self.spec}")
        return text if self.kind == "kill" else f"{text} for {self.duration:g}s"

    def server_spec(self, service: str) -> str:
        """The whole spec to send to the target's FaultService (clauses name the server's service)."""
        target = f"{service}.{self.method}" if self.method else service
        return f"{target}={self.spec}"


def _percent(text: str) -> str:
    if not re.fullmatch(r"\d+(?:\.\d+)?%", text):
        raise ValueError(f"{text!r} is not a percentage (try 20%)")
    return text


def _multiple(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)x", text)
    if not match or not 0 < float(match[1]) <= MAX_MULTIPLE:
        raise ValueError(f"{text!r} is not a multiple of capacity: use e.g. 3x (more than 0, at most "
                         f"{MAX_MULTIPLE:g}x)")
    return float(match[1])


def _step(text: str) -> Fault:
    words = text.split()
    duration = 0.0
    if len(words) >= 2 and words[-2] == "for":
        duration = parse_duration(words[-1])
        words = words[:-2]
    if len(words) < 3:
        raise ValueError("expected AT ACTION TARGET [ARGS] [for DURATION]")
    at, kind, target, *args = words
    when = parse_duration(at)
    if kind not in (*KINDS, "inject"):
        raise ValueError(f"unknown action {kind!r}; use one of {', '.join((*KINDS, 'inject'))}")
    process, _, method = target.partition(".")
    if kind == "overload":
        if method or process != topology.ENTRY:
            raise ValueError(f"overload sends order views to the entry service: '{at} overload {topology.ENTRY} "
                             f"3x for 5s', not {target!r}")
        if len(args) != 1:
            raise ValueError(f"overload takes a multiple of capacity, e.g. '{at} overload {topology.ENTRY} 3x for 5s'")
        if duration < MIN_OVERLOAD:
            raise ValueError(f"overload needs a duration of at least {MIN_OVERLOAD:g}s (its goodput is judged from "
                             "its second second on), e.g. 'for 5s'")
        return Fault(when, kind, process, duration, multiple=_multiple(args[0]))
    if kind in SIGNALS:
        if method or args:
            if kind == "gray":
                raise ValueError(f"gray takes only a service or one of its replicas, e.g. '{at} gray catalog for 6s'")
            raise ValueError(f"{kind} takes only a process name, e.g. '{at} {kind} customers'")
        if kind == "kill" and duration:
            raise ValueError("kill takes no duration: the launcher restarts the process")
        if kind in ("freeze", "gray") and not duration:
            raise ValueError(f"{kind} needs a duration, e.g. 'for {'2s' if kind == 'freeze' else '6s'}'")
        return Fault(when, kind, process, duration)
    if not duration:
        raise ValueError(f"{kind} needs a duration, e.g. 'for 3s'")
    if kind == "slow":
        if len(args) != 1:
            raise ValueError("slow takes a delay, e.g. 'slow inventory 300ms@50%'")
        delay, _, share = args[0].partition("@")
        spec = f"delay:{delay}" + (f"@{_percent(share)}" if share else "")
    elif kind == "fail":
        if len(args) != 1:
            raise ValueError("fail takes a status code, e.g. 'fail catalog UNAVAILABLE@50%'")
        spec = f"error:{args[0]}"
    elif kind == "hang":
        if len(args) > 1:
            raise ValueError("hang takes at most a share, e.g. 'hang customers 20%'")
        spec = "hang" + (f"@{_percent(args[0])}" if args else "")
    else:
        if len(args) != 1:
            raise ValueError("inject takes one fault spec, e.g. 'inject inventory delay:200ms,error:INTERNAL@5%'")
        spec = args[0]
        kind = "slow" if spec.startswith("delay") else "fail" if spec.startswith("error") else "hang"
    try:
        parse_faults(f"{process}={spec}")
    except FaultSpecError as error:
        raise ValueError(str(error)) from None
    return Fault(when, kind, process, duration, spec, method)


def parse_schedule(text: str) -> list[Fault]:
    """The steps of an explicit schedule, in time order; ScheduleError naming the first bad step."""
    faults = []
    for number, step in enumerate((s for s in text.split(";") if s.strip()), start=1):
        try:
            faults.append(_step(step))
        except ValueError as error:
            raise ScheduleError(f"bad schedule: step {number} {step.strip()!r}: {error}") from None
    if not faults:
        raise ScheduleError("bad schedule: no steps (e.g. '2s kill customers; 6s freeze catalog for 2s')")
    return sorted(faults, key=lambda f: f.at)


def random_schedule(
    seed: int, start: float, end: float, targets: Sequence[str], kinds: Sequence[str] = DEFAULT_KINDS,
    gap: tuple[float, float] = (6.0, 9.0), replicas: Sequence[str] = (), clear: float = 9.0,
) -> list[Fault]:
    """Faults one at a time between `start` and `end` seconds, drawn from `seed`: the same arguments, the same list.

    A kill is given two seconds for the restart; a gap drawn from `gap` follows every fault (by default longer
    than a breaker's 5 s reset plus a probe), so each fault's effect and the recovery from it can be told apart.
    `replicas`: the processes `gray` may freeze (each one of several of its service); without any, no gray is
    drawn. An overload is drawn only if the entry service is among `targets`. A gray fault or an overload starts
    at least `clear` seconds after the fault before it ends, so the invariants that judge only faults clear of
    others (invariants.py) judge it.
    """
    rng = random.Random(seed)
    names, grays = sorted(targets), sorted(replicas)
    candidates = {k: names for k in KINDS} | {"gray": grays, "overload": [n for n in names if n == topology.ENTRY]}
    chosen = [k for k in KINDS if k in kinds and candidates[k]]
    if not chosen:
        return []
    faults: list[Fault] = []
    at = start
    last_end = -math.inf
    while True:
        kind = rng.choice(chosen)
        target = rng.choice(candidates[kind])
        if kind in ("gray", "overload"):
            at = max(at, last_end + clear)
        if kind == "kill":
            fault, lasts = Fault(round(at, 1), kind, target), 2.0
        elif kind == "freeze":
            fault = Fault(round(at, 1), kind, target, round(rng.uniform(1.5, 4.0), 1))
            lasts = fault.duration
        elif kind == "gray":
            fault = Fault(round(at, 1), kind, target, round(rng.uniform(4.0, 8.0), 1))
            lasts = fault.duration
        elif kind == "overload":
            fault = Fault(round(at, 1), kind, target, round(rng.uniform(3.0, 6.0), 1), multiple=3.0)
            lasts = fault.duration
        else:
            share = rng.choice(("20%", "50%", "100%"))
            spec = {
                "slow": f"delay:{rng.choice((100, 300, 800))}ms@{share}",
                "fail": f"error:UNAVAILABLE@{share}",
                "hang": f"hang@{rng.choice(('10%', '30%'))}",
            }[kind]
            fault = Fault(round(at, 1), kind, target, round(rng.uniform(3.0, 8.0), 1), spec)
            lasts = fault.duration
        if at + lasts > end:
            return faults
        faults.append(fault)
        last_end = at + lasts
        at = last_end + rng.uniform(*gap)


__all__ = ["DEFAULT_KINDS", "INJECTED", "KINDS", "MAX_MULTIPLE", "SIGNALS", "Fault", "ScheduleError", "parse_schedule",
           "random_schedule"]
