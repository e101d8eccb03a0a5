"""The web interface in a real browser: Debian's Chromium driven by Selenium through Debian's
chromedriver (no tool downloads a browser). One browser session for the module walks the main
flow: the case manager registers a person with the intake consent and starts the chain using the
keyboard alone, the Sozialamt acts and asks for a Rechtskreiswechsel, the Jobcenter acknowledges
it from its Posteingang. Every screen passes axe-core (as the installed selenium-axe-python
package ships it) with no violation of the WCAG 2.1 A/AA rules, and is photographed into
docs/screenshots/."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from web_helpers import click_and_wait, wait_loaded

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
try:
    import selenium  # noqa: F401
    import selenium_axe_python
except ImportError:  # pragma: no cover - the [test] extra installs both
    selenium_axe_python = None

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None or selenium_axe_python is None,
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them) and the [test] extra's "
           "selenium and selenium-axe-python")

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@pytest.fixture(scope="module")
def server(settings, engine, owner_engine, policies, world, catalog):
    """The demo application served by uvicorn on a free port, on the test database."""
    import uvicorn
    from conftest import MASTER_KEY, FakeClock, reset_case_data

    from casemgmt.app import create_app

    app = create_app(settings.model_copy(update={"demo_login": True}), engine=engine, policies=policies,
                     clock=FakeClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC)), master_key=MASTER_KEY)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started and time.monotonic() < deadline:
        threading.Event().wait(0.05)
    assert srv.started
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        reset_case_data(owner_engine)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--lang=de-DE",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                # Every host but this machine resolves to nowhere: the pages load nothing from outside.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


class Page:
    """The browser, with the checks every screen gets."""

    def __init__(self, driver, base: str):
        self.d = driver
        self.base = base
        self.axe_source = (Path(selenium_axe_python.__file__).parent / "axe-core"
                           / "axe.min.js").read_text(encoding="utf-8")
        self.checked: list[str] = []

    def open(self, path: str) -> None:
        self.d.get(self.base + path)

    def by_id(self, element_id: str):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.ID, element_id)

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.TAG_NAME, "body").text

    def wait_for(self, text: str, timeout: float = 15) -> None:
        """Wait until the page (after a click or key that navigates) shows ``text``."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def shown(_driver) -> bool:
            try:
                return text in self.text()
            except WebDriverException:
                return False

        try:
            WebDriverWait(self.d, timeout).until(shown)
        except Exception:
            raise AssertionError(f"the page does not show {text!r}:\n{self.text()[:1500]}") from None

    def click(self, element) -> None:
        """Click a link or button that loads another page, and wait for it."""
        click_and_wait(self.d, element, timeout=15)

    def loaded(self) -> None:
        """Wait until the document has loaded (after a key that navigates)."""
        wait_loaded(self.d, 15)

    def path(self) -> str:
        return self.d.current_url.removeprefix(self.base)

    def check(self, name: str) -> None:
        """axe-core with the WCAG 2.1 A/AA rules (zero violations), the page's language and
        heading order, and a screenshot of the whole page."""
        self.d.execute_script(self.axe_source)
        result = self.d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}})"
            ".then(r => done({violations: r.violations.map(v => ({id: v.id, help: v.help,"
            " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))}))"
            ".catch(e => done({error: String(e)}));", WCAG_TAGS)
        assert "error" not in result, result
        assert result["violations"] == [], f"{name}: {result['violations']}"
        assert self.d.execute_script("return document.documentElement.lang") == "de"
        levels = self.d.execute_script(
            "return Array.from(document.querySelectorAll('h1,h2,h3,h4')).map(h => +h.tagName[1])")
        assert levels and levels[0] == 1, f"{name}: the first heading is not h1"
        assert all(b - a <= 1 for a, b in zip(levels, levels[1:], strict=False)), f"{name}: headings skip a level {levels}"
        self.checked.append(name)
        height = self.d.execute_script("return document.documentElement.scrollHeight")
        self.d.set_window_size(1280, max(900, min(int(height) + 40, 4000)))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.d.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        self.d.set_window_size(1280, 900)

    def sign_in(self, user: str) -> None:
        self.open("/ui/anmelden")
        self.click(self.by_id(f"demo-{user}"))
        self.wait_for("Sie sind angemeldet")

    def sign_out(self) -> None:
        from selenium.webdriver.common.by import By

        self.click(self.d.find_element(By.CSS_SELECTOR, "form[action='/ui/abmelden'] button"))
        self.wait_for("Sie sind abgemeldet")

    def choose(self, element_id: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.by_id(element_id)).select_by_value(value)


def _focused(driver):
    return driver.switch_to.active_element


