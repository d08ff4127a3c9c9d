"""The edge's configuration and decisions, without a process: what HAProxy is told, and when the gateway tells it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from gateway import SERVICE, criticality
from pullgate.edge import haproxy
from pullgate.edge.control import RoomsFollower, RuntimeApi
from pullgate.edge.haproxy import EdgeFiles, EdgeTls
from pullgate.tools import edge as edges
from resilience.admission import Admission, AdmissionConfig
from resilience.criticality import Criticality
from resilience.server import AdmissionInterceptor


def test_a_refusal_is_a_trailers_only_grpc_answer_with_the_gateways_trailers() -> None:
    lines = haproxy.refusal().decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    headers = dict(line.split(": ", 1) for line in lines[1:] if line)
    assert headers["content-type"] == "application/grpc"
    assert headers["grpc-status"] == "8"  # RESOURCE_EXHAUSTED
    assert headers["resilience-overloaded"] == "1"
    assert headers["resilience-refused"] == "limit"
    assert headers["content-length"] == "0"
    assert lines[-2:] == ["", ""]


@pytest.mark.parametrize("message", ["100% full", "caf\u00e9", "two\nlines"])
def test_a_refusal_message_that_grpc_message_cannot_carry_is_refused(message: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        haproxy.refusal(message)


@pytest.mark.parametrize("slack", [0, 4])
@pytest.mark.parametrize("limit", [1, 4, 5, 19, 20, 21, 37, 200])
def test_the_edge_starts_with_the_rooms_the_gateways_admission_gives_each_criticality(limit: int, slack: int) -> None:
    config = AdmissionConfig(initial_limit=limit, min_limit=1, sheddable_share=0.5, sheddable_plus_share=0.75,
                             edge_headroom=slack)
    gateway = AdmissionInterceptor([SERVICE.full_name], config, edge=True).admission
    assert gateway is not None
    assert edges.rooms(config) == {level: gateway.room(level) for level in Criticality}
    assert edges.rooms(config)[Criticality.CRITICAL_PLUS] == limit + slack


def test_behind_an_edge_every_room_grows_by_the_headroom_and_the_limit_does_not() -> None:
    """The edge refuses at room + headroom; the server itself only past another headroom: what the edge let in
    before it heard that the limit fell."""
    config = AdmissionConfig(initial_limit=10, edge_headroom=4)
    plain, behind = Admission(config), Admission(config, config.edge_headroom, config.edge_headroom)
    assert behind.limit == plain.limit == 10
    assert [behind.room(level) - plain.room(level) for level in Criticality] == [4, 4, 4, 4]
    for _ in range(behind.room(Criticality.SHEDDABLE) + 4):
        assert behind.try_acquire(Criticality.SHEDDABLE)
    assert not behind.try_acquire(Criticality.SHEDDABLE)
    for _ in range(plain.room(Criticality.SHEDDABLE)):
        assert plain.try_acquire(Criticality.SHEDDABLE)
    assert not plain.try_acquire(Criticality.SHEDDABLE)


def test_with_admission_off_the_edge_refuses_nothing() -> None:
    assert set(edges.rooms(AdmissionConfig(enabled=False)).values()) == {haproxy.NO_LIMIT}


def test_the_configuration_governs_the_gateways_methods_at_their_own_criticality(tmp_path: Path) -> None:
    files = EdgeFiles(tmp_path)
    methods = criticality(SERVICE)
    haproxy.write(files, listen="127.0.0.1:1", backend="127.0.0.1:2", methods=methods,
                  rooms=edges.rooms(AdmissionConfig()), tls=None)
    mapped = dict(line.split() for line in files.methods.read_text().splitlines())
    assert mapped == {path: str(int(level)) for path, level in methods.items()}
    assert mapped[f"/{SERVICE.full_name}/PlaceOrder"] == str(int(Criticality.CRITICAL))
    assert mapped[f"/{SERVICE.full_name}/GetOrderView"] == str(int(Criticality.SHEDDABLE))
    assert dict(line.split() for line in files.levels.read_text().splitlines()) == {
        level.name: str(int(level)) for level in Criticality}
    config = files.config.read_text()
    assert "bind 127.0.0.1:1 proto h2" in config
    assert "server gateway 127.0.0.1:2 proto h2" in config
    assert "ssl" not in config


def test_with_tls_the_edge_terminates_and_checks_the_gateways_name(tmp_path: Path) -> None:
    tls = EdgeTls(tmp_path / "gateway.pem", tmp_path / "ca.pem", "gateway")
    config = haproxy.render(EdgeFiles(tmp_path), listen="127.0.0.1:1", backend="127.0.0.1:2", tls=tls)
    assert f"bind 127.0.0.1:1 ssl crt {tls.pem} alpn h2" in config
    assert (f"server gateway 127.0.0.1:2 ssl verify required ca-file {tls.ca} verifyhost gateway sni str(gateway) "
            "alpn h2") in config


def test_off_means_no_edge_and_haproxy_means_one_or_an_error_naming_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert edges.choose("off") == (None, "off (--edge off)")
    monkeypatch.setattr(haproxy, "find_haproxy", lambda: None)
    with pytest.raises(edges.EdgeUnavailable, match="apt-get install haproxy"):
        edges.choose("haproxy")
    binary, why = edges.choose("auto")
    assert binary is None and "no haproxy found" in why
    monkeypatch.setattr(haproxy, "find_haproxy", lambda: Path("/usr/sbin/haproxy"))
    assert edges.choose("auto") == (Path("/usr/sbin/haproxy"), "")
    with pytest.raises(ValueError, match="--edge"):
        edges.choose("envoy")


def test_a_run_directory_too_long_for_a_socket_puts_the_edges_files_in_a_short_one(tmp_path: Path) -> None:
    assert edges.files_under(tmp_path / "run").directory == (tmp_path / "run" / "edge").resolve()
    deep = edges.files_under(tmp_path / ("x" * 120))
    try:
        assert len(str(deep.socket)) < 100
    finally:
        edge = edges.EdgeChild(Path("haproxy"), deep, "127.0.0.1", 0)
        edge.cleanup()
    assert not deep.directory.exists()


class ScriptedApi(RuntimeApi):
    """The runtime API as a list of what was sent; `fail` makes the next sends fail as a restarting HAProxy does."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"))
        self.sent: list[tuple[int, ...]] = []
        self.fail = False

    async def set_rooms(self, rooms: Sequence[int], map_file: Path) -> None:
        if self.fail:
            raise ConnectionRefusedError("HAProxy is restarting")
        self.sent.append(tuple(rooms))


