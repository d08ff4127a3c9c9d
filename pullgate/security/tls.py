"""TLS for pullgate's servers and channels, from files on disk that may be replaced at any time (rotation).

A server takes its certificate, key and CA through `ServerTls`, which hands grpc *dynamic* server credentials:
grpc asks for the current material at every handshake, and `ServerTls` answers "unchanged" after a stat of the
three files (a few microseconds) or, when one changed, the new material, checked first. A connection keeps the
certificate it was made with; the next handshake uses the new one. `ServerTls.handshakes` counts those questions:
one per handshake, so one per connection, not per call (`./dev bench resilience` reports it).

A client takes them through `TlsChannels`, the `resilience.ChannelFactory` the resilience layer's transports make
their channels with. grpc's channel credentials are fixed when a channel is made, so `TlsChannels.version()`
changes when the files do (looked at at most once a second) and the transports then make new channels and close
the old ones gracefully: the next call presents the new certificate.

Half-written files are the danger of rotation (a cert-manager or SPIRE agent writes the certificate, then the
key). Material that does not load, or whose certificate does not match its key, is ignored with a warning and
the old material stays in use until a complete pair is on disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pullgate.security.pki import identity_of

log = logging.getLogger("pullgate.security.tls")

CHECK_EVERY = 1.0
"""Seconds between two looks at a client's files: a changed certificate is in use within this time."""


class TlsError(ValueError):
    """A certificate, key or CA that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class TlsFiles:
    """Where one identity's PEM files are: its certificate (with any intermediates), its key, and the CA bundle
    that its peers' certificates must chain to."""

    cert: Path
    key: Path
    ca: Path

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """What changes when any of the files is replaced or rewritten (inode, size, mtime); cheap."""
        out = []
        for path in (self.cert, self.key, self.ca):
            try:
                st = os.stat(path)
            except OSError:
                out.append((0, 0, 0))
                continue
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def load(self) -> Material:
        """The files' contents, checked: each parses, and the certificate belongs to the key. TlsError otherwise."""
        cert, key, ca = (_read(path, what) for path, what in
                         ((self.cert, "certificate"), (self.key, "key"), (self.ca, "CA bundle")))
        try:
            leaf = x509.load_pem_x509_certificate(cert)
        except ValueError as error:
            raise TlsError(f"{self.cert}: not a PEM certificate ({error})") from None
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as error:
            raise TlsError(f"{self.key}: not an unencrypted PEM private key ({error})") from None
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError as error:
            raise TlsError(f"{self.ca}: not a PEM CA bundle ({error})") from None
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        if (leaf.public_key().public_bytes(serialization.Encoding.DER, public)
                != private.public_key().public_bytes(serialization.Encoding.DER, public)):
            raise TlsError(f"{self.cert} does not belong to the key in {self.key}")
        return Material(cert, key, ca, identity_of(cert))


@dataclass(frozen=True)
class Material:
    """One loaded set of PEM bytes, and the SPIFFE identity its certificate carries (None: it carries none)."""

    cert: bytes
    key: bytes
    ca: bytes
    identity: str | None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsError(f"{path}: cannot read the {what}: {error.strerror}") from None


class ServerTls:
    """A server's TLS: grpc's dynamic credentials over `files`, so a replaced certificate takes effect at the
    next handshake, without a restart.

    `require_client_cert`: a peer must present a certificate that chains to the CA (mutual TLS; the owners). A
    server without it (the gateway, whose callers present tokens) does not ask for one at all: grpc Python has no
    "ask, but accept none".
    """

    def __init__(self, files: TlsFiles, *, require_client_cert: bool = True) -> None:
        self.files = files
        self.require_client_cert = require_client_cert
        self._material = files.load()  # TlsError now, before the server starts, rather than at each handshake
        self._stamp = files.stamp()
        self._lock = threading.Lock()  # grpc may call the fetcher from its own threads
        self.reloads = 0
        """How many times a changed set of files was taken into use."""
        self.handshakes = 0
        """How many TLS handshakes grpc has begun with these credentials: it calls `_fetch` once at each (its
        question at the server's start gets the initial material without a call)."""

    @property
    def identity(self) -> str | None:
        """The SPIFFE identity of the certificate in use."""
        return self._material.identity

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self._material), self._fetch,
            require_client_authentication=self.require_client_cert)

    @staticmethod
    def _configuration(material: Material) -> Any:
        return grpc.ssl_server_certificate_configuration([(material.key, material.cert)],
                                                         root_certificates=material.ca)

    def _fetch(self) -> Any:
        """grpc's question at each handshake: None keeps the material in use, a configuration replaces it."""
        with self._lock:  # grpc's threads may ask at once; a handshake costs far more than the lock
            self.handshakes += 1
        stamp = self.files.stamp()
        if stamp == self._stamp:
            return None
        with self._lock:
            if stamp == self._stamp:
                return None
            try:
                material = self.files.load()
            except TlsError as error:
                log.warning("keeping the certificate in use: %s", error)
                return None
            self._stamp = stamp
            if material == self._material:
                return None
            self._material = material
            self.reloads += 1
        log.info("serving with the certificate now in %s (%s)", self.files.cert, material.identity or "no identity")
        return self._configuration(material)


class TlsChannels:
    """Channels that present `files`' certificate and trust its CA; a `resilience.ChannelFactory`.

    Each channel checks that the server's certificate names the service it was made for (a DNS SAN equal to the
    service's name, as the development certificates and a Kubernetes Service's certificate have), so a server
    holding another service's certificate is refused: `authority` is that name.
    """

    def __init__(self, files: TlsFiles, *, check_every: float = CHECK_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.files = files
        self._check_every = check_every
        self._clock = clock
        self._material = files.load()
        self._stamp = files.stamp()
        self._credentials = self._make(self._material)
        self._version = 0
        self._next_check = clock() + check_every

    @property
    def identity(self) -> str | None:
        """The SPIFFE identity these channels present."""
        return self._material.identity

    @staticmethod
    def _make(material: Material) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(material.ca, material.key, material.cert)

    def version(self) -> int:
        """Changes when the files did (checked at most every `check_every` seconds): channels made before
        present the old certificate, and their owner should make new ones."""
        now = self._clock()
        if now < self._next_check:
            return self._version
        self._next_check = now + self._check_every
        stamp = self.files.stamp()
        if stamp != self._stamp:
            try:
                material = self.files.load()
            except TlsError as error:
                log.warning("keeping the client certificate in use: %s", error)
                return self._version
            self._stamp = stamp
            if material != self._material:
                self._material = material
                self._credentials = self._make(material)
                self._version += 1
                log.info("calling with the certificate now in %s (%s)", self.files.cert,
                         material.identity or "no identity")
        return self._version

    def channel(self, authority: str, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        """A channel to `address`, which must prove it is service `authority`."""
        return grpc.aio.secure_channel(address, self._credentials,
                                       options=(*options, ("grpc.ssl_target_name_override", authority)))

    def sync_channel(self, authority: str, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
        """The same, as a blocking channel (a health check in a container)."""
        return grpc.secure_channel(address, self._credentials,
                                   options=(*options, ("grpc.ssl_target_name_override", authority)))


__all__ = ["CHECK_EVERY", "Material", "ServerTls", "TlsChannels", "TlsError", "TlsFiles"]
