"""Read modes across real processes: `pullgate up`, an owner frozen (SIGSTOP), killed (SIGKILL), or hanging."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from tests.e2e.test_up import READY_TIMEOUT, _read_until, pullgate_up

if TYPE_CHECKING:
    from pullgate.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub as GatewayStub

pytestmark = pytest.mark.e2e

# No fresh cache, so every read goes to the owners and what the test sees after a failure is stale-if-error;
# a wide response margin so a loaded machine still answers before the caller's deadline; breakers that an outage
# opened let a probe through soon after it ends.
CONFIG = """
[gateway]
response_margin = 0.25

[resilience.default.cache]
ttl = 0.000001

[resilience.default.breaker]
reset_timeout = 0.5
"""
CALLER_TIMEOUT = 2.0
SKUS = ("SKU-001", "SKU-002", "SKU-003")


@contextlib.contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """The process is frozen (SIGSTOP) inside the block and always continued (SIGCONT) after it."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _request(consistency: pb.Consistency.ValueType, max_staleness: float | None = None) -> pb.GetOrderViewRequest:
    read = pb.ReadOptions(consistency=consistency)
    if max_staleness is not None:
        read.max_staleness.FromNanoseconds(int(max_staleness * 1e9))
    return pb.GetOrderViewRequest(order_id="1", read=read)


def _sources(response: pb.GetOrderViewResponse, kind: str) -> set[str]:
    return {pb.Source.Name(p.source) for p in response.parts if p.part.startswith(f"{kind}:")}


def _reasons(response: pb.GetOrderViewResponse, kind: str) -> set[str]:
    return {p.reason for p in response.parts if p.part.startswith(f"{kind}:")}


async def _rpc_error(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value.code(), caught.value.details() or ""


async def _until_live(gateway: GatewayStub) -> pb.GetOrderViewResponse:
    """Poll with strong reads until one succeeds (a breaker opened by an outage waits for its reset time)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 30
    while True:
        try:
            response: pb.GetOrderViewResponse = await gateway.GetOrderView(_request(pb.CONSISTENCY_STRONG), timeout=5)
            return response
        except grpc.aio.AioRpcError:
            if loop.time() > give_up:
                raise
            await asyncio.sleep(0.2)


async def test_read_modes_with_owners_frozen_killed_and_hanging(tmp_path: Path) -> None:
    """Each mode keeps its promise with real owner processes frozen, killed and hanging, then recovers to live."""
    config = tmp_path / "pullgate.toml"
    config.write_text(CONFIG)
    data_dir = tmp_path / "var"
    async with pullgate_up(data_dir, "--allow-fault-injection", "--config", str(config)) as up, \
            up.channel("gateway") as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        view = gateway.GetOrderView
        first = await view(_request(pb.CONSISTENCY_BOUNDED_STALENESS), timeout=10)
        assert {p.source for p in first.parts} == {pb.SOURCE_LIVE} and not first.degraded

        # Frozen: inventory is stopped with SIGSTOP; its port accepts connections but nothing answers.
        with _stopped(up.state["services"]["inventory"][0]["pid"]):
            available = await view(_request(pb.CONSISTENCY_AVAILABLE), timeout=CALLER_TIMEOUT)
            code, details = await _rpc_error(view(_request(pb.CONSISTENCY_STRONG), timeout=CALLER_TIMEOUT))
            beyond = await view(_request(pb.CONSISTENCY_BOUNDED_STALENESS, 1e-6), timeout=CALLER_TIMEOUT)
        assert _sources(available, "stock") == {"SOURCE_STALE"}
        assert all(r.startswith("inventory: deadline exceeded") for r in _reasons(available, "stock"))
        assert _sources(available, "product") == {"SOURCE_LIVE"} and available.degraded
        assert [line.stock for line in available.view.lines] == [line.stock for line in first.view.lines]
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "could not be fetched live: inventory: deadline exceeded" in details
        assert _sources(beyond, "stock") == {"SOURCE_MISSING"} and beyond.degraded
        await _until_live(gateway)

        # Killed: catalog gets SIGKILL while the launcher is frozen, so it stays down until the launcher goes on.
        launcher = up.state["launcher_pid"]
        with _stopped(launcher):
            os.kill(up.state["services"]["catalog"][0]["pid"], signal.SIGKILL)
            code, details = await _rpc_error(view(_request(pb.CONSISTENCY_STRONG), timeout=CALLER_TIMEOUT))
            bounded = await view(_request(pb.CONSISTENCY_BOUNDED_STALENESS), timeout=CALLER_TIMEOUT)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "products SKU-001, SKU-002, SKU-003 could not be fetched live: catalog: " in details
        assert _sources(bounded, "product") == {"SOURCE_STALE"}
        assert all(r.startswith("catalog: ") for r in _reasons(bounded, "product"))
        assert [line.product for line in bounded.view.lines] == [line.product for line in first.view.lines]
        await asyncio.wait_for(_read_until(up.process, "catalog is back", up.output), READY_TIMEOUT)
        await _until_live(gateway)

        # Hanging: customers keeps running but never answers (fault injected at run time).
        async with up.channel("customers") as admin_channel:
            admin = admin_pb2_grpc.FaultServiceStub(admin_channel)
            await admin.SetFaults(admin_pb2.SetFaultsRequest(spec="customers=hang"), timeout=5)
            try:
                hanging = await view(_request(pb.CONSISTENCY_AVAILABLE), timeout=CALLER_TIMEOUT)
            finally:
                await admin.ClearFaults(admin_pb2.ClearFaultsRequest(), timeout=5)
        [customer] = [p for p in hanging.parts if p.part == "customer:1"]
        assert customer.source == pb.SOURCE_STALE and customer.reason.startswith("customers: deadline exceeded")
        assert hanging.view.customer == first.view.customer

        # Back to live: once every owner answers again, every part is live.
        strong = await _until_live(gateway)
        assert {p.source for p in strong.parts} == {pb.SOURCE_LIVE} and not strong.degraded

        # Nothing of the above left a copy of another service's data behind.
        audit = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pullgate", "audit", "--data-dir", str(data_dir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(audit.communicate(), 60)
        assert audit.returncode == 0, out.decode()
        assert "ok: no service stores another's data" in out.decode()
