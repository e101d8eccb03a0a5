"""Bearer tokens: the weak spots of JWT verification, seen from a client of the API.

Every refused token must give ``401 application/problem+json`` with the type
``/problems/not-authenticated`` (or ``/problems/unknown-organisation`` for an organisation that does
not exist) and a ``WWW-Authenticate: Bearer`` challenge. Tokens are minted here with python-jose
or, for the forged ones, by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from casemgmt.auth.tokens import KeyConfigurationError, TokenVerifier, ensure_dev_keys
from casemgmt.config import Settings
from casemgmt.problems import Problem

PROBLEM_JSON = "application/problem+json"
URL = "/organisations"
_DELETE = object()


# --- helpers ---------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def private_pem(settings: Settings) -> str:
    return ensure_dev_keys(settings)[0].read_text()


def public_pem(settings: Settings) -> str:
    return ensure_dev_keys(settings)[1].read_text()


def claims(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Valid claims for a case manager of the Kreis; ``name=_DELETE`` drops a claim."""
    now = int(time.time())
    out: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "user-42",
        "org": "ennetal_ki",
        "roles": ["case_manager"],
        "iat": now,
        "exp": now + 600,
    }
    for name, value in overrides.items():
        if value is _DELETE:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def sign(settings: Settings, payload: dict[str, Any], key: str | None = None,
         headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(payload, key or private_pem(settings), algorithm="RS256", headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(resp, slug: str = "not-authenticated") -> dict[str, Any]:
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    body = resp.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == 401
    assert resp.headers.get("www-authenticate", "").startswith("Bearer")
    return body


@pytest.fixture(scope="module")
def other_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# --- through HTTP ----------------------------------------------------------------------------


def test_valid_token_is_accepted(client, settings):
    resp = client.get(URL, headers=bearer(sign(settings, claims(settings))))
    assert resp.status_code == 200, resp.text
    assert any(o["key"] == "ennetal_ki" for o in resp.json())


def test_auth_fixture_token_is_accepted(client, auth):
    assert client.get(URL, headers=auth("ennetal_abh", "clerk")).status_code == 200


def test_no_authorization_header(client):
    body = assert_refused(client.get(URL))
    assert body["detail"]


def test_non_bearer_scheme(client, settings):
    token = sign(settings, claims(settings))
    assert_refused(client.get(URL, headers={"Authorization": f"Basic {token}"}))
    assert_refused(client.get(URL, headers={"Authorization": "Basic dXNlcjpwYXNz"}))


def test_bearer_without_token(client):
    assert_refused(client.get(URL, headers={"Authorization": "Bearer"}))
    assert_refused(client.get(URL, headers={"Authorization": "Bearer "}))


@pytest.mark.parametrize("token", [
    "garbage",
    "a.b.c",
    "not.a.jwt.at.all",
    b64json({"alg": "RS256"}) + "." + b64json([1, 2]) + ".",
    b64json([1]) + "." + b64json({"sub": "x"}) + ".sig",
    "eyJ" * 50,
])
def test_garbage_token(client, token):
    assert_refused(client.get(URL, headers=bearer(token)))


def test_alg_none_token(client, settings):
    payload = claims(settings)
    for alg in ("none", "None", "NONE"):
        token = b64json({"alg": alg, "typ": "JWT"}) + "." + b64json(payload) + "."
        assert_refused(client.get(URL, headers=bearer(token)))


def test_hs256_signed_with_public_key_is_refused(client, settings):
    """Key confusion: the attacker knows the public key and uses its PEM text as HMAC secret."""
    secret = public_pem(settings).encode()
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        signing_input = b64json({"alg": alg, "typ": "JWT"}) + "." + b64json(claims(settings))
        sig = hmac.new(secret, signing_input.encode(), digest).digest()
        token = signing_input + "." + b64url(sig)
        assert_refused(client.get(URL, headers=bearer(token)))


def test_token_signed_by_another_key(client, settings, other_private_pem):
    token = sign(settings, claims(settings), key=other_private_pem)
    assert_refused(client.get(URL, headers=bearer(token)))


def test_tampered_payload(client, settings):
    token = sign(settings, claims(settings, roles=["clerk"]))
    header, _, sig = token.split(".")
    forged = f"{header}.{b64json(claims(settings, roles=['case_manager', 'admin']))}.{sig}"
    assert_refused(client.get(URL, headers=bearer(forged)))


def test_expired_token(client, settings):
    past = int(time.time()) - 120  # beyond the 30 s leeway
    token = sign(settings, claims(settings, iat=past - 600, exp=past))
    assert_refused(client.get(URL, headers=bearer(token)))


def test_token_within_leeway_is_accepted(client, settings):
    token = sign(settings, claims(settings, exp=int(time.time()) - 5))
    assert client.get(URL, headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("name, value", [
    ("iss", "https://evil.example"),
    ("aud", "another-service"),
    ("aud", ["another-service"]),
    ("exp", _DELETE),
    ("iss", _DELETE),
    ("aud", _DELETE),
    ("sub", _DELETE),
    ("sub", ""),
    ("sub", 42),
    ("org", _DELETE),
    ("org", ""),
    ("org", ["ennetal_ki"]),
    ("roles", "case_manager"),
    ("roles", _DELETE),
    ("roles", [1, 2]),
    ("exp", "tomorrow"),
])
def test_bad_claims_are_refused(client, settings, name, value):
    token = sign(settings, claims(settings, **{name: value}))
    assert_refused(client.get(URL, headers=bearer(token)))


def test_unknown_organisation(client, settings):
    token = sign(settings, claims(settings, org="atlantis_abh"))
    body = assert_refused(client.get(URL, headers=bearer(token)), "unknown-organisation")
    assert "atlantis_abh" in body["detail"]


def test_organisation_key_with_nul_character(client, settings):
    """A signed token may carry any string; one PostgreSQL cannot store is a malformed claim (401)."""
    token = sign(settings, claims(settings, org="ennetal\x00ki"))
    body = assert_refused(client.get(URL, headers=bearer(token)))
    assert "organisation" in body["detail"]


def test_token_not_yet_valid(client, settings):
    later = int(time.time()) + 3600
    token = sign(settings, claims(settings, nbf=later, exp=later + 600))
    assert_refused(client.get(URL, headers=bearer(token)))


def test_refusals_change_nothing_for_a_later_valid_request(client, settings):
    assert_refused(client.get(URL, headers=bearer("garbage")))
    assert client.get(URL, headers=bearer(sign(settings, claims(settings)))).status_code == 200


# --- the verifier's key configuration --------------------------------------------------------


def write_jwks(settings: Settings, path: Path, kid: str) -> Path:
    key = jwk.construct(public_pem(settings), "RS256").to_dict()
    key.update({"kid": kid, "use": "sig", "alg": "RS256"})
    path.write_text(json.dumps({"keys": [key]}))
    return path


def test_jwks_configuration_verifies_token_with_its_kid(settings, tmp_path):
    path = write_jwks(settings, tmp_path / "jwks.json", "idp-2026")
    verifier = TokenVerifier(Settings(dev_key_dir=settings.dev_key_dir, jwt_jwks_file=path))
    token = sign(settings, claims(settings), headers={"kid": "idp-2026"})
    verified = verifier.verify(token)
    assert verified.user_id == "user-42"
    assert verified.organisation_key == "ennetal_ki"
    assert verified.roles == ("case_manager",)


def test_jwks_configuration_refuses_unknown_kid(settings, tmp_path):
    path = write_jwks(settings, tmp_path / "jwks.json", "idp-2026")
    verifier = TokenVerifier(Settings(dev_key_dir=settings.dev_key_dir, jwt_jwks_file=path))
    token = sign(settings, claims(settings), headers={"kid": "rotated-away"})
    with pytest.raises(Problem) as info:
        verifier.verify(token)
    assert info.value.slug == "not-authenticated"
    assert info.value.status == 401


def test_jwks_configuration_refuses_other_key_with_known_kid(settings, tmp_path, other_private_pem):
    path = write_jwks(settings, tmp_path / "jwks.json", "idp-2026")
    verifier = TokenVerifier(Settings(dev_key_dir=settings.dev_key_dir, jwt_jwks_file=path))
    token = sign(settings, claims(settings), key=other_private_pem, headers={"kid": "idp-2026"})
    with pytest.raises(Problem) as info:
        verifier.verify(token)
    assert info.value.slug == "not-authenticated"


@pytest.mark.parametrize("algorithms", [["HS256"], ["RS256", "HS256"], ["none"], []])
def test_symmetric_algorithm_configuration_is_refused(settings, algorithms):
    with pytest.raises(KeyConfigurationError):
        TokenVerifier(Settings(dev_key_dir=settings.dev_key_dir, jwt_algorithms=algorithms))


def test_unreadable_jwks_is_refused(settings, tmp_path):
    bad = tmp_path / "jwks.json"
    bad.write_text("not json")
    with pytest.raises(KeyConfigurationError):
        TokenVerifier(Settings(dev_key_dir=settings.dev_key_dir, jwt_jwks_file=bad))
