"""The four owners and the gateway in-process, each on a free port, with faults and stops on demand for read tests.

Time is the test's: the owners' injected delays and hangs, the gateway's Downstreams (caches, staleness,
breakers, hedges, budgets) and its deadline interceptor all run on one FakeClock, which moves only when the test
advances it. What stays real is grpc's own deadline on the wire: the gateway sends each attempt the time left by
its clock, and grpc ends the attempt when that much real time has passed. On a clock that stands still, the
gateway would never see the caller's deadline come closer, and each retry would be sent a full slice again; so a
test whose subject is that deadline runs the gateway on the real clock (`gateway_clock=SYSTEM_CLOCK`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from gateway.servicer import GatewayServicer
from pullgate import config as pullgate_config
from pullgate import topology
from pullgate.faults import FaultInjector, parse_faults
from pullgate.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from pullgate.methods import Upstreams
from pullgate.serving import Binding, running
from resilience.clock import Clock
from resilience.testing import FakeClock
from tests.support import start_service

if TYPE_CHECKING:
    from pullgate.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub as GatewayStub

OWNERS = tuple(n for n in topology.names() if n in topology.service("gateway").upstreams)
"""The gateway's owners, in start order (orders after the owners it calls)."""


class _FaultClock:
    """The system's clock as one owner's fault injector sees it, counting the injected waits that have begun."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.began = 0
        self._began = asyncio.Event()

    def now(self) -> float:
        return self._clock.now()

    async def sleep(self, seconds: float) -> None:
        self.began += 1
        self._began.set()
        # FakeClock.sleep files the wait before it first yields, so whoever the event wakes finds it filed.
        await self._clock.sleep(seconds)

    async def began_waiting(self, count: int) -> None:
        while self.began < count:
            self._began.clear()
            await self._began.wait()


@dataclass
class System:
    """A running system: the gateway's stub, the test's clock, each owner's fault injector, and a way to stop one."""

    stub: GatewayStub
    owners: Upstreams
    clock: FakeClock
    injectors: dict[str, FaultInjector]
    fault_clocks: dict[str, _FaultClock]
    servers: dict[str, contextlib.AsyncExitStack] = field(default_factory=dict)

    def fault(self, name: str, spec: str) -> None:
        """Put `spec` (docs/faults.md, without the service prefix) in force on owner `name`; "" clears it.

        An injected delay or hang waits on `clock`: a delay ends when the test advances the clock past it."""
        self.injectors[name].replace(parse_faults(spec))

    async def held(self, name: str, calls: int = 1) -> None:
        """Wait until `calls` calls to owner `name` have begun an injected delay or hang (so advancing the clock
        now reaches them)."""
        async with asyncio.timeout(10.0):  # a guard, not a wait: fail rather than hang if no call arrives
            await self.fault_clocks[name].began_waiting(calls)

    async def stop(self, name: str) -> None:
        """Stop owner `name` (its port closes; calls to it are refused from now on)."""
        await self.servers.pop(name).aclose()


@contextlib.asynccontextmanager
async def system(
    data_dir: Path, config: Mapping[str, Any] | None = None, *, gateway_clock: Clock | None = None
) -> AsyncIterator[System]:
    """Run the owners over `data_dir` and a gateway whose config is the parsed TOML table `config`.

    The owners' injected faults wait on the system's FakeClock, and so does the gateway unless `gateway_clock` is
    given. The owners themselves serve on the real clock (their own deadlines and calls are not under test here)."""
    loaded = pullgate_config.from_mapping(config or {}, "test config")
    clock = FakeClock()
    gateway_clock = gateway_clock or clock
    fault_clocks = {name: _FaultClock(clock) for name in OWNERS}
    async with contextlib.AsyncExitStack() as outer:
        injectors = {name: FaultInjector(name, clock=fault_clocks[name]) for name in OWNERS}
        servers: dict[str, contextlib.AsyncExitStack] = {}
        upstreams: dict[str, tuple[str, ...]] = {}
        for name in OWNERS:
            servers[name] = stack = contextlib.AsyncExitStack()
            outer.push_async_callback(stack.aclose)
            theirs = {u: upstreams[u] for u in topology.service(name).upstreams}
            upstreams[name] = (await stack.enter_async_context(
                start_service(name, data_dir, theirs, faults=injectors[name])),)
        owners = Upstreams.connect("gateway", upstreams, loaded.resilience, gateway_clock)
        outer.push_async_callback(owners.close)
        servicer = GatewayServicer(owners, loaded.gateway)
        name = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
        binding = Binding(name, gateway_pb2_grpc.add_GatewayServiceServicer_to_server, servicer)
        _, port, _ = await outer.enter_async_context(running([binding], clock=gateway_clock))
        channel = await outer.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        yield System(gateway_pb2_grpc.GatewayServiceStub(channel), owners, clock, injectors, fault_clocks, servers)
