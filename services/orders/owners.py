"""The three owners orders asks while placing an order, each behind a resilience-layer client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pullgate.catalog.v1 import catalog_pb2
from pullgate.customers.v1 import customers_pb2
from pullgate.inventory.v1 import inventory_pb2
from resilience import Downstream, Method, ResilienceConfig

NAMES = ("customers", "catalog", "inventory")

_CUSTOMERS = customers_pb2.DESCRIPTOR.services_by_name["CustomerService"].methods_by_name
_CATALOG = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].methods_by_name
_INVENTORY = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].methods_by_name

GET_CUSTOMER = Method(
    _CUSTOMERS["GetCustomer"], customers_pb2.GetCustomerRequest, customers_pb2.GetCustomerResponse
)
BATCH_GET_PRODUCTS = Method(
    _CATALOG["BatchGetProducts"], catalog_pb2.BatchGetProductsRequest, catalog_pb2.BatchGetProductsResponse
)
RESERVE_STOCK = Method(
    _INVENTORY["ReserveStock"], inventory_pb2.ReserveStockRequest, inventory_pb2.ReserveStockResponse
)
RELEASE_RESERVATION = Method(
    _INVENTORY["ReleaseReservation"],
    inventory_pb2.ReleaseReservationRequest,
    inventory_pb2.ReleaseReservationResponse,
)


@dataclass(frozen=True)
class Owners:
    customers: Downstream
    catalog: Downstream
    inventory: Downstream

    @classmethod
    def connect(cls, upstreams: Mapping[str, Sequence[str]], config: ResilienceConfig) -> Owners:
        """Clients for the owners at `upstreams`; ValueError naming any owner without an address."""
        missing = [name for name in NAMES if not upstreams.get(name)]
        if missing:
            raise ValueError(f"orders needs the address of {', '.join(missing)} (--upstream NAME=HOST:PORT)")
        return cls(*(Downstream(name, tuple(upstreams[name]), config.for_downstream(name)) for name in NAMES))

    async def close(self) -> None:
        for downstream in (self.customers, self.catalog, self.inventory):
            await downstream.close()
