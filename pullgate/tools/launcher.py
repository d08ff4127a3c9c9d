"""`pullgate up`: every service and the gateway as separate processes on one machine, supervised.

Before it starts anything, the launcher checks every fixed port the way the servers will bind it, and names the
process that listens on a taken one (`check_ports_free`). It starts the services in the topology's stages
(`pullgate.topology.stages()`: every service after the ones it calls), each as `python -m pullgate serve NAME`, and
waits until each reports SERVING on its health service before starting what depends on it. Each child serves its
metrics for Prometheus on its own port (printed; PULLGATE_METRICS_PORTS overrides; see docs/observability.md). It
restarts a child that dies (with backoff), records what runs where in `<data-dir>/pullgate-up.json` (read by the CLI
and by chaos runs), and on Ctrl-C or SIGTERM stops the children in reverse order, gracefully, with a line for each,
before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullgate import topology
from pullgate.config import load as load_config
from pullgate.security import policy as policies
from pullgate.security.access import OPERATOR, TOKEN_FILE, Access
from pullgate.security.pki import Pki, ensure_dev_pki
from pullgate.security.tokens import ensure_secret
from pullgate.telemetry import logs
from pullgate.telemetry import metrics as telemetry_metrics
from pullgate.tools import edge as edges
from services._db import redact

log = logging.getLogger("pullgate.launcher")

METRICS_PORTS_VARIABLE = "PULLGATE_METRICS_PORTS"
REPLICA_PORT_STEP = 10  # replica k of a service listens on its port + 10 * k (its metrics too)
STATE_FILE = "pullgate-up.json"


class LaunchError(Exception):
    """The system could not be started; the message says which part and why."""


@dataclass(frozen=True)
class UpSettings:
    """What `pullgate up` was asked for."""

    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    ports: Mapping[str, int] = field(default_factory=lambda: {s.name: s.port for s in topology.SERVICES})
    replicas: int = 1
    config_file: Path | None = None
    faults: str = ""
    allow_fault_injection: bool = False
    ready_timeout: float = 30.0
    stop_grace: float = 10.0
    metrics: bool = True
    loop: str = "asyncio"
    """The event loop every process runs on (pullgate.loops)."""
    metrics_ports: Mapping[str, int] | None = None
    """Each service's metrics port (0 = any free one); None = the defaults, or any free one for a service whose
    gRPC port is 0 (`--any-ports`). $PULLGATE_METRICS_PORTS overrides: `gateway=9100,orders=0` or `off`."""
    insecure: bool = False
    """Plaintext and nobody checked (`--insecure`). Otherwise every hop is mutual TLS with the development PKI
    under `<data-dir>/pki` (made on first start), the owners check `policy`, and the gateway checks tokens."""
    policy: Path | None = None
    """The authorization policy (None: the shipped one, pullgate/security/policy.toml)."""
    database_urls: Mapping[str, str] = field(default_factory=dict)
    """Each owner's PostgreSQL database (`pullgate up --postgres`); an owner not named keeps its SQLite file."""
    edge: str = "auto"
    """HAProxy in front of the gateway (pullgate.tools.edge.MODES): `auto` when a haproxy binary is found."""


def metrics_ports(settings: UpSettings, env: Mapping[str, str] = os.environ) -> dict[str, int] | None:
    """The metrics port of each service's first replica, or None when metrics are off; LaunchError names a bad
    $PULLGATE_METRICS_PORTS."""
    ports = dict(settings.metrics_ports) if settings.metrics_ports is not None else {
        s.name: s.metrics_port if settings.ports[s.name] else 0 for s in topology.SERVICES}
    text = env.get(METRICS_PORTS_VARIABLE, "").strip()
    if text.lower() == "off" or not settings.metrics:
        return None
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, _, port = item.partition("=")
        if name not in topology.names() or not port.isdigit() or int(port) > 65535:
            raise LaunchError(f"{METRICS_PORTS_VARIABLE}: {item!r}: expected NAME=PORT with NAME one of "
                              f"{', '.join(topology.names())}, or 'off'")
        ports[name] = int(port)
    return ports


@dataclass
class Child:
    """One supervised server process."""

    service: str
    replica: int
    port: int
    metrics_port: int | None = None
    """None: no metrics endpoint; 0 until the child reports the free port it bound."""
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0

    @property
    def name(self) -> str:
        return self.service if self.replica == 0 else f"{self.service}-{self.replica}"


