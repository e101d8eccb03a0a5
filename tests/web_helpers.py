"""Helpers of the web interface's tests: a signed-in TestClient and the CSRF token of a page."""

from __future__ import annotations

import re

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def demo_sign_in(client, user: str) -> None:
    """Sign in through the demo login page, as a browser would."""
    page = client.get("/ui/anmelden")
    assert page.status_code == 200, page.text
    resp = client.post("/ui/anmelden/demo", data={"csrf_token": csrf_of(page.text), "benutzer": user,
                                                  "weiter": "/ui/"}, follow_redirects=False)
    assert resp.status_code == 303, resp.text
