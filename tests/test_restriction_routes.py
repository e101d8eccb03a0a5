"""A restriction (GDPR Art. 18) blocks every route that touches the person: walked over every
operation of the OpenAPI document, each classified. A new route must be classified here, so it
cannot slip past the restriction unnoticed."""

from __future__ import annotations

import re
import uuid

import pytest
from http_helpers import fill_ids, ok, problem
from test_conferences_api import MOD, conference, consenting_case, phase
from test_handovers_api import handover
from test_unknown_query import OPERATIONS
from web_helpers import browser_of, demo_app  # noqa: F401 (fixtures)

KI = ("ennetal_ki", "case_manager")
ABH = ("ennetal_abh", "clerk")
DPO = ("ennetal_ki", "dpo")

# Operations that read or write the restricted person's data: 423 for the organisations involved.
BLOCKED = {
    ("GET", "/persons/{person_id}"): (KI, None),
    ("PATCH", "/persons/{person_id}"): (KI, {"fields": {"german_level": "B1"}}),
    ("GET", "/persons/{person_id}/consents"): (KI, None),
    ("POST", "/persons/{person_id}/consents"): (KI, "consent"),
    ("POST", "/persons/search"): (KI, {"family_name": "Haddad", "given_names": "Rana", "birth_date": "1990-04-01"}),
    ("POST", "/chains"): (KI, {"person_id": "{person_id}", "template_key": "uma"}),
    ("GET", "/chains/{chain_id}"): (KI, None),
    ("POST", "/chains/{chain_id}/steps/{step_key}/actions"): (ABH, {"action": "start"}),
    ("POST", "/chains/{chain_id}/steps/{step_key}/assignment"): (KI, {"organisation_id": 1}),
    ("POST", "/chains/{chain_id}/close"): (KI, {"reason": "other"}),
    ("GET", "/chains/{chain_id}/events"): (KI, None),
    ("GET", "/chains/{chain_id}/handovers"): (KI, None),
    ("POST", "/chains/{chain_id}/handovers"): (KI, {"kind": "step", "step_key": "first_interview"}),
    ("GET", "/handovers/{handover_id}"): (ABH, None),
    ("POST", "/handovers/{handover_id}/actions"): (ABH, {"action": "acknowledge"}),
    ("POST", "/conferences/{conference_id}/cases"): (MOD, {"chain_id": "{chain_id}"}),
    ("POST", "/conferences/{conference_id}/agreements"): (MOD, "agreement"),
    ("POST", "/persons/{person_id}/interviews"): (KI, {"held_on": "2026-03-02", "language": "Arabisch",
                                                      "answers": {"residence_status": "protection_granted"}}),
    ("GET", "/persons/{person_id}/interviews"): (KI, None),
    ("POST", "/persons/{person_id}/interviews/{interview_id}/chain"): (KI, {}),
    ("GET", "/chains/{chain_id}/steps/{step_key}/offers"): (KI, None),
    ("POST", "/chains/{chain_id}/steps/{step_key}/offers/{offer_id}"): (KI, {"action": "refer"}),
    ("POST", "/persons/{person_id}/language-pass"): (ABH, {"from_date": "2026-03-02", "course_title": "Kurs"}),
    ("GET", "/persons/{person_id}/language-pass"): (KI, None),
    ("GET", "/persons/{person_id}/language-pass.html"): (KI, None),
}
# Listings that leave the restricted person's case out (stored, not shown).
LISTINGS = {("GET", "/chains"), ("GET", "/persons"), ("GET", "/handovers/incoming"), ("GET", "/handovers/outgoing"),
            ("GET", "/conferences/{conference_id}")}
