"""The screens of the Angebotsdatenbank and the Sprachenpass without a browser (TestClient): the
public directory without a login shows what GET /public/offers shows and no person, the case
manager books a matching course from the chain page (offer full and already enrolled shown in
German), the course provider writes the Sprachenpass on the person page, the Lenkungsgruppe
sees supply and demand with suppressed cells as ".", and outsiders get the same 404 for real and
random ids."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from http_helpers import ok
from test_api import new_person, started
from test_offers import KI, STEP, VHS, offer_body
from web_helpers import browser_of, csrf_of, demo_app, form_post  # noqa: F401 (fixtures)

RANDOM = "00000000-0000-4000-8000-000000000000"


def _person_with_chain(client, auth, world, name="Rana"):
    person = new_person(client, auth(*KI), world.jurisdictions["wittmar"], preferred_language="Arabisch",
                        family_name=name)
    return person, started(client, auth(*KI), person)


def test_public_directory_needs_no_login_and_shows_no_person(client, auth, world, demo_app):
    from fastapi.testclient import TestClient

    big = ok(client.post("/offers", json=offer_body(world), headers=auth(*VHS)), 201)
    ok(client.post("/offers", json=offer_body(world, title="Alphabetisierungskurs", capacity=3,
                                              offer_kind="literacy_course", languages=["Deutsch"]),
                   headers=auth(*VHS)), 201)
    ok(client.post("/good-practices", json={"offer_id": big["id"], "title": "Kinderbetreuung im Nebenraum",
                                            "text": "Eltern nehmen teil, weil die Kinder nebenan betreut werden."},
                   headers=auth(*VHS)), 201)
    with TestClient(demo_app, raise_server_exceptions=False) as public:
        assert 'href="/ui/angebote"' in public.get("/ui/anmelden").text
        wittmar = f"/ui/angebote?ort={world.jurisdictions['wittmar']}"
        before = public.get(wittmar)
        assert before.status_code == 200 and "Anmelden für Mitarbeitende" in before.text
        page = before.text
        assert "Integrationskurs am Vormittag" in page and "Alphabetisierungskurs" in page
        assert "Plätze frei" in page and "Wenige Plätze frei" in page  # the band, as the API's places
        assert "Kinderbetreuung im Nebenraum" in page and '<th scope="col">' in page
        # An enrolment changes nothing the public page shows: no count, no person, byte for byte.
        person, chain = _person_with_chain(client, auth, world)
        ok(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{big['id']}", json={"action": "enrol"},
                       headers=auth(*KI)))
        after = public.get(wittmar)
        assert after.text == before.text
        assert person["id"] not in after.text and chain["id"] not in after.text and "Rana" not in after.text
        # The filters are the API's; a wrong value is named in the error summary, not a 500.
        only = public.get("/ui/angebote", params={"art": "literacy_course"}).text
        assert "Alphabetisierungskurs" in only and "Integrationskurs am Vormittag" not in only
        assert "Keine Angebote gefunden" in public.get("/ui/angebote", params={"beginn": "3"}).text
        for bad in ({"beginn": "bald"}, {"ort": "999999"}, {"art": "nichts"}, {"plaetze": "viele"}):
            refused = public.get("/ui/angebote", params=bad)
            assert refused.status_code == 422 and f'href="#feld-{next(iter(bad))}"' in refused.text, bad
        detail = public.get(f"/ui/angebote/{big['id']}")
        assert detail.status_code == 200 and "Petra Kurzmann" in detail.text and "20" not in re.sub(
            r"<[^>]+>|\d{2}\.\d{2}\.\d{4}|[0-9a-f-]{36}|02302 1234", "", detail.text)  # no capacity shown
        assert public.get(f"/ui/angebote/{RANDOM}").status_code == 404
        assert public.get("/ui/sprachenpass.css").status_code == 200


def _matching(client, chain_id):
    return client.get(f"/ui/ketten/{chain_id}/schritte/{STEP}/angebote")


def _book(client, chain_id, offer_id, action):
    page = _matching(client, chain_id).text
    version = re.search(r'name="expected_version" value="(\d+)"', page).group(1)
    return client.post(f"/ui/ketten/{chain_id}/schritte/{STEP}/angebote/{offer_id}",
                       data={"csrf_token": csrf_of(page), "action": action, "expected_version": version},
                       follow_redirects=False)


def test_case_manager_books_a_matching_course_from_the_chain_page(client, auth, world, browser_of):
    far = ok(client.post("/offers", json=offer_body(world, title="Abendkurs", starts_on="2026-05-04",
                                                    languages=["Deutsch"]), headers=auth(*VHS)), 201)
    near = ok(client.post("/offers", json=offer_body(world, capacity=1), headers=auth(*VHS)), 201)
    _, chain = _person_with_chain(client, auth, world)
    _, other = _person_with_chain(client, auth, world, name="Haddad")
    cm = browser_of("cm.ennetal")
    chain_page = cm.get(f"/ui/ketten/{chain['id']}").text
    assert f'/ui/ketten/{chain["id"]}/schritte/{STEP}/angebote"' in chain_page and "Passende Angebote" in chain_page
    page = _matching(cm, chain["id"])
    assert page.status_code == 200
    # Ranked as the API ranks them: the person's language first.
    api = ok(client.get(f"/chains/{chain['id']}/steps/{STEP}/offers", headers=auth(*KI)))
    assert [o["offer"]["id"] for o in api["offers"]] == [near["id"], far["id"]]
    assert page.text.index(f"buchen-enrol-{near['id']}") < page.text.index(f"buchen-enrol-{far['id']}")
    # Without the session's CSRF token nothing is booked.
    forged = cm.post(f"/ui/ketten/{chain['id']}/schritte/{STEP}/angebote/{near['id']}", data={"action": "enrol"},
                     follow_redirects=False)
    assert forged.status_code == 403
    done = _book(cm, chain["id"], near["id"], "enrol")
    assert done.status_code == 303, done.text[:2000]
    shown = cm.get(done.headers["location"]).text
    assert "ein Platz ist belegt" in shown and "Angemeldet" in shown
    again = _book(cm, chain["id"], near["id"], "enrol")
    assert again.status_code == 409 and "bereits in diesem Angebot angemeldet" in again.text
    assert 'class="fehler-zusammenfassung"' in again.text
    full = _book(cm, other["id"], near["id"], "enrol")
    assert full.status_code == 409 and "keinen freien Platz mehr" in full.text
    assert {o["id"]: o["free_places"] for o in ok(client.get("/offers", headers=auth(*VHS)))}[near["id"]] == 0
    referred = _book(cm, other["id"], far["id"], "refer")
    assert referred.status_code == 303
    events = ok(client.get(f"/chains/{other['id']}/events", headers=auth(*KI)))
    assert [e["kind"] for e in events if e["kind"].startswith("offer_")] == ["offer_referred"]
    # Outsiders: the same 404 page for the real chain and a random one, reading or booking.
    jc = browser_of("jc.ennetal")
    token = csrf_of(jc.get("/ui/").text)
    for chain_id in (chain["id"], RANDOM):
        assert _matching(jc, chain_id).status_code == 404
        resp = jc.post(f"/ui/ketten/{chain_id}/schritte/{STEP}/angebote/{far['id']}",
                       data={"csrf_token": token, "action": "refer"}, follow_redirects=False)
        assert resp.status_code == 404 and "Nicht gefunden" in resp.text


def test_course_provider_writes_the_sprachenpass_on_the_person_page(client, auth, world, browser_of):
    offer = ok(client.post("/offers", json=offer_body(world), headers=auth(*VHS)), 201)
    person, chain = _person_with_chain(client, auth, world)
    ok(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{offer['id']}", json={"action": "enrol"},
                   headers=auth(*KI)))
    vhs = browser_of("vhs.ennetal")
    person_path = f"/ui/personen/{person['id']}"
    page = vhs.get(person_path).text
    assert "Sprachenpass" in page and "Eintrag für einen Kurs Ihres Trägers" in page
    assert f'<option value="{offer["id"]}">' in page
    entry = {"offer_id": offer["id"], "from_date": "16.03.2026", "to_date": "30.09.2026", "hours": "700",
             "level_listening": "B1", "level_reading": "B1", "level_writing": "A2", "level_speaking": "B1",
             "cert_exam": "DTZ", "cert_title": "Deutsch-Test für Zuwanderer", "cert_level": "B1",
             "cert_date": "25.09.2026", "cert_evidence": "VHS-DTZ-2026-17"}
    refused = form_post(vhs, person_path, f"{person_path}/sprachenpass", entry | {"from_date": "März"}, expect=422)
    assert 'href="#feld-sp-from_date"' in refused.text and 'id="feld-sp-from_date"' in refused.text
    assert 'value="VHS-DTZ-2026-17"' in refused.text  # the form keeps what was entered
    form_post(vhs, person_path, f"{person_path}/sprachenpass", entry)
    page = vhs.get(f"{person_path}?hinweis=sprachenpass").text
    assert "Der Eintrag im Sprachenpass ist gespeichert." in page
    assert "Deutsch-Test für Zuwanderer (B1), 25.09.2026" in page and "Hören B1" in page
    printed = vhs.get(f"{person_path}/sprachenpass")
    assert printed.status_code == 200 and "<style" not in printed.text and "/ui/sprachenpass.css" in printed.text
    assert "700 UE" in printed.text and "Rana" not in printed.text
    # The KI has no basis for the category language (its intake consent names residence and benefits).
    cm = browser_of("cm.ennetal")
    withheld = cm.get(person_path).text
    assert "werden Ihnen vorenthalten" in withheld and "keine Rechtsgrundlage" in withheld
    assert "Deutsch-Test für Zuwanderer" not in withheld and "Eintrag für einen Kurs" not in withheld
    # Outsiders: the same 404 for the real person and a random id.
    jc = browser_of("jc.ennetal")
    for pid in (person["id"], RANDOM):
        assert jc.get(f"/ui/personen/{pid}/sprachenpass").status_code == 404


def ready_in_quarter(session_factory, world, chain_ids) -> None:
    """The chains' course steps became ready in 2026-Q1 (events as the chain writes them; walking
    each chain there through its offices would take the test far longer), and nobody enrolled."""
    from casemgmt.chains import service as chains
    from casemgmt.demo.seed import actor_of
    from casemgmt.jurisdictions.models import Organisation

    with session_factory() as s:
        ki = actor_of(s.get(Organisation, world.organisations["ennetal_ki"]), "u-ki", frozenset({"case_manager"}))
        s.execute(chains.INSERT_EVENTS, [chains.chain_event_row(uuid.UUID(c), "step", ki,
                                                                datetime(2026, 3, 2, 10, tzinfo=UTC),
                                                                to_state="ready", step_key=STEP) for c in chain_ids])
        s.commit()


def test_lenkungsgruppe_sees_supply_and_demand_with_suppressed_cells(client, auth, world, browser_of, release,
                                                                    session_factory):
    ok(client.post("/offers", json=offer_body(world, capacity=3), headers=auth(*VHS)), 201)
    made = [_person_with_chain(client, auth, world)[1]["id"] for _ in range(6)]
    other = new_person(client, auth(*KI), world.jurisdictions["hattenberg"])
    made.append(started(client, auth(*KI), other)["id"])
    ready_in_quarter(session_factory, world, made)
    release("2026-Q1", datetime(2026, 7, 1, 8, tzinfo=UTC), area="kreis_ennetal")
    page = browser_of("lg.ennetal").get("/ui/lenkung")
    assert page.status_code == 200
    section = page.text.split('id="bestand-bedarf"', 1)[1].split("</table>", 1)[0]
    assert "Integrationskurs" in section and "Wittmar" in section
    assert ".<span class=\"unsichtbar\"> (unterdrückt)</span>" in section  # Hattenberg's single person
    assert "Rana" not in page.text


def test_public_directory_searches_by_age(client, auth, world, demo_app):
    """The public page takes an age like the API's `age`: offers whose range holds it and offers
    without one; a value that is not an age is named in the error summary."""
    from fastapi.testclient import TestClient

    ok(client.post("/offers", json=offer_body(world, title="Kurs für junge Erwachsene am Abend", offer_kind="youth_integration_course",
                                              age_min=16, age_max=27), headers=auth(*VHS)), 201)
    ok(client.post("/offers", json=offer_body(world, title="Integrationskurs für alle"), headers=auth(*VHS)), 201)
    with TestClient(demo_app, raise_server_exceptions=False) as public:
        page = public.get("/ui/angebote").text
        assert 'for="feld-alter"' in page and "Alter in Jahren" in page
        young = public.get("/ui/angebote", params={"alter": "20"}).text
        assert "Kurs für junge Erwachsene am Abend" in young and "Integrationskurs für alle" in young
        older = public.get("/ui/angebote", params={"alter": "40"}).text
        assert "Kurs für junge Erwachsene am Abend" not in older and "Integrationskurs für alle" in older
        for bad in ("zwanzig", "121", "-3", "18.5"):
            refused = public.get("/ui/angebote", params={"alter": bad})
            assert refused.status_code == 422 and 'href="#feld-alter"' in refused.text, bad
