"""Which service identity may call which method: the authorization policy, read from TOML and checked whole.

    trust_domain = "pullgate.local"
    [callers.gateway]
    may_call = ["pullgate.orders.v1.OrderService/GetOrder", "pullgate.catalog.v1.CatalogService/*"]

One policy serves every server; each enforces it for its own methods (pullgate.security.authz). A caller name is
`spiffe://<trust_domain>/<name>`; a key that is already a SPIFFE id is taken as it is. Every method named must
exist in pullgate's contracts, so a typo is an error at start, naming the key and the file, never a silent
denial. The shipped policy is `pullgate/security/policy.toml`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pool

from pullgate import topology
from pullgate.admin.v1 import admin_pb2
from pullgate.catalog.v1 import catalog_pb2  # noqa: F401  (the contracts' descriptors, for the check)
from pullgate.customers.v1 import customers_pb2  # noqa: F401
from pullgate.gateway.v1 import gateway_pb2  # noqa: F401
from pullgate.inventory.v1 import inventory_pb2  # noqa: F401
from pullgate.orders.v1 import orders_pb2  # noqa: F401
from pullgate.security.pki import TRUST_DOMAIN, check_name, spiffe_id
from resilience import ConfigError, read_toml

SHIPPED = Path(__file__).with_name("policy.toml")
"""The least-privilege policy `pullgate up` and `pullgate serve` use unless given another."""

FAULT_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name

OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                           "grpc.reflection.v1.ServerReflection"})
"""Open to every authenticated caller, whatever the policy says: probes and tools must find a server's state."""

_SPIFFE = "spiffe://"


def _services() -> dict[str, frozenset[str]]:
    """Every service a policy may name (the topology's contracts and the admin service), with its methods."""
    pool = descriptor_pool.Default()
    out: dict[str, frozenset[str]] = {}
    for name in (*(s.contract for s in topology.SERVICES), FAULT_SERVICE):
        service = pool.FindServiceByName(name)
        out[name] = frozenset(m.name for m in service.methods)
    return out


@dataclass(frozen=True)
class Grant:
    """What one caller may call: whole services, and single methods (full paths, `/pkg.Service/Method`)."""

    services: frozenset[str]
    methods: frozenset[str]

    def allows(self, path: str) -> bool:
        return path in self.methods or path[1:].partition("/")[0] in self.services


@dataclass(frozen=True)
class Policy:
    """Who may call what; `allows(identity, path)` is the question each server asks per call."""

    grants: Mapping[str, Grant]
    """By SPIFFE id."""
    source: str = "(built in)"
    trust_domain: str = TRUST_DOMAIN

    def allows(self, identity: str | None, path: str) -> bool:
        """May `identity` (a SPIFFE id; None: the caller presented none) call `path` (`/pkg.Service/Method`)?"""
        if path[1:].partition("/")[0] in OPEN_SERVICES:
            return identity is not None
        grant = self.grants.get(identity) if identity is not None else None
        return grant is not None and grant.allows(path)

    def callers_of(self, path: str) -> list[str]:
        """The identities that may call `path`."""
        return sorted(identity for identity, grant in self.grants.items() if grant.allows(path))

    def describe(self) -> Iterator[str]:
        """One line per caller: who may call what, as `pullgate up` prints it."""
        for identity, grant in sorted(self.grants.items()):
            parts = [f"{s}/*" for s in sorted(grant.services)]
            parts += [m[1:] for m in sorted(grant.methods) if m[1:].partition("/")[0] not in grant.services]
            yield f"{self.short(identity)} may call {', '.join(_compact(parts))}"

    def short(self, identity: str) -> str:
        """An identity as the policy file names it: just the name within this trust domain."""
        prefix = f"{_SPIFFE}{self.trust_domain}/"
        return identity.removeprefix(prefix) if identity.startswith(prefix) else identity

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str) -> Policy:
        """A checked policy; ConfigError names the key and `source` for anything wrong."""
        unknown = set(data) - {"trust_domain", "callers"}
        if unknown:
            raise ConfigError(sorted(unknown)[0], "unknown key (known: callers, trust_domain)", source)
        trust_domain = data.get("trust_domain", TRUST_DOMAIN)
        if not isinstance(trust_domain, str) or not trust_domain:
            raise ConfigError("trust_domain", "must be a non-empty string", source)
        callers = data.get("callers", {})
        if not isinstance(callers, Mapping):
            raise ConfigError("callers", "must be a table of [callers.<identity>] tables", source)
        known = _services()
        grants: dict[str, Grant] = {}
        for name, table in callers.items():
            key = f"callers.{name}"
            identity = _identity(name, trust_domain, key, source)
            if not isinstance(table, Mapping):
                raise ConfigError(key, "must be a table with may_call = [...]", source)
            if set(table) - {"may_call"}:
                raise ConfigError(f"{key}.{sorted(set(table) - {'may_call'})[0]}", "unknown key (known: may_call)",
                                  source)
            methods = table.get("may_call", [])
            if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
                raise ConfigError(f"{key}.may_call", "must be a list of \"package.Service/Method\" strings", source)
            services: set[str] = set()
            paths: set[str] = set()
            for entry in methods:
                service, slash, method = entry.partition("/")
                if not slash or service not in known:
                    raise ConfigError(f"{key}.may_call", f"{entry!r}: no such service; expected "
                                      f"package.Service/Method with the service one of {', '.join(sorted(known))}",
                                      source)
                if method == "*":
                    services.add(service)
                elif method in known[service]:
                    paths.add(f"/{service}/{method}")
                else:
                    raise ConfigError(f"{key}.may_call", f"{entry!r}: {service} has no method {method!r} "
                                      f"(it has {', '.join(sorted(known[service]))}, or * for all)", source)
            if identity in grants:
                raise ConfigError(key, f"names {identity} a second time", source)
            grants[identity] = Grant(frozenset(services), frozenset(paths))
        return cls(grants, source, trust_domain)


def _identity(name: str, trust_domain: str, key: str, source: str) -> str:
    if name.startswith(_SPIFFE):
        domain, slash, path = name.removeprefix(_SPIFFE).partition("/")
        if not domain or not slash or not path:
            raise ConfigError(key, "a SPIFFE id must look like spiffe://trust.domain/name", source)
        return name
    try:
        return spiffe_id(check_name(name), trust_domain)
    except ValueError as error:
        raise ConfigError(key, str(error), source) from None


def _compact(parts: list[str]) -> list[str]:
    """`a.S/X, a.S/Y` as `a.S/{X,Y}`: one service's methods together, so a line stays readable."""
    by_service: dict[str, list[str]] = {}
    for part in parts:
        service, _, method = part.partition("/")
        by_service.setdefault(service, []).append(method)
    out = []
    for service, methods in by_service.items():
        short = service.rpartition(".")[2]
        out.append(f"{short}/{methods[0]}" if len(methods) == 1 else f"{short}/{{{','.join(methods)}}}")
    return out


def load(path: Path | None = None) -> Policy:
    """The policy in `path` (the shipped one by default); ConfigError names the key and the file."""
    path = SHIPPED if path is None else path
    return Policy.from_mapping(read_toml(path), str(path))


__all__ = ["FAULT_SERVICE", "OPEN_SERVICES", "SHIPPED", "Grant", "Policy", "load"]
