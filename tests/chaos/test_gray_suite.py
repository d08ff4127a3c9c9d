"""The chaos suite's gray failure: one of two catalog replicas frozen under load, and reads stop failing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pullgate.tools.chaos.system import start
from tests.chaos.test_suite import run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("chaos-replicas")
    started = start(data_dir, replicas=2)
    try:
        yield data_dir
    finally:
        started.stop()


async def test_one_catalog_replica_frozen(replicated: Path, tmp_path: Path) -> None:
    """SIGSTOP catalog-1 for 5 s while catalog answers: from 2 s in, no read fails or lacks its products."""
    report = await run(replicated, tmp_path, "1s gray catalog for 5s", 6)
    assert [(f.kind, f.target) for f in report.faults] == [("gray", "catalog-1")]
    assert report.verdicts[8].measured["reads_judged"], report.text()