def _child_setup() -> None:
    """In the child before exec: a process group of its own (so a Ctrl-C at the terminal reaches the launcher
    only, which stops the children in order), and on Linux SIGTERM if the launcher dies, so no server is left
    orphaned. (The group is set here rather than with `process_group=`, which uvloop's subprocesses lack.)"""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


EDGE_PRIORITY = 5
"""How many nice levels above the servers the edge runs where it cannot run real-time (`_edge_setup`)."""

EDGE_REALTIME = 1
"""The edge's SCHED_RR priority (the lowest real-time one), where the launcher may set it (root, or CAP_SYS_NICE)."""


def _edge_setup() -> None:
    """`_child_setup`, and the edge scheduled ahead of the servers where that is allowed: real-time (SCHED_RR),
    else `EDGE_PRIORITY` nice levels up.

    A refusal is only as fast as the edge is scheduled. Under overload the servers keep every core busy, and a
    woken process at a better nice level still waits for the running one's slice: measured on two cores with
    both kept busy at the servers' priority, one client's refusals through an edge 5 nice levels up had p99
    47 ms, against 1.7 ms with the edge real-time, and 1.7 ms on the idle machine. The edge uses little CPU
    (0.06 of a core refusing 250 requests a second), and the kernel's real-time throttling keeps 5% of every
    second for the rest of the machine in any case (docs/overload.md)."""
    _child_setup()
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(EDGE_REALTIME))
    except (OSError, AttributeError):  # not permitted, or not Linux
        with contextlib.suppress(OSError):
            os.nice(-EDGE_PRIORITY)


PROC = Path("/proc")
_LISTEN = "0A"  # TCP_LISTEN in the st column of /proc/net/tcp{,6}
_COMMAND_WIDTH = 80


def check_ports_free(host: str, ports: Mapping[str, int], metrics_ports: Mapping[str, int] | None = None,
                     proc: Path = PROC) -> None:
    """Fail before starting anything if a fixed port is taken: by another process, or by two of ours.

    `ports` maps each process (`catalog-1`) to its gRPC port, `metrics_ports` to its metrics port; 0 is any free
    port and is not checked. A taken port's message names the process that listens on it when Linux's /proc shows
    it (`_listener`).

    The probe binds the way the servers will: with SO_REUSEADDR (grpc sets it, and Python's HTTP server under the
    metrics endpoint does too) and without SO_REUSEPORT. Measured on Linux 6.18, each probe against each holder of
    the port, both in another process of the same user:

        holder of the port                       no option  REUSEADDR  REUSEPORT  both
        TIME_WAIT left by a grpc server           refused    free       free       free
        TIME_WAIT left by a server w/o REUSEADDR  refused    refused    refused    refused
        plain listen(), with or w/o REUSEADDR     refused    refused    refused    refused
        listen() on 0.0.0.0 or dual-stack [::]    refused    refused    refused    refused
        grpc server (REUSEADDR + REUSEPORT)       refused    refused    free       free
        prometheus_client's HTTP server           refused    refused    refused    refused

    So SO_REUSEADDR alone is the one probe that accepts what a crash under traffic leaves (the server side of
    its connections in TIME_WAIT for a minute; the old probe without options refused it) and refuses every
    listener. A probe with SO_REUSEPORT would take a running pullgate's port for free, and so would the new
    servers: grpc binds with SO_REUSEPORT, so a second `pullgate up` on the same ports would start silently and
    share the connections with the first. Calling listen() after bind() changed none of these outcomes.
    """
    claims: dict[int, str] = {}
    for names, flag in ((ports, "--port"), (metrics_ports or {}, "--metrics-port")):
        for name, port in names.items():
            if port == 0:
                continue
            what = name if flag == "--port" else f"{name} metrics"
            if port in claims:  # both would bind it, thanks to SO_REUSEPORT, and share its connections
                raise LaunchError(f"{claims[port]} and {what} both want port {port} on {host}; "
                                  f"choose ports with {flag} NAME=PORT")
            claims[port] = what
            _probe(host, port, what, flag, proc)


