"""The Kubernetes manifests: both overlays render, every object is valid against the Kubernetes schemas (offline),
and the wiring holds: probes, Secrets, volumes, Services, and NetworkPolicies that match the authorization policy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import psycopg
import pytest
import yaml

from pullgate import topology
from pullgate.security import policy as policies
from pullgate.tools import kube
from resilience import DownstreamConfig
from tests.postgres import throwaway_cluster_or_skip

OVERLAYS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "overlays"
KUBERNETES = "1.32.0"
"""The schema version objects are validated against: a release every platform named in docs/deploy.md runs."""


def test_the_base_is_what_the_generator_writes() -> None:
    """deploy/kubernetes/base/ is generated from the topology and the policy; a change to either shows here."""
    assert kube.main(["--check"]) == 0, "run `python -m pullgate.tools.kube` and commit deploy/kubernetes/base/"


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no `kubectl` on PATH to render the overlays (Debian: apt-get install kubectl; .ci/run does)")
    out = subprocess.run([kubectl, "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=["dev", "production"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


def _kind(objects: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (o for o in objects if o["kind"] == kind)


def _deployment(objects: list[dict[str, Any]], service: str) -> dict[str, Any]:
    return next(o for o in _kind(objects, "Deployment") if o["metadata"]["name"] == kube.name_of(service))


def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_every_service_runs_two_or_more_hardened_pods_that_drain(rendered: list[dict[str, Any]]) -> None:
    """2+ replicas, a disruption budget, requests and limits, non-root with a read-only root filesystem, and a
    preStop delay longer than the callers' DNS re-resolution, so a pod leaves every replica set before it stops."""
    budgets = {o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
               for o in _kind(rendered, "PodDisruptionBudget")}
    refresh = DownstreamConfig().discovery.refresh_interval
    for s in topology.SERVICES:
        deployment = _deployment(rendered, s.name)
        assert deployment["spec"]["replicas"] >= 2
        assert kube.name_of(s.name) in budgets
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in [*pod["containers"], *pod.get("initContainers", [])]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["resources"]["requests"] and container["resources"]["limits"]
        for container in pod["containers"]:
            drain = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
            assert drain > refresh and pod["terminationGracePeriodSeconds"] > drain


def test_the_gateway_runs_behind_an_edge_that_takes_its_port(rendered: list[dict[str, Any]]) -> None:
    """Each gateway pod: HAProxy on the gateway's port (the one its Service and NetworkPolicy name), its
    configuration written by `pullgate edge-config` onto an emptyDir the gateway shares for the runtime API socket,
    and the gateway behind it on another port (docs/overload.md)."""
    entry = topology.service(topology.ENTRY)
    pod = _deployment(rendered, entry.name)["spec"]["template"]["spec"]
    gateway, edge = pod["containers"]
    (config,) = pod["initContainers"]
    assert [p["containerPort"] for p in edge["ports"] if p["name"] == "grpc"] == [entry.port]
    assert "grpc" not in {p["name"] for p in gateway["ports"]}
    behind = gateway["args"][gateway["args"].index("--port") + 1]
    assert config["args"][config["args"].index("--backend") + 1] == f"127.0.0.1:{behind}"
    assert config["args"][config["args"].index("--listen") + 1] == f"0.0.0.0:{entry.port}"
    socket = gateway["args"][gateway["args"].index("--edge-control") + 1]
    out = config["args"][config["args"].index("--out") + 1]
    assert edge["command"][-1] == f"{out}/haproxy.cfg" and socket == f"{out}/admin.sock"
    for container in (gateway, edge, config):
        assert {"name": "edge", "mountPath": out} in container["volumeMounts"], container["name"]
    assert {"name": "edge", "emptyDir": {}} in pod["volumes"]
    services = {o["metadata"]["name"]: o for o in _kind(rendered, "Service")}
    assert services[entry.name]["spec"]["ports"] == [{"name": "grpc", "port": entry.port, "targetPort": "grpc"}]


