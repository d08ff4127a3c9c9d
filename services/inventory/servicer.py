"""InventoryService: validates requests, asks the store, and maps rows to messages."""

from __future__ import annotations

from typing import Any

import grpc

from pullgate.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from services import _time
from services._validation import require, require_ids, require_key, require_lines
from services.inventory.store import InventoryStore, StockRow

Context = grpc.aio.ServicerContext[Any, Any]


def to_message(row: StockRow) -> inventory_pb2.Stock:
    return inventory_pb2.Stock(sku=row.sku, available=row.available, reserved=row.reserved)


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, store: InventoryStore) -> None:
        self._store = store

    async def GetStock(
        self, request: inventory_pb2.GetStockRequest, context: Context
    ) -> inventory_pb2.GetStockResponse:
        [row] = await self._store.get_many([require("sku", request.sku)])
        return inventory_pb2.GetStockResponse(stock=to_message(row))

    async def BatchGetStock(
        self, request: inventory_pb2.BatchGetStockRequest, context: Context
    ) -> inventory_pb2.BatchGetStockResponse:
        rows = await self._store.get_many(require_ids("skus", request.skus))
        return inventory_pb2.BatchGetStockResponse(stocks=[to_message(row) for row in rows])

    async def ReserveStock(
        self, request: inventory_pb2.ReserveStockRequest, context: Context
    ) -> inventory_pb2.ReserveStockResponse:
        reservation_id = require_key("reservation_id", request.reservation_id)
        lines = require_lines("lines", request.lines)
        reservation = await self._store.reserve(reservation_id, lines)
        response = inventory_pb2.ReserveStockResponse(
            reservation_id=reservation_id, stocks=[to_message(row) for row in reservation.stocks]
        )
        if reservation.expire_time is not None:
            response.expire_time.CopyFrom(_time.to_timestamp(reservation.expire_time))
        return response

    async def CommitReservation(
        self, request: inventory_pb2.CommitReservationRequest, context: Context
    ) -> inventory_pb2.CommitReservationResponse:
        committed = await self._store.commit(require("reservation_id", request.reservation_id))
        return inventory_pb2.CommitReservationResponse(committed=committed)

    async def ReleaseReservation(
        self, request: inventory_pb2.ReleaseReservationRequest, context: Context
    ) -> inventory_pb2.ReleaseReservationResponse:
        released = await self._store.release(require("reservation_id", request.reservation_id))
        return inventory_pb2.ReleaseReservationResponse(released=released)
