"""Placing an order: record it PENDING, ask the owners, hold stock, commit the hold, then CONFIRMED or CANCELLED.

The steps, and why in this order:
1. `OrderStore.begin` records the order PENDING under its idempotency key (or finds the one recorded before),
   so a crash from here on leaves an order that recovery or a replay drives to an end state.
2. customers.GetCustomer and catalog.BatchGetProducts, strong (max_staleness=0): a write must not rest on
   cached data. Nothing is held yet, so a refusal here costs nothing to undo.
3. inventory.ReserveStock with reservation_id = order_id, so any number of retries, replays or recoveries
   of one order hold its stock once. `reserve_attempted` is written first, so a cancellation later knows
   that stock may be held and releases it. The reservation is only held: if this process dies and nobody
   comes back for it, inventory releases it when its hold runs out.
4. inventory.CommitReservation(order_id): the hold becomes permanent. A hold that ran out first is refused
   (FAILED_PRECONDITION), and so is a replayed ReserveStock of it, so the order is then CANCELLED: an order is
   never CONFIRMED on stock that went back to the shelf.
5. CONFIRMED only after the commit. A crash between 4 and 5 leaves a committed reservation and a PENDING order;
   the replayed reserve and commit succeed, so recovery confirms it.

A refusal by an owner (NOT_FOUND for the customer or a sku, FAILED_PRECONDITION for too little stock or an
expired hold) cancels the order, releases anything held under its id, and answers FAILED_PRECONDITION with the
owner's words ("customer '42' not found"): the request was well formed, the state of the world refused it;
NOT_FOUND would read as "the order was not found". The reason is stored, so replaying the key gives the same
answer. An owner that cannot answer (UNAVAILABLE, DEADLINE_EXCEEDED, ...) leaves the order PENDING and the error
propagates, naming the owner; the watchers (`services.orders.recovery`) are told, so orders keeps driving it.

One order is driven by at most one task in this process: concurrent calls with one key await the same task.
Other processes sharing the database (`pullgate up --replicas N`) may drive the same order at the same time;
every step is idempotent on the order id and the end state is written only over PENDING, so they agree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import grpc

from pullgate.catalog.v1 import catalog_pb2
from pullgate.customers.v1 import customers_pb2
from pullgate.errors import FailedPrecondition
from pullgate.inventory.v1 import inventory_pb2
from pullgate.methods import (
    BATCH_GET_PRODUCTS,
    COMMIT_RESERVATION,
    GET_CUSTOMER,
    RELEASE_RESERVATION,
    RESERVE_STOCK,
    Upstreams,
)
from pullgate.telemetry import placement_step
from resilience import ResilienceError, StatusError
from services.orders.store import CANCELLED, CONFIRMED, PENDING, OrderRow, OrderStore

log = logging.getLogger("pullgate.services.orders")

_REFUSALS = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


def _reason(error: ResilienceError) -> str:
    """The owner's reason if `error` is its answer that the order cannot be placed; re-raised if it did not answer."""
    if error.code not in _REFUSALS:
        raise error
    return (error.details if isinstance(error, StatusError) else "") or error.reason


def _settled(order: OrderRow) -> OrderRow:
    """A CONFIRMED order as is; a CANCELLED one as the refusal that cancelled it."""
    if order.status == CANCELLED:
        raise FailedPrecondition(order.cancel_reason or f"order {order.order_id!r} was cancelled")
    return order


