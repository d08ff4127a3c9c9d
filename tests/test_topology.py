"""The topology is the one place that lists the services, and it agrees with the code it names."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from pullgate import topology
from pullgate.serving import ServeOptions
from pullgate.tools.apps import load_app

REPO = Path(__file__).resolve().parent.parent
NAMES = frozenset(topology.names())
SOURCES = ("pullgate", "gateway", "services", "resilience", "tests", "benchmarks", "protos", "docker")


def _hand_written() -> list[Path]:
    return sorted(
        p for top in SOURCES for p in (REPO / top).rglob("*.py")
        if "_pb2" not in p.name and "__pycache__" not in p.parts and p != REPO / "pullgate" / "topology.py"
    )


def _service_names(node: ast.AST) -> list[str]:
    """The service names among the string constants a literal collection (or a dict's keys) spells out."""
    items: list[ast.expr | None] = []
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        items = list(node.elts)
    elif isinstance(node, ast.Dict):
        items = list(node.keys)
    return [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str) and i.value in NAMES]


def test_nothing_else_spells_out_the_services() -> None:
    """No module but pullgate/topology.py writes down three or more service names in one literal."""
    found = []
    for path in _hand_written():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = _service_names(node)
            if len(names) >= 3:
                found.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}: {names}")
    assert not found, "list the services by reading pullgate.topology instead:\n" + "\n".join(found)


def test_the_pin_catches_a_list() -> None:
    """The check above finds a tuple of service names, so it can fail."""
    tree = ast.parse('OWNERS = ("customers", "catalog", "inventory")\nOK = ("customers", "x")')
    assert [len(_service_names(n)) for n in ast.walk(tree) if _service_names(n)] == [3, 1]


def test_topology_is_consistent() -> None:
    """Names and ports are distinct, every upstream is a service, and the stages order callees first."""
    topology.check()
    started: set[str] = set()
    for stage in topology.stages():
        for name in stage:
            assert set(topology.service(name).upstreams) <= started, name
        started.update(stage)
    assert started == NAMES


@pytest.mark.parametrize("bad", [
    (topology.Service("a", "p.v1.A", "m:app", 1, 2, upstreams=("b",)),),
    (topology.Service("a", "p.v1.A", "m:app", 1, 2), topology.Service("a", "p.v1.B", "m:app", 3, 4)),
    (topology.Service("a", "p.v1.A", "m:app", 1, 2, upstreams=("b",)),
     topology.Service("b", "p.v1.B", "m:app", 3, 4, upstreams=("a",))),
    (topology.Service("a", "p.v1.A", "m:app", 1, 2), topology.Service("b", "p.v1.B", "m:app", 1, 4)),
])
def test_check_refuses_a_topology_that_contradicts_itself(bad: tuple[topology.Service, ...]) -> None:
    """An unknown upstream, a name twice, a cycle and a shared port are each refused."""
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        topology.check(bad)


def test_an_unknown_name_lists_the_services() -> None:
    """Asking for a service that does not exist names the ones that do."""
    with pytest.raises(topology.UnknownService, match="the services are customers, catalog"):
        topology.service("catlog")


@pytest.mark.parametrize("name", sorted(NAMES))
def test_each_service_serves_its_contract(name: str) -> None:
    """The contract names a generated service, and the app factory loads; the database belongs to an owner."""
    service = topology.service(name)
    module = importlib.import_module(f"{service.package}.{service.package.split('.')[1]}_pb2")
    short = service.contract.rpartition(".")[2]
    assert module.DESCRIPTOR.services_by_name[short].full_name == service.contract
    assert callable(load_app(name))
    if service.owns_data:
        assert ServeOptions(name=name, data_dir=Path("d")).database == Path("d") / str(service.database)
        assert service.entities and service.ids
    else:
        with pytest.raises(ValueError, match="stores nothing"):
            _ = ServeOptions(name=name, data_dir=Path("d")).database
