"""The moderator's, the Lenkungsgruppe's, the data protection officer's and the administrator's
screens in real Chromium (Debian's chromium and chromedriver, driven by Selenium): a finding with
a name is refused and corrected, the Lenkungsgruppe opens the report and decides a proposal, and
axe-core finds no WCAG 2.1 A/AA violation on any of these screens. Screenshots of the screens go
to docs/screenshots/ for reviewers. Skipped, saying why, where the browser is missing."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from http_helpers import ok
from test_conferences_api import MOD, conference, consenting_case, finding, phase
from web_helpers import click_and_wait, demo_app  # noqa: F401 (fixture)

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

selenium = pytest.importorskip("selenium", reason="selenium is a test dependency")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


@pytest.fixture
def live_url(demo_app) -> Iterator[str]:  # noqa: F811 (the fixture imported above)
    """The demo application served by uvicorn on a free local port, in a thread."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(demo_app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the live server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def chrome() -> Iterator[webdriver.Chrome]:
    """One browser for the module (each test signs in afresh)."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    options = Options()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1400", "--lang=de-DE"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(driver), options=options)
    d.implicitly_wait(2)
    yield d
    d.quit()


def submit(d, button) -> None:
    """Click a link or a form's button and wait until the next page has replaced this one."""
    click_and_wait(d, button, app_page=False)


def sign_in(d, base: str, user: str) -> None:
    d.get(f"{base}/ui/anmelden")
    d.delete_all_cookies()
    d.get(f"{base}/ui/anmelden")
    submit(d, d.find_element(By.ID, f"demo-{user}"))
    assert "/ui/" in d.current_url and "Abmelden" in d.page_source


def accessible(d, name: str) -> None:
    """axe-core (the copy selenium-axe-python installs: axe-core 4 with the WCAG 2.1 rules) on the
    page as it stands; a screenshot for reviewers."""
    axe_core = pytest.importorskip("selenium_axe_python", reason="selenium-axe-python is a test dependency")
    from selenium_axe_python import Axe

    axe = Axe(d)
    d.execute_script((Path(axe_core.__file__).parent / "axe-core" / "axe.min.js").read_text(encoding="utf-8"))
    d.set_script_timeout(120)
    results = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
        ".then(r => done({violations: r.violations}), e => done({error: String(e)}));", WCAG_21_AA)
    assert "error" not in results, results
    assert not results["violations"], f"{name}: {axe.report(results['violations'])}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = d.get_window_size()
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(size["width"], min(max(height, size["height"]), 4000))  # the whole page
    d.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    d.set_window_size(size["width"], size["height"])


def structural_conference(client, auth, world) -> str:
    chain = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    conf = conference(client, auth, world, "ennetal_abh")
    phase(client, auth, conf["id"], "case_phase")
    ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": chain["id"]}, headers=auth(*MOD)))
    phase(client, auth, conf["id"], "structural_phase")
    return conf["id"]


