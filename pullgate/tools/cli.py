"""The `pullgate` command: run the system (`up`, `serve`) and call the gateway as a person would."""

# Every server process `pullgate up` starts is a `pullgate serve`, so this module imports what serving needs and
# no more: the tools (`db` with psycopg, `launcher`, `render`; `audit` and `chaos` with matplotlib) are imported by
# the commands that use them, and the flags of `db`, `audit` and `chaos` are added when that command is parsed
# (tests/test_imports.py checks it).

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from pullgate import loops, topology
from pullgate.config import URL_SCHEMES, ConfigError, load
from pullgate.faults import parse_faults
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from pullgate.security.access import Access
from pullgate.security.setup import SecurityFlags
from pullgate.serving import ServeOptions, run
from pullgate.tools.apps import load_app
from resilience import DnsTarget, DurationError, parse_seconds
from services._db import DatabaseError

CONSISTENCY = {"strong": pb.CONSISTENCY_STRONG, "bounded": pb.CONSISTENCY_BOUNDED_STALENESS,
               "available": pb.CONSISTENCY_AVAILABLE}


class UsageError(Exception):
    """A flag or argument is wrong; the message names it."""


def _seconds(text: str) -> float:
    """A duration flag: `250ms`, `1.5s`, `2m` or a plain number of seconds (docs/resilience.md#durations)."""
    try:
        return parse_seconds(text)
    except DurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _upstream(text: str) -> tuple[str, tuple[str, ...]]:
    """`NAME=HOST:PORT[,HOST:PORT...]`, or `NAME=dns:///HOST:PORT` (its replicas found by DNS)."""
    name, sep, addresses = text.partition("=")
    if not sep or not name or not addresses:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=HOST:PORT[,HOST:PORT...] or NAME=dns:///HOST:PORT")
    if DnsTarget.is_dns(addresses):
        try:
            DnsTarget.parse(addresses)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
        return name, (addresses,)
    return name, tuple(a for a in addresses.split(",") if a)


def _port(text: str) -> tuple[str, int]:
    name, sep, port = text.partition("=")
    if not sep or name not in topology.names() or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=PORT with NAME one of {', '.join(topology.names())}")
    return name, int(port)


def _line(text: str) -> orders_pb2.OrderLine:
    sku, sep, quantity = text.rpartition(":")
    if not sep or not sku or not quantity.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected SKU:QUANTITY, e.g. SKU-001:2")
    return orders_pb2.OrderLine(sku=sku, quantity=int(quantity))


# ---- running the system ---------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from pullgate.tools import db, launcher

    ports = {s.name: 0 if args.any_ports else s.port for s in topology.SERVICES}
    ports.update(dict(args.port or []))
    if args.replicas < 1:
        raise UsageError(f"--replicas: must be at least 1, got {args.replicas}")
    _check_startup(args)
    database_urls: dict[str, str] = {}
    if args.postgres:
        # The owners' databases and roles, made on first use (and repaired if a grant drifted); see docs/storage.md.
        database_urls = db.init(args.postgres).urls
    metrics_ports = None
    if args.metrics_port:
        metrics_ports = {s.name: 0 if args.any_ports else s.metrics_port for s in topology.SERVICES}
        metrics_ports.update(dict(args.metrics_port))
    settings = launcher.UpSettings(
        data_dir=args.data_dir, host=args.host, ports=ports, replicas=args.replicas, config_file=args.config,
        faults=args.faults, allow_fault_injection=args.allow_fault_injection,
        metrics=not args.no_metrics, metrics_ports=metrics_ports, loop=args.loop,
        insecure=args.insecure, policy=args.policy, database_urls=database_urls, edge=args.edge,
    )
    return loops.run(launcher.up(settings), args.loop)


def _check_startup(args: argparse.Namespace) -> None:
    """Check the config file, fault spec and loop before anything starts; errors name the key or clause."""
    load(args.config)
    parse_faults(args.faults)
    try:
        loops.check(args.loop)
    except loops.LoopUnavailable as error:
        raise UsageError(str(error)) from None


