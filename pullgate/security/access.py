"""How pullgate's own tools reach a running system: the operator's certificate for the servers, a token for the
gateway, or plaintext where the system runs `--insecure`.

`pullgate up` records its security in its state file (`security`: the mode, the development PKI, the token key);
the CLI, the chaos tool, the load generators and the tests read it here and never spell out a certificate path.

    access = Access.from_state(state)
    channel = access.channel("gateway", address, token=access.mint(subject="customer:1", customer_id="1"))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pullgate.security.pki import Pki
from pullgate.security.tokens import ensure_secret, mint

OPERATOR = "operator"
"""The identity of pullgate's tools: its certificate is made with the services', and the policy names it."""

TOKEN_FILE = "token.key"
"""The development HS256 key, beside the development PKI."""


@dataclass(frozen=True)
class Access:
    """A tool's credentials for one running system. `pki` None: the system is insecure (plaintext, no tokens)."""

    pki: Path | None = None
    identity: str = OPERATOR

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Access:
        """From what `pullgate up` recorded (a state without a `security` record is an insecure system)."""
        security = state.get("security") or {}
        if security.get("mode") != "mtls":
            return cls()
        return cls(Path(security["pki"]))

    @property
    def secure(self) -> bool:
        return self.pki is not None

    @property
    def token_file(self) -> Path | None:
        return None if self.pki is None else self.pki / TOKEN_FILE

    def credentials(self, token: str | None = None) -> grpc.ChannelCredentials:
        """TLS with the identity's certificate, trusting the development CA; with `token` on every call."""
        assert self.pki is not None, "an insecure system has no credentials"
        pki = Pki(self.pki)
        credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.key(self.identity).read_bytes(),
                                                   pki.cert(self.identity).read_bytes())
        if token:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
        return credentials

    def channel(self, service: str, address: str, options: Sequence[tuple[str, Any]] = (),
                token: str | None = None) -> grpc.aio.Channel:
        """A channel to `service` at `address`: TLS that checks the server is `service`, or plaintext."""
        if self.pki is None:
            return grpc.aio.insecure_channel(address, options=options)
        return grpc.aio.secure_channel(address, self.credentials(token),
                                       options=(*options, ("grpc.ssl_target_name_override", service)))

    def mint(self, *, subject: str, customer_id: str | None = None, scopes: Iterable[str] = (),
             lifetime: float = 12 * 3600) -> str | None:
        """A development token from the system's key (made if missing); None for an insecure system."""
        if self.token_file is None:
            return None
        return mint(ensure_secret(self.token_file), subject=subject, customer_id=customer_id, scopes=scopes,
                    lifetime=lifetime)

    def metadata(self, token: str | None) -> tuple[tuple[str, str], ...]:
        """The call metadata that carries `token` (for a tool that sets metadata per call rather than per channel)."""
        return () if token is None else (("authorization", f"Bearer {token}"),)


__all__ = ["OPERATOR", "TOKEN_FILE", "Access"]
