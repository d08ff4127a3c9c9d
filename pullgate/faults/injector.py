"""The faults in force on one server, drawn per call and carried out: what the interceptor applies and the admin
service changes.

Why a class of its own: chance and time are injected (`rng`, `clock`), so tests decide both, and the counts of
what was injected (`stats`) live in one place for tests and chaos runs to compare against what clients saw.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from pullgate.faults.spec import Delay, Error, Fault, FaultSpec
from resilience import SYSTEM_CLOCK, Clock

__all__ = ["FaultInjector", "FaultStats"]


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