def _probe(host: str, port: int, what: str, flag: str, proc: Path) -> None:
    """Bind `host:port` as a server would (see `check_ports_free`); LaunchError if a server could not."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise LaunchError(f"--host {host!r}: cannot resolve it ({error.strerror})") from None
    failures: list[OSError] = []
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    failures.append(error)
                    continue
                taken = f"port {port} on {host} (for {what})"
                hint = f"choose ports with {flag} NAME=PORT"
                listener = _listener(port, str(address[0]), proc)
                if listener is None:
                    raise LaunchError(f"{taken} is not free ({error.strerror}); stop what uses it or {hint}") from None
                raise LaunchError(f"{taken} is taken: {listener} listens on it; stop it or {hint}") from None
    if len(failures) == len(addresses):
        raise LaunchError(f"cannot listen on port {port} on {host} (for {what}): {failures[0].strerror}")


@dataclass(frozen=True)
class Listener:
    """A process that listens on a port."""

    pid: int | None
    """None: a socket listens, but which process holds it is not visible to this user."""
    command: str = ""

    def __str__(self) -> str:
        return "another process" if self.pid is None else f"pid {self.pid} ({self.command})"


def _listener(port: int, address: str, proc: Path = PROC) -> Listener | None:
    """Who listens on `port` at `address` (or a wildcard), from Linux's /proc; None if no socket listens there (or
    there is no /proc to ask)."""
    inodes = _listening_inodes(port, address, proc)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    try:
        pids = sorted(int(entry.name) for entry in proc.iterdir() if entry.name.isdigit())
    except OSError:
        pids = []
    for pid in pids:
        try:
            if any(os.readlink(fd) in wanted for fd in (proc / str(pid) / "fd").iterdir()):
                return Listener(pid, _command(proc / str(pid)))
        except OSError:  # not ours to look at, or gone meanwhile
            continue
    return Listener(None)


def _listening_inodes(port: int, address: str, proc: Path) -> set[int]:
    """The inodes of the TCP sockets that listen on `port` at `address` or a wildcard, from /proc/net/tcp{,6}."""
    wildcards = {"0.0.0.0", "::"}
    inodes: set[int] = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            rows = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            hex_address, _, hex_port = local.partition(":")
            if state != _LISTEN or int(hex_port, 16) != port or not inode:
                continue
            # The kernel prints each 32-bit word of the address in host byte order.
            words = [int(hex_address[i:i + 8], 16) for i in range(0, len(hex_address), 8)]
            bound = socket.inet_ntop(family, struct.pack(f"={len(words)}I", *words)).removeprefix("::ffff:")
            if bound == address or bound in wildcards or address in wildcards:
                inodes.add(inode)
    return inodes


def _command(process: Path) -> str:
    """A process's command line as a person would type it, shortened to one line's share."""
    try:
        argv = [a for a in (process / "cmdline").read_bytes().decode(errors="replace").split("\0") if a]
        if not argv:
            return (process / "comm").read_text().strip()
    except OSError:
        return "?"
    command = " ".join([Path(argv[0]).name, *argv[1:]])
    return command if len(command) <= _COMMAND_WIDTH else command[:_COMMAND_WIDTH - 3] + "..."


@dataclass(frozen=True)
class Stopped:
    """How one child ended when the launcher stopped."""

    name: str
    pid: int
    seconds: float
    """From its SIGTERM to its exit."""
    killed: bool = False
    """It outlasted the grace period after SIGTERM and was sent SIGKILL."""
    exit_code: int | None = None
    """Not None: it had exited before the stop (a crash whose restart was still to come), with this code."""


def stopped_line(stopped: Stopped) -> str:
    """One line of `pullgate up`'s output for a child that ended."""
    s = stopped
    if s.exit_code is not None:
        how = f"code {s.exit_code}"
        if s.exit_code < 0:
            with contextlib.suppress(ValueError):
                how = f"signal {signal.Signals(-s.exit_code).name}"
        return f"  {s.name} had already exited (pid {s.pid}, {how})"
    if s.killed:
        return f"  {s.name} did not stop on SIGTERM; killed (pid {s.pid}, {s.seconds:.1f}s)"
    return f"  {s.name} stopped (pid {s.pid}, {s.seconds:.1f}s)"


