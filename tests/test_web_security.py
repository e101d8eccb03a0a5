"""Security of the web interface without a browser: CSRF, session fixation, sign-out, the demo
login only in the demo, cookie flags and headers. Record scope by URL (404 for another
organisation's pages) is in test_web_screens.py."""

from __future__ import annotations

from fastapi.testclient import TestClient
from web_helpers import browser_of, csrf_of, demo_app, demo_sign_in, web  # noqa: F401 (fixtures)

from casemgmt.web.sessions import SESSION_COOKIE


def test_root_opens_the_login_page_and_pages_need_sign_in(web):
    resp = web.get("/")
    assert resp.status_code == 200 and "Anmelden" in resp.text and 'lang="de"' in resp.text
    assert "cm.ennetal" in resp.text  # the demo lists its users
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert web.get("/ui/", follow_redirects=False).headers["location"].startswith("/ui/anmelden")


def test_demo_login_is_refused_outside_the_demo(client):
    assert client.get("/ui/anmelden").status_code == 200
    page = client.get("/ui/anmelden").text
    assert "cm.ennetal" not in page
    assert "csrf_token" not in page  # no form to sign in with
    resp = client.post("/ui/anmelden/demo", data={"csrf_token": "x" * 64, "benutzer": "cm.ennetal"})
    assert resp.status_code == 404 and SESSION_COOKIE not in resp.cookies


def test_login_form_without_csrf_token_is_refused(web):
    web.get("/ui/anmelden")
    resp = web.post("/ui/anmelden/demo", data={"benutzer": "cm.ennetal"}, follow_redirects=False)
    assert resp.status_code == 403 and SESSION_COOKIE not in resp.cookies


def test_session_cookie_flags_and_id_rotated_at_sign_in(web):
    # An attacker plants a session id in the victim's browser before sign-in ...
    web.cookies.set(SESSION_COOKIE, "planted-session-id-0123456789abcdef")
    page = web.get("/ui/anmelden")
    resp = web.post("/ui/anmelden/demo", data={"csrf_token": csrf_of(page.text), "benutzer": "cm.ennetal",
                                               "weiter": "/ui/"}, follow_redirects=False)
    assert resp.status_code == 303
    header = resp.headers["set-cookie"]
    assert "httponly" in header.lower() and "samesite=lax" in header.lower() and "secure" not in header.lower()
    new_id = resp.cookies[SESSION_COOKIE]
    assert new_id != "planted-session-id-0123456789abcdef" and len(new_id) >= 40
    # ... the planted id grants nothing; the new one does.
    fresh = TestClient(web.app, raise_server_exceptions=False)
    fresh.cookies.set(SESSION_COOKIE, "planted-session-id-0123456789abcdef")
    assert fresh.get("/ui/", follow_redirects=False).status_code == 303
    fresh.cookies.set(SESSION_COOKIE, new_id)
    assert fresh.get("/ui/", follow_redirects=False).status_code == 200


def test_secure_cookie_behind_https(demo_app):
    with TestClient(demo_app, base_url="https://casemgmt.kreis.example", raise_server_exceptions=False) as c:
        page = c.get("/ui/anmelden")
        resp = c.post("/ui/anmelden/demo", data={"csrf_token": csrf_of(page.text), "benutzer": "cm.ennetal"},
                      follow_redirects=False)
        assert "secure" in resp.headers["set-cookie"].lower()


def test_logout_ends_the_session_on_the_server(web):
    demo_sign_in(web, "cm.ennetal")
    session_id = web.cookies.get(SESSION_COOKIE)
    home = web.get("/ui/")
    assert home.status_code == 200
    # Without the CSRF token the logout is refused (a foreign site cannot sign the user out).
    assert web.post("/ui/abmelden", data={}, follow_redirects=False).status_code == 403
    resp = web.post("/ui/abmelden", data={"csrf_token": csrf_of(home.text)}, follow_redirects=False)
    assert resp.status_code == 303
    other = TestClient(web.app, raise_server_exceptions=False)
    other.cookies.set(SESSION_COOKIE, session_id)
    assert other.get("/ui/", follow_redirects=False).status_code == 303  # a copied cookie is dead too


def test_navigation_shows_only_what_the_roles_allow(web):
    demo_sign_in(web, "lg.ennetal")
    page = web.get("/ui/").text
    assert "Meine Fälle" not in page and "Posteingang" not in page


def test_a_case_form_without_the_sessions_csrf_token_changes_nothing(browser_of, world, db):
    from sqlalchemy import func, select
    from web_helpers import INTAKE

    from casemgmt.persons.models import Person

    def persons() -> int:
        with db.connect() as conn:
            return conn.execute(select(func.count()).select_from(Person)).scalar_one()

    cm = browser_of("cm.ennetal")
    data = {**INTAKE, "lead_jurisdiction_id": str(world.jurisdictions["wittmar"])}
    for token in (None, "a-token-of-another-session-0123456789abcdef"):
        sent = data if token is None else {**data, "csrf_token": token}
        resp = cm.post("/ui/personen/neu", data=sent, follow_redirects=False)
        assert resp.status_code == 403 and "CSRF" in resp.text
    assert persons() == 0
    # The same form with the page's token goes through.
    page = cm.get("/ui/personen/neu")
    assert cm.post("/ui/personen/neu", data={**data, "csrf_token": csrf_of(page.text)},
                   follow_redirects=False).status_code == 303
    assert persons() == 1


def test_a_form_posted_after_the_session_ended_leads_back_to_its_page_after_sign_in(web):
    chain_page = "/ui/ketten/00000000-0000-4000-8000-000000000000"
    resp = web.post(chain_page + "/schliessen", data={"reason": "other"}, headers={"referer": "http://testserver" + chain_page},
                    follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/ui/anmelden?weiter=%2Fui%2Fketten%2F00000000-0000-4000-8000-000000000000"
    # An unknown page below /ui is an HTML page, the API keeps problem+json.
    page = web.get("/ui/gibt-es-nicht")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html") and "Nicht gefunden" in page.text
    assert web.get("/gibt-es-nicht").headers["content-type"].startswith("application/problem+json")
