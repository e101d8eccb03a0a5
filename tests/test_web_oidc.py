"""Signing in to the web interface through the identity provider: authorization code flow with
PKCE (S256). A local server plays Keycloak (discovery, JWKS, the token endpoint, which checks the
code verifier against the challenge as a provider does); the access token it returns is verified
like an API token, so the web session has the token's user, organisation and roles."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from test_oidc import IdentityProvider

from casemgmt.web.sessions import SESSION_COOKIE


class CodeFlowProvider(IdentityProvider):
    """The provider of test_oidc with an authorization endpoint (the test plays the user's
    sign-in) and a token endpoint that honours PKCE."""

    def __init__(self) -> None:
        super().__init__()
        self.add_key("key-1")
        self.codes: dict[str, str] = {}  # code -> code_challenge
        self.token_requests: list[dict[str, list[str]]] = []
        provider = self
        base = self.server.RequestHandlerClass

        class Handler(base):
            def do_GET(self):  # noqa: N802
                if self.path == "/realms/kommune/.well-known/openid-configuration":
                    return self._json({"issuer": provider.issuer,
                                       "authorization_endpoint": provider.issuer + "/protocol/openid-connect/auth",
                                       "token_endpoint": provider.issuer + "/protocol/openid-connect/token",
                                       "jwks_uri": provider.issuer + "/protocol/openid-connect/certs"})
                return super().do_GET()

            def do_POST(self):  # noqa: N802
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                provider.token_requests.append(form)
                code = form.get("code", [""])[0]
                verifier = form.get("code_verifier", [""])[0]
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if provider.codes.pop(code, None) != challenge:
                    return self._json({"error": "invalid_grant"}, 400)
                return self._json({"access_token": provider.token("key-1", org="ennetal_ki", roles=("case_manager",),
                                                                  sub="cm.oidc"),
                                   "token_type": "Bearer", "expires_in": 300})

            def _json(self, body, status=200):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server.RequestHandlerClass = Handler

    def sign_in(self, authorization_url: str) -> tuple[str, str]:
        """The user signs in at the provider: returns (code, state) for the redirect back."""
        query = parse_qs(urlsplit(authorization_url).query)
        assert query["response_type"] == ["code"] and query["code_challenge_method"] == ["S256"]
        assert query["client_id"] == ["casemgmt"] and "openid" in query["scope"][0].split()
        assert query["redirect_uri"][0].endswith("/ui/anmelden/oidc/rueckkehr")
        self.codes["code-1"] = query["code_challenge"][0]
        return "code-1", query["state"][0]


@pytest.fixture
def provider():
    p = CodeFlowProvider()
    yield p
    p.close()


@pytest.fixture
def sso(settings, db, policies, clock, provider):
    from conftest import MASTER_KEY

    from casemgmt.app import create_app

    app = create_app(settings.model_copy(update={"oidc_issuer": provider.issuer,
                                                 "jwt_roles_claim": "realm_access.roles"}),
                     engine=db, policies=policies, clock=clock, master_key=MASTER_KEY)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_sign_in_with_authorization_code_and_pkce(sso, provider):
    page = sso.get("/ui/anmelden")
    assert "Beim Identitätsanbieter anmelden" in page.text and "cm.ennetal" not in page.text  # no demo list
    go = sso.get("/ui/anmelden/oidc?weiter=/ui/faelle", follow_redirects=False)
    assert go.status_code == 303 and go.headers["location"].startswith(provider.issuer + "/protocol/openid-connect/auth")
    code, state = provider.sign_in(go.headers["location"])
    back = sso.get(f"/ui/anmelden/oidc/rueckkehr?code={code}&state={state}", follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"].startswith("/ui/faelle")
    assert SESSION_COOKIE in back.cookies
    # The verifier the app kept went to the token endpoint, never to the browser's address bar.
    verifier = provider.token_requests[-1]["code_verifier"][0]
    assert verifier not in go.headers["location"] and len(verifier) >= 43
    page = sso.get("/ui/faelle")
    assert page.status_code == 200 and "cm.oidc" in page.text and "Case-Manager/in" in page.text


def test_a_forged_state_or_a_replayed_code_signs_nobody_in(sso, provider):
    go = sso.get("/ui/anmelden/oidc", follow_redirects=False)
    code, state = provider.sign_in(go.headers["location"])
    forged = sso.get(f"/ui/anmelden/oidc/rueckkehr?code={code}&state=someone-elses-state", follow_redirects=False)
    assert forged.status_code == 401 and SESSION_COOKIE not in forged.cookies
    # Another browser (without the pending sign-in cookie) cannot use the code and state.
    other = TestClient(sso.app, raise_server_exceptions=False)
    stolen = other.get(f"/ui/anmelden/oidc/rueckkehr?code={code}&state={state}", follow_redirects=False)
    assert stolen.status_code == 401 and SESSION_COOKIE not in stolen.cookies
    # The provider refuses a code it did not issue: still no session.
    wrong = sso.get(f"/ui/anmelden/oidc/rueckkehr?code=made-up&state={state}", follow_redirects=False)
    assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.cookies


def test_without_an_identity_provider_the_oidc_routes_do_not_exist(client):
    assert client.get("/ui/anmelden/oidc").status_code == 404
