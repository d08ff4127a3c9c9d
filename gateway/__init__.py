"""The aggregating gateway: serves read views joined from the owning services, and forwards writes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import ServiceDescriptor

from gateway.servicer import GatewayServicer
from pullgate.config import load
from pullgate.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from pullgate.methods import Upstreams
from pullgate.serving import Binding, ServeOptions
from resilience import Criticality

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]


def criticality(service: ServiceDescriptor) -> dict[str, Criticality]:
    """Each method's own criticality, from its contract: a read (NO_SIDE_EFFECTS) is SHEDDABLE, since under
    overload it goes first and can fall back to cached or stale data; anything else (PlaceOrder) is CRITICAL.
    A caller may lower these, never raise them; the owners take whatever the gateway sends on."""
    reads = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    return {f"/{service.full_name}/{m.name}": Criticality.SHEDDABLE
            if m.GetOptions().idempotency_level == reads else Criticality.CRITICAL for m in service.methods}


@contextlib.asynccontextmanager
async def app(options: ServeOptions) -> AsyncIterator[Sequence[Binding]]:
    """The gateway's servicer with a resilient client per owner, closed when the server stops."""
    config = load(options.config_file)
    owners = Upstreams.connect(options.name, options.upstreams, config.resilience,
                               channels=options.security.channels)
    try:
        yield [Binding(SERVICE.full_name, gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
                       GatewayServicer(owners, config.gateway), criticality(SERVICE))]
    finally:
        await owners.close()


__all__ = ["app", "criticality"]
