"""The `--faults` grammar: text to a FaultSpec, refusing a bad spec as a whole and naming the bad clause.

Durations (`delay:500ms`) are the one duration grammar (`resilience.parse_duration`, unit required); a delay
then has rules of its own (whole milliseconds, at most MAX_DELAY), checked after parsing with their own message.
The whole grammar is in the package docstring and docs/faults.md.
"""

from __future__ import annotations

import re
from decimal import Decimal

import grpc

from pullgate.faults.spec import (
    MAX_DELAY,
    METHOD_NAME,
    PERCENT_PLACES,
    SERVICE_NAME,
    Clause,
    Delay,
    Error,
    Fault,
    FaultSpec,
    FaultSpecError,
    Hang,
)
from resilience import DurationError, parse_duration

__all__ = ["FaultSpecError", "parse_faults"]

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_CODES = {code.name: code for code in grpc.StatusCode if code is not grpc.StatusCode.OK}


def parse_faults(text: str) -> FaultSpec:
    """Parse a spec (grammar in the package docstring); raise FaultSpecError naming the bad clause."""
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
        if not SERVICE_NAME.fullmatch(service) or (method is not None and not METHOD_NAME.fullmatch(method)):
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
        return Delay(_parse_delay(argument), percent)
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


def _parse_delay(text: str) -> float:
    """A delay's seconds: a duration, then whole milliseconds and at most MAX_DELAY."""
    try:
        seconds = parse_duration(text)
    except DurationError as error:
        raise FaultSpecError(str(error)) from None
    if not seconds.is_integer() and round(seconds * 1000) / 1000 != seconds:
        raise FaultSpecError(f"duration {text!r} is finer than 1ms")
    if seconds > MAX_DELAY:
        raise FaultSpecError(f"duration {text!r} is longer than {MAX_DELAY:g}s; use hang to wait for cancellation")
    return seconds


def _parse_percent(text: str) -> float:
    if not text.endswith("%") or not _NUMBER.fullmatch(text[:-1]):
        raise FaultSpecError(f"chance {text!r} must be a percent, like 2% or 0.5%")
    number = text[:-1]
    if Decimal(number) > 100:
        raise FaultSpecError(f"chance {text!r} is more than 100%")
    if len(number.partition(".")[2]) > PERCENT_PLACES:
        raise FaultSpecError(f"chance {text!r} has more than {PERCENT_PLACES} decimals")
    return float(number)