class Placement:
    """Drives orders from PENDING to CONFIRMED or CANCELLED with the owners' agreement."""

    def __init__(self, store: OrderStore, owners: Upstreams) -> None:
        self._store = store
        self._owners = owners
        self._driving: dict[str, asyncio.Task[OrderRow]] = {}
        self._watchers: list[Callable[[str], None]] = []

    def watch(self, left_pending: Callable[[str], None]) -> None:
        """Call `left_pending(order_id)` whenever an attempt to drive an order ends with it still PENDING."""
        self._watchers.append(left_pending)

    async def place(self, key: str, customer_id: str, lines: Sequence[tuple[str, int]]) -> OrderRow:
        """The order under `key`, placed now or before; FailedPrecondition if an owner refused it."""
        order = await self._store.begin(key, customer_id, lines)
        placement_step("pending", order.order_id)
        return _settled(await self._drive(order))

    async def drive(self, order_id: str, *, wait: bool = True) -> OrderRow:
        """Drive the order to an end state if it is PENDING; the order as it then stands.

        Only one process drives an order at a time (`OrderStore.claim`): with `wait`, this waits for another
        that drives it; without, the order is returned as it stands (PENDING, most likely) and left to that one.
        Raises ResilienceError (the order stays PENDING) if an owner could not answer.
        """
        return await self._drive(await self._store.get(order_id), wait)

    async def close(self) -> None:
        """Stop driving orders (the server has stopped taking calls); they stay PENDING for the next start."""
        tasks = list(self._driving.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drive(self, order: OrderRow, wait: bool = True) -> OrderRow:
        if order.status != PENDING:
            return order
        task = self._driving.get(order.order_id)
        if task is None:
            task = asyncio.create_task(self._claimed(order.order_id, wait), name=f"order-{order.order_id}")
            self._driving[order.order_id] = task
            task.add_done_callback(lambda done: self._forget(order.order_id, done))
        # Shielded: a caller that gives up does not stop the work the other callers with this key wait on.
        return await asyncio.shield(task)

    def _forget(self, order_id: str, task: asyncio.Task[OrderRow]) -> None:
        if self._driving.get(order_id) is task:
            del self._driving[order_id]
        if task.cancelled():
            return
        if task.exception() is not None:  # retrieved here, so an error nobody awaited any more is not logged as lost
            for watcher in self._watchers:
                watcher(order_id)

    async def _claimed(self, order_id: str, wait: bool) -> OrderRow:
        """`_complete` while holding the order's claim, so two processes never drive one order at once (on SQLite
        every claim is granted, and the conditional updates below keep concurrent drivers apart)."""
        async with self._store.claim(order_id, wait=wait) as mine:
            if not mine:
                return await self._store.get(order_id)
            return await self._complete(order_id)

    async def _complete(self, order_id: str) -> OrderRow:
        order = await self._store.get(order_id)  # fresh: a task before this one (or another process) may have ended it
        if order.status != PENDING:
            return order
        if not order.reserve_attempted:
            # Checked once, before any stock is asked for; an order that got past this point passed them.
            refusal = await self._check_owners(order)
            if refusal is not None:
                cancelled = await self._store.finish(order_id, CANCELLED, refusal, unless_reserve_attempted=True)
                if cancelled.status != PENDING:
                    return cancelled
                # Another process got past the checks and asked for stock meanwhile: its answer stands.
            order = await self._store.mark_reserve_attempted(order_id)
            if order.status != PENDING:
                return order
        lines = [inventory_pb2.ReservationLine(sku=sku, quantity=quantity) for sku, quantity in order.lines]
        placement_step("reservation", order_id)
        try:
            await self._owners["inventory"].call(
                RESERVE_STOCK, inventory_pb2.ReserveStockRequest(reservation_id=order_id, lines=lines)
            )
            await self._owners["inventory"].call(
                COMMIT_RESERVATION, inventory_pb2.CommitReservationRequest(reservation_id=order_id)
            )
        except ResilienceError as error:
            # A refused reserve or commit holds nothing: too little stock writes nothing, and a hold that was
            # released or ran out can never hold stock again. So there is nothing to release.
            return await self._store.finish(order_id, CANCELLED, _reason(error))
        placement_step("confirm", order_id)
        order = await self._store.finish(order_id, CONFIRMED)
        if order.status == CANCELLED:
            # Another process (a replica) was refused stock for this order and cancelled it while this one got
            # the stock: the order's end state stands, so the stock goes back.
            await self._owners["inventory"].call(
                RELEASE_RESERVATION, inventory_pb2.ReleaseReservationRequest(reservation_id=order_id)
            )
        return order

    async def _check_owners(self, order: OrderRow) -> str | None:
        """The refusal of customers or catalog (strong reads), or None if both know what the order names."""
        try:
            placement_step("customer check", order.order_id)
            await self._owners["customers"].call(
                GET_CUSTOMER, customers_pb2.GetCustomerRequest(customer_id=order.customer_id), max_staleness=0.0
            )
            placement_step("product check", order.order_id)
            await self._owners["catalog"].call(
                BATCH_GET_PRODUCTS,
                catalog_pb2.BatchGetProductsRequest(skus=[sku for sku, _ in order.lines]),
                max_staleness=0.0,
            )
        except ResilienceError as error:
            return _reason(error)
        return None
