"""The four owners and the gateway in-process, each on a free port, with faults and stops on demand for read tests."""

from __future__ import annotations

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
from tests.support import start_service

if TYPE_CHECKING:
    from pullgate.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub as GatewayStub

OWNERS = tuple(n for n in topology.names() if n in topology.service("gateway").upstreams)
"""The gateway's owners, in start order (orders after the owners it calls)."""


@dataclass
class System:
    """A running system: the gateway's stub, each owner's fault injector, and a way to stop an owner."""

    stub: GatewayStub
    owners: Upstreams
    injectors: dict[str, FaultInjector]
    servers: dict[str, contextlib.AsyncExitStack] = field(default_factory=dict)

    def fault(self, name: str, spec: str) -> None:
        """Put `spec` (docs/faults.md, without the service prefix) in force on owner `name`; "" clears it."""
        self.injectors[name].replace(parse_faults(spec))

    async def stop(self, name: str) -> None:
        """Stop owner `name` (its port closes; calls to it are refused from now on)."""
        await self.servers.pop(name).aclose()


@contextlib.asynccontextmanager
async def system(data_dir: Path, config: Mapping[str, Any] | None = None) -> AsyncIterator[System]:
    """Run the owners over `data_dir` and a gateway whose config is the parsed TOML table `config`."""
    loaded = pullgate_config.from_mapping(config or {}, "test config")
    async with contextlib.AsyncExitStack() as outer:
        injectors = {name: FaultInjector(name) for name in OWNERS}
        servers: dict[str, contextlib.AsyncExitStack] = {}
        upstreams: dict[str, tuple[str, ...]] = {}
        for name in OWNERS:
            servers[name] = stack = contextlib.AsyncExitStack()
            outer.push_async_callback(stack.aclose)
            theirs = {u: upstreams[u] for u in topology.service(name).upstreams}
            upstreams[name] = (await stack.enter_async_context(
                start_service(name, data_dir, theirs, faults=injectors[name])),)
        owners = Upstreams.connect("gateway", upstreams, loaded.resilience)
        outer.push_async_callback(owners.close)
        servicer = GatewayServicer(owners, loaded.gateway)
        name = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
        binding = Binding(name, gateway_pb2_grpc.add_GatewayServiceServicer_to_server, servicer)
        _, port, _ = await outer.enter_async_context(running([binding]))
        channel = await outer.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        yield System(gateway_pb2_grpc.GatewayServiceStub(channel), owners, injectors, servers)
