"""Starting a server securely or not at all: flags and `[security]` checked before anything starts, each error
naming the flag, key or file; and `pullgate token`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullgate.config import load
from pullgate.security.pki import ensure_dev_pki
from pullgate.security.setup import SecurityConfig, SecurityFlags, resolve
from pullgate.security.tokens import TokenSettings, TokenVerifier
from pullgate.tools.cli import main
from resilience import ConfigError


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err


def test_serve_without_tls_or_insecure_refuses_to_start_naming_what_to_give(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refused(capsys, "serve", "catalog", "--data-dir", str(tmp_path))
    assert "--tls-cert" in err and "--tls-key" in err and "--tls-ca" in err and "--insecure" in err
    assert not list(tmp_path.iterdir()), "nothing was created"


def test_half_the_tls_flags_names_the_missing_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = ensure_dev_pki(tmp_path / "pki", ["catalog"])
    err = _refused(capsys, "serve", "catalog", "--data-dir", str(tmp_path), "--tls-cert", str(pki.cert("catalog")),
                   "--tls-ca", str(pki.ca))
    assert "--tls-key" in err


def test_a_file_that_is_not_a_certificate_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pki = ensure_dev_pki(tmp_path / "pki", ["catalog", "orders"])
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    err = _refused(capsys, "serve", "catalog", "--data-dir", str(tmp_path), "--tls-cert", str(junk),
                   "--tls-key", str(pki.key("catalog")), "--tls-ca", str(pki.ca))
    assert str(junk) in err
    err = _refused(capsys, "serve", "catalog", "--data-dir", str(tmp_path), "--tls-cert", str(pki.cert("orders")),
                   "--tls-key", str(pki.key("catalog")), "--tls-ca", str(pki.ca))
    assert "does not belong to the key" in err


def test_the_gateway_needs_a_token_key(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path / "pki", ["gateway"])
    with pytest.raises(ConfigError) as caught:
        resolve("gateway", SecurityFlags(pki.cert("gateway"), pki.key("gateway"), pki.ca), SecurityConfig())
    assert caught.value.key == "--token-secret"


@pytest.mark.parametrize(("text", "key", "problem"), [
    ('[security]\ntls_cert = "a.pem"\n', "security.tls_key", "go together"),
    ('[security]\ntls_certificate = "a.pem"\n', "security.tls_certificate", "unknown key"),
    ('[security]\ninsecure = "yes"\n', "security.insecure", "true or false"),
    ('[security]\ninsecure = true\ntls_cert = "a"\ntls_key = "b"\ntls_ca = "c"\n', "security.insecure", "choose"),
    ('[security.tokens]\nalgorithms = ["none"]\n', "security.tokens.algorithms", "never accepted"),
    ('[security.tokens]\nissuer = ""\nsecret_file = "k"\n', "security.tokens.issuer", "non-empty"),
])
def test_a_wrong_security_table_names_the_key_and_the_file(tmp_path: Path, text: str, key: str,
                                                            problem: str) -> None:
    path = tmp_path / "pullgate.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == key and caught.value.source == str(path)
    assert problem in caught.value.problem


def test_the_security_table_names_each_servers_files_and_paths_are_the_configs(tmp_path: Path) -> None:
    """`{service}` in a path is the server's name; a relative path is taken from the config file's directory."""
    pki = ensure_dev_pki(tmp_path / "certs", ["orders", "gateway"])
    (tmp_path / "certs" / "token.key").write_bytes(b"s" * 32)
    path = tmp_path / "pullgate.toml"
    path.write_text('[security]\ntls_cert = "certs/{service}.pem"\ntls_key = "certs/{service}.key"\n'
                    'tls_ca = "certs/ca.pem"\n[security.tokens]\nsecret_file = "certs/token.key"\n')
    config = load(path).security
    orders = resolve("orders", SecurityFlags(), config)
    assert orders.server is not None and orders.server.identity == "spiffe://pullgate.local/orders"
    assert orders.policy is not None and orders.verifier is None
    gateway = resolve("gateway", SecurityFlags(), config)
    assert gateway.server is not None and not gateway.server.require_client_cert and gateway.verifier is not None
    assert pki.ca.exists()


def test_insecure_is_explicit_and_serves_plaintext_with_nobody_checked(caplog: pytest.LogCaptureFixture) -> None:
    security = resolve("orders", SecurityFlags(insecure=True), SecurityConfig())
    assert security.insecure and not security.interceptors()
    assert "INSECURE" in caplog.text


def test_token_mints_a_token_the_gateway_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--customer", "7", "--data-dir", str(tmp_path)]) == 0
    token = capsys.readouterr().out.strip()
    verifier = TokenVerifier.from_settings(TokenSettings(secret_file=tmp_path / "pki" / "token.key"))
    caller = verifier.verify(token)
    assert caller.customer_id == "7" and caller.acts_for("7") and not caller.is_admin
    assert main(["token", "--admin", "--data-dir", str(tmp_path)]) == 0
    assert verifier.verify(capsys.readouterr().out.strip()).is_admin
    assert "--customer" in _refused(capsys, "token", "--data-dir", str(tmp_path))
