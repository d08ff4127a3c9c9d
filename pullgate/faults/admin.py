"""pullgate.admin.v1.FaultService: read and change a server's faults at run time.

Why a service and not a signal or a file: a chaos run changes one process's faults while load runs, and gets the
previous faults back to restore them. It is registered only with --allow-fault-injection (docs/faults.md).
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from pullgate.admin.v1 import admin_pb2, admin_pb2_grpc
from pullgate.errors import InvalidArgument
from pullgate.faults.grammar import parse_faults
from pullgate.faults.injector import FaultInjector
from pullgate.faults.spec import FaultSpec, FaultSpecError

__all__ = ["FaultService"]

log = logging.getLogger("pullgate.faults")


class FaultService(admin_pb2_grpc.FaultServiceServicer):
    """pullgate.admin.v1.FaultService: read and change the faults at run time (only with --allow-fault-injection)."""

    def __init__(self, injector: FaultInjector) -> None:
        self._injector = injector

    def _faults(self, spec: FaultSpec) -> admin_pb2.Faults:
        name = self._injector.server_name
        return admin_pb2.Faults(spec=str(spec), active_spec=str(spec.for_server(name)), server_name=name)

    async def GetFaults(
        self, request: admin_pb2.GetFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.GetFaultsResponse:
        return admin_pb2.GetFaultsResponse(faults=self._faults(self._injector.spec))

    async def SetFaults(
        self, request: admin_pb2.SetFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.SetFaultsResponse:
        try:
            spec = parse_faults(request.spec)
        except FaultSpecError as error:
            raise InvalidArgument("spec", str(error)) from None
        previous = self._injector.replace(spec)
        log.warning("faults set to %r by %s (were %r)", str(spec), context.peer(), str(previous))
        return admin_pb2.SetFaultsResponse(faults=self._faults(spec), previous=self._faults(previous))

    async def ClearFaults(
        self, request: admin_pb2.ClearFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> admin_pb2.ClearFaultsResponse:
        previous = self._injector.replace(FaultSpec())
        log.warning("faults cleared by %s (were %r)", context.peer(), str(previous))
        return admin_pb2.ClearFaultsResponse(previous=self._faults(previous))
