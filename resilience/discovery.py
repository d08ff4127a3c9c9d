"""Service discovery by DNS: a downstream named `dns:///catalog.pullgate.svc:50052` has a replica per address.

Why: replicas come and go (a Kubernetes headless Service lists its ready pods' addresses), and a fixed list of
addresses outlives them. So the name is resolved to every address (A and AAAA records) and resolved again every
`refresh_interval`, and sooner when a replica could not be reached (never twice within
`min_time_between_resolutions`). Each answer updates the downstream's replica set (resilience.replicas): new
addresses join and are picked from then on; missing ones leave once their calls in flight have ended. Replicas
that stay keep their breaker, latency estimate and channel.

What an answer means:

- addresses: the replica set becomes exactly those.
- the name does not exist, or has no address (NXDOMAIN, no data): the DNS says there is no replica; the set
  empties, and a call fails with NoReplicas (UNAVAILABLE) "dns:///catalog:50052 resolves to no address".
- no answer (a timeout, a refusal, a server failure): nothing is known, so the set is kept as it is, and a
  warning logged; if the name was never resolved, a call fails with NoReplicas saying why.

Names follow gRPC's naming syntax (https://github.com/grpc/grpc/blob/master/doc/naming.md):
`dns:[//DNS-SERVER[:PORT]/]HOST:PORT`, e.g. `dns:///catalog:50052` (the system's name servers, from
/etc/resolv.conf) or `dns://10.0.0.10:53/catalog:50052` (that server). The port of the service is required.

The resolver is injectable (`Resolver`: `resolve(host)` -> addresses); the default is `DnsResolver`, on aiodns
(c-ares' getaddrinfo: /etc/hosts, then the DNS with resolv.conf's search domains, as the system's does), which
asks the name servers itself, so a test can point it at a DNS server on any port; the system's `getaddrinfo`
cannot be told where to ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import Any, Protocol

from resilience.clock import SYSTEM_CLOCK, Clock, wait_for
from resilience.config import DiscoveryConfig
from resilience.replicas import Replicas

log = logging.getLogger("resilience.discovery")

SCHEME = "dns:"


class ResolutionError(Exception):
    """No answer could be had from the DNS (a timeout, a refusal, a server failure): nothing is known."""


@dataclass(frozen=True, slots=True)
class DnsTarget:
    """A DNS name to find a downstream's replicas by: `dns:[//DNS-SERVER/]HOST:PORT`."""

    text: str
    host: str
    port: int
    server: str | None = None
    """The DNS server to ask ("127.0.0.1:5353"); None = the system's."""

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> DnsTarget:
        """The target `text` names; ValueError saying what is wrong."""
        if not is_dns(text):
            raise ValueError(f"{text!r}: not a DNS name (expected dns:[//DNS-SERVER/]HOST:PORT)")
        rest = text[len(SCHEME):]
        server: str | None = None
        if rest.startswith("//"):
            authority, slash, rest = rest[2:].partition("/")
            if not slash:
                raise ValueError(f"{text!r}: expected dns://DNS-SERVER/HOST:PORT or dns:///HOST:PORT")
            server = authority or None
            if server is not None:
                _split(server, text, default_port=53)
        host, port = _split(rest, text)
        return cls(text, host, port, server)

    @staticmethod
    def is_dns(text: str) -> bool:
        """Does `text` name a downstream by DNS (rather than give an address)?"""
        return is_dns(text)

    def address(self, ip: str) -> str:
        """The replica address of `ip` on this target's port ("10.0.0.3:50052", "[fd00::3]:50052")."""
        return f"[{ip}]:{self.port}" if ":" in ip else f"{ip}:{self.port}"


def is_dns(text: str) -> bool:
    """Does `text` name a downstream by DNS (rather than give an address)?"""
    return text.startswith(SCHEME)


def _split(hostport: str, text: str, default_port: int | None = None) -> tuple[str, int]:
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"{text!r}: {hostport!r} is not HOST:PORT")
        port = after[1:]
    else:
        host, colon, port = hostport.rpartition(":")
        if not colon:
            host, port = hostport, ""
    if not port and default_port is not None:
        port = str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: expected HOST:PORT with a port in 1..65535, got {hostport!r}")
    return host, int(port)


class Resolver(Protocol):
    """Finds the IP addresses of a host name."""

    async def resolve(self, host: str) -> tuple[str, ...]:
        """Every address of `host` (A and AAAA), sorted; () when the DNS says it has none; ResolutionError when
        no answer could be had."""
        ...

    async def close(self) -> None: ...


