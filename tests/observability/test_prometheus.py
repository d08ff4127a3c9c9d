"""A real Prometheus scrapes every process of a `pullgate up`, and PromQL sees what operators would look for: a
view's calls per method and status code, and a killed owner in the breaker metric.

Needs the `prometheus` binary (Debian's package; .ci/run installs it). Without it the test skips, saying so;
under CI=true that skip is a failure (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from tests.e2e.test_up import System, pullgate_up
from tests.observability.dashboard import expressions, metric_names
from tests.support import free_ports, scrape, until

pytestmark = pytest.mark.e2e

PROMETHEUS = shutil.which("prometheus")
STRONG = pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG)


def _config(system: System) -> str:
    """Prometheus's config: one job per service, every process of it a target, scraped every second."""
    jobs = []
    for service in topology.names():
        targets = [urllib.parse.urlsplit(p["metrics"]).netloc for p in system.state["services"][service]]
        jobs.append(f"  - job_name: {service}\n    static_configs:\n      - targets: {json.dumps(targets)}\n")
    return "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n" + "".join(jobs)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


class Prometheus:
    """A Prometheus server on a free port, queried over its HTTP API."""

    def __init__(self, address: str) -> None:
        self.address = address

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to now (empty when it has no series yet)."""
        status, body = _get(f"http://{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        if status != 200:
            return []
        answer: dict[str, Any] = json.loads(body)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def error(self, promql: str) -> str | None:
        """What Prometheus says is wrong with `promql` (parsing, types), or None if it evaluates."""
        url = f"http://{self.address}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as refused:
            answer = json.loads(refused.read())
        return None if answer["status"] == "success" else f"{answer['errorType']}: {answer['error']}"

    def ready(self) -> bool:
        return _get(f"http://{self.address}/-/ready")[0] == 200


@pytest.fixture
async def prometheus_and_system(tmp_path: Path) -> AsyncIterator[tuple[Prometheus, System]]:
    if PROMETHEUS is None:
        pytest.skip("no `prometheus` binary on PATH (Debian: apt-get install prometheus; .ci/run does)")
    async with pullgate_up(tmp_path / "var") as system:
        config = tmp_path / "prometheus.yml"
        config.write_text(_config(system))
        address = f"127.0.0.1:{free_ports(1)[0]}"
        log = tmp_path / "prometheus.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={address}", stdout=out, stderr=asyncio.subprocess.STDOUT)
        try:
            server = Prometheus(address)
            await until(lambda: process.returncode is not None or server.ready(), within=30)
            assert process.returncode is None, log.read_text()
            yield server, system
        finally:
            if process.returncode is None:
                process.terminate()
            await asyncio.wait_for(process.wait(), 30)


async def _views(system: System, count: int) -> None:
    async with grpc.aio.insecure_channel(system.address("gateway")) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        for k in range(count):
            # With an owner down, strong views fail: that is what the breaker is to see.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await gateway.GetOrderView(pb.GetOrderViewRequest(order_id=str(1 + k % 3), read=STRONG), timeout=2)


async def test_prometheus_sees_calls_by_method_and_status_and_a_killed_owner_in_the_breaker(
        prometheus_and_system: tuple[Prometheus, System]) -> None:
    prometheus, system = prometheus_and_system
    await until(lambda: len(prometheus.query('up == 1')) == len(topology.names()), within=30)
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
    for title, expr in expressions():
        assert prometheus.error(expr) is None, (title, expr, prometheus.error(expr))
        assert metric_names(expr) <= served, (title, metric_names(expr) - served)
    assert prometheus.error("sum by (job) (rate(no_such_metric[1m]") is not None  # the check can fail
