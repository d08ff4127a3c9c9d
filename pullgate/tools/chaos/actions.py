"""Doing the faults of a schedule to live processes: signals for kills and freezes (a gray fault is a freeze of one
replica of several), FaultService for slow, fail and hang, and a second process for an overload.

Every fault is undone however the run ends (a frozen process is thawed, injected faults are put back as they
were), because a chaos tool that leaves a system broken teaches nothing. A kill ends when the launcher has the
process back (a new pid recorded in pullgate-up.json), which is the moment healing can start.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.tools.chaos.overload import Overload
from pullgate.tools.chaos.record import FaultRun, Record
from pullgate.tools.chaos.schedule import Fault
from pullgate.tools.chaos.system import State, SystemUnusable, alive, read_state, send


class InjectionUnavailable(Exception):
    """A process has no FaultService: it was started without --allow-fault-injection."""


async def injection_available(address: str) -> bool:
    """True if the server at `address` serves pullgate.admin.v1.FaultService."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await admin_pb2_grpc.FaultServiceStub(channel).GetFaults(admin_pb2.GetFaultsRequest(), timeout=5)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                return False
            raise
    return True


async def _set_faults(address: str, spec: str) -> str:
    """Replace the faults of the server at `address`; the spec it had before."""
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await admin_pb2_grpc.FaultServiceStub(channel).SetFaults(admin_pb2.SetFaultsRequest(spec=spec),
                                                                          timeout=5)
    return reply.previous.spec


class Actions:
    """Runs one schedule against the processes recorded in `data_dir`, logging each fault into `record`."""

    def __init__(self, data_dir: Path, record: Record, restart_timeout: float = 60.0,
                 overload: Overload | None = None) -> None:
        self._data_dir = data_dir
        self._record = record
        self.overload = overload
        """The spike's worker processes, for a schedule with an overload fault (set before `run`)."""
        self._restart_timeout = restart_timeout
        self._frozen: set[int] = set()
        self._injected: dict[str, str] = {}
        """address -> the spec to put back."""
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
                    previous = await _set_faults(proc.address, fault.server_spec(proc.service))
                except grpc.aio.AioRpcError as error:
                    run.note = f"SetFaults failed: {error.code().name}: {error.details()}"
                    run.end = time.time()
                    return
                self._injected.setdefault(proc.address, previous)
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
        previous = self._injected.pop(address, None)
        if previous is not None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await _set_faults(address, previous)

    async def undo(self) -> None:
        """Thaw every frozen process and put back every server's faults as they were before the run."""
        for pid in list(self._frozen):
            self._thaw(pid)
        for address in list(self._injected):
            await self._restore(address)


__all__ = ["Actions", "InjectionUnavailable", "injection_available"]
