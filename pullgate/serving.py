"""One way to run a pullgate gRPC server: health, reflection, deadline propagation, error translation, clean stop.

Every server in pullgate (the four owners and the gateway) runs through `run()`, so they all answer health
checks, expose reflection for grpcurl and `buf curl`, bound their outgoing calls by the incoming deadline,
turn errors into status codes in one place, inject faults on demand (`--faults`, and at run time only with
`--allow-fault-injection`; see docs/faults.md), export traces and metrics when the environment asks for them
(pullgate.telemetry; docs/observability.md), and stop gracefully on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from pullgate import topology
from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.config import load
from pullgate.decoding import RequestDecoding
from pullgate.edge import control as edge
from pullgate.errors import ServiceError
from pullgate.faults import FaultInjector, FaultInterceptor, FaultService, parse_faults
from pullgate.security.setup import INSECURE_SECURITY, Security, SecurityFlags, resolve
from pullgate.telemetry import Telemetry
from pullgate.telemetry.metrics import port_file as metrics_port_file
from pullgate.telemetry.rpc_metrics import ServerMetrics
from resilience import (
    SYSTEM_CLOCK,
    AdmissionConfig,
    AdmissionInterceptor,
    Behavior,
    Clock,
    Criticality,
    DeadlineInterceptor,
    ResilienceError,
    UnaryInterceptor,
)

log = logging.getLogger("pullgate.serving")



@dataclass(frozen=True)
class Binding:
    """One gRPC service to register: its full name, the generated `add_*_to_server`, and the servicer."""

    full_name: str
    add: Callable[[Any, grpc.aio.Server], None]
    servicer: object
    criticality: Mapping[str, Criticality] = field(default_factory=dict)
    """Each method's own criticality by full path (`/pkg.Service/Method`); a caller may lower it, never raise
    it. A method not named here is CRITICAL, so a caller's level is taken as it comes."""


@dataclass(frozen=True)
class ServeOptions:
    """Everything a server needs to start, as given on the command line."""

    name: str
    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path = Path("var")
    upstreams: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    port_file: Path | None = None
    config_file: Path | None = None
    faults: str = ""
    allow_fault_injection: bool = False
    metrics_port: int | None = None  # None = $PULLGATE_METRICS_PORT (what the launcher sets), else no endpoint
    health_port: int | None = None
    """Also serve the health service alone, in plaintext, on this port (0: any free one): for probes that cannot
    present a certificate, such as Kubernetes' native gRPC probes. None: no such port."""
    flags: SecurityFlags = field(default_factory=SecurityFlags)
    """The security flags (--tls-cert ..., --insecure); `run()` resolves them with the config's [security]."""
    security: Security = INSECURE_SECURITY
    """The resolved security: what the app's clients use (`security.channels`). Plaintext by default, for a
    server made in-process by a test; `pullgate serve` never starts without TLS unless told `--insecure`."""

    edge_control: Path | None = None
    """The runtime API socket of the HAProxy edge in front of this server (pullgate.edge), whose rooms follow
    this server's admission limit; None: no edge."""

    database_url: str | None = None
    """A PostgreSQL database (`postgresql://...`) to keep this service's data in instead of the SQLite file."""

    @property
    def database(self) -> Path:
        """Where this service keeps its private SQLite database: the topology's file name under `data_dir`."""
        return topology.database_path(self.name, self.data_dir)

    @property
    def store(self) -> Path | str:
        """Where this service's store lives: `database_url` if given, else the SQLite file `database`."""
        return self.database_url or self.database


App = Callable[[ServeOptions], contextlib.AbstractAsyncContextManager[Sequence[Binding]]]

NO_ADMISSION = AdmissionConfig(enabled=False)
"""Admit everything (tests, tools); criticality still travels."""


class ErrorInterceptor(UnaryInterceptor):
    """Turns ServiceError and ResilienceError into their status codes, and anything else into INTERNAL."""

    def wrap(self, behavior: Behavior, details: grpc.HandlerCallDetails) -> Behavior:
        method = details.method

        async def translated(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                return await behavior(request, context)
            except ResilienceError as error:
                # A failure of one of this server's own downstream calls: say where it began, so that the
                # caller's breaker does not count it against this (healthy) server.
                await context.abort(error.code, str(error), trailing_metadata=error.origin_metadata())
            except ServiceError as error:
                await context.abort(error.code, str(error), trailing_metadata=error.trailers())
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unhandled error in %s", method)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log"
                )

        return translated


