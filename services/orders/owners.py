"""The three owners orders asks while placing an order, each behind a resilience-layer client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pullgate import methods
from pullgate.methods import (
    BATCH_GET_PRODUCTS,
    COMMIT_RESERVATION,
    GET_CUSTOMER,
    RELEASE_RESERVATION,
    RESERVE_STOCK,
)
from resilience import Downstream, ResilienceConfig

NAMES = ("customers", "catalog", "inventory")
__all__ = [
    "BATCH_GET_PRODUCTS",
    "COMMIT_RESERVATION",
    "GET_CUSTOMER",
    "NAMES",
    "RELEASE_RESERVATION",
    "RESERVE_STOCK",
    "Owners",
]


@dataclass(frozen=True)
class Owners:
    customers: Downstream
    catalog: Downstream
    inventory: Downstream

    @classmethod
    def connect(cls, upstreams: Mapping[str, Sequence[str]], config: ResilienceConfig) -> Owners:
        """Clients for the owners at `upstreams`; ValueError naming any owner without an address."""
        return cls(*methods.connect("orders", NAMES, upstreams, config))

    async def close(self) -> None:
        for downstream in (self.customers, self.catalog, self.inventory):
            await downstream.close()
