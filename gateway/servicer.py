"""The GatewayService: validates a request, checks what its caller may see, builds its view, and forwards writes.

Object-level authorization (OWASP API1) happens here, per request, with the caller its token named
(pullgate.security.authz.current_caller; None where callers are not authenticated). Another customer's data is
answered exactly as data that does not exist (NOT_FOUND, same words, same trailers), so ids cannot be probed; an
order placed for another customer is PERMISSION_DENIED. The caches below hold the owners' answers, which are the
same for every caller (every owner call is made with the gateway's own identity): what a caller may see is decided
after the fetch, never by what happens to be cached.
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway.reads import resolve
from gateway.views import customer_overview, order_view
from pullgate import methods
from pullgate.config import GatewayConfig
from pullgate.errors import InvalidArgument, PermissionDenied
from pullgate.gateway.v1 import gateway_pb2 as pb
from pullgate.gateway.v1 import gateway_pb2_grpc
from pullgate.methods import Upstreams
from pullgate.orders.v1 import orders_pb2
from pullgate.security.authz import current_caller, refused
from pullgate.telemetry import annotate_view
from resilience import StatusError

_Context = grpc.aio.ServicerContext[Any, Any]


def _require_id(field: str, value: str) -> None:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > 128:
        raise InvalidArgument(field, "must be at most 128 characters")


def _check_page_size(page_size: int) -> None:
    if not 0 <= page_size <= 100:
        raise InvalidArgument("page_size", "must be between 0 and 100")


def _not_found(owner: str, kind: str, key: str, method: str) -> StatusError:
    """What owner `owner` answers for a `kind` that does not exist, word for word (pullgate.errors.NotFound), for
    one that exists but is not the caller's to see."""
    refused(method, "not_found")
    return StatusError(grpc.StatusCode.NOT_FOUND, owner, f"{kind} {key!r} not found")


def _visible(customer_id: str) -> bool:
    caller = current_caller()
    return caller is None or caller.may_see_customer(customer_id)


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    """Joins data from the owners into views; stores nothing."""

    def __init__(self, owners: Upstreams, config: GatewayConfig) -> None:
        self._owners = owners
        self._config = config

    async def GetOrderView(self, request: pb.GetOrderViewRequest, context: _Context) -> pb.GetOrderViewResponse:
        _require_id("order_id", request.order_id)
        mode = resolve(request.read)
        view, provenance = await order_view(self._owners, request.order_id, mode, self._config.response_margin,
                                            visible=_visible)
        if view.HasField("order") and not _visible(view.order.customer_id):  # order_view stopped at the order
            raise _not_found("orders", "order", request.order_id, "/pullgate.gateway.v1.GatewayService/GetOrderView")
        annotate_view(mode.name, provenance.entities, provenance.statuses, provenance.degraded)
        return pb.GetOrderViewResponse(view=view, parts=provenance.statuses, degraded=provenance.degraded)

    async def GetCustomerOverview(
        self, request: pb.GetCustomerOverviewRequest, context: _Context
    ) -> pb.GetCustomerOverviewResponse:
        _require_id("customer_id", request.customer_id)
        _check_page_size(request.page_size)
        if not _visible(request.customer_id):
            raise _not_found("customers", "customer", request.customer_id,
                             "/pullgate.gateway.v1.GatewayService/GetCustomerOverview")
        mode = resolve(request.read)
        overview, provenance = await customer_overview(
            self._owners, request.customer_id, request.page_size, mode, self._config.response_margin
        )
        annotate_view(mode.name, provenance.entities, provenance.statuses, provenance.degraded)
        return pb.GetCustomerOverviewResponse(overview=overview, parts=provenance.statuses,
                                              degraded=provenance.degraded)

    async def PlaceOrder(self, request: pb.PlaceOrderRequest, context: _Context) -> pb.PlaceOrderResponse:
        caller = current_caller()
        if caller is not None and not caller.acts_for(request.customer_id):
            refused("/pullgate.gateway.v1.GatewayService/PlaceOrder", "forbidden")
            raise PermissionDenied(f"{caller.describe()} may not place orders for customer "
                                   f"{request.customer_id!r}: a token places orders only for its own customer")
        # orders validates the request in full; forwarding it unchanged keeps one set of rules.
        result = await self._owners["orders"].call(
            methods.CREATE_ORDER,
            orders_pb2.CreateOrderRequest(
                idempotency_key=request.idempotency_key, customer_id=request.customer_id, lines=request.lines
            ),
            max_staleness=0.0,
        )
        return pb.PlaceOrderResponse(order=result.value.order)
