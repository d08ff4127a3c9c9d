"""The development PKI: what it issues, how it keeps keys private, when it rotates, and that gRPC accepts it."""

from __future__ import annotations

import contextlib
import ipaddress
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from pullgate.security.pki import (
    CA_NAME,
    CLOCK_SKEW,
    LEAF_LIFETIME,
    Pki,
    ensure_dev_pki,
    identity_of,
    issue,
    load_ca,
    new_ca,
    spiffe_id,
    write_ca,
    write_identity,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)  # whole seconds: certificates keep no fractions


def certificate(path: Path) -> x509.Certificate:
    """The certificate in `path`."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in `directory` with its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def mode(path: Path) -> int:
    """The permission bits of `path`."""
    return stat.S_IMODE(path.stat().st_mode)


def test_spiffe_id_names_the_service_in_the_trust_domain() -> None:
    """A SPIFFE id is the trust domain and the service's name."""
    assert spiffe_id("orders") == "spiffe://pullgate.local/orders"
    assert spiffe_id("orders", "example.org") == "spiffe://example.org/orders"


def test_the_ca_is_a_self_signed_ten_year_ca_that_signs_certificates(tmp_path: Path) -> None:
    """The CA is P-256, self-signed, named, valid ten years, and may sign certificates and CRLs only."""
    pki = ensure_dev_pki(tmp_path / "pki", ["orders"], now=NOW)
    ca, key = load_ca(pki)
    assert isinstance(key.curve, ec.SECP256R1)
    assert ca.subject == ca.issuer
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_NAME
    ca.verify_directly_issued_by(ca)
    assert ca.not_valid_before_utc == NOW - CLOCK_SKEW
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == timedelta(days=3650)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    assert usage.value.crl_sign
    assert not usage.value.digital_signature


