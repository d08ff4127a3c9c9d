"""The shape of the system, said once: every service, its contract, its app, its port, what it calls, its data.

Start here. The launcher, the CLI, config validation, the audit, the chaos tool and the tests all read this
module; none of them lists the services again (`tests/test_topology.py` pins that). Adding a service, or an
upstream to one, is a change here plus that service's own code (its protos, its package, its app).

    from pullgate import topology
    topology.service("orders").upstreams        # ('customers', 'catalog', 'inventory')
    topology.names()                            # every service, in start order
    topology.stages()                           # groups that can start together: callees before callers

This module knows names and numbers only. It imports nothing from `services/` or `gateway/`: an app is named
by its import path, and the tools load it (`pullgate.tools.apps`). Protobuf code generation reads the
`protos/` tree itself, and a test checks that every contract named here is generated.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Service:
    """One service: a process of its own with a contract, an application, a port and (for an owner) a database."""

    name: str
    """How everything refers to it: process names, `--upstream NAME=...`, `[resilience.NAME]`, metric labels."""
    contract: str
    """The full name of the gRPC service it serves, e.g. `pullgate.catalog.v1.CatalogService`."""
    app: str
    """Its application factory as `module:attribute` (an `pullgate.serving.App`)."""
    port: int
    """Its default gRPC port under `pullgate up`."""
    metrics_port: int
    """Its default Prometheus port under `pullgate up`."""
    upstreams: tuple[str, ...] = ()
    """The services it calls, each through a `resilience.Downstream`."""
    database: str | None = None
    """Its private database file under the data dir; None for a service that stores nothing."""
    entities: tuple[str, ...] = ()
    """The entities it owns (singular nouns). Another service may hold one only as its id."""
    ids: tuple[str, ...] = ()
    """The id columns by which other services may refer to its entities."""

    @property
    def package(self) -> str:
        """The versioned proto package of its contract, e.g. `pullgate.catalog.v1`."""
        return self.contract.rpartition(".")[0]

    @property
    def owns_data(self) -> bool:
        return self.database is not None


SERVICES: tuple[Service, ...] = (
    Service("customers", "pullgate.customers.v1.CustomerService", "services.customers:app", 50051, 9465,
            database="customers.db", entities=("customer",), ids=("customer_id",)),
    Service("catalog", "pullgate.catalog.v1.CatalogService", "services.catalog:app", 50052, 9466,
            database="catalog.db", entities=("product",), ids=("sku",)),
    Service("inventory", "pullgate.inventory.v1.InventoryService", "services.inventory:app", 50053, 9467,
            database="inventory.db", entities=("stock", "reservation"), ids=("reservation_id",)),
    Service("orders", "pullgate.orders.v1.OrderService", "services.orders:app", 50054, 9468,
            upstreams=("customers", "catalog", "inventory"),
            database="orders.db", entities=("order",), ids=("order_id",)),
    Service("gateway", "pullgate.gateway.v1.GatewayService", "gateway:app", 50050, 9464,
            upstreams=("customers", "catalog", "inventory", "orders")),
)
"""Every service, callees before their callers (the order `pullgate up` starts them in)."""

ENTRY = "gateway"
"""The service external callers talk to."""

_BY_NAME = {s.name: s for s in SERVICES}


class UnknownService(KeyError):
    """A name that is not a service; the message lists the ones there are."""

    def __str__(self) -> str:
        return f"unknown service {self.args[0]!r}; the services are {', '.join(names())}"


def service(name: str) -> Service:
    """The service called `name`; UnknownService otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownService(name) from None


def names() -> tuple[str, ...]:
    """Every service's name, callees before callers."""
    return tuple(_BY_NAME)


def owners() -> tuple[Service, ...]:
    """The services that own data (each with its private database)."""
    return tuple(s for s in SERVICES if s.owns_data)


def downstreams() -> tuple[str, ...]:
    """Every service some other service calls: the names a `[resilience.NAME]` table may use."""
    called = {u for s in SERVICES for u in s.upstreams}
    return tuple(n for n in names() if n in called)


def callers(name: str) -> tuple[str, ...]:
    """The services that call `name`."""
    return tuple(s.name for s in SERVICES if name in s.upstreams)


def stages(services: tuple[Service, ...] = SERVICES) -> tuple[tuple[str, ...], ...]:
    """Groups of services that can start together, each after every service it calls (Kahn's layering)."""
    left = {s.name: set(s.upstreams) for s in services}
    out: list[tuple[str, ...]] = []
    while left:
        ready = tuple(s.name for s in services if s.name in left and not left[s.name])
        if not ready:
            raise ValueError(f"the upstreams of {', '.join(sorted(left))} form a cycle")
        out.append(ready)
        for n in ready:
            del left[n]
        for waiting in left.values():
            waiting.difference_update(ready)
    return tuple(out)


def database_path(name: str, data_dir: Path) -> Path:
    """Where service `name` keeps its database under `data_dir`; ValueError for a service that stores nothing."""
    database = service(name).database
    if database is None:
        raise ValueError(f"{name} stores nothing (pullgate/topology.py gives it no database)")
    return data_dir / database


def check(services: Iterable[Service] = SERVICES) -> None:
    """Raise ValueError if the topology contradicts itself (tests call this; so does the launcher)."""
    seen: dict[str, Service] = {}
    for s in services:
        if s.name in seen:
            raise ValueError(f"service {s.name!r} is listed twice")
        seen[s.name] = s
    ports = [p for s in seen.values() for p in (s.port, s.metrics_port)]
    if len(set(ports)) != len(ports):
        raise ValueError("two services share a default port")
    for s in seen.values():
        for upstream in s.upstreams:
            if upstream not in seen:
                raise ValueError(f"{s.name} calls {upstream!r}, which is not a service")
            if upstream == s.name:
                raise ValueError(f"{s.name} calls itself")
    stages(tuple(seen.values()))


__all__ = ["ENTRY", "SERVICES", "Service", "UnknownService", "callers", "check", "database_path", "downstreams",
           "names", "owners", "service", "stages"]
