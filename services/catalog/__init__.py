"""The catalog service: owns products (title, price) in `<data_dir>/catalog.db` (or PostgreSQL: `--database-url`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from pullgate.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from pullgate.serving import Binding, ServeOptions
from services.catalog.servicer import CatalogServicer
from services.catalog.store import ProductStore

__all__ = ["app"]

SERVICE = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name


@contextlib.asynccontextmanager
async def app(options: ServeOptions) -> AsyncIterator[Sequence[Binding]]:
    """Open (create, migrate, seed) the database and yield the CatalogService binding; close it on exit."""
    store = await ProductStore.open(options.store)
    try:
        yield [Binding(SERVICE, catalog_pb2_grpc.add_CatalogServiceServicer_to_server, CatalogServicer(store))]
    finally:
        await store.close()
