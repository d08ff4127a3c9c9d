"""A real Prometheus server scraping a running `pullgate up`, for the tests and the dashboard picture.

Prometheus is not a Python dependency: this runs the `prometheus` binary from the OS (Debian's package; .ci/run
installs it) with a generated config, one job per service named as the topology names it (the dashboard says
`job="gateway"`), every process of the service a target, scraped every `interval`. Queries go through its HTTP
API, in PromQL, as Grafana's would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pullgate import topology
from pullgate.tools.launcher import STATE_FILE


def binary() -> str | None:
    """The `prometheus` on PATH, or None."""
    return shutil.which("prometheus")


def config(data_dir: Path, interval: str = "1s") -> str:
    """Prometheus's config for the `pullgate up` whose state is in `data_dir`: a job per service, and `edge` for
    the HAProxy in front of the gateway when there is one."""
    state = json.loads((data_dir / STATE_FILE).read_text())
    services: Mapping[str, list[dict[str, Any]]] = state["services"]
    jobs = []
    for name in topology.names():
        targets = [urllib.parse.urlsplit(p["metrics"]).netloc for p in services[name] if p.get("metrics")]
        jobs.append(f"  - job_name: {name}\n    static_configs:\n      - targets: {json.dumps(targets)}\n")
    edge = state.get("edge") or {}
    if edge.get("metrics"):  # HAProxy in front of the gateway: its own exporter
        target = urllib.parse.urlsplit(edge["metrics"]).netloc
        jobs.append(f"  - job_name: edge\n    static_configs:\n      - targets: {json.dumps([target])}\n")
    return (f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
            "scrape_configs:\n" + "".join(jobs))


class Prometheus:
    """A Prometheus server's HTTP API at `address`."""

    def __init__(self, address: str) -> None:
        self.address = address

    def _call(self, path: str, **params: str) -> dict[str, Any]:
        url = f"http://{self.address}/api/v1/{path}?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as refused:  # 400/422 carry the reason as JSON
            answer = json.loads(refused.read())
        return answer

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to now (empty when it has no series yet, or on any error)."""
        answer = self._call("query", query=promql)
        return list(answer["data"]["result"]) if answer.get("status") == "success" else []

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """The range vector of `promql` over [start, end] (Unix seconds) every `step` seconds."""
        answer = self._call("query_range", query=promql, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        if answer.get("status") != "success":
            raise ValueError(f"{promql!r}: {answer.get('errorType')}: {answer.get('error')}")
        return list(answer["data"]["result"])

    def error(self, promql: str) -> str | None:
        """What Prometheus says is wrong with `promql` (parsing, types), or None if it evaluates."""
        answer = self._call("query", query=promql)
        return None if answer.get("status") == "success" else f"{answer.get('errorType')}: {answer.get('error')}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False


@contextmanager
def running(data_dir: Path, work_dir: Path, address: str, interval: str = "1s") -> Iterator[Prometheus]:
    """Prometheus on `address` scraping the `pullgate up` in `data_dir`, its files in `work_dir`; ready on entry,
    stopped on exit. RuntimeError with its log if it exits or is not ready within 30 s."""
    found = binary()
    if found is None:
        raise RuntimeError("no `prometheus` binary on PATH (Debian: apt-get install prometheus)")
    work_dir.mkdir(parents=True, exist_ok=True)
    config_file = work_dir / "prometheus.yml"
    config_file.write_text(config(data_dir, interval))
    log = work_dir / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [found, f"--config.file={config_file}", f"--storage.tsdb.path={work_dir / 'tsdb'}",
             f"--web.listen-address={address}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        server = Prometheus(address)
        give_up = time.monotonic() + 30
        while not server.ready():
            if process.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"prometheus did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(30)


__all__ = ["Prometheus", "binary", "config", "running"]
