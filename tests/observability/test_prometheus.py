"""A real Prometheus scrapes every process of a `pullgate up`, and PromQL sees what operators would look for: a
view's calls per method and status code, and a killed owner in the breaker metric.

Needs the `prometheus` binary (Debian's package; .ci/run installs it). Without it the test skips, saying so;
under CI=true that skip is a failure (tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.tools import dashboard, prometheus
from pullgate.tools.dashboard import expressions, metric_names
from pullgate.tools.prometheus import Prometheus
from tests.e2e.test_up import System, pullgate_up
from tests.support import free_ports, scrape, until

pytestmark = pytest.mark.e2e

STRONG = pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG)


@pytest.fixture
async def prometheus_and_system(tmp_path: Path) -> AsyncIterator[tuple[Prometheus, System]]:
    if prometheus.binary() is None:
        pytest.skip("no `prometheus` binary on PATH (Debian: apt-get install prometheus; .ci/run does)")
    async with pullgate_up(tmp_path / "var") as system:
        address = f"127.0.0.1:{free_ports(1)[0]}"
        with prometheus.running(system.data_dir, tmp_path / "prometheus", address) as server:
            yield server, system


async def _views(system: System, count: int) -> None:
    async with system.channel("gateway") as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        for k in range(count):
            # With an owner down, strong views fail: that is what the breaker is to see.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await gateway.GetOrderView(pb.GetOrderViewRequest(order_id=str(1 + k % 3), read=STRONG), timeout=2)


async def test_prometheus_sees_calls_by_method_and_status_and_a_killed_owner_in_the_breaker(
        prometheus_and_system: tuple[Prometheus, System]) -> None:
    prometheus, system = prometheus_and_system
    # Every service's job is up; the edge's (HAProxy's exporter, when it is installed) may be up beside them.
    await until(lambda: {r["metric"]["job"] for r in prometheus.query("up == 1")} >= set(topology.names()),
                within=30)
    await _views(system, 5)
    by_method = ('sum by (job, rpc_method, rpc_grpc_status_code) '
                 '(rpc_server_duration_milliseconds_count{job="gateway", rpc_method="GetOrderView"})')
    await until(lambda: any(r["metric"]["rpc_grpc_status_code"] == "0" and float(r["value"][1]) >= 5
                            for r in prometheus.query(by_method)), within=30)
    calls = prometheus.query('sum by (rpc_service, rpc_method) (rpc_client_duration_milliseconds_count'
                             '{job="gateway", rpc_grpc_status_code="0"})')
    assert {r["metric"]["rpc_method"] for r in calls} >= {"GetOrder", "GetCustomer", "BatchGetProducts",
                                                           "BatchGetStock"}
    opened = 'sum(resilience_breaker_transitions_total{job="gateway", downstream="catalog", state="open"})'
    assert not any(float(r["value"][1]) > 0 for r in prometheus.query(opened))
    os.kill(system.recorded("catalog")["pid"], signal.SIGKILL)
    await _views(system, 30)
    await until(lambda: any(float(r["value"][1]) > 0 for r in prometheus.query(opened)), within=30)


async def test_the_dashboards_promql_evaluates_and_reads_only_metrics_a_live_scrape_has(
        prometheus_and_system: tuple[Prometheus, System]) -> None:
    """Every expression of deploy/grafana/dashboards/pullgate.json is valid PromQL to a real Prometheus, and every
    metric it reads is served by some process of a system that has answered a few views."""
    prometheus, system = prometheus_and_system
    await _views(system, 5)
    served = {sample.name for name in topology.names() for p in system.state["services"][name]
              for sample in scrape(p["metrics"])}
    if system.state["edge"]:  # HAProxy's own exporter, scraped as job "edge"
        served |= {sample.name for sample in scrape(system.state["edge"]["metrics"])}
    for title, expr in expressions():
        assert prometheus.error(expr) is None, (title, expr, prometheus.error(expr))
        assert metric_names(expr) <= served, (title, metric_names(expr) - served)
    assert prometheus.error("sum by (job) (rate(no_such_metric[1m]") is not None  # the check can fail


async def test_the_dashboard_picture_is_drawn_from_prometheus(
        prometheus_and_system: tuple[Prometheus, System], tmp_path: Path) -> None:
    """`./dev bench dashboard`'s renderer over a few seconds of views: a PNG, with the traffic panels drawn."""
    prometheus, system = prometheus_and_system
    start = time.time()
    await _views(system, 20)
    # A rate needs two scrapes of the series (one a second): wait until the range the picture asks for has them.
    parts = 'rate(pullgate_gateway_parts_total{job="gateway"}[5s])'
    await until(lambda: bool(prometheus.query_range(parts, start - 5, time.time(), 1.0)), within=30)
    end = time.time()
    out = tmp_path / "dashboard.png"
    drawn = dashboard.render(prometheus, start - 5, end, [(start, end, "views")], out, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn["View parts per second by source"] >= 1
    assert drawn["Breaker states"] >= 4  # one per owner the gateway calls, at least
    assert set(drawn) == {p["title"] for p in dashboard.dashboard()["panels"]}
