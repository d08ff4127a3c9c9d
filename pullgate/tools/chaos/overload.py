"""Doing the overload fault: a second process sends strong order views to the gateway at a multiple of the capacity
measured before the run, and every process's breaker counters are read just before and after.

The views come from the open-loop worker processes of `./dev bench overload` (`pullgate.tools.openloop`; the native
one, `pullgate.tools.native`, where it builds, so that the spike's own sending takes little of the machine), not from
the chaos tool's own loop: a spike of hundreds of views a second would stall that loop, and the chaos load's own
timings (the deadline invariant) would then measure the tool instead of the system. Strong views, because every
one reaches all four owners, so the cache hides none of the load (docs/overload.md, "Why these reads").

Capacity is measured once, before the chaos load starts, as the benchmark does: OK views per second that
CALLERS closed-loop callers get, the first WARM seconds not counted. A spike is judged against that capacity scaled
to the cores its own generator and everything else left the system (pullgate.tools.machine): at three times the
load the generator costs three times as much, on the same two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from pullgate.tools import machine, native, scrape
from pullgate.tools.chaos.schedule import Fault
from pullgate.tools.chaos.spike import Answer, Opens, Spike
from pullgate.tools.openloop import Gateway, Phase, Workers

CALLERS = 32
"""Closed-loop callers that measure capacity (the benchmark's number)."""
WARM = 1.0
"""Seconds of closed loop before capacity is counted: connections, caches, the limit's baseline."""
COUNTED = 2.0
"""Seconds of closed loop counted for capacity."""
WORKERS = 2
"""Generator processes: one Python loop cannot keep a schedule of a thousand views a second on this machine."""
CONSISTENCY = "strong"
BREAKER_OPENS = "resilience_breaker_transitions_total"


class NoCapacity(Exception):
    """The system answered no strong view in time before the run, so there is nothing to take a multiple of."""


async def read_opens(data_dir: Path) -> tuple[Opens, list[str]]:
    """Every process's breaker openings so far, by downstream; and the processes that could not be read, with why
    (a frozen process does not answer its metrics endpoint either)."""
    urls = scrape.endpoints(data_dir)
    readings = await asyncio.gather(*(scrape.read(url) for url in urls.values()), return_exceptions=True)
    opens: dict[str, dict[str, float]] = {}
    unread: list[str] = []
    for name, reading in zip(urls, readings, strict=True):
        if isinstance(reading, BaseException):
            unread.append(f"{name}: {type(reading).__name__}: {reading}")
        else:
            opens[name] = reading.by(BREAKER_OPENS, "downstream", state="open")
    return opens, unread


class Overload:
    """The spike's worker processes for one run, the capacity they measured, and the spikes they send."""

    def __init__(self, pool: Workers, gateway: Gateway, data_dir: Path, deadline: float,
                 trace: machine.Trace | None = None) -> None:
        self._pool = pool
        self._gateway = gateway
        self._data_dir = data_dir
        self._deadline = deadline
        self._trace = trace
        self.capacity = 0.0
        self.measured: machine.Share | None = None
        """How the machine's CPU divided while capacity was counted."""

    @property
    def workers(self) -> str:
        """Which load workers send the spike, and at what priority."""
        return self._pool.describe()

    async def measure(self) -> float:
        """OK views per second (within the deadline) from CALLERS closed-loop callers; NoCapacity if none."""
        result, origin = await self._pool.closed_loop([self._gateway], CALLERS, WARM + COUNTED, CONSISTENCY,
                                                      self._deadline)
        if self._trace is not None:
            self._trace.sample()
            self.measured = self._trace.between(origin + WARM, origin + WARM + COUNTED)
        good = [s for s in result.shots
                if s.code == "OK" and s.latency <= self._deadline and WARM <= s.end < WARM + COUNTED]
        self.capacity = len(good) / COUNTED
        if not good:
            codes = sorted({s.code for s in result.shots}) or ["no answer"]
            raise NoCapacity(f"capacity: {CALLERS} callers got no OK strong order view within {self._deadline:g}s "
                             f"({', '.join(codes)}); an overload fault needs a system that answers")
        return self.capacity

    async def spike(self, fault: Fault, stop: asyncio.Event) -> Spike:
        """Send `fault.multiple` x capacity views a second for `fault.duration`, reading the breakers around it."""
        opens_before, unread = await read_opens(self._data_dir)
        before_at = time.time()
        rate = fault.multiple * self.capacity
        result, origin = await self._pool.open_loop([self._gateway], [Phase("spike", fault.duration, rate)],
                                                    CONSISTENCY, self._deadline)
        start = time.time() - (time.monotonic() - origin)
        fair, cpu = None, ""
        if self._trace is not None:
            self._trace.sample()
            during = self._trace.between(origin + 1.0, origin + fault.duration)
            if self.measured is not None and during is not None:
                cpus = os.cpu_count() or 1
                fair = machine.fair_capacity(self.capacity, self.measured, during, cpus)
                cpu = (f"capacity measured with {self.measured.line(cpus)}; the spike after its first second "
                       f"{during.line(cpus)}")
        # Calls the spike caused inside the system (an owner call, a retry) end by the deadline of the view that
        # caused them, so a breaker that opens because of it has opened by then.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self._deadline)
        opens_after, unread_after = await read_opens(self._data_dir)
        return Spike(fault.label, start, fault.duration, rate, self.capacity, self._deadline,
                     [Answer(s.due, s.latency, s.code, s.overloaded) for s in result.shots],
                     opens_before, opens_after, (before_at, time.time()), sorted({*unread, *unread_after}),
                     result.lag(0.99), fair, cpu)


@contextlib.asynccontextmanager
async def overload(gateway: Gateway, data_dir: Path, deadline: float) -> AsyncIterator[Overload]:
    """The worker processes started (Python takes seconds to start here), stopped on exit; they send to `gateway`
    (its address, with the system's CA and a token that may read every order: `Gateway.of`)."""
    pool = await Workers.start(WORKERS, native=await asyncio.to_thread(native.unavailable) is None)
    try:
        async with machine.tracing(lambda: machine.system_pids(data_dir)) as trace:
            yield Overload(pool, gateway, data_dir, deadline, trace)
    finally:
        await pool.close()


__all__ = ["CALLERS", "NoCapacity", "Overload", "overload", "read_opens"]
