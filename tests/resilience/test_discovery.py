"""Discovery by DNS, with a fake resolver: replicas join and leave, those that stay keep their state."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from dataclasses import dataclass, field

import grpc
import pytest

from pullgate.catalog.v1 import catalog_pb2
from resilience import ConfigError, Downstream, DownstreamConfig, NoReplicas, ResilienceConfig, StatusError
from resilience.config import DiscoveryConfig, TimeoutConfig
from resilience.discovery import DnsTarget, ResolutionError
from resilience.outcome import Outcome, classify
from resilience.replicas import Replicas
from resilience.testing import FakeClock, settle
from tests.resilience.scripted import ONE_ATTEMPT, READ, Scripted, Step

NAME = "dns:///catalog.pullgate.svc:50052"
CONFIG = dataclasses.replace(
    ONE_ATTEMPT, timeout=TimeoutConfig(total=30.0, per_attempt=0.0),
    discovery=DiscoveryConfig(refresh_interval=5.0, min_time_between_resolutions=1.0),
)
REQUEST = catalog_pb2.GetProductRequest(sku="x")


@dataclass
class FakeDns:
    """Answers each host name with the addresses (or the error) the test has set; counts the questions."""

    answers: dict[str, tuple[str, ...] | Exception] = field(default_factory=dict)
    asked: int = 0

    async def resolve(self, host: str) -> tuple[str, ...]:
        self.asked += 1
        answer = self.answers[host]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        pass


def catalog(clock: FakeClock, dns: FakeDns, script: Scripted, config: DownstreamConfig = CONFIG) -> Downstream:
    return Downstream("catalog", [NAME], config, clock, endpoint=script, rng=random.Random(1), resolver=dns)


async def calls(downstream: Downstream, n: int) -> None:
    for _ in range(n):
        await downstream.call(READ, REQUEST, max_staleness=0.0)


@pytest.mark.parametrize(
    ("text", "host", "port", "server"),
    [
        ("dns:///catalog.pullgate.svc:50052", "catalog.pullgate.svc", 50052, None),
        ("dns:catalog:50052", "catalog", 50052, None),
        ("dns://127.0.0.1:5353/catalog:50052", "catalog", 50052, "127.0.0.1:5353"),
        ("dns://10.0.0.10/catalog:1", "catalog", 1, "10.0.0.10"),
        ("dns:///[::1]:50052", "::1", 50052, None),
    ],
)
def test_a_target_is_read_in_grpc_naming_syntax(text: str, host: str, port: int, server: str | None) -> None:
    """dns:[//DNS-SERVER/]HOST:PORT names the host, the port and the DNS server to ask."""
    target = DnsTarget.parse(text)
    assert (target.host, target.port, target.server, str(target)) == (host, port, server, text)


@pytest.mark.parametrize("text", ["dns:///catalog", "dns:///catalog:0", "dns:///:50052", "dns://x", "catalog:1"])
def test_a_malformed_target_is_refused_saying_so(text: str) -> None:
    """A DNS name without a port, or not a DNS name, is refused with the text in the message."""
    with pytest.raises(ValueError, match="expected"):
        DnsTarget.parse(text)


def test_an_address_of_a_target_keeps_its_port() -> None:
    """Each address found becomes a replica on the target's port; IPv6 in brackets."""
    target = DnsTarget.parse(NAME)
    assert (target.address("10.0.0.3"), target.address("fd00::3")) == ("10.0.0.3:50052", "[fd00::3]:50052")


async def test_the_first_call_waits_for_the_name_and_goes_to_its_addresses() -> None:
    """Nothing is resolved before the first call; it then goes to one of the addresses found."""
    clock, dns = FakeClock(), FakeDns({"catalog.pullgate.svc": ("10.0.0.2", "10.0.0.3")})
    script = Scripted(clock)
    downstream = catalog(clock, dns, script)
    assert dns.asked == 0
    await calls(downstream, 20)
    assert set(script.calls) == {"10.0.0.2:50052", "10.0.0.3:50052"}
    assert downstream.replicas.live == ("10.0.0.2:50052", "10.0.0.3:50052")
    await downstream.close()


async def test_a_new_replica_is_used_within_one_refresh_interval() -> None:
    """An address that appears is resolved at the next refresh and gets calls; the other keeps its breaker and
    latency estimate."""
    clock, dns = FakeClock(), FakeDns({"catalog.pullgate.svc": ("10.0.0.2",)})
    script = Scripted(clock)
    downstream = catalog(clock, dns, script)
    await calls(downstream, 3)
    breaker = downstream.stack.get("breaker").breakers["10.0.0.2:50052"]
    latency = downstream.stack.get("balance").latency["10.0.0.2:50052"]
    assert latency.known
    dns.answers["catalog.pullgate.svc"] = ("10.0.0.2", "10.0.0.3")
    await clock.advance(5.0)
    assert downstream.replicas.live == ("10.0.0.2:50052", "10.0.0.3:50052")
    script.calls.clear()
    await calls(downstream, 20)
    assert set(script.calls) == {"10.0.0.2:50052", "10.0.0.3:50052"}
    assert downstream.stack.get("breaker").breakers["10.0.0.2:50052"] is breaker
    assert downstream.stack.get("balance").latency["10.0.0.2:50052"] is latency
    await downstream.close()


async def test_a_removed_replica_finishes_its_calls_and_is_then_forgotten() -> None:
    """A call in flight to a replica that leaves completes; no call goes there after; then its state goes."""
    clock, dns = FakeClock(), FakeDns({"catalog.pullgate.svc": ("10.0.0.3",)})
    script = Scripted(clock, lambda n, replica: Step(delay=8.0) if replica == "10.0.0.3:50052" else Step())
    downstream = catalog(clock, dns, script)
    slow = asyncio.create_task(downstream.call(READ, REQUEST, max_staleness=0.0))
    await settle()
    assert script.calls == ["10.0.0.3:50052"]
    dns.answers["catalog.pullgate.svc"] = ("10.0.0.2",)
    await clock.advance(5.0)
    assert downstream.replicas.live == ("10.0.0.2:50052",)
    assert "10.0.0.3:50052" in downstream.breaker_states()  # leaving, not gone: a call is still in flight
    await calls(downstream, 10)
    assert script.calls == ["10.0.0.3:50052"] + ["10.0.0.2:50052"] * 10
    await clock.advance(3.0)
    assert (await slow).provenance.replica == "10.0.0.3:50052"
    assert downstream.breaker_states() == {"10.0.0.2:50052": "closed"}
    assert downstream.replicas.in_flight == {"10.0.0.2:50052": 0}
    await downstream.close()


async def test_a_name_with_no_address_fails_unavailable_naming_it() -> None:
    """A name that resolves to nothing: UNAVAILABLE, the message names the downstream and the DNS name."""
    clock, dns = FakeClock(), FakeDns({"catalog.pullgate.svc": ()})
    downstream = catalog(clock, dns, Scripted(clock))
    with pytest.raises(NoReplicas) as raised:
        await calls(downstream, 1)
    assert raised.value.code is grpc.StatusCode.UNAVAILABLE
    assert str(raised.value) == f"catalog: {NAME} resolves to no address"
    assert classify(raised.value) is Outcome.DROPPED
    await downstream.close()


async def test_every_replica_gone_then_back() -> None:
    """When the DNS says the name has no address the calls fail; when addresses come back they succeed."""
    clock, dns = FakeClock(), FakeDns({"catalog.pullgate.svc": ("10.0.0.2",)})
    downstream = catalog(clock, dns, Scripted(clock))
    await calls(downstream, 1)
    dns.answers["catalog.pullgate.svc"] = ()
    await clock.advance(5.0)
    with pytest.raises(NoReplicas, match="resolves to no address"):
        await calls(downstream, 1)
    dns.answers["catalog.pullgate.svc"] = ("10.0.0.4",)
    await clock.advance(5.0)
    await calls(downstream, 1)
    await downstream.close()


async def test_a_dns_failure_keeps_the_replicas_it_had() -> None:
    """No answer from the DNS (a timeout) is not "no address": the replicas found before stay."""
    clock, dns = FakeClock(), FakeDns({"catalog.pullgate.svc": ("10.0.0.2",)})
    downstream = catalog(clock, dns, Scripted(clock))
    await calls(downstream, 1)
    dns.answers["catalog.pullgate.svc"] = ResolutionError("Timeout while contacting DNS servers")
    await clock.advance(5.0)
    assert dns.asked == 2
    await calls(downstream, 1)
    assert downstream.replicas.live == ("10.0.0.2:50052",)
    await downstream.close()


async def test_a_name_never_resolved_says_why() -> None:
    """When the first resolution gets no answer, a call fails UNAVAILABLE with the DNS's reason."""
    dns = FakeDns({"catalog.pullgate.svc": ResolutionError("Timeout while contacting DNS servers")})
    clock = FakeClock()
    downstream = catalog(clock, dns, Scripted(clock))
    with pytest.raises(NoReplicas) as raised:
        await calls(downstream, 1)
    assert str(raised.value) == f"catalog: {NAME} cannot be resolved: Timeout while contacting DNS servers"
    await downstream.close()


async def test_an_unreachable_replica_makes_it_resolve_again_soon() -> None:
    """UNAVAILABLE from a replica asks for a resolution before the interval, but not within the minimum time."""
    clock, dns = FakeClock(), FakeDns({"catalog.pullgate.svc": ("10.0.0.2", "10.0.0.3")})
    script = Scripted(clock, lambda n, replica: Step(code=grpc.StatusCode.UNAVAILABLE)
                      if replica == "10.0.0.3:50052" else Step())
    downstream = catalog(clock, dns, script)
    while "10.0.0.3:50052" not in script.calls:
        with contextlib.suppress(StatusError):
            await calls(downstream, 1)
    await settle()
    assert dns.asked == 1  # not before min_time_between_resolutions
    await clock.advance(1.0)
    assert dns.asked == 2
    await downstream.close()


async def test_a_static_list_never_resolves_anything() -> None:
    """A downstream given addresses has no discovery and its replica set never changes."""
    clock = FakeClock()
    downstream = Downstream("catalog", ["a:1", "b:1"], CONFIG, clock, endpoint=Scripted(clock))
    assert downstream.discovery is None
    assert downstream.replicas.live == ("a:1", "b:1")
    await downstream.close()


def test_a_dns_name_is_the_only_address() -> None:
    """A DNS name mixed with addresses is refused: which would be the replicas?"""
    with pytest.raises(ValueError, match="only address"):
        Downstream("catalog", [NAME, "a:1"])


def test_replicas_tell_their_members_who_joins_and_who_has_left() -> None:
    """Members hear of a join before it can be picked, and of a leave only when no attempt is in flight."""
    heard: list[str] = []

    class Member:
        def joined(self, replica: str) -> None:
            heard.append(f"+{replica}")

        def left(self, replica: str) -> None:
            heard.append(f"-{replica}")

    replicas = Replicas(["a"])
    replicas.subscribe(Member())
    replicas.in_flight["a"] = 1
    change = replicas.update(["b"])
    assert (change.added, change.removed, heard) == (("b",), ("a",), ["+b"])
    assert replicas.live == ("b",) and replicas.leaving == {"a"}
    replicas.in_flight["a"] = 0
    replicas.drained("a")
    assert heard == ["+b", "-a"]
    assert not replicas.update(["b"])


def test_discovery_keys_are_validated_naming_the_key_and_file() -> None:
    """A discovery key with a bad value is a ConfigError naming its dotted path and the file."""
    config = ResilienceConfig.from_mapping({"catalog": {"discovery": {"refresh_interval": "2s"}}})
    assert config.for_downstream("catalog").discovery.refresh_interval == 2.0
    with pytest.raises(ConfigError) as raised:
        ResilienceConfig.from_mapping({"catalog": {"discovery": {"refresh_interval": 0}}}, source="p.toml")
    assert str(raised.value) == "p.toml: resilience.catalog.discovery.refresh_interval: must be > 0, got 0.0"
