"""A real DNS server for tests: dnsmasq on 127.0.0.1, a free UDP port, answering from a hosts file we edit."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from resilience.discovery import DnsResolver, ResolutionError

DOMAIN = "pullgate.test"
"""The names it answers for; any other name under it does not exist (NXDOMAIN)."""


@dataclass
class Dns:
    """A running dnsmasq: `server` is "127.0.0.1:PORT"; `publish()` rewrites its hosts file and reloads it."""

    server: str
    hosts: Path
    process: subprocess.Popen[bytes]

    def publish(self, records: dict[str, Iterable[str]]) -> None:
        """Each name resolves to exactly its addresses from now on (dnsmasq re-reads the file on SIGHUP)."""
        lines = [f"{ip} {name}\n" for name, ips in records.items() for ip in ips]
        self.hosts.write_text("".join(lines))
        self.process.send_signal(signal.SIGHUP)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def dnsmasq(directory: Path, records: dict[str, Iterable[str]]) -> AsyncIterator[Dns]:
    """dnsmasq answering `records` (name -> addresses) on 127.0.0.1 at a free port; skipped without the binary."""
    binary = shutil.which("dnsmasq") or next(
        (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if os.access(p, os.X_OK)), None)
    if binary is None:
        pytest.skip("no `dnsmasq` binary (Debian: apt-get install dnsmasq-base; .ci/run does)")
    hosts = directory / "hosts"
    hosts.write_text("".join(f"{ip} {name}\n" for name, ips in records.items() for ip in ips))
    log = directory / "dnsmasq.log"
    for _ in range(5):  # the free port could be taken before dnsmasq binds it
        port = _free_udp_port()
        process = _spawn(binary, port, hosts, log)
        dns = Dns(f"127.0.0.1:{port}", hosts, process)
        try:
            if await _answers(dns):
                break
        except BaseException:
            _stop(process)
            raise
        _stop(process)
    else:
        raise RuntimeError(f"dnsmasq did not start: {log.read_text()}")
    try:
        yield dns
    finally:
        _stop(process)


def _spawn(binary: str, port: int, hosts: Path, log: Path) -> subprocess.Popen[bytes]:
    """dnsmasq in the foreground, answering only from `hosts` (no /etc/hosts, no upstream servers, no config
    file), as this user (it would switch to `nobody`, who cannot read the test's directory), logging to `log`."""
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    with open(log, "ab") as out:
        return subprocess.Popen(
            [binary, "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file", f"--port={port}",
             "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
             f"--addn-hosts={hosts}", f"--local=/{DOMAIN}/", f"--user={user}", f"--group={group}",
             "--log-facility=-"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )


async def _answers(dns: Dns) -> bool:
    """Wait until dnsmasq answers (True), or has exited (False)."""
    resolver = DnsResolver(dns.server, timeout=0.5)
    try:
        while dns.process.poll() is None:
            try:
                await resolver.resolve(f"ready.{DOMAIN}")
                return True
            except ResolutionError:
                await asyncio.sleep(0.05)  # not up yet: ask again
        return False
    finally:
        await resolver.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
