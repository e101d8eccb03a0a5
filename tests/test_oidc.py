"""OpenID Connect: discovery, the provider's JWKS cached and rotated, Keycloak's token shape.

A local HTTP server plays the identity provider (discovery document and JWKS, on loopback); the
test rotates its keys and checks what a user would notice: a token of the new key passes at once,
a token of a key the provider dropped is refused."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwk, jwt

from casemgmt.auth.tokens import KeyConfigurationError, TokenVerifier, cache_seconds
from casemgmt.config import Settings
from casemgmt.problems import NotAuthenticated
from http_helpers import ok, problem


def _key(kid: str):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = jwk.construct(pem, "RS256").public_key().to_dict()
    public.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return pem, public


class IdentityProvider:
    """Serves /realms/kommune/.well-known/openid-configuration and its JWKS; counts JWKS fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, dict]] = {}
        self.cache_control = "max-age=300"
        self.jwks_fetches = 0
        self.down = False
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's hook name
                if idp.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/realms/kommune/.well-known/openid-configuration":
                    body = {"issuer": idp.issuer, "jwks_uri": idp.issuer + "/protocol/openid-connect/certs"}
                    headers = {}
                elif self.path == "/realms/kommune/protocol/openid-connect/certs":
                    idp.jwks_fetches += 1
                    body = {"keys": [public for _pem, public in idp.keys.values()]}
                    headers = {"Cache-Control": idp.cache_control}
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}/realms/kommune"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def add_key(self, kid: str) -> None:
        self.keys[kid] = _key(kid)

    def token(self, kid: str, org: str = "ennetal_ki", roles=("case_manager",), *, groups=None,
              **extra) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": "casemgmt", "sub": f"user-{kid}", "iat": now,
                  "exp": now + 300, "realm_access": {"roles": ["offline_access", *roles]},
                  "org": org, **extra}
        if groups is not None:
            claims["groups"] = groups
        return jwt.encode(claims, self.keys[kid][0], algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp():
    provider = IdentityProvider()
    provider.add_key("key-1")
    yield provider
    provider.close()


def keycloak_settings(settings: Settings, idp: IdentityProvider, **changes) -> Settings:
    return settings.model_copy(update={
        "oidc_issuer": idp.issuer, "jwt_roles_claim": "realm_access.roles", **changes})


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keycloak_tokens_are_verified_through_discovery_and_rotation_needs_no_restart(
        settings, idp, db, policies, clock):
    from fastapi.testclient import TestClient

    from casemgmt.app import create_app
    from conftest import MASTER_KEY

    app = create_app(keycloak_settings(settings, idp, oidc_jwks_min_refresh_seconds=0), engine=db,
                     policies=policies, clock=clock, master_key=MASTER_KEY)
    with TestClient(app, raise_server_exceptions=False) as client:
        old = idp.token("key-1")
        ok(client.get("/templates", headers={"Authorization": f"Bearer {old}"}))

        # The provider rotates: the new key is published, the old one withdrawn.
        idp.add_key("key-2")
        del idp.keys["key-1"]
        new = idp.token("key-2")
        ok(client.get("/templates", headers={"Authorization": f"Bearer {new}"}))
        body = problem(client.get("/templates", headers={"Authorization": f"Bearer {old}"}),
                       401, "not-authenticated")
        assert "unknown key" in body["detail"]


def test_an_unknown_kid_refetches_at_most_once_per_interval(settings, idp):
    clock = Monotonic()
    verifier = TokenVerifier(keycloak_settings(settings, idp, oidc_jwks_min_refresh_seconds=60), clock=clock)
    assert idp.jwks_fetches == 1
    idp.add_key("key-2")
    clock.now += 61
    assert verifier.verify(idp.token("key-2")).roles == ("offline_access", "case_manager")
    assert idp.jwks_fetches == 2
    # A flood of invented key ids within the interval: refused, and the provider is not asked.
    for i in range(20):
        forged = jwt.encode({"sub": "x"}, idp.keys["key-2"][0], algorithm="RS256", headers={"kid": f"nope-{i}"})
        with pytest.raises(NotAuthenticated, match="unknown key"):
            verifier.verify(forged)
    assert idp.jwks_fetches == 2
    # A key published right after a fetch is found once the interval has passed.
    idp.add_key("key-3")
    with pytest.raises(NotAuthenticated, match="unknown key"):
        verifier.verify(idp.token("key-3"))
    clock.now += 60
    assert verifier.verify(idp.token("key-3")).user_id == "user-key-3"
    assert idp.jwks_fetches == 3


def test_cached_keys_expire_after_max_age_and_survive_an_unreachable_provider(settings, idp):
    clock = Monotonic()
    idp.cache_control = "public, max-age=120"
    verifier = TokenVerifier(keycloak_settings(settings, idp, oidc_jwks_min_refresh_seconds=10), clock=clock)
    token = idp.token("key-1")
    clock.now += 119
    verifier.verify(token)
    assert idp.jwks_fetches == 1
    clock.now += 2
    verifier.verify(token)
    assert idp.jwks_fetches == 2  # max-age passed: fetched again
    idp.down = True
    clock.now += 300
    assert verifier.verify(token).organisation_key == "ennetal_ki"  # keys held are kept


@pytest.mark.parametrize("header, seconds", [
    ("max-age=60", 60), ("public, max-age=3600, must-revalidate", 3600), ("no-store", 0),
    ("no-cache, max-age=60", 0), (None, 300), ("private", 300), ("max-age=999999", 86400),
])
def test_cache_control_decides_how_long_keys_are_kept(header, seconds):
    assert cache_seconds(header, default=300, maximum=86400) == seconds


def test_organisation_from_a_group_path_and_roles_mapped(settings, idp):
    verifier = TokenVerifier(keycloak_settings(
        settings, idp, jwt_organisation_claim="groups", jwt_organisation_group_prefix="/organisationen/",
        jwt_role_map={"cm": "case_manager"}))
    claims = verifier.verify(idp.token("key-1", roles=("cm",), groups=["/organisationen/ennetal_abh", "/team-a"]))
    assert claims.organisation_key == "ennetal_abh"
    assert claims.roles == ("offline_access", "case_manager")
    with pytest.raises(NotAuthenticated, match="exactly one organisation"):
        verifier.verify(idp.token("key-1", groups=["/organisationen/a", "/organisationen/b"]))
    with pytest.raises(NotAuthenticated, match="exactly one organisation"):
        verifier.verify(idp.token("key-1", groups=["/team-a"]))
    with pytest.raises(NotAuthenticated, match="resource_access.casemgmt.roles"):
        TokenVerifier(keycloak_settings(settings, idp, jwt_roles_claim="resource_access.casemgmt.roles")
                      ).verify(idp.token("key-1"))


def test_a_wrong_discovery_is_a_start_error(settings, idp):
    with pytest.raises(KeyConfigurationError, match="names the issuer"):
        TokenVerifier(settings.model_copy(update={"oidc_issuer": idp.issuer + "/"}))
    with pytest.raises(KeyConfigurationError, match="https"):
        TokenVerifier(settings.model_copy(update={"oidc_issuer": "http://sso.kreis.example/realms/kommune"}))
    idp.down = True
    with pytest.raises(KeyConfigurationError, match="discovery document"):
        TokenVerifier(keycloak_settings(settings, idp))
