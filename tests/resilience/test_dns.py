"""Discovery against a real DNS server (dnsmasq) and real replicas on 127.0.0.2, 127.0.0.3, ... (one port)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from resilience import Downstream, DownstreamConfig, NoReplicas
from resilience.config import CacheConfig, DiscoveryConfig, HedgingConfig, RetryConfig, TimeoutConfig
from resilience.server import DeadlineInterceptor
from tests.resilience.dnsmasq import DOMAIN, Dns, dnsmasq
from tests.resilience.scripted import READ
from tests.support import until

NAME = f"catalog.{DOMAIN}"
CONFIG = DownstreamConfig(
    retry=RetryConfig(enabled=False),
    hedging=HedgingConfig(enabled=False),
    cache=CacheConfig(enabled=False),
    timeout=TimeoutConfig(total=30.0, per_attempt=0.0),
    discovery=DiscoveryConfig(refresh_interval=0.1, min_time_between_resolutions=0.05, query_timeout=1.0),
)
"""Every call one attempt to one replica (no hedge or retry elsewhere), and a quick re-resolution."""


@dataclass
class Replica:
    """A catalog replica: counts its calls; a call for sku "hold" waits for `release` (a call in flight)."""

    ip: str
    calls: int = 0
    holding: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)


class _Servicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.GetProductResponse:
        replica = self.replica
        replica.calls += 1
        if request.sku == "hold":
            replica.holding += 1
            await replica.release.wait()
        return catalog_pb2.GetProductResponse(product=catalog_pb2.Product(sku=request.sku, title=replica.ip))

    async def BatchGetProducts(
        self, request: catalog_pb2.BatchGetProductsRequest, context: grpc.aio.ServicerContext  # type: ignore[type-arg]
    ) -> catalog_pb2.BatchGetProductsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")


@contextlib.asynccontextmanager
async def replicas(ips: list[str]) -> AsyncIterator[tuple[int, dict[str, Replica]]]:
    """A catalog replica on each of `ips`, all on one free port; yields the port and the replicas by ip."""
    for _ in range(20):
        async with contextlib.AsyncExitStack() as stack:
            servers: list[grpc.aio.Server] = []
            port = 0
            try:
                for ip in ips:
                    server = grpc.aio.server(interceptors=[DeadlineInterceptor()])
                    servers.append(server)
                    port = server.add_insecure_port(f"{ip}:{port}")
            except RuntimeError:
                continue  # that port is taken on one of the addresses: choose again
            found = {ip: Replica(ip) for ip in ips}
            for ip, server in zip(ips, servers, strict=True):
                catalog_pb2_grpc.add_CatalogServiceServicer_to_server(_Servicer(found[ip]), server)
                await server.start()
                stack.push_async_callback(server.stop, None)
            yield port, found
            return
    raise RuntimeError(f"no port free on all of {', '.join(ips)}")


async def call(downstream: Downstream, sku: str = "x") -> str:
    """One read; the ip of the replica that answered."""
    result = await downstream.call(READ, catalog_pb2.GetProductRequest(sku=sku), max_staleness=0.0)
    return result.value.product.title


async def call_until(downstream: Downstream, condition: object) -> None:
    """Call again and again until `condition()` holds (each call is an await, not a sleep)."""
    async with asyncio.timeout(20):
        while not condition():  # type: ignore[operator]
            await call(downstream)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Dns, int, dict[str, Replica]]]:
    async with (
        replicas(["127.0.0.2", "127.0.0.3", "127.0.0.4"]) as (port, found),
        dnsmasq(tmp_path, {NAME: ["127.0.0.2"]}) as dns,
    ):
        yield dns, port, found


def catalog(dns: Dns, port: int, host: str = NAME) -> Downstream:
    return Downstream("catalog", [f"dns://{dns.server}/{host}:{port}"], CONFIG)


async def test_a_replica_added_to_the_dns_gets_calls(world: tuple[Dns, int, dict[str, Replica]]) -> None:
    """A replica published in the DNS (hosts file, SIGHUP) gets calls; the one already there keeps its breaker."""
    dns, port, found = world
    downstream = catalog(dns, port)
    try:
        assert {await call(downstream) for _ in range(10)} == {"127.0.0.2"}
        breaker = downstream.stack.get("breaker").breakers[f"127.0.0.2:{port}"]
        dns.publish({NAME: ["127.0.0.2", "127.0.0.3"]})
        await call_until(downstream, lambda: found["127.0.0.3"].calls > 0)
        assert downstream.replicas.live == (f"127.0.0.2:{port}", f"127.0.0.3:{port}")
        assert downstream.stack.get("breaker").breakers[f"127.0.0.2:{port}"] is breaker
        assert found["127.0.0.4"].calls == 0
    finally:
        await downstream.close()


async def test_a_replica_removed_from_the_dns_finishes_its_calls_and_gets_no_more(
        world: tuple[Dns, int, dict[str, Replica]]) -> None:
    """Calls in flight to a removed replica complete without an error; new calls go only to the others."""
    dns, port, found = world
    dns.publish({NAME: ["127.0.0.2", "127.0.0.3"]})
    downstream = catalog(dns, port)
    leaving = found["127.0.0.3"]
    held: list[asyncio.Task[str]] = []
    try:
        await call_until(downstream, lambda: len(downstream.replicas.live) == 2)
        async with asyncio.timeout(20):
            while not leaving.holding:  # calls that wait at their replica, until one waits at the leaving one
                held.append(asyncio.create_task(call(downstream, "hold")))
                await until(lambda: sum(r.holding for r in found.values()) == len(held))
        dns.publish({NAME: ["127.0.0.2"]})
        await call_until(downstream, lambda: downstream.replicas.live == (f"127.0.0.2:{port}",))
        assert f"127.0.0.3:{port}" in downstream.breaker_states()  # leaving: its calls are still in flight
        before = leaving.calls
        assert {await call(downstream) for _ in range(20)} == {"127.0.0.2"}
        assert leaving.calls == before
        for replica in found.values():
            replica.release.set()
        answered = await asyncio.gather(*held)
        assert "127.0.0.3" in answered
        await until(lambda: f"127.0.0.3:{port}" not in downstream.breaker_states())
        assert downstream.replicas.in_flight == {f"127.0.0.2:{port}": 0}
    finally:
        for replica in found.values():
            replica.release.set()
        await downstream.close()


async def test_a_name_with_no_address_is_unavailable_naming_it(world: tuple[Dns, int, dict[str, Replica]]) -> None:
    """A name the DNS has no address for fails UNAVAILABLE, and the message names the downstream and the name."""
    dns, port, _ = world
    downstream = catalog(dns, port, f"nothing.{DOMAIN}")
    try:
        with pytest.raises(NoReplicas) as raised:
            await call(downstream)
        assert raised.value.code is grpc.StatusCode.UNAVAILABLE
        assert str(raised.value) == f"catalog: dns://{dns.server}/nothing.{DOMAIN}:{port} resolves to no address"
    finally:
        await downstream.close()


async def test_every_replica_removed_then_one_back(world: tuple[Dns, int, dict[str, Replica]]) -> None:
    """When the name loses every address calls fail UNAVAILABLE; when one is published again they succeed."""
    dns, port, found = world
    downstream = catalog(dns, port)
    try:
        assert await call(downstream) == "127.0.0.2"
        dns.publish({})
        await until(lambda: not downstream.replicas.live)
        with pytest.raises(NoReplicas, match="resolves to no address"):
            await call(downstream)
        dns.publish({NAME: ["127.0.0.4"]})
        await until(lambda: downstream.replicas.live == (f"127.0.0.4:{port}",))
        assert await call(downstream) == "127.0.0.4"
        assert found["127.0.0.4"].calls == 1
    finally:
        await downstream.close()


async def test_a_dns_server_that_does_not_answer_is_not_no_address() -> None:
    """With no DNS server there, the name cannot be resolved (UNAVAILABLE saying so), which is not "no address"."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        server = f"127.0.0.1:{s.getsockname()[1]}"
    downstream = Downstream("catalog", [f"dns://{server}/{NAME}:50052"], CONFIG)
    try:
        with pytest.raises(NoReplicas, match=f"catalog: dns://{server}/{NAME}:50052 cannot be resolved: {NAME}: "):
            await call(downstream)
    finally:
        await downstream.close()