def test_moderator_corrects_a_finding_the_scrubber_refused(client, auth, world, live_url, chrome):
    conf_id = structural_conference(client, auth, world)
    d = chrome
    sign_in(d, live_url, "mod.ennetal")
    d.get(f"{live_url}/ui/konferenzen")
    accessible(d, "moderation-konferenzen")
    submit(d, d.find_element(By.LINK_TEXT, "Fallkonferenz Wittmar November"))
    for name, value in (("barrier_category", "waiting_times"), ("field_of_action", "language"),
                        ("level", "intermunicipal"), ("weather", "gewitter")):
        Select(d.find_element(By.ID, f"feld-{name}")).select_by_value(value)
    d.find_element(By.ID, "feld-organisation_kinds-course_provider").click()
    d.find_element(By.CSS_SELECTOR, "input[name=conference_case_ids]").click()
    text = d.find_element(By.ID, "feld-text")
    text.send_keys("Frau Haddad wartet seit vier Monaten auf einen Kurs.")
    submit(d, d.find_element(By.CSS_SELECTOR, "#befund-formular button[type=submit]"))

    # Refused: the objection marks the name where it stands, the text waits in the field.
    marked = d.find_element(By.CSS_SELECTOR, "#einwaende-text mark")
    assert marked.text.startswith("Haddad")
    assert "Haddad" in d.find_element(By.ID, "feld-text").get_attribute("value")
    accessible(d, "moderation-befund-einwand")
    text = d.find_element(By.ID, "feld-text")
    text.clear()
    text.send_keys("Wartezeit auf Integrationskurse über vier Monate.")
    submit(d, d.find_element(By.CSS_SELECTOR, "#befund-formular button[type=submit]"))
    errors = d.find_elements(By.CSS_SELECTOR, ".fehler-zusammenfassung")
    assert not errors, errors[0].text
    assert "Die Änderung ist gespeichert." in d.page_source
    assert "Wartezeit auf Integrationskurse über vier Monate." in d.page_source and "Haddad" not in d.page_source
    assert f"/ui/konferenzen/{conf_id}" in d.current_url
    accessible(d, "moderation-konferenz")


def test_lenkungsgruppe_opens_the_report_and_decides_a_proposal(client, auth, world, live_url, chrome, release):
    conf_id = structural_conference(client, auth, world)
    conf = ok(client.get(f"/conferences/{conf_id}", headers=auth(*MOD)))
    made = ok(client.post(f"/conferences/{conf_id}/findings", json=finding(
        conference_case_ids=[conf["cases"][0]["id"]]), headers=auth(*MOD)))
    proposal = ok(client.post("/proposals", json={
        "title": "Kursplätze mit Kinderbetreuung", "summary": "Kursträger und Kitas planen gemeinsam.",
        "finding_ids": [made["findings"][0]["id"]]}, headers=auth(*MOD)), 201)
    ok(client.post(f"/proposals/{proposal['id']}/actions", json={"action": "submit"}, headers=auth(*MOD)))
    release("2026-Q1", datetime(2026, 7, 1, 8, tzinfo=UTC), area="kreis_ennetal")

    d = chrome
    sign_in(d, live_url, "lg.ennetal")
    submit(d, d.find_element(By.LINK_TEXT, "Steuerungsbericht"))
    assert "Zielerreichung" in d.page_source and "Wartezeiten bei Übergaben" in d.page_source
    assert "unterdrücktes Feld" in d.find_element(By.ID, "unterdrueckt").text
    accessible(d, "lenkung-bericht")
    submit(d, d.find_element(By.LINK_TEXT, "Vorschläge"))
    accessible(d, "lenkung-vorschlaege")
    submit(d, d.find_element(By.LINK_TEXT, "Kursplätze mit Kinderbetreuung"))
    accessible(d, "lenkung-vorschlag")
    d.find_element(By.ID, "feld-working_group_name").send_keys("AG Kurse mit Kinderbetreuung")
    Select(d.find_element(By.ID, "feld-lead_organisation_id")).select_by_visible_text("VHS Ennetal")
    # The date picker's typing order follows the browser's locale; the value is what it submits.
    d.execute_script("arguments[0].value = '2026-06-30'", d.find_element(By.ID, "feld-due_date"))
    submit(d, d.find_element(By.XPATH, "//button[normalize-space()='Annehmen und Arbeitsgruppe gründen']"))
    errors = d.find_elements(By.CSS_SELECTOR, ".fehler-zusammenfassung")
    assert not errors, errors[0].text
    assert "Die Änderung ist gespeichert." in d.page_source
    assert "Angenommen" in d.page_source and "AG Kurse mit Kinderbetreuung" in d.page_source
    submit(d, d.find_element(By.LINK_TEXT, "Arbeitsgruppen"))
    assert "AG Kurse mit Kinderbetreuung" in d.page_source
    accessible(d, "lenkung-arbeitsgruppen")


