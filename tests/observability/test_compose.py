"""docker-compose.yml validates, and wires every process to Jaeger and to its own metrics port."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
SERVICES = ("customers", "catalog", "inventory", "orders", "gateway")


def compose_command() -> list[str]:
    """A compose implementation that parses files offline: Debian's docker-compose, or the docker CLI plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    pytest.skip("no compose implementation on PATH (apt-get install docker-compose, or the docker compose plugin)")


def service_blocks() -> dict[str, str]:
    """Each service's part of the resolved file (`compose config`), as text: JSON where the compose prints it,
    else the YAML that docker-compose 1.x prints (two-space indented, one key per line)."""
    command = [*compose_command(), "-f", str(COMPOSE_FILE), "config"]
    out = subprocess.run([*command, "--format", "json"], capture_output=True, text=True)
    with contextlib.suppress(json.JSONDecodeError):
        services: dict[str, Any] = json.loads(out.stdout)["services"]
        return {name: json.dumps(body) for name, body in services.items()}
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    blocks: dict[str, str] = {}
    inside, name = False, ""
    for line in text.splitlines():
        if not line.startswith(" "):
            inside = line == "services:"
        elif inside and re.match(r"^  [a-z][\w-]*:$", line):
            name = line.strip().rstrip(":")
            blocks[name] = ""
        elif inside and name:
            blocks[name] += line + "\n"
    return blocks


def test_compose_file_is_valid() -> None:
    """`compose config -q` accepts the file (schema, anchors, dependencies), with no Docker engine needed."""
    out = subprocess.run([*compose_command(), "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_service_exports_traces_to_jaeger_and_serves_metrics() -> None:
    """Each pullgate service has the OTLP endpoint, its own service name, a metrics port and its own volume."""
    blocks = service_blocks()
    assert "jaeger" in blocks
    for name in SERVICES:
        block = blocks[name].replace('"', "").replace("'", "")
        assert "OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4317" in block, name
        assert f"OTEL_SERVICE_NAME: pullgate-{name}" in block, name
        assert "PULLGATE_METRICS_PORT: 9464" in block, name
        assert "healthcheck" in block, name
        if name != "gateway":
            assert f"{name}-data" in block, name
