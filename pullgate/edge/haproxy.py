"""HAProxy's configuration for the edge, and where its binary is.

The edge is one HAProxy process in front of the gateway. For each request to one of the gateway's own services it
decides, before the gateway sees it, whether the gateway's admission limit has room for it:

- the request's criticality is its method's own (`methods.map`, from the gateway's contract), lowered by the
  caller's `resilience-criticality` header, never raised (`levels.map`) - as the gateway's AdmissionInterceptor
  decides it;
- its room is that criticality's share of the gateway's current limit, plus `edge_headroom` places for requests
  on their way into the gateway's Python (`rooms.map`, which the gateway rewrites through the runtime API
  whenever the limit moves: `pullgate.edge.control`);
- while the requests in flight to the gateway (`srv_conn`) fill that room, it is answered at once with a
  trailers-only gRPC response: RESOURCE_EXHAUSTED with the gateway's own trailers (`resilience-overloaded: 1`,
  `resilience-refused: limit`), so a pullgate client throttles on it and never counts it against a breaker. It
  goes through a backend per criticality (`edge_refused_<level>`), so HAProxy's own exporter counts it.

Health, reflection and anything else pass untouched, like the gateway's own admission. One thread (`nbthread 1`):
on two cores the gateway needs the other one, and a refusal costs HAProxy a few microseconds.

With TLS the edge terminates the callers' TLS with the gateway's own certificate (to its callers it *is* the
gateway: they check the name `gateway`), and opens TLS to the gateway, checking the gateway's certificate against
the CA. The callers' tokens travel in their metadata, untouched, so the gateway authorizes exactly as before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from resilience import Criticality

SEARCH = ("/usr/sbin", "/usr/local/sbin", "/sbin")
"""Where Debian and others put haproxy, beside $PATH (a user's PATH often lacks the sbin directories)."""

NO_LIMIT = 1_000_000
"""A room that nothing fills: the edge's rooms while the gateway's admission is off."""


def find_haproxy() -> Path | None:
    """The haproxy binary: on $PATH, else in the sbin directories; None when there is none."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path=os.pathsep.join(SEARCH))
    return None if found is None else Path(found)


def version(binary: Path) -> str:
    """`haproxy -v`'s version number, e.g. 2.6.12-1+deb12u4, for the summary; "?" when it does not say (a binary
    that cannot run fails again, with its own message, when the launcher starts it)."""
    try:
        out = subprocess.run([str(binary), "-v"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    words = out.split()
    return words[2] if len(words) > 2 and words[:2] == ["HAProxy", "version"] else "?"


@dataclass(frozen=True)
class EdgeTls:
    """The edge's TLS: the gateway's certificate and key in one PEM (what HAProxy's `crt` takes), and the CA the
    gateway's certificate must chain to."""

    pem: Path
    ca: Path
    server_name: str
    """The name the gateway's certificate must carry (a DNS SAN), checked on the way to it."""


@dataclass(frozen=True)
class EdgeFiles:
    """The files of one edge, all in `directory`."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def socket(self) -> Path:
        """HAProxy's runtime API (admin level): the gateway sets the rooms through it."""
        return self.directory / "admin.sock"

    @property
    def rooms(self) -> Path:
        return self.directory / ROOMS_MAP

    @property
    def methods(self) -> Path:
        return self.directory / "methods.map"

    @property
    def levels(self) -> Path:
        return self.directory / "levels.map"

    @property
    def names(self) -> Path:
        return self.directory / "names.map"

    @property
    def refusal(self) -> Path:
        return self.directory / "refusal.http"


ROOMS_MAP = "rooms.map"
"""The rooms map's file name, beside the runtime API's socket: the gateway finds it there."""

REFUSAL_MESSAGE = ("edge: the gateway's admission limit is full for this criticality; not started: retry after a "
                   "backoff or send less")


def refusal(message: str = REFUSAL_MESSAGE) -> bytes:
    """The trailers-only gRPC response of a refusal, as HAProxy's `errorfile` takes it (an HTTP/1.1 message that
    HAProxy sends as one HTTP/2 HEADERS frame that ends the stream)."""
    if any(not 0x20 <= ord(c) <= 0x7E or c == "%" for c in message):
        raise ValueError("the refusal message must be printable ASCII without '%' (grpc-message is percent-encoded)")
    lines = ["HTTP/1.1 200 OK", "content-type: application/grpc", "grpc-status: 8", f"grpc-message: {message}",
             "resilience-overloaded: 1", "resilience-refused: limit", "content-length: 0", "", ""]
    return "\r\n".join(lines).encode()


def write(files: EdgeFiles, *, listen: str, backend: str, methods: Mapping[str, Criticality],
          rooms: Mapping[Criticality, int], tls: EdgeTls | None, metrics: str | None = None) -> None:
    """Write the configuration and its maps into `files.directory` (made if missing); with `metrics`
    (HOST:PORT), HAProxy serves its Prometheus metrics there."""
    files.directory.mkdir(parents=True, exist_ok=True)
    files.methods.write_text("".join(f"{path} {int(level)}\n" for path, level in sorted(methods.items())))
    files.levels.write_text("".join(f"{level.name} {int(level)}\n" for level in Criticality))
    files.names.write_text("".join(f"{int(level)} {level.name.lower()}\n" for level in Criticality))
    files.rooms.write_text("".join(f"{int(level)} {rooms[level]}\n" for level in Criticality))
    files.refusal.write_bytes(refusal())
    files.config.write_text(render(files, listen=listen, backend=backend, tls=tls, metrics=metrics))


REFUSED = "edge_refused_"
"""The refusals of each criticality go through a backend of their own, `edge_refused_<level>`, so HAProxy's own
Prometheus exporter counts them: `haproxy_backend_http_requests_total{proxy="edge_refused_sheddable"}`."""


def render(files: EdgeFiles, *, listen: str, backend: str, tls: EdgeTls | None, metrics: str | None = None) -> str:
    """HAProxy's configuration: listen on `listen`, send to the gateway at `backend` (both HOST:PORT), and serve
    Prometheus metrics on `metrics` (HOST:PORT) if given."""
    if tls is None:
        bind = f"bind {listen} proto h2"
        server = f"server gateway {backend} proto h2"
    else:
        bind = f"bind {listen} ssl crt {tls.pem} alpn h2"
        server = (f"server gateway {backend} ssl verify required ca-file {tls.ca} verifyhost {tls.server_name} "
                  f"sni str({tls.server_name}) alpn h2")
    top = max(Criticality)
    refusers = "".join(f"\nbackend {REFUSED}{level.name.lower()}\n  http-request return errorfile {files.refusal}\n"
                       for level in Criticality)
    exporter = "" if metrics is None else (
        f"\nfrontend metrics\n  bind {metrics}\n  http-request use-service prometheus-exporter if {{ path /metrics }}\n"
        "  http-request return status 404\n")
    return f"""\
# The edge in front of pullgate's gateway: written by `pullgate up` (pullgate/edge/haproxy.py); see docs/overload.md.
global
  nbthread 1
  maxconn 4000
  stats socket {files.socket} mode 600 level admin

defaults
  mode http
  timeout connect 1s
  timeout client 10m
  timeout server 10m
  option forwardfor

frontend edge
  {bind}
  # The request's criticality: its method's own (-1: not one of the gateway's own methods; never refused here),
  # lowered by the caller's resilience-criticality header, never raised.
  http-request set-var(txn.level) path,map_str_int({files.methods},-1)
  http-request set-var(txn.asked) req.hdr(resilience-criticality),map_str_int({files.levels},{int(top)})
  acl governed var(txn.level) -m int ge 0
  acl lowered var(txn.asked),sub(txn.level) lt 0
  acl full var(txn.busy),sub(txn.room) ge 0
  http-request set-var(txn.level) var(txn.asked) if governed lowered
  # Its room in the gateway's current limit, and the requests in flight to the gateway now.
  http-request set-var(txn.room) var(txn.level),map_int_int({files.rooms},{NO_LIMIT})
  http-request set-var(txn.busy) srv_conn(gateway/gateway)
  use_backend {REFUSED}%[var(txn.level),map_int({files.names})] if governed full
  default_backend gateway

backend gateway
  http-reuse always
  {server}
{refusers}{exporter}"""


__all__ = ["NO_LIMIT", "ROOMS_MAP", "EdgeFiles", "EdgeTls", "find_haproxy", "refusal", "render", "version", "write"]
