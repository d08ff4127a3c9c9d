"""Doing the faults of a schedule to live processes: signals for kills and freezes (a gray fault is a freeze of one
replica of several), FaultService for slow, fail and hang, and a second process for an overload.

Every fault is undone however the run ends (a frozen process is thawed, injected faults are put back as they
were), because a chaos tool that leaves a system broken teaches nothing. A kill ends when the launcher has the
process back (a new pid recorded in pullgate-up.json), which is the moment healing can start.

FaultService is called as pullgate's operator (`FaultClient`): the owners let the operator's certificate call it
(pullgate/security/policy.toml), the gateway a token with the `operator` scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from pullgate import topology
from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.security.access import OPERATOR, Access
from pullgate.security.tokens import OPERATOR_SCOPE
from pullgate.tools.chaos.overload import Overload
from pullgate.tools.chaos.record import FaultRun, Record
from pullgate.tools.chaos.schedule import Fault
from pullgate.tools.chaos.system import Proc, State, SystemUnusable, alive, read_state, send
from pullgate.tools.gateway_channel import Metadata

if TYPE_CHECKING:
    from pullgate.admin.v1.admin_pb2_grpc import FaultServiceAsyncStub


class InjectionUnavailable(Exception):
    """A process has no FaultService: it was started without --allow-fault-injection."""


class FaultClient:
    """The admin FaultService of a system's processes, called as pullgate's operator: with the operator's
    certificate, which the owners' policy lets call it, and at the gateway, which checks tokens rather than
    certificates, with a token of scope `operator` (sent to the gateway alone). Plaintext for an insecure system."""

    def __init__(self, access: Access) -> None:
        self._access = access
        self._token = access.mint(subject=OPERATOR, scopes=[OPERATOR_SCOPE])

    @contextlib.asynccontextmanager
    async def _stub(self, proc: Proc) -> AsyncIterator[tuple[FaultServiceAsyncStub, Metadata]]:
        """A stub for `proc`'s FaultService, and the metadata each call carries."""
        metadata = self._access.metadata(self._token if proc.service == topology.ENTRY else None)
        async with self._access.channel(proc.service, proc.address) as channel:
            yield admin_pb2_grpc.FaultServiceStub(channel), metadata

    async def available(self, proc: Proc) -> bool:
        """True if `proc` serves pullgate.admin.v1.FaultService."""
        async with self._stub(proc) as (stub, metadata):
            try:
                await stub.GetFaults(admin_pb2.GetFaultsRequest(), timeout=5, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return False
                raise
        return True

    async def set(self, proc: Proc, spec: str) -> str:
        """Replace `proc`'s faults with `spec`; the spec it had before."""
        async with self._stub(proc) as (stub, metadata):
            reply = await stub.SetFaults(admin_pb2.SetFaultsRequest(spec=spec), timeout=5, metadata=metadata)
        return reply.previous.spec


class Actions:
    """Runs one schedule against the processes recorded in `data_dir`, logging each fault into `record`; their
    FaultService through `faults`."""

    def __init__(self, data_dir: Path, record: Record, faults: FaultClient, restart_timeout: float = 60.0,
                 overload: Overload | None = None) -> None:
        self._data_dir = data_dir
        self._record = record
        self._faults = faults
        self.overload = overload
        """The spike's worker processes, for a schedule with an overload fault (set before `run`)."""
        self._restart_timeout = restart_timeout
        self._frozen: set[int] = set()
        self._injected: dict[str, tuple[Proc, str]] = {}
        """address -> its process and the spec to put back."""
        self.current: list[str] = []
        """Labels of the faults in force, for the progress line."""

    def _state(self) -> State:
        return read_state(self._data_dir)

    async def run(self, schedule: Sequence[Fault], origin: float, stop: asyncio.Event) -> None:
        """Start each fault at `origin + fault.at` (loop time); return when all have ended or `stop` is set."""
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        try:
            for fault in schedule:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, origin + fault.at - loop.time()))
                if stop.is_set():
                    break
                tasks.append(asyncio.create_task(self._do(fault, stop)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.undo()

    async def _do(self, fault: Fault, stop: asyncio.Event) -> None:
        proc = self._state().proc(fault.target)
        run = FaultRun(fault.label, fault.kind, fault.target, time.time(), pid=proc.pid, service=proc.service)
        self._record.faults.append(run)
        self.current.append(fault.label)
        try:
            if fault.kind == "kill":
                send(proc.pid, signal.SIGKILL)
                self._record.kills[proc.name] = self._record.kills.get(proc.name, 0) + 1
                if await self._back(proc.name, proc.pid):
                    run.end = time.time()
                else:
                    run.note = f"not restarted within {self._restart_timeout:g}s"
            elif fault.kind in ("freeze", "gray"):
                send(proc.pid, signal.SIGSTOP)
                self._frozen.add(proc.pid)
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), fault.duration)
                finally:
                    self._thaw(proc.pid)
                run.end = time.time()
            elif fault.kind == "overload":
                if self.overload is None:
                    raise SystemUnusable("an overload fault needs the load worker processes (pullgate chaos starts "
                                         "them when its schedule has one)")
                spike = await self.overload.spike(fault, stop)
                self._record.spikes.append(spike)
                run.start, run.end = spike.start, spike.start + spike.seconds
                run.note = (f"{spike.rate:.0f} views/s = {fault.multiple:g}x the {spike.capacity:.0f}/s measured "
                            "before the run")
            else:
                try:
                    previous = await self._faults.set(proc, fault.server_spec(proc.service))
                except grpc.aio.AioRpcError as error:
                    run.note = f"SetFaults failed: {error.code().name}: {error.details()}"
                    run.end = time.time()
                    return
                self._injected.setdefault(proc.address, (proc, previous))
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), fault.duration)
                finally:
                    await self._restore(proc.address)
                run.end = time.time()
        except SystemUnusable as error:
            run.note = str(error)
            run.end = time.time()
        finally:
            self.current.remove(fault.label)

    async def _back(self, name: str, old_pid: int) -> bool:
        """Wait until the launcher recorded `name` with a new live pid (it does so once the process serves)."""
        deadline = time.monotonic() + self._restart_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(SystemUnusable, OSError, ValueError):
                pid = self._state().proc(name).pid
                if pid != old_pid and alive(pid):
                    return True
            await asyncio.sleep(0.05)
        return False

    def _thaw(self, pid: int) -> None:
        self._frozen.discard(pid)
        with contextlib.suppress(ProcessLookupError, SystemUnusable):
            send(pid, signal.SIGCONT)

    async def _restore(self, address: str) -> None:
        injected = self._injected.pop(address, None)
        if injected is not None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._faults.set(*injected)

    async def undo(self) -> None:
        """Thaw every frozen process and put back every server's faults as they were before the run."""
        for pid in list(self._frozen):
            self._thaw(pid)
        for address in list(self._injected):
            await self._restore(address)


__all__ = ["Actions", "FaultClient", "InjectionUnavailable"]