def test_the_edge_config_command_writes_what_haproxy_accepts(tmp_path: Path) -> None:
    """`pullgate edge-config` as the init container runs it, with certificates named as cert-manager names them."""
    from pullgate.edge import haproxy
    from pullgate.security.pki import ensure_dev_pki

    binary = haproxy.find_haproxy()
    if binary is None:
        pytest.skip("needs haproxy (Debian: apt-get install haproxy; .ci/run does)")
    pki = ensure_dev_pki(tmp_path / "pki", [topology.ENTRY])
    certs = tmp_path / "certs"
    certs.mkdir()
    for source, name in ((pki.cert(topology.ENTRY), "tls.crt"), (pki.key(topology.ENTRY), "tls.key"),
                         (pki.ca, "ca.crt")):
        (certs / name).write_bytes(source.read_bytes())
    config = next(c for c in _deployment(yaml_base(), topology.ENTRY)["spec"]["template"]["spec"]["initContainers"])
    args = [a.replace("/certs", str(certs)).replace(kube.EDGE_DIR, str(tmp_path / "edge"))
            .replace(kube.CONFIG, str(kube.BASE / "pullgate.toml")) for a in config["args"]]
    subprocess.run([sys.executable, "-m", "pullgate", *args], check=True, capture_output=True, timeout=60)
    checked = subprocess.run([str(binary), "-c", "-f", str(tmp_path / "edge" / "haproxy.cfg")], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def yaml_base() -> list[dict[str, Any]]:
    """The committed base's objects, as the generator writes them."""
    return [doc for path in sorted(kube.BASE.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_every_probe_names_a_served_port(rendered: list[dict[str, Any]]) -> None:
    for deployment in _kind(rendered, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            ports = {p["containerPort"] for p in container.get("ports", [])} | {p["name"] for p in container["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                if "grpc" in container[probe]:
                    assert container[probe]["grpc"]["port"] in ports, (deployment["metadata"]["name"], probe)
                    assert "--health-port" in container["args"]
                    served = container["args"][container["args"].index("--health-port") + 1]
                    assert int(served) == container[probe]["grpc"]["port"]


def _secrets_and_volumes(deployment: dict[str, Any]) -> set[str]:
    pod = deployment["spec"]["template"]["spec"]
    names = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    names |= {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    for container in pod["containers"]:
        for env in container.get("env", []):
            if "secretKeyRef" in env.get("valueFrom", {}):
                names.add(env["valueFrom"]["secretKeyRef"]["name"])
    return names


def test_every_owner_has_its_own_database_secret_and_mounts_nothing_of_another(
        rendered: list[dict[str, Any]]) -> None:
    secrets = {o["metadata"]["name"] for o in _kind(rendered, "Secret")}
    namespace = {o["metadata"].get("namespace") for o in rendered}
    for s in topology.SERVICES:
        used = _secrets_and_volumes(_deployment(rendered, s.name))
        others = [o.name for o in topology.SERVICES if o.name != s.name]
        assert not [u for u in used for other in others if f"-{other}-" in u], (s.name, used)
        if s.owns_data:
            own = f"{kube.name_of(s.name)}-db"
            # kustomize suffixes a generated Secret's name with a hash, and rewrites the references to match.
            assert any(u.startswith(own) for u in used), s.name
            if "pullgate-dev" in namespace:
                assert any(n.startswith(own) for n in secrets), f"the dev overlay makes {own}"


def test_every_service_selects_a_deployment(rendered: list[dict[str, Any]]) -> None:
    pods = [o["spec"]["template"]["metadata"]["labels"] for o in rendered
            if o["kind"] in ("Deployment", "StatefulSet")]
    for service in _kind(rendered, "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pods), service["metadata"]["name"]


def test_owners_are_headless_so_dns_answers_with_every_pod(rendered: list[dict[str, Any]]) -> None:
    services = {o["metadata"]["name"]: o for o in _kind(rendered, "Service")}
    for s in topology.owners():
        assert services[s.name]["spec"]["clusterIP"] == "None"
    for s in topology.SERVICES:
        for upstream in s.upstreams:
            args = _deployment(rendered, s.name)["spec"]["template"]["spec"]["containers"][0]["args"]
            assert f"{upstream}=dns:///{upstream}:{topology.service(upstream).port}" in args


def test_network_policies_allow_exactly_the_calls_the_policy_allows(rendered: list[dict[str, Any]]) -> None:
    """Default deny; then, for each owner, ingress on its gRPC port from exactly the identities the authorization
    policy grants one of its methods (docs/security.md), and from nobody else."""
    policy = policies.load()
    network = {o["metadata"]["name"]: o for o in _kind(rendered, "NetworkPolicy")}
    deny = network["pullgate-default-deny"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    for s in topology.owners():
        (grpc_rule,) = [r for r in network[kube.name_of(s.name)]["spec"]["ingress"]
                        if {"protocol": "TCP", "port": s.port} in r["ports"]]
        allowed = sorted(peer["podSelector"]["matchLabels"][kube.IDENTITY_LABEL] for peer in grpc_rule["from"])
        assert allowed == kube.callers(s, policy), s.name
        assert allowed, f"someone calls {s.name}"
    callers_of_orders = kube.callers(topology.service("orders"), policy)
    assert topology.ENTRY in callers_of_orders and "orders" not in callers_of_orders


def test_the_dev_databases_let_each_owner_role_into_its_own_database_only() -> None:
    """The dev overlay's init SQL, run on a throwaway PostgreSQL: each owner's role connects to its own database,
    and to no other (not another owner's, not the server's own)."""
    init = next(o for o in yaml.safe_load_all((OVERLAYS / "dev" / "postgres.yaml").read_text())
                if o["kind"] == "ConfigMap")["data"]["init.sql"]
    with (throwaway_cluster_or_skip("to run the init SQL on") as admin_url,
          psycopg.connect(admin_url, autocommit=True) as admin):
        for statement in filter(None, (line.strip() for line in init.splitlines())):
            if not statement.startswith("--"):
                admin.execute(statement.encode())
        host = urlsplit(admin_url).netloc.rpartition("@")[2]
        owners = [s.name for s in topology.owners()]
        for role in owners:
            for database in [*owners, "postgres", "template1"]:
                url = f"postgresql://{role}:dev-{role}@{host}/{database}"
                if database == role:
                    psycopg.connect(url, connect_timeout=10).close()
                else:
                    with pytest.raises(psycopg.OperationalError, match="permission denied"):
                        psycopg.connect(url, connect_timeout=10)
