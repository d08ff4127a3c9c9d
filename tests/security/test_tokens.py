"""Callers' tokens: what verifies, what is refused and why (without the token in the message), keys and config."""

from __future__ import annotations

import base64
import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pullgate.security.tokens import (
    Caller,
    TokenSettings,
    TokenVerifier,
    Unauthenticated,
    ensure_secret,
    mint,
)
from resilience import ConfigError


class FakeClock:
    """A clock a test moves by hand; it starts at the real time, which PyJWT's own checks use."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def secret(tmp_path: Path) -> bytes:
    """The development secret, made where the verifier's settings point."""
    return ensure_secret(tmp_path / "secret.key")


@pytest.fixture
def verifier(tmp_path: Path, secret: bytes) -> TokenVerifier:
    """An HS256 verifier with the default issuer and audience."""
    return TokenVerifier.from_settings(TokenSettings(secret_file=tmp_path / "secret.key"))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """An RSA signing key (2048 bits: the least a verifier takes)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(data: dict[str, Any]) -> str:
    """A JSON object as an unpadded base64url segment."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid customer's claim set, now, with `overrides` (None removes a claim)."""
    now = int(time.time())
    values: dict[str, Any] = {"sub": "customer:2", "iss": "pullgate-dev", "aud": "pullgate", "iat": now,
                              "nbf": now, "exp": now + 600, "customer_id": "2"}
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def refused(verify: Callable[[str], Caller], token: str) -> str:
    """The message `verify` refuses `token` with, checked not to contain the token or its signature."""
    with pytest.raises(Unauthenticated) as caught:
        verify(token)
    message = str(caught.value)
    assert token not in message
    for part in token.split("."):
        assert len(part) < 8 or part not in message
    return message


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_a_good_hs256_token_verifies_to_its_caller(verifier: TokenVerifier, secret: bytes) -> None:
    """A minted token gives back its subject, customer and scopes."""
    caller = verifier.verify(mint(secret, subject="customer:2", customer_id="2", scopes=["orders:read"]))
    assert caller == Caller("customer:2", "2", frozenset({"orders:read"}))
    assert not caller.is_admin
    assert caller.may_see_customer("2")
    assert not caller.may_see_customer("3")
    assert caller.acts_for("2")
    assert caller.describe() == "subject 'customer:2'"


def test_an_admin_token_may_see_every_customer_but_acts_for_none(verifier: TokenVerifier, secret: bytes) -> None:
    """The admin scope, as a string or as an `scp` list, lets a caller read any customer but not act for one."""
    for token in (mint(secret, subject="ops:1", scopes=["admin", "metrics"]),
                  jwt.encode(claims(sub="ops:1", customer_id=None, scp=["admin"]), secret, algorithm="HS256")):
        caller = verifier.verify(token)
        assert caller.is_admin
        assert caller.customer_id is None
        assert caller.may_see_customer("2")
        assert not caller.acts_for("2")


def test_a_token_that_grants_nothing_is_refused(verifier: TokenVerifier, secret: bytes) -> None:
    """A caller must be a customer, an admin or an operator."""
    token = mint(secret, subject="nobody", scopes=["orders:read"])
    assert refused(verifier.verify, token) == ("token has no customer_id claim and no admin or operator scope: "
                                               "it grants nothing")
    operator = verifier.verify(mint(secret, subject="chaos", scopes=["operator"]))
    assert not operator.is_admin and not operator.may_see_customer("1")


def test_malformed_claims_are_refused(verifier: TokenVerifier, secret: bytes) -> None:
    """A numeric customer id or a scope claim of the wrong shape is refused, naming the claim."""
    number = jwt.encode(claims(customer_id=2), secret, algorithm="HS256")
    assert "'customer_id'" in refused(verifier.verify, number)
    scope = jwt.encode(claims(scope={"admin": True}), secret, algorithm="HS256")
    assert "'scope'" in refused(verifier.verify, scope)


def unsigned(payload: dict[str, Any]) -> str:
    """A hand-made `alg: none` token: no signature at all."""
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


def flip(text: str, at: int) -> str:
    """`text` with one base64url character changed."""
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1:]


