"""Helpers of the web interface's tests: a signed-in TestClient and the CSRF token of a page."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

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


def form_post(client, page_path: str, action: str, data: dict, expect: int = 303):
    """Open ``page_path``, post ``data`` with the page's CSRF token to ``action``."""
    page = client.get(page_path)
    assert page.status_code == 200, page.text[:2000]
    resp = client.post(action, data={"csrf_token": csrf_of(page.text), **data}, follow_redirects=False)
    assert resp.status_code == expect, resp.text[:3000]
    return resp


INTAKE = {
    "family_name": "Beispiel", "given_names": "Nora", "birth_date": "01.04.1990",
    "residence_status": "protection_granted", "benefit_regime": "asylblg",
    "recipients": ["kommunales_integrationszentrum", "sozialamt", "jobcenter", "auslaenderbehoerde"],
    "categories": ["identity", "residence", "benefits"], "purpose": "case_management",
    "consequences_explained": "ja", "language": "Arabisch", "interpreter_used": "ja",
    "evidence_reference": "EW-2026-001",
}


@pytest.fixture
def demo_app(settings, db, policies, clock):
    """The application as `casemgmt demo` serves it (the demo login page is on)."""
    from conftest import MASTER_KEY

    from casemgmt.app import create_app

    return create_app(settings.model_copy(update={"demo_login": True}), engine=db, policies=policies,
                      clock=clock, master_key=MASTER_KEY)


@pytest.fixture
def web(demo_app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(demo_app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def browser_of(demo_app):
    """``browser_of("cm.ennetal")`` -> a TestClient signed in as that demo user."""
    from fastapi.testclient import TestClient

    opened = []

    def make(user: str):
        c = TestClient(demo_app, raise_server_exceptions=False)
        c.__enter__()
        opened.append(c)
        demo_sign_in(c, user)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def click_and_wait(d, element, timeout: float = 20, app_page: bool = True) -> None:
    """Click a link or a form's button and wait until the next page has replaced this one and
    has loaded; with ``app_page``, until it is one of the interface's pages (with its footer;
    the Sprachenpass to print is not). While Chrome swaps documents, chromedriver may answer a
    look at the old page's elements with "does not belong to the document" (an "unhandled
    inspector error") instead of a stale element: that is gone too."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        element.click()
    except WebDriverException as exc:
        # chromedriver sometimes reports the click after the page it started has replaced the
        # document; the click happened, the wait below sees the new page.
        if "does not belong to the document" not in str(exc):
            raise

    def gone(_driver) -> bool:
        try:
            element.is_enabled()
            return False
        except WebDriverException:
            return True

    WebDriverWait(d, timeout).until(gone)
    wait_loaded(d, timeout, app_page)


def wait_loaded(d, timeout: float = 20, app_page: bool = True) -> None:
    """Wait until the document has loaded; with ``app_page``, until it is one of the
    interface's pages (with its footer). A look while Chrome swaps documents may fail: not yet."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def complete(driver) -> bool:
        try:
            return driver.execute_script("return document.readyState === 'complete' && "
                                         "(!arguments[0] || !!document.querySelector('footer'))", app_page)
        except WebDriverException:
            return False

    WebDriverWait(d, timeout).until(complete)
