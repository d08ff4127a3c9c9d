"""Load for the overload benchmark, sent from worker processes: open loop on a schedule, or closed loop to find
capacity. `python -m pullgate.tools.openloop` is one worker; `Workers` keeps a few and gives them their jobs. The native
worker (`pullgate.tools.native`, C) takes the same jobs and reports the same shots for a quarter of the CPU;
`Workers.start(native=True)` uses it.

Why open loop: a closed loop (send, wait, send) slows down exactly when the system does, so it hides the queue
a crowd of independent callers builds (coordinated omission). Here request k is due at a fixed time of the
schedule whether or not earlier ones answered, and its latency is measured from that due time, not from when
the generator got round to sending it: a generator that falls behind makes latency worse, never better. How
late each request went out (its send lag) is recorded too, so a generator that cannot keep up is visible.

Why worker processes: the generator's own event loop costs CPU per request (building, sending, reading
answers). In its own processes it does not stall the benchmark's loop (scraping metrics, freezing a process),
and with two workers neither loop has to keep a 1 ms schedule alone. Every process shares the machine's cores
with the system under test, so where the OS allows it (root) the workers run at a higher priority (NICE): a
system that saturates the cores then queues requests, as it would for callers on other machines, instead of
also delaying their sending. Python's cyclic garbage collector is off while a schedule runs (a full collection
among thousands of calls in flight held a worker for ~100 ms) and runs between jobs. The workers report the
CPU they used, so their share of the machine is visible.

Arrivals are evenly spaced (a constant rate per phase, as wrk2 does) rather than Poisson: each second offers
exactly its rate, so per-second goodput compares with per-second offered load without sampling noise.
Times are `time.monotonic()` seconds, one clock for every process on the machine, so the workers and the
benchmark agree on the schedule's origin without exchanging anything but a number.

A gateway is given as a `Gateway`: its address and how to reach it, made in the benchmark's process from the
system's `Access` (pullgate.security.access): through TLS trusting the system's CA, every view carrying a token
that may read any customer's orders (scope `admin`), as per-call metadata (a call-credentials plugin would cost a
trip through a Python thread per call); plaintext for an `--insecure` system. It travels in the job's JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from pullgate import topology
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.security.access import Access
from pullgate.security.tokens import ADMIN_SCOPE
from pullgate.tools.gateway_channel import CHANNEL_OPTIONS, MODES, Metadata
from pullgate.tools.stats import percentile
from services import demo

if TYPE_CHECKING:
    from pullgate.gateway.v1.gateway_pb2_grpc import GatewayServiceAsyncStub

OVERLOADED = ("resilience-overloaded", "1")
"""The trailer a server adds to a RESOURCE_EXHAUSTED refusal that says "overloaded, not out of quota"."""

REFUSALS = ("RESOURCE_EXHAUSTED", "CANCELLED")
"""The codes a refused request comes back with: RESOURCE_EXHAUSTED from pullgate's admission control, CANCELLED
from grpc's core when its queue of calls not yet taken by Python is full (`grpc.server.max_pending_requests`,
docs/overload.md). These loads never cancel a call themselves, so a CANCELLED here is the server's."""

ORIGIN = "resilience-failure-origin"
"""The trailer naming the owner where a failure began (resilience.errors.ORIGIN_METADATA)."""

EDGE_REFUSAL = "edge:"
"""How the details of the edge's refusals begin (pullgate.edge.haproxy.REFUSAL_MESSAGE)."""

REFUSED_PAUSE = 0.05
"""How long a closed-loop caller waits after a refusal before its next request, as a client that honours
"overloaded" does (pullgate's own client side throttles itself). A caller that re-sent at once would spin: a
refusal comes back in about a millisecond, so 32 such callers against a saturated gateway sent thousands of
requests a second, each refused, and the refusals' cost, not the views', set what they measured."""

CLOSED = "closed"
"""The phase of a closed loop's shots."""

ORDER_IDS = tuple(o.order_id for o in demo.ORDERS)
"""Order views go round the demo orders, so every view reads real data with one to four lines."""

LOAD_SUBJECT = "pullgate-load"
"""The subject of the load's token, as the gateway's spans name the caller."""

