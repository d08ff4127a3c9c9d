"""`pullgate up` on fixed ports: it starts again at once after a crash under traffic, refuses a port another
process listens on (naming that process), and says how each of its processes stopped."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.tools.launcher import (
    REPLICA_PORT_STEP,
    Child,
    Launcher,
    LaunchError,
    UpSettings,
    check_ports_free,
    stopped_line,
)
from tests.e2e.test_up import READY_TIMEOUT, _read_until, pullgate_up
from tests.support import free_ports, until

if TYPE_CHECKING:
    from pullgate.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub as GatewayStub

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")

REPLICAS = 2
LOAD = 8
"""Callers of GetOrderView at once while an owner is killed."""
STRONG = pb.GetOrderViewRequest(order_id="1", read=pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG))
"""A read that goes to every owner, customers included, each time."""
TIME_WAIT = "06"


def _fixed_ports(replicas: int) -> tuple[list[int], list[str]]:
    """Free ports for every process of `pullgate up --replicas N` (gRPC and metrics), and the flags that fix them."""
    names = topology.names()
    chosen = free_ports(2 * len(names), replicas)
    flags = ["--replicas", str(replicas)]
    for name, port, metrics_port in zip(names, chosen[:len(names)], chosen[len(names):], strict=True):
        flags += ["--port", f"{name}={port}", "--metrics-port", f"{name}={metrics_port}"]
    every = [port + REPLICA_PORT_STEP * k for port in chosen for k in range(replicas)]
    return every, flags


def _in_time_wait(ports: Collection[int]) -> set[int]:
    """Those of `ports` that the local side of a TCP connection in TIME_WAIT still holds on this machine."""
    found = set()
    for table in ("tcp", "tcp6"):  # grpc listens on IPv6 sockets: 127.0.0.1 shows as ::ffff:127.0.0.1 in tcp6
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            port = int(fields[1].rpartition(":")[2], 16)
            if fields[3] == TIME_WAIT and port in ports:
                found.add(port)
    return found


async def _traffic(gateway: GatewayStub, outcomes: list[bool], done: asyncio.Event) -> None:
    """Strong order views, back to back, until `done`; records whether each one was answered."""
    while not done.is_set():
        try:
            await gateway.GetOrderView(STRONG, timeout=2)
        except grpc.aio.AioRpcError:
            outcomes.append(False)
        else:
            outcomes.append(True)


def _stop_report(output: list[str]) -> tuple[list[tuple[str, int]], str]:
    """The per-process lines (name, pid) after "stopping pullgate...", and the final line."""
    text = "".join(output[output.index("stopping pullgate...\n"):])
    stopped = [(name, int(pid)) for name, pid in re.findall(r"^  (\S+) stopped \(pid (\d+), [\d.]+s\)$", text, re.M)]
    final = re.findall(r"^pullgate stopped: .*$", text, re.M)
    assert len(final) == 1, text
    return stopped, final[0]


def _stage(name: str) -> int:
    """How late a process stops: the edge first, then the gateway, the owners last."""
    if name == "edge":
        return -1
    service = name.rpartition("-")[0] if name[-1].isdigit() else name
    return next(i for i, stage in enumerate(reversed(topology.stages())) if service in stage)


@pytest.mark.e2e
async def test_up_starts_again_at_once_after_an_owner_was_killed_under_traffic(tmp_path: Path) -> None:
    """Stopped with Ctrl-C after a crash under load, `pullgate up` starts again on the same ports at once."""
    ports, flags = _fixed_ports(REPLICAS)
    data_dir = tmp_path / "var"
    async with pullgate_up(data_dir, *flags) as first:
        entry = first.state["entry"]
        async with first.channel("gateway") as channel:
            outcomes: list[bool] = []
            done = asyncio.Event()
            load = [asyncio.create_task(_traffic(gateway_pb2_grpc.GatewayServiceStub(channel), outcomes, done))
                    for _ in range(LOAD)]
            try:
                await until(lambda: outcomes.count(True) >= 4 * LOAD, within=30)
                # Callers of customers that are idle when it dies: with nothing unread on a connection the dead
                # server's side sends FIN (not RST) and, once the caller closes too, is left in TIME_WAIT, which the
                # loaded connections only sometimes are. A grpc channel may still have a frame in flight (a ping,
                # a window update) and be reset; a bare TCP connection that never sends a byte cannot.
                host, _, port = first.state["services"]["customers"][0]["address"].rpartition(":")
                bare = socket.create_connection((host, int(port)), timeout=5)
                bare.setblocking(False)
                async with first.channel("customers") as idle:
                    await health_pb2_grpc.HealthStub(idle).Check(health_pb2.HealthCheckRequest(), timeout=5)
                    os.kill(first.state["services"]["customers"][0]["pid"], signal.SIGKILL)
                    try:  # its FIN; then the close that leaves the dead server's side in TIME_WAIT
                        assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(bare, 1), 10) == b""
                    finally:
                        bare.close()
                    await asyncio.wait_for(_read_until(first.process, "customers is back", first.output),
                                           READY_TIMEOUT)
                back = len(outcomes)
                await until(lambda: True in outcomes[back:], within=30)
                pids = {e["name"]: e["pid"] for entries in first.state["services"].values() for e in entries}
                if first.state["edge"]:
                    pids["edge"] = first.state["edge"]["pid"]
                # Stopped under load, as a chaos run may leave it.
                first.process.send_signal(signal.SIGINT)
                await asyncio.wait_for(_read_until(first.process, "pullgate stopped", first.output), 60)
                assert await first.process.wait() == 0
            finally:
                done.set()
                await asyncio.gather(*load)
    stopped, final = _stop_report(first.output)
    assert dict(stopped) == pids and len(stopped) == len(pids)
    assert [_stage(name) for name, _ in stopped] == sorted(_stage(name) for name, _ in stopped)
    assert final.startswith(f"pullgate stopped: {len(pids)} processes in ")

    # The killed server's sides of its connections wait in TIME_WAIT on its fixed port: what made the port check
    # refuse to start for a minute when it bound without SO_REUSEADDR.
    assert _in_time_wait(ports), "no TIME_WAIT on the fixed ports; the restart below would prove nothing"
    async with pullgate_up(data_dir, *flags) as again:
        assert again.state["entry"] == entry
        async with again.channel("gateway") as channel:
            view = await gateway_pb2_grpc.GatewayServiceStub(channel).GetOrderView(STRONG, timeout=10)
        assert view.view.order.order_id == "1"
        again.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(_read_until(again.process, "pullgate stopped", again.output), 60)
        assert await again.process.wait() == 0
    assert not any("not free" in text for text in again.output)
    stopped, final = _stop_report(again.output)
    assert len(stopped) == len(pids) and final.startswith(f"pullgate stopped: {len(pids)} processes in ")


@pytest.mark.e2e
async def test_up_refuses_the_ports_of_a_running_up_and_names_the_process(tmp_path: Path) -> None:
    """A second `pullgate up` on a running one's ports (grpc binds with SO_REUSEPORT) exits naming the listener."""
    _, flags = _fixed_ports(1)
    async with pullgate_up(tmp_path / "first", *flags) as first:
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pullgate", "up", "--data-dir", str(tmp_path / "second"), *flags,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(second.communicate(), 60)
        customers = first.state["services"]["customers"][0]
        port = customers["address"].rpartition(":")[2]
        python = Path(sys.executable).name
        assert second.returncode == 1
        message = err.decode().strip()
        assert message.startswith(f"pullgate up: port {port} on 127.0.0.1 (for customers) is taken: "
                                  f"pid {customers['pid']} ({python} -m pullgate serve customers "), message
        assert message.endswith(" listens on it; stop it or choose ports with --port NAME=PORT"), message
        assert len(message.splitlines()) == 1
        assert "pullgate stopped" not in out.decode()
        assert not (tmp_path / "second" / "pullgate-up.json").exists()
        assert first.process.returncode is None