def _database_url(args: argparse.Namespace) -> str | None:
    """--database-url, else the config's [database] URL for the service, else None (its SQLite file)."""
    owns_data = topology.service(args.service).owns_data
    if args.database_url is not None:
        if not owns_data:
            raise UsageError(f"--database-url: {args.service} stores nothing (pullgate/topology.py gives it no "
                             "database)")
        if not args.database_url.startswith(URL_SCHEMES):
            raise UsageError(f"--database-url: must be a PostgreSQL URL (postgresql://user@host:port/database), "
                             f"got {args.database_url!r}")
        return str(args.database_url)
    return load(args.config).database.url_for(args.service) if owns_data else None


def cmd_db_init(args: argparse.Namespace) -> int:
    from pullgate.tools import db

    print(db.render_init(db.init(args.admin_url, args.prefix, revoke_public=args.revoke_public)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    _check_startup(args)
    database_url = _database_url(args)
    options = ServeOptions(
        name=args.service, host=args.host, port=args.port, data_dir=args.data_dir,
        upstreams=dict(args.upstream or []), port_file=args.port_file, config_file=args.config,
        faults=args.faults, allow_fault_injection=args.allow_fault_injection, metrics_port=args.metrics_port,
        health_port=args.health_port,
        flags=SecurityFlags(tls_cert=args.tls_cert, tls_key=args.tls_key, tls_ca=args.tls_ca, policy=args.policy,
                            token_secret=args.token_secret, insecure=args.insecure),
        database_url=database_url, edge_control=args.edge_control,
    )
    if topology.service(args.service).owns_data and database_url is None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    loops.run(run(options, load_app(args.service)), args.loop)
    return 0


# ---- calling the gateway --------------------------------------------------------------------------------


def _state(args: argparse.Namespace) -> dict[str, Any]:
    """What the running `pullgate up` recorded under --data-dir (nothing when none runs there)."""
    from pullgate.tools import launcher

    path = args.data_dir / launcher.STATE_FILE
    state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return state


def _target(args: argparse.Namespace) -> str:
    """--target, else $PULLGATE_TARGET, else the entry that `pullgate up` recorded (its edge, or its gateway), else
    the default port."""
    if args.target:
        return str(args.target)
    if os.environ.get("PULLGATE_TARGET"):
        return os.environ["PULLGATE_TARGET"]
    state = _state(args)
    if state:
        return str(state.get("entry") or state["services"][topology.ENTRY][0]["address"])
    return f"127.0.0.1:{topology.service(topology.ENTRY).port}"


def _access(args: argparse.Namespace) -> Access:
    """How to reach the gateway: what `pullgate up` recorded, else the
    development PKI under --data-dir when it exists; plaintext only with --insecure."""
    if args.insecure:
        return Access()
    state = _state(args)
    if state:
        return Access.from_state(state)
    pki = args.data_dir / "pki"
    if (pki / "ca.pem").exists():
        return Access(pki)
    raise UsageError(f"no running `pullgate up` under {args.data_dir} and no certificates in {pki}: give --data-dir, "
                     "or --insecure for a gateway that serves plaintext")


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("PULLGATE_TOKEN") or None


def _read_options(args: argparse.Namespace) -> pb.ReadOptions:
    read = pb.ReadOptions(consistency=CONSISTENCY[args.consistency])
    if args.max_staleness is not None:
        read.max_staleness.FromNanoseconds(int(args.max_staleness * 1e9))
    return read


def _call(args: argparse.Namespace, invoke: Callable[[gateway_pb2_grpc.GatewayServiceStub], Any],
          show: Callable[[Any], str]) -> int:
    access, token = _access(args), _token(args)

    async def go() -> Message:
        async with access.channel(topology.ENTRY, _target(args), token=token) as channel:
            response: Message = await invoke(gateway_pb2_grpc.GatewayServiceStub(channel))
            return response

    try:
        response = asyncio.run(go())
    except grpc.aio.AioRpcError as error:
        print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
        if error.code() is grpc.StatusCode.UNAUTHENTICATED and token is None:
            print("hint: the gateway wants a token; export PULLGATE_TOKEN=$(pullgate token --customer 1), "
                  "or pass --token", file=sys.stderr)
        return 1
    if args.json:
        print(json_format.MessageToJson(response, preserving_proto_field_name=True))
    else:
        print(show(response))
    return 0


def cmd_order_view(args: argparse.Namespace) -> int:
    from pullgate.tools import render

    request = pb.GetOrderViewRequest(order_id=args.order_id, read=_read_options(args))
    return _call(args, lambda stub: stub.GetOrderView(request, timeout=args.timeout), render.order_view)


def cmd_customer(args: argparse.Namespace) -> int:
    from pullgate.tools import render

    request = pb.GetCustomerOverviewRequest(customer_id=args.customer_id, page_size=args.orders,
                                            read=_read_options(args))
    return _call(args, lambda stub: stub.GetCustomerOverview(request, timeout=args.timeout),
                 render.customer_overview)


def cmd_place_order(args: argparse.Namespace) -> int:
    from pullgate.tools import render

    key = args.key or str(uuid.uuid4())
    request = pb.PlaceOrderRequest(idempotency_key=key, customer_id=args.customer, lines=args.line)
    return _call(args, lambda stub: stub.PlaceOrder(request, timeout=args.timeout),
                 lambda response: render.placed_order(response, key))


def cmd_token(args: argparse.Namespace) -> int:
    """Print a development token signed with the local key (`<data-dir>/pki/token.key`)."""
    access = Access(args.data_dir / "pki")
    if args.customer is None and not args.admin and not args.scope:
        raise UsageError("--customer ID, --admin or --scope: say what the token is for")
    scopes = [*args.scope, *(["admin"] if args.admin else [])]
    subject = args.subject or (f"customer:{args.customer}" if args.customer is not None else "admin")
    print(access.mint(subject=subject, customer_id=args.customer, scopes=scopes, lifetime=args.lifetime))
    return 0


def cmd_edge_config(args: argparse.Namespace) -> int:
    """Write the edge's HAProxy configuration into --out: for an HAProxy sidecar beside a gateway that runs with
    --edge-control <out>/admin.sock (deploy/kubernetes; `pullgate up` writes its own)."""
    from pullgate.edge.haproxy import EdgeFiles
    from pullgate.tools import edge

    tls_flags = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(tls_flags) and not all(tls_flags):
        raise UsageError("--tls-cert, --tls-key and --tls-ca go together (or none of them, for plaintext)")
    files = EdgeFiles(args.out)
    files.directory.mkdir(parents=True, exist_ok=True)
    tls = None
    if args.tls_cert:
        tls = edge.tls_files(files, args.tls_cert, args.tls_key, args.tls_ca, topology.ENTRY)
    edge.write_edge(files, listen=args.listen, backend=args.backend, tls=tls, metrics=args.metrics,
                    admission=load(args.config).admission.for_service(topology.ENTRY))
    print(files.config)
    return 0


# ---- the parser -----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose flags may be added late, by `arguments(parser)`, the first time it parses or
    prints help: so a command's flags (and the modules they need) are loaded only when that command is used."""

    def __init__(self, *args: Any, arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._arguments = arguments

    def _load(self) -> None:
        arguments, self._arguments = self._arguments, None
        if arguments is not None:
            arguments(self)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        self._load()
        return super().parse_known_args(*args, **kwargs)

    def format_usage(self) -> str:
        self._load()
        return super().format_usage()

    def format_help(self) -> str:
        self._load()
        return super().format_help()


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help="where databases live (default ./var)")
    parser.add_argument("--config", type=Path, help="TOML config file (see docs/resilience.md)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--faults", default="", metavar="SPEC",
                        help="inject latency/errors, e.g. 'catalog=delay:500ms@2%%' (see docs/faults.md)")
    parser.add_argument("--allow-fault-injection", action="store_true",
                        help="serve the admin FaultService so faults can be changed at run time")
    parser.add_argument("--loop", choices=loops.LOOPS, default=loops.DEFAULT,
                        help="event loop of every process (default asyncio; uvloop needs pullgate[uvloop])")
    parser.add_argument("--insecure", action="store_true",
                        help="plaintext, and every caller may call every method (local experiments only)")
    parser.add_argument("--policy", type=Path, help="who may call what (default: the shipped least-privilege "
                                                     "policy; see docs/security.md)")


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="gateway address (default: the running `pullgate up`, or 127.0.0.1:50050)")
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=_seconds, default=5.0, help="deadline for the call (default 5s)")
    parser.add_argument("--json", action="store_true", help="print the response as JSON")
    parser.add_argument("--token", help="bearer token for the gateway (default $PULLGATE_TOKEN; `pullgate token`)")
    parser.add_argument("--insecure", action="store_true", help="call a gateway that serves plaintext")


