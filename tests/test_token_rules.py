"""Token rules beyond the signature: lifetime, time claims, critical header extensions, named
missing claims, and the algorithm family. Tokens are signed here with the development key (or an
attacker's key), with whatever claims and header members the test needs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwt

from casemgmt.auth.tokens import TokenVerifier, ensure_dev_keys, verify_once
from casemgmt.config import Settings
from casemgmt.problems import Problem

URL = "/organisations"
HOUR = 3600
_DROP = object()


def sign_claims(settings: Settings, overrides: dict[str, Any] | None = None,
                headers: dict[str, Any] | None = None, key: str | None = None,
                algorithm: str = "RS256") -> str:
    """A token with valid claims for a KI case manager, changed by ``overrides`` (``_DROP``
    removes a claim), with extra JOSE ``headers``; signed with the dev key unless ``key``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "sub": "user-7",
        "org": "ennetal_ki", "roles": ["case_manager"], "iat": now, "exp": now + 600,
    }
    for name, value in (overrides or {}).items():
        if value is _DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    pem = key or ensure_dev_keys(settings)[0].read_text()
    return jwt.encode(claims, pem, algorithm=algorithm, headers=headers)


def get(client, token: str):
    return client.get(URL, headers={"Authorization": f"Bearer {token}"})


def refused(resp) -> str:
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["type"] == "/problems/not-authenticated"
    assert resp.headers["www-authenticate"].startswith("Bearer")
    return body["detail"]


def accepted(resp) -> None:
    assert resp.status_code == 200, resp.text


# --- lifetime --------------------------------------------------------------------------------


def test_lifetime_longer_than_twelve_hours_is_refused(client, settings):
    now = int(time.time())
    detail = refused(get(client, sign_claims(settings, {"iat": now, "exp": now + 12 * HOUR + 60})))
    assert "longer" in detail
    # Issued an hour ago for 13 hours: still too long, although only 12 hours remain.
    refused(get(client, sign_claims(settings, {"iat": now - HOUR, "exp": now + 12 * HOUR})))
    # Exactly twelve hours is allowed.
    accepted(get(client, sign_claims(settings, {"iat": now, "exp": now + 12 * HOUR})))


def test_without_iat_exp_may_not_lie_further_ahead_than_the_maximum(client, settings):
    now = int(time.time())
    detail = refused(get(client, sign_claims(settings, {"iat": _DROP, "exp": now + 30 * 24 * HOUR})))
    assert "longer" in detail
    refused(get(client, sign_claims(settings, {"iat": _DROP, "exp": now + 12 * HOUR + 120})))
    accepted(get(client, sign_claims(settings, {"iat": _DROP, "exp": now + 11 * HOUR})))


def test_maximum_lifetime_is_a_setting(settings):
    short = TokenVerifier(settings.model_copy(update={"jwt_max_lifetime_minutes": 10}))
    now = int(time.time())
    assert short.verify(sign_claims(settings, {"iat": now, "exp": now + 600})).user_id == "user-7"
    with pytest.raises(Problem) as info:
        short.verify(sign_claims(settings, {"iat": now, "exp": now + 601 + 30}))
    assert info.value.status == 401 and "10 minutes" in info.value.detail


# --- time claims -----------------------------------------------------------------------------


def test_issued_in_the_future_or_not_yet_valid_is_refused(client, settings):
    now = int(time.time())
    detail = refused(get(client, sign_claims(settings, {"iat": now + HOUR, "exp": now + 2 * HOUR})))
    assert "iat" in detail and "future" in detail
    # Within the 30 s leeway (clock skew between the IdP and this server) it is fine.
    accepted(get(client, sign_claims(settings, {"iat": now + 10, "exp": now + 600})))
    # Not before (nbf) is honoured the same way.
    assert "nbf" in refused(get(client, sign_claims(settings, {"nbf": now + 120})))
    accepted(get(client, sign_claims(settings, {"nbf": now + 10})))  # leeway
    accepted(get(client, sign_claims(settings, {"nbf": now - 60})))


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize("value", [[1], {"t": 1}, "1", True, None, 1e400])
def test_time_claims_that_are_not_numbers_are_refused_not_a_server_error(client, settings, name, value):
    refused(get(client, sign_claims(settings, {name: value})))


# --- header and claims -----------------------------------------------------------------------


@pytest.mark.parametrize("crit", [["exp"], ["b64"], ["urn:example:unknown"], [], "exp"])
def test_critical_header_extensions_are_refused(client, settings, crit):
    """python-jose ignores ``crit``; a token saying "refuse me unless you understand X" must be
    refused, since this service understands no extension."""
    detail = refused(get(client, sign_claims(settings, headers={"crit": crit, "urn:example:unknown": 1})))
    assert "crit" in detail


@pytest.mark.parametrize("name", ["exp", "iss", "aud", "sub"])
def test_a_missing_claim_is_named(client, settings, name):
    detail = refused(get(client, sign_claims(settings, {name: _DROP})))
    assert detail == f"the token has no {name} claim"
    assert "signature" not in detail
    # ... but only once the signature holds: a forged token is reported as such.
    head, payload, sig = sign_claims(settings, {name: _DROP}).split(".")
    assert "signature" in refused(get(client, f"{head}.{payload}.{sig[:-6]}AAAAAA"))


def test_algorithm_of_another_family_than_the_key_is_refused(settings):
    """With ES256 allowed next to RS256 and an RSA key configured, an ES256 token (signed with
    the attacker's EC key) is refused because it does not fit the key."""
    verifier = TokenVerifier(settings.model_copy(update={"jwt_algorithms": ["RS256", "ES256"]}))
    attacker = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    with pytest.raises(Problem) as info:
        verifier.verify(sign_claims(settings, key=attacker, algorithm="ES256"))
    assert info.value.status == 401 and "does not fit" in info.value.detail
    assert verifier.verify(sign_claims(settings)).user_id == "user-7"


# --- one verification per request ------------------------------------------------------------


class CountingVerifier(TokenVerifier):
    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.calls = 0

    def verify(self, token: str):
        self.calls += 1
        return super().verify(token)


def test_a_request_verifies_its_token_once_and_remembers_only_that_token(settings):
    verifier = CountingVerifier(settings)
    scope: dict[str, Any] = {"type": "http"}
    good = sign_claims(settings)
    assert verify_once(scope, verifier, good).user_id == "user-7"
    assert verify_once(scope, verifier, good).user_id == "user-7"
    assert verifier.calls == 1
    # Another token in the same request is verified on its own: a forged one is refused although
    # a good one was seen before, and a refusal is not remembered.
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(Problem) as info:
            verify_once(scope, verifier, forged)
        assert info.value.status == 401
    assert verifier.calls == 3
    other = sign_claims(settings, {"sub": "user-8"})
    assert verify_once(scope, verifier, other).user_id == "user-8"


def test_a_forged_token_on_a_rate_limited_route_is_refused(client, settings):
    """The rate limiter reads the token before the route does; the route still refuses it."""
    token = sign_claims(settings)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    resp = client.post("/persons", json={}, headers={"Authorization": f"Bearer {forged}"})
    assert refused(resp)
