"""pullgate's config file: every key checked, errors naming the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullgate.config import ConfigError, GatewayConfig, InventoryConfig, load


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


def test_admission_per_server_builds_on_the_default(tmp_path: Path) -> None:
    """[admission.<server>] takes its keys over [admission.default]; other servers get the default."""
    config = load(_file(tmp_path, "[admission.default]\nmax_limit = 50\n[admission.gateway]\nmin_limit = 20\n"))
    gateway, orders = config.admission.for_service("gateway"), config.admission.for_service("orders")
    assert (gateway.min_limit, gateway.max_limit) == (20, 50)
    assert (orders.min_limit, orders.max_limit) == (5, 50)


def test_the_gateway_keeps_a_shorter_queue_in_grpc_unless_told_otherwise(tmp_path: Path) -> None:
    """The entry server's built-in pending bound is shorter than the owners'; its own table still wins."""
    defaults = load(None).admission
    assert dict(defaults.for_service("gateway").server_options()) == {
        "grpc.server.max_pending_requests": 4, "grpc.server.max_pending_requests_hard_limit": 16}
    assert dict(defaults.for_service("catalog").server_options())["grpc.server.max_pending_requests"] == 8
    told = load(_file(tmp_path, "[admission.gateway]\nmax_pending_requests = 10\n"
                                "max_pending_requests_hard_limit = 20\n")).admission.for_service("gateway")
    assert (told.max_pending_requests, told.max_pending_requests_hard_limit) == (10, 20)
    assert load(_file(tmp_path, "[admission.default]\nenabled = false\n")).admission.for_service(
        "catalog").server_options() == ()


def test_durations_take_a_unit_or_a_number_of_seconds(tmp_path: Path) -> None:
    """Every duration key reads a number of seconds or a duration string, in each section."""
    config = load(_file(tmp_path, '[gateway]\nresponse_margin = "100ms"\n[inventory]\nreservation_hold = "2m"\n'
                                  '[resilience.catalog.cache]\nmax_staleness = "10s"\n'))
    assert config.gateway.response_margin == 0.1
    assert config.inventory.reservation_hold == 120.0
    assert config.resilience.for_downstream("catalog").cache.max_staleness == 10.0


NOT_A_DURATION = "is not a duration: use a number with a unit, like 500ms, 2s or 1.5m"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[gateway]\nresponse_margn = 1\n", "gateway.response_margn", "unknown key"),
        ("[gateway]\nresponse_margin = -1\n", "gateway.response_margin", "must not be negative, got -1.0"),
        ("[gateway]\nresponse_margin = '5x'\n", "gateway.response_margin", f"'5x' {NOT_A_DURATION}"),
        ("[gateway]\nresponse_margin = true\n", "gateway.response_margin", f"True {NOT_A_DURATION}"),
        ("[inventory]\nreservation_hold = 0\n", "inventory.reservation_hold", "must be more than 0"),
        ("[inventory]\nreservation_hold = '0ms'\n", "inventory.reservation_hold", "must be more than 0"),
        ("[inventory]\nreservation_hold = 'long'\n", "inventory.reservation_hold", f"'long' {NOT_A_DURATION}"),
        ("[inventory]\nreservation_hodl = 1\n", "inventory.reservation_hodl", "unknown key"),
        ("[gatway]\n", "gatway",
         "unknown section (known: gateway, inventory, resilience, admission, security, database)"),
        ("[resilience.catalgo.cache]\nttl = 1\n", "resilience.catalgo", "unknown downstream"),
        ("[resilience.catalog.cache]\nttl = '1 s'\n", "resilience.catalog.cache.ttl", f"'1 s' {NOT_A_DURATION}"),
        ("[resilience.catalog.cache]\nttl = 0\n", "resilience.catalog.cache.ttl", "must be > 0, got 0.0"),
        ("[resilience.default.retry]\nmax_attempts = '3'\n", "resilience.default.retry.max_attempts",
         "must be int, got '3'"),
        ("gateway = 3\n", "gateway", "must be a table"),
        ("[admission.gatewy]\nmax_limit = 9\n", "admission.gatewy", "unknown server"),
        ("[admission.default]\nmax_limt = 9\n", "admission.default.max_limt", "unknown key"),
        ("[admission.gateway]\nmin_limit = 0\n", "admission.gateway.min_limit", "must be >= 1"),
        ("[admission]\ndefault = 3\n", "admission.default", "must be a table"),
        ("[admission.catalog]\nmax_pending_requests = 9\nmax_pending_requests_hard_limit = 3\n",
         "admission.catalog.max_pending_requests", "must be <= max_pending_requests_hard_limit"),
        ("[gateway\n", "(file)", "not valid TOML"),
        ("database = 'x'\n", "database", "must be a table"),
        ("[database]\nurl = 'mysql://db/{service}'\n", "database.url", "must be a PostgreSQL URL"),
        ("[database]\nurl = 'postgresql://db/pullgate'\n", "database.url", "must contain {service}"),
        ("[database]\nuri = 'postgresql://db/{service}'\n", "database.uri", "unknown key (known: url, customers"),
        ("[database.gateway]\nurl = 'postgresql://db/g'\n", "database.gateway", "unknown key"),
        ("[database.orders]\nurl = 3\n", "database.orders.url", "must be a PostgreSQL URL"),
        ("[database.orders]\nhost = 'db'\n", "database.orders.host", "unknown key (known: url)"),
        ("[database]\norders = 'postgresql://db/o'\n", "database.orders", "must be a table"),
        ("[database.orders]\nurl = 'postgresql://db/x'\n[database.catalog]\nurl = 'postgresql://db/x'\n",
         "database.orders.url", "orders would share catalog's database"),
    ],
)
def test_a_wrong_key_or_value_names_the_key_and_the_file(tmp_path: Path, text: str, key: str, problem: str) -> None:
    """Each kind of mistake is a ConfigError carrying the dotted key and the file, and saying both."""
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == key
    assert caught.value.source == str(path)
    assert problem in caught.value.problem
    assert str(caught.value) == f"{path}: {key}: {caught.value.problem}"


def test_a_section_built_in_code_names_its_field() -> None:
    """A section built in code is checked the same way; its ConfigError names the field, not a parsed message."""
    with pytest.raises(ConfigError) as caught:
        InventoryConfig(reservation_hold=-1.0)
    assert (caught.value.key, caught.value.problem) == ("reservation_hold", "must not be negative, got -1.0")
    with pytest.raises(ConfigError) as caught:
        GatewayConfig(response_margin=-0.5)
    assert caught.value.key == "response_margin"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    """A config path that does not exist is an error naming it."""
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "nope.toml")


def test_database_urls_per_owner(tmp_path: Path) -> None:
    """[database] url is every owner's with {service} filled in; [database.<owner>] url wins; none means SQLite."""
    config = load(_file(tmp_path, "[database]\nurl = 'postgresql://db/pg_{service}'\n"
                                  "[database.orders]\nurl = 'postgres://o@odb/orders'\n"))
    assert config.database.url_for("catalog") == "postgresql://db/pg_catalog"
    assert config.database.url_for("orders") == "postgres://o@odb/orders"
    assert load(None).database.url_for("orders") is None
