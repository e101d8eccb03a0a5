"""Bearer tokens: verification of the identity provider's JWTs and minting of demo tokens.

Only asymmetric algorithms are accepted and the list is pinned from settings, so a token that
claims ``alg: none`` or an HMAC algorithm (the classic trick of signing with the public key as the
HMAC secret) is refused before any signature check, and so is an algorithm of another family
than the key (an ES256 token against an RSA key). ``iss``, ``aud``, ``exp`` and ``sub`` are
required (a missing one is named); ``exp``, ``nbf`` and ``iat`` are honoured with a 30 s leeway,
``iat`` may not lie in the future, and a token may be valid for at most
``CASEMGMT_JWT_MAX_LIFETIME_MINUTES`` (from ``iat``, or from now without ``iat``). A header with
``crit`` is refused: this service understands no critical extension. The organisation and roles
come from the ``org`` and ``roles`` claims.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
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


class TokenVerifier:
    """Verifies bearer tokens against a PEM public key or a JWKS document."""

    def __init__(self, settings: Settings):
        self.issuer = settings.jwt_issuer
        self.max_lifetime_seconds = settings.jwt_max_lifetime_minutes * 60
        self.audience = settings.jwt_audience
        self.algorithms = list(settings.jwt_algorithms)
        bad = [a for a in self.algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad or not self.algorithms:
            raise KeyConfigurationError(
                f"CASEMGMT_JWT_ALGORITHMS must list asymmetric algorithms only, got {bad or '[]'}"
            )
        self._keys: dict[str | None, Any] = {}
        if settings.jwt_jwks_file:
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
            keys = doc["keys"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyConfigurationError(f"{path}: not a JWKS document ({exc})") from exc
        for entry in keys:
            if entry.get("use", "sig") != "sig":
                continue
            alg = entry.get("alg") or self.algorithms[0]
            if alg not in self.algorithms:
                continue
            try:
                self._keys[entry.get("kid")] = jwk.construct(entry, alg)
            except Exception as exc:  # jose raises assorted errors for malformed keys
                raise KeyConfigurationError(f"{path}: bad key {entry.get('kid')}: {exc}") from exc
        if not self._keys:
            raise KeyConfigurationError(f"{path}: no signing key for {self.algorithms}")

    def _key_for(self, header: dict[str, Any]) -> Any:
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
        sub, org, roles = claims.get("sub"), claims.get("org"), claims.get("roles")
        if not _is_claim_text(sub):
            raise NotAuthenticated("the token has no usable subject (sub)")
        if not _is_claim_text(org):
            raise NotAuthenticated("the token names no usable organisation (org claim)")
        if not isinstance(roles, list) or not all(_is_claim_text(r) for r in roles):
            raise NotAuthenticated("the token has no roles claim (a list of strings)")
        return TokenClaims(user_id=sub, organisation_key=org, roles=tuple(roles))

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
    return jwt.encode(claims, private_path.read_text(), algorithm="RS256")
