"""Config: defaults with no file, overrides per downstream, errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilience import ConfigError, DownstreamConfig, ResilienceConfig, RetryConfig


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
        ('[resilience.default.hedging]\nhedging_delay = "10ms"\n', "resilience.default.hedging.hedging_delay"),
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
        ResilienceConfig.load(path, known_downstreams={"customers", "catalog", "inventory", "orders"})
    assert raised.value.key == key
    assert raised.value.source == str(path)
    assert key in str(raised.value)
    assert str(path) in str(raised.value)


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