def test_each_identity_gets_a_thirty_day_certificate_with_its_spiffe_id_first(tmp_path: Path) -> None:
    """A leaf names its service in its first SAN, serves and calls, is no CA, and lasts 30 days from 5 minutes ago."""
    pki = ensure_dev_pki(tmp_path / "pki", ["orders", "gateway"], now=NOW)
    ca, _ = load_ca(pki)
    for name in ("orders", "gateway"):
        leaf = certificate(pki.cert(name))
        leaf.verify_directly_issued_by(ca)
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        assert leaf.not_valid_before_utc == NOW - CLOCK_SKEW
        assert leaf.not_valid_after_utc == NOW - CLOCK_SKEW + timedelta(days=30)
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(sans) == [
            x509.UniformResourceIdentifier(f"spiffe://pullgate.local/{name}"),
            x509.DNSName(name),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        public_key = leaf.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert isinstance(public_key.curve, ec.SECP256R1)
        assert identity_of(pki.cert(name).read_bytes()) == f"spiffe://pullgate.local/{name}"


def test_keys_are_private_and_the_directory_is_closed(tmp_path: Path) -> None:
    """Keys are 0600, certificates 0644, the directory 0700, and no temporary file is left behind."""
    pki = ensure_dev_pki(tmp_path / "pki", ["orders", "gateway"], now=NOW)
    assert mode(pki.directory) == 0o700
    for key in (pki.ca_key, pki.key("orders"), pki.key("gateway")):
        assert mode(key) == 0o600, key
    for cert in (pki.ca, pki.cert("orders"), pki.cert("gateway")):
        assert mode(cert) == 0o644, cert
    assert sorted(p.name for p in pki.directory.iterdir()) == [
        "ca.key", "ca.pem", "gateway.key", "gateway.pem", "orders.key", "orders.pem"]


def test_a_second_call_changes_nothing(tmp_path: Path) -> None:
    """Run again a day later, the PKI rewrites no file: every byte and every mtime stays."""
    pki = ensure_dev_pki(tmp_path / "pki", ["orders", "gateway"], now=NOW)
    before = snapshot(pki.directory)
    ensure_dev_pki(tmp_path / "pki", ["orders", "gateway"], now=NOW + timedelta(days=1))
    assert snapshot(pki.directory) == before


def test_a_certificate_with_less_than_a_third_left_is_reissued_and_the_others_kept(tmp_path: Path) -> None:
    """Past two thirds of its life a certificate is issued again; younger ones and the CA stay as they are."""
    directory = tmp_path / "pki"
    pki = ensure_dev_pki(directory, ["orders"], now=NOW)
    ensure_dev_pki(directory, ["orders", "gateway"], now=NOW + timedelta(days=15))
    kept = snapshot(directory)

    ensure_dev_pki(directory, ["orders", "gateway"], now=NOW + timedelta(days=19))  # orders has 11 days left
    assert snapshot(directory) == kept

    later = NOW + timedelta(days=21)  # orders has under 9 days left of 30, gateway 24
    ensure_dev_pki(directory, ["orders", "gateway"], now=later)
    after = snapshot(directory)
    assert after["orders.pem"] != kept["orders.pem"]
    assert after["orders.key"] != kept["orders.key"]
    assert certificate(pki.cert("orders")).not_valid_before_utc == later - CLOCK_SKEW
    for name in ("ca.pem", "ca.key", "gateway.pem", "gateway.key"):
        assert after[name] == kept[name], name


def test_certificates_of_a_replaced_ca_are_reissued(tmp_path: Path) -> None:
    """When the CA files are replaced, every certificate the old CA signed is issued again by the new one."""
    pki = ensure_dev_pki(tmp_path / "pki", ["orders", "gateway"], now=NOW)
    old = snapshot(pki.directory)
    write_ca(pki.directory, *new_ca("another CA", now=NOW))

    ensure_dev_pki(pki.directory, ["orders", "gateway"], now=NOW)
    ca, _ = load_ca(pki)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "another CA"
    for name in ("orders", "gateway"):
        assert pki.cert(name).read_bytes() != old[f"{name}.pem"][0]
        certificate(pki.cert(name)).verify_directly_issued_by(ca)


def test_a_certificate_from_another_ca_is_reissued(tmp_path: Path) -> None:
    """A certificate signed by a CA with the same name but another key is not the PKI's own, so it is replaced."""
    pki = ensure_dev_pki(tmp_path / "pki", ["orders", "gateway"], now=NOW)
    impostor_ca, impostor_key = new_ca(CA_NAME, now=NOW)
    write_identity(pki.directory, "orders", *issue(impostor_ca, impostor_key, "orders", not_before=NOW,
                                                   not_after=NOW + LEAF_LIFETIME))
    gateway = pki.cert("gateway").read_bytes()

    ensure_dev_pki(pki.directory, ["orders", "gateway"], now=NOW)
    ca, _ = load_ca(pki)
    certificate(pki.cert("orders")).verify_directly_issued_by(ca)
    assert pki.cert("gateway").read_bytes() == gateway


def test_a_missing_ca_key_makes_a_new_ca_and_new_certificates(tmp_path: Path) -> None:
    """Without ca.key the CA cannot sign, so a new CA is made and every certificate issued again."""
    pki = ensure_dev_pki(tmp_path / "pki", ["orders"], now=NOW)
    old_ca, old_leaf = pki.ca.read_bytes(), pki.cert("orders").read_bytes()
    pki.ca_key.unlink()

    ensure_dev_pki(pki.directory, ["orders"], now=NOW)
    assert pki.ca.read_bytes() != old_ca
    assert pki.cert("orders").read_bytes() != old_leaf
    certificate(pki.cert("orders")).verify_directly_issued_by(load_ca(pki)[0])


@pytest.mark.parametrize("name", ["Orders", "1orders", "", "../orders", "or_ders", "orders.", "ca", "a" * 64])
def test_a_bad_name_is_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    """A name that cannot be a file, a DNS label and a SPIFFE path is a ValueError that names it; nothing is made."""
    with pytest.raises(ValueError, match="identity name") as raised:
        ensure_dev_pki(tmp_path / "pki", ["orders", name], now=NOW)
    assert repr(name) in str(raised.value)
    assert not (tmp_path / "pki").exists()


def test_a_naive_time_is_refused(tmp_path: Path) -> None:
    """A time without a zone is a ValueError rather than a guess."""
    with pytest.raises(ValueError, match="no time zone"):
        ensure_dev_pki(tmp_path / "pki", ["orders"], now=datetime(2025, 3, 1))


def test_identity_of_is_the_first_spiffe_uri_or_none() -> None:
    """identity_of reads the SPIFFE id a certificate carries, and None when it carries none."""
    ca, key = new_ca("test CA", now=NOW)
    other, _ = issue(ca, key, "orders", uri="spiffe://elsewhere.example/orders", not_before=NOW,
                     not_after=NOW + LEAF_LIFETIME)
    plain, _ = issue(ca, key, "orders", uri="https://orders.example", not_before=NOW, not_after=NOW + LEAF_LIFETIME)
    assert identity_of(other) == "spiffe://elsewhere.example/orders"
    assert identity_of(plain) is None
    with pytest.raises(ValueError, match="not a PEM certificate"):
        identity_of(b"not a certificate")


def test_issue_refuses_a_key_that_is_not_the_cas(tmp_path: Path) -> None:
    """Signing with a key that does not belong to the CA certificate is an error, not a certificate nobody trusts."""
    ca, _ = new_ca("test CA", now=NOW)
    _, stranger = new_ca("another CA", now=NOW)
    with pytest.raises(ValueError, match="does not belong to the CA certificate"):
        issue(ca, stranger, "orders", not_before=NOW, not_after=NOW + LEAF_LIFETIME)


class RecordingHealth(HealthServicer):  # type: ignore[misc]
    """The standard health servicer, remembering the SPIFFE id of each caller gRPC authenticated."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: list[list[bytes]] = []

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        self.callers.append(context.auth_context().get("peer_spiffe_id", []))
        response: health_pb2.HealthCheckResponse = await super().Check(request, context)
        return response


@contextlib.asynccontextmanager
async def mtls_server(pki: Pki, name: str) -> AsyncIterator[tuple[str, RecordingHealth]]:
    """A health server with `name`'s identity that requires callers to present a certificate from the PKI's CA."""
    health = RecordingHealth()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    credentials = grpc.ssl_server_credentials([(pki.key(name).read_bytes(), pki.cert(name).read_bytes())],
                                              root_certificates=pki.ca.read_bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}", health
    finally:
        await server.stop(None)


async def check(address: str, ca: bytes, key: bytes, cert: bytes) -> health_pb2.HealthCheckResponse:
    """One health Check over mutual TLS, expecting the server to be `orders`."""
    credentials = grpc.ssl_channel_credentials(ca, key, cert)
    async with grpc.aio.secure_channel(address, credentials,
                                       options=[("grpc.ssl_target_name_override", "orders")]) as channel:
        response: health_pb2.HealthCheckResponse = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10)
        return response


async def test_grpc_mutual_tls_authenticates_the_caller_by_spiffe_id(tmp_path: Path) -> None:
    """Over real gRPC mutual TLS the gateway reaches orders, and orders sees the gateway's SPIFFE id."""
    pki = ensure_dev_pki(tmp_path / "pki", ["orders", "gateway"])
    async with mtls_server(pki, "orders") as (address, health):
        response = await check(address, pki.ca.read_bytes(), pki.key("gateway").read_bytes(),
                               pki.cert("gateway").read_bytes())
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert health.callers == [[b"spiffe://pullgate.local/gateway"]]


async def test_grpc_mutual_tls_refuses_a_caller_from_another_ca(tmp_path: Path) -> None:
    """A caller whose certificate another CA signed never gets a call through, whatever its SPIFFE id says."""
    pki = ensure_dev_pki(tmp_path / "pki", ["orders"])
    other = ensure_dev_pki(tmp_path / "other", ["gateway"])
    async with mtls_server(pki, "orders") as (address, health):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await check(address, pki.ca.read_bytes(), other.key("gateway").read_bytes(),
                        other.cert("gateway").read_bytes())
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert health.callers == []
