"""The customers service: owns people (name, unique email) in `<data_dir>/customers.db` (or PostgreSQL)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from pullgate.customers.v1 import customers_pb2, customers_pb2_grpc
from pullgate.serving import Binding, ServeOptions
from services.customers.servicer import CustomerServicer
from services.customers.store import CustomerStore

__all__ = ["app"]

SERVICE = customers_pb2.DESCRIPTOR.services_by_name["CustomerService"].full_name


@contextlib.asynccontextmanager
async def app(options: ServeOptions) -> AsyncIterator[Sequence[Binding]]:
    """Open (create, migrate, seed) the database and yield the CustomerService binding; close it on exit."""
    store = await CustomerStore.open(options.store)
    try:
        yield [Binding(SERVICE, customers_pb2_grpc.add_CustomerServiceServicer_to_server, CustomerServicer(store))]
    finally:
        await store.close()
