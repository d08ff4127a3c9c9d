"""ReadOptions resolve to a staleness bound, and bad ones name the field."""

from __future__ import annotations

import math

import pytest

from gateway.reads import resolve
from pullgate.errors import InvalidArgument
from pullgate.gateway.v1 import gateway_pb2 as pb


def _read(consistency: int = 0, staleness: float | None = None) -> pb.ReadOptions:
    read = pb.ReadOptions(consistency=consistency)  # type: ignore[arg-type]
    if staleness is not None:
        read.max_staleness.FromNanoseconds(int(staleness * 1e9))
    return read


def test_unspecified_is_bounded_by_each_owners_default() -> None:
    """No read options means bounded staleness, with the bound left to each owner's cache config."""
    mode = resolve(_read())
    assert mode.consistency == pb.CONSISTENCY_BOUNDED_STALENESS
    assert mode.max_staleness is None
    assert not mode.strong


def test_bounded_takes_the_callers_bound() -> None:
    """A caller's max_staleness replaces the default."""
    assert resolve(_read(pb.CONSISTENCY_BOUNDED_STALENESS, 2.5)).max_staleness == 2.5


def test_strong_is_live_only_and_available_takes_anything() -> None:
    """Strong reads accept no cached data; available reads accept any."""
    assert resolve(_read(pb.CONSISTENCY_STRONG)).max_staleness == 0.0
    assert resolve(_read(pb.CONSISTENCY_STRONG)).strong
    assert resolve(_read(pb.CONSISTENCY_AVAILABLE)).max_staleness == math.inf


@pytest.mark.parametrize(
    ("read", "field", "rule"),
    [
        (_read(pb.CONSISTENCY_BOUNDED_STALENESS, -1.0), "read.max_staleness", "must not be negative"),
        (_read(pb.CONSISTENCY_STRONG, 1.0), "read.max_staleness", "only applies"),
        (_read(42), "read.consistency", "unknown value 42"),
    ],
)
def test_bad_read_options_name_the_field(read: pb.ReadOptions, field: str, rule: str) -> None:
    """Each wrong read option is INVALID_ARGUMENT naming its field and rule."""
    with pytest.raises(InvalidArgument) as caught:
        resolve(read)
    assert caught.value.field == field
    assert rule in caught.value.rule
