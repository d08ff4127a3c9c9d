"""Callers' bearer tokens (JWTs): who is calling the gateway, checked once per call, and minted for development.

External callers present `authorization: Bearer <JWT>`; the gateway's interceptor asks `TokenVerifier` for the
`Caller` behind it, and the object-level checks ask the `Caller` whose data it may see. A refusal is
`Unauthenticated`, whose message says what failed and never holds the token: messages reach callers and logs.

    [security.tokens]                 # every key is optional but the key files; see TokenSettings
    algorithms = ["HS256"]
    secret_file = "secrets/tokens.key"    # relative to the config file

Keys are chosen by the token header's algorithm family (HS* use the secret, RS*/PS*/ES* the public key or the
JWKS entry named by `kid`), so a public key can never be used as an HMAC secret (algorithm confusion), and
`none` is never accepted. Verification is on every call's path, so verified tokens are cached for up to a
minute (never past their `exp`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import jwt
from cachetools import TLRUCache
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidSubjectError

from resilience import ConfigError, DurationError, parse_seconds

ADMIN_SCOPE = "admin"
"""The scope that lets a caller read any customer's data."""

OPERATOR_SCOPE = "operator"
"""The scope that lets a caller use the gateway's admin service (faults at run time, where allowed)."""

KEY = "security.tokens"
"""The config table these settings come from; ConfigError keys are `security.tokens.<key>`."""

HMAC_ALGORITHMS: Mapping[str, int] = {"HS256": 32, "HS384": 48, "HS512": 64}
"""The HMAC algorithms and the shortest secret each takes, in bytes (its hash's size, RFC 7518 §3.2)."""

RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256"})
EC_ALGORITHMS: Mapping[str, str] = {"ES256": "secp256r1", "ES384": "secp384r1"}
"""The ECDSA algorithms and the curve each must be used with."""

ALGORITHMS = frozenset(HMAC_ALGORITHMS) | RSA_ALGORITHMS | frozenset(EC_ALGORITHMS)
"""Every algorithm a verifier can be configured to accept. Never `none`."""

MIN_RSA_BITS = 2048
MAX_TOKEN_LENGTH = 8192
"""Longer tokens are refused before they are parsed (grpc's default metadata limit is 8 KiB anyway)."""

CACHE_SIZE = 1024
CACHE_LIFETIME = 60.0
"""Seconds a verified token is remembered at most; never past its `exp`."""

REQUIRED_CLAIMS = ("exp", "iat", "sub")

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class Unauthenticated(Exception):
    """The caller is not known: no token, or one that does not verify. The message says which check failed and
    never includes the token; the gateway answers UNAUTHENTICATED with it."""


@dataclass(frozen=True)
class Caller:
    """Who a verified token says is calling: its subject, the customer it acts for (if any) and its scopes."""

    subject: str
    customer_id: str | None
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    def may_see_customer(self, customer_id: str) -> bool:
        """Whether this caller may read `customer_id`'s orders and overview: an admin, or that customer."""
        return self.is_admin or self.acts_for(customer_id)

    def acts_for(self, customer_id: str) -> bool:
        """Whether this caller is `customer_id` itself: what placing an order for it takes (the admin scope lets
        a caller read any customer's data, not act for it)."""
        return self.customer_id is not None and self.customer_id == customer_id

    def describe(self) -> str:
        """A short text naming the caller for error messages, e.g. "subject 'customer:2'"."""
        return f"subject {self.subject!r}"


