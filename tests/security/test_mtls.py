"""Mutual TLS between services over loopback, with certificates the test makes: who gets in, and with what code."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullgate import methods
from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from pullgate.security.pki import Pki
from pullgate.security.setup import SecurityConfig, SecurityFlags, resolve
from pullgate.security.tls import CHECK_EVERY, TlsChannels, TlsFiles
from pullgate.serving import ServeOptions, health_only, running
from pullgate.tools.apps import load_app
from resilience import Downstream, ResilienceError
from tests.resilience.dnsmasq import DOMAIN, dnsmasq
from tests.security.system import LOCAL_POOL, STRANGER, Certificates, secure_system
from tests.support import start_service

RELEASE = inventory_pb2.ReleaseReservationRequest(reservation_id="424242")
"""A reservation nobody holds: releasing it changes nothing, whoever may call the method."""
ANSWERED = (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
"""What inventory answers a caller it lets in."""


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return Certificates.make(tmp_path / "pki")


async def _release(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
    """The code of a ReleaseReservation (OK when it succeeds) and its details."""
    try:
        await inventory_pb2_grpc.InventoryServiceStub(channel).ReleaseReservation(RELEASE, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def test_a_caller_without_a_good_certificate_never_reaches_the_service(
        tmp_path: Path, certificates: Certificates) -> None:
    """No certificate, one from another CA, an expired one: the handshake fails (UNAVAILABLE), nothing runs."""
    foreign_cert, foreign_key = certificates.foreign("orders")
    expired_cert, expired_key = certificates.expired("orders")
    ca = certificates.pki.ca.read_bytes()
    async with secure_system(tmp_path, certificates, ("inventory",)) as addresses:
        for credentials in (grpc.ssl_channel_credentials(ca),
                            grpc.ssl_channel_credentials(ca, foreign_key, foreign_cert),
                            grpc.ssl_channel_credentials(ca, expired_key, expired_cert)):
            async with certificates.channel("inventory", addresses["inventory"], credentials=credentials) as channel:
                code, _ = await _release(channel)
                assert code == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(addresses["inventory"], options=[LOCAL_POOL]) as plaintext:
            assert (await _release(plaintext))[0] == grpc.StatusCode.UNAVAILABLE


async def test_an_identity_the_policy_does_not_grant_the_method_is_denied_by_name(
        tmp_path: Path, certificates: Certificates) -> None:
    """The gateway, catalog and a stranger may not release stock; orders may (the reservation is nobody's)."""
    async with secure_system(tmp_path, certificates, ("inventory",)) as addresses:
        for identity in ("gateway", "catalog", STRANGER):
            async with certificates.channel("inventory", addresses["inventory"], identity) as channel:
                code, details = await _release(channel)
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert f"spiffe://pullgate.local/{identity}" in details
            assert "pullgate.inventory.v1.InventoryService/ReleaseReservation" in details
        async with certificates.channel("inventory", addresses["inventory"], "orders") as channel:
            assert (await _release(channel))[0] in ANSWERED


async def test_health_is_open_to_any_certificate_from_the_ca(tmp_path: Path, certificates: Certificates) -> None:
    async with (secure_system(tmp_path, certificates, ("inventory",)) as addresses,
                certificates.channel("inventory", addresses["inventory"], STRANGER) as channel):
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_server_holding_another_services_certificate_is_refused_by_its_callers(
        tmp_path: Path, certificates: Certificates) -> None:
    """A caller checks that the server is the service it meant: catalog's certificate does not pass for inventory."""
    async with (secure_system(tmp_path, certificates, ("catalog",)) as addresses,
                certificates.channel("inventory", addresses["catalog"], "orders") as channel):
        assert (await _release(channel))[0] == grpc.StatusCode.UNAVAILABLE


async def test_a_rotated_server_certificate_is_served_at_the_next_handshake(
        tmp_path: Path, certificates: Certificates) -> None:
    """The server's files are replaced by a certificate from a second CA: a client that trusts only that CA is
    refused before and let in after, without a restart. A half-written pair (a new certificate beside the old
    key) is not taken: the server goes on with what it had."""
    served = Pki(tmp_path / "served")
    served.directory.mkdir()
    for source, target in ((certificates.pki.cert("inventory"), served.cert("inventory")),
                           (certificates.pki.key("inventory"), served.key("inventory")),
                           (certificates.pki.ca, served.ca)):
        shutil.copy(source, target)
    security = resolve("inventory", SecurityFlags(served.cert("inventory"), served.key("inventory"), served.ca),
                       SecurityConfig())
    second = Certificates.make(tmp_path / "second")
    trusts_second = grpc.ssl_channel_credentials(second.pki.ca.read_bytes(),
                                                 certificates.pki.key("orders").read_bytes(),
                                                 certificates.pki.cert("orders").read_bytes())
    async with start_service("inventory", tmp_path, security=security) as address:
        async with certificates.channel("inventory", address, credentials=trusts_second) as channel:
            assert (await _release(channel))[0] == grpc.StatusCode.UNAVAILABLE
        # Half a rotation: the new certificate, the old key.
        shutil.copy(second.pki.cert("inventory"), served.cert("inventory"))
        async with certificates.channel("inventory", address, "orders") as channel:
            assert (await _release(channel))[0] in ANSWERED
        shutil.copy(second.pki.key("inventory"), served.key("inventory"))
        async with certificates.channel("inventory", address, credentials=trusts_second) as channel:
            assert (await _release(channel))[0] in ANSWERED
    assert security.server is not None and security.server.reloads == 1


async def _code(inventory: Downstream) -> grpc.StatusCode:
    """The code of a ReleaseReservation through the resilient client (OK when it succeeds)."""
    try:
        await inventory.call(methods.RELEASE_RESERVATION, RELEASE)
    except ResilienceError as error:
        return error.code
    return grpc.StatusCode.OK


async def test_a_rotated_client_certificate_is_presented_by_the_next_call(
        tmp_path: Path, certificates: Certificates) -> None:
    """A resilient client's files are replaced (the gateway's certificate by orders'): once the transport has
    looked again (at most a second later; here a fake clock says when), its next call presents the new one."""
    presented = Pki(tmp_path / "presented")
    presented.directory.mkdir()
    shutil.copy(certificates.pki.cert("gateway"), presented.cert("client"))
    shutil.copy(certificates.pki.key("gateway"), presented.key("client"))
    now = [0.0]
    channels = TlsChannels(TlsFiles(presented.cert("client"), presented.key("client"), certificates.pki.ca),
                           clock=lambda: now[0])
    async with secure_system(tmp_path, certificates, ("inventory",)) as addresses:
        inventory = Downstream("inventory", [addresses["inventory"]], channels=channels)
        try:
            assert await _code(inventory) == grpc.StatusCode.PERMISSION_DENIED
            shutil.copy(certificates.pki.key("orders"), presented.key("client"))
            shutil.copy(certificates.pki.cert("orders"), presented.cert("client"))
            now[0] += CHECK_EVERY
            assert await _code(inventory) in ANSWERED  # let in: anything but a refusal
            assert channels.identity == "spiffe://pullgate.local/orders"
        finally:
            await inventory.close()


async def test_a_health_only_port_answers_probes_in_plaintext_and_nothing_else(
        tmp_path: Path, certificates: Certificates) -> None:
    """`--health-port`: a probe without a certificate (Kubernetes' gRPC probes) learns SERVING there, while the
    service's methods stay behind mutual TLS on its own port and are not served on the health port at all."""
    security = certificates.security("catalog")
    options = ServeOptions(name="catalog", data_dir=tmp_path, security=security)
    async with (load_app("catalog")(options) as bindings,
                running(bindings, security=security) as (_, port, health),
                health_only(health, "127.0.0.1", 0) as health_port,
                grpc.aio.insecure_channel(f"127.0.0.1:{health_port}", options=[LOCAL_POOL]) as probe):
        reply = await health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as unserved:
            await catalog_pb2_grpc.CatalogServiceStub(probe).GetProduct(catalog_pb2.GetProductRequest(sku="SKU-001"),
                                                                        timeout=5)
        assert unserved.value.code() == grpc.StatusCode.UNIMPLEMENTED
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[LOCAL_POOL]) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(plaintext).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_replica_found_by_dns_must_prove_it_is_the_service(
        tmp_path: Path, certificates: Certificates) -> None:
    """An address from DNS is checked against the downstream's name, as a given one is: inventory's certificate
    lets orders in; catalog's, at an address the name resolves to, is refused."""
    orders = TlsChannels(TlsFiles(certificates.pki.cert("orders"), certificates.pki.key("orders"), certificates.pki.ca))
    async with (
        secure_system(tmp_path, certificates, ("catalog", "inventory")) as addresses,
        dnsmasq(tmp_path, {f"inventory.{DOMAIN}": ["127.0.0.1"]}) as dns,
    ):
        for served_by, wanted in (("inventory", ANSWERED), ("catalog", (grpc.StatusCode.UNAVAILABLE,))):
            port = addresses[served_by].rpartition(":")[2]
            inventory = Downstream("inventory", [f"dns://{dns.server}/inventory.{DOMAIN}:{port}"], channels=orders)
            try:
                assert await _code(inventory) in wanted
                assert inventory.replicas.live == (f"127.0.0.1:{port}",)  # found: refused by the handshake
            finally:
                await inventory.close()