def test_a_port_this_process_listens_on_is_refused_naming_this_process() -> None:
    """A plain listener's port is refused, as a gRPC or a metrics port, and the message gives the test's own pid."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(LaunchError) as grpc_port:
            check_ports_free("127.0.0.1", {"customers": port})
        with pytest.raises(LaunchError) as metrics_port:
            check_ports_free("127.0.0.1", {"customers": 0}, {"orders-1": port})
    assert str(grpc_port.value).startswith(f"port {port} on 127.0.0.1 (for customers) is taken: pid {os.getpid()} (")
    assert str(grpc_port.value).endswith(" listens on it; stop it or choose ports with --port NAME=PORT")
    assert str(metrics_port.value).startswith(f"port {port} on 127.0.0.1 (for orders-1 metrics) is taken: pid ")
    assert str(metrics_port.value).endswith("choose ports with --metrics-port NAME=PORT")


def test_a_listener_whose_process_cannot_be_seen_is_still_refused(tmp_path: Path) -> None:
    """Where /proc shows the listening socket but no process holding it, the message says "another process"."""
    (tmp_path / "net").mkdir()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        for table in ("tcp", "tcp6"):
            shutil.copy(f"/proc/net/{table}", tmp_path / "net" / table)
        with pytest.raises(LaunchError) as refused:
            check_ports_free("127.0.0.1", {"gateway": port}, proc=tmp_path)
    assert str(refused.value) == (f"port {port} on 127.0.0.1 (for gateway) is taken: another process listens on it; "
                                  "stop it or choose ports with --port NAME=PORT")


async def test_a_port_held_only_by_time_wait_is_free() -> None:
    """A port whose server closed its connection first (TIME_WAIT) is free for the servers, so for the check too."""
    with socket.create_server(("127.0.0.1", 0)) as server:  # SO_REUSEADDR, as grpc's
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server's side closes first, so it is the one left in TIME_WAIT
            assert client.recv(1) == b""
    await until(lambda: port in _in_time_wait([port]))
    with socket.socket() as plain, pytest.raises(OSError, match="Address already in use"):
        plain.bind(("127.0.0.1", port))  # what the old check did
    check_ports_free("127.0.0.1", {"customers": port})


def test_two_processes_of_one_up_may_not_share_a_port() -> None:
    """Two processes on one port would both bind it (SO_REUSEPORT) and share its calls: refused, naming both."""
    [port] = free_ports(1)
    with pytest.raises(LaunchError, match=rf"^catalog-1 and gateway both want port {port} on 127.0.0.1; "
                                          r"choose ports with --port NAME=PORT$"):
        check_ports_free("127.0.0.1", {"catalog-1": port, "gateway": port})
    with pytest.raises(LaunchError, match=rf"^orders and gateway metrics both want port {port} on "):
        check_ports_free("127.0.0.1", {"orders": port}, {"gateway": port})


async def test_stop_says_how_each_process_ended(tmp_path: Path) -> None:
    """One line per process, in reverse start order: stopped, killed after ignoring SIGTERM, or already gone."""
    ignores_sigterm = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); " \
                      "time.sleep(60)"
    processes = [await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
                 for code in ("print(flush=True); import time; time.sleep(60)", ignores_sigterm,
                              "raise SystemExit(3)")]
    for process in processes:
        assert process.stdout is not None
        await process.stdout.readline()  # running, with its signal handling in place
    await processes[2].wait()
    launcher = Launcher(UpSettings(data_dir=tmp_path, stop_grace=0.5))
    launcher.children = [Child("gateway", 0, 0, process=processes[0]), Child("catalog", 1, 0, process=processes[1]),
                         Child("customers", 0, 0, process=processes[2])]
    lines: list[str] = []
    ended = await launcher.stop(report=lambda s: lines.append(stopped_line(s)))
    assert [s.name for s in ended] == ["gateway", "customers", "catalog-1"]
    assert re.fullmatch(rf"  gateway stopped \(pid {processes[0].pid}, [\d.]+s\)", lines[0])
    assert lines[1] == f"  customers had already exited (pid {processes[2].pid}, code 3)"
    assert re.fullmatch(rf"  catalog-1 did not stop on SIGTERM; killed \(pid {processes[1].pid}, [\d.]+s\)", lines[2])
    assert processes[1].returncode == -signal.SIGKILL
