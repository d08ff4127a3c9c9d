"""The Kubernetes base (`deploy/kubernetes/base/`), generated from the topology and the authorization policy.

    python -m pullgate.tools.kube            # rewrite deploy/kubernetes/base/ (needs PyYAML: pip install -e .[test])
    python -m pullgate.tools.kube --check    # exit 1 if the committed files differ from what would be written

Every service gets a Deployment, a Service (headless for an owner, so DNS answers with every pod and the
resilience layer balances across them), a PodDisruptionBudget and an ingress NetworkPolicy that lets in exactly
the callers the policy grants some method of that service (tests/deploy checks both agree). The gateway also gets
a HorizontalPodAutoscaler. The files are written here rather than by hand so that no list of services exists
outside pullgate/topology.py; docs/deploy.md says why each setting is what it is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pool

from pullgate import topology
from pullgate.security import policy as policies
from pullgate.security.pki import TRUST_DOMAIN

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "base"
HEALTH_PORT = 8081
"""Health alone, in plaintext (`pullgate serve --health-port`): Kubernetes' gRPC probes present no certificate."""
METRICS_PORT = 9464
DRAIN_SECONDS = 10
"""preStop delay: longer than the callers' DNS re-resolution (resilience discovery, 5 s by default), so a pod
that is going away is dropped from every caller's replica set before it stops taking calls."""
REPLICAS = 2
CONFIG = "/etc/pullgate/pullgate.toml"
EDGE_IMAGE = "haproxy:2.6"
"""The edge beside each gateway (docs/overload.md): HAProxy's long-term-support branch, as Debian packages it."""
EDGE_DIR = "/edge"
"""The edge's configuration and its runtime API socket, on an emptyDir the gateway's pod shares."""
BEHIND_EDGE_PORT = 50060
"""Where the gateway listens behind its edge, which takes the gateway's own port."""
EDGE_METRICS_PORT = 9465
PART_OF = "pullgate"
IDENTITY_LABEL = "pullgate.dev/identity"
"""The label that says which identity a pod holds: what the NetworkPolicies select callers by."""


def name_of(service: str) -> str:
    """The Kubernetes name of a service's objects (its DNS name, for an owner's headless Service, is the service's
    own name, which is what its callers' certificates check)."""
    return f"pullgate-{service}"


def labels(service: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name_of(service), "app.kubernetes.io/part-of": PART_OF,
            IDENTITY_LABEL: service}


def selector(service: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name_of(service)}


def _args(s: topology.Service) -> list[str]:
    port = BEHIND_EDGE_PORT if s.name == topology.ENTRY else s.port
    args = ["serve", s.name, "--host", "0.0.0.0", "--port", str(port), "--health-port", str(HEALTH_PORT),
            "--data-dir", "/data", "--config", CONFIG]
    if s.name == topology.ENTRY:
        args += ["--edge-control", f"{EDGE_DIR}/admin.sock"]
    for upstream in s.upstreams:
        args += ["--upstream", f"{upstream}=dns:///{upstream}:{topology.service(upstream).port}"]
    if s.owns_data:
        args += ["--database-url", "$(DATABASE_URL)"]
    return args


def _probe(initial: int, failures: int) -> dict[str, Any]:
    return {"grpc": {"port": HEALTH_PORT}, "initialDelaySeconds": initial, "periodSeconds": 5,
            "timeoutSeconds": 2, "failureThreshold": failures}