def _read_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consistency", choices=sorted(CONSISTENCY), default="bounded",
                        help="strong: live or fail; bounded: cached/stale within --max-staleness; "
                             "available: whatever can be had (default bounded)")
    parser.add_argument("--max-staleness", type=_seconds, help="oldest acceptable data for bounded reads")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pullgate", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run every service and the gateway, with demo data")
    _server_flags(up)
    up.add_argument("--replicas", type=int, default=1, help="processes per owning service (default 1)")
    up.add_argument("--port", type=_port, action="append", metavar="NAME=PORT", help="override one default port")
    up.add_argument("--any-ports", action="store_true", help="let every process pick a free port")
    up.add_argument("--metrics-port", type=_port, action="append", metavar="NAME=PORT",
                    help="override one Prometheus metrics port (defaults 9464-9468; 0 = any free port)")
    up.add_argument("--no-metrics", action="store_true", help="serve no Prometheus metrics")
    up.add_argument("--postgres", metavar="ADMIN_URL",
                    help="keep the owners' data in PostgreSQL: a database and a role per owner on this server, "
                         "made on first use (`pullgate db init`), instead of SQLite files under --data-dir")
    up.add_argument("--edge", choices=("auto", "haproxy", "off"), default="auto",
                    help="HAProxy in front of the gateway, refusing the excess at once under overload: auto (when "
                         "haproxy is installed; the default), haproxy (insist) or off (docs/overload.md)")
    up.set_defaults(func=cmd_up)

    serve = sub.add_parser("serve", help="run one server (what `up` and containers run)")
    serve.add_argument("service", choices=topology.names())
    _server_flags(serve)
    serve.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    serve.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    serve.add_argument("--database-url", metavar="postgresql://...",
                       help="an owner: keep its data in this PostgreSQL database, not under --data-dir "
                            "(default: the config's [database], else SQLite; see docs/storage.md)")
    serve.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0 = any free one)")
    serve.add_argument("--health-port", type=int,
                       help="also serve the health service alone, in plaintext, on this port: for probes without "
                            "a certificate (Kubernetes' gRPC probes)")
    serve.add_argument("--upstream", type=_upstream, action="append", metavar="NAME=HOST:PORT[,HOST:PORT]",
                       help="where an owner this server calls listens (repeat per owner); NAME=dns:///HOST:PORT "
                            "finds its replicas by DNS, resolved again as they come and go")
    serve.add_argument("--tls-cert", type=Path, help="this server's certificate (PEM; its identity a SPIFFE URI SAN)")
    serve.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    serve.add_argument("--tls-ca", type=Path, help="the CA bundle its peers' certificates must chain to (PEM)")
    serve.add_argument("--token-secret", type=Path, help="the gateway: the HS256 key its callers' tokens are "
                                                          "signed with (or [security.tokens] in the config)")
    serve.add_argument("--edge-control", type=Path, metavar="SOCKET",
                       help="the runtime API socket of the HAProxy edge in front of this server, whose rooms are to "
                            "follow its admission limit (what `pullgate up` passes the gateway; docs/overload.md)")
    serve.set_defaults(func=cmd_serve)

    view = sub.add_parser("order-view", help="an order with its customer, products and stock")
    view.add_argument("order_id")
    _client_flags(view)
    _read_flags(view)
    view.set_defaults(func=cmd_order_view)

    customer = sub.add_parser("customer", help="a customer with their recent orders")
    customer.add_argument("customer_id")
    customer.add_argument("--orders", type=int, default=5, help="how many recent orders (default 5)")
    _client_flags(customer)
    _read_flags(customer)
    customer.set_defaults(func=cmd_customer)

    place = sub.add_parser("place-order", help="place an order through the gateway")
    place.add_argument("--customer", required=True, help="customer id")
    place.add_argument("--line", type=_line, action="append", required=True, metavar="SKU:QTY")
    place.add_argument("--key", help="idempotency key (default: a new one; repeat it to retry safely)")
    _client_flags(place)
    place.set_defaults(func=cmd_place_order)

    token = sub.add_parser("token", help="mint a development token for the gateway, from the local key")
    token.add_argument("--customer", help="the customer the token acts for (reads its data, places its orders)")
    token.add_argument("--admin", action="store_true", help="may read any customer's data")
    token.add_argument("--scope", action="append", default=[], help="another scope (repeat)")
    token.add_argument("--subject", help="the token's subject (default customer:ID, or admin)")
    token.add_argument("--lifetime", type=_seconds, default=12 * 3600.0, help="how long it is valid (default 12h)")
    token.add_argument("--data-dir", type=Path, default=Path("var"), help="where `pullgate up` keeps its data")
    token.set_defaults(func=cmd_token)

    edge_config = sub.add_parser("edge-config", help="write the HAProxy configuration of an edge in front of a "
                                                     "gateway, for a sidecar (docs/overload.md)")
    edge_config.add_argument("--listen", required=True, metavar="HOST:PORT", help="where the edge listens")
    edge_config.add_argument("--backend", required=True, metavar="HOST:PORT", help="where the gateway listens")
    edge_config.add_argument("--tls-cert", type=Path, help="the gateway's certificate (PEM), for the edge's TLS")
    edge_config.add_argument("--tls-key", type=Path, help="its key (PEM)")
    edge_config.add_argument("--tls-ca", type=Path, help="the CA the gateway's certificate chains to (PEM)")
    edge_config.add_argument("--config", type=Path, help="the gateway's TOML config: its [admission] starting rooms")
    edge_config.add_argument("--metrics", metavar="HOST:PORT", help="where HAProxy serves Prometheus metrics")
    edge_config.add_argument("--out", type=Path, required=True, help="the directory to write into")
    edge_config.set_defaults(func=cmd_edge_config)

    sub.add_parser("db", help="PostgreSQL: the owners' databases and roles (docs/storage.md)",
                   arguments=_db_arguments)

    # Larger commands live in their own modules: each has add_arguments(parser) and run(args) -> exit code.
    for name, module, summary in (
        ("audit", "pullgate.tools.audit", "prove that no service stores another's data"),
        ("chaos", "pullgate.tools.chaos", "kill, freeze, slow and overload services under load; check the invariants"),
    ):
        command = sub.add_parser(name, help=summary, description=summary,
                                 arguments=functools.partial(_add_arguments, module))
        command.set_defaults(func=_delegate(module), module=module)
    return parser


