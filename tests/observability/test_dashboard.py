"""The Grafana dashboard under deploy/grafana: valid JSON wired to the provisioned Prometheus, the panels
operators look for, and compose provisioning it next to a Prometheus that scrapes every process.

Its PromQL is checked against a real Prometheus and a live scrape in test_prometheus.py."""

from __future__ import annotations

from typing import Any

import yaml

from pullgate import topology
from pullgate.tools.dashboard import DEPLOY, bare_names, dashboard, expressions, metric_names
from tests.observability.test_compose import services, volume_sources

DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "pullgate.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"

# What the dashboard must show (issue 17): views by source, latency per method, breaker states, hedges and their
# wins, budget and throttle refusals, admission refusals.
REQUIRED = {
    "pullgate_gateway_parts_total", "rpc_server_duration_milliseconds_bucket", "resilience_breaker_state",
    "resilience_hedges_sent_total", "resilience_hedges_won_total", "resilience_budget_refusals_total",
    "resilience_throttle_rejections_total", "resilience_server_refused_total",
}


def _yaml(path: Any) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def test_every_panel_reads_the_provisioned_prometheus_and_has_unique_ids_and_ref_ids() -> None:
    (source,) = _yaml(DATASOURCES)["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"]), panel["title"]


def test_the_panels_show_what_operators_look_for() -> None:
    read = set().union(*(metric_names(expr) for _, expr in expressions()))
    assert read >= REQUIRED, REQUIRED - read
    titles = " ".join(p["title"].lower() for p in dashboard()["panels"])
    for word in ("source", "p99", "breaker", "hedges", "budget", "throttle", "admission"):
        assert word in titles, word


def test_every_metric_is_written_with_a_selector() -> None:
    """So that the metric-name check (here and against a live scrape) sees every name."""
    for title, expr in expressions():
        assert not bare_names(expr), (title, expr)
        assert "$" not in expr, (title, "a Grafana variable the tests do not fill in")


def test_compose_provisions_grafana_beside_a_prometheus_that_scrapes_every_process() -> None:
    found = services()
    grafana, prometheus = found["grafana"], found["prometheus"]
    assert {"./deploy/grafana/provisioning", "./deploy/grafana/dashboards"} <= {
        s.replace(str(DEPLOY.parent), ".") for s in volume_sources(grafana)}
    assert any(s.endswith("deploy/prometheus/prometheus.yml") for s in volume_sources(prometheus))
    providers = _yaml(PROVIDERS)["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    jobs = {job["job_name"]: job for job in _yaml(PROMETHEUS)["scrape_configs"]}
    assert set(jobs) == set(topology.names())
    for name, job in jobs.items():
        (targets,) = [c["targets"] for c in job["static_configs"]]
        assert targets == [f"{name}:9464"], name