def tampered_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    return ".".join((header, payload, flip(signature, len(signature) // 2)))


def tampered_payload(token: str) -> str:
    header, _, signature = token.split(".")
    return ".".join((header, b64(claims(customer_id="3")), signature))


REFUSALS: list[tuple[str, Callable[[bytes], str], str]] = [
    ("expired", lambda s: mint(s, subject="c", customer_id="2", now=time.time() - 86400, lifetime=3600),
     "token has expired"),
    ("not yet valid", lambda s: jwt.encode(claims(nbf=int(time.time()) + 3600), s, algorithm="HS256"),
     "token is not valid yet (nbf)"),
    ("issued in the future", lambda s: mint(s, subject="c", customer_id="2", now=time.time() + 3600),
     "token is not valid yet (iat"),
    ("wrong audience", lambda s: mint(s, subject="c", customer_id="2", audience="billing"),
     "token audience is not 'pullgate'"),
    ("no audience", lambda s: jwt.encode(claims(aud=None), s, algorithm="HS256"), "token has no 'aud' claim"),
    ("wrong issuer", lambda s: mint(s, subject="c", customer_id="2", issuer="elsewhere"),
     "token issuer is not 'pullgate-dev'"),
    ("alg none", lambda s: unsigned(claims()), "token algorithm 'none' is not accepted (accepted: HS256)"),
    ("alg HS512 not accepted", lambda s: jwt.encode(claims(), s * 2, algorithm="HS512"),
     "token algorithm 'HS512' is not accepted (accepted: HS256)"),
    ("tampered signature", lambda s: tampered_signature(mint(s, subject="c", customer_id="2")),
     "token signature does not verify"),
    ("tampered payload", lambda s: tampered_payload(mint(s, subject="c", customer_id="2")),
     "token signature does not verify"),
    ("another secret", lambda s: mint(bytes(32), subject="c", customer_id="2"), "token signature does not verify"),
    ("missing exp", lambda s: jwt.encode(claims(exp=None), s, algorithm="HS256"), "token has no 'exp' claim"),
    ("missing sub", lambda s: jwt.encode(claims(sub=None), s, algorithm="HS256"), "token has no 'sub' claim"),
    ("garbage", lambda s: "not-a-token-at-all", "token is malformed"),
    ("bad base64", lambda s: "!!!!.@@@@.####", "token is malformed"),
    ("too long", lambda s: "a" * 9000, "token is longer than 8192 characters"),
]


@pytest.mark.parametrize(("make", "expected"), [(make, expected) for _, make, expected in REFUSALS],
                         ids=[name for name, _, _ in REFUSALS])
def test_a_bad_token_is_refused_naming_the_failure(
        verifier: TokenVerifier, secret: bytes, make: Callable[[bytes], str], expected: str) -> None:
    """Each failure has its own message, and none holds the token."""
    assert expected in refused(verifier.verify, make(secret))


def test_metadata_carries_a_bearer_token_in_any_case(verifier: TokenVerifier, secret: bytes) -> None:
    """The key and the scheme are matched without regard to case; bytes values are read as ASCII."""
    token = mint(secret, subject="customer:2", customer_id="2")
    cases: list[list[tuple[str, str | bytes]]] = [
        [("authorization", f"Bearer {token}")], [("Authorization", f"bearer  {token}")],
        [("x-request-id", "1"), ("AUTHORIZATION", f"BEARER {token}".encode())]]
    for metadata in cases:
        assert verifier.from_metadata(metadata).customer_id == "2"


def test_metadata_without_a_bearer_token_is_refused(verifier: TokenVerifier, secret: bytes) -> None:
    """No authorization entry, an empty one, another scheme or two entries: each is refused by name."""
    token = mint(secret, subject="customer:2", customer_id="2")

    def from_metadata(metadata: list[tuple[str, str | bytes]]) -> Callable[[str], Caller]:
        return lambda _token: verifier.from_metadata(metadata)

    assert refused(from_metadata([]), token) == "no bearer token in the authorization metadata"
    assert refused(lambda _: verifier.from_metadata(None), token) == "no bearer token in the authorization metadata"
    assert "no bearer token" in refused(from_metadata([("authorization", "Bearer ")]), token)
    assert "Bearer" in refused(from_metadata([("authorization", f"Basic {token}")]), token)
    assert "Bearer" in refused(from_metadata([("authorization", token)]), token)  # the token is not echoed
    assert "more than one" in refused(from_metadata([("authorization", f"Bearer {token}")] * 2), token)


def test_rs256_verifies_with_a_public_key_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """An RS256 token checks out against its PEM public key; one signed by another key does not."""
    (tmp_path / "signer.pem").write_bytes(pem(rsa_key))
    verifier = TokenVerifier.from_settings(TokenSettings(algorithms=("RS256",),
                                                         public_key_file=tmp_path / "signer.pem"))
    assert verifier.verify(jwt.encode(claims(), rsa_key, algorithm="RS256")).customer_id == "2"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(verifier.verify, jwt.encode(claims(), other, algorithm="RS256")) == "token signature does not verify"


def test_es256_verifies_with_the_jwks_key_named_by_kid(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """The JWKS key whose kid the token names checks its signature; another key's or an unknown kid does not."""
    signer = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    keys = [{**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(signer.public_key())), "kid": "k1", "use": "sig"},
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(other.public_key())), "kid": "k2", "alg": "ES256"},
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "r1"}]
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
    verifier = TokenVerifier.from_settings(TokenSettings(algorithms=("ES256",), jwks_file=tmp_path / "jwks.json"))
    assert verifier.verify(jwt.encode(claims(), signer, algorithm="ES256", headers={"kid": "k1"})).subject
    assert verifier.verify(jwt.encode(claims(), other, algorithm="ES256", headers={"kid": "k2"})).subject
    wrong_key = jwt.encode(claims(), other, algorithm="ES256", headers={"kid": "k1"})
    assert refused(verifier.verify, wrong_key) == "token signature does not verify"
    unknown = jwt.encode(claims(), signer, algorithm="ES256", headers={"kid": "k9"})
    assert refused(verifier.verify, unknown) == "token key id (kid) is not in the key set"
    no_kid = jwt.encode(claims(), signer, algorithm="ES256")
    assert "names no key" in refused(verifier.verify, no_kid)
    rsa_kid = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "r1"})  # RS256 is not accepted
    assert "'RS256' is not accepted (accepted: ES256)" in refused(verifier.verify, rsa_kid)


