"""`--loop uvloop`: every process of a `pullgate up` runs on uvloop and serves as on asyncio's loop; a loop that
cannot be had is refused before anything starts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from pullgate import loops, topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from tests.e2e.test_up import pullgate_up


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.e2e
async def test_up_on_uvloop_runs_every_process_on_it_and_serves_views(tmp_path: Path) -> None:
    """Each process (launcher included) has uvloop's extension mapped, and a strong view is served whole."""
    async with pullgate_up(tmp_path, "--loop", "uvloop") as system:
        names = [p["name"] for service in topology.names() for p in system.state["services"][service]]
        pids = [system.recorded(name)["pid"] for name in names] + [system.process.pid]
        assert all("uvloop/loop" in _maps(pid) for pid in pids)
        async with system.channel("gateway") as channel:
            view = await gateway_pb2_grpc.GatewayServiceStub(channel).GetOrderView(
                pb.GetOrderViewRequest(order_id="1", read=pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG)),
                timeout=10)
    assert not view.degraded and view.view.order.order_id == "1"


@pytest.mark.e2e
async def test_up_on_asyncio_does_not_load_uvloop(tmp_path: Path) -> None:
    """The default stays asyncio's loop: the control for the test above."""
    async with pullgate_up(tmp_path) as system:
        assert "uvloop/loop" not in _maps(system.recorded(topology.ENTRY)["pid"])


async def test_an_unknown_loop_is_refused_naming_the_flag(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pullgate", "up", "--data-dir", str(tmp_path / "var"), "--loop", "trio",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "--loop" in err.decode() and "trio" in err.decode()
    assert not (tmp_path / "var").exists()


def test_uvloop_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without uvloop installed, asking for it says how to install it."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now raises ImportError
    with pytest.raises(loops.LoopUnavailable, match=r"pip install 'pullgate\[uvloop\]'"):
        loops.check("uvloop")
