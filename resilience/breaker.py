"""Circuit breakers, one per replica, on pybreaker's state machine, driven correctly from asyncio.

pybreaker was written for synchronous calls, so this module does four things by hand:

- Counting. `@breaker` on an `async def` counts nothing (it wraps the coroutine's creation, not its run), and
  `call_async` needs Tornado. `with breaker.calling(): await ...` works on one event loop but binds the
  state object that was current when the call started, and counts every exception, cancellation included.
  So the attempt runs outside pybreaker, and its outcome (resilience.outcome) is then replayed into
  pybreaker's *current* state: `owner_failed` as a failure, `owner_answered` as a success, DROPPED
  (cancellation, a hedge loser, a caller that left) as nothing at all.
- Half-open admits exactly one probe at a time. pybreaker lets every concurrent caller through; here the
  first caller holds the probe slot and the others fail fast until the probe ends.
- Time. pybreaker reads `datetime.now()` to leave the open state; that clock cannot be injected. pybreaker's
  own reset_timeout is set out of reach and this module moves open -> half-open on the injected clock, so
  tests drive it by moving time.
- Observation. State changes are logged, and passed to listeners `(downstream, replica, old, new)`.

A replica that joins the set later (resilience.replicas) gets a closed breaker; one that leaves keeps its
breaker until its last attempt has ended.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pybreaker

from resilience.clock import SYSTEM_CLOCK, Clock
from resilience.config import BreakerConfig
from resilience.context import Call, CallContext
from resilience.errors import CircuitOpen
from resilience.instruments import BREAKER_REJECTIONS, BREAKER_TRANSITIONS, event, labels, watch_breaker
from resilience.outcome import classify

log = logging.getLogger("resilience.breaker")

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
_FOREVER = 10.0 * 365 * 24 * 3600  # pybreaker's own reset_timeout: never reached, we move to half-open

StateListener = Callable[[str, str, str, str], None]
"""(downstream, replica, old state, new state); states are "closed", "open", "half-open"."""


def _raise(error: BaseException) -> None:
    raise error


def _nothing() -> None:
    return None


class ReplicaBreaker:
    """One replica's breaker: pybreaker's counters and states, our admission and clock."""

    def __init__(self, downstream: str, replica: str, config: BreakerConfig, clock: Clock) -> None:
        self.downstream = downstream
        self.replica = replica
        self._clock = clock
        self._reset_timeout = config.reset_timeout
        self._opened_at = 0.0
        self._probing = False
        self._healthy = True
        """Closed with no failure counted: what almost every call finds, answered without asking pybreaker."""
        self.listeners: list[StateListener] = []
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=config.fail_max,
            reset_timeout=_FOREVER,
            throw_new_error_on_trip=False,
            listeners=[_Relay(self)],
            name=f"{downstream}/{replica}",
        )
        watch_breaker(self)

    @property
    def state(self) -> str:
        return str(self._breaker.current_state)

    @property
    def usable(self) -> bool:
        """Would a call be admitted now (without taking the probe slot)?"""
        state = self.state
        if state == CLOSED:
            return True
        if state == OPEN:
            return self._clock.now() - self._opened_at >= self._reset_timeout
        return not self._probing

    def admit(self) -> bool | None:
        """None: refused. False: admitted. True: admitted as the half-open probe (call `done(probe=True)`)."""
        if self._healthy:
            return False
        state = self.state
        if state == CLOSED:
            return False
        if state == OPEN:
            if self._clock.now() - self._opened_at < self._reset_timeout:
                return None
            self._breaker.half_open()
            self._healthy = False
        if self._probing:
            return None
        self._probing = True
        return True

    def record(self, error: BaseException | None, probe: bool) -> None:
        """Replay an attempt's outcome into pybreaker's current state."""
        if probe:
            self._probing = False
        elif error is None and self._healthy:
            return  # a success on a healthy closed breaker changes nothing; skip pybreaker's lock and listeners
        outcome = classify(error)
        try:
            if outcome.owner_failed:
                assert error is not None
                self._breaker.call(_raise, error)
            elif outcome.owner_answered:
                self._breaker.call(_nothing)
        except BaseException:
            pass
        self._healthy = self.state == CLOSED and self._breaker.fail_counter == 0

    def _changed(self, old: str, new: str) -> None:
        if new == OPEN:
            self._opened_at = self._clock.now()
        log.warning("breaker %s/%s: %s -> %s", self.downstream, self.replica, old, new)
        BREAKER_TRANSITIONS.add(1, {"downstream": self.downstream, "replica": self.replica, "state": new})
        event("breaker state change", {"resilience.replica": self.replica, "resilience.breaker.from": old,
                                       "resilience.breaker.to": new})
        for listener in self.listeners:
            listener(self.downstream, self.replica, old, new)


class _Relay(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: ReplicaBreaker) -> None:
        self._owner = owner

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old = old_state.name if old_state is not None else "none"
        self._owner._changed(old, new_state.name)


class Breaker:
    """Fails an attempt fast when its replica's breaker is open; otherwise runs it and records the outcome."""

    def __init__(
        self, downstream: str, replicas: tuple[str, ...], config: BreakerConfig, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.downstream = downstream
        self._config = config
        self._clock = clock
        self._listeners: list[StateListener] = []
        self.breakers = {r: ReplicaBreaker(downstream, r, config, clock) for r in replicas}

    def joined(self, replica: str) -> None:
        """A new replica (resilience.replicas): a closed breaker, with the listeners the others have."""
        breaker = self.breakers[replica] = ReplicaBreaker(self.downstream, replica, self._config, self._clock)
        breaker.listeners.extend(self._listeners)

    def left(self, replica: str) -> None:
        """A removed replica whose last attempt has ended: its breaker goes (and leaves the state gauge)."""
        self.breakers.pop(replica, None)

    def usable(self, replica: str) -> bool:
        return self.breakers[replica].usable

    def state_of(self, replica: str) -> str:
        """The breaker state of `replica`: "closed", "open" or "half-open"; "removed" once it has left the set."""
        breaker = self.breakers.get(replica)
        return "removed" if breaker is None else breaker.state

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)
        for breaker in self.breakers.values():
            breaker.listeners.append(listener)

    async def __call__(self, request: Any, ctx: CallContext, inner: Call) -> Any:
        assert ctx.replica is not None, "Balance sits above Breaker"
        breaker = self.breakers[ctx.replica]
        probe = breaker.admit()
        if probe is None:
            BREAKER_REJECTIONS.add(1, labels(self.downstream, ctx.method.descriptor.name, replica=ctx.replica))
            event("breaker rejected", {"resilience.replica": ctx.replica, "resilience.breaker.state": breaker.state})
            raise CircuitOpen(self.downstream, ctx.replica)
        try:
            response = await inner(request, ctx)
        except BaseException as error:
            breaker.record(error, probe)
            raise
        breaker.record(None, probe)
        return response
