"""Durations, written one way wherever a person writes one, so the same text means the same everywhere.

Why here: the layer's config keys take durations, and the layer imports nothing above it, so the services and
tools built on it read their flags, config files, fault specs and schedules with this module too, and all
refuse a bad duration with the same message. The grammar (surrounding whitespace is ignored; nothing else is
accepted):

    duration := number unit               500ms, 2s, 1.5m, 1h
    number   := digits ["." digits]       no sign, no exponent, no leading "."
    unit     := "ms" | "s" | "m" | "h"    milliseconds, seconds, minutes, hours

A setting that holds one value (a command-line flag, a TOML key) also takes a plain number, which is seconds: a
TOML number (`ttl = 2.5`) or the same number as text (`--timeout 2.5`). That is how those settings were always
written. Inside a fault spec or a chaos schedule the unit is required: `delay:500` could mean 500 ms or 500 s.

Durations are read as a float number of seconds, exact to the float nearest the text; any further rule (a
range, a resolution) belongs to the place that reads the value, with its own message.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Final

__all__ = ["DurationError", "Seconds", "format_duration", "parse_duration", "parse_seconds"]

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_PLAIN = re.compile(_NUMBER)
_DURATION = re.compile(rf"({_NUMBER})(ms|s|m|h)")
_UNITS: Final = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}


class DurationError(ValueError):
    """A value that is not a duration. The message is the same wherever durations are read; `value` is what was
    given."""

    def __init__(self, value: object) -> None:
        super().__init__(f"{value!r} is not a duration: use a number with a unit, like 500ms, 2s or 1.5m")
        self.value = value


class _Duration:
    """The marker in `Seconds`: config readers accept a duration for a field annotated with it."""

    def __repr__(self) -> str:
        return "duration"


Seconds = Annotated[float, _Duration()]
"""A duration field: a float number of seconds. A config key of this type also takes a duration (`"500ms"`)."""


def parse_duration(text: str) -> float:
    """The seconds in `text`, a number with a unit (`500ms`, `2s`, `1.5m`, `1h`); DurationError otherwise."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise DurationError(text)
    number, unit = match.groups()
    return float(Fraction(number) * _UNITS[unit])


def parse_seconds(value: object) -> float:
    """The seconds in a setting that holds one value: a number of seconds (a TOML number, or text such as
    `2.5`) or a duration (`500ms`); DurationError otherwise. A number is taken as it is: its range is the
    setting's business."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and _PLAIN.fullmatch(value.strip()):
        return float(Fraction(value.strip()))
    if isinstance(value, str):
        return parse_duration(value)
    raise DurationError(value)


def format_duration(seconds: float) -> str:
    """The text of a duration that parses back to exactly `seconds`: whole seconds as `2s`, whole milliseconds
    as `1500ms` (zero is `0ms`), anything finer as seconds with the decimals it needs (`0.0001s`)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise DurationError(seconds)
    if seconds and seconds == int(seconds):
        return f"{int(seconds)}s"
    ms = round(seconds * 1000)
    if ms / 1000 == seconds:
        return f"{ms}ms"
    return f"{Decimal(repr(seconds)):f}s"
