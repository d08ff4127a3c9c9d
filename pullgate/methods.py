"""How pullgate's servers reach the owners: a resilience Method per owner RPC, and a Downstream per owner."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from google.protobuf.descriptor import FileDescriptor

from pullgate import topology
from pullgate.catalog.v1 import catalog_pb2 as catalog
from pullgate.customers.v1 import customers_pb2 as customers
from pullgate.inventory.v1 import inventory_pb2 as inventory
from pullgate.orders.v1 import orders_pb2 as orders
from pullgate.telemetry import client_interceptors
from resilience import SYSTEM_CLOCK, Clock, Downstream, Method, ResilienceConfig


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


class Upstreams(Mapping[str, Downstream]):
    """The resilient clients of one service's upstreams, by the names the topology gives them.

    >>> owners = Upstreams.connect("orders", {"customers": ["127.0.0.1:50051"], ...}, config)
    >>> await owners["customers"].call(GET_CUSTOMER, request)
    """

    def __init__(self, service: str, downstreams: Mapping[str, Downstream]) -> None:
        self.service = service
        self._downstreams = dict(downstreams)

    @classmethod
    def connect(
        cls, service: str, addresses: Mapping[str, Sequence[str]], config: ResilienceConfig,
        clock: Clock = SYSTEM_CLOCK,
    ) -> Upstreams:
        """A Downstream for each upstream the topology gives `service`; ValueError naming any without an address.

        Every Downstream runs its policies on `clock` (tests pass a FakeClock to drive their time)."""
        names = topology.service(service).upstreams
        missing = [name for name in names if not addresses.get(name)]
        if missing:
            raise ValueError(f"{service} needs the address of {', '.join(missing)} (--upstream NAME=HOST:PORT)")
        interceptors = client_interceptors()  # tracing's client span and propagation, when tracing is on
        return cls(service, {name: Downstream(name, tuple(addresses[name]), config.for_downstream(name), clock,
                                              interceptors=interceptors) for name in names})

    def __getitem__(self, name: str) -> Downstream:
        try:
            return self._downstreams[name]
        except KeyError:
            raise KeyError(f"{self.service} does not call {name!r}; its upstreams are "
                           f"{', '.join(self._downstreams)} (pullgate/topology.py)") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._downstreams)

    def __len__(self) -> int:
        return len(self._downstreams)

    async def close(self) -> None:
        for downstream in self._downstreams.values():
            await downstream.close()