def test_dpo_and_admin_screens_have_no_accessibility_violations(client, auth, world, live_url, chrome):
    chain = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    d = chrome
    sign_in(d, live_url, "dsb.ennetal")
    for path, name in ((f"/ui/datenschutz/protokoll?person_id={chain['person_id']}", "datenschutz-protokoll"),
                       (f"/ui/datenschutz/einwilligungen?person_id={chain['person_id']}", "datenschutz-einwilligungen"),
                       ("/ui/datenschutz/verzeichnis", "datenschutz-verzeichnis"),
                       ("/ui/datenschutz/anfragen", "datenschutz-anfragen"),
                       ("/ui/datenschutz/loeschfristen", "datenschutz-loeschfristen")):
        d.get(live_url + path)
        assert d.find_element(By.TAG_NAME, "h1").text
        accessible(d, name)
    d.get(f"{live_url}/ui/datenschutz/protokoll?von=gestern")  # the form with its error summary
    assert d.find_elements(By.CSS_SELECTOR, ".fehler-zusammenfassung a[href='#feld-von']")
    accessible(d, "datenschutz-protokoll-fehler")
    # A request registered from the screen: the scrubber's objection at its field first.
    d.get(f"{live_url}/ui/datenschutz/anfragen")
    d.find_element(By.ID, "feld-person_id").send_keys(chain["person_id"])
    Select(d.find_element(By.ID, "feld-kind")).select_by_value("access")
    d.find_element(By.ID, "feld-identity_checked_by").send_keys("Bürgerbüro, Rückfragen an info@example.org")
    d.find_element(By.ID, "feld-identity_check_method").send_keys("Personalausweis vorgelegt")
    submit(d, d.find_element(By.XPATH, "//button[normalize-space()='Anfrage registrieren']"))
    assert d.find_elements(By.CSS_SELECTOR, ".fehler-zusammenfassung a[href='#feld-identity_checked_by']")
    accessible(d, "datenschutz-anfragen-fehler")
    field = d.find_element(By.ID, "feld-identity_checked_by")
    field.clear()
    field.send_keys("Bürgerbüro Wittmar")
    submit(d, d.find_element(By.XPATH, "//button[normalize-space()='Anfrage registrieren']"))
    assert "Die Anfrage ist registriert." in d.page_source
    submit(d, d.find_element(By.XPATH, "//button[normalize-space()='Bearbeitung beginnen']"))
    assert "in Bearbeitung" in d.page_source
    accessible(d, "datenschutz-anfrage")
    d.get(f"{live_url}/ui/datenschutz/loeschsperre?person_id={chain['person_id']}")
    d.find_element(By.ID, "feld-reason").send_keys("Verfahren VG Arnsberg 3 K 12/26")
    submit(d, d.find_element(By.XPATH, "//button[normalize-space()='Löschsperre setzen']"))
    assert "Die Löschsperre ist gesetzt." in d.page_source
    accessible(d, "datenschutz-loeschsperre")
    submit(d, d.find_element(By.XPATH, "//button[normalize-space()='Abmelden']"))

    sign_in(d, live_url, "admin.ennetal")
    submit(d, d.find_element(By.LINK_TEXT, "Organisationen"))
    accessible(d, "verwaltung-organisationen")
    submit(d, d.find_element(By.LINK_TEXT, "Ausländerbehörde Kreis Ennetal"))
    Select(d.find_element(By.ID, "feld-role")).select_by_value("lead")
    d.find_element(By.ID, "feld-address").send_keys("leitung.abh@ennetal.example")
    submit(d, d.find_element(By.XPATH, "//button[normalize-space()='Hinzufügen']"))
    assert "leitung.abh@ennetal.example" in d.page_source
    accessible(d, "verwaltung-kontakte")