# The data protection officer's own work on the person goes on while it is restricted; so does the
# withdrawal of a consent (GDPR Art. 7(3): as easy as giving it; it only narrows processing).
OFFICER = {
    ("GET", "/persons/{person_id}/access-report"), ("GET", "/persons/{person_id}/access-report.html"),
    ("GET", "/persons/{person_id}/portability"), ("GET", "/persons/{person_id}/restriction"),
    ("POST", "/persons/{person_id}/restriction"), ("POST", "/persons/{person_id}/restriction/lift"),
    ("GET", "/persons/{person_id}/legal-hold"), ("POST", "/persons/{person_id}/legal-hold"),
    ("POST", "/persons/{person_id}/legal-hold/lift"), ("POST", "/persons/{person_id}/erasure"),
    ("POST", "/consents/{consent_id}/withdraw"),
}
# Everything else concerns no single person: reference data, aggregates, the register, admin.
NO_PERSON = {
    ("GET", "/jurisdictions"), ("GET", "/jurisdictions/{jurisdiction_id}"), ("GET", "/organisations"),
    ("GET", "/organisations/{organisation_id}"), ("GET", "/organisation-kinds"), ("GET", "/templates"),
    ("GET", "/templates/{key}"), ("POST", "/persons"), ("POST", "/conferences"), ("GET", "/conferences"),
    ("POST", "/conferences/{conference_id}/participants"), ("POST", "/conferences/{conference_id}/phase"),
    ("POST", "/conferences/{conference_id}/findings"),
    ("PUT", "/conferences/{conference_id}/findings/{finding_id}/vote"), ("POST", "/proposals"),
    ("GET", "/proposals"), ("GET", "/proposals/{proposal_id}"), ("POST", "/proposals/{proposal_id}/actions"),
    ("GET", "/working-groups"), ("GET", "/reports/steering"), ("GET", "/reports/steering.csv"),
    ("GET", "/reports/steering.html"), ("GET", "/exports/ocel"), ("GET", "/agreements"), ("POST", "/agreements"),
    ("GET", "/audit"), ("GET", "/record-of-processing"), ("POST", "/data-subject-requests"),
    ("GET", "/data-subject-requests"), ("GET", "/data-subject-requests/{request_id}"),
    ("POST", "/data-subject-requests/{request_id}/actions"), ("GET", "/retention/due"),
    ("GET", "/organisations/{organisation_id}/contacts"), ("POST", "/organisations/{organisation_id}/contacts"),
    ("DELETE", "/organisations/{organisation_id}/contacts/{contact_id}"), ("GET", "/notifications"),
    ("POST", "/notifications/{message_id}/requeue"), ("GET", "/health"), ("GET", "/health/live"),
    ("GET", "/health/ready"), ("GET", "/problems"), ("GET", "/me"), ("GET", "/catalogue"),
    ("GET", "/problems/{slug}"), ("GET", "/templates/{key}/versions"), ("GET", "/templates/{key}/diff"),
    ("GET", "/reports/steering.xlsx"), ("GET", "/reports/steering/releases"),
    ("GET", "/reports/steering/releases/{number}"), ("GET", "/reports/steering/releases/{number}.csv"),
    ("GET", "/reports/steering/releases/{number}.xlsx"), ("GET", "/reports/steering/releases/{number}.html"),
    ("GET", "/reports/on-demand"), ("GET", "/exports/xes"), ("GET", "/exports/releases/{number}/ocel"),
    ("GET", "/exports/releases/{number}/xes"),
    # The Angebotsdatenbank: offers hold no person data (bookings are read through the chain).
    ("GET", "/public/offers"), ("GET", "/public/offers/{offer_id}"), ("GET", "/offers"), ("POST", "/offers"),
    ("PUT", "/offers/{offer_id}"), ("GET", "/offers/{offer_id}/history"), ("POST", "/good-practices"),
    ("GET", "/public/good-practices"),
}


def test_every_route_is_classified():
    routes = {(m, p) for m, p, _ in OPERATIONS}
    classes = [set(BLOCKED), LISTINGS, OFFICER, NO_PERSON]
    assert sum(len(c) for c in classes) == len(set().union(*classes)), "a route is in two classes"
    assert routes == set().union(*classes), f"unclassified: {routes - set().union(*classes)}; " \
                                            f"gone: {set().union(*classes) - routes}"


