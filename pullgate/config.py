"""pullgate's config file (TOML): the gateway's read defaults and the resilience layer's policies.

    [gateway]
    response_margin = 0.05    # seconds kept before a caller's deadline to answer with what has arrived

    [resilience.default.retry]   # see docs/resilience.md for every resilience key
    max_attempts = 3

    [resilience.catalog.cache]   # the staleness bound for reads that give none, per owner
    max_staleness = 60.0

Every key is checked when the file is loaded; a wrong one raises ConfigError naming the key and the file,
before anything starts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from resilience import ResilienceConfig
from resilience.config import ConfigError

OWNERS = ("customers", "catalog", "inventory", "orders")


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's own settings. Durations are in seconds."""

    response_margin: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value < 0:
                raise ValueError(f"{f.name}: must not be negative, got {value}")


@dataclass(frozen=True)
class Config:
    """The whole file."""

    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    resilience: ResilienceConfig = field(default_factory=ResilienceConfig)


def _gateway(data: Any, source: str) -> GatewayConfig:
    if not isinstance(data, Mapping):
        raise ConfigError("gateway", "must be a table", source)
    known = {f.name for f in fields(GatewayConfig)}
    values: dict[str, float] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"gateway.{key}", f"unknown key (known: {', '.join(sorted(known))})", source)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"gateway.{key}", f"must be a number of seconds, got {value!r}", source)
        values[key] = float(value)
    try:
        return GatewayConfig(**values)
    except ValueError as error:
        key, _, why = str(error).partition(": ")
        raise ConfigError(f"gateway.{key}", why, source) from None


def from_mapping(data: Mapping[str, Any], source: str) -> Config:
    """Build and check a Config from parsed TOML; `source` names the file in errors."""
    unknown = set(data) - {"gateway", "resilience"}
    if unknown:
        raise ConfigError(sorted(unknown)[0], "unknown section (known: gateway, resilience)", source)
    return Config(
        gateway=_gateway(data.get("gateway", {}), source),
        resilience=ResilienceConfig.from_mapping(data.get("resilience", {}), source=source, known_downstreams=OWNERS),
    )


def load(path: Path | None) -> Config:
    """The config in `path`, or the defaults when there is no file."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError("(file)", f"cannot read: {error.strerror}", str(path)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError("(file)", f"not valid TOML: {error}", str(path)) from None
    return from_mapping(data, str(path))


__all__ = ["Config", "ConfigError", "GatewayConfig", "from_mapping", "load"]
