"""Fault injection for tests and chaos only: the `--faults` spec, its parser, the interceptor and the admin service.

Why here and not in a proxy: every pullgate server runs through `pullgate.serving`, so one interceptor gives
every owner and the gateway the same latency and errors on demand, with a seeded random source and an injected
clock so tests stay deterministic. The grammar is in `docs/faults.md`; in short:

    spec    := "" | clause (";" clause)*
    clause  := [target "="] fault ("," fault)*
    target  := service ["." Method]                 catalog, catalog.GetProduct; none means "this server"
    fault   := "delay:" duration ["@" percent]      500ms, 1.5s, 2s (1 ms resolution, at most 1 hour)
             | "error:" CODE ["@" percent]          a grpc.StatusCode name other than OK
             | "hang" ["@" percent]                 wait until the call is cancelled or its deadline passes
    percent := number "%"                           0% to 100%, up to 4 decimals; omitted means 100%

Faults apply only to the application services a server was given, never to health, reflection or the admin
service. Every fault of every clause that matches a call draws its own chance, in the order written: delays
add up, a hang waits for cancellation, the first error that fires aborts the call before the handler runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc

from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.errors import InvalidArgument
from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.server import Behavior, UnaryInterceptor

__all__ = [
    "Clause",
    "Delay",
    "Error",
    "Fault",
    "FaultInjector",
    "FaultInterceptor",
    "FaultService",
    "FaultSpec",
    "FaultSpecError",
    "FaultStats",
    "Hang",
    "parse_faults",
]

log = logging.getLogger("pullgate.faults")


MAX_DELAY = 3600.0
"""The longest delay a spec may ask for, in seconds; for longer, `hang` says what is meant."""

_SERVICE = re.compile(r"[a-z][a-z0-9_-]*")
_METHOD = re.compile(r"[A-Z][A-Za-z0-9]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s)")
_PERCENT_PLACES = 4
_CODES = {code.name: code for code in grpc.StatusCode if code is not grpc.StatusCode.OK}


class FaultSpecError(ValueError):
    """A spec that does not parse; the message names the clause (its position and text) and what is wrong."""

    def __init__(self, problem: str, clause: str | None = None, position: int | None = None) -> None:
        where = "" if clause is None else f"clause {position} {clause!r}: "
        super().__init__(f"bad fault spec: {where}{problem}")
        self.problem = problem
        self.clause = clause
        self.position = position


def _format_percent(percent: float) -> str:
    text = f"{percent:.{_PERCENT_PLACES}f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _check_percent(percent: float) -> None:
    if not 0.0 <= percent <= 100.0:
        raise FaultSpecError(f"percent {percent}% must be between 0% and 100%")
    scaled = percent * 10**_PERCENT_PLACES
    if abs(scaled - round(scaled)) > 1e-6:
        raise FaultSpecError(f"percent {percent}% has more than {_PERCENT_PLACES} decimals")


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
        ms = round(self.seconds * 1000)
        duration = f"{ms // 1000}s" if ms % 1000 == 0 and ms else f"{ms}ms"
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
        if self.service is not None and not _SERVICE.fullmatch(self.service):
            raise FaultSpecError(f"service {self.service!r} must be a lowercase name like catalog")
        if self.method is not None:
            if self.service is None:
                raise FaultSpecError(f"method {self.method!r} needs a service, like catalog.{self.method}")
            if not _METHOD.fullmatch(self.method):
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


def parse_faults(text: str) -> FaultSpec:
    """Parse a spec (grammar in the module docstring); raise FaultSpecError naming the bad clause."""
    if not text.strip():
        return FaultSpec()
    clauses = []
    for position, raw in enumerate(text.split(";"), start=1):
        try:
            clauses.append(_parse_clause(raw.strip()))
        except FaultSpecError as error:
            raise FaultSpecError(error.problem, raw.strip(), position) from None
    return FaultSpec(tuple(clauses))


def _parse_clause(text: str) -> Clause:
    if not text:
        raise FaultSpecError("empty clause (a stray ';'?)")
    service: str | None = None
    method: str | None = None
    body = text
    if "=" in text:
        target, body = (part.strip() for part in text.split("=", 1))
        service, _, method_part = target.partition(".")
        method = method_part if "." in target else None
        if not _SERVICE.fullmatch(service) or (method is not None and not _METHOD.fullmatch(method)):
            raise FaultSpecError(
                f"target {target!r} must be a service like catalog or service.Method like catalog.GetProduct"
            )
    faults = tuple(_parse_fault(part.strip()) for part in body.split(","))
    return Clause(faults, service, method)


def _parse_fault(text: str) -> Fault:
    if not text:
        raise FaultSpecError("empty fault (a stray ','?)")
    what, at, percent_text = text.partition("@")
    percent = _parse_percent(percent_text.strip()) if at else 100.0
    kind, colon, argument = (part.strip() for part in what.partition(":"))
    if kind == "delay":
        if not argument:
            raise FaultSpecError(f"{text!r}: delay needs a duration, like delay:500ms")
        return Delay(_parse_duration(argument), percent)
    if kind == "error":
        code = _CODES.get(argument.upper())
        if code is None:
            raise FaultSpecError(
                f"{text!r}: {argument!r} is not a gRPC status code; use one of {', '.join(_CODES)}"
                if argument
                else f"{text!r}: error needs a status code, like error:UNAVAILABLE"
            )
        return Error(code, percent)
    if kind == "hang":
        if colon:
            raise FaultSpecError(f"{text!r}: hang takes no argument; for a bounded wait use delay:DURATION")
        return Hang(percent)
    raise FaultSpecError(f"{text!r}: unknown fault {kind!r}; use delay:DURATION, error:CODE or hang")


def _parse_duration(text: str) -> float:
    match = _DURATION.fullmatch(text)
    if match is None:
        hint = "needs a unit: ms or s" if _NUMBER.fullmatch(text) else "is not a duration"
        raise FaultSpecError(f"duration {text!r} {hint} (for example 500ms or 1.5s)")
    number, unit = match.groups()
    ms = Decimal(number) * (1000 if unit == "s" else 1)
    if ms != ms.to_integral_value():
        raise FaultSpecError(f"duration {text!r} is finer than 1ms")
    if ms > Decimal(MAX_DELAY) * 1000:
        raise FaultSpecError(f"duration {text!r} is longer than {MAX_DELAY:g}s; use hang to wait for cancellation")
    return int(ms) / 1000


def _parse_percent(text: str) -> float:
    if not text.endswith("%") or not _NUMBER.fullmatch(text[:-1]):
        raise FaultSpecError(f"chance {text!r} must be a percent, like 2% or 0.5%")
    number = text[:-1]
    if Decimal(number) > 100:
        raise FaultSpecError(f"chance {text!r} is more than 100%")
    if len(number.partition(".")[2]) > _PERCENT_PLACES:
        raise FaultSpecError(f"chance {text!r} has more than {_PERCENT_PLACES} decimals")
    return float(number)


@dataclass
class FaultStats:
    """How many faults this server injected, and how many injected waits ended because the call was cancelled."""

    delays: int = 0
    errors: int = 0
    hangs: int = 0
    cancelled: int = 0


class FaultInjector:
    """The faults in force on one server: what the interceptor applies and the admin service changes.

    `rng` returns a float in [0, 1) (pass `random.Random(seed).random` for repeatable tests) and `clock`
    does the waiting, so tests decide both chance and time.
    """

    def __init__(
        self,
        server_name: str,
        spec: FaultSpec | None = None,
        *,
        rng: Callable[[], float] = random.random,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.server_name = server_name
        self._spec = spec or FaultSpec()
        self._rng = rng
        self._clock = clock
        self.stats = FaultStats()

    @property
    def spec(self) -> FaultSpec:
        """The whole spec in force, including clauses for other servers."""
        return self._spec

    def replace(self, spec: FaultSpec) -> FaultSpec:
        """Put `spec` in force for calls that start from now on; return the spec it replaced."""
        previous, self._spec = self._spec, spec
        return previous

    def plan(self, method: str) -> tuple[Fault, ...]:
        """Draw the chances: the faults that fire for one call of `method` (an RPC name), in order."""
        return tuple(
            fault for fault in self._spec.faults_for(self.server_name, method) if self._rng() * 100 < fault.percent
        )

    async def apply(self, faults: Iterable[Fault], method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Carry out a plan: wait for delays and hangs (cancellable), then abort on the first error."""
        for fault in faults:
            if isinstance(fault, Error):
                self.stats.errors += 1
                await context.abort(fault.code, f"injected fault {fault} on {method} (pullgate --faults)")
            elif isinstance(fault, Delay):
                self.stats.delays += 1
                await self._wait(fault.seconds)
            else:
                self.stats.hangs += 1
                await self._wait(math.inf)

    async def _wait(self, seconds: float) -> None:
        try:
            await self._clock.sleep(seconds)
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise


