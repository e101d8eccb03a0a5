"""Signing in and out.

- OpenID Connect: authorization code flow with PKCE (S256) against ``CASEMGMT_OIDC_ISSUER``,
  through Authlib's client. The access token the provider returns is verified by the same
  :class:`~casemgmt.auth.tokens.TokenVerifier` as every API token, so the web session carries
  exactly the claims (``sub``, organisation, roles) an API call would.
- The demo (``casemgmt demo`` only, ``CASEMGMT_DEMO_LOGIN``): a page listing the demo users; any
  other installation answers it with 404.

Either way the browser gets a new session id (the one it brought is dropped) and the login
form is CSRF-protected through the pre-sign-in cookie.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session
from casemgmt.auth.tokens import KeyConfigurationError, TokenClaims, _check_url, fetch_json
from casemgmt.problems import NotAuthenticated
from casemgmt.web.routing import PREFIX, error_page, redirect, render, web_router
from casemgmt.web.sessions import (
    CSRF_FIELD,
    PENDING_COOKIE,
    PRE_COOKIE,
    SESSION_COOKIE,
    close_session,
    find_session,
    login_csrf,
    open_session,
    pre_value,
    set_cookie,
    sign,
    tokens_equal,
    unsign,
)

log = logging.getLogger(__name__)
router = web_router()


def _safe_target(target: str | None) -> str:
    """Only a path of this interface (no other host, no scheme) may be the page after sign-in."""
    if not target or not target.startswith(PREFIX + "/") or target.startswith("//") or "\\" in target:
        return PREFIX + "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return PREFIX + "/"
    return target


def _demo_users(request: Request) -> list[tuple[str, str, list[str], str]]:
    from casemgmt.demo.seed import DEMO_USERS

    return DEMO_USERS


def _sign_in(request: Request, db: Session, claims: TokenClaims, target: str) -> Response:
    now = request.app.state.clock()
    raw = open_session(db, claims, now, request.app.state.settings.web_session_minutes,
                       previous=request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse(_safe_target(target) + ("&" if "?" in _safe_target(target) else "?")
                                + "hinweis=angemeldet", status_code=303)
    set_cookie(response, request, SESSION_COOKIE, raw, max_age=request.app.state.settings.web_session_minutes * 60)
    response.delete_cookie(PRE_COOKIE, path="/")
    response.delete_cookie(PENDING_COOKIE, path="/")
    return response


@router.get("/anmelden")
def login_page(request: Request, weiter: str | None = None, hinweis: str | None = None,
               db: Session = Depends(get_session)) -> Response:
    """The login page: the identity provider's sign-in, and in the demo the demo users."""
    settings = request.app.state.settings
    if find_session(db, request.cookies.get(SESSION_COOKIE), request.app.state.clock()) is not None:
        return redirect(_safe_target(weiter))
    pre = pre_value(request) or secrets.token_urlsafe(24)
    response = render(request, "anmelden.html", csrf_token=login_csrf(request, pre), weiter=_safe_target(weiter),
                      oidc=bool(settings.oidc_issuer), demo=settings.demo_login,
                      demo_users=_demo_users(request) if settings.demo_login else [])
    set_cookie(response, request, PRE_COOKIE, pre, max_age=3600)
    return response


@router.post("/anmelden/demo")
async def demo_login(request: Request, db: Session = Depends(get_session)) -> Response:
    """Sign in as one of the demo users (only while `casemgmt demo` serves)."""
    if not request.app.state.settings.demo_login:
        return error_page(request, 404)
    form = await request.form()
    pre = pre_value(request)
    token = form.get(CSRF_FIELD)
    if pre is None or not isinstance(token, str) or not tokens_equal(token, login_csrf(request, pre)):
        return error_page(request, 403, "Das Formular ist abgelaufen oder kam nicht von dieser Seite "
                                        "(CSRF-Schutz). Bitte laden Sie die Anmeldeseite neu.")
    chosen = form.get("benutzer")
    for user, org, roles, _title in _demo_users(request):
        if user == chosen:
            weiter = form.get("weiter")
            return _sign_in(request, db, TokenClaims(user_id=user, organisation_key=org, roles=tuple(roles)),
                            weiter if isinstance(weiter, str) else "")
    return render(request, "anmelden.html", http_status=422, csrf_token=token, weiter=PREFIX + "/",
                  oidc=bool(request.app.state.settings.oidc_issuer), demo=True, demo_users=_demo_users(request),
                  errors=[{"field": "benutzer", "message": "Bitte wählen Sie einen Demo-Zugang."}])


# --- OpenID Connect ---------------------------------------------------------------------------