@pytest.fixture
def restricted(client, auth, world):
    """A person with a chain, a waiting handover to the ABH, a consent and a conference case,
    whose processing the officer then restricts."""
    ki = auth(*KI)
    chain = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    person_id = chain["person_id"]
    h = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    conf = conference(client, auth, world, "ennetal_abh")
    phase(client, auth, conf["id"], "case_phase")
    conf = ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": chain["id"]}, headers=auth(*MOD)))
    other = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh", family_name="Yilmaz")
    ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": other["id"]}, headers=auth(*MOD)))
    consent_id = ok(client.get(f"/persons/{person_id}/consents", headers=ki))[0]["id"]
    interview = ok(client.post(f"/persons/{person_id}/interviews", json={
        "held_on": "2026-03-02", "language": "Arabisch", "answers": {"residence_status": "protection_granted"}},
        headers=ki), 201)
    ok(client.post(f"/persons/{person_id}/restriction", json={"reason": "Richtigkeit bestritten"},
                   headers=auth(*DPO)), 201)
    return {"person_id": person_id, "chain_id": chain["id"], "handover_id": h["id"], "conference_id": conf["id"],
            "consent_id": consent_id, "step_key": "residence_permit", "case_id": conf["cases"][0]["id"],
            "interview_id": interview["id"], "offer_id": str(uuid.uuid4()),
            "other_chain": other["id"]}


def test_restriction_blocks_every_route_touching_the_person(client, auth, world, restricted):
    ids = restricted
    for (method, path), (who, body) in BLOCKED.items():
        if body == "consent":
            body = {"recipients": [{"organisation_id": world.organisations["ennetal_ki"]}], "categories": ["language"],
                    "purpose": "case_management", "consequences_explained": True, "evidence_reference": "EW-9",
                    "language": "Arabisch"}
        elif body == "agreement":
            body = {"conference_case_id": ids["case_id"], "text": "ABH prüft vorrangig",
                    "owner_organisation_id": world.organisations["ennetal_abh"], "due_date": "2026-03-24"}
        resp = client.request(method, fill_ids(path, ids), json=fill_ids(body, ids), headers=auth(*who))
        got = problem(resp, 423, "person-restricted")
        assert "bestritten" not in resp.text, (method, path)
        assert got["restriction"] == "GDPR Art. 18"
    # Listings leave the case out; the other person's case stays.
    assert ids["chain_id"] not in {c["id"] for c in ok(client.get("/chains", headers=auth(*KI)))["items"]}
    assert ids["other_chain"] in {c["id"] for c in ok(client.get("/chains", headers=auth(*KI)))["items"]}
    assert ids["handover_id"] not in {h["id"] for h in ok(client.get("/handovers/incoming", headers=auth(*ABH)))["items"]}
    listed = {p["id"] for p in ok(client.get("/persons", headers=auth(*KI)))["items"]}
    assert ids["person_id"] not in listed and ok(client.get(f"/chains/{ids['other_chain']}", headers=auth(*KI)))[
        "person_id"] in listed
    assert ids["handover_id"] not in {h["id"] for h in ok(client.get("/handovers/outgoing", headers=auth(*KI)))["items"]}
    conf = ok(client.get(f"/conferences/{ids['conference_id']}", headers=auth(*MOD)))
    assert [c["chain_id"] for c in conf["cases"]] == [ids["other_chain"]]
    # The officer still sees the restriction; the person may still withdraw a consent.
    assert ok(client.get(f"/persons/{ids['person_id']}/restriction", headers=auth(*DPO)))["active"]
    ok(client.post(f"/consents/{ids['consent_id']}/withdraw", json={}, headers=auth(*KI)))
    # Lifted, the chain moves again.
    ok(client.post(f"/persons/{ids['person_id']}/restriction/lift", json={"reason": "geklärt"}, headers=auth(*DPO)))
    ok(client.get(f"/chains/{ids['chain_id']}", headers=auth(*KI)))


