"""The values of a fault spec (Delay, Error, Hang, Clause, FaultSpec), each checked on construction.

Why values and not text: the injector, the admin service and the tests all work with these, and `str()` of
each is its canonical form, which parses back to an equal value. A spec built in code is held to the same
rules as a parsed one, so FaultSpecError is raised here and the grammar only adds which clause it was in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc

from resilience import format_duration

__all__ = ["MAX_DELAY", "Clause", "Delay", "Error", "Fault", "FaultSpec", "FaultSpecError", "Hang"]

MAX_DELAY = 3600.0
"""The longest delay a spec may ask for, in seconds; for longer, `hang` says what is meant."""

SERVICE_NAME = re.compile(r"[a-z][a-z0-9_-]*")
METHOD_NAME = re.compile(r"[A-Z][A-Za-z0-9]*")
PERCENT_PLACES = 4


class FaultSpecError(ValueError):
    """A spec that does not parse; the message names the clause (its position and text) and what is wrong."""

    def __init__(self, problem: str, clause: str | None = None, position: int | None = None) -> None:
        where = "" if clause is None else f"clause {position} {clause!r}: "
        super().__init__(f"bad fault spec: {where}{problem}")
        self.problem = problem
        self.clause = clause
        self.position = position


def _format_percent(percent: float) -> str:
    text = f"{percent:.{PERCENT_PLACES}f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _check_percent(percent: float) -> None:
    if not 0.0 <= percent <= 100.0:
        raise FaultSpecError(f"percent {percent}% must be between 0% and 100%")
    scaled = percent * 10**PERCENT_PLACES
    if abs(scaled - round(scaled)) > 1e-6:
        raise FaultSpecError(f"percent {percent}% has more than {PERCENT_PLACES} decimals")


@dataclass(frozen=True)
class Delay:
    """Wait `seconds` before the handler runs; a cancelled call stops waiting at once."""

    seconds: float
    percent: float = 100.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.seconds <= MAX_DELAY:
            raise FaultSpecError(f"delay {self.seconds}s must be between 0s and {MAX_DELAY:g}s")
        ms = self.seconds * 1000
        if abs(ms - round(ms)) > 1e-6:
            raise FaultSpecError(f"delay {self.seconds}s is finer than 1ms")
        _check_percent(self.percent)

    def __str__(self) -> str:
        duration = format_duration(round(self.seconds * 1000) / 1000)  # whole seconds as s, otherwise ms
        return f"delay:{duration}@{_format_percent(self.percent)}"


@dataclass(frozen=True)
class Error:
    """Abort the call with `code` before the handler runs; the message says the error was injected."""

    code: grpc.StatusCode
    percent: float = 100.0

    def __post_init__(self) -> None:
        if self.code is grpc.StatusCode.OK:
            raise FaultSpecError("error:OK is not an error")
        _check_percent(self.percent)

    def __str__(self) -> str:
        return f"error:{self.code.name}@{_format_percent(self.percent)}"


@dataclass(frozen=True)
class Hang:
    """Never run the handler: wait until the caller cancels, the deadline passes or the server stops."""

    percent: float = 100.0

    def __post_init__(self) -> None:
        _check_percent(self.percent)

    def __str__(self) -> str:
        return f"hang@{_format_percent(self.percent)}"


Fault = Delay | Error | Hang


@dataclass(frozen=True)
class Clause:
    """Faults for one target: a service (`catalog`), one of its methods (`catalog.GetProduct`) or, with no
    service, whichever server reads the spec."""

    faults: tuple[Fault, ...]
    service: str | None = None
    method: str | None = None

    def __post_init__(self) -> None:
        if not self.faults:
            raise FaultSpecError("a clause needs at least one fault")
        if self.service is not None and not SERVICE_NAME.fullmatch(self.service):
            raise FaultSpecError(f"service {self.service!r} must be a lowercase name like catalog")
        if self.method is not None:
            if self.service is None:
                raise FaultSpecError(f"method {self.method!r} needs a service, like catalog.{self.method}")
            if not METHOD_NAME.fullmatch(self.method):
                raise FaultSpecError(f"method {self.method!r} must be an RPC name like GetProduct")

    def applies_to(self, server: str, method: str | None = None) -> bool:
        """Whether this clause names `server` (or no server), and `method` when it names one."""
        if self.service is not None and self.service != server:
            return False
        return self.method is None or method is None or self.method == method

    def __str__(self) -> str:
        body = ",".join(str(fault) for fault in self.faults)
        if self.service is None:
            return body
        target = self.service if self.method is None else f"{self.service}.{self.method}"
        return f"{target}={body}"


@dataclass(frozen=True)
class FaultSpec:
    """A whole `--faults` spec: clauses in the order written. `str()` is its canonical form, which parses back
    to an equal spec."""

    clauses: tuple[Clause, ...] = ()

    def for_server(self, server: str) -> FaultSpec:
        """Only the clauses that can apply to `server`."""
        return FaultSpec(tuple(c for c in self.clauses if c.service is None or c.service == server))

    def faults_for(self, server: str, method: str) -> tuple[Fault, ...]:
        """Every fault for a call of `method` (an RPC name like GetProduct) on `server`, in the order written."""
        return tuple(f for c in self.clauses if c.applies_to(server, method) for f in c.faults)

    def __bool__(self) -> bool:
        return bool(self.clauses)

    def __str__(self) -> str:
        return ";".join(str(clause) for clause in self.clauses)
