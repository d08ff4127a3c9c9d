"""How much the work in progress matters, carried like the deadline so every hop knows what to shed first.

Under overload a server refuses something; criticality says what. It travels in request metadata
(`resilience-criticality: SHEDDABLE`), a server interceptor puts it in a context variable for the handler
(resilience.server.AdmissionInterceptor), and the transport attaches it to every call made while serving, so
it crosses hops as the deadline does. The four levels are Google's (SRE book, "Handling Overload"):

    CRITICAL_PLUS    the few requests whose failure users see at once and that must never be shed first
    CRITICAL         the default: a request nobody labelled, a write (PlaceOrder)
    SHEDDABLE_PLUS   work that may be refused under load and tried again later (batch, prefetch)
    SHEDDABLE        work that may be refused under load and has a fallback (reads that may go stale)

All four exist on the wire from the start so that a server never meets a name it does not know from a newer
caller: a name it does not know counts as no criticality at all (the method's own), which would raise it.

A caller may lower the criticality of what it asks for, never raise it: a server takes the lower of the
incoming level and the method's own (`effective()`). An absent, unknown or garbled value counts as absent.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

METADATA_KEY = "resilience-criticality"
"""The request metadata key; its value is a level's name, e.g. SHEDDABLE."""


class Criticality(enum.IntEnum):
    """A request's criticality; a higher value matters more, so `min()` is the one to shed first."""

    SHEDDABLE = 0
    SHEDDABLE_PLUS = 1
    CRITICAL = 2
    CRITICAL_PLUS = 3


DEFAULT = Criticality.CRITICAL
"""The criticality of a method nobody gave one (Google's default too)."""

_BY_NAME: dict[str, Criticality] = {level.name: level for level in Criticality}

_OUTGOING: dict[Criticality, tuple[tuple[str, str], ...]] = {
    level: ((METADATA_KEY, level.name),) for level in Criticality
}
"""The metadata an outgoing call carries at each level, made once (the transport attaches one per call)."""

_current: ContextVar[Criticality | None] = ContextVar("pullgate_criticality", default=None)


def current() -> Criticality | None:
    """The criticality of the work in progress, or None outside any request (a CLI, a load generator)."""
    return _current.get()


def outgoing_metadata() -> tuple[tuple[str, str], ...] | None:
    """The metadata that carries the current criticality to the next hop; None when there is none."""
    level = _current.get()
    return None if level is None else _OUTGOING[level]


def parse(value: Any) -> Criticality | None:
    """The level a metadata value names, or None for anything else (never raises).

    The exact name is what the layer sends; other spellings (`sheddable`, ` CRITICAL `) are accepted, anything
    else (an unknown name, a number, bytes) is treated as if no criticality had been sent.
    """
    level = _BY_NAME.get(value) if isinstance(value, str) else None
    if level is None and isinstance(value, str):
        level = _BY_NAME.get(value.strip().upper())
    return level


def incoming(metadata: Iterable[tuple[str, Any]] | None) -> Criticality | None:
    """The criticality a request's metadata asks for, or None when it asks for none it can (first value wins)."""
    for key, value in metadata or ():
        if key == METADATA_KEY:
            return parse(value)
    return None


def effective(asked: Criticality | None, own: Criticality) -> Criticality:
    """What a request gets: the lower of what the caller asked and the method's own; the method's own if none."""
    return own if asked is None or asked >= own else asked


@contextlib.contextmanager
def scope(level: Criticality) -> Iterator[Criticality]:
    """Run the enclosed work (and every call it makes) at `level`, or lower if a lower one is in force already."""
    found = _current.get()
    effective_level = level if found is None or level < found else found
    token = _current.set(effective_level)
    try:
        yield effective_level
    finally:
        _current.reset(token)