# The screens of the web interface (casemgmt/web) call the services of these API operations with
# the same Actor, so a restriction reaches them there; None: the screen touches no single person.
WEB_SCREENS = {
    ("GET", "/"): None, ("GET", "/ui/"): None, ("GET", "/ui/anmelden"): None, ("POST", "/ui/anmelden/demo"): None,
    ("GET", "/ui/anmelden/oidc"): None, ("GET", "/ui/anmelden/oidc/rueckkehr"): None, ("POST", "/ui/abmelden"): None,
    ("GET", "/ui/faelle"): ("GET", "/chains"),
    ("GET", "/ui/personen/neu"): None, ("POST", "/ui/personen/neu"): ("POST", "/persons"),
    ("GET", "/ui/personen/{person_id}"): ("GET", "/persons/{person_id}"),
    ("POST", "/ui/personen/{person_id}/einwilligungen/{consent_id}/widerruf"): ("POST", "/consents/{consent_id}/withdraw"),
    ("POST", "/ui/personen/{person_id}/ketten"): ("POST", "/chains"),
    ("GET", "/ui/ketten/{chain_id}"): ("GET", "/chains/{chain_id}"),
    ("POST", "/ui/ketten/{chain_id}/schritte/{step_key}"): ("POST", "/chains/{chain_id}/steps/{step_key}/actions"),
    ("POST", "/ui/ketten/{chain_id}/uebergaben"): ("POST", "/chains/{chain_id}/handovers"),
    ("POST", "/ui/ketten/{chain_id}/schliessen"): ("POST", "/chains/{chain_id}/close"),
    ("GET", "/ui/posteingang"): ("GET", "/handovers/incoming"), ("GET", "/ui/ausgang"): ("GET", "/handovers/outgoing"),
    ("GET", "/ui/uebergaben/{handover_id}"): ("GET", "/handovers/{handover_id}"),
    ("POST", "/ui/uebergaben/{handover_id}"): ("POST", "/handovers/{handover_id}/actions"),
    ("GET", "/ui/schritte"): ("GET", "/chains"),
    # Moderation, Lenkungsgruppe, data protection officer, administration.
    ("GET", "/ui/konferenzen"): ("GET", "/conferences"), ("POST", "/ui/konferenzen"): ("POST", "/conferences"),
    ("GET", "/ui/konferenzen/{conference_id}"): ("GET", "/conferences/{conference_id}"),
    ("POST", "/ui/konferenzen/{conference_id}/teilnehmende"): ("POST", "/conferences/{conference_id}/participants"),
    ("POST", "/ui/konferenzen/{conference_id}/phase"): ("POST", "/conferences/{conference_id}/phase"),
    ("POST", "/ui/konferenzen/{conference_id}/faelle"): ("POST", "/conferences/{conference_id}/cases"),
    ("POST", "/ui/konferenzen/{conference_id}/vereinbarungen"): ("POST", "/conferences/{conference_id}/agreements"),
    ("POST", "/ui/konferenzen/{conference_id}/befunde"): ("POST", "/conferences/{conference_id}/findings"),
    ("POST", "/ui/konferenzen/{conference_id}/befunde/{finding_id}/punkte"):
        ("PUT", "/conferences/{conference_id}/findings/{finding_id}/vote"),
    ("POST", "/ui/konferenzen/{conference_id}/vorschlag"): ("POST", "/proposals"),
    ("GET", "/ui/lenkung"): ("GET", "/reports/steering"),
    ("GET", "/ui/lenkung/bericht-{number}.csv"): ("GET", "/reports/steering/releases/{number}.csv"),
    ("GET", "/ui/lenkung/bericht-{number}.xlsx"): ("GET", "/reports/steering/releases/{number}.xlsx"),
    ("GET", "/ui/lenkung/prozessprotokoll-{number}.ocel.json"): ("GET", "/exports/releases/{number}/ocel"),
    ("GET", "/ui/vorschlaege"): ("GET", "/proposals"), ("GET", "/ui/vorschlaege/{proposal_id}"): ("GET", "/proposals/{proposal_id}"),
    ("POST", "/ui/vorschlaege/{proposal_id}/aktion"): ("POST", "/proposals/{proposal_id}/actions"),
    ("GET", "/ui/arbeitsgruppen"): ("GET", "/working-groups"),
    ("GET", "/ui/datenschutz/protokoll"): ("GET", "/audit"),
    ("GET", "/ui/datenschutz/einwilligungen"): ("GET", "/persons/{person_id}/consents"),
    ("GET", "/ui/datenschutz/verzeichnis"): ("GET", "/record-of-processing"),
    ("GET", "/ui/datenschutz/anfragen"): ("GET", "/data-subject-requests"),
    ("POST", "/ui/datenschutz/anfragen"): ("POST", "/data-subject-requests"),
    ("GET", "/ui/datenschutz/anfragen/{request_id}"): ("GET", "/data-subject-requests/{request_id}"),
    ("POST", "/ui/datenschutz/anfragen/{request_id}"): ("POST", "/data-subject-requests/{request_id}/actions"),
    ("GET", "/ui/datenschutz/loeschsperre"): ("GET", "/persons/{person_id}/legal-hold"),
    # One form sets or lifts (its "action"): the set operation stands for both here.
    ("POST", "/ui/datenschutz/loeschsperre/{person_id}"): ("POST", "/persons/{person_id}/legal-hold"),
    ("GET", "/ui/datenschutz/loeschfristen"): ("GET", "/retention/due"),
    ("GET", "/ui/verwaltung/organisationen"): ("GET", "/organisations"),
    ("GET", "/ui/verwaltung/organisationen/{organisation_id}"): ("GET", "/organisations/{organisation_id}/contacts"),
    ("POST", "/ui/verwaltung/organisationen/{organisation_id}/kontakte"): ("POST", "/organisations/{organisation_id}/contacts"),
    ("POST", "/ui/verwaltung/organisationen/{organisation_id}/kontakte/{contact_id}/entfernen"):
        ("DELETE", "/organisations/{organisation_id}/contacts/{contact_id}"),
    # The Angebotsdatenbank and the Sprachenpass (casemgmt/web/angebote.py).
    ("GET", "/ui/angebote"): ("GET", "/public/offers"), ("GET", "/ui/angebote/{offer_id}"): ("GET", "/public/offers/{offer_id}"),
    ("GET", "/ui/ketten/{chain_id}/schritte/{step_key}/angebote"): ("GET", "/chains/{chain_id}/steps/{step_key}/offers"),
    ("POST", "/ui/ketten/{chain_id}/schritte/{step_key}/angebote/{offer_id}"):
        ("POST", "/chains/{chain_id}/steps/{step_key}/offers/{offer_id}"),
    ("GET", "/ui/personen/{person_id}/sprachenpass"): ("GET", "/persons/{person_id}/language-pass.html"),
    ("POST", "/ui/personen/{person_id}/sprachenpass"): ("POST", "/persons/{person_id}/language-pass"),
    ("GET", "/ui/sprachenpass.css"): None,
}


