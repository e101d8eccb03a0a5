"""Bearer tokens: verification of the identity provider's JWTs and minting of demo tokens.

Only asymmetric algorithms are accepted and the list is pinned from settings, so a token that
claims ``alg: none`` or an HMAC algorithm (the classic trick of signing with the public key as the
HMAC secret) is refused before any signature check, and so is an algorithm of another family
than the key (an ES256 token against an RSA key). ``iss``, ``aud``, ``exp`` and ``sub`` are
required (a missing one is named); ``exp``, ``nbf`` and ``iat`` are honoured with a 30 s leeway,
``iat`` may not lie in the future, and a token may be valid for at most
``CASEMGMT_JWT_MAX_LIFETIME_MINUTES`` (from ``iat``, or from now without ``iat``). A header with
``crit`` is refused: this service understands no critical extension. The organisation and roles
come from the ``org`` and ``roles`` claims, or from the claim paths configured for the identity
provider (Keycloak: ``realm_access.roles``, a group path such as ``/organisationen/ennetal_abh``).

Keys come from a PEM file, a JWKS file, or (``CASEMGMT_OIDC_ISSUER``) the identity provider's
JWKS URL found through OpenID Connect discovery: see :class:`RemoteJwks`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import JWTError, jwk, jwt
from jose.backends import ECKey, RSAKey
from jose.exceptions import JWTClaimsError

from casemgmt.config import Settings
from casemgmt.problems import NotAuthenticated

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"})


@dataclass(frozen=True)
class TokenClaims:
    """What the service takes from a verified token."""

    user_id: str
    organisation_key: str
    roles: tuple[str, ...]


class KeyConfigurationError(Exception):
    """The configured verification keys cannot be used (startup error)."""


def _dev_key_paths(settings: Settings) -> tuple[Path, Path]:
    return settings.dev_key_dir / "private.pem", settings.dev_key_dir / "public.pem"


def ensure_dev_keys(settings: Settings) -> tuple[Path, Path]:
    """Generate the development RSA key pair on first use (never committed: .gitignore)."""
    private_path, public_path = _dev_key_paths(settings)
    if private_path.exists() and public_path.exists():
        return private_path, public_path
    settings.dev_key_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    log.warning("generated a development key pair in %s (not for production)", settings.dev_key_dir)
    return private_path, public_path


def parse_jwks(doc: Any, algorithms: list[str], where: str) -> dict[str | None, Any]:
    """The signing keys of a JWKS document usable with ``algorithms``, by ``kid``."""
    try:
        entries = doc["keys"]
        if not isinstance(entries, list):
            raise TypeError("keys is not a list")
    except (KeyError, TypeError) as exc:
        raise KeyConfigurationError(f"{where}: not a JWKS document ({exc})") from exc
    keys: dict[str | None, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        alg = entry.get("alg") or algorithms[0]
        if alg not in algorithms:
            continue
        try:
            keys[entry.get("kid")] = jwk.construct(entry, alg)
        except Exception as exc:  # jose raises assorted errors for malformed keys
            raise KeyConfigurationError(f"{where}: bad key {entry.get('kid')}: {exc}") from exc
    if not keys:
        raise KeyConfigurationError(f"{where}: no signing key for {algorithms}")
    return keys


MAX_DOCUMENT_BYTES = 1024 * 1024


def fetch_json(url: str, timeout: float) -> tuple[Any, dict[str, str]]:
    """GET a JSON document (at most 1 MiB); returns it with the response headers."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (https checked)
        body = response.read(MAX_DOCUMENT_BYTES + 1)
        if len(body) > MAX_DOCUMENT_BYTES:
            raise ValueError("document larger than 1 MiB")
        return json.loads(body), {k.lower(): v for k, v in response.headers.items()}