@dataclass(frozen=True)
class TokenSettings:
    """The `[security.tokens]` table: what a token must say and the keys that check its signature.

    `secret_file` holds the HS* shared secret (raw bytes, at least the hash's size); `public_key_file` a PEM
    public key (or certificate) for RS*/PS*/ES*; `jwks_file` a JWKS whose key is picked by the token's `kid`
    (one of the two, not both). `leeway` is the clock skew allowed on exp/nbf/iat, in seconds. The caller's
    customer is the `customer_claim` claim; its scopes are `scope_claim` (a space-separated string or a list)
    and `scp`. A wrong value raises ConfigError naming the field; `from_mapping` adds the table and the file.
    """

    issuer: str = "pullgate-dev"
    audience: str = "pullgate"
    algorithms: tuple[str, ...] = ("HS256",)
    secret_file: Path | None = None
    public_key_file: Path | None = None
    jwks_file: Path | None = None
    leeway: float = 30.0
    customer_claim: str = "customer_id"
    scope_claim: str = "scope"

    _TEXT: ClassVar[tuple[str, ...]] = ("issuer", "audience", "customer_claim", "scope_claim")
    _FILES: ClassVar[tuple[str, ...]] = ("secret_file", "public_key_file", "jwks_file")

    def __post_init__(self) -> None:
        for name in self._TEXT:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(name, f"must be a non-empty string, got {value!r}")
        if not self.algorithms:
            raise ConfigError("algorithms", f"must name at least one of {', '.join(sorted(ALGORITHMS))}")
        for position, name in enumerate(self.algorithms):
            if isinstance(name, str) and name.lower() == "none":
                raise ConfigError("algorithms", "'none' is never accepted: an unsigned token proves nothing")
            if name not in ALGORITHMS:
                raise ConfigError("algorithms", f"{name!r} is not one of {', '.join(sorted(ALGORITHMS))}")
            if name in self.algorithms[:position]:
                raise ConfigError("algorithms", f"names {name!r} twice")
        if not math.isfinite(self.leeway) or self.leeway < 0:
            raise ConfigError("leeway", f"must be a duration of 0 or more, got {self.leeway!r}")
        hmac = [name for name in self.algorithms if name in HMAC_ALGORITHMS]
        public = [name for name in self.algorithms if name not in HMAC_ALGORITHMS]
        if hmac and self.secret_file is None:
            raise ConfigError("secret_file", f"is needed: {hmac[0]} tokens are checked with a shared secret")
        if not hmac and self.secret_file is not None:
            raise ConfigError("secret_file", "is set but no HS* algorithm is accepted (see algorithms)")
        if self.public_key_file is not None and self.jwks_file is not None:
            raise ConfigError("jwks_file", "set either public_key_file or jwks_file, not both")
        has_public = self.public_key_file is not None or self.jwks_file is not None
        if public and not has_public:
            raise ConfigError("public_key_file", f"(or jwks_file) is needed: {public[0]} tokens are checked with "
                                                 "a public key")
        if not public and has_public:
            which = "public_key_file" if self.public_key_file is not None else "jwks_file"
            raise ConfigError(which, "is set but no RS*, PS* or ES* algorithm is accepted (see algorithms)")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str, base_dir: Path) -> TokenSettings:
        """Build from the `[security.tokens]` table of `source`; relative paths are taken from `base_dir` (the
        config file's directory). A wrong key or value raises ConfigError naming `security.tokens.<key>` and
        `source`."""
        if not isinstance(data, Mapping):
            raise ConfigError(KEY, "must be a table", source)
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(f"{KEY}.{key}", f"unknown key (known: {', '.join(sorted(known))})", source)
            try:
                values[key] = _setting(key, value, base_dir)
            except ConfigError as error:
                raise ConfigError(f"{KEY}.{error.key}", error.problem, source) from None
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(f"{KEY}.{error.key}", error.problem, source) from None


def _setting(key: str, value: Any, base_dir: Path) -> Any:
    """One key's TOML value as its field's type; ConfigError naming the key if it has the wrong shape."""
    if key in TokenSettings._FILES:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, f"must be a file path, got {value!r}")
        return base_dir / Path(value).expanduser()
    if key == "algorithms":
        if not isinstance(value, list | tuple) or not all(isinstance(name, str) for name in value):
            raise ConfigError(key, f'must be a list of algorithm names such as ["HS256"], got {value!r}')
        return tuple(value)
    if key == "leeway":
        try:
            return parse_seconds(value)
        except DurationError as error:
            raise ConfigError(key, str(error)) from None
    return value  # the text keys; TokenSettings checks them


