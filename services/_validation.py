"""The request rules every service shares; each failure names the field and the rule it broke."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pullgate.errors import InvalidArgument

MAX_BATCH = 100
"""The most ids a batch get, or lines a reservation or order, may carry."""

MAX_KEY_LENGTH = 128
"""The longest caller-chosen key (idempotency key, reservation id)."""


class Line(Protocol):
    """A quantity of one sku: an inventory ReservationLine or an orders OrderLine."""

    @property
    def sku(self) -> str: ...

    @property
    def quantity(self) -> int: ...


def require(field: str, value: str) -> str:
    """A required string field."""
    if not value:
        raise InvalidArgument(field, "must not be empty")
    return value


def require_key(field: str, value: str) -> str:
    """A required caller-chosen key of 1 to MAX_KEY_LENGTH characters."""
    require(field, value)
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidArgument(field, f"must be at most {MAX_KEY_LENGTH} characters")
    return value


def require_ids(field: str, ids: Sequence[str]) -> list[str]:
    """A batch of 1 to MAX_BATCH non-empty ids."""
    if not ids:
        raise InvalidArgument(field, "must have at least 1 item")
    if len(ids) > MAX_BATCH:
        raise InvalidArgument(field, f"at most {MAX_BATCH} items")
    for index, value in enumerate(ids):
        require(f"{field}[{index}]", value)
    return list(ids)


def require_lines(field: str, lines: Sequence[Line]) -> list[tuple[str, int]]:
    """1 to MAX_BATCH lines, each with a sku (at most once) and a quantity of at least 1; as (sku, quantity)."""
    if not lines:
        raise InvalidArgument(field, "must have at least 1 item")
    if len(lines) > MAX_BATCH:
        raise InvalidArgument(field, f"at most {MAX_BATCH} items")
    seen: dict[str, int] = {}
    for index, line in enumerate(lines):
        require(f"{field}[{index}].sku", line.sku)
        if line.sku in seen:
            rule = f"must not repeat {line.sku!r} (already in line {seen[line.sku]})"
            raise InvalidArgument(f"{field}[{index}].sku", rule)
        seen[line.sku] = index
        if line.quantity < 1:
            raise InvalidArgument(f"{field}[{index}].quantity", "must be at least 1")
    return [(line.sku, line.quantity) for line in lines]
