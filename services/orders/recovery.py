"""Settling PENDING orders without a human: at start, and whenever an attempt leaves one PENDING.

Why a loop and not one pass at start: the owners an order needs may be the very processes that died with it, and
they come back in their own time. An order left PENDING may have stock held under its id, so orders keeps driving
it, with a growing pause between passes (capped, so it notices soon after an owner is back), until every order it
knows of is CONFIRMED or CANCELLED. A hold that outlives this (the process dies for good) expires in inventory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pullgate.orders.v1 import orders_pb2
from pullgate.telemetry import recovering
from services.orders.placement import Placement
from services.orders.store import PENDING, OrderStore

log = logging.getLogger("pullgate.services.orders")


@dataclass(frozen=True)
class Backoff:
    """The pause after a pass that left orders PENDING: `initial` seconds, times `multiplier` each pass, at most
    `maximum`; back to `initial` once everything is settled."""

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.multiplier < 1:
            raise ValueError(f"need 0 < initial <= maximum and multiplier >= 1, got {self}")

    def after(self, pause: float) -> float:
        return min(pause * self.multiplier, self.maximum)


class Recovery:
    """Keeps driving the PENDING orders this process knows of until each is CONFIRMED or CANCELLED."""

    def __init__(
        self,
        store: OrderStore,
        placement: Placement,
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._placement = placement
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._unsettled: set[str] = set()
        self._wake = asyncio.Event()
        placement.watch(self.remember)

    def remember(self, order_id: str) -> None:
        """Drive `order_id` until it is settled (called when an attempt left it PENDING)."""
        self._unsettled.add(order_id)
        self._wake.set()

    @property
    def unsettled(self) -> frozenset[str]:
        return frozenset(self._unsettled)

    async def adopt(self) -> None:
        """Take on every order the database holds PENDING (left by a crash, or by a process that gave up)."""
        found = [order.order_id for order in await self._store.pending()]
        if found:
            log.info("recovering %d PENDING order(s): %s", len(found), ", ".join(found))
        self._unsettled.update(found)

    async def run(self) -> None:
        """Adopt the PENDING orders, then drive whatever is unsettled until cancelled."""
        pause = self._backoff.initial
        while True:  # the database may be busy (another replica holds the write lock): try again
            try:
                await self.adopt()
                break
            except Exception as error:
                log.warning("cannot read the PENDING orders: %s; next try in %.1fs", error, pause)
                await self._sleep(pause)
                pause = self._backoff.after(pause)
        pause = self._backoff.initial
        while True:
            self._wake.clear()
            if not self._unsettled:
                await self._wake.wait()
                continue
            left = await self.run_once()
            if not left:
                pause = self._backoff.initial
                continue
            log.warning("%d order(s) still PENDING (%s); next try in %.1fs", len(left), ", ".join(left), pause)
            await self._sleep(pause)
            pause = self._backoff.after(pause)

    async def run_once(self) -> list[str]:
        """Drive every unsettled order once, oldest first; the ids still PENDING after it."""
        left = []
        for order_id in sorted(self._unsettled, key=lambda i: (len(i), i)):
            try:
                with recovering(order_id):
                    # Not waiting: an order another replica is driving is left to it, and looked at next pass.
                    order = await self._placement.drive(order_id, wait=False)
            except Exception as error:  # an owner that cannot answer, a busy database: try again next pass
                log.warning("order %s stays PENDING: %s", order_id, error)
                left.append(order_id)
                continue
            if order.status == PENDING:
                left.append(order_id)
                continue
            self._unsettled.discard(order_id)
            log.info("recovered order %s: %s", order_id, orders_pb2.OrderStatus.Name(order.status))
        return left