@dataclass(frozen=True)
class _Verified:
    """A cache entry: the caller a token verified to and its `exp`."""

    caller: Caller
    expires: float


@dataclass(frozen=True)
class _JwksKey:
    key: PublicKey
    algorithm: str | None  # the JWK's `alg`, if it names one: then only that algorithm may use the key


class TokenVerifier:
    """Checks bearer tokens against one TokenSettings and says who the caller is. Key files are read once, when
    it is built. Verified tokens are cached (bounded, at most a minute, never past `exp`, and a hit is checked
    against `exp` again), so a caller's repeated token costs a dictionary lookup.

    `clock` is the time the cache and the expiry checks use; PyJWT also checks exp/nbf/iat against the system
    clock, so the two agree unless a test moves `clock`: then a token is refused if either says so.
    """

    def __init__(self, settings: TokenSettings, *, secret: bytes | None = None, public_key: PublicKey | None = None,
                 jwks: Mapping[str, _JwksKey] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._secret = secret
        self._public_key = public_key
        self._jwks = dict(jwks or {})
        self._clock = clock
        self._accepted = ", ".join(settings.algorithms)
        self._lock = threading.Lock()
        self._cache: TLRUCache[str, _Verified, float] = TLRUCache(
            CACHE_SIZE, lambda _token, entry, now: min(entry.expires, now + CACHE_LIFETIME), clock)

    @classmethod
    def from_settings(cls, settings: TokenSettings, *, clock: Callable[[], float] = time.time) -> TokenVerifier:
        """A verifier with the settings' key files read and checked; ConfigError names the key and the file if
        one cannot be read or holds no key fit for the accepted algorithms."""
        secret = None if settings.secret_file is None else _load_secret(settings.secret_file, settings.algorithms)
        public_key = (None if settings.public_key_file is None
                      else _load_public_key(settings.public_key_file, settings.algorithms))
        jwks = None if settings.jwks_file is None else _load_jwks(settings.jwks_file, settings.algorithms)
        return cls(settings, secret=secret, public_key=public_key, jwks=jwks, clock=clock)

    def from_metadata(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Caller:
        """The caller behind a call's `authorization: Bearer <token>` metadata (key and scheme in any case)."""
        values = [value for key, value in metadata or () if key.lower() == "authorization"]
        if not values:
            raise Unauthenticated("no bearer token in the authorization metadata")
        if len(values) > 1:
            raise Unauthenticated("the metadata has more than one authorization entry")
        value = values[0]
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                raise Unauthenticated("the authorization metadata is not ASCII text") from None
        parts = value.split(None, 1)
        if not parts:
            raise Unauthenticated("no bearer token in the authorization metadata")
        if parts[0].lower() != "bearer":  # the scheme is not echoed: it may be a token sent without one
            raise Unauthenticated("the authorization metadata does not use the Bearer scheme "
                                  "(expected 'Bearer <token>')")
        if len(parts) == 1 or not parts[1].strip():
            raise Unauthenticated("no bearer token in the authorization metadata (the Bearer scheme without one)")
        return self.verify(parts[1].strip())

    def verify(self, token: str) -> Caller:
        """The caller a token names, if its signature, algorithm, issuer, audience and times check out and it
        names a customer or carries the admin scope; Unauthenticated saying what failed otherwise."""
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None:
            self._check_expiry(hit.expires)
            return hit.caller
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthenticated(f"token is longer than {MAX_TOKEN_LENGTH} characters")
        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
            key = self._key_for(header)
            claims = jwt.decode(
                token, key, algorithms=list(settings.algorithms), audience=settings.audience,
                issuer=settings.issuer, leeway=settings.leeway,
                options={"require": list(REQUIRED_CLAIMS), "enforce_minimum_key_length": True})
        except jwt.PyJWTError as error:
            raise self._refusal(error) from None
        expires = float(claims["exp"])
        self._check_expiry(expires)
        self._check_not_before(claims)
        caller = self._caller(claims)
        with self._lock:
            self._cache[token] = _Verified(caller, expires)
        return caller

    def _key_for(self, header: Mapping[str, Any]) -> bytes | PublicKey:
        """The key for the token's algorithm, chosen by its family (never a public key as an HMAC secret)."""
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self.settings.algorithms:
            raise Unauthenticated(f"token algorithm {_shown(algorithm)} is not accepted (accepted: {self._accepted})")
        if algorithm in HMAC_ALGORITHMS:
            assert self._secret is not None  # TokenSettings: an HS* algorithm has its secret_file
            return self._secret
        if self._public_key is not None:
            return self._public_key  # checked at construction to fit every accepted algorithm
        kid = header.get("kid")
        if kid is None:
            if len(self._jwks) != 1:
                raise Unauthenticated("token names no key (kid) and the key set has more than one")
            entry = next(iter(self._jwks.values()))
        elif (found := self._jwks.get(kid)) is None:
            raise Unauthenticated("token key id (kid) is not in the key set")
        else:
            entry = found
        if not _fits(entry.key, algorithm) or entry.algorithm not in (None, algorithm):
            raise Unauthenticated(f"token algorithm {algorithm!r} is not the algorithm of its key (kid)")
        return entry.key

    def _refusal(self, error: jwt.PyJWTError) -> Unauthenticated:
        """What a PyJWT error means, in words that never quote the token (PyJWT's own may, in later versions)."""
        settings = self.settings
        match error:
            case jwt.ExpiredSignatureError():
                text = "token has expired"
            case jwt.ImmatureSignatureError() if "(iat)" in str(error):
                text = "token is not valid yet (iat: issued in the future)"
            case jwt.ImmatureSignatureError():
                text = "token is not valid yet (nbf)"
            case jwt.InvalidAudienceError():
                text = f"token audience is not {settings.audience!r}"
            case jwt.InvalidIssuerError():
                text = f"token issuer is not {settings.issuer!r}"
            case jwt.InvalidAlgorithmError():
                text = f"token algorithm is not accepted (accepted: {self._accepted})"
            case jwt.InvalidSignatureError():
                text = "token signature does not verify"
            case jwt.MissingRequiredClaimError():
                text = f"token has no {error.claim!r} claim"
            case jwt.InvalidIssuedAtError():
                text = "token issued-at time (iat) is not a number"
            case InvalidSubjectError():
                text = "token subject (sub) is not a string"
            case jwt.InvalidKeyError():
                text = "token key is not fit for its algorithm"
            case jwt.DecodeError():
                text = "token is malformed"
            case jwt.InvalidTokenError():
                text = "token is malformed (header or claims)"
            case _:
                text = "token is not valid"
        return Unauthenticated(text)

    def _check_expiry(self, expires: float) -> None:
        """PyJWT's rule (expired once `exp` is `leeway` in the past) against this verifier's clock."""
        if expires <= self._clock() - self.settings.leeway:
            raise Unauthenticated("token has expired")

    def _check_not_before(self, claims: Mapping[str, Any]) -> None:
        """PyJWT's nbf rule against this verifier's clock (PyJWT has checked the claim is a number)."""
        if "nbf" in claims and float(claims["nbf"]) > self._clock() + self.settings.leeway:
            raise Unauthenticated("token is not valid yet (nbf)")

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        settings = self.settings
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token subject (sub) is not a non-empty string")
        customer_id = claims.get(settings.customer_claim)
        if customer_id is not None and (not isinstance(customer_id, str) or not customer_id):
            raise Unauthenticated(f"token claim {settings.customer_claim!r} is not a non-empty string")
        scopes: set[str] = set()
        for name in dict.fromkeys((settings.scope_claim, "scp")):
            scopes |= _scopes(claims.get(name), name)
        caller = Caller(subject, customer_id, frozenset(scopes))
        if customer_id is None and not scopes & {ADMIN_SCOPE, OPERATOR_SCOPE}:
            raise Unauthenticated(f"token has no {settings.customer_claim} claim and no {ADMIN_SCOPE} or "
                                  f"{OPERATOR_SCOPE} scope: it grants nothing")
        return caller


def _scopes(value: Any, claim: str) -> set[str]:
    """A scope claim's scopes: a space-separated string (RFC 8693) or a list of strings."""
    if value is None:
        return set()
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list) and all(isinstance(scope, str) for scope in value):
        return {scope for scope in value if scope}
    raise Unauthenticated(f"token claim {claim!r} is not a space-separated string or a list of strings")


def _shown(algorithm: object) -> str:
    """A header's `alg` for a message: quoted if it looks like an algorithm name, else not at all."""
    if isinstance(algorithm, str) and re.fullmatch(r"[A-Za-z0-9_.+-]{1,16}", algorithm):
        return repr(algorithm)
    return "(missing or unreadable)" if algorithm is None or isinstance(algorithm, str) else "(not a string)"


def _fits(key: PublicKey, algorithm: str) -> bool:
    """Whether `key` can check `algorithm`'s signatures: RSA for RS*/PS*, the algorithm's curve for ES*."""
    if algorithm in RSA_ALGORITHMS:
        return isinstance(key, rsa.RSAPublicKey)
    curve = EC_ALGORITHMS.get(algorithm)
    return curve is not None and isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == curve


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{KEY}.{key}", f"cannot read the file: {error.strerror or error}", str(path)) from None


def _load_secret(path: Path, algorithms: Iterable[str]) -> bytes:
    """The HS* secret: the file's raw bytes, as long as the strongest accepted HS* hash, and not a PEM key."""
    secret = _read(path, "secret_file")
    needed = max(HMAC_ALGORITHMS[name] for name in algorithms if name in HMAC_ALGORITHMS)
    if len(secret) < needed:
        raise ConfigError(f"{KEY}.secret_file", f"the secret is {len(secret)} bytes; the accepted HS* algorithms "
                                                f"need at least {needed} (ensure_secret makes 32)",
                          str(path))
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except jwt.InvalidKeyError:
        raise ConfigError(f"{KEY}.secret_file", "holds an asymmetric key or certificate, not a shared secret",
                          str(path)) from None
    return secret


def _load_public_key(path: Path, algorithms: Iterable[str]) -> PublicKey:
    """The PEM public key (or certificate's key), checked to fit every accepted RS*/PS*/ES* algorithm."""
    data = _read(path, "public_key_file")
    try:
        loaded = (x509.load_pem_x509_certificate(data).public_key() if b"-----BEGIN CERTIFICATE" in data
                  else load_pem_public_key(data))
    except ValueError:
        raise ConfigError(f"{KEY}.public_key_file", "is not a PEM public key or certificate", str(path)) from None
    if not isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ConfigError(f"{KEY}.public_key_file", f"holds a {type(loaded).__name__}; RSA or EC keys only",
                          str(path))
    _check_strength(loaded, "public_key_file", path)
    for name in algorithms:
        if name not in HMAC_ALGORITHMS and not _fits(loaded, name):
            raise ConfigError(f"{KEY}.public_key_file", f"holds a key that cannot check {name} signatures "
                                                        f"({_kind(loaded)})", str(path))
    return loaded


def _load_jwks(path: Path, algorithms: Iterable[str]) -> dict[str, _JwksKey]:
    """The JWKS's signing keys that fit an accepted algorithm, by `kid` (a key without one is kept only when it
    is the only key). Private keys, duplicate ids and a set with no usable key are ConfigErrors."""
    key = f"{KEY}.jwks_file"
    try:
        document = json.loads(_read(path, "jwks_file"))
    except ValueError as error:
        raise ConfigError(key, f"is not JSON: {error}", str(path)) from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(key, 'is not a JWKS: expected {"keys": [...]}', str(path))
    accepted = [name for name in algorithms if name not in HMAC_ALGORITHMS]
    keys: dict[str, _JwksKey] = {}
    for index, entry in enumerate(entries):
        where = f"key {index}"
        if not isinstance(entry, dict):
            raise ConfigError(key, f"{where} is not a JSON object", str(path))
        kid = entry.get("kid", "")
        if not isinstance(kid, str):
            raise ConfigError(key, f"{where} has a kid that is not a string", str(path))
        where = f"key {index} ({kid!r})" if kid else where
        if "d" in entry or entry.get("kty") == "oct":
            raise ConfigError(key, f"{where} is private or symmetric key material; a verifier takes public keys "
                                   "only (HS* secrets go in secret_file)", str(path))
        if entry.get("use", "sig") != "sig":
            continue
        try:
            loaded = jwt.PyJWK(entry).key
        except jwt.PyJWTError as error:
            raise ConfigError(key, f"{where} is not a usable JWK: {error}", str(path)) from None
        if not isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            continue  # e.g. an Ed25519 key: none of the accepted algorithms could use it
        algorithm = entry.get("alg")
        if not any(_fits(loaded, name) and algorithm in (None, name) for name in accepted):
            continue  # a key for algorithms this verifier does not accept
        _check_strength(loaded, "jwks_file", path, where)
        if kid in keys:
            raise ConfigError(key, f"{where}: the kid is used by an earlier key too", str(path))
        keys[kid] = _JwksKey(loaded, algorithm if isinstance(algorithm, str) else None)
    if not keys:
        raise ConfigError(key, f"has no public signing key for {', '.join(accepted)}", str(path))
    if "" in keys and len(keys) > 1:
        raise ConfigError(key, "has a key without a kid beside others: tokens could not say which they mean",
                          str(path))
    return keys


def _check_strength(key: PublicKey, name: str, path: Path, where: str = "the key") -> None:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ConfigError(f"{KEY}.{name}", f"{where} is a {key.key_size}-bit RSA key; at least {MIN_RSA_BITS} "
                                           "bits are needed", str(path))


def _kind(key: PublicKey) -> str:
    return "an RSA key" if isinstance(key, rsa.RSAPublicKey) else f"an EC key on {key.curve.name}"


def ensure_secret(path: Path) -> bytes:
    """The development HS256 secret at `path`, made first if missing: 32 random bytes, mode 0600, appearing
    whole (written aside, then linked into place, so two processes racing to make it end up with one)."""
    try:
        return _existing_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, aside = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(32))
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(aside, path)
    finally:
        os.unlink(aside)
    return _existing_secret(path)


