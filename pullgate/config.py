"""pullgate's config file (TOML): the gateway's read defaults, the resilience layer's policies, the databases.

    [gateway]
    response_margin = "50ms"  # kept before a caller's deadline to answer with what has arrived

    [inventory]
    reservation_hold = 60     # seconds a reservation is held for its order before it is released

    [resilience.default.retry]   # see docs/resilience.md for every resilience key
    max_attempts = 3

    [resilience.catalog.cache]   # the staleness bound for reads that give none, per owner
    max_staleness = "1m"

    [admission.default]          # every server's admission control (docs/overload.md)
    max_limit = 200

    [admission.gateway]          # one server's; keys not given come from [admission.default]
    min_limit = 20

    [security]                   # TLS files, the policy, callers' tokens (pullgate.security.setup)
    tls_cert = "/certs/{service}.pem"

    [database]                   # PostgreSQL instead of the SQLite files (docs/storage.md)
    url = "postgresql://pullgate@db:5432/pullgate_{service}"   # every owner's; {service} its name

    [database.orders]            # one owner's own, over [database]
    url = "postgresql://orders@orders-db:5432/orders"

A duration is a number of seconds or a duration string (docs/resilience.md#durations). Every key is checked
when the file is loaded; a wrong one raises ConfigError naming the key and the file, before anything starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from pullgate import topology
from pullgate.security.setup import SecurityConfig
from resilience import (
    AdmissionConfig,
    ConfigError,
    DurationError,
    ResilienceConfig,
    Seconds,
    parse_seconds,
    read_toml,
)


class _Seconds:
    """A section whose every key is a duration (`Seconds`) that must not be negative. A bad value raises
    ConfigError naming the field; the loader adds the section and the file."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value < 0:
                raise ConfigError(f.name, f"must not be negative, got {value}")


@dataclass(frozen=True)
class GatewayConfig(_Seconds):
    """The gateway's own settings. Durations are in seconds."""

    response_margin: Seconds = 0.05


@dataclass(frozen=True)
class InventoryConfig(_Seconds):
    """The inventory service's settings. Durations are in seconds."""

    reservation_hold: Seconds = 60.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reservation_hold == 0:
            raise ConfigError("reservation_hold", "must be more than 0")


@dataclass(frozen=True)
class AdmissionSettings:
    """The `[admission]` table: every server's admission control, with overrides by service name."""

    default: AdmissionConfig = field(default_factory=AdmissionConfig)
    services: Mapping[str, AdmissionConfig] = field(
        default_factory=lambda: {topology.ENTRY: AdmissionConfig.from_mapping(ENTRY_ADMISSION, "(built in)")})

    def for_service(self, name: str) -> AdmissionConfig:
        """What server `name` admits by: its table over `[admission.default]`."""
        return self.services.get(name, self.default)


URL_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class DatabaseConfig:
    """The `[database]` table: which PostgreSQL database each owner keeps its data in; none means SQLite.

    `url` is every owner's, with `{service}` standing for the owner's name (so each gets a database of its own);
    `services` holds the owners' own URLs, which win over it.
    """

    url: str | None = None
    services: Mapping[str, str] = field(default_factory=dict)

    def url_for(self, service: str) -> str | None:
        """The PostgreSQL URL of `service`'s database, or None for its SQLite file."""
        if service in self.services:
            return self.services[service]
        return None if self.url is None else self.url.replace("{service}", service)


def _database_url(value: Any, key: str, source: str) -> str:
    if not isinstance(value, str) or not value.startswith(URL_SCHEMES):
        raise ConfigError(key, f"must be a PostgreSQL URL (postgresql://user@host:port/database), got {value!r}",
                          source)
    return value


