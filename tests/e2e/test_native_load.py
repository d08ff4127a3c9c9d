"""The native load worker (loadgen.c) across real processes: against a real `pullgate up` behind its edge, it
reports what the Python worker reports for the same job (codes, the edge's refusals and their trailer, deadlines,
degraded views, the closed loop), so the overload benchmark can use either."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import Counter
from pathlib import Path

import pytest

from pullgate.edge import haproxy
from pullgate.security.pki import Pki
from pullgate.tools import native
from pullgate.tools.openloop import REFUSED_PAUSE, Gateway, Phase, Result, Shot, Workers
from tests.e2e.test_edge import LIMIT_4, _config, _entry
from tests.e2e.test_read_modes import _stopped
from tests.e2e.test_up import System, pullgate_up

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(haproxy.find_haproxy() is None, reason="needs haproxy (Debian: apt-get install haproxy)"),
]


@pytest.fixture(scope="module")
def built() -> Path:
    try:
        return native.build()
    except native.NativeUnavailable as reason:
        pytest.skip(str(reason))


async def _both(gateway: Gateway, phases: list[Phase], consistency: str, deadline: float) -> dict[bool, Result]:
    """The same open-loop job from two Python workers, then from two native ones."""
    results = {}
    for kind in (False, True):
        pool = await Workers.start(2, native=kind)
        try:
            results[kind], _ = await pool.open_loop([gateway], phases, consistency, deadline)
        finally:
            await pool.close()
    return results


def _codes(shots: list[Shot]) -> Counter[str]:
    return Counter(s.code for s in shots)


def _gateway(system: System) -> Gateway:
    return Gateway.of(_entry(system), system.access)


@pytest.mark.usefixtures("built")
async def test_the_native_worker_sees_the_edges_refusals_as_the_python_worker_does(tmp_path: Path) -> None:
    """Past a limit of 4 with 300 ms views, most views are refused at the edge: both workers see OK and
    RESOURCE_EXHAUSTED only, every refusal the edge's with the "overloaded" trailer, every slot sent once and
    on time, latency counted from when it was due."""
    config = _config(tmp_path, LIMIT_4)
    async with pullgate_up(tmp_path, "--config", config, "--faults", "orders=delay:300ms") as system:
        results = await _both(_gateway(system), [Phase("spike", 1.0, 60.0)], "strong", 5.0)
    for kind, result in results.items():
        shots = result.shots
        assert len(shots) == 60, kind
        assert sorted(round(s.due * 60) for s in shots) == list(range(60)), kind
        codes = _codes(shots)
        assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, (kind, codes)
        assert codes["RESOURCE_EXHAUSTED"] >= 30, (kind, codes)
        refused = [s for s in shots if s.code == "RESOURCE_EXHAUSTED"]
        assert all(s.at_edge and s.overloaded and s.refused and not s.relayed for s in refused), kind
        assert all(s.latency >= 0.3 and not s.degraded for s in shots if s.code == "OK"), kind
        assert all(s.phase == "spike" and s.target == 0 and s.lag < 0.5 for s in shots), kind
        assert result.cpu > 0, kind


@pytest.mark.usefixtures("built")
async def test_the_native_worker_keeps_deadlines_and_sees_degraded_views(tmp_path: Path) -> None:
    """A view slower than its deadline is DEADLINE_EXCEEDED before the slow owner answers; with the gateway
    frozen (SIGSTOP) behind the edge nothing answers, and the worker gives up itself at the deadline counted from
    when the view was due; an available view with an owner failing comes back OK and degraded. Both workers alike."""
    async with pullgate_up(tmp_path, "--faults", "orders=delay:400ms;customers=error:UNAVAILABLE") as system:
        gateway = _gateway(system)
        late = await _both(gateway, [Phase("late", 0.5, 10.0)], "strong", 0.15)
        degraded = await _both(gateway, [Phase("degraded", 0.5, 10.0)], "available", 5.0)
        with _stopped(int(system.state["services"]["gateway"][0]["pid"])):
            unanswered = await _both(gateway, [Phase("frozen", 0.3, 10.0)], "strong", 0.15)
    for kind in (False, True):
        assert _codes(late[kind].shots) == {"DEADLINE_EXCEEDED": 5}, kind
        assert all(s.latency < 0.4 for s in late[kind].shots), kind
        assert _codes(degraded[kind].shots) == {"OK": 5}, kind
        assert all(s.degraded for s in degraded[kind].shots), kind
        assert _codes(unanswered[kind].shots) == {"DEADLINE_EXCEEDED": 3}, kind
        assert all(0.15 <= s.latency < 0.3 for s in unanswered[kind].shots), (kind, unanswered[kind].shots)


@pytest.mark.usefixtures("built")
async def test_the_native_worker_runs_a_closed_loop(tmp_path: Path) -> None:
    """Closed loop: each caller sends its next view when its last answered, on the shared origin, with no lag."""
    async with pullgate_up(tmp_path) as system:
        pool = await Workers.start(1, native=True)
        try:
            result, _ = await pool.closed_loop([_gateway(system)], 4, 1.0, "strong", 1.0)
        finally:
            await pool.close()
    assert len(result.shots) >= 8
    assert _codes(result.shots) == {"OK": len(result.shots)}
    assert all(s.phase == "closed" and s.lag == 0.0 and 0 <= s.due < 1.0 and s.latency > 0 for s in result.shots)



@pytest.mark.usefixtures("built")
async def test_a_connection_that_breaks_fails_only_its_own_requests(tmp_path: Path) -> None:
    """Two targets, one a TLS server that drops the connection without a TLS goodbye: its requests fail
    UNAVAILABLE, and the other target's keep coming back OK (a leftover TLS error must not fail them too); a closed
    loop's callers pause on the broken one (REFUSED_PAUSE) instead of failing thousands of requests a second."""
    async with pullgate_up(tmp_path) as system:
        assert system.access.pki is not None
        pki = Pki(system.access.pki)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pki.cert("gateway"), pki.key("gateway"))
        context.set_alpn_protocols(["h2"])

        async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)
            writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)  # a bare FIN: no close_notify
            writer.transport.abort()

        server = await asyncio.start_server(drop, "127.0.0.1", 0, ssl=context)
        try:
            gateway = _gateway(system)
            broken = Gateway(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", gateway.pki, gateway.token)
            pool = await Workers.start(1, native=True)
            try:
                result, _ = await pool.open_loop([gateway, broken], [Phase("p", 1.0, 40.0)], "strong", 2.0)
                closed, _ = await pool.closed_loop([gateway, broken], 4, 1.0, "strong", 2.0)
            finally:
                await pool.close()
        finally:
            server.close()
    assert _codes([s for s in result.shots if s.target == 0]) == {"OK": 20}
    assert _codes([s for s in result.shots if s.target == 1]) == {"UNAVAILABLE": 20}
    failed = [s for s in closed.shots if s.target == 1]
    assert _codes(failed) == {"UNAVAILABLE": len(failed)}
    assert len(failed) <= 4 * (1.0 / REFUSED_PAUSE + 2)
    assert _codes([s for s in closed.shots if s.target == 0])["OK"] >= 4