class Launcher:
    """Starts, watches and stops the children of one `pullgate up`."""

    def __init__(self, settings: UpSettings) -> None:
        self.settings = settings
        self.run_dir = settings.data_dir / "run"
        self.children: list[Child] = []
        metrics = metrics_ports(settings)
        for service in topology.names():
            base = settings.ports[service]
            count = 1 if service == topology.ENTRY else settings.replicas
            for replica in range(count):
                port = base + REPLICA_PORT_STEP * replica if base else 0
                child = Child(service, replica, port)
                if metrics is not None:
                    child.metrics_port = metrics[service] + REPLICA_PORT_STEP * replica if metrics[service] else 0
                self.children.append(child)
        self._stopping = False
        self._supervisors: list[asyncio.Task[None]] = []
        self.pki = None if settings.insecure else Pki(settings.data_dir / "pki")
        self.access = Access(None if self.pki is None else self.pki.directory)
        self.policy = policies.load(settings.policy)  # ConfigError naming the key and the file, before anything
        self.edge: edges.EdgeChild | None = None
        try:
            binary, self.edge_absent = edges.choose(settings.edge)
        except edges.EdgeUnavailable as error:
            raise LaunchError(str(error)) from None
        if binary is not None:
            # The edge takes the gateway's public port; the gateway listens behind it on a free one.
            gateway = next(c for c in self.children if c.service == topology.ENTRY)
            self.edge = edges.EdgeChild(binary, edges.files_under(self.run_dir), settings.host, gateway.port,
                                        metrics_port=None if metrics is None else 0)
            gateway.port = 0

    def addresses(self, service: str) -> list[str]:
        return [f"{self.settings.host}:{c.port}" for c in self.children if c.service == service]

    def _command(self, child: Child) -> list[str]:
        s = self.settings
        cmd = [sys.executable, "-m", "pullgate", "serve", child.service, "--host", s.host, "--port", str(child.port),
               "--data-dir", str(s.data_dir), "--port-file", str(self._port_file(child))]
        if child.service in s.database_urls:
            cmd += ["--database-url", s.database_urls[child.service]]
        for upstream in topology.service(child.service).upstreams:
            cmd += ["--upstream", f"{upstream}={','.join(self.addresses(upstream))}"]
        if s.config_file is not None:
            cmd += ["--config", str(s.config_file)]
        if s.faults:
            cmd += ["--faults", s.faults]
        if s.allow_fault_injection:
            cmd.append("--allow-fault-injection")
        if s.loop != "asyncio":
            cmd += ["--loop", s.loop]
        if self.pki is None:
            cmd.append("--insecure")
        else:
            cmd += ["--tls-cert", str(self.pki.cert(child.service)), "--tls-key", str(self.pki.key(child.service)),
                    "--tls-ca", str(self.pki.ca)]
            if child.service == topology.ENTRY:
                cmd += ["--token-secret", str(self.pki.directory / TOKEN_FILE)]
            if s.policy is not None:
                cmd += ["--policy", str(s.policy)]
        if child.service == topology.ENTRY and self.edge is not None:
            cmd += ["--edge-control", str(self.edge.files.socket)]
        return cmd

    def _port_file(self, child: Child) -> Path:
        return self.run_dir / f"{child.name}.port"

    async def _spawn(self, child: Child) -> None:
        port_file = self._port_file(child)
        port_file.unlink(missing_ok=True)
        metrics_file = telemetry_metrics.port_file(port_file)
        metrics_file.unlink(missing_ok=True)
        env = {**os.environ, "OTEL_SERVICE_NAME": f"pullgate-{child.service}", "PULLGATE_INSTANCE": child.name,
               telemetry_metrics.PORT_VARIABLE: "off" if child.metrics_port is None else str(child.metrics_port)}
        child.process = await asyncio.create_subprocess_exec(
            *self._command(child), env=env, stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=_child_setup,
        )
        deadline = asyncio.get_running_loop().time() + self.settings.ready_timeout
        while not port_file.exists():
            if child.process.returncode is not None:
                raise LaunchError(f"{child.name} exited with code {child.process.returncode} before it was ready; "
                                  "see its log above")
            if asyncio.get_running_loop().time() > deadline:
                raise LaunchError(f"{child.name} did not start within {self.settings.ready_timeout:.0f}s")
            await asyncio.sleep(0.05)
        child.port = int(port_file.read_text())
        if child.metrics_port is not None and metrics_file.exists():  # written before the gRPC port file
            child.metrics_port = int(metrics_file.read_text())
        await self._wait_serving(child.service, child.name, f"{self.settings.host}:{child.port}", deadline)

    async def _wait_serving(self, service: str, name: str, address: str, deadline: float) -> None:
        async with self.access.channel(service, address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise LaunchError(f"{name} at {address} did not report SERVING in time")
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=min(1.0, remaining),
                                             wait_for_ready=True)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return

    async def start(self) -> None:
        """Start every stage; a service's first replica starts (and seeds its database) before the others."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        check_ports_free(self.settings.host,
                         {c.name: c.port for c in self.children} | ({"edge": self.edge.port} if self.edge else {}),
                         {c.name: c.metrics_port for c in self.children if c.metrics_port is not None})
        if self.pki is not None:
            # Every service's certificate and the tools' (the operator's), made or renewed; the gateway's token key.
            ensure_dev_pki(self.pki.directory, [*topology.names(), OPERATOR])
            ensure_secret(self.pki.directory / TOKEN_FILE)
        for stage in topology.stages():
            firsts = [c for c in self.children if c.service in stage and c.replica == 0]
            await asyncio.gather(*(self._spawn(c) for c in firsts))
            others = [c for c in self.children if c.service in stage and c.replica > 0]
            await asyncio.gather(*(self._spawn(c) for c in others))
        if self.edge is not None:
            self._configure_edge(self.edge)
            await self._spawn_edge(self.edge)
        self.write_state()
        self._supervisors = [asyncio.create_task(self._supervise(c)) for c in self.children]
        if self.edge is not None:
            self._supervisors.append(asyncio.create_task(self._supervise_edge(self.edge)))

    def _configure_edge(self, edge: edges.EdgeChild) -> None:
        """Write the edge's configuration: the gateway's address, methods and starting rooms, and TLS."""
        gateway = next(c for c in self.children if c.service == topology.ENTRY)
        admission = load_config(self.settings.config_file).admission.for_service(topology.ENTRY)
        tls = None
        if self.pki is not None:
            edge.files.directory.mkdir(parents=True, exist_ok=True)
            tls = edges.tls_files(edge.files, self.pki.cert(topology.ENTRY), self.pki.key(topology.ENTRY),
                                  self.pki.ca, topology.ENTRY)
        edge.configure(f"{self.settings.host}:{gateway.port}", admission, tls)

    async def _spawn_edge(self, edge: edges.EdgeChild) -> None:
        """Start HAProxy and wait until a health check through it reaches the gateway."""
        edge.process = await asyncio.create_subprocess_exec(*edge.command(), stdin=asyncio.subprocess.DEVNULL,
                                                            preexec_fn=_edge_setup)
        deadline = asyncio.get_running_loop().time() + self.settings.ready_timeout
        waiting = asyncio.create_task(self._wait_serving(topology.ENTRY, "edge", edge.address, deadline))
        exited = asyncio.create_task(edge.process.wait())
        await asyncio.wait([waiting, exited], return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError, LaunchError):
                await waiting
            raise LaunchError(f"the edge (HAProxy, {edge.files.config}) exited with code {edge.process.returncode} "
                              "before it was ready; see its message above")
        exited.cancel()
        waiting.result()

    async def _supervise_edge(self, edge: edges.EdgeChild) -> None:
        """Restart HAProxy whenever it dies, as `_supervise` does a server."""
        backoff = 0.5
        while True:
            assert edge.process is not None
            code = await edge.process.wait()
            if self._stopping:
                return
            edge.restarts += 1
            log.warning("the edge exited with code %s; restarting in %.1fs (restart #%d)", code, backoff,
                        edge.restarts)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            try:
                await self._spawn_edge(edge)
            except LaunchError as error:
                log.error("restart of the edge failed: %s", error)
                continue
            backoff = 0.5
            self.write_state()

    async def _supervise(self, child: Child) -> None:
        """Restart the child whenever it dies, with exponential backoff that resets after a stable run."""
        backoff = 0.5
        while True:
            assert child.process is not None
            started = asyncio.get_running_loop().time()
            code = await child.process.wait()
            if self._stopping:
                return
            if asyncio.get_running_loop().time() - started > 30.0:
                backoff = 0.5
            child.restarts += 1
            log.warning("%s exited with code %s; restarting in %.1fs (restart #%d)",
                        child.name, code, backoff, child.restarts)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
            try:
                await self._spawn(child)
            except LaunchError as error:
                log.error("restart of %s failed: %s", child.name, error)
                continue
            self.write_state()
            log.info("%s is back on port %d (pid %d)", child.name, child.port, child.process.pid)

    def write_state(self) -> None:
        """Record what runs where, for the CLI, chaos runs and people."""
        state = {
            "launcher_pid": os.getpid(),
            "data_dir": str(self.settings.data_dir.resolve()),
            "databases": dict(self.settings.database_urls),  # owners on PostgreSQL (no passwords: .pgpass)
            "entry": self.entry,
            "edge": None if self.edge is None else
            {"address": self.edge.address, "pid": self.edge.process.pid if self.edge.process else None,
             "restarts": self.edge.restarts, "haproxy": self.edge.version, "config": str(self.edge.files.config),
             "metrics": self.edge.metrics_url},
            "security": {"mode": "insecure"} if self.pki is None else
            {"mode": "mtls", "pki": str(self.pki.directory.resolve()),
             "policy": str((self.settings.policy or policies.SHIPPED).resolve())},
            "services": {
                service: [{"name": c.name, "address": f"{self.settings.host}:{c.port}",
                           "pid": c.process.pid if c.process else None, "restarts": c.restarts,
                           "metrics": self.metrics_url(c)}
                          for c in self.children if c.service == service]
                for service in topology.names()
            },
        }
        path = self.settings.data_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, path)

    async def stop(self, report: Callable[[Stopped], None] = lambda _: None) -> list[Stopped]:
        """Stop the children in reverse start order: SIGTERM, then SIGKILL after the grace period.

        `report` hears of each child as it ends (within a stage, in the order they exit); the list says the same.
        """
        self._stopping = True
        for task in self._supervisors:
            task.cancel()
        stopped: list[Stopped] = []

        def ended(outcome: Stopped) -> None:
            stopped.append(outcome)
            report(outcome)

        edge = self.edge
        if edge is not None and edge.process is not None:  # first: nothing new reaches the gateway
            if edge.process.returncode is not None:
                ended(Stopped("edge", edge.process.pid, 0.0, exit_code=edge.process.returncode))
            else:
                with contextlib.suppress(ProcessLookupError):
                    edge.process.terminate()
                await self._reap("edge", edge.process, asyncio.get_running_loop().time(), ended)
            edge.cleanup()
        for stage in reversed(topology.stages()):
            running: list[tuple[Child, asyncio.subprocess.Process]] = []
            for child in self.children:
                if child.service not in stage or child.process is None:
                    continue
                if child.process.returncode is not None:  # it died, and its restart was still to come
                    ended(Stopped(child.name, child.process.pid, 0.0, exit_code=child.process.returncode))
                    continue
                running.append((child, child.process))
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGCONT)  # a frozen child cannot handle SIGTERM
                    child.process.terminate()
            since = asyncio.get_running_loop().time()
            await asyncio.gather(*(self._reap(child.name, process, since, ended) for child, process in running))
        (self.settings.data_dir / STATE_FILE).unlink(missing_ok=True)
        return stopped

    async def _reap(self, name: str, process: asyncio.subprocess.Process, since: float,
                    ended: Callable[[Stopped], None]) -> None:
        """Wait for a child sent SIGTERM at `since` to exit; SIGKILL it if it outlasts the grace period."""
        killed = False
        try:
            await asyncio.wait_for(process.wait(), self.settings.stop_grace)
        except TimeoutError:
            log.warning("%s (pid %d) did not stop within %.0fs; killing it", name, process.pid,
                        self.settings.stop_grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            killed = True
        ended(Stopped(name, process.pid, asyncio.get_running_loop().time() - since, killed=killed))

    @property
    def entry(self) -> str:
        """Where callers call: the edge when there is one, else the gateway."""
        return self.edge.address if self.edge is not None else self.addresses(topology.ENTRY)[0]

    def metrics_url(self, child: Child) -> str | None:
        """Where `child` serves its metrics for Prometheus, or None."""
        return None if child.metrics_port is None else f"http://{self.settings.host}:{child.metrics_port}/metrics"

    def summary(self) -> str:
        s = self.settings
        rows = [f"  {'service':<12} {'address':<22} {'pid':>7}   {'metrics':<36} database"]
        order = topology.names()
        for c in sorted(self.children, key=lambda c: (c.service != topology.ENTRY, order.index(c.service))):
            database = topology.service(c.service).database
            db = "(stores nothing)" if database is None else redact(s.database_urls[c.service]) \
                if c.service in s.database_urls else str(s.data_dir / database)
            pid = c.process.pid if c.process else 0
            metrics = self.metrics_url(c) or "-"
            rows.append(f"  {c.name:<12} {s.host + ':' + str(c.port):<22} {pid:>7}   {metrics:<36} {db}")
        if self.edge is not None:
            pid = self.edge.process.pid if self.edge.process else 0
            rows.insert(1, f"  {'edge':<12} {self.edge.address:<22} {pid:>7}   {self.edge.metrics_url or '-':<36} "
                           f"(HAProxy {self.edge.version} in front of the gateway)")
            edge_lines = ["Edge: HAProxy refuses at once what the gateway's admission limit has no room for "
                          "(docs/overload.md); the gateway listens behind it.", ""]
        else:
            edge_lines = [f"Edge: {self.edge_absent}.", ""]
        entry = topology.service(topology.ENTRY)
        gateway = self.entry
        target = "" if gateway == f"127.0.0.1:{entry.port}" else f" --target {gateway}"
        if self.pki is None:
            security = ["Security: NONE (--insecure): plaintext, and every caller may call every method.", "",
                        "Try, in another terminal:"]
        else:
            security = [f"Security: mutual TLS on every hop (certificates in {self.pki.directory}); "
                        f"who may call what ({self.policy.source}):",
                        *(f"  {line}" for line in self.policy.describe()),
                        "  health and reflection: anyone with a certificate from the CA; the gateway: a token",
                        "", "Try, in another terminal (a token for customer 1 first):",
                        f"  export PULLGATE_TOKEN=$(pullgate token --customer 1{_data_dir_flag(s.data_dir)})"]
        return "\n".join([
            f"pullgate is up: {len(self.children) + (self.edge is not None)} processes, data in {s.data_dir}",
            *rows,
            "",
            *edge_lines,
            *security,
            f"  pullgate order-view 1{target}",
            f"  pullgate customer 1{target}",
            f"  pullgate place-order --customer 1 --line SKU-001:2 --line SKU-002:1{target}",
            *self._curl(gateway, entry.contract),
            "Ctrl-C stops everything.",
        ])


    def _curl(self, gateway: str, contract: str) -> list[str]:
        """How to call the gateway with buf curl, through TLS and with the token when the system is secure."""
        body = "-d '{\"order_id\": \"1\"}'"
        if self.pki is None:
            return [f"  buf curl --protocol grpc --http2-prior-knowledge {body} http://{gateway}/{contract}/GetOrderView"]
        return [f"  buf curl --protocol grpc --cacert {self.pki.ca} --servername {topology.ENTRY} "
                f"-H \"Authorization: Bearer $PULLGATE_TOKEN\" {body} https://{gateway}/{contract}/GetOrderView"]


def _data_dir_flag(data_dir: Path) -> str:
    return "" if data_dir == Path("var") else f" --data-dir {data_dir}"


async def up(settings: UpSettings) -> int:
    """Run the system until Ctrl-C or SIGTERM; returns the exit code."""
    logs.configure("pullgate")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        launcher = Launcher(settings)
    except LaunchError as error:
        print(f"pullgate up: {error}", file=sys.stderr, flush=True)
        return 1
    starting = asyncio.create_task(launcher.start())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            print(launcher.summary(), flush=True)
            await stopped
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
        print("stopping pullgate...", flush=True)
        return 0
    except LaunchError as error:
        print(f"pullgate up: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        since = loop.time()
        ended = await launcher.stop(report=lambda s: print(stopped_line(s), flush=True))
        if ended:
            plural = "" if len(ended) == 1 else "es"
            print(f"pullgate stopped: {len(ended)} process{plural} in {loop.time() - since:.1f}s", flush=True)
        stopped.cancel()
