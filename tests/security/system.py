"""The whole system in-process over mutual TLS, with certificates the test makes, and clients of every identity.

`secure_system()` runs the four owners and the gateway as pullgate serves them (`pullgate serve` with
--tls-cert/--tls-key/--tls-ca and the shipped policy; the gateway with --token-secret), each on a free port, each
calling its upstreams with its own certificate. `Certificates` makes clients that present any certificate:
a service's, the operator's, a stranger's the CA signed but the policy never names, one from another CA, an
expired one, or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from pullgate import topology
from pullgate.faults import FaultInjector
from pullgate.security.pki import Pki, ensure_dev_pki, issue, load_ca, new_ca
from pullgate.security.setup import Security, SecurityConfig, SecurityFlags, resolve
from pullgate.security.tokens import ensure_secret, mint
from tests.support import start_service

STRANGER = "stranger"
"""An identity the CA signed and the policy names nowhere."""

IDENTITIES = (*topology.names(), "operator", STRANGER)

LOCAL_POOL = ("grpc.use_local_subchannel_pool", 1)
"""Each test channel connects (and handshakes) on its own, never sharing another channel's connection."""


@dataclass(frozen=True)
class Certificates:
    """A development PKI for the test, and clients that present what the test wants."""

    pki: Pki
    token_key: Path

    @classmethod
    def make(cls, directory: Path) -> Certificates:
        pki = ensure_dev_pki(directory, IDENTITIES)
        return cls(pki, directory / "token.key")

    @property
    def secret(self) -> bytes:
        return ensure_secret(self.token_key)

    def flags(self, name: str, identity: str | None = None) -> SecurityFlags:
        """What `pullgate serve NAME` is given: its own certificate (or `identity`'s), and for the gateway the key."""
        who = identity or name
        return SecurityFlags(tls_cert=self.pki.cert(who), tls_key=self.pki.key(who), tls_ca=self.pki.ca,
                             token_secret=self.token_key if name == topology.ENTRY else None)

    def security(self, name: str) -> Security:
        self.secret  # noqa: B018  (the gateway's key exists before it starts)
        return resolve(name, self.flags(name), SecurityConfig())

    def credentials(self, identity: str | None) -> grpc.ChannelCredentials:
        """TLS trusting the CA, presenting `identity`'s certificate (None: no certificate)."""
        ca = self.pki.ca.read_bytes()
        if identity is None:
            return grpc.ssl_channel_credentials(ca)
        return grpc.ssl_channel_credentials(ca, self.pki.key(identity).read_bytes(),
                                            self.pki.cert(identity).read_bytes())

    def foreign(self, name: str) -> tuple[bytes, bytes]:
        """A certificate and key for `name` from another CA, which nobody here trusts."""
        ca, ca_key = new_ca("another CA")
        now = datetime.now(UTC)
        return issue(ca, ca_key, name, not_before=now - timedelta(minutes=1), not_after=now + timedelta(days=1))

    def expired(self, name: str) -> tuple[bytes, bytes]:
        """A certificate and key for `name` from this CA that expired an hour ago."""
        ca, ca_key = load_ca(self.pki)
        now = datetime.now(UTC)
        return issue(ca, ca_key, name, not_before=now - timedelta(days=2), not_after=now - timedelta(hours=1))

    def channel(self, service: str, address: str, identity: str | None = None,
                credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
        """A channel to `service` at `address` presenting `identity` (or the given credentials)."""
        return grpc.aio.secure_channel(address, credentials or self.credentials(identity),
                                       options=[("grpc.ssl_target_name_override", service), LOCAL_POOL])

    def sync_channel(self, service: str, address: str, identity: str | None = None) -> grpc.Channel:
        return grpc.secure_channel(address, self.credentials(identity),
                                   options=[("grpc.ssl_target_name_override", service), LOCAL_POOL])

    def token(self, subject: str, customer_id: str | None = None, scopes: tuple[str, ...] = ()) -> str:
        """A token from the gateway's key."""
        return mint(self.secret, subject=subject, customer_id=customer_id, scopes=scopes)


@contextlib.asynccontextmanager
async def secure_system(data_dir: Path, certificates: Certificates, names: tuple[str, ...] = topology.names(),
                        *, fault_injection: bool = False) -> AsyncIterator[dict[str, str]]:
    """The services `names` in start order over mutual TLS, each wired to the ones it calls; yields addresses.
    With `fault_injection`, each also serves the admin FaultService (`--allow-fault-injection`)."""
    async with contextlib.AsyncExitStack() as stack:
        addresses: dict[str, str] = {}
        for name in (n for n in topology.names() if n in names):
            upstreams = {u: (addresses[u],) for u in topology.service(name).upstreams}
            addresses[name] = await stack.enter_async_context(
                start_service(name, data_dir, upstreams, faults=FaultInjector(name) if fault_injection else None,
                              security=certificates.security(name)))
        yield addresses


def snapshot(data_dir: Path) -> dict[str, str]:
    """A digest of every owner's database, row by row: equal snapshots mean nothing was written."""
    out: dict[str, str] = {}
    for owner in topology.owners():
        db = topology.database_path(owner.name, data_dir)
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            out[owner.name] = hashlib.sha256("\n".join(_rows(conn)).encode()).hexdigest()
    return out


def _rows(conn: sqlite3.Connection) -> Iterator[str]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    for table in tables:
        for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1"):
            yield f"{table}: {row!r}"


__all__ = ["IDENTITIES", "LOCAL_POOL", "STRANGER", "Certificates", "secure_system", "snapshot"]
