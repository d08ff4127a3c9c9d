"""The native load worker (`loadgen.c`): built here with the machine's C compiler, driven like a Python worker.

Why: the overload benchmark's load shares the machine's two cores with the system it overloads, and a Python
worker spends about 0.3-0.5 ms of CPU on every gRPC call. At 3x capacity that was 0.5-0.6 of the two cores, taken
from the system under test at a higher priority. The C worker sends the same jobs (openloop.Job: the same
schedule, deadlines, targets, TLS and token) with libnghttp2 and OpenSSL, and reports the same `Shot`s, for a few
microseconds of CPU per call. Why not an existing tool: h2load (nghttp2's) has no gRPC status (it logs the HTTP
status, and a refusal is HTTP 200 with `grpc-status: 8` in its trailers) and measures from sending, not from the
schedule; ghz is not packaged here; grpc-js cost more per call than Python (docs/overload.md).

It is built on first use into the user's cache (`~/.cache/pullgate/loadgen-<hash of the source>`), with `cc` and
`pkg-config` for libnghttp2 and OpenSSL (Debian: `apt-get install gcc pkg-config libnghttp2-dev libssl-dev`).
Where that fails, `build()` raises `NativeUnavailable` with the compiler's reason, and the benchmark says so and
uses the Python workers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import grpc

from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.security.access import OPERATOR
from pullgate.security.pki import Pki
from pullgate.tools.gateway_channel import MODES
from pullgate.tools.openloop import CLOSED, ORDER_IDS, REFUSED_PAUSE, Job, Shot, Worker, prioritise

SOURCE = Path(__file__).with_name("loadgen.c")

PATH = f"/{pb.DESCRIPTOR.services_by_name['GatewayService'].full_name}/GetOrderView"
"""The one method these loads call."""

PACKAGES = "gcc pkg-config libnghttp2-dev libssl-dev"
"""What Debian needs for the build."""


class NativeUnavailable(RuntimeError):
    """The native worker cannot be built here; the message says why and what to install."""


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pullgate"


def _flags() -> list[str]:
    """Compiler and linker flags for libnghttp2 and OpenSSL, from pkg-config where it is installed."""
    if shutil.which("pkg-config"):
        found = subprocess.run(["pkg-config", "--cflags", "--libs", "libnghttp2", "openssl"], capture_output=True,
                               text=True, check=False)
        if found.returncode == 0:
            return found.stdout.split()
    return ["-lnghttp2", "-lssl", "-lcrypto"]


def build() -> Path:
    """The worker's binary, compiled if this source has not been yet; NativeUnavailable when it cannot be."""
    source = SOURCE.read_bytes()
    binary = cache_dir() / f"loadgen-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.exists():
        return binary
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise NativeUnavailable(f"no C compiler (cc) to build {SOURCE.name}; on Debian: apt-get install {PACKAGES}")
    try:
        binary.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=binary.parent) as tmp:
            built = Path(tmp) / "loadgen"
            result = subprocess.run([compiler, "-O2", "-o", str(built), str(SOURCE), *_flags(), "-lm"],
                                    capture_output=True, text=True, check=False)
            if result.returncode != 0:
                reason = (result.stderr.strip().splitlines() or ["(no message)"])[0]
                raise NativeUnavailable(f"could not build {SOURCE.name} ({reason}); on Debian: apt-get install "
                                        f"{PACKAGES}")
            built.replace(binary)  # atomic: a concurrent build of the same source writes the same file
    except OSError as error:
        raise NativeUnavailable(f"could not build {SOURCE.name} into {binary.parent}: {error}") from error
    return binary


def unavailable() -> str | None:
    """None where the native worker builds here (it is then built), else why not and what to install."""
    try:
        build()
    except NativeUnavailable as reason:
        return str(reason)
    return None


def _host_port(address: str) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), port


def job_lines(job: Job) -> list[str]:
    """`job` in the worker's line protocol (loadgen.c's header): the schedule as phases of counted slots, the
    targets with their TLS files and token, and the request bodies, one per demo order, taken in turn."""
    lines = [f"job {job.worker} {job.workers} {job.callers} {job.seconds!r} {job.deadline!r} "
             f"{REFUSED_PAUSE!r}", f"path {PATH}"]
    for target in job.targets:
        host, port = _host_port(target.address)
        if target.pki is None:
            files = ["-", "-", "-"]
        else:
            pki = Pki(Path(target.pki))
            files = [str(pki.ca), str(pki.cert(OPERATOR)), str(pki.key(OPERATOR))]
        lines.append(" ".join(["target", host, port, topology.ENTRY, *files, target.token or "-"]))
    start = 0.0
    for phase in job.phases:
        lines.append(f"phase {phase.count} {phase.rate!r} {start!r}")
        start += phase.seconds
    read = pb.ReadOptions(consistency=MODES[job.consistency])
    for order_id in ORDER_IDS:
        lines.append("body " + pb.GetOrderViewRequest(order_id=order_id, read=read).SerializeToString().hex())
    return [*lines, "end"]


def shot(line: str, job: Job) -> Shot:
    """One `s ...` line of the worker's answer, as openloop's Shot."""
    _, phase, target, due, lag, latency, code, overloaded, degraded, edge, relayed = line.split()
    if code not in grpc.StatusCode.__members__:
        raise ValueError(f"native load worker: unknown code in {line!r}")
    name = CLOSED if int(phase) < 0 else job.phases[int(phase)].name
    return Shot(name, int(target), float(due), float(lag), float(latency), code, overloaded == "1", degraded == "1",
                edge == "1", relayed == "1")


class NativeWorker(Worker):
    """A `loadgen` process, driven as openloop's Python worker is: the job, "ready", the origin, the shots."""

    _job: Job | None = None

    @classmethod
    async def start(cls) -> NativeWorker:
        binary = await asyncio.to_thread(build)
        return cls(await asyncio.create_subprocess_exec(
            str(binary), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**30,
            preexec_fn=prioritise))

    async def connect(self, job: Job) -> None:
        self._job = job
        await self._send("\n".join(job_lines(job)))
        if (await self._line()).strip() != b"ready":
            raise RuntimeError("native load worker: expected 'ready'")

    async def go(self, origin: float) -> tuple[list[Shot], float]:
        assert self._job is not None, "connect first"
        await self._send(repr(origin))
        shots: list[Shot] = []
        while True:
            line = (await self._line()).decode()
            if line.startswith("done "):
                return shots, float(line.split()[1])
            shots.append(shot(line, self._job))


__all__ = ["NativeUnavailable", "NativeWorker", "build", "job_lines", "shot", "unavailable"]
