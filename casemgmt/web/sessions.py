"""Web sessions, cookies and CSRF tokens.

A signed-in browser holds a random session id in an HttpOnly, SameSite=Lax cookie (Secure when
the interface is reached over HTTPS); the database keeps only its SHA-256, the claims and the
CSRF token. Signing in always makes a new id and forgets the one the browser brought (no session
fixation); signing out deletes the row. Before sign-in a second cookie carries a random value
that the login form's CSRF token is bound to, and (OpenID Connect) the state, nonce and PKCE
verifier of the pending authorisation, signed so that the browser cannot change them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta

from fastapi import Request, Response
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from casemgmt.auth.tokens import TokenClaims
from casemgmt.database import unit_of_work
from casemgmt.web.models import WebSession

SESSION_COOKIE = "casemgmt_sitzung"
PRE_COOKIE = "casemgmt_anmeldung"
PENDING_COOKIE = "casemgmt_oidc"
CSRF_FIELD = "csrf_token"


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def web_secret(request: Request) -> bytes:
    """A key of its own for the web forms, derived from the master key (so every worker agrees)."""
    secret = getattr(request.app.state, "web_secret", None)
    if secret is None:
        audit_key = request.app.state.privacy.keys.audit_key
        secret = hmac.new(audit_key, b"casemgmt web forms v1", hashlib.sha256).digest()
        request.app.state.web_secret = secret
    return secret


def secure_cookies(request: Request) -> bool:
    """Secure cookies whenever the interface is reached over HTTPS (directly, through a proxy
    uvicorn trusts, or as configured in CASEMGMT_PUBLIC_BASE_URL)."""
    return request.url.scheme == "https" or request.app.state.settings.public_base_url.startswith("https://")


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax",
                        secure=secure_cookies(request))


def open_session(db: Session, claims: TokenClaims, now: datetime, minutes: int,
                 previous: str | None = None) -> str:
    """A new session for ``claims``; returns the id for the cookie. The session the browser
    brought (if any) ends, and sessions past their end are cleared, in the same transaction."""
    raw = secrets.token_urlsafe(32)
    with unit_of_work(db):
        if previous:
            db.execute(delete(WebSession).where(WebSession.id_hash == _hash(previous)))
        db.execute(delete(WebSession).where(WebSession.expires_at < now))
        db.add(WebSession(id_hash=_hash(raw), user_id=claims.user_id, organisation_key=claims.organisation_key,
                          roles=list(claims.roles), csrf_token=secrets.token_urlsafe(32), created_at=now,
                          expires_at=now + timedelta(minutes=minutes)))
    return raw


def find_session(db: Session, raw: str | None, now: datetime) -> WebSession | None:
    if not raw or len(raw) > 100:
        return None
    row = db.execute(select(WebSession).where(WebSession.id_hash == _hash(raw))).scalar_one_or_none()
    if row is None or row.expires_at <= now:
        return None
    return row


def close_session(db: Session, raw: str | None) -> None:
    if not raw or len(raw) > 100:
        return
    with unit_of_work(db):
        db.execute(delete(WebSession).where(WebSession.id_hash == _hash(raw)))


def claims_of(row: WebSession) -> TokenClaims:
    return TokenClaims(user_id=row.user_id, organisation_key=row.organisation_key, roles=tuple(row.roles))


# --- before sign-in --------------------------------------------------------------------------


def pre_value(request: Request) -> str | None:
    value = request.cookies.get(PRE_COOKIE)
    return value if value and 20 <= len(value) <= 100 else None


def login_csrf(request: Request, pre: str) -> str:
    """The login form's CSRF token: bound to the browser's pre-sign-in cookie."""
    return hmac.new(web_secret(request), b"login:" + pre.encode(), hashlib.sha256).hexdigest()


def tokens_equal(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


def sign(request: Request, data: dict) -> str:
    body = base64.urlsafe_b64encode(json.dumps(data, sort_keys=True).encode()).decode()
    mac = hmac.new(web_secret(request), b"pending:" + body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def unsign(request: Request, value: str | None) -> dict | None:
    if not value or len(value) > 4000 or "." not in value:
        return None
    body, mac = value.rsplit(".", 1)
    expected = hmac.new(web_secret(request), b"pending:" + body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body.encode()))
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
