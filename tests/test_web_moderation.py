"""The moderator's, the Lenkungsgruppe's, the data protection officer's and the administrator's
screens without a browser (fast): each page answers what its API would answer that user, the
scrubber's objections stand at the spot to fix, decisions go through, outsiders get 404, and no
personal value reaches any page of the steering role."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from http_helpers import ok
from test_api import new_person, started
from test_conferences_api import conference, consenting_case
from web_helpers import browser_of, csrf_of, demo_app  # noqa: F401 (fixtures)

KI = ("ennetal_ki", "case_manager")


def post(c: TestClient, page_path: str, target: str, **data) -> object:
    """Send the form of ``page_path`` to ``target`` with the session's CSRF token (the token is
    the session's, so one page read per signed-in client gives it)."""
    token = getattr(c, "csrf_token", None)
    if token is None:
        page = c.get(page_path)
        assert page.status_code == 200, page.text
        token = c.csrf_token = csrf_of(page.text)
    return c.post(target, data={"csrf_token": token, **data}, follow_redirects=False)


def moderated_conference(mod: TestClient, world, chain_id: str) -> str:
    """Planned, ABH invited, the case on the agenda, an agreement, then the structural phase."""
    resp = post(mod, "/ui/konferenzen", "/ui/konferenzen", title="Fallkonferenz Wittmar März",
                datum="2026-03-10", uhrzeit="09:30", jurisdiction_id=str(world.jurisdictions["wittmar"]),
                participant_organisation_ids=[str(world.organisations["ennetal_abh"])])
    assert resp.status_code == 303, resp.text
    path = resp.headers["location"].split("?")[0]
    conf_id = path.rsplit("/", 1)[1]
    page = mod.get(path).text
    version = re.search(r'name="expected_version" value="(\d+)"', page).group(1)
    assert post(mod, path, f"{path}/phase", phase="case_phase", expected_version=version).status_code == 303
    assert post(mod, path, f"{path}/faelle", chain_id=chain_id).status_code == 303
    page = mod.get(path).text
    case_id = re.search(r'name="conference_case_id".*?<option value="(\d+)"', page, re.S).group(1)
    assert post(mod, path, f"{path}/vereinbarungen", conference_case_id=case_id, text="ABH prüft vorrangig",
                owner_organisation_id=str(world.organisations["ennetal_abh"]), due_date="2026-03-24").status_code == 303
    version = re.search(r'name="expected_version" value="(\d+)"', mod.get(path).text).group(1)
    assert post(mod, path, f"{path}/phase", phase="structural_phase", expected_version=version).status_code == 303
    return conf_id


FINDING = {"barrier_category": "waiting_times", "field_of_action": "language", "level": "intermunicipal",
           "weather": "gewitter", "organisation_kinds": ["course_provider", "auslaenderbehoerde"]}


def test_finding_with_a_name_is_refused_at_the_spot_and_corrected(client, auth, world, browser_of):
    chain = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    mod = browser_of("mod.ennetal")
    conf_id = moderated_conference(mod, world, chain["id"])
    path = f"/ui/konferenzen/{conf_id}"
    page = mod.get(path).text
    assert "ABH prüft vorrangig" in page  # the agreement, readable for the KI (consent)
    case_id = re.search(r'name="conference_case_ids" value="(\d+)"', page).group(1)
    text = "Frau Haddad wartet seit vier Monaten auf einen Integrationskurs."
    refused = post(mod, path, f"{path}/befunde", text=text, conference_case_ids=[case_id], **FINDING)
    assert refused.status_code == 422
    # The objection marks the name where it stands; the text stays in the field to correct.
    assert "<mark>Haddad" in refused.text and 'id="einwaende-text"' in refused.text
    assert f">{text}</textarea>" in refused.text
    assert 'href="#feld-text"' in refused.text  # the error summary leads to the field
    fixed = post(mod, path, f"{path}/befunde", text="Wartezeit auf Integrationskurse über drei Monate.",
                 conference_case_ids=[case_id], **FINDING)
    assert fixed.status_code == 303
    page = mod.get(path).text
    assert "Wartezeit auf Integrationskurse über drei Monate." in page and "Haddad" not in page
    assert "Gewitter: muss sich ändern" in page  # weather as text, not by colour alone

    # Dot votes: a participant (the ABH) puts two dots on it.
    abh = browser_of("abh.ennetal")
    finding_id = re.search(r'/befunde/([0-9a-f-]{36})/punkte', abh.get(path).text).group(1)
    assert post(abh, path, f"{path}/befunde/{finding_id}/punkte", dots="2").status_code == 303
    assert re.search(r'<td class="zahl">2</td>', mod.get(path).text)
    too_many = post(abh, path, f"{path}/befunde/{finding_id}/punkte", dots="99")
    assert too_many.status_code == 422 and "fehler-zusammenfassung" in too_many.text

    # Outsiders: a conference the organisation does not take part in is 404, as any id.
    jc = browser_of("jc.ennetal")
    assert jc.get(path).status_code == 404
    assert jc.get("/ui/konferenzen/00000000-0000-0000-0000-000000000000").status_code == 404
    assert jc.get("/ui/konferenzen/kein-id").status_code == 404