def _tab_to(driver, matches, limit: int = 120):
    """Press Tab until the focused element matches (keyboard only); returns it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(limit):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        element = _focused(driver)
        if matches(element):
            return element
    raise AssertionError("the element cannot be reached with the Tab key")


def _visible_focus(driver, element) -> bool:
    style = driver.execute_script(
        "const s = getComputedStyle(arguments[0]); return [s.outlineStyle, s.outlineWidth, s.boxShadow];", element)
    return (style[0] != "none" and style[1] not in ("0px", "")) or style[2] not in ("none", "")


def _type(driver, text: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(text).perform()


def _press(driver, key) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def test_main_flow_in_the_browser_with_accessibility_checks(server, driver, world):
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    page = Page(driver, server)
    page.open("/")
    assert "Anmelden" in driver.title
    page.check("01-anmelden")

    # --- the case manager, keyboard only -----------------------------------------------------
    page.open("/ui/anmelden")
    skip = _tab_to(driver, lambda e: e.get_attribute("class") == "skip-link", limit=3)
    assert _visible_focus(driver, skip), "the skip link shows no focus"
    button = _tab_to(driver, lambda e: e.get_attribute("id") == "demo-cm.ennetal")
    assert _visible_focus(driver, button)
    _press(driver, Keys.ENTER)
    page.wait_for("Sie sind angemeldet")
    page.check("02-start-case-manager")
    link = _tab_to(driver, lambda e: e.tag_name == "a" and e.text == "Person registrieren")
    _press(driver, Keys.ENTER)
    WebDriverWait(driver, 20, ignored_exceptions=(WebDriverException,)).until(
        lambda d: page.path() == "/ui/personen/neu")
    page.loaded()
    assert page.path() == "/ui/personen/neu"
    page.check("03-person-registrieren")

    town = _tab_to(driver, lambda e: e.get_attribute("name") == "lead_jurisdiction_id", limit=20)
    _type(driver, "Wittmar")
    assert town.get_attribute("value") == str(world.jurisdictions["wittmar"])
    typed = {"family_name": "Beispiel", "given_names": "Nora", "birth_date": "01.04.1990"}
    for name, value in typed.items():
        _tab_to(driver, lambda e, n=name: e.get_attribute("name") == n, limit=10)
        _type(driver, value)
    for name, visible in (("residence_status", "Schutz zuerkannt"), ("benefit_regime", "AsylbLG")):
        _tab_to(driver, lambda e, n=name: e.get_attribute("name") == n, limit=10)
        _type(driver, visible)
    for value in ("kommunales_integrationszentrum", "sozialamt", "jobcenter", "auslaenderbehoerde"):
        _tab_to(driver, lambda e, v=value: e.get_attribute("name") == "recipients" and e.get_attribute("value") == v)
        _press(driver, Keys.SPACE)
    for value in ("identity", "residence", "benefits"):
        _tab_to(driver, lambda e, v=value: e.get_attribute("name") == "categories" and e.get_attribute("value") == v)
        _press(driver, Keys.SPACE)
    _tab_to(driver, lambda e: e.get_attribute("name") == "consequences_explained")
    _press(driver, Keys.SPACE)
    # Submitted without the evidence reference: the error summary names it and links to the field.
    _tab_to(driver, lambda e: e.tag_name == "button" and e.text == "Person registrieren")
    _press(driver, Keys.ENTER)
    page.wait_for("Bitte korrigieren Sie die folgenden Angaben")
    page.check("04-person-registrieren-fehler")
    error_link = _tab_to(driver, lambda e: e.get_attribute("href", ) and e.get_attribute("href").endswith("#feld-evidence_reference"))
    _press(driver, Keys.ENTER)
    assert _focused(driver).get_attribute("id") == "feld-evidence_reference"
    _type(driver, "EW-2026-001")
    # The form kept what was entered; the person is registered.
    _tab_to(driver, lambda e: e.tag_name == "button" and e.text == "Person registrieren")
    _press(driver, Keys.ENTER)
    page.wait_for("Die Person ist registriert")
    person_path = page.path().split("?")[0]
    page.check("05-person")
    _tab_to(driver, lambda e: e.get_attribute("name") == "template_key")
    _type(driver, "Geflüchtete")
    _tab_to(driver, lambda e: e.tag_name == "button" and e.text == "Integrationskette starten", limit=5)
    _press(driver, Keys.ENTER)
    page.wait_for("Die Integrationskette ist gestartet")
    chain_path = page.path().split("?")[0]
    page.check("06-kette-case-manager")
    page.open("/ui/faelle")
    page.check("07-meine-faelle")
    page.sign_out()

    # --- the Sozialamt acts and asks the Jobcenter to take over (Rechtskreiswechsel) ---------
    page.sign_in("soz.wittmar")
    page.open("/ui/schritte")
    page.wait_for("Ankunft und Zuweisung")
    page.check("08-meine-schritte")
    page.open(chain_path)
    page.click(page.by_id("aktion-arrival_assignment-start"))
    page.click(page.by_id("aktion-arrival_assignment-complete"))
    page.click(page.by_id("aktion-asylblg_subsistence-start"))
    page.wait_for("Der Schritt ist geändert")
    page.choose("feld-uebergabe-kind", "rechtskreiswechsel")
    page.choose("feld-uebergabe-step_key", "asylblg_subsistence")
    page.choose("feld-uebergabe-to_step_key", "sgb2_application")
    page.choose("feld-uebergabe-benefit_regime", "sgb_ii")
    from selenium.webdriver.common.by import By

    page.click(driver.find_element(By.CSS_SELECTOR, f"form[action='{chain_path}/uebergaben'] button"))
    page.wait_for("Die Übergabe ist angefragt")
    handover_path = page.path().split("?")[0]
    page.open("/ui/ausgang")
    page.check("09-ausgang")
    page.sign_out()

    # --- the Jobcenter acknowledges from its Posteingang -------------------------------------
    page.sign_in("jc.ennetal")
    page.open("/ui/posteingang")
    page.wait_for("Rechtskreiswechsel")
    page.check("10-posteingang")
    page.click(driver.find_element(By.CSS_SELECTOR, f"a[href='{handover_path}']"))
    page.wait_for("Datenpaket")
    assert "Beispiel" in page.text()
    page.check("11-uebergabe")
    page.click(page.by_id("antwort-acknowledge"))
    page.wait_for("Die Übergabe ist bestätigt")
    page.open(chain_path)
    page.check("12-kette-nach-rechtskreiswechsel")
    # Another organisation's person page by URL: the same 404 as for an id that does not exist.
    page.open(person_path.replace(person_path[-12:], "000000000000"))
    page.wait_for("Nicht gefunden")
    page.check("13-nicht-gefunden")
    page.sign_out()
    assert len(page.checked) == 13