def _hardened() -> dict[str, Any]:
    """A container's security context: no privilege, a read-only root, no capabilities (a new object each time,
    so YAML writes no anchors)."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


def deployment(s: topology.Service) -> dict[str, Any]:
    """One service's pods: non-root, read-only root filesystem, probes on the health port, a drain before stop."""
    env: list[dict[str, Any]] = [
        {"name": "PULLGATE_METRICS_PORT", "value": str(METRICS_PORT)},
        {"name": "OTEL_SERVICE_NAME", "value": name_of(s.name)},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "certs", "secret": {"secretName": f"{name_of(s.name)}-tls", "defaultMode": 0o440}},
        {"name": "config", "configMap": {"name": "pullgate-config"}},
        {"name": "data", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "certs", "mountPath": "/certs", "readOnly": True},
        {"name": "config", "mountPath": "/etc/pullgate", "readOnly": True},
        {"name": "data", "mountPath": "/data"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if s.owns_data:
        env.append({"name": "DATABASE_URL",
                    "valueFrom": {"secretKeyRef": {"name": f"{name_of(s.name)}-db", "key": "url"}}})
    if s.name == topology.ENTRY:
        volumes.append({"name": "tokens", "secret": {"secretName": "pullgate-gateway-tokens", "defaultMode": 0o440}})
        mounts.append({"name": "tokens", "mountPath": "/tokens", "readOnly": True})
        volumes.append({"name": "edge", "emptyDir": {}})
        mounts.append({"name": "edge", "mountPath": EDGE_DIR})
    # Behind its edge the gateway's gRPC port is the pod's own business: the edge's container holds `grpc`.
    grpc_port = ({"name": "backend", "containerPort": BEHIND_EDGE_PORT} if s.name == topology.ENTRY else
                 {"name": "grpc", "containerPort": s.port})
    container: dict[str, Any] = {
        "name": s.name,
        "image": "pullgate",
        "args": _args(s),
        "ports": [grpc_port, {"name": "health", "containerPort": HEALTH_PORT},
                  {"name": "metrics", "containerPort": METRICS_PORT}],
        "env": env,
        "volumeMounts": mounts,
        "readinessProbe": _probe(2, 2),
        "livenessProbe": _probe(10, 6),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(DRAIN_SECONDS)]}}},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": _hardened(),
    }
    pod: dict[str, Any] = {}
    containers = [container]
    if s.name == topology.ENTRY:
        pod["initContainers"] = [_edge_config(s)]
        containers.append(_edge(s))
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name_of(s.name), "labels": labels(s.name)},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": selector(s.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(s.name)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": DRAIN_SECONDS + 20,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                        "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                    **pod,
                    "containers": containers,
                    "volumes": volumes,
                },
            },
        },
    }


