"""How pullgate's servers reach the owners: a resilience Method per owner RPC, and a Downstream per owner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf.descriptor import FileDescriptor

from pullgate.catalog.v1 import catalog_pb2 as catalog
from pullgate.customers.v1 import customers_pb2 as customers
from pullgate.inventory.v1 import inventory_pb2 as inventory
from pullgate.orders.v1 import orders_pb2 as orders
from pullgate.telemetry import client_interceptors
from resilience import Downstream, Method, ResilienceConfig


def _method(file: FileDescriptor, service: str, name: str, request: type[Any], response: type[Any]) -> Any:
    return Method(file.services_by_name[service].methods_by_name[name], request, response)


GET_CUSTOMER: Method[customers.GetCustomerRequest, customers.GetCustomerResponse] = _method(
    customers.DESCRIPTOR, "CustomerService", "GetCustomer", customers.GetCustomerRequest, customers.GetCustomerResponse
)
BATCH_GET_CUSTOMERS: Method[customers.BatchGetCustomersRequest, customers.BatchGetCustomersResponse] = _method(
    customers.DESCRIPTOR,
    "CustomerService",
    "BatchGetCustomers",
    customers.BatchGetCustomersRequest,
    customers.BatchGetCustomersResponse,
)
GET_PRODUCT: Method[catalog.GetProductRequest, catalog.GetProductResponse] = _method(
    catalog.DESCRIPTOR, "CatalogService", "GetProduct", catalog.GetProductRequest, catalog.GetProductResponse
)
BATCH_GET_PRODUCTS: Method[catalog.BatchGetProductsRequest, catalog.BatchGetProductsResponse] = _method(
    catalog.DESCRIPTOR,
    "CatalogService",
    "BatchGetProducts",
    catalog.BatchGetProductsRequest,
    catalog.BatchGetProductsResponse,
)
GET_STOCK: Method[inventory.GetStockRequest, inventory.GetStockResponse] = _method(
    inventory.DESCRIPTOR, "InventoryService", "GetStock", inventory.GetStockRequest, inventory.GetStockResponse
)
BATCH_GET_STOCK: Method[inventory.BatchGetStockRequest, inventory.BatchGetStockResponse] = _method(
    inventory.DESCRIPTOR,
    "InventoryService",
    "BatchGetStock",
    inventory.BatchGetStockRequest,
    inventory.BatchGetStockResponse,
)
RESERVE_STOCK: Method[inventory.ReserveStockRequest, inventory.ReserveStockResponse] = _method(
    inventory.DESCRIPTOR,
    "InventoryService",
    "ReserveStock",
    inventory.ReserveStockRequest,
    inventory.ReserveStockResponse,
)
COMMIT_RESERVATION: Method[inventory.CommitReservationRequest, inventory.CommitReservationResponse] = _method(
    inventory.DESCRIPTOR,
    "InventoryService",
    "CommitReservation",
    inventory.CommitReservationRequest,
    inventory.CommitReservationResponse,
)
RELEASE_RESERVATION: Method[inventory.ReleaseReservationRequest, inventory.ReleaseReservationResponse] = _method(
    inventory.DESCRIPTOR,
    "InventoryService",
    "ReleaseReservation",
    inventory.ReleaseReservationRequest,
    inventory.ReleaseReservationResponse,
)
GET_ORDER: Method[orders.GetOrderRequest, orders.GetOrderResponse] = _method(
    orders.DESCRIPTOR, "OrderService", "GetOrder", orders.GetOrderRequest, orders.GetOrderResponse
)
LIST_ORDERS: Method[orders.ListOrdersRequest, orders.ListOrdersResponse] = _method(
    orders.DESCRIPTOR, "OrderService", "ListOrders", orders.ListOrdersRequest, orders.ListOrdersResponse
)
CREATE_ORDER: Method[orders.CreateOrderRequest, orders.CreateOrderResponse] = _method(
    orders.DESCRIPTOR, "OrderService", "CreateOrder", orders.CreateOrderRequest, orders.CreateOrderResponse
)


def connect(who: str, names: Sequence[str], upstreams: Mapping[str, Sequence[str]],
            config: ResilienceConfig) -> list[Downstream]:
    """A Downstream for each owner in `names`, in that order; ValueError naming any owner without an address."""
    missing = [name for name in names if not upstreams.get(name)]
    if missing:
        raise ValueError(f"{who} needs the address of {', '.join(missing)} (--upstream NAME=HOST:PORT)")
    interceptors = client_interceptors()  # tracing's client span and propagation, when tracing is on
    return [Downstream(name, tuple(upstreams[name]), config.for_downstream(name), interceptors=interceptors)
            for name in names]