class DnsResolver:
    """Asks DNS servers with aiodns (c-ares): the system's (/etc/resolv.conf), or `server` ("ip[:port]")."""

    def __init__(self, server: str | None = None, timeout: float = 2.0) -> None:
        self.server = server
        self.timeout = timeout
        self._resolver: Any = None

    def _dns(self) -> Any:
        if self._resolver is None:
            import aiodns  # imported here: only downstreams named by DNS need it

            nameservers = None if self.server is None else [self.server]
            # c-ares divides its timeout between its tries; two tries, each half of it.
            self._resolver = aiodns.DNSResolver(nameservers=nameservers, timeout=self.timeout / 2, tries=2)
        return self._resolver

    async def resolve(self, host: str) -> tuple[str, ...]:
        try:
            return (str(ipaddress.ip_address(host)),)  # an address already: nothing to ask
        except ValueError:
            pass
        import aiodns

        # c-ares' getaddrinfo, as the system's would: /etc/hosts first, then the DNS with resolv.conf's search
        # domains (a Kubernetes short name like "catalog" resolves in its namespace), A and AAAA both.
        try:
            result = await self._dns().getaddrinfo(host, family=socket.AF_UNSPEC)
        except aiodns.error.DNSError as error:
            code = error.args[0] if error.args else None
            if code in (aiodns.error.ARES_ENOTFOUND, aiodns.error.ARES_ENODATA):
                return ()  # the DNS answered: there is no such address
            message = error.args[1] if len(error.args) > 1 else str(error)
            raise ResolutionError(f"{host}: {message}") from None
        return tuple(sorted({_text(node.addr[0]) for node in result.nodes}))

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None


def _text(address: str | bytes) -> str:
    return address.decode() if isinstance(address, bytes) else address


class Discovery:
    """Keeps a downstream's replica set in step with what its DNS name resolves to.

    Started by the first call (`ready()`, which waits for the first answer) and stopped by `close()`.
    """

    def __init__(
        self,
        downstream: str,
        target: DnsTarget,
        replicas: Replicas,
        config: DiscoveryConfig = DiscoveryConfig(),  # noqa: B008 (frozen)
        clock: Clock = SYSTEM_CLOCK,
        resolver: Resolver | None = None,
    ) -> None:
        """`resolver` finds the addresses (a `DnsResolver` asking the target's server by default; tests pass a
        fake)."""
        self.downstream = downstream
        self.target = target
        self.replicas = replicas
        self.config = config
        self.resolved = False
        """An answer has been had (addresses, or none): the replica set says what the DNS says."""
        self.resolutions = 0
        """Resolutions tried so far."""
        self._clock = clock
        self._resolver = resolver or DnsResolver(target.server, config.query_timeout)
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[None] | None = None
        self._soon: asyncio.Event | None = None
        self._last = -float("inf")
        replicas.empty = f"{target} is not resolved yet"
        replicas.on_unreachable = self.refresh_soon

    async def ready(self, deadline_at: float | None = None) -> None:
        """Start resolving (once) and wait until the first resolution has ended, or `deadline_at` (on the clock)."""
        if self._first is None:
            self._first = asyncio.get_running_loop().create_future()
            self._soon = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"discovery {self.downstream}")
        if self._first.done():
            return
        with contextlib.suppress(TimeoutError):  # the call goes on, and fails as the replica set says
            await wait_for(asyncio.shield(self._first), deadline_at, self._clock)

    def refresh_soon(self, replica: str = "") -> None:
        """Resolve again soon (a replica could not be reached: it may be gone), within the minimum interval."""
        if self._soon is not None:
            self._soon.set()

    async def refresh(self) -> bool:
        """Resolve the name now and update the replica set; True when it changed."""
        self.resolutions += 1
        self._last = self._clock.now()
        target, replicas = self.target, self.replicas
        try:
            ips = await self._resolver.resolve(target.host)
        except (ResolutionError, OSError) as error:
            if not self.resolved:
                replicas.empty = f"{target} cannot be resolved: {error}"
            log.warning("discovery %s: %s cannot be resolved (%s); keeping %s", self.downstream, target, error,
                        ", ".join(replicas.live) or "no replica")
            return False
        self.resolved = True
        if not ips:
            replicas.empty = f"{target} resolves to no address"
        change = replicas.update(target.address(ip) for ip in ips)
        if change:
            log.warning("discovery %s: %s now resolves to %s (added %s; removed %s)", self.downstream, target,
                        ", ".join(replicas.live) or "no address", ", ".join(change.added) or "none",
                        ", ".join(change.removed) or "none")
        return bool(change)

    async def _run(self) -> None:
        assert self._first is not None and self._soon is not None
        config, clock, soon = self.config, self._clock, self._soon
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug must not stop discovery for good
                log.exception("discovery %s: resolving %s failed", self.downstream, self.target)
            if not self._first.done():
                self._first.set_result(None)
            soon.clear()
            try:
                await wait_for(soon.wait(), self._last + config.refresh_interval, clock)
            except TimeoutError:
                continue
            # Asked to resolve sooner: not before the minimum time since the last resolution.
            wait = self._last + config.min_time_between_resolutions - clock.now()
            if wait > 0:
                await clock.sleep(wait)

    async def close(self) -> None:
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # (a cancellation of close() itself still propagates)
            self._task = None
        await self._resolver.close()
