"""What every screen shares: the router class that answers refusals as HTML pages, the signed-in
user, permission checks, CSRF-checked forms, rendering and post-redirect-get.

A screen calls the same service functions as the API with the same :class:`Actor`, so record
scope, the privacy exit point and the audit of reads and refusals are the API's own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute, APIRouter
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from casemgmt.auth.dependencies import actor_for_claims, get_session
from casemgmt.chains.engine import Actor
from casemgmt.problems import Problem, is_database_outage
from casemgmt.web.navigation import entries_for
from casemgmt.web.texte import FIELD_ERROR_TEXTS, N_, PROBLEM_TEXTS
from casemgmt.web.rendering import environment, translations
from casemgmt.web.sessions import (
    CSRF_FIELD,
    SESSION_COOKIE,
    claims_of,
    find_session,
    tokens_equal,
)

log = logging.getLogger(__name__)

PREFIX = "/ui"

# Notices shown once after a redirect (post-redirect-get): only these fixed texts, never a value.
NOTICES = {
    "angemeldet": N_("Sie sind angemeldet."),
    "abgemeldet": N_("Sie sind abgemeldet."),
    "person": N_("Die Person ist registriert."),
    "kette": N_("Die Integrationskette ist gestartet."),
    "schritt": N_("Der Schritt ist geändert."),
    "uebergabe": N_("Die Übergabe ist angefragt."),
    "bestaetigt": N_("Die Übergabe ist bestätigt."),
    "abgelehnt": N_("Die Übergabe ist abgelehnt."),
    "zurueckgezogen": N_("Die Übergabe ist zurückgezogen."),
    "geschlossen": N_("Die Integrationskette ist geschlossen."),
    "widerrufen": N_("Die Einwilligung ist widerrufen."),
    "einwilligung": N_("Die Einwilligung ist erfasst."),
    "gespeichert": N_("Die Änderung ist gespeichert."),
    "anfrage": N_("Die Anfrage ist registriert."),
    "sperre_gesetzt": N_("Die Löschsperre ist gesetzt."),
    "sperre_aufgehoben": N_("Die Löschsperre ist aufgehoben."),
}


class SignInNeeded(Exception):
    """No (valid) web session: go to the login page."""


class CsrfRefused(Exception):
    """A form without the session's CSRF token."""


@dataclass
class WebUser:
    """The signed-in user of a page: the API's :class:`Actor` and the session's CSRF token."""

    actor: Actor
    csrf_token: str
    organisation_key: str

    def may(self, request: Request, permission: str) -> bool:
        return request.app.state.policies.roles.allows(self.actor.roles, permission)


def signed_in(request: Request, db: Session = Depends(get_session),
              hinweis: str | None = Query(default=None, max_length=40, description="notice after a redirect"),
              ) -> WebUser:
    row = find_session(db, request.cookies.get(SESSION_COOKIE), request.app.state.clock())
    if row is None:
        raise SignInNeeded()
    actor = actor_for_claims(request, db, claims_of(row))
    user = WebUser(actor=actor, csrf_token=row.csrf_token, organisation_key=row.organisation_key)
    request.state.web_user = user
    return user


def need(permission: str) -> Callable[..., Awaitable[WebUser]]:
    """Dependency: the signed-in user, who must hold ``permission`` (else 403, as the API)."""
    from casemgmt.problems import Forbidden

    # A coroutine: it does no I/O, so it runs on the event loop instead of a worker thread.
    async def _check(request: Request, user: WebUser = Depends(signed_in)) -> WebUser:
        if not user.may(request, permission):
            raise Forbidden(f"your roles ({', '.join(sorted(user.actor.roles)) or 'none'}) do not allow "
                            f"{permission}", permission=permission)
        return user

    _check.__name__ = f"need_{permission.replace('.', '_')}"
    return _check


async def checked_form(request: Request, user: WebUser = Depends(signed_in)) -> FormData:
    """The posted form of a signed-in user, refused without the session's CSRF token."""
    form = await request.form()
    if not tokens_equal(form.get(CSRF_FIELD) if isinstance(form.get(CSRF_FIELD), str) else None,
                                        user.csrf_token):
        raise CsrfRefused()
    return form


