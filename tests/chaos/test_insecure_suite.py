"""The chaos tool against a system started `--insecure`: plaintext to every process and no tokens, and all of it
(FaultService, sampling the owners, the load, the overload's worker processes) works as against a secure one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pullgate import topology
from pullgate.tools.chaos.system import read_state, start
from tests.chaos.test_suite import run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def insecure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = tmp_path_factory.mktemp("chaos-insecure")
    started = start(data_dir, extra=["--insecure"])
    try:
        yield data_dir
    finally:
        started.stop()


async def test_faults_and_an_overload_in_plaintext(insecure: Path, tmp_path: Path) -> None:
    """A slow owner through its FaultService, then a spike from the load workers: every invariant held (the
    spike's goodput is not judged, the slow fault being too recent), and the spike's views were answered."""
    assert not read_state(insecure).access.secure
    report = await run(insecure, tmp_path, f"1s slow inventory 300ms for 2s; 4s overload {topology.ENTRY} 3x for 3s", 7)
    assert not report.faults[0].note, report.text()  # SetFaults did not fail
    assert any(a.code == "OK" for a in report.spikes[0].answers), report.text()
    assert report.verdicts[1].measured["parts_checked"], report.text()  # the owners were sampled
