"""The orders service: owns orders in `<data_dir>/orders.db` (or PostgreSQL: `--database-url`),
placing them with customers, catalog and inventory.

Needs `options.upstreams` for customers, catalog and inventory. In the background it drives every order left
PENDING (by a crash or an unreachable owner) to CONFIRMED or CANCELLED, retrying until the owners answer
(`services.orders.recovery`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from pullgate.config import load
from pullgate.methods import Upstreams
from pullgate.orders.v1 import orders_pb2, orders_pb2_grpc
from pullgate.serving import Binding, ServeOptions
from services.orders.placement import Placement
from services.orders.recovery import Recovery
from services.orders.servicer import OrderServicer
from services.orders.store import OrderStore

__all__ = ["app"]

SERVICE = orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


@contextlib.asynccontextmanager
async def app(options: ServeOptions) -> AsyncIterator[Sequence[Binding]]:
    """Open (create, migrate, seed) the database, connect to the owners, start recovery, yield the binding."""
    config = load(options.config_file).resilience
    async with contextlib.AsyncExitStack() as stack:
        owners = Upstreams.connect(options.name, options.upstreams, config,
                                   channels=options.security.channels)
        stack.push_async_callback(owners.close)
        store = await OrderStore.open(options.store)
        stack.push_async_callback(store.close)
        placement = Placement(store, owners)
        stack.push_async_callback(placement.close)
        recovery = asyncio.create_task(Recovery(store, placement).run(), name="orders-recovery")
        stack.push_async_callback(_cancel, recovery)
        yield [Binding(SERVICE, orders_pb2_grpc.add_OrderServiceServicer_to_server, OrderServicer(store, placement))]


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