@contextlib.asynccontextmanager
async def running(
    bindings: Sequence[Binding],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    faults: FaultInjector | None = None,
    allow_fault_injection: bool = False,
    tracing: Sequence[grpc.aio.ServerInterceptor] = (),  # type: ignore[type-arg]
    admission: AdmissionConfig = NO_ADMISSION,
    name: str = "",
    clock: Clock = SYSTEM_CLOCK,
    security: Security = INSECURE_SECURITY,
    edge_control: Path | None = None,
) -> AsyncIterator[tuple[grpc.aio.Server, int, HealthServicer]]:
    """A started server with the bindings, health and reflection; yields (server, bound port, health).

    `faults` holds the faults the application services start with (none by default). With
    `allow_fault_injection` the admin FaultService is registered to change them at run time; without it the
    service does not exist, and with no faults for this server either, the fault interceptor is not installed
    at all (it costs nothing in production). A FaultInjector made here for the admin service alone matches only
    clauses without a service name; pass `FaultInjector(name)` to match `name=` clauses too. `tracing` holds the
    interceptors that make server spans (`Telemetry.server_interceptors()`; none when tracing is off).
    `admission` is what the server admits by (docs/overload.md); by default it refuses nothing, and each
    request's criticality (the caller's, never above its method's own in `Binding.criticality`) still travels
    on to the calls its handler makes. `name` labels the admission metrics. `clock`
    is the one the caller's deadline is carried on: the clock of the Downstreams the handlers call through
    (a test that drives their time passes its FakeClock here too). `security` says how it listens (TLS or
    plaintext) and whom it lets in (pullgate.security); plaintext and open by default, for tests. With
    `edge_control` (the runtime API socket of an edge in front of this server: pullgate.edge) the edge's rooms
    follow this server's admission limit.
    """
    names = [b.full_name for b in bindings]
    injector = faults if faults is not None else FaultInjector("")
    own = {path: level for b in bindings for path, level in b.criticality.items()}
    admitting = AdmissionInterceptor(names, admission, criticality=own, name=name, clock=clock,
                                     edge=edge_control is not None)
    interceptors: list[grpc.aio.ServerInterceptor] = [  # type: ignore[type-arg]
        # Outermost: the standard per-method metric (rpc.server.duration), so every call is counted by its
        # status, refusals too; a clock read and a histogram record per call.
        # Then admission. Whatever stands in front of it is paid by every refused request, and a refusal
        # must be cheap (a recording server span in front would cost each refusal about a fifth more CPU);
        # refusals stay visible in the caller's span, in the trailers and in the refused counter. It also puts
        # the request's criticality in force for everything below, the handler's own calls included.
        ServerMetrics(),
        # Between the two, the request's decoding (pullgate.decoding), taken over from grpc: a body that is not
        # the method's request message is refused with INVALID_ARGUMENT (grpc says UNKNOWN) and nothing below
        # runs for it, admission included. Inside ServerMetrics, so that refusal is counted with its code
        # (grpc decodes before every interceptor's behavior: its UNKNOWNs were counted nowhere). In front of
        # admission it adds nothing to a refusal's cost: grpc decoded every request before admission anyway.
        RequestDecoding(),
        admitting,
        # Then the server span, with the caller's trace context from the metadata, so the handler, the
        # faults and the error translation below all happen inside it (an injected delay shows in the span).
        *tracing,
        # Then who is calling (pullgate.security.authz): inside the span, so a refused call shows in a trace with
        # the caller's identity; nothing below runs for a caller the policy does not let in.
        *security.interceptors(),
        # Then the caller's deadline becomes the current one before anything else runs, so an injected
        # delay spends the caller's time like a slow handler would, and what the handler calls after it gets
        # only what is left.
        DeadlineInterceptor(clock),
    ]
    if allow_fault_injection or injector.spec.for_server(injector.server_name):
        # Faults stand for a sick server or network in front of the application: they act before the handler
        # runs, inside admission so an injected delay holds a place and shows in the latency the limit follows,
        # and above ErrorInterceptor so an injected abort is passed on as is, never logged or counted as a bug in
        # the handler. Only the application services are named, so health, reflection and the admin
        # service itself (which must stay usable to clear faults) are never faulted.
        interceptors.append(FaultInterceptor(injector, names))
    # Innermost: it turns what the handler raises into status codes, once.
    interceptors.append(ErrorInterceptor())
    # The bound on calls waiting in grpc's core for Python to take them: past it, grpc refuses them at once
    # (docs/overload.md, "The queue in front of Python"). Behind an edge, the edge bounds the calls in flight to the
    # limit, so they cannot pile up there; a bound on them would only refuse, CANCELLED, what the edge let in.
    if edge_control is not None and admission.enabled:
        admission = replace(admission, max_pending_requests=admission.max_limit,
                            max_pending_requests_hard_limit=admission.max_limit)
    server = grpc.aio.server(interceptors=interceptors, options=admission.server_options())
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for binding in bindings:
        binding.add(binding.servicer, server)
    admin: list[str] = []
    if allow_fault_injection:
        admin_pb2_grpc.add_FaultServiceServicer_to_server(FaultService(injector), server)
        admin.append(admin_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name)
    reflection.enable_server_reflection(
        [*names, *admin, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    bound = security.listen(server, f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    try:
        async with edge.following(admitting.admission, edge_control):
            yield server, bound, health
    finally:
        await health.enter_graceful_shutdown()
        await server.stop(grace=5.0)


@contextlib.asynccontextmanager
async def health_only(health: HealthServicer, host: str, port: int) -> AsyncIterator[int]:
    """A plaintext server with `health` alone (the main server's, so both say the same); yields its bound port.

    It answers Check, List and Watch and nothing else: a probe learns whether the server is SERVING, which is no
    secret, and reaches no method of the application, whatever the policy says."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port} (--health-port)")
    await server.start()
    try:
        yield bound
    finally:
        await server.stop(grace=1.0)


def write_port_file(path: Path, port: int) -> None:
    """Write the bound port atomically, so a launcher polling for the file never reads half of it."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


async def run(options: ServeOptions, app: App) -> None:
    """Run one server until SIGTERM or SIGINT, then stop gracefully (in-flight calls get a grace period).

    A bad `options.faults` raises FaultSpecError (naming the clause) before the app or the server starts.
    """
    faults = FaultInjector(options.name, parse_faults(options.faults))
    # Before anything starts: a missing certificate or a wrong policy is an error naming the flag, key or file.
    options = replace(options, security=resolve(options.name, options.flags, load(options.config_file).security))
    # Before the app, so the transports it makes to its owners get the client span and propagation.
    telemetry = Telemetry.setup(options.name, options.host, options.metrics_port)
    try:
        await _serve(options, app, faults, telemetry)
    finally:
        telemetry.shutdown()


async def _serve(options: ServeOptions, app: App, faults: FaultInjector, telemetry: Telemetry) -> None:
    if active := faults.spec.for_server(options.name):
        log.warning("%s injecting faults: %s", options.name, active)
    if options.allow_fault_injection:
        log.warning("%s allows fault injection at run time (pullgate.admin.v1.FaultService)", options.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app(options) as bindings, running(
        bindings, options.host, options.port, faults=faults, allow_fault_injection=options.allow_fault_injection,
        tracing=telemetry.server_interceptors(), name=options.name,
        admission=load(options.config_file).admission.for_service(options.name), security=options.security,
        edge_control=options.edge_control,
    ) as (_, port, health), contextlib.AsyncExitStack() as extra:
        how = "plaintext, INSECURE" if options.security.insecure else "TLS"
        log.info("%s serving on %s:%d (%s)", options.name, options.host, port, how)
        if options.health_port is not None:
            bound = await extra.enter_async_context(health_only(health, options.host, options.health_port))
            log.info("%s serving health alone, in plaintext, on %s:%d", options.name, options.host, bound)
        if telemetry.metrics_port is not None:
            log.info("%s metrics on http://%s:%d/metrics", options.name, options.host, telemetry.metrics_port)
        if options.port_file is not None:
            if telemetry.metrics_port is not None:  # first: the launcher reads it once the gRPC port is there
                write_port_file(metrics_port_file(options.port_file), telemetry.metrics_port)
            write_port_file(options.port_file, port)
        await stop.wait()
        log.info("%s stopping", options.name)
    log.info("%s stopped", options.name)
