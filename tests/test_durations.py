"""Every place a person writes a duration (flags, the config file, fault specs, chaos schedules) reads the same
texts the same way and refuses the same texts with the same message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pullgate.config import ConfigError, load
from pullgate.faults import Delay, FaultSpecError, parse_faults
from pullgate.tools.chaos.schedule import ScheduleError, parse_schedule
from pullgate.tools.cli import build_parser, main

MESSAGE = "{!r} is not a duration: use a number with a unit, like 500ms, 2s or 1.5m"

WITH_A_UNIT = [("500ms", 0.5), ("250ms", 0.25), ("2s", 2.0), ("0.25s", 0.25), ("1.5m", 90.0), ("1h", 3600.0),
               ("1500ms", 1.5)]
"""Durations every surface reads, and their seconds (within every surface's own range)."""

NOT_DURATIONS = ["5x", "fast", "-1s", "+1s", "1e3s", ".5s", "5.s", "2S", "1m30s", "2us", "2d", "inf", "nan", "ms"]
"""Texts every surface refuses with the one message."""

PLAIN_SECONDS = [("2.5", 2.5), ("60", 60.0), ("0.05", 0.05)]
"""Plain numbers: seconds in a setting of one value (a flag, a TOML key), refused inside a spec or schedule."""

Read = Callable[[str], float | str]
"""A surface reading one text: the seconds it got, or what it said when it refused the text."""


def _toml(tmp_path: Path, section: str, key: str, value: str) -> Path:
    path = tmp_path / "pullgate.toml"
    path.write_text(f"[{section}]\n{key} = {value}\n")
    return path


def _flag(command: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> Read:
    def read(text: str) -> float | str:
        try:
            args = build_parser().parse_args([*command, f"{flag}={text}"])
        except SystemExit:
            return capsys.readouterr().err.strip().splitlines()[-1]
        value: float = getattr(args, flag.removeprefix("--").replace("-", "_"))
        return value

    return read


def _config(section: str, key: str, tmp_path: Path) -> Read:
    def read(text: str) -> float | str:
        try:
            config = load(_toml(tmp_path, section, key, f'"{text}"'))
        except ConfigError as error:
            return str(error)
        if section == "gateway":
            return config.gateway.response_margin
        return config.resilience.default.breaker.reset_timeout

    return read


def _fault_spec(text: str) -> float | str:
    try:
        (delay,) = parse_faults(f"catalog=delay:{text}").faults_for("catalog", "GetProduct")
    except FaultSpecError as error:
        return str(error)
    assert isinstance(delay, Delay)
    return delay.seconds


def _schedule(where: str) -> Read:
    def read(text: str) -> float | str:
        try:
            (fault,) = parse_schedule(f"{text} kill catalog" if where == "at" else f"1s freeze catalog for {text}")
        except ScheduleError as error:
            return str(error)
        return fault.at if where == "at" else fault.duration

    return read


SETTINGS = ["flag --timeout", "flag --max-staleness", "chaos --deadline", "chaos --duration", "[gateway]",
            "[resilience.*]"]
SPECS = ["fault spec delay:", "schedule AT", "schedule for DURATION"]


def _surface(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Read:
    surfaces: dict[str, Read] = {
        "flag --timeout": _flag(["order-view", "1"], "--timeout", capsys),
        "flag --max-staleness": _flag(["customer", "1"], "--max-staleness", capsys),
        "chaos --deadline": _flag(["chaos"], "--deadline", capsys),
        "chaos --duration": _flag(["chaos"], "--duration", capsys),
        "[gateway]": _config("gateway", "response_margin", tmp_path),
        "[resilience.*]": _config("resilience.default.breaker", "reset_timeout", tmp_path),
        "fault spec delay:": _fault_spec,
        "schedule AT": _schedule("at"),
        "schedule for DURATION": _schedule("for"),
    }
    return surfaces[name]


@pytest.mark.parametrize("surface", SETTINGS + SPECS)
@pytest.mark.parametrize(("text", "seconds"), WITH_A_UNIT)
def test_every_surface_reads_a_duration_alike(surface: str, text: str, seconds: float, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A number with a unit is the same number of seconds wherever it is written."""
    assert _surface(surface, tmp_path, capsys)(text) == seconds


@pytest.mark.parametrize("surface", SETTINGS + SPECS)
@pytest.mark.parametrize("text", NOT_DURATIONS)
def test_every_surface_refuses_with_the_one_message(surface: str, text: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A text that is not a duration is refused everywhere with the same message, after the place's own prefix."""
    said = _surface(surface, tmp_path, capsys)(text)
    assert isinstance(said, str)
    assert said.endswith(f": {MESSAGE.format(text)}"), said


@pytest.mark.parametrize(("text", "seconds"), PLAIN_SECONDS)
def test_a_plain_number_is_seconds_in_a_setting_and_refused_in_a_spec(
        text: str, seconds: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Flags and config keys take a plain number as seconds; a fault spec or schedule needs the unit."""
    for surface in SETTINGS:
        assert _surface(surface, tmp_path, capsys)(text) == seconds, surface
    for surface in SPECS:
        said = _surface(surface, tmp_path, capsys)(text)
        assert isinstance(said, str)
        assert said.endswith(f": {MESSAGE.format(text)}"), surface


@pytest.mark.parametrize(("section", "key", "read"), [
    ("gateway", "response_margin", lambda config: config.gateway.response_margin),
    ("inventory", "reservation_hold", lambda config: config.inventory.reservation_hold),
    ("resilience.catalog.hedging", "hedging_delay",
     lambda config: config.resilience.for_downstream("catalog").hedging.hedging_delay),
])
def test_a_toml_number_is_seconds(section: str, key: str, read: Callable[..., float], tmp_path: Path) -> None:
    """A TOML number stays a number of seconds, as every existing file has it."""
    assert read(load(_toml(tmp_path, section, key, "0.5"))) == 0.5


def test_the_cli_prints_a_config_error_naming_the_key_and_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`pullgate serve` with a bad duration in the config stops before starting, naming the key and the file."""
    path = _toml(tmp_path, "gateway", "response_margin", '"5x"')
    assert main(["serve", "gateway", "--config", str(path), "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"pullgate serve: {path}: gateway.response_margin: {MESSAGE.format('5x')}"
