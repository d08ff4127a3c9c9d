"""pullgate's config file: every key checked, errors naming the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullgate.config import ConfigError, load


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pullgate.toml"
    path.write_text(text)
    return path


def test_no_file_means_the_defaults() -> None:
    """Without a file every section has its defaults."""
    config = load(None)
    assert config.gateway.response_margin == 0.05
    assert config.inventory.reservation_hold == 60.0


def test_a_file_overrides_each_section(tmp_path: Path) -> None:
    """Values in the file replace the defaults, per section and per owner."""
    config = load(_file(tmp_path, "[gateway]\nresponse_margin = 0.1\n[inventory]\nreservation_hold = 5\n"
                                  "[resilience.catalog.retry]\nmax_attempts = 2\n"))
    assert config.gateway.response_margin == 0.1
    assert config.inventory.reservation_hold == 5.0
    assert config.resilience.for_downstream("catalog").retry.max_attempts == 2
    assert config.resilience.for_downstream("customers").retry.max_attempts == 3


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[gateway]\nresponse_margn = 1\n", "gateway.response_margn", "unknown key"),
        ("[gateway]\nresponse_margin = -1\n", "gateway.response_margin", "must not be negative"),
        ("[inventory]\nreservation_hold = 0\n", "inventory.reservation_hold", "more than 0"),
        ("[inventory]\nreservation_hold = 'long'\n", "inventory.reservation_hold", "number of seconds"),
        ("[gatway]\n", "gatway", "unknown section"),
        ("[resilience.catalgo.cache]\nttl = 1\n", "resilience.catalgo", "unknown downstream"),
        ("gateway = 3\n", "gateway", "must be a table"),
        ("[gateway\n", "(file)", "not valid TOML"),
    ],
)
def test_a_wrong_key_or_value_names_the_key_and_the_file(tmp_path: Path, text: str, key: str, problem: str) -> None:
    """Each kind of mistake is a ConfigError naming the key and the file."""
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == key
    assert problem in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    """A config path that does not exist is an error naming it."""
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")
