"""The web interface: German, server-rendered screens in the same application as the API.

Pages are Jinja2 templates (``templates/``) with plain HTML forms that work without JavaScript
(post, redirect, get), one stylesheet of our own (``static/kern.css``, following the KERN UX
conventions) and no inline script (the Content-Security-Policy forbids it). Pages live below
``/ui``; ``/`` leads there. They call the same service functions as the API with the same
:class:`~casemgmt.chains.engine.Actor`, so record scope (outsiders get 404), the privacy exit
point and the audit of every read and refusal are exactly the API's.

How to add a screen module (one per area, e.g. ``casemgmt/web/konferenzen.py``):

1. ``router = web_router()`` (from :mod:`casemgmt.web.routing`); every path is below ``/ui``
   and out of the OpenAPI document. Refusals raised by services (``Problem``) become HTML pages
   with the same status (404 for anything outside the user's scope), audited like the API's.
2. Each page takes ``user: WebUser = Depends(need("<permission>"))`` (signed in, holding the
   permission of ``policies/roles.yaml`` the matching API route requires) and
   ``db: Session = Depends(get_session)``; the service gets ``user.actor``.
3. A form posts to a route taking ``form: FormData = Depends(checked_form)`` (refused without the
   session's CSRF token; templates put ``{{ csrf(csrf_token) }}`` into every form). On success answer
   ``redirect(path, "<notice key of routing.NOTICES>")`` (303); on a refusal re-render the form
   with ``errors=field_errors(exc)`` (the error summary links to the fields by ``id``).
4. Render with ``render(request, "<template>.html", **context)``; templates extend
   ``base.html``, use the macros of ``_macros.html`` (fields, error summary, status as text) and
   the filters ``datum``, ``zeit`` and ``zahl``; every text goes through ``_()``.
5. Add the module's navigation entries with ``nav_entry(label, path, permission, order)`` (shown
   only to roles with the permission), append the module to ``SCREEN_MODULES`` below, and give
   every page a browser test with the axe check in ``tests/test_web_browser*.py``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

# Screen modules, each with a ``router``; the order is the order of their routes.
SCREEN_MODULES = ("login", "start", "faelle", "posteingang", "conferences", "steering", "dpo", "admin", "angebote")

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class WebHeaders:
    """Adds the Content-Security-Policy and its companions to every page below /ui."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope["path"] == "/" or scope["path"].startswith("/ui")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + _HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_web(app: FastAPI) -> None:
    """Mount the screens, the stylesheet and the headers in ``app``."""
    for name in SCREEN_MODULES:
        module = importlib.import_module(f"casemgmt.web.{name}")
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=Path(__file__).resolve().parent / "static"), name="web-static")

    from starlette.exceptions import HTTPException as StarletteHTTPException

    api_answer = app.exception_handlers.get(StarletteHTTPException)

    async def web_or_api(request, exc):
        """An unknown page or method below /ui is an HTML page too; the API keeps problem+json."""
        if request.url.path.startswith("/ui/") and exc.status_code in (404, 405):
            from casemgmt.web.routing import error_page

            return error_page(request, 404)
        return await api_answer(request, exc)

    if api_answer is not None:
        app.add_exception_handler(StarletteHTTPException, web_or_api)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        """The web interface opens at the root."""
        return RedirectResponse("/ui/", status_code=303)

    app.add_middleware(WebHeaders)