def _edge_config(s: topology.Service) -> dict[str, Any]:
    """The init container that writes the edge's HAProxy configuration (`pullgate edge-config`) onto the pod's
    emptyDir, from the gateway's certificate and config."""
    return {
        "name": "edge-config",
        "image": "pullgate",
        "args": ["edge-config", "--listen", f"0.0.0.0:{s.port}", "--backend", f"127.0.0.1:{BEHIND_EDGE_PORT}",
                 "--tls-cert", "/certs/tls.crt", "--tls-key", "/certs/tls.key", "--tls-ca", "/certs/ca.crt",
                 "--config", CONFIG, "--metrics", f"0.0.0.0:{EDGE_METRICS_PORT}", "--out", EDGE_DIR],
        "volumeMounts": [{"name": "certs", "mountPath": "/certs", "readOnly": True},
                         {"name": "config", "mountPath": "/etc/pullgate", "readOnly": True},
                         {"name": "edge", "mountPath": EDGE_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "securityContext": _hardened(),
    }


def _edge(s: topology.Service) -> dict[str, Any]:
    """HAProxy in front of the gateway, on the gateway's port: it refuses, in C, what the gateway's admission
    limit has no room for; the gateway pushes its rooms through the runtime API socket on the shared emptyDir."""
    def tcp() -> dict[str, Any]:
        return {"tcpSocket": {"port": "grpc"}, "periodSeconds": 5, "timeoutSeconds": 2}

    return {
        "name": "edge",
        "image": EDGE_IMAGE,
        "command": ["haproxy", "-db", "-f", f"{EDGE_DIR}/haproxy.cfg"],
        "ports": [{"name": "grpc", "containerPort": s.port},
                  {"name": "edge-metrics", "containerPort": EDGE_METRICS_PORT}],
        "volumeMounts": [{"name": "edge", "mountPath": EDGE_DIR}],
        "readinessProbe": {**tcp(), "initialDelaySeconds": 1, "failureThreshold": 2},
        "livenessProbe": {**tcp(), "initialDelaySeconds": 10, "failureThreshold": 6},
        # Stops taking calls last: the gateway's own preStop drains first, then the edge's.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(DRAIN_SECONDS)]}}},
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
        "securityContext": _hardened(),
    }


def service(s: topology.Service) -> dict[str, Any]:
    """An owner's Service is headless (every pod's address in DNS); the gateway's has one virtual address."""
    spec: dict[str, Any] = {"selector": selector(s.name),
                            "ports": [{"name": "grpc", "port": s.port, "targetPort": "grpc"}]}
    if s.name != topology.ENTRY:
        spec["clusterIP"] = "None"
        spec["publishNotReadyAddresses"] = False
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": s.name, "labels": labels(s.name)}, "spec": spec}


def disruption_budget(s: topology.Service) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name_of(s.name), "labels": labels(s.name)},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": selector(s.name)}}}


def callers(s: topology.Service, policy: policies.Policy) -> list[str]:
    """The identities the policy grants some method of `s` (by name within its trust domain)."""
    methods = descriptor_pool.Default().FindServiceByName(s.contract).methods
    named = {policy.short(identity) for m in methods
             for identity in policy.callers_of(f"/{s.contract}/{m.name}")}
    return sorted(named)


def network_policy(s: topology.Service, policy: policies.Policy) -> dict[str, Any]:
    """Who may open a connection to `s`'s gRPC port: exactly the callers the policy grants a method of it (the
    gateway's callers are everyone: it is the edge). Its metrics port is open to Prometheus in any namespace."""
    grpc_port = [{"protocol": "TCP", "port": s.port}]
    rules: list[dict[str, Any]]
    if s.name == topology.ENTRY:
        rules = [{"ports": grpc_port}]
    else:
        rules = [{"from": [{"podSelector": {"matchLabels": {IDENTITY_LABEL: caller,
                                                           "app.kubernetes.io/part-of": PART_OF}}}
                           for caller in callers(s, policy)],
                  "ports": grpc_port}]
    metrics = [METRICS_PORT, *([EDGE_METRICS_PORT] if s.name == topology.ENTRY else [])]
    rules.append({"from": [{"namespaceSelector": {},
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
                  "ports": [{"protocol": "TCP", "port": port} for port in metrics]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name_of(s.name), "labels": labels(s.name)},
            "spec": {"podSelector": {"matchLabels": selector(s.name)}, "policyTypes": ["Ingress"],
                     "ingress": rules}}


def default_deny() -> dict[str, Any]:
    """Nothing reaches a pod of the namespace unless a NetworkPolicy lets it."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "pullgate-default-deny", "labels": {"app.kubernetes.io/part-of": PART_OF}},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}


def autoscaler(s: topology.Service) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name_of(s.name), "labels": labels(s.name)},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name_of(s.name)},
                     "minReplicas": REPLICAS, "maxReplicas": 10,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}


def files(policy: policies.Policy) -> dict[str, list[dict[str, Any]]]:
    """What deploy/kubernetes/base/ holds, by file name (each file's objects in order)."""
    out = {f"{s.name}.yaml": [deployment(s), service(s), disruption_budget(s), network_policy(s, policy)]
           for s in topology.SERVICES}
    out[f"{topology.ENTRY}.yaml"].append(autoscaler(topology.service(topology.ENTRY)))
    out["network.yaml"] = [default_deny()]
    return out


def kustomization(names: Iterable[str]) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "labels": [{"pairs": {"app.kubernetes.io/part-of": PART_OF}}],
            "resources": sorted(names),
            "configMapGenerator": [{"name": "pullgate-config", "files": ["pullgate.toml"]}]}


CONFIG_TOML = f'''# The config every pullgate pod reads (--config {CONFIG}); an overlay replaces it whole.
# Each pod mounts its own certificate at /certs (the Secret pullgate-<service>-tls: tls.crt, tls.key, ca.crt,
# as cert-manager writes them): its identity is the URI SAN spiffe://{TRUST_DOMAIN}/<service>, and its DNS SAN
# the service's name, which its callers check.
[security]
tls_cert = "/certs/tls.crt"
tls_key = "/certs/tls.key"
tls_ca = "/certs/ca.crt"
'''


def render(policy: policies.Policy) -> dict[str, str]:
    """Every file of the base, as text."""
    import yaml  # a development tool: PyYAML comes with the test extras

    header = "# Generated by `python -m pullgate.tools.kube` from pullgate/topology.py and the policy; do not edit.\n"
    out = {name: header + yaml.safe_dump_all(objects, sort_keys=False) for name, objects in files(policy).items()}
    out["kustomization.yaml"] = header + yaml.safe_dump(kustomization(files(policy)), sort_keys=False)
    out["pullgate.toml"] = CONFIG_TOML
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pullgate.tools.kube", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether the committed base is current")
    parser.add_argument("--policy", type=Path, help="the authorization policy (default: the shipped one)")
    args = parser.parse_args(argv)
    wanted = render(policies.load(args.policy))
    if args.check:
        stale = [n for n, text in wanted.items() if not (BASE / n).exists() or (BASE / n).read_text() != text]
        extra = [p.name for p in BASE.glob("*") if p.name not in wanted] if BASE.exists() else []
        for name in [*stale, *extra]:
            print(f"deploy/kubernetes/base/{name} is not what `python -m pullgate.tools.kube` writes", file=sys.stderr)
        return 1 if stale or extra else 0
    BASE.mkdir(parents=True, exist_ok=True)
    for name, text in wanted.items():
        (BASE / name).write_text(text)
    print(f"wrote {len(wanted)} files to {BASE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["BASE", "HEALTH_PORT", "IDENTITY_LABEL", "callers", "files", "name_of", "render"]