def _provider(request: Request) -> dict:
    """The provider's discovery document (read once per process)."""
    doc = getattr(request.app.state, "oidc_discovery", None)
    if doc is None:
        issuer = request.app.state.settings.oidc_issuer
        doc, _headers = fetch_json(issuer.rstrip("/") + "/.well-known/openid-configuration",
                                   request.app.state.settings.oidc_http_timeout_seconds)
        if not isinstance(doc, dict) or doc.get("issuer") != issuer:
            raise NotAuthenticated("the identity provider's discovery document names another issuer")
        for name in ("authorization_endpoint", "token_endpoint"):
            if not isinstance(doc.get(name), str):
                raise ValueError(f"the discovery document names no {name}")
            try:
                # The code and the verifier travel only over TLS (plain http only on loopback).
                _check_url(doc[name], f"the provider's {name}")
            except KeyConfigurationError as exc:
                raise ValueError(str(exc)) from None
        request.app.state.oidc_discovery = doc
    return doc


def _client(request: Request):
    from authlib.integrations.httpx_client import OAuth2Client

    settings = request.app.state.settings
    return OAuth2Client(client_id=settings.oidc_client_id, client_secret=settings.oidc_client_secret,
                        scope=settings.oidc_scope, redirect_uri=_callback_url(request),
                        code_challenge_method="S256",
                        token_endpoint_auth_method="client_secret_basic" if settings.oidc_client_secret else "none",
                        timeout=settings.oidc_http_timeout_seconds)


def _callback_url(request: Request) -> str:
    return request.app.state.settings.public_base_url.rstrip("/") + PREFIX + "/anmelden/oidc/rueckkehr"


@router.get("/anmelden/oidc")
def oidc_start(request: Request, weiter: str | None = None) -> Response:
    """Go to the identity provider (authorization code flow with PKCE)."""
    if not request.app.state.settings.oidc_issuer:
        return error_page(request, 404)
    from authlib.common.security import generate_token

    try:
        doc = _provider(request)
    except (OSError, ValueError):
        return error_page(request, 503, "Der Identitätsanbieter ist gerade nicht erreichbar. Bitte versuchen Sie es später.")
    verifier = generate_token(64)
    state = generate_token(32)
    nonce = generate_token(32)
    with _client(request) as client:
        url, _state = client.create_authorization_url(doc["authorization_endpoint"], state=state,
                                                      code_verifier=verifier, nonce=nonce)
    response = RedirectResponse(url, status_code=303)
    set_cookie(response, request, PENDING_COOKIE,
               sign(request, {"state": state, "verifier": verifier, "nonce": nonce,
                              "weiter": _safe_target(weiter)}), max_age=600)
    return response


@router.get("/anmelden/oidc/rueckkehr")
def oidc_return(request: Request, code: str | None = None, state: str | None = None, error: str | None = None,
                error_description: str | None = None, session_state: str | None = None, iss: str | None = None,
                db: Session = Depends(get_session)) -> Response:
    """Back from the identity provider: check the state, exchange the code with the PKCE
    verifier, verify the access token as an API token and open the session."""
    if not request.app.state.settings.oidc_issuer:
        return error_page(request, 404)
    pending = unsign(request, request.cookies.get(PENDING_COOKIE))
    if error or not code or pending is None or not tokens_equal(state, pending.get("state")):
        return error_page(request, 401, "Die Anmeldung beim Identitätsanbieter ist nicht gelungen oder "
                                        "abgelaufen. Bitte melden Sie sich erneut an.")
    try:
        doc = _provider(request)
        with _client(request) as client:
            token = client.fetch_token(doc["token_endpoint"], code=code, code_verifier=pending["verifier"],
                                       grant_type="authorization_code")
    except Exception:  # the provider refused the code or could not be reached; nothing is signed in
        log.warning("the identity provider did not exchange the authorization code", exc_info=False)
        return error_page(request, 401, "Die Anmeldung beim Identitätsanbieter ist nicht gelungen oder "
                                        "abgelaufen. Bitte melden Sie sich erneut an.")
    access = token.get("access_token")
    if not isinstance(access, str):
        return error_page(request, 401, "Der Identitätsanbieter hat kein Zugangstoken geliefert.")
    claims = request.app.state.verifier.verify(access)
    return _sign_in(request, db, claims, pending.get("weiter", ""))


@router.post("/abmelden")
async def logout(request: Request, db: Session = Depends(get_session)) -> Response:
    """Sign out: the session ends here (its row is deleted), not only in the browser."""
    form = await request.form()
    raw = request.cookies.get(SESSION_COOKIE)
    row = find_session(db, raw, request.app.state.clock())
    token = form.get(CSRF_FIELD)
    if row is not None and not (isinstance(token, str) and tokens_equal(token, row.csrf_token)):
        return error_page(request, 403, "Das Formular ist abgelaufen oder kam nicht von dieser Seite "
                                        "(CSRF-Schutz). Bitte laden Sie die Seite neu.")
    close_session(db, raw)
    response = redirect(PREFIX + "/anmelden", "abgemeldet")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
