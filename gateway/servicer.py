"""The GatewayService: validates a request, builds its view from the owners, and forwards writes."""

from __future__ import annotations

from typing import Any

import grpc

from gateway.reads import resolve
from gateway.views import customer_overview, order_view
from pullgate import methods
from pullgate.config import GatewayConfig
from pullgate.errors import InvalidArgument
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.methods import Upstreams
from pullgate.orders.v1 import orders_pb2
from pullgate.telemetry import annotate_view

_Context = grpc.aio.ServicerContext[Any, Any]


def _require_id(field: str, value: str) -> None:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > 128:
        raise InvalidArgument(field, "must be at most 128 characters")


def _check_page_size(page_size: int) -> None:
    if not 0 <= page_size <= 100:
        raise InvalidArgument("page_size", "must be between 0 and 100")


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """Joins data from the owners into views; stores nothing."""

    def __init__(self, owners: Upstreams, config: GatewayConfig) -> None:
        self._owners = owners
        self._config = config

    async def GetOrderView(self, request: pb.GetOrderViewRequest, context: _Context) -> pb.GetOrderViewResponse:
        _require_id("order_id", request.order_id)
        mode = resolve(request.read)
        view, provenance = await order_view(self._owners, request.order_id, mode, self._config.response_margin)
        annotate_view(mode.name, provenance.entities, provenance.statuses, provenance.degraded)
        return pb.GetOrderViewResponse(view=view, parts=provenance.statuses, degraded=provenance.degraded)

    async def GetCustomerOverview(
        self, request: pb.GetCustomerOverviewRequest, context: _Context
    ) -> pb.GetCustomerOverviewResponse:
        _require_id("customer_id", request.customer_id)
        _check_page_size(request.page_size)
        mode = resolve(request.read)
        overview, provenance = await customer_overview(
            self._owners, request.customer_id, request.page_size, mode, self._config.response_margin
        )
        annotate_view(mode.name, provenance.entities, provenance.statuses, provenance.degraded)
        return pb.GetCustomerOverviewResponse(overview=overview, parts=provenance.statuses,
                                              degraded=provenance.degraded)

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: _Context) -> pb.PlaceOrderResponse:
        # orders validates the request in full; forwarding it unchanged keeps one set of rules.
        result = await self._owners["orders"].call(
            methods.CREATE_ORDER,
            orders_pb2.CreateOrderRequest(
                idempotency_key=request.idempotency_key, customer_id=request.customer_id, lines=request.lines
            ),
            max_staleness=0.0,
        )
        return pb.PlaceOrderResponse(order=result.value.order)
