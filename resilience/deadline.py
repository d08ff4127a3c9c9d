"""The deadline of the work in progress, carried in a context variable so every outgoing call inherits it.

grpc Python does not propagate an incoming call's deadline to the calls its handler makes. pullgate does it
with a context variable: the server interceptor in `resilience.server` sets it from the incoming call, and
every call through the layer reads it. A deadline only ever tightens: `scope()` takes the earlier of the
current deadline and the new one, so no inner code can grow it back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from resilience.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point in time on a clock after which the work is useless."""

    at: float

    @classmethod
    def after(cls, seconds: float, clock: Clock = SYSTEM_CLOCK) -> Deadline:
        """The deadline `seconds` from now."""
        return cls(clock.now() + seconds)

    def remaining(self, clock: Clock = SYSTEM_CLOCK) -> float:
        """Seconds left; zero or negative once expired."""
        return self.at - clock.now()

    def expired(self, clock: Clock = SYSTEM_CLOCK) -> bool:
        return self.remaining(clock) <= 0.0


_current: ContextVar[Deadline | None] = ContextVar("pullgate_deadline", default=None)


def current() -> Deadline | None:
    """The deadline of the work in progress, or None when nothing bounds it."""
    return _current.get()


def earliest(*deadlines: Deadline | None) -> Deadline | None:
    """The earliest of the given deadlines, ignoring None."""
    found: Deadline | None = None
    for d in deadlines:  # a plain loop: this runs several times per call, min() with a key is slower
        if d is not None and (found is None or d.at < found.at):
            found = d
    return found


@contextlib.contextmanager
def scope(deadline: Deadline | None) -> Iterator[Deadline | None]:
    """Bound the enclosed work by `deadline` as well as by any deadline already in force."""
    effective = earliest(_current.get(), deadline)
    token = _current.set(effective)
    try:
        yield effective
    finally:
        _current.reset(token)