def _check_url(url: str, what: str) -> None:
    """Keys must come over TLS; plain http only from this machine (tests, a sidecar proxy)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and parsed.hostname:
        host = parsed.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:
            return
    raise KeyConfigurationError(f"{what} {url!r} must be an https URL (http only on loopback)")


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


def cache_seconds(cache_control: str | None, default: float, maximum: float) -> float:
    """How long a JWKS answer may be kept: its ``max-age``, 0 for ``no-store``/``no-cache``, else
    ``default``; never more than ``maximum``."""
    if cache_control:
        lowered = cache_control.lower()
        if "no-store" in lowered or "no-cache" in lowered:
            return 0.0
        match = _MAX_AGE.search(cache_control)
        if match:
            return min(float(match.group(1)), maximum)
    return min(default, maximum)


class RemoteJwks:
    """The identity provider's signing keys, from OpenID Connect discovery, cached.

    At start the discovery document ``{issuer}/.well-known/openid-configuration`` is read (its
    ``issuer`` must be the configured one, OIDC Discovery 4.3) and the keys are fetched from its
    ``jwks_uri``. They are kept as long as the answer's ``Cache-Control: max-age`` allows. A token
    naming a ``kid`` that is not cached makes the keys be fetched again, at most once per
    ``min_refresh`` seconds (so a flood of invented ``kid`` values costs the provider one request
    per interval), which lets the provider rotate keys without a restart: the new key is found at
    the first token signed with it, and a key the provider dropped is forgotten at that fetch.
    When the provider cannot be reached the keys already held stay in use.
    """

    def __init__(self, issuer: str, algorithms: list[str], *, min_refresh: float = 60.0,
                 default_cache: float = 300.0, max_cache: float = 86400.0, timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 fetch: Callable[[str, float], tuple[Any, dict[str, str]]] = fetch_json):
        self.issuer = issuer
        self.algorithms = algorithms
        self.min_refresh = min_refresh
        self.default_cache = default_cache
        self.max_cache = max_cache
        self.timeout = timeout
        self.clock = clock
        self.fetch = fetch
        self.fetches = 0
        self._lock = threading.Lock()
        self._keys: dict[str | None, Any] = {}
        self._fetched_at = -math.inf
        self._expires_at = -math.inf
        self.jwks_uri = self._discover()
        self._refresh(initial=True)

    def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        _check_url(url, "CASEMGMT_OIDC_ISSUER")
        try:
            doc, _headers = self.fetch(url, self.timeout)
        except (OSError, ValueError) as exc:
            raise KeyConfigurationError(f"cannot read the OpenID Connect discovery document {url}: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
            raise KeyConfigurationError(
                f"{url} names the issuer {doc.get('issuer') if isinstance(doc, dict) else None!r}, "
                f"not {self.issuer!r}: CASEMGMT_OIDC_ISSUER must be the issuer exactly as the provider writes it")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise KeyConfigurationError(f"{url} names no jwks_uri")
        _check_url(jwks_uri, "the provider's jwks_uri")
        return jwks_uri

    def _refresh(self, initial: bool = False) -> None:
        """Fetch the keys (the caller holds the lock, or it is the constructor)."""
        now = self.clock()
        self._fetched_at = now
        self.fetches += 1
        try:
            doc, headers = self.fetch(self.jwks_uri, self.timeout)
            keys = parse_jwks(doc, self.algorithms, self.jwks_uri)
        except (OSError, ValueError, KeyConfigurationError) as exc:
            if initial:
                raise KeyConfigurationError(f"cannot read the provider's keys from {self.jwks_uri}: {exc}") from exc
            log.warning("could not refresh the identity provider's keys (%s); keeping the %d keys held",
                        type(exc).__name__, len(self._keys))
            return
        self._keys = keys
        self._expires_at = now + cache_seconds(headers.get("cache-control"), self.default_cache, self.max_cache)

    def key_for(self, kid: str | None) -> Any:
        with self._lock:
            now = self.clock()
            may_fetch = now - self._fetched_at >= self.min_refresh
            if (now >= self._expires_at or kid not in self._keys) and may_fetch:
                self._refresh()
            if kid in self._keys:
                return self._keys[kid]
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
        raise NotAuthenticated("the token is signed with an unknown key")


def verify_once(scope: dict[str, Any], verifier: TokenVerifier, token: str) -> TokenClaims:
    """The claims of ``token``, verified at most once per request: the rate limiter, the query
    check and the route's authentication each need them. Kept in the state of the request's ASGI
    ``scope``; only a token that verified is remembered, and only for this exact token text, so
    a refusal is raised again wherever it is asked."""
    state = scope.setdefault("state", {})
    seen = state.get(_VERIFIED_BEARER)
    if seen is not None and seen[0] == token:
        return seen[1]
    claims = verifier.verify(token)
    state[_VERIFIED_BEARER] = (token, claims)
    return claims


_VERIFIED_BEARER = "casemgmt.verified_bearer"


class TokenVerifier:
    """Verifies bearer tokens against a PEM public key, a JWKS document, or the identity
    provider's keys found through OpenID Connect discovery."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic,
                 fetch: Callable[[str, float], tuple[Any, dict[str, str]]] = fetch_json):
        self.issuer = settings.oidc_issuer or settings.jwt_issuer
        self.max_lifetime_seconds = settings.jwt_max_lifetime_minutes * 60
        self.audience = settings.jwt_audience
        self.algorithms = list(settings.jwt_algorithms)
        self.claim_paths = ClaimPaths.from_settings(settings)
        bad = [a for a in self.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not self.algorithms:
            raise KeyConfigurationError(
                f"CASEMGMT_JWT_ALGORITHMS must list asymmetric algorithms only, got {bad or '[]'}"
            )
        self._keys: dict[str | None, Any] = {}
        self.remote: RemoteJwks | None = None
        if settings.oidc_issuer:
            self.remote = RemoteJwks(
                settings.oidc_issuer, self.algorithms, min_refresh=settings.oidc_jwks_min_refresh_seconds,
                default_cache=settings.oidc_jwks_default_cache_seconds,
                max_cache=settings.oidc_jwks_max_cache_seconds, timeout=settings.oidc_http_timeout_seconds,
                clock=clock, fetch=fetch)
        elif settings.jwt_jwks_file:
            self._load_jwks(settings.jwt_jwks_file)
        else:
            path = settings.jwt_public_key_file or ensure_dev_keys(settings)[1]
            try:
                pem = path.read_text()
            except OSError as exc:
                raise KeyConfigurationError(f"cannot read public key {path}: {exc}") from exc
            try:
                # Parsed once here; handing jose the PEM text would parse it on every request.
                self._keys[None] = jwk.construct(pem, self.algorithms[0])
            except Exception as exc:  # jose raises assorted errors for malformed keys
                raise KeyConfigurationError(f"{path}: not a usable public key ({exc})") from exc

    def _load_jwks(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise KeyConfigurationError(f"{path}: not a JWKS document ({exc})") from exc
        self._keys = parse_jwks(doc, self.algorithms, str(path))

    def _key_for(self, header: dict[str, Any]) -> Any:
        if self.remote is not None:
            kid = header.get("kid")
            return self.remote.key_for(kid if isinstance(kid, str) else None)
        if None in self._keys and len(self._keys) == 1:
            return self._keys[None]
        kid = header.get("kid")
        if kid in self._keys:
            return self._keys[kid]
        if len(self._keys) == 1 and kid is None:
            return next(iter(self._keys.values()))
        raise NotAuthenticated("the token is signed with an unknown key")

    def verify(self, token: str) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
        except JWTError:
            raise NotAuthenticated("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise NotAuthenticated(f"token algorithm {alg!r} is not accepted")
        if "crit" in header:
            # RFC 7515 4.1.11: a recipient must refuse a token whose critical extensions it does
            # not understand. This service understands none; python-jose would ignore them.
            raise NotAuthenticated("the token header names critical extensions (crit) this service "
                                   "does not understand")
        key = self._key_for(header)
        if not _key_fits(key, alg):
            raise NotAuthenticated(f"token algorithm {alg!r} does not fit the verification key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                # Presence, issuer, audience and the time claims are checked below, with messages
                # that say what is wrong (python-jose reports a missing claim like a bad signature).
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "verify_iss": False, "verify_aud": False,
                         "require_exp": False, "require_iss": False, "require_aud": False,
                         "require_sub": False},
            )
        except JWTClaimsError as exc:
            raise NotAuthenticated(f"token claims rejected: {exc}") from None
        except JWTError:
            raise NotAuthenticated("the token signature is invalid") from None
        self._check_claims(claims, time.time())
        sub = claims.get("sub")
        if not _is_claim_text(sub):
            raise NotAuthenticated("the token has no usable subject (sub)")
        org = self.claim_paths.organisation(claims)
        roles = self.claim_paths.roles(claims)
        return TokenClaims(user_id=sub, organisation_key=org, roles=roles)

    def _check_claims(self, claims: dict[str, Any], now: float) -> None:
        """Required claims present; issuer and audience ours; ``exp``, ``nbf`` and ``iat``
        honoured (with the leeway); the lifetime no longer than the configured maximum."""
        for name in REQUIRED_CLAIMS:
            if name not in claims:
                raise NotAuthenticated(f"the token has no {name} claim")
        if claims["iss"] != self.issuer:
            raise NotAuthenticated("token claims rejected: invalid issuer (iss)")
        aud = claims["aud"]
        audiences = aud if isinstance(aud, list) else [aud]
        if not all(isinstance(a, str) for a in audiences) or self.audience not in audiences:
            raise NotAuthenticated("token claims rejected: invalid audience (aud)")
        exp = _numeric_date(claims, "exp")
        nbf = _numeric_date(claims, "nbf")
        iat = _numeric_date(claims, "iat")
        if now >= exp + LEEWAY_SECONDS:
            raise NotAuthenticated("the token has expired")
        if nbf is not None and now + LEEWAY_SECONDS < nbf:
            raise NotAuthenticated("the token is not valid yet (nbf)")
        if iat is not None and iat > now + LEEWAY_SECONDS:
            raise NotAuthenticated("the token claims to be issued in the future (iat)")
        lifetime = exp - iat if iat is not None else exp - now
        if lifetime > self.max_lifetime_seconds:
            raise NotAuthenticated(
                f"the token is valid for longer than the accepted {self.max_lifetime_seconds // 60} "
                f"minutes ({'exp - iat' if iat is not None else 'exp lies too far ahead'})")


REQUIRED_CLAIMS = ("exp", "iss", "aud", "sub")


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (``realm_access.roles``); ``None`` when any part is missing.
    A claim whose own name has a dot (``https://example.org/org``) is found as a whole first."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True)
class ClaimPaths:
    """Where a token carries roles and organisation, so that a provider's own token shape works
    without an adapter (Keycloak: roles in ``realm_access.roles``, the organisation as a custom
    ``org`` claim or as a group below a prefix in ``groups``)."""

    roles_path: str = "roles"
    organisation_path: str = "org"
    group_prefix: str | None = None
    role_map: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> ClaimPaths:
        return cls(settings.jwt_roles_claim, settings.jwt_organisation_claim,
                   settings.jwt_organisation_group_prefix or None,
                   tuple(sorted(settings.jwt_role_map.items())))

    def roles(self, claims: dict[str, Any]) -> tuple[str, ...]:
        roles = claim_at(claims, self.roles_path)
        if not isinstance(roles, list) or not all(_is_claim_text(r) for r in roles):
            raise NotAuthenticated(f"the token has no roles claim ({self.roles_path}: a list of strings)")
        mapping = dict(self.role_map)
        # Roles the provider adds for itself (offline_access, default-roles-...) are not in
        # policies/roles.yaml and are ignored there.
        return tuple(mapping.get(r, r) for r in roles)

    def organisation(self, claims: dict[str, Any]) -> str:
        value = claim_at(claims, self.organisation_path)
        if self.group_prefix is not None:
            groups = value if isinstance(value, list) else [value]
            found = {g[len(self.group_prefix):].strip("/") for g in groups
                     if isinstance(g, str) and g.startswith(self.group_prefix)}
            found.discard("")
            if len(found) != 1:
                raise NotAuthenticated(
                    f"the token must name exactly one organisation as a group under {self.group_prefix!r} "
                    f"in {self.organisation_path} (found {len(found)})")
            value = found.pop()
        if not _is_claim_text(value):
            raise NotAuthenticated(f"the token names no usable organisation ({self.organisation_path} claim)")
        return value
LEEWAY_SECONDS = 30


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 2): a finite JSON number; ``None`` when absent."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise NotAuthenticated(f"token claims rejected: {name} is not a number (seconds since 1970)")
    return float(value)


def _key_fits(key: Any, alg: str) -> bool:
    """RS*/PS* need an RSA key, ES* an EC key: a token may not pick another family."""
    if alg.startswith(("RS", "PS")):
        return isinstance(key, RSAKey)
    if alg.startswith("ES"):
        return isinstance(key, ECKey)
    return False


def _is_claim_text(value: Any) -> bool:
    """A non-empty, bounded string the database can store (no NUL)."""
    return isinstance(value, str) and 0 < len(value) <= 200 and "\x00" not in value


def mint_dev_token(
    settings: Settings,
    user_id: str,
    organisation_key: str,
    roles: list[str],
    ttl: timedelta | None = None,
    now: datetime | None = None,
) -> str:
    """A token signed with the development key, as the municipal IdP would issue it."""
    private_path, _ = ensure_dev_keys(settings)
    now = now or datetime.now(UTC)
    ttl = ttl or timedelta(minutes=settings.dev_token_ttl_minutes)
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": user_id,
        "org": organisation_key,
        "roles": roles,
        "iat": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
    }
    return jwt.encode(claims, _signing_key(private_path), algorithm="RS256")


_SIGNING_KEYS: dict[tuple[str, int], Any] = {}


def _signing_key(path: Path):
    """The development private key, parsed once per file version: parsing an RSA key checks it
    (about 90 ms), and the demo mints a dozen tokens in a row."""
    version = (str(path.resolve()), path.stat().st_mtime_ns)
    key = _SIGNING_KEYS.get(version)
    if key is None:
        key = _SIGNING_KEYS[version] = jwk.construct(path.read_text(), "RS256")
    return key
