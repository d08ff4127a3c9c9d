"""The development PKI: a local CA and one certificate per service, so `pullgate up` can run every call over mutual TLS.

A service's identity is the SPIFFE id in its certificate's first URI SAN (`spiffe://pullgate.local/orders`), not
its address, so the call policy can name callers and a port change cannot impersonate anyone. Development needs
the same shape as production without an operator: `ensure_dev_pki` makes a CA once, gives each service a short-lived
certificate, and re-issues one when it is missing, signed by another CA, or past two thirds of its life (the
rotation story for dev). Keys never exist on disk with loose permissions or half-written: each file is written to a
temporary file created 0600 (certificates then 0644) in the same directory and moved into place.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("pullgate.security.pki")

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey
"""Every key here is EC P-256: small, fast, and what every TLS stack accepts."""

TRUST_DOMAIN = "pullgate.local"
CA_NAME = "pullgate development CA"
CA_LIFETIME = timedelta(days=3650)
LEAF_LIFETIME = timedelta(days=30)
CLOCK_SKEW = timedelta(minutes=5)
"""Certificates start this long before they are issued, so a peer whose clock is a little behind accepts them."""

KEY_MODE = 0o600
CERT_MODE = 0o644
DIRECTORY_MODE = 0o700

_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")  # a DNS label, so it can also be the certificate's DNS SAN
_RESERVED = frozenset({"ca"})  # ca.pem and ca.key are the CA's own files
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")  # what the SPIFFE spec allows in a trust domain
_SPIFFE = "spiffe://"


def check_name(name: str) -> str:
    """`name` itself if it can be an identity (and a file name, and a DNS label); ValueError naming it otherwise."""
    if name in _RESERVED:
        raise ValueError(f"identity name {name!r} is reserved: ca.pem and ca.key are the CA's own files")
    if not _NAME.fullmatch(name):
        raise ValueError(f"identity name {name!r} must match [a-z][a-z0-9-]* and be at most 63 characters")
    return name


def spiffe_id(name: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """The SPIFFE id of service `name`, e.g. `spiffe://pullgate.local/orders`."""
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise ValueError(f"trust domain {trust_domain!r} must match [a-z0-9._-]+")
    return f"{_SPIFFE}{trust_domain}/{check_name(name)}"


@dataclass(frozen=True)
class Pki:
    """Where a PKI's files are: `ca.pem` and `ca.key`, and `<name>.pem` and `<name>.key` for each identity."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    def cert(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}.pem"

    def key(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}.key"


def ensure_dev_pki(
    directory: Path,
    identities: Iterable[str],
    *,
    trust_domain: str = TRUST_DOMAIN,
    now: datetime | None = None,
) -> Pki:
    """Make sure `directory` holds a CA and a current certificate for each identity; touch nothing that is fine.

    The CA is made if ca.pem or ca.key is missing, if they do not belong together (a crash between writing them),
    or if it would expire before a new certificate does. A certificate is (re-)issued if it or its key is missing
    or unreadable, they do not belong together, it is not signed by the current CA, it carries another identity,
    or less than a third of its lifetime is left.
    """
    wanted = {spiffe_id(name, trust_domain): name for name in identities}  # every name checked before any write
    now = _aware(now)
    pki = Pki(directory)
    _make_directory(directory)
    ca_cert, ca_key = _ensure_ca(pki, now)
    for identity, name in wanted.items():
        reason = _reissue_reason(pki, name, identity, ca_cert, now)
        if reason is None:
            continue
        log.info("issuing a certificate for %s (%s): %s", name, identity, reason)
        not_before = now - CLOCK_SKEW
        cert_pem, key_pem = issue(ca_cert, ca_key, name, trust_domain=trust_domain,
                                  not_before=not_before, not_after=not_before + LEAF_LIFETIME)
        write_identity(directory, name, cert_pem, key_pem)
    return pki


def new_ca(common_name: str, *, now: datetime | None = None) -> tuple[x509.Certificate, PrivateKey]:
    """A new self-signed CA that may sign leaf certificates only, valid for CA_LIFETIME from `now`."""
    now = _aware(now)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now - CLOCK_SKEW + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    name: str,
    *,
    trust_domain: str = TRUST_DOMAIN,
    not_before: datetime,
    not_after: datetime,
    uri: str | None = None,
) -> tuple[bytes, bytes]:
    """A new key and a certificate for `name` signed by the CA, as (certificate PEM, key PEM).

    The certificate's only URI SAN, and its first SAN, is `uri` (by default the SPIFFE id of `name`): gRPC reports
    a peer's SPIFFE id only when there is exactly one. Its DNS SANs are `name` and localhost, its IP SANs 127.0.0.1
    and ::1, and it serves as both a server and a client certificate.
    """
    if not _same_key(ca_cert, ca_key):
        raise ValueError(f"the CA key given does not belong to the CA certificate {ca_cert.subject.rfc4514_string()}")
    not_before, not_after = _aware(not_before), _aware(not_after)
    if not_after <= not_before:
        raise ValueError(f"a certificate for {name!r} must end after it starts: {not_before} to {not_after}")
    identity = spiffe_id(name, trust_domain) if uri is None else uri
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(identity),
        *(x509.DNSName(dns) for dns in dict.fromkeys([name, "localhost"])),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert_pem(cert), key_pem(key)