def test_every_screen_is_classified():
    import importlib

    from fastapi.routing import APIRoute

    from casemgmt.web import SCREEN_MODULES

    screens = {("GET", "/")} | {
        (m, r.path) for name in SCREEN_MODULES for r in importlib.import_module(f"casemgmt.web.{name}").router.routes
        if isinstance(r, APIRoute) for m in r.methods}
    assert screens == set(WEB_SCREENS), f"unclassified: {screens - set(WEB_SCREENS)}; gone: {set(WEB_SCREENS) - screens}"
    api = {(m, p) for m, p, _ in OPERATIONS}
    assert {op for op in WEB_SCREENS.values() if op} <= api


def test_restriction_reaches_the_screens(browser_of, restricted):
    cm = browser_of("cm.ennetal")
    for path in (f"/ui/personen/{restricted['person_id']}", f"/ui/ketten/{restricted['chain_id']}",
                 f"/ui/ketten/{restricted['chain_id']}/schritte/integration_course/angebote",
                 f"/ui/personen/{restricted['person_id']}/sprachenpass"):
        resp = cm.get(path)
        assert resp.status_code == 423 and "eingeschränkt" in resp.text and "bestritten" not in resp.text, path
    listed = cm.get("/ui/faelle").text
    assert restricted["chain_id"] not in listed and restricted["other_chain"] in listed
    abh = browser_of("abh.ennetal")
    assert restricted["handover_id"] not in abh.get("/ui/posteingang").text
    # The conference shows the other case only; the restricted person's case is stored, not shown.
    mod = browser_of("mod.ennetal")
    page = mod.get(f"/ui/konferenzen/{restricted['conference_id']}").text
    agenda = re.findall(r"<td>Fall (\d+)</td>", page)
    assert len(agenda) == 1 and agenda != [str(restricted["case_id"])]