def test_an_hs256_token_is_refused_by_an_rs256_verifier(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """Algorithm confusion: an HS256 token, even one keyed with the verifier's own public key, is refused."""
    public = pem(rsa_key)
    (tmp_path / "signer.pem").write_bytes(public)
    verifier = TokenVerifier.from_settings(TokenSettings(algorithms=("RS256",),
                                                         public_key_file=tmp_path / "signer.pem"))
    header, payload = b64({"alg": "HS256", "typ": "JWT"}), b64(claims())
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        f"{header}.{payload}".encode(), public)  # PyJWT will not sign with a PEM key itself, so by hand
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert refused(verifier.verify, token) == "token algorithm 'HS256' is not accepted (accepted: RS256)"


def test_a_verifier_taking_hs_and_rs_uses_each_family_s_own_key(
        tmp_path: Path, secret: bytes, rsa_key: rsa.RSAPrivateKey) -> None:
    """With HS256 and RS256 both accepted, an HS256 token keyed with the public key still does not verify."""
    (tmp_path / "signer.pem").write_bytes(pem(rsa_key))
    settings = TokenSettings(algorithms=("HS256", "RS256"), secret_file=tmp_path / "secret.key",
                             public_key_file=tmp_path / "signer.pem")
    verifier = TokenVerifier.from_settings(settings)
    assert verifier.verify(mint(secret, subject="a", customer_id="2")).subject == "a"
    assert verifier.verify(jwt.encode(claims(sub="b"), rsa_key, algorithm="RS256")).subject == "b"
    header, payload = b64({"alg": "HS256", "typ": "JWT"}), b64(claims())
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        f"{header}.{payload}".encode(), pem(rsa_key))
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    assert refused(verifier.verify, token) == "token signature does not verify"


