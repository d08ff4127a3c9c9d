"""Config: defaults with no file, overrides per downstream, errors that name the key and the file."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from resilience import ConfigError, DownstreamConfig, ResilienceConfig, RetryConfig, Seconds
from resilience.config import POLICIES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "resilience.md"


def test_no_file_gives_the_defaults() -> None:
    """An empty table configures every downstream with DownstreamConfig()."""
    assert ResilienceConfig.from_mapping({}).for_downstream("catalog") == DownstreamConfig()


def test_downstream_overrides_sit_on_top_of_default(tmp_path: Path) -> None:
    """Keys in [resilience.catalog.*] override [resilience.default.*], which overrides the built-in defaults."""
    path = tmp_path / "pullgate.toml"
    path.write_text(
        "[resilience.default.retry]\nmax_attempts = 2\n"
        "[resilience.catalog.retry]\ninitial_backoff = 0.5\n"
        "[resilience.catalog.cache]\nenabled = false\n"
    )
    config = ResilienceConfig.load(path)
    catalog = config.for_downstream("catalog")
    assert catalog.retry == RetryConfig(max_attempts=2, initial_backoff=0.5)
    assert not catalog.cache.enabled
    assert config.for_downstream("orders").retry.max_attempts == 2
    assert config.for_downstream("orders").cache.enabled


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[resilience.catalog.retyr]\nmax_attempts = 2\n", "resilience.catalog.retyr"),
        ("[resilience.default.retry]\nmax_attempt = 2\n", "resilience.default.retry.max_attempt"),
        ("[resilience.default.retry]\nmax_attempts = 0\n", "resilience.default.retry.max_attempts"),
        ('[resilience.default.hedging]\nhedging_delay = "10x"\n', "resilience.default.hedging.hedging_delay"),
        ('[resilience.default.hedging]\npercentile = "0.9"\n', "resilience.default.hedging.percentile"),
        ('[resilience.default.retry]\nmax_attempts = "3"\n', "resilience.default.retry.max_attempts"),
        ("[resilience.default.budget]\nttl = true\n", "resilience.default.budget.ttl"),
        ('[resilience.default.cache]\nttl = "-1s"\n', "resilience.default.cache.ttl"),
        ("[resilience.default.breaker]\nenabled = 1\n", "resilience.default.breaker.enabled"),
        ("[resilience.default.cache]\nmax_staleness = 500.0\n", "resilience.default.cache.max_staleness"),
        ("[resilience.catlog.retry]\nenabled = false\n", "resilience.catlog"),
        ("[resilience.default.throttle]\nratio_for_accepts = 0.5\n", "resilience.default.throttle.ratio_for_accepts"),
        ("[resilience.default.throttle]\nrequests_padding = 0.0\n", "resilience.default.throttle.requests_padding"),
        ("[resilience.catalog.outlier_detection]\nmax_ejection_time = 10.0\n",
         "resilience.catalog.outlier_detection.max_ejection_time"),
        ("[resilience.default.outlier_detection]\nmax_ejection_percent = 150\n",
         "resilience.default.outlier_detection.max_ejection_percent"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, toml: str, key: str) -> None:
    """A wrong key or value raises ConfigError whose message names its dotted path and the file."""
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        ResilienceConfig.load(path, known_downstreams={"catalog", "inventory"})
    assert raised.value.key == key
    assert raised.value.source == str(path)
    assert key in str(raised.value)
    assert str(path) in str(raised.value)


def test_a_duration_key_takes_a_number_of_seconds_or_a_duration() -> None:
    """Every `Seconds` key reads 0.02, "0.02" and "20ms" alike; other number keys take only numbers."""
    for value in (0.02, "0.02", "20ms"):
        config = ResilienceConfig.from_mapping({"default": {"hedging": {"hedging_delay": value}}})
        assert config.default.hedging.hedging_delay == 0.02
    table = {"timeout": {"total": "2s", "per_attempt": "250ms"}, "retry": {"initial_backoff": "20ms",
             "max_backoff": "0.5s"}, "budget": {"ttl": "1m"}, "breaker": {"reset_timeout": "5s"},
             "cache": {"ttl": "1s", "max_staleness": "30s", "max_stale": "5m"}, "bulkhead": {"max_wait": "50ms"}}
    default = ResilienceConfig.from_mapping({"default": table}).default
    assert (default.timeout.total, default.timeout.per_attempt) == (2.0, 0.25)
    assert (default.retry.initial_backoff, default.retry.max_backoff) == (0.02, 0.5)
    assert (default.budget.ttl, default.breaker.reset_timeout, default.bulkhead.max_wait) == (60.0, 5.0, 0.05)
    assert (default.cache.ttl, default.cache.max_staleness, default.cache.max_stale) == (1.0, 30.0, 300.0)


def test_the_docs_list_every_duration_key() -> None:
    """docs/resilience.md names exactly the keys typed Seconds, the ones that take a duration string."""
    typed = {
        f"{policy}.{name}"
        for policy, kind in POLICIES.items()
        for name, hint in typing.get_type_hints(kind, include_extras=True).items()
        if hint == Seconds
    }
    sentence = DOCS.read_text().split("The duration keys are", 1)[1].split(". Every other", 1)[0]
    assert set(re.findall(r"`(\w+\.\w+)`", sentence)) == typed


def test_a_bad_duration_gets_the_one_message(tmp_path: Path) -> None:
    """A duration key that is not a duration is refused with the grammar's message, the key and the file."""
    path = tmp_path / "bad.toml"
    path.write_text('[resilience.catalog.breaker]\nreset_timeout = "5 sec"\n')
    with pytest.raises(ConfigError) as raised:
        ResilienceConfig.load(path)
    assert raised.value.problem == "'5 sec' is not a duration: use a number with a unit, like 500ms, 2s or 1.5m"
    assert str(raised.value) == f"{path}: resilience.catalog.breaker.reset_timeout: {raised.value.problem}"


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    """A file that is not TOML is reported with its path."""
    path = tmp_path / "broken.toml"
    path.write_text("[resilience\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        ResilienceConfig.load(path)


def test_configs_are_frozen_and_validated_on_construction() -> None:
    """Building a config in code validates it the same way, and it cannot be changed after."""
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryConfig(max_attempts=0)
    config = RetryConfig()
    with pytest.raises(AttributeError):
        config.max_attempts = 5  # type: ignore[misc]
