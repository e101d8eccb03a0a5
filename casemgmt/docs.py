"""The API documentation pages (Swagger UI at ``/docs``, ReDoc at ``/redoc``) served offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so they stay blank in a municipal
network without internet access. The assets come from the installed ``fastapi-offline`` package
(MIT; it ships the Swagger UI bundle, its stylesheet and the ReDoc standalone script) and are
served by this application under ``/docs-assets``; the pages reference nothing outside it (ReDoc
without Google Fonts).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def assets_directory() -> Path:
    """Where the installed package keeps the assets; start-up fails loudly if one is missing."""
    import fastapi_offline

    directory = Path(fastapi_offline.__file__).parent / "static"
    missing = [name for name in ASSET_FILES if not (directory / name).is_file()]
    if missing:
        raise RuntimeError(f"API documentation assets missing in {directory}: {', '.join(missing)}")
    return directory


def install_docs(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and the OAuth2 redirect page; the app must be created with
    ``docs_url=None, redoc_url=None``."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_directory()), name="docs-assets")
    redirect_url = "/docs/oauth2-redirect"

    # Plain routes, like FastAPI's own docs pages: no API dependencies (the check of unknown
    # query parameters), not in the OpenAPI document.
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False,
        )

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
