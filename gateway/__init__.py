"""The aggregating gateway: serves read views joined from the owning services, and forwards writes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from gateway.servicer import GatewayServicer
from pullgate.config import load
from pullgate.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from pullgate.methods import Upstreams
from pullgate.serving import Binding, ServeOptions


@contextlib.asynccontextmanager
async def app(options: ServeOptions) -> AsyncIterator[Sequence[Binding]]:
    """The gateway's servicer with a resilient client per owner, closed when the server stops."""
    config = load(options.config_file)
    owners = Upstreams.connect(options.name, options.upstreams, config.resilience)
    try:
        yield [Binding(gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name,
                       gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
                       GatewayServicer(owners, config.gateway))]
    finally:
        await owners.close()


__all__ = ["app"]
