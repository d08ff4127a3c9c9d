"""One `pullgate up` for the observability tests, pointed at an in-process OTLP receiver, with metrics on."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.observability.receiver import Receiver
from tests.support import Recorded

READY_TIMEOUT = 90.0


@dataclass
class System(Recorded):
    """A running `pullgate up`, the receiver its spans go to, and what it recorded about itself."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    receiver: Receiver

    def metrics_url(self, service: str) -> str:
        return str(self.state["services"][service][0]["metrics"])


@pytest.fixture(scope="package")
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.start()
    yield found
    found.stop()


@pytest.fixture(scope="package")
def system(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running(receiver, tmp_path_factory.mktemp("observability")) as found:
        yield found


@contextlib.contextmanager
def running(receiver: Receiver, data_dir: Path, *flags: str) -> Iterator[System]:
    """`pullgate up` in `data_dir` with `flags`, its spans sent to `receiver`; stopped on exit."""
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "OTEL_TRACES_SAMPLER": "parentbased_always_on", "PULLGATE_LOG_FORMAT": "json"}
    env.pop("PULLGATE_METRICS_PORTS", None)
    log = (data_dir / "up.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "pullgate", "up", "--any-ports", "--data-dir", str(data_dir),
         "--allow-fault-injection", *flags],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        end = time.monotonic() + READY_TIMEOUT
        while not (data_dir / "pullgate-up.json").exists():
            if process.poll() is not None or time.monotonic() > end:
                raise AssertionError("pullgate up did not start:\n" + (data_dir / "up.log").read_text())
            time.sleep(0.1)
        yield System(process, data_dir, receiver)
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
        if process.poll() is None:
            process.kill()
        log.close()
