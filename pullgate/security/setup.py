"""One server's security, from its flags and its config: TLS or (explicitly) none, the policy, the token check.

    [security]                        # in the config file; flags (--tls-cert ...) override each key
    tls_cert = "/certs/{service}.pem" # {service} is the server's name, so one file serves every server
    tls_key  = "/certs/{service}.key"
    tls_ca   = "/certs/ca.pem"
    policy   = "policy.toml"          # who may call what (default: the shipped least-privilege policy)
    insecure = false                  # true: plaintext, nobody checked (local experiments only; logged)

    [security.tokens]                 # the gateway's callers (pullgate.security.tokens.TokenSettings)
    secret_file = "token.key"

Relative paths are taken from the config file's directory. Neither TLS files nor `insecure`: the server refuses
to start, naming what to give. Insecure is never a silent default.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from pullgate import topology
from pullgate.security import policy as policies
from pullgate.security.authz import CallerAuthentication, PeerAuthorization
from pullgate.security.policy import Policy
from pullgate.security.tls import ServerTls, TlsChannels, TlsFiles
from pullgate.security.tokens import TokenSettings, TokenVerifier
from resilience import INSECURE, ChannelFactory, ConfigError

log = logging.getLogger("pullgate.security")

KEY = "security"
_FILE_KEYS = ("tls_cert", "tls_key", "tls_ca", "policy")


@dataclass(frozen=True)
class SecurityConfig:
    """The `[security]` table, as given (paths already taken from the config file's directory)."""

    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    policy: Path | None = None
    insecure: bool = False
    tokens: TokenSettings | None = None

    @classmethod
    def from_mapping(cls, data: Any, source: str, base_dir: Path) -> SecurityConfig:
        """ConfigError names `security.<key>` and `source` for anything wrong."""
        if not isinstance(data, Mapping):
            raise ConfigError(KEY, "must be a table", source)
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "tokens":
                values["tokens"] = TokenSettings.from_mapping(value, source, base_dir)
            elif key == "insecure":
                if not isinstance(value, bool):
                    raise ConfigError(f"{KEY}.insecure", f"must be true or false, got {value!r}", source)
                values["insecure"] = value
            elif key in _FILE_KEYS:
                if not isinstance(value, str) or not value:
                    raise ConfigError(f"{KEY}.{key}", "must be a file path", source)
                path = value if Path(value).is_absolute() else str(base_dir / value)
                values[key] = Path(path) if key == "policy" else path
            else:
                known = ", ".join(sorted((*_FILE_KEYS, "insecure", "tokens")))
                raise ConfigError(f"{KEY}.{key}", f"unknown key (known: {known})", source)
        config = cls(**values)
        given = [k for k in ("tls_cert", "tls_key", "tls_ca") if getattr(config, k) is not None]
        if given and len(given) < 3:
            missing = next(k for k in ("tls_cert", "tls_key", "tls_ca") if getattr(config, k) is None)
            raise ConfigError(f"{KEY}.{missing}", "is needed too: tls_cert, tls_key and tls_ca go together", source)
        if config.insecure and given:
            raise ConfigError(f"{KEY}.insecure", "contradicts tls_cert/tls_key/tls_ca: choose one", source)
        return config


@dataclass(frozen=True)
class SecurityFlags:
    """What the command line said; each given flag overrides its `[security]` key."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    policy: Path | None = None
    token_secret: Path | None = None
    insecure: bool = False


@dataclass(frozen=True)
class Security:
    """How one server is reached and whom it lets in, ready to use."""

    server: ServerTls | None = None
    """None: it listens in plaintext."""
    channels: ChannelFactory = INSECURE
    """How its resilient clients reach its upstreams (presenting its own certificate)."""
    policy: Policy | None = None
    """Which certificate identities may call which of its methods (mutual TLS servers: the owners)."""
    verifier: TokenVerifier | None = None
    """Its callers' tokens (the gateway)."""

    @property
    def insecure(self) -> bool:
        return self.server is None

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
        """The checks every call passes (none when insecure)."""
        out: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
        if self.policy is not None:
            out.append(PeerAuthorization(self.policy))
        if self.verifier is not None:
            out.append(CallerAuthentication(self.verifier))
        return out

    def listen(self, server: grpc.aio.Server, address: str) -> int:
        """Bind `address` on `server`, with TLS unless insecure; the bound port (0: it could not)."""
        if self.server is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, self.server.credentials())


INSECURE_SECURITY = Security()
"""Plaintext and nobody checked: in-process tests, and `--insecure`."""


def resolve(name: str, flags: SecurityFlags, config: SecurityConfig) -> Security:
    """Server `name`'s security; ConfigError (or TlsError, naming the file) when it cannot be had.

    The entry server (the gateway) serves TLS without asking callers for certificates and checks their tokens;
    every other server requires a client certificate from the CA and checks the policy."""
    insecure = flags.insecure or config.insecure
    cert = flags.tls_cert or _expand(config.tls_cert, name)
    key = flags.tls_key or _expand(config.tls_key, name)
    ca = flags.tls_ca or _expand(config.tls_ca, name)
    given = [f for f, v in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)) if v is not None]
    if insecure:
        if flags.insecure and given and any((flags.tls_cert, flags.tls_key, flags.tls_ca)):
            raise ConfigError("--insecure", f"contradicts {given[0]}: choose one")
        log.warning("%s is INSECURE: plaintext, and every caller may call every method (--insecure)", name)
        return INSECURE_SECURITY
    if len(given) < 3:
        if not given:
            raise ConfigError("--tls-cert", f"{name} needs its certificate: give --tls-cert, --tls-key and --tls-ca "
                              "(or [security] tls_cert, tls_key, tls_ca in the config), or --insecure to serve "
                              "without TLS")
        missing = next(f for f in ("--tls-cert", "--tls-key", "--tls-ca") if f not in given)
        raise ConfigError(missing, f"is needed too: {', '.join(given)} given")
    assert cert is not None and key is not None and ca is not None
    files = TlsFiles(Path(cert), Path(key), Path(ca))
    entry = name == topology.ENTRY
    server = ServerTls(files, require_client_cert=not entry)
    channels = TlsChannels(files)
    if entry:
        tokens = config.tokens
        if flags.token_secret is not None:
            tokens = TokenSettings(secret_file=flags.token_secret)
        if tokens is None:
            raise ConfigError("--token-secret", f"{name} checks its callers' tokens: give --token-secret FILE "
                              "(HS256) or a [security.tokens] table in the config")
        return Security(server, channels, verifier=TokenVerifier.from_settings(tokens))
    return Security(server, channels, policy=policies.load(flags.policy or config.policy))


def _expand(path: str | None, name: str) -> Path | None:
    return None if path is None else Path(path.replace("{service}", name))


__all__ = ["INSECURE_SECURITY", "Security", "SecurityConfig", "SecurityFlags", "resolve"]
