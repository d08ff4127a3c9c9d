"""How long a reservation is held before it expires, and the task that gives expired holds back.

Why a sweeper as well as the checks in ReserveStock and CommitReservation: an order whose owner died never calls
again, so only inventory itself can bound how long stock stays held for it. A hold ends at most
`hold + sweep_interval(hold)` seconds after it was made.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from resilience import DurationError, parse_seconds
from services.inventory.store import DEFAULT_HOLD, InventoryStore

log = logging.getLogger("pullgate.services.inventory")

HOLD_ENV = "PULLGATE_RESERVATION_HOLD"
"""The environment variable that sets the hold (default 60 s), a duration like any setting (`90`, `500ms`, `2m`);
`pullgate up` passes it to its children."""


def hold_from_env(environ: Mapping[str, str] = os.environ, default: float = DEFAULT_HOLD) -> float:
    """The hold in seconds from `PULLGATE_RESERVATION_HOLD` (it overrides the config file's
    `[inventory] reservation_hold`), or `default`; ValueError naming the variable."""
    text = environ.get(HOLD_ENV, "").strip()
    if not text:
        return default
    try:
        hold = parse_seconds(text)
    except DurationError as error:
        raise ValueError(f"{HOLD_ENV}={text!r}: {error}") from None
    if hold <= 0:
        raise ValueError(f"{HOLD_ENV}={text!r}: must be more than 0")
    return hold


def sweep_interval(hold: float) -> float:
    """How often to look for expired holds: a quarter of the hold, between 50 ms and 5 s."""
    return min(max(hold / 4, 0.05), 5.0)


async def sweep_forever(store: InventoryStore, interval: float) -> None:
    """Release expired holds every `interval` seconds until cancelled; a failed pass is logged and retried."""
    while True:
        try:
            expired = await store.sweep()
        except Exception:  # a busy database, a disk hiccup: the next pass tries again
            log.exception("sweeping expired reservations failed; retrying in %.2fs", interval)
        else:
            for reservation_id in expired:
                log.info("reservation %s expired before it was committed: released", reservation_id)
        await asyncio.sleep(interval)