def test_a_cached_token_is_refused_once_it_expires(
        tmp_path: Path, secret: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeat token is answered from the cache, until its exp (plus the leeway) has passed on the clock."""
    clock = FakeClock()
    verifier = TokenVerifier.from_settings(TokenSettings(secret_file=tmp_path / "secret.key"), clock=clock)
    token = mint(secret, subject="customer:2", customer_id="2", now=clock.now, lifetime=300)
    first = verifier.verify(token)

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached token was decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(jwt, "decode", no_decoding)
        clock.now += 59
        assert verifier.verify(token) is first
    clock.now += 300
    assert refused(verifier.verify, token) == "token has expired"
    clock.now -= 300 - 10  # inside the leeway after exp: still good, as PyJWT would say
    assert verifier.verify(token) == first


def test_settings_from_a_table_resolve_paths_and_parse_durations(tmp_path: Path) -> None:
    """Relative key files are taken from the config's directory; leeway takes a duration string."""
    settings = TokenSettings.from_mapping(
        {"algorithms": ["HS256", "ES256"], "secret_file": "keys/secret", "jwks_file": "/etc/jwks.json",
         "leeway": "5s", "issuer": "idp", "scope_claim": "scp"}, "pullgate.toml", tmp_path)
    assert settings.secret_file == tmp_path / "keys" / "secret"
    assert settings.jwks_file == Path("/etc/jwks.json")
    assert settings.algorithms == ("HS256", "ES256")
    assert settings.leeway == 5.0
    assert (settings.issuer, settings.audience, settings.scope_claim) == ("idp", "pullgate", "scp")


@pytest.mark.parametrize(("table", "key", "problem"), [
    ({"secret_file": "s", "audiences": "x"}, "security.tokens.audiences", "unknown key"),
    ({"secret_file": "s", "algorithms": ["none"]}, "security.tokens.algorithms", "'none' is never accepted"),
    ({"secret_file": "s", "algorithms": ["HS256", "EdDSA"]}, "security.tokens.algorithms", "'EdDSA' is not one"),
    ({"secret_file": "s", "algorithms": []}, "security.tokens.algorithms", "at least one"),
    ({"secret_file": "s", "algorithms": "HS256"}, "security.tokens.algorithms", "must be a list"),
    ({}, "security.tokens.secret_file", "is needed"),
    ({"algorithms": ["RS256"]}, "security.tokens.public_key_file", "is needed"),
    ({"algorithms": ["RS256"], "public_key_file": "p", "jwks_file": "j"}, "security.tokens.jwks_file", "not both"),
    ({"algorithms": ["RS256"], "public_key_file": "p", "secret_file": "s"}, "security.tokens.secret_file",
     "no HS* algorithm"),
    ({"secret_file": 3}, "security.tokens.secret_file", "must be a file path"),
    ({"secret_file": "s", "leeway": "soon"}, "security.tokens.leeway", "soon"),
    ({"secret_file": "s", "leeway": -1}, "security.tokens.leeway", "0 or more"),
    ({"secret_file": "s", "issuer": ""}, "security.tokens.issuer", "non-empty string"),
])
def test_a_wrong_table_names_the_key_and_the_file(tmp_path: Path, table: dict[str, Any], key: str,
                                                  problem: str) -> None:
    """Every wrong key or value is a ConfigError naming `security.tokens.<key>` and the config file."""
    with pytest.raises(ConfigError) as caught:
        TokenSettings.from_mapping(table, "conf/pullgate.toml", tmp_path)
    assert caught.value.key == key
    assert caught.value.source == "conf/pullgate.toml"
    assert problem in caught.value.problem


def test_unusable_key_files_name_the_key_and_the_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """A missing, short or wrong-kind key file is a ConfigError naming the setting and the file."""
    def problem(settings: TokenSettings, key: str, path: Path) -> str:
        with pytest.raises(ConfigError) as caught:
            TokenVerifier.from_settings(settings)
        assert (caught.value.key, caught.value.source) == (f"security.tokens.{key}", str(path))
        return caught.value.problem

    missing = tmp_path / "missing.key"
    assert "cannot read" in problem(TokenSettings(secret_file=missing), "secret_file", missing)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 16)
    assert "16 bytes" in problem(TokenSettings(secret_file=short), "secret_file", short)
    public = tmp_path / "public.pem"
    public.write_bytes(pem(rsa_key))
    assert "asymmetric" in problem(TokenSettings(secret_file=public), "secret_file", public)
    assert "ES256" in problem(TokenSettings(algorithms=("ES256",), public_key_file=public), "public_key_file", public)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key))]}))
    assert "private" in problem(TokenSettings(algorithms=("RS256",), jwks_file=jwks), "jwks_file", jwks)
    jwks.write_text("{}")
    assert "not a JWKS" in problem(TokenSettings(algorithms=("RS256",), jwks_file=jwks), "jwks_file", jwks)


def test_ensure_secret_makes_a_private_file_once(tmp_path: Path) -> None:
    """The secret is 32 bytes, mode 0600, and the same on every later call; nothing is left beside it."""
    path = tmp_path / "dev" / "tokens.key"
    first = ensure_secret(path)
    assert len(first) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_secret(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["tokens.key"]


def test_mint_writes_the_claims_a_verifier_needs(secret: bytes) -> None:
    """A minted token carries iat, nbf, exp, iss, aud, customer_id and a space-separated scope."""
    token = mint(secret, subject="customer:2", customer_id="2", scopes=["b", "a"], now=1000.0, lifetime=60)
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload == {"sub": "customer:2", "iss": "pullgate-dev", "aud": "pullgate", "iat": 1000, "nbf": 1000,
                       "exp": 1060, "customer_id": "2", "scope": "a b"}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    with pytest.raises(ValueError, match="spaces"):
        mint(secret, subject="x", scopes=["a b"])
