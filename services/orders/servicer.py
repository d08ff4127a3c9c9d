"""OrderService: validates requests, reads orders from the store, and places new ones through Placement."""

from __future__ import annotations

from typing import Any

import grpc

from pullgate.errors import InvalidArgument
from pullgate.orders.v1 import orders_pb2, orders_pb2_grpc
from services import _time
from services._validation import require, require_key, require_lines
from services.orders.placement import Placement
from services.orders.store import OrderRow, OrderStore

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100

Context = grpc.aio.ServicerContext[Any, Any]


def to_message(row: OrderRow) -> orders_pb2.Order:
    return orders_pb2.Order(
        order_id=row.order_id,
        customer_id=row.customer_id,
        status=row.status,
        lines=[orders_pb2.OrderLine(sku=sku, quantity=quantity) for sku, quantity in row.lines],
        create_time=_time.to_timestamp(row.create_time),
    )


class OrderServicer(orders_pb2_grpc.OrderServiceServicer):
    def __init__(self, store: OrderStore, placement: Placement) -> None:
        self._store = store
        self._placement = placement

    async def GetOrder(self, request: orders_pb2.GetOrderRequest, context: Context) -> orders_pb2.GetOrderResponse:
        row = await self._store.get(require("order_id", request.order_id))
        return orders_pb2.GetOrderResponse(order=to_message(row))

    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: Context
    ) -> orders_pb2.ListOrdersResponse:
        customer_id = require("customer_id", request.customer_id)
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        page = await self._store.page(customer_id, request.page_size or DEFAULT_PAGE_SIZE, request.page_token)
        return orders_pb2.ListOrdersResponse(
            orders=[to_message(row) for row in page.orders], next_page_token=page.next_page_token
        )

    async def CreateOrder(
        self, request: orders_pb2.CreateOrderRequest, context: Context
    ) -> orders_pb2.CreateOrderResponse:
        key = require_key("idempotency_key", request.idempotency_key)
        customer_id = require("customer_id", request.customer_id)
        lines = require_lines("lines", request.lines)
        row = await self._placement.place(key, customer_id, lines)
        return orders_pb2.CreateOrderResponse(order=to_message(row))
