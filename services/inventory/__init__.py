"""The inventory service: owns stock and reservations in `<data_dir>/inventory.db` (or PostgreSQL: `--database-url`).

A reservation is held for `[inventory] reservation_hold` seconds of the config file (default 60;
$PULLGATE_RESERVATION_HOLD overrides) unless committed; a background task
releases the holds that run out (see `services.inventory.holds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from pullgate.config import load
from pullgate.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from pullgate.serving import Binding, ServeOptions
from services.inventory.holds import hold_from_env, sweep_forever, sweep_interval
from services.inventory.servicer import InventoryServicer
from services.inventory.store import InventoryStore

__all__ = ["app"]

SERVICE = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name

log = logging.getLogger("pullgate.services.inventory")


@contextlib.asynccontextmanager
async def app(options: ServeOptions) -> AsyncIterator[Sequence[Binding]]:
    """Open (create, migrate, seed) the database, start the sweeper, yield the binding; stop both on exit."""
    hold = hold_from_env(default=load(options.config_file).inventory.reservation_hold)
    store = await InventoryStore.open(options.store, hold)
    log.info("reservations are held for %gs unless committed", hold)
    sweeper = asyncio.create_task(sweep_forever(store, sweep_interval(hold)), name="inventory-sweeper")
    try:
        yield [Binding(SERVICE, inventory_pb2_grpc.add_InventoryServiceServicer_to_server, InventoryServicer(store))]
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await store.close()