def _database(data: Any, source: str) -> DatabaseConfig:
    """`[database]` and `[database.<owner>]`; ConfigError names the dotted key and the file."""
    if not isinstance(data, Mapping):
        raise ConfigError("database", "must be a table", source)
    owners = [s.name for s in topology.owners()]
    url = None
    services: dict[str, str] = {}
    for key, value in data.items():
        if key == "url":
            url = _database_url(value, "database.url", source)
            if "{service}" not in url:
                raise ConfigError("database.url", "must contain {service}, so that every owner gets a database of "
                                  "its own (or give each one in [database.<service>])", source)
        elif key in owners:
            if not isinstance(value, Mapping):
                raise ConfigError(f"database.{key}", "must be a table", source)
            for inner, given in value.items():
                if inner != "url":
                    raise ConfigError(f"database.{key}.{inner}", "unknown key (known: url)", source)
                services[key] = _database_url(given, f"database.{key}.url", source)
        else:
            raise ConfigError(f"database.{key}", f"unknown key (known: url, {', '.join(owners)})", source)
    config = DatabaseConfig(url, services)
    seen: dict[str, str] = {}
    for owner in owners:
        chosen = config.url_for(owner)
        if chosen is None:
            continue
        if chosen in seen:
            key = f"database.{owner}.url" if owner in services else "database.url"
            raise ConfigError(key, f"{owner} would share {seen[chosen]}'s database; every owner needs its own",
                              source)
        seen[chosen] = owner
    return config


@dataclass(frozen=True)
class Config:
    """The whole file."""

    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    inventory: InventoryConfig = field(default_factory=InventoryConfig)
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)


SectionT = TypeVar("SectionT", GatewayConfig, InventoryConfig)


def _section(kind: type[SectionT], name: str, data: Any, source: str) -> SectionT:
    """One table of durations, checked key by key; ConfigError names the dotted key and the file."""
    if not isinstance(data, Mapping):
        raise ConfigError(name, "must be a table", source)
    known = {f.name for f in fields(kind)}
    values: dict[str, float] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{name}.{key}", f"unknown key (known: {', '.join(sorted(known))})", source)
        try:
            values[key] = parse_seconds(value)
        except DurationError as error:
            raise ConfigError(f"{name}.{key}", str(error), source) from None
    try:
        return kind(**values)
    except ConfigError as error:
        raise ConfigError(f"{name}.{error.key}", error.problem, source) from None


ENTRY_ADMISSION: Mapping[str, Any] = {"max_pending_requests": 4, "max_pending_requests_hard_limit": 16}
"""What the entry server (the gateway) admits by unless its own table says otherwise: a shorter queue in grpc's
core than the owners'. Its callers are many and independent, and that queue is where they wait; the owners'
callers are the gateway and orders, whose fan-out sends calls in bursts that a short queue would shed."""


def _admission(data: Any, source: str) -> AdmissionSettings:
    """`[admission.default]` and `[admission.<service>]`; ConfigError names the dotted key and the file."""
    if not isinstance(data, Mapping):
        raise ConfigError("admission", "must be a table", source)
    default = AdmissionConfig.from_mapping(_table(data, "default", source), source, "admission.default")
    for name in data:
        if name != "default" and name not in topology.names():
            known = ", ".join(["default", *topology.names()])
            raise ConfigError(f"admission.{name}", f"unknown server; expected one of {known}", source)
    services = {topology.ENTRY: AdmissionConfig.from_mapping(ENTRY_ADMISSION, "(built in)", "admission", default)}
    for name in data:
        if name != "default":
            services[name] = AdmissionConfig.from_mapping(
                _table(data, name, source), source, f"admission.{name}",
                base=services.get(name, default))
    return AdmissionSettings(default, services)


def _table(data: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"admission.{name}", "must be a table", source)
    return table


SECTIONS = ("gateway", "inventory", "resilience", "admission", "security", "database")


def from_mapping(data: Mapping[str, Any], source: str, base_dir: Path = Path()) -> Config:
    """Build and check a Config from parsed TOML; `source` names the file in errors, and relative paths in it
    are taken from `base_dir` (the file's directory)."""
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"unknown section (known: {', '.join(SECTIONS)})", source)
    return Config(
        admission=_admission(data.get("admission", {}), source),
        gateway=_section(GatewayConfig, "gateway", data.get("gateway", {}), source),
        inventory=_section(InventoryConfig, "inventory", data.get("inventory", {}), source),
        resilience=ResilienceConfig.from_mapping(data.get("resilience", {}), source=source,
                                                 known_downstreams=topology.downstreams()),
        security=SecurityConfig.from_mapping(data.get("security", {}), source, base_dir),
        database=_database(data.get("database", {}), source),
    )


def load(path: Path | None) -> Config:
    """The config in `path`, or the defaults when there is no file."""
    if path is None:
        return Config()
    return from_mapping(read_toml(path), str(path), Path(path).parent)


__all__ = [
    "AdmissionSettings", "Config", "ConfigError", "DatabaseConfig", "GatewayConfig", "InventoryConfig", "from_mapping",
    "load",
]