def test_lenkungsgruppe_decides_a_proposal_and_sees_no_personal_value(client, auth, world, browser_of, release):
    chain = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    person = ok(client.get(f"/persons/{chain['person_id']}", headers=auth(*KI)))
    mod = browser_of("mod.ennetal")
    conf_id = moderated_conference(mod, world, chain["id"])
    path = f"/ui/konferenzen/{conf_id}"
    case_id = re.search(r'name="conference_case_ids" value="(\d+)"', mod.get(path).text).group(1)
    assert post(mod, path, f"{path}/befunde", text="Kinderbetreuung während der Sprachkurse fehlt.",
                conference_case_ids=[case_id], **FINDING).status_code == 303
    finding_id = re.search(r'name="finding_ids" value="([0-9a-f-]{36})"', mod.get(path).text).group(1)
    named = post(mod, path, f"{path}/vorschlag", finding_ids=[finding_id], title="Kinderbetreuung an Kursorten",
                 summary="Wie bei Frau Haddad fehlt Kinderbetreuung.")
    assert named.status_code == 422 and "<mark>Haddad" in named.text and 'id="einwaende-summary"' in named.text
    made = post(mod, path, f"{path}/vorschlag", finding_ids=[finding_id], title="Kinderbetreuung an Kursorten",
                summary="Kursträger und Kitas richten betreute Zeiten ein.")
    assert made.status_code == 303
    proposal_path = made.headers["location"].split("?")[0]
    assert post(mod, proposal_path, f"{proposal_path}/aktion", action="submit",
                expected_version="1").status_code == 303

    lg = browser_of("lg.ennetal")
    page = lg.get(proposal_path).text
    assert "Eingereicht" in page and "Annehmen und Arbeitsgruppe gründen" in page
    assert "An die Lenkungsgruppe einreichen" not in page  # the moderators' step, not theirs
    no_reason = post(lg, proposal_path, f"{proposal_path}/aktion", action="reject", expected_version="2")
    assert no_reason.status_code == 422 and "fehler-zusammenfassung" in no_reason.text
    accepted = post(lg, proposal_path, f"{proposal_path}/aktion", action="accept", expected_version="2",
                    working_group_name="AG Kinderbetreuung",
                    lead_organisation_id=str(world.organisations["ennetal_kita"]), due_date="2026-06-30")
    assert accepted.status_code == 303
    page = lg.get(proposal_path).text
    assert "Angenommen" in page and "AG Kinderbetreuung" in page
    assert "AG Kinderbetreuung" in lg.get("/ui/arbeitsgruppen").text

    # The report as a dashboard, once a quarter is released.
    assert "noch kein Quartal veröffentlicht" in lg.get("/ui/lenkung").text
    release("2026-Q1", datetime(2026, 7, 1, 8, tzinfo=UTC), area="kreis_ennetal")
    report = lg.get("/ui/lenkung")
    assert report.status_code == 200 and "Zielerreichung" in report.text and "„.“" in report.text
    number = re.search(r'/ui/lenkung/bericht-(\d+)\.csv', report.text).group(1)
    csv = lg.get(f"/ui/lenkung/bericht-{number}.csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert lg.get(f"/ui/lenkung/bericht-{number}.xlsx").status_code == 200
    assert lg.get(f"/ui/lenkung/prozessprotokoll-{number}.ocel.json").status_code == 200

    # No personal value on any page the steering role can open (nor a person's id).
    pages = ["/ui/", "/ui/lenkung", f"/ui/lenkung?nr={number}", "/ui/vorschlaege", proposal_path,
             "/ui/arbeitsgruppen", f"/ui/lenkung/bericht-{number}.csv"]
    values = [str(v) for k, v in person["fields"].items() if k in ("family_name", "given_names", "birth_date")]
    values += ["01.04.1990", chain["person_id"], chain["id"]]
    for p in pages:
        body = lg.get(p).text
        for v in values:
            assert v not in body, (p, v)
    # ... and the case screens are not theirs.
    assert lg.get(path).status_code == 403 and lg.get("/ui/datenschutz/protokoll").status_code == 403


def test_dpo_and_admin_screens(client, auth, world, browser_of):
    chain = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    dsb = browser_of("dsb.ennetal")
    page = dsb.get("/ui/datenschutz/protokoll", params={"person_id": chain["person_id"]})
    assert page.status_code == 200 and "person.create" in page.text
    assert dsb.get("/ui/datenschutz/protokoll", params={"von": "gestern"}).status_code == 422
    consents = dsb.get("/ui/datenschutz/einwilligungen", params={"person_id": chain["person_id"]}).text
    assert "EW-FK-1" in consents and "gültig" in consents
    assert "Art. 30" in dsb.get("/ui/datenschutz/verzeichnis").text
    assert dsb.get("/ui/datenschutz/anfragen").status_code == 200
    assert "Personen je Kategorie" in dsb.get("/ui/datenschutz/loeschfristen").text

    admin = browser_of("admin.ennetal")
    org = world.organisations["ennetal_abh"]
    org_path = f"/ui/verwaltung/organisationen/{org}"
    assert "Ausländerbehörde Kreis Ennetal" in admin.get("/ui/verwaltung/organisationen").text
    bad = post(admin, org_path, f"{org_path}/kontakte", role="lead", channel="email", address="a@b.de, c@d.de")
    assert bad.status_code == 422 and 'href="#feld-address"' in bad.text
    assert post(admin, org_path, f"{org_path}/kontakte", role="lead", channel="email",
                address="leitung.abh@ennetal.example").status_code == 303
    page = admin.get(org_path).text
    assert "leitung.abh@ennetal.example" in page
    contact_id = re.search(r'/kontakte/(\d+)/entfernen', page).group(1)
    assert post(admin, org_path, f"{org_path}/kontakte/{contact_id}/entfernen").status_code == 303
    assert "leitung.abh@ennetal.example" not in admin.get(org_path).text
    assert admin.get(f"/ui/verwaltung/organisationen/{world.organisations['hagenau_abh']}").status_code == 404
    # Without the CSRF token nothing changes.
    assert admin.post(f"{org_path}/kontakte", data={"role": "lead", "channel": "email",
                                                    "address": "x@ennetal.example"}).status_code == 403


def test_agenda_refusals_are_answered_at_the_field(client, auth, world, browser_of):
    conf = conference(client, auth, world, "ennetal_abh")
    ki = auth(*KI)
    # A case without a Schweigepflichtentbindung for the conference: the ABH has no basis.
    chain = started(client, ki, new_person(client, ki, world.jurisdictions["wittmar"]))
    mod = browser_of("mod.ennetal")
    path = f"/ui/konferenzen/{conf['id']}"
    refused = post(mod, path, f"{path}/faelle", chain_id=chain["id"])
    assert refused.status_code == 422 and 'href="#feld-chain_id"' in refused.text
    assert "Ausländerbehörde Kreis Ennetal liegt keine Einwilligung" in refused.text
    unknown = post(mod, path, f"{path}/faelle", chain_id="00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 422 and "Keine Integrationskette mit dieser Kennung" in unknown.text
    assert "Noch keine Fälle auf der Tagesordnung." in mod.get(path).text


def test_an_agreement_on_the_screen_adds_a_step_to_the_chain(client, auth, world, browser_of):
    """Phase 1 on the screen: the moderator records an agreement that adds a step; a title with
    the person's name is refused at its field; the chain page then shows the agreed step."""
    chain = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    mod = browser_of("mod.ennetal")
    resp = post(mod, "/ui/konferenzen", "/ui/konferenzen", title="Fallkonferenz Wittmar April",
                datum="2026-04-14", uhrzeit="09:30", jurisdiction_id=str(world.jurisdictions["wittmar"]),
                participant_organisation_ids=[str(world.organisations["ennetal_abh"])])
    path = resp.headers["location"].split("?")[0]
    version = re.search(r'name="expected_version" value="(\d+)"', mod.get(path).text).group(1)
    assert post(mod, path, f"{path}/phase", phase="case_phase", expected_version=version).status_code == 303
    assert post(mod, path, f"{path}/faelle", chain_id=chain["id"]).status_code == 303
    page = mod.get(path).text
    assert "Neuer Schritt in der Integrationskette (optional)" in page and 'for="feld-title"' in page
    case_id = re.search(r'name="conference_case_id".*?<option value="(\d+)"', page, re.S).group(1)
    form = {"conference_case_id": case_id, "text": "Sprachmittlung für den Termin in der ABH organisieren",
            "owner_organisation_id": str(world.organisations["ennetal_abh"]), "due_date": "2026-04-28"}
    refused = post(mod, path, f"{path}/vereinbarungen", **form, title="Termin für Frau Haddad vereinbaren",
                   requires="arrival_assignment")
    assert refused.status_code == 422 and 'href="#feld-title"' in refused.text
    assert 'value="arrival_assignment"' in refused.text  # what was typed stays to correct
    assert "<mark>" not in refused.text  # the objection is the title's, not the agreement text's
    unknown = post(mod, path, f"{path}/vereinbarungen", **form, title="Termin mit Sprachmittlung",
                   requires="kein_schritt")
    assert unknown.status_code == 422 and 'href="#feld-requires"' in unknown.text
    done = post(mod, path, f"{path}/vereinbarungen", **form, title="Termin mit Sprachmittlung",
                requires="arrival_assignment")
    assert done.status_code == 303, done.text
    seen = ok(client.get(f"/chains/{chain['id']}", headers=auth("ennetal_ki", "case_manager")))
    added = [s for s in seen["steps"] if s["agreed_in"]]
    assert [(s["title"], s["requires"], s["owner"]) for s in added] == [
        ("Termin mit Sprachmittlung", ["arrival_assignment"], "auslaenderbehoerde")]
    chain_page = browser_of("cm.ennetal").get(f"/ui/ketten/{chain['id']}").text
    assert "Termin mit Sprachmittlung" in chain_page and "Fallkonferenz Wittmar April" in chain_page
