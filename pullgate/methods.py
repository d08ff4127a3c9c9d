"""How pullgate's servers reach the owners: a resilience Method per owner RPC, and a Downstream per owner."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from google.protobuf import descriptor_pool

from pullgate import topology
from pullgate.catalog.v1 import catalog_pb2 as catalog
from pullgate.customers.v1 import customers_pb2 as customers
from pullgate.inventory.v1 import inventory_pb2 as inventory
from pullgate.orders.v1 import orders_pb2 as orders
from pullgate.telemetry import client_interceptors
from resilience import INSECURE, SYSTEM_CLOCK, ChannelFactory, Clock, Downstream, Method, ResilienceConfig


def _method(module: Any, name: str) -> Any:
    """The Method for RPC `name` of the one service in a generated module, with the module's message classes."""
    (service,) = module.DESCRIPTOR.services_by_name.values()
    descriptor = service.methods_by_name[name]
    return Method(descriptor, getattr(module, descriptor.input_type.name), getattr(module, descriptor.output_type.name))


GET_CUSTOMER: Method[customers.GetCustomerRequest, customers.GetCustomerResponse] = _method(customers, "GetCustomer")
BATCH_GET_CUSTOMERS: Method[customers.BatchGetCustomersRequest, customers.BatchGetCustomersResponse] = (
    _method(customers, "BatchGetCustomers"))
GET_PRODUCT: Method[catalog.GetProductRequest, catalog.GetProductResponse] = _method(catalog, "GetProduct")
BATCH_GET_PRODUCTS: Method[catalog.BatchGetProductsRequest, catalog.BatchGetProductsResponse] = (
    _method(catalog, "BatchGetProducts"))
GET_STOCK: Method[inventory.GetStockRequest, inventory.GetStockResponse] = _method(inventory, "GetStock")
BATCH_GET_STOCK: Method[inventory.BatchGetStockRequest, inventory.BatchGetStockResponse] = (
    _method(inventory, "BatchGetStock"))
RESERVE_STOCK: Method[inventory.ReserveStockRequest, inventory.ReserveStockResponse] = (
    _method(inventory, "ReserveStock"))
COMMIT_RESERVATION: Method[inventory.CommitReservationRequest, inventory.CommitReservationResponse] = (
    _method(inventory, "CommitReservation"))
RELEASE_RESERVATION: Method[inventory.ReleaseReservationRequest, inventory.ReleaseReservationResponse] = (
    _method(inventory, "ReleaseReservation"))
GET_ORDER: Method[orders.GetOrderRequest, orders.GetOrderResponse] = _method(orders, "GetOrder")
LIST_ORDERS: Method[orders.ListOrdersRequest, orders.ListOrdersResponse] = _method(orders, "ListOrders")
CREATE_ORDER: Method[orders.CreateOrderRequest, orders.CreateOrderResponse] = _method(orders, "CreateOrder")


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
        clock: Clock = SYSTEM_CLOCK, *, channels: ChannelFactory = INSECURE,
    ) -> Upstreams:
        """A Downstream for each upstream the topology gives `service`; ValueError naming any without an address.

        `addresses[name]` is the owner's replicas (`HOST:PORT`s), or one DNS name (`dns:///HOST:PORT`) whose
        addresses are its replicas, resolved again as they come and go (docs/resilience.md, Discovery by DNS).

        Every Downstream runs its policies on `clock` (tests pass a FakeClock to drive their time) and reaches its
        replicas over `channels` (plaintext unless given the service's TLS, pullgate.security.tls.TlsChannels)."""
        names = topology.service(service).upstreams
        missing = [name for name in names if not addresses.get(name)]
        if missing:
            raise ValueError(f"{service} needs the address of {', '.join(missing)} "
                             "(--upstream NAME=HOST:PORT[,HOST:PORT] or NAME=dns:///HOST:PORT)")
        interceptors = client_interceptors()  # tracing's client span and propagation, when tracing is on
        downstreams = {name: Downstream(name, tuple(addresses[name]), config.for_downstream(name), clock,
                                        interceptors=interceptors, channels=channels) for name in names}
        for name, downstream in downstreams.items():
            downstream.expect(descriptor_pool.Default().FindServiceByName(topology.service(name).contract)
                              .methods_by_name)
        return cls(service, downstreams)

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
