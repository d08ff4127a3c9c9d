"""`pullgate up`'s edge process: HAProxy in front of the gateway (pullgate.edge), chosen, configured and started.

`--edge auto` (the default) runs it when a haproxy binary is found and says so when none is; `--edge haproxy`
insists; `--edge off` goes without. The edge takes the gateway's public port; the gateway itself then listens on a
free port behind it, and its rooms follow its admission limit through the edge's runtime API socket.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pullgate.edge import haproxy
from pullgate.edge.haproxy import EdgeFiles, EdgeTls
from resilience import Admission, AdmissionConfig, Criticality

MODES = ("auto", "haproxy", "off")

MISSING = "no haproxy found on PATH or in /usr/sbin (Debian: apt-get install haproxy)"

_SOCKET_PATH_MAX = 100
"""A unix socket's path must fit in sun_path (108 bytes on Linux, with its NUL); longer run directories (a test's
temporary directory) put the edge's files in a short temporary directory instead."""


class EdgeUnavailable(Exception):
    """`--edge haproxy` and no haproxy; the message says what to install."""


def choose(mode: str) -> tuple[Path | None, str]:
    """The haproxy binary to run (None: no edge) and, when there is none, why (for the summary)."""
    if mode not in MODES:
        raise ValueError(f"--edge: expected one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return None, "off (--edge off)"
    binary = haproxy.find_haproxy()
    if binary is None:
        if mode == "haproxy":
            raise EdgeUnavailable(f"--edge haproxy: {MISSING}; or run without it: --edge off")
        return None, f"none: {MISSING}; refusals under overload are then made in the gateway's Python, slower"
    return binary, ""


def free_port(host: str) -> int:
    """A port free on `host` now, for the edge when its port is 0 (HAProxy cannot report a port it picked)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def files_under(run_dir: Path) -> EdgeFiles:
    """Where the edge's files go: `<run_dir>/edge`, or a short temporary directory when that path is too long for
    its socket."""
    directory = (run_dir / "edge").resolve()
    if len(str(directory / "admin.sock")) > _SOCKET_PATH_MAX:
        directory = Path(tempfile.mkdtemp(prefix="pullgate-edge-"))
    return EdgeFiles(directory)


def rooms(config: AdmissionConfig) -> dict[Criticality, int]:
    """The rooms the edge starts with: those the gateway's admission has at its initial limit behind an edge (the
    gateway sets them as the limit moves)."""
    if not config.enabled:
        return dict.fromkeys(Criticality, haproxy.NO_LIMIT)
    admission = Admission(config, config.edge_headroom)
    return {level: admission.room(level) for level in Criticality}


def tls_files(files: EdgeFiles, cert: Path, key: Path, ca: Path, server_name: str) -> EdgeTls:
    """The gateway's certificate and key joined in one private PEM for HAProxy (written now)."""
    pem = files.directory / "gateway.pem"
    pem.touch(mode=0o600)
    pem.write_bytes(cert.read_bytes().rstrip(b"\n") + b"\n" + key.read_bytes())
    return EdgeTls(pem, ca, server_name)


def write_edge(files: EdgeFiles, *, listen: str, backend: str, admission: AdmissionConfig,
               tls: EdgeTls | None, metrics: str | None) -> None:
    """Write everything HAProxy needs to be the gateway's edge into `files` (`pullgate up`, and `pullgate
    edge-config` for a sidecar): the configuration, the gateway's methods and its starting rooms."""
    from gateway import SERVICE, criticality  # the gateway's contract; not needed without an edge

    haproxy.write(files, listen=listen, backend=backend, methods=criticality(SERVICE), rooms=rooms(admission),
                  tls=tls, metrics=metrics)


@dataclass
class EdgeChild:
    """The edge's HAProxy process, as the launcher supervises it."""

    binary: Path
    files: EdgeFiles
    host: str
    port: int
    """The public port (the gateway's, from the topology or --port); 0 until one is picked."""
    metrics_port: int | None = None
    """Where HAProxy serves its Prometheus metrics (None: nowhere); 0 until one is picked."""
    version: str = "?"
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def configure(self, backend: str, admission: AdmissionConfig, tls: EdgeTls | None) -> None:
        if self.port == 0:
            self.port = free_port(self.host)
        if self.metrics_port == 0:
            self.metrics_port = free_port(self.host)
        self.version = haproxy.version(self.binary)
        metrics = None if self.metrics_port is None else f"{self.host}:{self.metrics_port}"
        write_edge(self.files, listen=self.address, backend=backend, admission=admission, tls=tls, metrics=metrics)

    @property
    def metrics_url(self) -> str | None:
        return None if self.metrics_port is None else f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        return [str(self.binary), "-db", "-f", str(self.files.config)]

    def cleanup(self) -> None:
        """Remove a temporary directory the edge's files were put in (`files_under`)."""
        if self.files.directory.name.startswith("pullgate-edge-"):
            shutil.rmtree(self.files.directory, ignore_errors=True)


__all__ = ["MODES", "EdgeChild", "EdgeUnavailable", "choose", "files_under", "free_port", "rooms", "tls_files",
           "write_edge"]