def pushed(follower: RoomsFollower) -> tuple[int, ...] | None:
    return follower.pushed


def test_the_gateway_pushes_its_rooms_when_they_change_and_again_after_a_failure() -> None:
    config = AdmissionConfig(initial_limit=10, min_limit=4, max_limit=50, edge_headroom=0)
    admission = Admission(config)
    api = ScriptedApi()
    follower = RoomsFollower(admission, api, Path("rooms.map"), refresh=1.0)

    async def scenario() -> None:
        last = await follower.step(0.0, float("-inf"))
        assert api.sent == [(9, 9, 10, 10)]
        last = await follower.step(0.05, last)  # nothing changed, and the refresh is not due
        assert len(api.sent) == 1
        while admission.limit == 10:  # fast answers with the limit in use: it grows
            assert admission.try_acquire(Criticality.CRITICAL_PLUS)
            admission.release(0.001, 10)
        last = await follower.step(0.1, last)
        assert len(api.sent) == 2 and api.sent[-1] == follower.rooms() and api.sent[-1][3] > 10
        api.fail = True
        last = await follower.step(1.2, last)  # the refresh (HAProxy may have restarted with its first rooms) fails
        assert pushed(follower) is None and len(api.sent) == 2
        api.fail = False
        last = await follower.step(1.25, last)  # pushed again at the next look, though nothing changed
        assert len(api.sent) == 3 and pushed(follower) == follower.rooms()
        await follower.step(1.3, last)
        assert len(api.sent) == 3

    asyncio.run(scenario())


@pytest.mark.skipif(haproxy.find_haproxy() is None, reason="needs haproxy (Debian: apt-get install haproxy)")
@pytest.mark.parametrize("tls", [False, True])
def test_haproxy_accepts_the_configuration(tmp_path: Path, tls: bool) -> None:
    """`haproxy -c` on what `pullgate up` writes, with and without TLS, with the metrics frontend."""
    import subprocess

    from pullgate.security.pki import ensure_dev_pki

    files = EdgeFiles(tmp_path / "edge")
    secure = None
    if tls:
        pki = ensure_dev_pki(tmp_path / "pki", ["gateway"])
        files.directory.mkdir()
        secure = edges.tls_files(files, pki.cert("gateway"), pki.key("gateway"), pki.ca, "gateway")
    haproxy.write(files, listen="127.0.0.1:1", backend="127.0.0.1:2", methods=criticality(SERVICE),
                  rooms=edges.rooms(AdmissionConfig()), tls=secure, metrics="127.0.0.1:3")
    binary = haproxy.find_haproxy()
    assert binary is not None
    checked = subprocess.run([str(binary), "-c", "-f", str(files.config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