@dataclass(frozen=True, slots=True)
class Gateway:
    """A gateway to send views to, and how: through TLS trusting the CA of the development PKI in `pki`, each call
    with `token`; plaintext where `pki` is None (a system started `--insecure`). Plain strings, for a job's JSON."""

    address: str
    pki: str | None = None
    token: str | None = None

    @classmethod
    def of(cls, address: str, access: Access) -> Gateway:
        """The gateway at `address` of the system `access` reaches, with a token that may read every customer's
        orders (scope `admin`): these loads send order views of every customer, and nothing else."""
        token = access.mint(subject=LOAD_SUBJECT, scopes=[ADMIN_SCOPE])
        return cls(address, None if access.pki is None else str(access.pki), token)

    @property
    def access(self) -> Access:
        return Access(None if self.pki is None else Path(self.pki))

    def channel(self, options: Sequence[tuple[str, Any]] = CHANNEL_OPTIONS) -> grpc.aio.Channel:
        """A new channel to the gateway (the token is not on it: send `metadata` with each call)."""
        return self.access.channel(topology.ENTRY, self.address, options)

    @property
    def metadata(self) -> Metadata:
        """What each call carries: the token, if any."""
        return self.access.metadata(self.token)


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of the schedule: `rate` requests per second for `seconds`."""

    name: str
    seconds: float
    rate: float

    @property
    def count(self) -> int:
        """How many requests it sends (Python's rounding)."""
        return round(self.seconds * self.rate)


@dataclass(frozen=True, slots=True)
class Shot:
    """One order view and its answer. Times are seconds; `due` counts from the schedule's origin."""

    phase: str
    target: int
    """Index of the gateway it went to, in the targets given."""
    due: float
    """When it was due (open loop), or when it was sent (closed loop)."""
    lag: float
    """How late it was sent: 0 for a closed loop, where sending is the schedule."""
    latency: float
    """From `due` to the answer, whatever the answer."""
    code: str
    """OK or the status code's name."""
    overloaded: bool = False
    """The answer carried the trailer `resilience-overloaded: 1`."""
    degraded: bool = False
    """An OK view with a stale or missing part."""
    at_edge: bool = False
    """A refusal the edge made (HAProxy in front of the gateway; its details begin "edge:"), not the gateway."""
    relayed: bool = False
    """A failure an owner began (trailer `resilience-failure-origin`): the gateway took the view, and an owner
    refused or failed a part a strong read could not do without. Not a refusal of the view."""

    @property
    def end(self) -> float:
        return self.due + self.latency

    @property
    def refused(self) -> bool:
        """The server refused it (one of REFUSALS), rather than failing it."""
        return self.code in REFUSALS and not self.relayed


@dataclass(frozen=True, slots=True)
class Job:
    """What one worker does: open loop over `phases` (its share of the slots), or a closed loop of `callers`."""

    targets: tuple[Gateway, ...]
    consistency: str
    """strong, bounded or available (pullgate.tools.chaos.load.MODES)."""
    deadline: float
    origin: float
    """`time.monotonic()` at which the schedule starts; the worker connects before it."""
    phases: tuple[Phase, ...] = ()
    worker: int = 0
    workers: int = 1
    callers: int = 0
    """For a closed loop: how many callers, each sending its next view when its last one answered."""
    seconds: float = 0.0
    """For a closed loop: how long."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Job:
        data = json.loads(text)
        return cls(**{**data, "targets": tuple(Gateway(**t) for t in data["targets"]),
                      "phases": tuple(Phase(**p) for p in data["phases"])})


@dataclass(frozen=True, slots=True)
class Result:
    """Every shot of every worker, and what the workers cost."""

    shots: list[Shot]
    cpu: float
    """CPU seconds the workers used, together (user + system, all threads)."""

    def lag(self, quantile: float) -> float:
        """The send lag at `quantile` (0 without shots)."""
        return percentile([s.lag for s in self.shots], quantile)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside, one after: a full collection among thousands of calls in flight held
    a worker's loop for ~100 ms, and every request due meanwhile went out late."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def slots(phases: Sequence[Phase]) -> list[tuple[float, str]]:
    """Every request's due time (seconds from the origin) and phase: evenly spaced within each phase."""
    out: list[tuple[float, str]] = []
    start = 0.0
    for phase in phases:
        out += [(start + k / phase.rate, phase.name) for k in range(phase.count)]
        start += phase.seconds
    return out


async def view(stub: GatewayServiceAsyncStub, consistency: str, order_id: str, deadline: float,
               metadata: Metadata = ()) -> tuple[str, bool, bool, bool, bool]:
    """One order view given `deadline` seconds, carrying `metadata` (`Gateway.metadata`): (code, overloaded
    trailer, degraded, refused at the edge, begun at an owner)."""
    request = pb.GetOrderViewRequest(order_id=order_id, read=pb.ReadOptions(consistency=MODES[consistency]))
    try:
        answer = await stub.GetOrderView(request, timeout=deadline, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        trailers: Any = error.trailing_metadata() or ()  # (key, value) pairs; grpc-stubs types them otherwise
        edge = (error.details() or "").startswith(EDGE_REFUSAL)
        relayed = any(pair[0] == ORIGIN for pair in trailers)
        return error.code().name, any(tuple(pair) == OVERLOADED for pair in trailers), False, edge, relayed
    return "OK", False, answer.degraded, False, False


async def _open(job: Job, stubs: Sequence[tuple[GatewayServiceAsyncStub, Metadata]]) -> list[Shot]:
    """Send this worker's share of the slots, each when it is due; wait for the last answer."""
    loop = asyncio.get_running_loop()
    shots: list[Shot] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(k: int, due: float, phase: str) -> None:
        sent = loop.time()
        lag = sent - (job.origin + due)
        target = (k // job.workers) % len(stubs)
        stub, metadata = stubs[target]
        answer = await view(stub, job.consistency, ORDER_IDS[k % len(ORDER_IDS)], max(0.001, job.deadline - lag),
                            metadata)
        shots.append(Shot(phase, target, due, lag, loop.time() - job.origin - due, *answer))

    for k, (due, phase) in enumerate(slots(job.phases)):
        if k % job.workers != job.worker:
            continue
        wait = job.origin + due - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(one(k, due, phase))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return shots


async def _closed(job: Job, stubs: Sequence[tuple[GatewayServiceAsyncStub, Metadata]]) -> list[Shot]:
    """`job.callers` loops, each sending its next view as soon as its last one answered (REFUSED_PAUSE after a
    refusal), for `job.seconds`."""
    loop = asyncio.get_running_loop()
    shots: list[Shot] = []
    end = job.origin + job.seconds
    counter = iter(range(sys.maxsize))

    async def caller() -> None:
        while (sent := loop.time()) < end:
            k = next(counter)
            target = k % len(stubs)
            stub, metadata = stubs[target]
            answer = await view(stub, job.consistency, ORDER_IDS[k % len(ORDER_IDS)], job.deadline, metadata)
            shots.append(Shot(CLOSED, target, sent - job.origin, 0.0, loop.time() - sent, *answer))
            if answer[0] in REFUSALS:
                await asyncio.sleep(REFUSED_PAUSE)

    await asyncio.sleep(max(0.0, job.origin - loop.time()))
    await asyncio.gather(*(caller() for _ in range(job.callers)))
    return shots


async def work(job: Job, ready: Callable[[], Awaitable[float]]) -> tuple[list[Shot], float]:
    """Connect to every target, learn the origin from `ready()`, run the job; (its shots, the CPU it took)."""
    channels = [t.channel() for t in job.targets]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 30.0)
        stubs = [(gateway_pb2_grpc.GatewayServiceStub(c), t.metadata)
                 for c, t in zip(channels, job.targets, strict=True)]
        job = replace(job, origin=await ready())
        cpu = time.process_time()
        with collector_paused():
            shots = await (_closed(job, stubs) if job.callers else _open(job, stubs))
        return shots, time.process_time() - cpu
    finally:
        for channel in channels:
            await channel.close(None)


NICE = -5
"""How much higher the workers' scheduling priority is than the benchmark's (and so the system's), where the OS
allows it (root): a machine saturated by the system then does not also make the generator late. Relative, so a
benchmark run under `nice -n -10` (to keep a busy neighbour off the machine) keeps its workers above it."""

START_AFTER = 0.2
"""Seconds from the moment every worker is connected to the schedule's origin."""


def prioritise() -> None:
    """In the worker before exec: raise its priority by NICE, for it and every thread it will start, if the OS
    lets us."""
    with contextlib.suppress(OSError):
        os.nice(NICE)


class Worker:
    """A worker process, driven over its stdin and stdout: a job (a line of JSON), "ready" when it is connected,
    the origin (a line), then the shots (a line of JSON). It takes jobs until its stdin closes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> Worker:
        return cls(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pullgate.tools.openloop", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=2**30, preexec_fn=prioritise))

    async def _line(self) -> bytes:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"load worker (pid {self.process.pid}) exited with code {await self.process.wait()}")
        return line

    async def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def connect(self, job: Job) -> None:
        await self._send(job.to_json())
        if (await self._line()).strip() != b"ready":
            raise RuntimeError("load worker: expected 'ready'")

    async def go(self, origin: float) -> tuple[list[Shot], float]:
        await self._send(repr(origin))
        data: dict[str, Any] = json.loads(await self._line())
        return [Shot(*row) for row in data["shots"]], float(data["cpu"])

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10.0)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class Workers:
    """Load worker processes kept for a whole benchmark: starting Python costs seconds on a small machine."""

    def __init__(self, workers: list[Worker], native: bool = False) -> None:
        self._workers = workers
        self.native = native

    @classmethod
    async def start(cls, count: int = 2, native: bool = False) -> Workers:
        """`count` workers: Python processes, or the native worker (pullgate.tools.native; it raises
        NativeUnavailable where it cannot be built)."""
        kind: type[Worker] = Worker
        if native:
            from pullgate.tools.native import NativeWorker  # it builds on this module
            kind = NativeWorker
        return cls(list(await asyncio.gather(*(kind.start() for _ in range(count)))), native)

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self._workers))

    def describe(self) -> str:
        """How many workers, and their priority against this process's (and so the systems' it starts)."""
        nice = sorted({os.getpriority(os.PRIO_PROCESS, w.process.pid) for w in self._workers})
        kind = "native (loadgen.c)" if self.native else "Python"
        return (f"{len(self._workers)} {kind} load worker processes at nice {', '.join(map(str, nice))}; this "
                f"benchmark and the systems it starts at nice {os.getpriority(os.PRIO_PROCESS, 0)}")

    async def _run(self, jobs: Sequence[Job]) -> tuple[Result, float]:
        """Give each job to a worker; once all are connected, give them one origin and collect what they saw."""
        workers = self._workers[:len(jobs)]
        await asyncio.gather(*(w.connect(job) for w, job in zip(workers, jobs, strict=True)))
        origin = time.monotonic() + START_AFTER
        parts = await asyncio.gather(*(w.go(origin) for w in workers))
        shots = sorted((s for part, _ in parts for s in part), key=lambda s: s.due)
        return Result(shots, sum(cpu for _, cpu in parts)), origin

    async def open_loop(self, targets: Sequence[Gateway], phases: Sequence[Phase], consistency: str,
                        deadline: float) -> tuple[Result, float]:
        """Run `phases` open loop, the slots dealt out to every worker in turn; (the shots, the origin as
        `time.monotonic()`). Request k goes to `targets[(k // workers) % len(targets)]`: the targets take turns
        request by request, and every worker sends to every target."""
        count = len(self._workers)
        return await self._run([Job(tuple(targets), consistency, deadline, 0.0, tuple(phases), worker=w,
                                    workers=count) for w in range(count)])

    async def closed_loop(self, targets: Sequence[Gateway], callers: int, seconds: float, consistency: str,
                          deadline: float) -> tuple[Result, float]:
        """`callers` closed-loop callers for `seconds`, in one worker process; (the shots, the origin as
        `time.monotonic()`)."""
        return await self._run([Job(tuple(targets), consistency, deadline, 0.0, callers=callers, seconds=seconds)])


@contextlib.asynccontextmanager
async def workers(count: int = 2, native: bool = False) -> AsyncIterator[Workers]:
    """`count` load worker processes (native: pullgate.tools.native's), stopped on exit."""
    pool = await Workers.start(count, native)
    try:
        yield pool
    finally:
        await pool.close()


def main() -> None:
    """A worker: for each job (a line of JSON) on stdin, connect, say "ready", read the origin (a line), run the
    job, and write its shots and the CPU it took (a line of JSON) on stdout."""
    names = [f.name for f in fields(Shot)]

    async def ready() -> float:
        print("ready", flush=True)
        return float(await asyncio.to_thread(sys.stdin.readline))

    for line in sys.stdin:
        shots, cpu = asyncio.run(work(Job.from_json(line), ready))
        print(json.dumps({"shots": [[getattr(s, n) for n in names] for s in shots], "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main()