def test_offer_and_sprachenpass_screens_have_no_accessibility_violations(client, auth, world, live_url, chrome,
                                                                         release, session_factory):
    """The public directory (reached from the login page without signing in), the matching
    offers of a chain step with an enrolment refused as already made, the Sprachenpass on the
    person page and printed, and supply and demand on the Steuerungsbericht."""
    from test_web_angebote import STEP, VHS, _person_with_chain, offer_body, ready_in_quarter

    course = ok(client.post("/offers", json=offer_body(world), headers=auth(*VHS)), 201)
    ok(client.post("/offers", json=offer_body(world, title="Sportgruppe am Samstag", offer_kind="sports",
                                              capacity=None), headers=auth(*VHS)), 201)
    ok(client.post("/good-practices", json={"offer_id": course["id"], "title": "Kinderbetreuung im Nebenraum",
                                            "text": "Eltern nehmen teil, weil die Kinder nebenan betreut werden."},
                   headers=auth(*VHS)), 201)
    person, chain = _person_with_chain(client, auth, world)
    waiting = [_person_with_chain(client, auth, world)[1]["id"] for _ in range(5)]
    ready_in_quarter(session_factory, world, waiting)
    release("2026-Q1", datetime(2026, 7, 1, 8, tzinfo=UTC), area="kreis_ennetal")

    d = chrome
    d.get(f"{live_url}/ui/anmelden")
    d.delete_all_cookies()
    d.get(f"{live_url}/ui/anmelden")
    submit(d, d.find_element(By.LINK_TEXT, "Integrationsangebote im Kreis suchen"))
    assert "Integrationskurs am Vormittag" in d.page_source and "Abmelden" not in d.page_source
    accessible(d, "angebote-oeffentlich")
    d.find_element(By.ID, "feld-beginn").send_keys("bald")
    submit(d, d.find_element(By.XPATH, "//button[normalize-space()='Suchen']"))
    assert d.find_elements(By.CSS_SELECTOR, ".fehler-zusammenfassung a[href='#feld-beginn']")
    accessible(d, "angebote-oeffentlich-fehler")
    d.get(f"{live_url}/ui/angebote/{course['id']}")
    assert "Petra Kurzmann" in d.page_source
    accessible(d, "angebot")

    sign_in(d, live_url, "cm.ennetal")
    d.get(f"{live_url}/ui/ketten/{chain['id']}")
    submit(d, d.find_element(By.CSS_SELECTOR, f"#schritt-{STEP} .kette__angebote a"))
    accessible(d, "angebote-schritt")
    submit(d, d.find_element(By.ID, f"buchen-enrol-{course['id']}"))
    assert "ein Platz ist belegt" in d.page_source
    submit(d, d.find_element(By.ID, f"buchen-enrol-{course['id']}"))
    assert "bereits in diesem Angebot angemeldet" in d.find_element(By.CSS_SELECTOR, ".fehler-zusammenfassung").text
    accessible(d, "angebote-schritt-fehler")

    sign_in(d, live_url, "vhs.ennetal")
    ok(client.post(f"/persons/{person['id']}/language-pass", json={
        "offer_id": course["id"], "from_date": "2026-03-16", "to_date": "2026-09-30", "hours": 700,
        "levels": {"listening": "B1", "reading": "B1", "writing": "A2", "speaking": "B1"},
        "certificates": [{"exam": "DTZ", "title": "Deutsch-Test für Zuwanderer", "level": "B1",
                          "date": "2026-09-25", "evidence_reference": "VHS-DTZ-2026-17"}]}, headers=auth(*VHS)), 201)
    d.get(f"{live_url}/ui/personen/{person['id']}#sprachenpass")
    assert "Deutsch-Test für Zuwanderer" in d.page_source
    accessible(d, "sprachenpass-person")
    submit(d, d.find_element(By.PARTIAL_LINK_TEXT, "Sprachenpass zum Ausdrucken"))
    assert "700 UE" in d.page_source
    accessible(d, "sprachenpass-druck")

    sign_in(d, live_url, "lg.ennetal")
    d.get(f"{live_url}/ui/lenkung#bestand-bedarf")
    assert d.find_element(By.ID, "bestand-bedarf")
    accessible(d, "lenkung-bestand-bedarf")
