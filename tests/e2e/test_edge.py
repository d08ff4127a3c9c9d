"""The edge across real processes: HAProxy in front of a real `pullgate up`'s gateway, refusing the excess at once
with the gateway's own trailers, by criticality, with its rooms following the gateway's limit; callers see the
gateway as before (TLS, tokens, authorization), and the launcher restarts and stops the edge like a server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pullgate.edge import haproxy
from pullgate.edge.control import parse_in_flight, parse_rooms
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.orders.v1 import orders_pb2
from resilience import OVERLOADED_METADATA
from resilience.criticality import METADATA_KEY as CRITICALITY
from tests.e2e.test_up import System, _pid_alive, pullgate_up
from tests.support import scrape, until, value

if TYPE_CHECKING:
    from pullgate.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub as GatewayStub

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(haproxy.find_haproxy() is None, reason="needs haproxy (Debian: apt-get install haproxy)"),
]

STRONG = pb.ReadOptions(consistency=pb.CONSISTENCY_STRONG)
LIMIT_4 = "[admission.gateway]\ninitial_limit = 4\nmin_limit = 4\nmax_limit = 4\nedge_headroom = 0\n"
"""The gateway admits 4 at once: CRITICAL (PlaceOrder) may fill 4, SHEDDABLE (the reads) int(4 * 0.9) = 3; no
headroom for requests on their way in, so the edge refuses at exactly those rooms."""


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pullgate.toml"
    path.write_text(text)
    return str(path)


def _entry(system: System) -> str:
    return str(system.state["entry"])


def _edge_channel(system: System, customer: str = "1") -> grpc.aio.Channel:
    return system.channel("gateway", customer=customer, address=_entry(system))


async def _outcome(call: Awaitable[Any]) -> tuple[grpc.StatusCode, dict[str, str], str]:
    """The status a call ended with, its trailers and its details."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        metadata: Any = error.trailing_metadata() or ()
        trailers = {key: value for key, value in metadata if isinstance(value, str)}
        return error.code(), trailers, error.details() or ""
    return grpc.StatusCode.OK, {}, ""


def _runtime_api(system: System, command: str) -> str:
    """One command to the edge's HAProxy runtime API, its answer."""
    path = Path(system.state["edge"]["config"]).parent / "admin.sock"
    with socket.socket(socket.AF_UNIX) as api:
        api.connect(str(path))
        api.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := api.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _in_flight(system: System) -> int:
    """The requests the edge has in flight to the gateway now (`scur` of its one server)."""
    return parse_in_flight(_runtime_api(system, "show stat"))


def _rooms(system: System) -> dict[int, int]:
    path = Path(system.state["edge"]["config"]).parent / "rooms.map"
    return parse_rooms(_runtime_api(system, f"show map {path}"))


async def test_callers_reach_the_gateway_through_the_edge_as_before(tmp_path: Path) -> None:
    """The edge takes the gateway's public place: views, authorization and health work through it over TLS,
    and SIGTERM stops it with the rest."""
    async with pullgate_up(tmp_path) as system:
        edge = system.state["edge"]
        assert _entry(system) == edge["address"] != system.address("gateway")
        assert any("HAProxy" in line and "in front of the gateway" in line for line in system.output)
        token = system.access.mint(subject="customer:2", customer_id="2")  # a customer's own: no admin scope
        async with system.access.channel("gateway", _entry(system), token=token) as channel, \
                system.access.channel("gateway", system.address("gateway"), token=token) as direct:
            gateway: GatewayStub = gateway_pb2_grpc.GatewayServiceStub(channel)
            # Customer 2's own order, then customer 1's: NOT_FOUND, word for word as the gateway itself answers.
            own = await gateway.GetCustomerOverview(pb.GetCustomerOverviewRequest(customer_id="2"), timeout=10)
            assert own.overview.customer.customer_id == "2"
            theirs = await _outcome(gateway.GetOrderView(pb.GetOrderViewRequest(order_id="1"), timeout=10))
            directly = await _outcome(gateway_pb2_grpc.GatewayServiceStub(direct).GetOrderView(
                pb.GetOrderViewRequest(order_id="1"), timeout=10))
            assert theirs[0] is grpc.StatusCode.NOT_FOUND
            assert theirs == directly
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        async with system.access.channel("gateway", _entry(system)) as anonymous:
            code, _, _ = await _outcome(gateway_pb2_grpc.GatewayServiceStub(anonymous).GetOrderView(
                pb.GetOrderViewRequest(order_id="1"), timeout=10))
            assert code is grpc.StatusCode.UNAUTHENTICATED
        system.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(system.process.wait(), 30)
    assert not _pid_alive(int(edge["pid"]))
    assert not (tmp_path / "pullgate-up.json").exists()


