"""The one duration grammar: what it accepts, what it refuses, and that formatting round-trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilience import DurationError, format_duration, parse_duration, parse_seconds

MESSAGE = "is not a duration: use a number with a unit, like 500ms, 2s or 1.5m"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("0ms", 0.0),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        ("0.001s", 0.001),
        ("100ms", 0.1),
        ("007s", 7.0),
        (" 250ms ", 0.25),
    ],
)
def test_a_number_with_a_unit_is_a_duration(text: str, seconds: float) -> None:
    """A number with ms, s, m or h is that many seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "5x", "500", "2.5", "-1s", "+1s", "1e3s", ".5s", "5.s", "2S", "2 s", "1m30s", "2us", "2d", "inf", "nan",
     "s", "1_000ms", "\u0663s"],
)
def test_anything_else_is_refused_with_the_one_message(text: str) -> None:
    """A text that is not a number with a unit is refused, and the message names it."""
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert str(caught.value) == f"{text!r} {MESSAGE}"
    assert caught.value.value == text


@pytest.mark.parametrize(("value", "seconds"), [(2, 2.0), (0.25, 0.25), (-1, -1.0), ("2.5", 2.5), ("60", 60.0),
                                                 ("500ms", 0.5), ("1.5m", 90.0)])
def test_a_setting_also_takes_a_plain_number_of_seconds(value: object, seconds: float) -> None:
    """A flag or config key takes a number (or its text) as seconds, or a duration; ranges are the setting's."""
    assert parse_seconds(value) == seconds


@pytest.mark.parametrize("value", [True, None, [1], {"s": 1}, "5x", "-1", "1e3", "", "2 s"])
def test_a_setting_refuses_the_rest_with_the_one_message(value: object) -> None:
    """Anything else, of any type, is refused with the same message."""
    with pytest.raises(DurationError, match=MESSAGE):
        parse_seconds(value)


@pytest.mark.parametrize(("seconds", "text"), [(0.0, "0ms"), (2.0, "2s"), (1.5, "1500ms"), (0.05, "50ms"),
                                               (3600.0, "3600s"), (0.0001, "0.0001s"), (1e-05, "0.00001s")])
def test_format_writes_whole_seconds_then_milliseconds(seconds: float, text: str) -> None:
    """Whole seconds are written in s, whole milliseconds in ms, anything finer as decimal seconds."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, math.inf, math.nan])
def test_format_refuses_what_is_not_a_duration(seconds: float) -> None:
    """A negative or non-finite number has no duration text."""
    with pytest.raises(DurationError):
        format_duration(seconds)


@given(st.floats(min_value=0.0, allow_nan=False, allow_infinity=False))
def test_formatting_then_parsing_round_trips(seconds: float) -> None:
    """Every float a duration can be is formatted to a text that parses back to exactly it."""
    assert parse_duration(format_duration(seconds)) == seconds


_texts = st.builds(
    "{}{}{}".format,
    st.integers(0, 10**9).map(str),
    st.one_of(st.just(""), st.integers(0, 10**6).map(lambda digits: f".{digits}")),
    st.sampled_from(["ms", "s", "m", "h"]),
)


@given(_texts)
def test_parsing_then_formatting_keeps_the_value(text: str) -> None:
    """Any text of the grammar reads as a value whose formatted text reads back as the same value."""
    seconds = parse_duration(text)
    assert seconds >= 0
    assert parse_duration(format_duration(seconds)) == seconds
