"""Placing an order: record it PENDING, ask the owners, reserve stock, then CONFIRMED or CANCELLED.

The steps, and why in this order:
1. `OrderStore.begin` records the order PENDING under its idempotency key (or finds the one recorded before),
   so a crash from here on leaves an order that `recover()` or a replay drives to an end state.
2. customers.GetCustomer and catalog.BatchGetProducts, strong (max_staleness=0): a write must not rest on
   cached data. Nothing is held yet, so a refusal here costs nothing to undo.
3. inventory.ReserveStock with reservation_id = order_id, so any number of retries, replays or recoveries
   of one order hold its stock once. `reserve_attempted` is written first, so a cancellation later knows
   that stock may be held and releases it.
4. CONFIRMED only after the reservation is held.

A refusal by an owner (NOT_FOUND for the customer or a sku, FAILED_PRECONDITION for too little stock)
cancels the order, releases anything held under its id, and answers FAILED_PRECONDITION with the owner's
words ("customer '42' not found"): the request was well formed, the state of the world refused it; NOT_FOUND
would read as "the order was not found". The reason is stored, so replaying the key gives the same answer.
An owner that cannot answer (UNAVAILABLE, DEADLINE_EXCEEDED, ...) leaves the order PENDING and the error
propagates, naming the owner; the order is never CONFIRMED without its reservation.

One order is driven by at most one task in this process: concurrent calls with one key await the same task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import grpc

from pullgate.catalog.v1 import catalog_pb2
from pullgate.customers.v1 import customers_pb2
from pullgate.errors import FailedPrecondition
from pullgate.inventory.v1 import inventory_pb2
from resilience import ResilienceError, StatusError
from services.orders.owners import BATCH_GET_PRODUCTS, GET_CUSTOMER, RELEASE_RESERVATION, RESERVE_STOCK, Owners
from services.orders.store import CANCELLED, CONFIRMED, PENDING, OrderRow, OrderStore

log = logging.getLogger("pullgate.services.orders")

_REFUSALS = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


def _refusal(error: ResilienceError) -> str | None:
    """The owner's reason if `error` is its answer that the order cannot be placed; None if it did not answer."""
    if error.code not in _REFUSALS:
        return None
    return (error.details if isinstance(error, StatusError) else "") or error.reason


def _settled(order: OrderRow) -> OrderRow:
    """A CONFIRMED order as is; a CANCELLED one as the refusal that cancelled it."""
    if order.status == CANCELLED:
        raise FailedPrecondition(order.cancel_reason or f"order {order.order_id!r} was cancelled")
    return order


class Placement:
    """Drives orders from PENDING to CONFIRMED or CANCELLED with the owners' agreement."""

    def __init__(self, store: OrderStore, owners: Owners) -> None:
        self._store = store
        self._owners = owners
        self._driving: dict[str, asyncio.Task[OrderRow]] = {}

    async def place(self, key: str, customer_id: str, lines: Sequence[tuple[str, int]]) -> OrderRow:
        """The order under `key`, placed now or before; FailedPrecondition if an owner refused it."""
        order = await self._store.begin(key, customer_id, lines)
        return _settled(await self._drive(order))

    async def recover(self) -> None:
        """Drive every PENDING order (left by a crash or an unreachable owner) to an end state, once each."""
        for order in await self._store.pending():
            try:
                final = await self._drive(order)
            except ResilienceError as error:
                log.warning("order %s stays PENDING: %s", order.order_id, error)
            else:
                log.info("recovered order %s: %s", order.order_id, final.status)

    async def close(self) -> None:
        """Stop driving orders (the server has stopped taking calls); they stay PENDING for the next start."""
        tasks = list(self._driving.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drive(self, order: OrderRow) -> OrderRow:
        if order.status != PENDING:
            return order
        task = self._driving.get(order.order_id)
        if task is None:
            task = asyncio.create_task(self._complete(order.order_id), name=f"order-{order.order_id}")
            self._driving[order.order_id] = task
            task.add_done_callback(lambda done: self._forget(order.order_id, done))
        # Shielded: a caller that gives up does not stop the work the other callers with this key wait on.
        return await asyncio.shield(task)

    def _forget(self, order_id: str, task: asyncio.Task[OrderRow]) -> None:
        if self._driving.get(order_id) is task:
            del self._driving[order_id]
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited any more is not logged as lost

    async def _complete(self, order_id: str) -> OrderRow:
        order = await self._store.get(order_id)  # fresh: a task before this one may have finished it
        if order.status != PENDING:
            return order
        owners = self._owners
        try:
            await owners.customers.call(
                GET_CUSTOMER, customers_pb2.GetCustomerRequest(customer_id=order.customer_id), max_staleness=0.0
            )
            await owners.catalog.call(
                BATCH_GET_PRODUCTS,
                catalog_pb2.BatchGetProductsRequest(skus=[sku for sku, _ in order.lines]),
                max_staleness=0.0,
            )
        except ResilienceError as error:
            reason = _refusal(error)
            if reason is None:
                raise
            return await self._cancel(order, reason)
        if not order.reserve_attempted:
            await self._store.mark_reserve_attempted(order_id)
        lines = [inventory_pb2.ReservationLine(sku=sku, quantity=quantity) for sku, quantity in order.lines]
        try:
            await owners.inventory.call(
                RESERVE_STOCK, inventory_pb2.ReserveStockRequest(reservation_id=order_id, lines=lines)
            )
        except ResilienceError as error:
            reason = _refusal(error)
            if reason is None:
                raise
            # All or none: a refused reservation holds nothing (a held one would have been replayed as a success).
            return await self._store.finish(order_id, CANCELLED, reason)
        return await self._store.finish(order_id, CONFIRMED)

    async def _cancel(self, order: OrderRow, reason: str) -> OrderRow:
        if order.reserve_attempted:
            # An earlier attempt may hold stock under this order's id; give it back before saying CANCELLED.
            await self._owners.inventory.call(
                RELEASE_RESERVATION, inventory_pb2.ReleaseReservationRequest(reservation_id=order.order_id)
            )
        return await self._store.finish(order.order_id, CANCELLED, reason)
