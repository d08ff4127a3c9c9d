"""The system under test: what `pullgate up` recorded in `<data-dir>/pullgate-up.json`, or one started for the run.

Chaos only ever touches processes that file names, only on loopback addresses, and only after checking that
the pid still runs `pullgate serve`, so a stale file can never point a signal at an unrelated process. It calls
them as the file says they are secured (`State.access`): with the operator's certificate and tokens from the
system's key, or in plaintext for a system started `--insecure`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pullgate import topology
from pullgate.security.access import Access
from pullgate.tools.launcher import STATE_FILE


class SystemUnusable(Exception):
    """The system cannot be found, started or trusted; the message says why and what to do."""


@dataclass(frozen=True)
class Proc:
    """One server process as the launcher recorded it."""

    name: str
    service: str
    address: str
    pid: int
    restarts: int


@dataclass(frozen=True)
class State:
    """One reading of pullgate-up.json."""

    launcher_pid: int
    data_dir: Path
    procs: tuple[Proc, ...]
    access: Access = field(default_factory=Access)
    """How pullgate's tools reach these processes (the `security` record; plaintext for an insecure system)."""
    entry: str = ""
    """Where callers call: the edge in front of the gateway, or the gateway when there is no edge."""

    def proc(self, name: str) -> Proc:
        for proc in self.procs:
            if proc.name == name:
                return proc
        raise SystemUnusable(f"no process named {name!r}; the system runs {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.procs]

    def addresses(self, service: str) -> list[str]:
        return [p.address for p in self.procs if p.service == service]


def parse_state(data: dict[str, Any]) -> State:
    procs = tuple(
        Proc(entry["name"], service, entry["address"], int(entry["pid"] or 0), int(entry["restarts"]))
        for service, entries in data["services"].items()
        for entry in entries
    )
    gateways = [p.address for p in procs if p.service == topology.ENTRY]
    entry = str(data.get("entry") or (gateways[0] if gateways else ""))
    return State(int(data["launcher_pid"]), Path(data["data_dir"]), procs, Access.from_state(data), entry)


def read_state(data_dir: Path) -> State:
    """The state file in `data_dir`, checked: every address on loopback, the launcher alive."""
    path = data_dir / STATE_FILE
    try:
        state = parse_state(json.loads(path.read_text()))
    except FileNotFoundError:
        raise SystemUnusable(f"no running pullgate found: {path} does not exist; start one with "
                           "`pullgate up --allow-fault-injection` (or use `pullgate chaos --start`)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise SystemUnusable(f"{path} is not a pullgate-up.json: {error}") from None
    for proc in state.procs:
        host = proc.address.rpartition(":")[0].strip("[]")
        if not _loopback(host):
            raise SystemUnusable(f"{proc.name} listens on {proc.address}: chaos runs only against loopback addresses")
    if not alive(state.launcher_pid):
        raise SystemUnusable(f"{path} is stale: its launcher (pid {state.launcher_pid}) is not running")
    return state


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_server(pid: int) -> bool:
    """True if `pid` runs `pullgate serve` (read from /proc; elsewhere, trusted)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not Path("/proc/self").exists():
        return alive(pid)
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"pullgate" in args and b"serve" in args


def send(pid: int, sig: signal.Signals) -> None:
    """Signal a pullgate server; refuses a pid that is not one (a stale state file)."""
    if not is_server(pid):
        raise SystemUnusable(f"pid {pid} does not run `pullgate serve`; refusing to send {sig.name}")
    os.kill(pid, sig)


def memory(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB: the peak and current resident set of a live process, from /proc/<pid>/status."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            values[key] = int(rest.split()[0])
    if len(values) < 2:
        return None
    return values["VmHWM"], values["VmRSS"]


@dataclass
class Started:
    """A `pullgate up` this run started, and where its output goes."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    log: Path

    def stop(self, grace: float = 30.0) -> int:
        """SIGTERM, wait for the launcher to stop its children; SIGKILL only if it does not within `grace`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start(data_dir: Path, replicas: int = 1, config: Path | None = None, extra: Sequence[str] = (),
          timeout: float = 90.0) -> Started:
    """Run `pullgate up --any-ports --allow-fault-injection` in `data_dir` (secure, as by default, unless `extra`
    says `--insecure`) and wait until it recorded its state."""
    data_dir.mkdir(parents=True, exist_ok=True)
    state_file = data_dir / STATE_FILE
    if state_file.exists():
        with contextlib.suppress(SystemUnusable):
            read_state(data_dir)
            raise SystemUnusable(f"a pullgate already runs in {data_dir}; use it without --start, or another dir")
        state_file.unlink()
    log = data_dir / "chaos-up.log"
    command = [sys.executable, "-m", "pullgate", "up", "--data-dir", str(data_dir), "--any-ports",
               "--allow-fault-injection", "--replicas", str(replicas), *extra]
    if config is not None:
        command += ["--config", str(config)]
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    started = Started(process, data_dir, log)
    deadline = time.monotonic() + timeout
    for _ in _polling(deadline):
        if process.poll() is not None:
            raise SystemUnusable(f"pullgate up exited with code {process.returncode}; see {log}")
        with contextlib.suppress(SystemUnusable):
            if read_state(data_dir).launcher_pid == process.pid:
                return started
    started.stop()
    raise SystemUnusable(f"pullgate up did not start within {timeout:.0f}s; see {log}")


def _polling(deadline: float, every: float = 0.1) -> Iterator[None]:
    """Yield until `deadline`, pausing `every` seconds between checks of a condition."""
    while time.monotonic() < deadline:
        yield
        time.sleep(every)


__all__ = ["Proc", "Started", "State", "SystemUnusable", "alive", "memory", "read_state", "send", "start"]