class FaultInterceptor(UnaryInterceptor):
    """Applies the injector's faults to unary-unary calls of the application services, before the handler runs.

    The chances are drawn when the call arrives; a call with nothing to inject gets the handler untouched.
    """

    per_method = False  # faults are drawn per call, so the wrapped handler is not kept

    def __init__(self, injector: FaultInjector, services: Iterable[str]) -> None:
        self._injector = injector
        self._services = frozenset(services)

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior | None:
        path = details.method
        service, _, method = path.lstrip("/").partition("/")
        if service not in self._services:
            return None
        faults = self._injector.plan(method)
        if not faults:
            return None
        injector = self._injector

        async def faulty(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await injector.apply(faults, path, context)
            return await behavior(request, context)

        return faulty


class FaultService(admin_pb2_grpc.FaultServiceServicer):
    """pullgate.admin.v1.FaultService: read and change the faults at run time (only with --allow-fault-injection)."""

    def __init__(self, injector: FaultInjector) -> None:
        self._injector = injector

    def _faults(self, spec: FaultSpec) -> admin_pb2.Faults:
        name = self._injector.server_name
        return admin_pb2.Faults(spec=str(spec), active_spec=str(spec.for_server(name)), server_name=name)

    async def GetFaults(
        self, request: admin_pb2.GetFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.GetFaultsResponse:
        return admin_pb2.GetFaultsResponse(faults=self._faults(self._injector.spec))

    async def SetFaults(
        self, request: admin_pb2.SetFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.SetFaultsResponse:
        try:
            spec = parse_faults(request.spec)
        except FaultSpecError as error:
            raise InvalidArgument("spec", str(error)) from None
        previous = self._injector.replace(spec)
        log.warning("faults set to %r by %s (were %r)", str(spec), context.peer(), str(previous))
        return admin_pb2.SetFaultsResponse(faults=self._faults(spec), previous=self._faults(previous))

    async def ClearFaults(
        self, request: admin_pb2.ClearFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ClearFaultsResponse:
        previous = self._injector.replace(FaultSpec())
        log.warning("faults cleared by %s (were %r)", context.peer(), str(previous))
        return admin_pb2.ClearFaultsResponse(previous=self._faults(previous))
