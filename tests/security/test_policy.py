"""The authorization policy: the shipped one grants the least each caller needs, and a wrong file is an error
naming the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from pullgate import topology
from pullgate.security import policy as policies
from pullgate.security.pki import spiffe_id
from resilience import ConfigError

SHIPPED = policies.load()


def _paths(service: str) -> list[str]:
    return [f"/{service}/{m.name}" for m in descriptor_pool.Default().FindServiceByName(service).methods]


def _granted(identity: str) -> set[str]:
    every = [p for s in (*(s.contract for s in topology.SERVICES), policies.FAULT_SERVICE) for p in _paths(s)]
    return {p for p in every if SHIPPED.allows(spiffe_id(identity), p)}


def _short(paths: set[str]) -> set[str]:
    return {p.rpartition(".")[2] for p in paths}


def test_the_gateway_may_call_the_reads_and_create_order() -> None:
    assert _short(_granted("gateway")) == {
        "CustomerService/GetCustomer", "CustomerService/BatchGetCustomers", "CatalogService/GetProduct",
        "CatalogService/BatchGetProducts", "InventoryService/GetStock", "InventoryService/BatchGetStock",
        "OrderService/GetOrder", "OrderService/ListOrders", "OrderService/CreateOrder"}


def test_orders_may_reserve_commit_release_and_read_what_it_validates_with() -> None:
    assert _short(_granted("orders")) == {
        "CustomerService/GetCustomer", "CatalogService/BatchGetProducts", "InventoryService/ReserveStock",
        "InventoryService/CommitReservation", "InventoryService/ReleaseReservation"}


def test_the_operator_may_set_faults_and_read_but_never_write() -> None:
    pool = descriptor_pool.Default()
    granted = _granted("operator")
    assert {p for p in granted if policies.FAULT_SERVICE in p} == set(_paths(policies.FAULT_SERVICE))
    for path in granted - set(_paths(policies.FAULT_SERVICE)):
        service, _, method = path[1:].partition("/")
        options = pool.FindServiceByName(service).methods_by_name[method].GetOptions()
        assert options.idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, path


@pytest.mark.parametrize("identity", [*(s.name for s in topology.SERVICES if not s.upstreams), "stranger"])
def test_nobody_else_may_call_anything(identity: str) -> None:
    """A service that calls nothing may call nothing, and neither may an identity the policy does not name."""
    assert _granted(identity) == set()


def test_health_and_reflection_are_open_to_any_identity_but_not_to_none() -> None:
    path = "/grpc.health.v1.Health/Check"
    assert SHIPPED.allows(spiffe_id("stranger"), path)
    assert not SHIPPED.allows(None, path)


def test_describe_says_who_may_call_what() -> None:
    lines = list(SHIPPED.describe())
    assert lines[0].startswith("gateway may call ") and "OrderService/{CreateOrder,GetOrder,ListOrders}" in lines[0]
    assert any(line.startswith("orders may call ") and "ReleaseReservation" in line for line in lines)


def test_a_full_spiffe_id_from_another_trust_domain_is_taken_as_it_is() -> None:
    policy = policies.Policy.from_mapping(
        {"callers": {"spiffe://example.org/ns/shop/sa/web": {"may_call": ["pullgate.orders.v1.OrderService/*"]}}},
        "p.toml")
    assert policy.allows("spiffe://example.org/ns/shop/sa/web", "/pullgate.orders.v1.OrderService/CreateOrder")
    assert not policy.allows("spiffe://pullgate.local/web", "/pullgate.orders.v1.OrderService/CreateOrder")


@pytest.mark.parametrize(("text", "key", "problem"), [
    ('[callers.gateway]\nmay_call = ["pullgate.orders.v1.OrderService/GetOrdr"]\n', "callers.gateway.may_call",
     "has no method 'GetOrdr'"),
    ('[callers.gateway]\nmay_call = ["pullgate.nope.v1.X/*"]\n', "callers.gateway.may_call", "no such service"),
    ('[callers.gateway]\nmay_cal = []\n', "callers.gateway.may_cal", "unknown key"),
    ('[callers.Gate_way]\nmay_call = []\n', "callers.Gate_way", "must match"),
    ('[callers.gateway]\nmay_call = "pullgate.orders.v1.OrderService/*"\n', "callers.gateway.may_call", "list"),
    ('trust_domain = ""\n', "trust_domain", "non-empty"),
    ('owners = 1\n', "owners", "unknown key"),
    ('[callers.gateway\n', "(file)", "not valid TOML"),
])
def test_a_wrong_policy_names_the_key_and_the_file(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        policies.load(path)
    assert caught.value.key == key and caught.value.source == str(path)
    assert problem in caught.value.problem