def render(request: Request, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
    user: WebUser | None = getattr(request.state, "web_user", None)
    policy = request.app.state.policies.roles
    notice_key = request.query_params.get("hinweis")
    page = environment().get_template(template).render(
        request=request, user=user, csrf_token=user.csrf_token if user else context.pop("csrf_token", None),
        navigation=entries_for(policy, user.actor.roles) if user else [],
        notice=NOTICES.get(notice_key) if notice_key else None,
        role_titles=[policy.titles.get(r, r) for r in sorted(user.actor.roles)] if user else [],
        laws={s.id: s.law for s in request.app.state.policies.data.statutes},
        **context)
    return HTMLResponse(page, status_code=http_status, headers={"Cache-Control": "no-store"})


def redirect(path: str, notice: str | None = None, **params: str) -> RedirectResponse:
    """303 See Other after a successful form (post-redirect-get)."""
    query = dict(params)
    if notice:
        query["hinweis"] = notice
    return RedirectResponse(path + ("?" + urlencode(query) if query else ""), status_code=303)


def field_errors(exc: ValidationError | Problem) -> list[dict[str, str]]:
    """Errors for the error summary: ``field`` (the form control's name, or "") and ``message``."""
    if isinstance(exc, ValidationError):
        found = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ())]
            found.append({"field": loc[-1] if loc else "", "message": err.get("msg", "ungültig")})
        return found
    field = exc.extra.get("field") if isinstance(exc.extra, dict) else None
    field = str(field).rsplit(".", 1)[-1] if field else ""
    if exc.slug == "personal-data-in-text":
        hits = [str(h.get("message", "")) for h in exc.extra.get("hits", []) if isinstance(h, dict)]
        return [{"field": field, "message": " ".join([problem_text(exc), *hits])}]
    if exc.slug == "reason-required":
        return [{"field": field or "reason", "message": problem_text(exc)}]
    errors = exc.extra.get("errors") if isinstance(exc.extra, dict) else None
    if isinstance(errors, list) and errors:
        return [{"field": str(e.get("field", "")).rsplit(".", 1)[-1],
                 "message": _field_error_text(e, str(e.get("message", exc.detail)))}
                for e in errors if isinstance(e, dict)]
    return [{"field": field, "message": problem_text(exc)}]


def problem_text(exc: Problem) -> str:
    """A service's refusal as the screens say it: the German text of its stable ``type`` from
    the catalogue, or the service's own text where the catalogue has none."""
    german = PROBLEM_TEXTS.get(exc.slug)
    return translations("de").gettext(german) if german else exc.detail


def _field_error_text(error: dict, fallback: str) -> str:
    german = FIELD_ERROR_TEXTS.get(str(error.get("type", "")))
    return translations("de").gettext(german) if german else fallback


_STATUS_TITLES = {
    401: N_("Bitte melden Sie sich an"),
    403: N_("Nicht erlaubt"),
    404: N_("Nicht gefunden"),
    409: N_("Inzwischen geändert"),
    422: N_("Eingabe nicht gültig"),
    423: N_("Verarbeitung eingeschränkt"),
    503: N_("Vorübergehend nicht erreichbar"),
}


def error_page(request: Request, status: int, detail: str | None = None) -> HTMLResponse:
    # 404 says nothing about whether the record exists (outsiders see the same page for any id).
    return render(request, "fehler.html", http_status=status, status_code=status,
                  title=_STATUS_TITLES.get(status, "Fehler"), detail=detail if status != 404 else None)


class WebRoute(APIRoute):
    """Answers the refusals of a screen as HTML pages instead of problem+json, after auditing
    them like the API does."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.method != "GET":
                    # A form posted after the session ended: back to the page it came from.
                    referer = urlsplit(request.headers.get("referer", ""))
                    same_site = not referer.netloc or referer.netloc == request.url.netloc
                    target = (referer.path + (f"?{referer.query}" if referer.query else "")
                              if same_site and referer.path.startswith(PREFIX + "/") else PREFIX + "/")
                return RedirectResponse(f"{PREFIX}/anmelden?weiter={quote(target, safe='')}", status_code=303)
            except CsrfRefused:
                return error_page(request, 403, "Das Formular ist abgelaufen oder kam nicht von dieser Seite "
                                                "(CSRF-Schutz). Bitte laden Sie die Seite neu.")
            except RequestValidationError as exc:
                # A malformed id in the address is a page that does not exist.
                if any(err.get("loc", ("",))[0] == "path" for err in exc.errors()):
                    return error_page(request, 404)
                return error_page(request, 422, "Die Anfrage enthält ungültige Angaben.")
            except Problem as exc:
                try:
                    await run_in_threadpool(audit_refusal, request, exc)
                except Exception as hook_error:  # the refusal could not be audited
                    if is_database_outage(hook_error):
                        return error_page(request, 503)
                    raise
                return error_page(request, exc.status, _german_detail(exc))

        return route


def audit_refusal(request: Request, exc: Problem) -> None:
    """Audit a refusal answered by a screen, as the API audits its own. The request's transaction
    is still open inside the route (the dependencies end after it) and a refusal changes nothing,
    so it is ended first: on SQLite every transaction holds the write lock from BEGIN, and the
    refusal's audit row, written in a transaction of its own, would wait for it and answer 503."""
    request_session = getattr(request.state, "db_session", None)
    if request_session is not None:
        request_session.rollback()
    hook = getattr(request.app.state, "on_problem", None)
    if hook is not None:
        hook(request, exc)


def _german_detail(exc: Problem) -> str:
    return problem_text(exc)


def web_router() -> APIRouter:
    """The router of a screen module: paths below /ui, not part of the API's OpenAPI document."""
    return APIRouter(prefix=PREFIX, route_class=WebRoute, include_in_schema=False)
