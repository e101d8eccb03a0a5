"""The API documentation pages work in a network without internet: every script, stylesheet and
icon of ``/docs`` and ``/redoc`` comes from this application (an installed package), none from a
CDN. Sockets are switched off while the pages and their assets are fetched in-process."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*['"]([^"']+)['"]|Redoc\.init\(\s*["']([^"']+)""")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


def _references(page: str) -> list[str]:
    found = []
    for groups in ASSET.findall(page):
        found += [g for g in groups if g]
    # Swagger UI's init script names the OpenAPI document and the assets as JS strings, too.
    found += re.findall(r"""['"](/[^'"\s]+\.(?:js|css|png|json))['"]""", page)
    return sorted(set(found))


@pytest.mark.parametrize("page_url, needed", [
    ("/docs", {"/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/openapi.json"}),
    ("/redoc", {"/docs-assets/redoc.standalone.js", "/openapi.json"}),
])
def test_docs_pages_and_their_assets_load_without_network(client, no_network, page_url, needed):
    page = client.get(page_url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    refs = _references(page.text)
    assert needed <= set(refs), refs
    # Nothing is fetched from elsewhere: every reference is a path of this application.
    outside = [r for r in refs if not r.startswith("/")]
    assert not outside, f"{page_url} loads from outside: {outside}"
    assert "cdn.jsdelivr" not in page.text and "fonts.googleapis" not in page.text
    for ref in refs:
        resp = client.get(ref)
        assert resp.status_code == 200, ref
        assert len(resp.content) > 1000, ref
    bundle = client.get(next(r for r in refs if r.endswith(".js")))
    assert "javascript" in bundle.headers["content-type"]


def test_oauth2_redirect_page_is_served(client, no_network):
    resp = client.get("/docs/oauth2-redirect")
    assert resp.status_code == 200 and "oauth2" in resp.text.lower()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_swagger_ui_renders_in_a_browser_without_network(app, tmp_path):
    """Headless Chromium, with every host but this server mapped to nowhere, renders the Swagger
    UI: the rendered page lists the API's operations."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}",
             # Every host resolves to nowhere except this server: a CDN reference would fail.
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--virtual-time-budget=15000", "--dump-dom", f"http://127.0.0.1:{port}/docs"],
            capture_output=True, text=True, timeout=120)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    dom = result.stdout
    assert "swagger-ui" in dom, result.stderr[-2000:]
    assert "opblock" in dom, "Swagger UI did not render the operations"
    assert "/reports/steering" in dom