def _existing_secret(path: Path) -> bytes:
    secret = path.read_bytes()
    if not secret:
        raise ValueError(f"{path}: the token secret file is empty; delete it to have a new one made")
    return secret


def mint(secret: bytes, *, subject: str, customer_id: str | None = None, scopes: Iterable[str] = (),
         issuer: str = "pullgate-dev", audience: str = "pullgate", lifetime: float = 3600 * 12,
         now: float | None = None) -> str:
    """A development HS256 token for `subject`: iat, nbf and exp (`lifetime` seconds on from `now`), iss, aud,
    and the `customer_id` and `scope` (space-separated) claims when given."""
    if not subject:
        raise ValueError("subject must not be empty")
    if not lifetime > 0:
        raise ValueError(f"lifetime must be more than 0 seconds, got {lifetime!r}")
    if len(secret) < HMAC_ALGORITHMS["HS256"]:
        raise ValueError(f"the secret is {len(secret)} bytes; HS256 needs at least {HMAC_ALGORITHMS['HS256']}")
    granted = sorted(set(scopes))
    for scope in granted:
        if not scope or any(c.isspace() for c in scope):
            raise ValueError(f"scope {scope!r} must be a non-empty word without spaces")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "iss": issuer, "aud": audience,
                              "iat": issued, "nbf": issued, "exp": int(issued + lifetime)}
    if customer_id is not None:
        claims["customer_id"] = customer_id
    if granted:
        claims["scope"] = " ".join(granted)
    return jwt.encode(claims, secret, algorithm="HS256")
