"""docker-compose.yml validates, wires every process to Jaeger and to its own metrics port, and serves TLS."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema.validators import validator_for

from pullgate import topology

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
SERVICES = topology.names()

# The Compose Specification's JSON schema, vendored unchanged (Apache-2.0): upstream is
#   https://raw.githubusercontent.com/compose-spec/compose-spec/master/schema/compose-spec.json
# taken from the copy of it that check-jsonschema 0.39.0 (PyPI) ships as builtin_schemas/vendor/compose-spec.json,
# fetched from upstream master on 2026-10-25; sha256 d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64.
# To update: replace the file with upstream's, and note the new date and sha256 here.
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")


def compose_command() -> list[str] | None:
    """A compose implementation that parses files offline: Debian's docker-compose, or the docker CLI plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def compose_file() -> dict[str, Any]:
    """docker-compose.yml as YAML reads it (anchors and `<<` merge keys resolved), before any compose touches it."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), f"{COMPOSE_FILE.name} is not a mapping"
    return document


def services() -> dict[str, dict[str, Any]]:
    """Each service as the compose implementation resolves it (`compose config`), or as YAML reads the file
    where no implementation is on PATH."""
    command = compose_command()
    if command is None:
        resolved = compose_file()
    else:
        out = subprocess.run([*command, "-f", str(COMPOSE_FILE), "config"], capture_output=True, text=True, check=True)
        resolved = yaml.safe_load(out.stdout)
    found: dict[str, dict[str, Any]] = resolved["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as names to values, from either of the map and the `NAME=value` list forms."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(name): "" if value is None else str(value) for name, value in env.items()}


def volume_sources(service: dict[str, Any]) -> set[str]:
    """The sources a service mounts, from either of the short (`source:target`) and the long (mapping) forms."""
    volumes = service.get("volumes") or []
    return {str(v).split(":", 1)[0] if not isinstance(v, dict) else str(v.get("source")) for v in volumes}


def test_compose_file_matches_the_compose_specification_schema() -> None:
    """The file is valid against the Compose Specification's JSON schema (vendored), with no compose needed."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator_class = validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose_file()), key=lambda error: error.json_path)
    if errors:
        problems = "\n".join(f"  {error.json_path}: {error.message}" for error in errors)
        pytest.fail(f"{COMPOSE_FILE.name} does not match {COMPOSE_SCHEMA.name}:\n{problems}", pytrace=False)


def test_compose_file_is_valid() -> None:
    """`compose config -q` accepts the file (schema, anchors, dependencies), with no Docker engine needed."""
    command = compose_command()
    if command is None:
        pytest.skip("no compose implementation on PATH; the schema test above still validates the file")
    out = subprocess.run([*command, "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_service_exports_traces_to_jaeger_and_serves_metrics() -> None:
    """Each pullgate service has the OTLP endpoint, its own service name, a metrics port and its own volume."""
    found = services()
    assert "jaeger" in found
    for name in SERVICES:
        service = found[name]
        env = environment(service)
        assert env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://jaeger:4317", name
        assert env.get("OTEL_SERVICE_NAME") == f"pullgate-{name}", name
        assert env.get("PULLGATE_METRICS_PORT") == "9464", name
        assert "healthcheck" in service, name
        if name != "gateway":
            assert f"{name}-data" in volume_sources(service), name


def read_only_mounts(service: dict[str, Any]) -> dict[str, bool]:
    """Where a service mounts something, and whether read-only, from either of the short and the long forms."""
    found: dict[str, bool] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found[str(volume["target"])] = bool(volume.get("read_only"))
        else:
            parts = str(volume).split(":")
            found[parts[1]] = len(parts) > 2 and "ro" in parts[2].split(",")
    return found


def test_every_service_serves_tls_and_its_health_check_calls_through_it() -> None:
    """No service runs --insecure: each takes its certificate from the read-only /certs mount (the gateway its
    token key too), and its health check presents that certificate and checks the server names the service."""
    found = services()
    for name in SERVICES:
        service = found[name]
        command = [str(arg) for arg in service["command"]]
        flags, env = dict(itertools.pairwise(command)), environment(service)
        assert "--insecure" not in command, name
        assert read_only_mounts(service).get("/certs") is True, name
        assert all(flags[flag].startswith("/certs/") for flag in ("--tls-cert", "--tls-key", "--tls-ca")), name
        assert ("--token-secret" in flags) == (name == topology.ENTRY), name
        assert (env.get("TLS_CERT"), env.get("TLS_KEY"), env.get("TLS_CA"), env.get("SERVICE")) == (
            flags["--tls-cert"], flags["--tls-key"], flags["--tls-ca"], name), name