def identity_of(cert_pem: bytes) -> str | None:
    """The first spiffe:// URI SAN of a PEM certificate, else None; ValueError if it is not a PEM certificate."""
    return _identity(_parse_certificate(cert_pem, "the certificate given"))


def load_ca(pki: Pki) -> tuple[x509.Certificate, PrivateKey]:
    """The CA's certificate and key from `pki`; ValueError naming the file that is unreadable or does not match."""
    cert, key = _read_certificate(pki.ca), _read_key(pki.ca_key)
    if not _same_key(cert, key):
        raise ValueError(f"{pki.ca_key} is not the key of the CA certificate {pki.ca}")
    return cert, key


def write_identity(directory: Path, name: str, cert_pem: bytes, key_pem: bytes) -> None:
    """Put `name`'s certificate and key into `directory`, each atomically, the key 0600 and the certificate 0644."""
    pki = Pki(directory)
    _write_atomically(pki.key(name), key_pem, KEY_MODE)  # key first: a crash in between leaves a pair that
    _write_atomically(pki.cert(name), cert_pem, CERT_MODE)  # does not match, which the next run re-issues


def write_ca(directory: Path, cert: x509.Certificate, key: PrivateKey) -> None:
    """Make `cert` and `key` the CA of the PKI in `directory` (ca.pem and ca.key), each atomically."""
    pki = Pki(directory)
    _write_atomically(pki.ca_key, key_pem(key), KEY_MODE)
    _write_atomically(pki.ca, cert_pem(cert), CERT_MODE)


def cert_pem(cert: x509.Certificate) -> bytes:
    """`cert` as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    """`key` as unencrypted PKCS#8 PEM, which gRPC reads."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ensure_ca(pki: Pki, now: datetime) -> tuple[x509.Certificate, PrivateKey]:
    """The PKI's CA, made (and written) first if it is missing, half-written, or expires within a leaf's lifetime."""
    if pki.ca.exists() and pki.ca_key.exists():
        cert, key = _read_certificate(pki.ca), _read_key(pki.ca_key)
        if not _same_key(cert, key):
            log.warning("%s is not the key of %s; making a new CA", pki.ca_key, pki.ca)
        elif cert.not_valid_after_utc < now + LEAF_LIFETIME:
            log.info("the CA in %s expires at %s; making a new one", pki.ca, cert.not_valid_after_utc)
        else:
            return cert, key
    cert, key = new_ca(CA_NAME, now=now)
    write_ca(pki.directory, cert, key)
    return cert, key


def _reissue_reason(pki: Pki, name: str, identity: str, ca_cert: x509.Certificate, now: datetime) -> str | None:
    """Why `name`'s certificate must be issued again, or None if it can stay."""
    cert_path, key_path = pki.cert(name), pki.key(name)
    if not cert_path.exists() or not key_path.exists():
        return "it has no certificate or no key yet"
    try:
        cert, key = _read_certificate(cert_path), _read_key(key_path)
    except ValueError as e:
        return str(e)
    if not _same_key(cert, key):
        return f"{key_path} is not the key of {cert_path}"
    if not _signed_by(cert, ca_cert):
        return "its certificate is not signed by the current CA"
    carried = _identity(cert)
    if carried != identity:
        return f"its certificate is for {carried}"
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return f"its certificate is not valid until {start}"
    if end - now < (end - start) / 3:
        return f"less than a third of its lifetime is left (it expires at {end})"
    return None


def _identity(cert: x509.Certificate) -> str | None:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return next((uri for uri in sans.get_values_for_type(x509.UniformResourceIdentifier)
                 if uri.startswith(_SPIFFE)), None)


def _signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _same_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def _parse_certificate(data: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValueError(f"{what} is not a PEM certificate") from None


def _read_certificate(path: Path) -> x509.Certificate:
    return _parse_certificate(path.read_bytes(), str(path))


def _read_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an EC private key")
    return key


def _aware(moment: datetime | None) -> datetime:
    """`moment` (now if None) in UTC; ValueError for a naive datetime, whose zone would be a guess."""
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment} has no time zone; pass an aware datetime such as datetime.now(UTC)")
    return moment.astimezone(UTC)


def _make_directory(directory: Path) -> None:
    """Create `directory` 0700 (whatever the umask) if it is missing; an existing one keeps its mode."""
    if directory.is_dir():
        return
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    directory.chmod(DIRECTORY_MODE)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data`: a temporary file made with `mode` from the start, synced, then renamed."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)  # the umask may have taken bits away from a certificate's 0644
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable, where the platform allows opening a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