async def test_the_edge_refuses_the_excess_itself_with_the_gateways_trailers(tmp_path: Path) -> None:
    """Past the gateway's limit, views are refused RESOURCE_EXHAUSTED "overloaded" by the edge, before any admitted
    view finishes; the gateway's own admission refuses none: the excess never reached it."""
    config = _config(tmp_path, LIMIT_4)
    async with pullgate_up(tmp_path, "--config", config, "--faults", "orders=delay:300ms") as system:
        async with _edge_channel(system) as channel:
            gateway: GatewayStub = gateway_pb2_grpc.GatewayServiceStub(channel)
            finished: list[grpc.StatusCode] = []

            async def view() -> tuple[grpc.StatusCode, dict[str, str], str]:
                outcome = await _outcome(gateway.GetOrderView(
                    pb.GetOrderViewRequest(order_id="1", read=STRONG), timeout=10))
                finished.append(outcome[0])
                return outcome

            outcomes = await asyncio.gather(*(view() for _ in range(30)))
        codes = [code for code, _, _ in outcomes]
        assert codes.count(grpc.StatusCode.OK) >= 3
        refused = [(trailers, details) for code, trailers, details in outcomes
                   if code is grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(refused) >= 20, codes
        assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all(t.get(OVERLOADED_METADATA) == "1" and t.get("resilience-refused") == "limit" for t, _ in refused)
        assert all(details.startswith("edge:") for _, details in refused)
        assert finished.index(grpc.StatusCode.OK) >= len(refused)
        counted = scrape(system.state["edge"]["metrics"])  # HAProxy's own exporter counts them, by criticality
        assert value(counted, "haproxy_backend_http_requests_total", proxy="edge_refused_sheddable") == len(refused)
        gateway_metrics = system.metrics("gateway")
        assert value(gateway_metrics, "resilience_server_admitted_total") >= 3
        assert value(gateway_metrics, "resilience_server_refused_total", reason="limit") == 0
        assert value(gateway_metrics, "resilience_breaker_transitions_total", state="open") == 0


async def test_the_edge_sheds_reads_before_writes_and_lets_a_caller_lower_but_not_raise(tmp_path: Path) -> None:
    """With 3 reads in flight (SHEDDABLE's room of 4), a 4th read is refused at the edge, a PlaceOrder (CRITICAL)
    is let in; a PlaceOrder lowered to SHEDDABLE is refused, and a read raised to CRITICAL is refused still."""
    # The reads wait 3 s on orders (within the gateway's per-attempt timeout, so no breaker opens): in flight while
    # the others arrive. PlaceOrder's own call to orders is not delayed.
    config = _config(tmp_path, LIMIT_4 + "[resilience.default.timeout]\nper_attempt = 10\ntotal = 20\n")
    async with pullgate_up(tmp_path, "--config", config, "--faults", "orders.GetOrder=delay:3s") as system:
        async with _edge_channel(system) as channel:
            gateway: GatewayStub = gateway_pb2_grpc.GatewayServiceStub(channel)
            read = pb.GetOrderViewRequest(order_id="1", read=STRONG)
            held = [asyncio.ensure_future(_outcome(gateway.GetOrderView(read, timeout=20))) for _ in range(3)]
            await until(lambda: _in_flight(system) == 3)
            fourth = await _outcome(gateway.GetOrderView(read, timeout=20))
            raised = await _outcome(gateway.GetOrderView(read, timeout=20,
                                                         metadata=((CRITICALITY, "CRITICAL_PLUS"),)))
            order = pb.PlaceOrderRequest(idempotency_key="edge-1", customer_id="1",
                                         lines=[orders_pb2.OrderLine(sku="SKU-001", quantity=1)])
            lowered = await _outcome(gateway.PlaceOrder(order, timeout=20, metadata=((CRITICALITY, "SHEDDABLE"),)))
            placed = await _outcome(gateway.PlaceOrder(order, timeout=20))
            still = _in_flight(system)  # the reads were in flight throughout
            outcomes = await asyncio.gather(*held)
        assert fourth[0] is grpc.StatusCode.RESOURCE_EXHAUSTED and fourth[2].startswith("edge:")
        assert raised[0] is grpc.StatusCode.RESOURCE_EXHAUSTED and raised[2].startswith("edge:")
        assert lowered[0] is grpc.StatusCode.RESOURCE_EXHAUSTED and lowered[2].startswith("edge:")
        assert placed[0] is grpc.StatusCode.OK, placed
        assert still == 3
        assert [code for code, _, _ in outcomes] == [grpc.StatusCode.OK] * 3


async def test_the_edges_rooms_follow_the_gateway_and_a_killed_edge_comes_back(tmp_path: Path) -> None:
    """The edge starts with the rooms of the gateway's limit; rooms it forgot are set again by the gateway; an edge
    killed with SIGKILL is restarted by the launcher and serves again."""
    async with pullgate_up(tmp_path) as system:
        # The default initial limit, 20, and 8 places for requests on their way in (edge_headroom).
        assert _rooms(system) == {0: 26, 1: 27, 2: 28, 3: 28}
        path = Path(system.state["edge"]["config"]).parent / "rooms.map"
        assert _runtime_api(system, f"set map {path} 0 1").strip() == ""
        assert _rooms(system)[0] == 1
        await until(lambda: _rooms(system)[0] == 26, within=10)
        pid = int(system.state["edge"]["pid"])
        os.kill(pid, signal.SIGKILL)
        await until(lambda: system.state["edge"]["restarts"] == 1 and system.state["edge"]["pid"] != pid, within=20)
        async with _edge_channel(system) as channel:
            gateway: GatewayStub = gateway_pb2_grpc.GatewayServiceStub(channel)
            view = await gateway.GetOrderView(pb.GetOrderViewRequest(order_id="1"), timeout=10, wait_for_ready=True)
        assert view.view.order.order_id == "1"


async def test_the_edge_is_scheduled_ahead_of_the_servers(tmp_path: Path) -> None:
    """Where the launcher may (root here, or CAP_SYS_NICE), the edge runs real-time (SCHED_RR) and the servers do
    not; elsewhere it runs at a better nice level than the gateway, where that is allowed, and never a worse one."""
    async with pullgate_up(tmp_path) as system:
        edge = int(system.state["edge"]["pid"])
        gateway = int(system.recorded("gateway")["pid"])
        assert os.sched_getscheduler(gateway) == os.SCHED_OTHER
        if os.geteuid() == 0:
            assert os.sched_getscheduler(edge) == os.SCHED_RR
            assert os.sched_getparam(edge).sched_priority == 1
        else:
            assert os.getpriority(os.PRIO_PROCESS, edge) <= os.getpriority(os.PRIO_PROCESS, gateway)


async def test_without_the_edge_callers_call_the_gateway(tmp_path: Path) -> None:
    async with pullgate_up(tmp_path, "--edge", "off") as system:
        assert system.state["edge"] is None
        assert _entry(system) == system.address("gateway")
        assert any(line.startswith("Edge: off") for line in system.output)