def _db_arguments(database: argparse.ArgumentParser) -> None:
    from pullgate.tools import db

    database_sub = database.add_subparsers(dest="db_command", required=True)
    db_init = database_sub.add_parser("init", help="create (or repair) a database and a role per owner; print URLs")
    db_init.add_argument("--admin-url", required=True, metavar="postgresql://...",
                         help="a role that may create roles and databases (a superuser will do)")
    db_init.add_argument("--prefix", default=db.DEFAULT_PREFIX,
                         help=f"of each role's and database's name (default {db.DEFAULT_PREFIX}: pullgate_orders, ...)")
    db_init.add_argument("--revoke-public", action="store_true",
                         help="also take CONNECT from PUBLIC on the cluster's other databases (postgres, ...), so "
                              "each owner's role can connect to its own database and nothing else")
    db_init.set_defaults(func=cmd_db_init)


def _add_arguments(module: str, parser: argparse.ArgumentParser) -> None:
    with contextlib.suppress(ModuleNotFoundError):
        importlib.import_module(module).add_arguments(parser)


def _delegate(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        code: int = importlib.import_module(module).run(args)
        return code

    return run


def _caller_errors() -> tuple[type[Exception], ...]:
    """What `main` reports as the caller's mistake (exit 2). `db.DbError` only once `db` is loaded: until then
    nothing can have raised it, and `pullgate serve` need not import psycopg to say so."""
    db = sys.modules.get("pullgate.tools.db")
    return (UsageError, ConfigError, ValueError, DatabaseError, *([db.DbError] if db is not None else []))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    name = getattr(args, "service", None) or "pullgate"
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except _caller_errors() as error:
        print(f"pullgate {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
