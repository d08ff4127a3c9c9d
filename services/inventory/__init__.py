"""The inventory service: owns stock and reservations in `<data_dir>/inventory.db`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from pullgate.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from pullgate.serving import Binding, ServeOptions
from services.inventory.servicer import InventoryServicer
from services.inventory.store import InventoryStore

__all__ = ["app"]

SERVICE = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name


@contextlib.asynccontextmanager
async def app(options: ServeOptions) -> AsyncIterator[Sequence[Binding]]:
    """Open (create, migrate, seed) the database and yield the InventoryService binding; close it on exit."""
    store = await InventoryStore.open(options.data_dir / "inventory.db")
    try:
        yield [Binding(SERVICE, inventory_pb2_grpc.add_InventoryServiceServicer_to_server, InventoryServicer(store))]
    finally:
        await store.close()
