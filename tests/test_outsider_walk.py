"""Record scope first, on every operation of the OpenAPI document that takes an id: an outsider
gets the same answer for a real record of somebody else's case as for a random id, whatever
role its token carries and whatever the body would fail later (a stale version, a wrong state).

The operations are read from the document the app serves, and each one is classified here, so
a new route with an id cannot be added without saying how an outsider meets it. The hand-made
walk of item 1 (test_involvement.py) tries the chain and person routes with bodies aimed at
later checks; this one tries every route, as every kind of outsider."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from http_helpers import fill_ids, ok, problem
from sqlalchemy import func, select
from test_conferences_api import MOD, conference, consenting_case, finding, phase
from test_handovers_api import handover
from test_unknown_query import OPERATIONS

from casemgmt.notifications.models import OutboxMessage
from casemgmt.notifications.service import Notification, enqueue

KI = ("ennetal_ki", "case_manager")
DPO = ("ennetal_ki", "dpo")
ADMIN = ("ennetal_ki", "admin")
RANDOM_UUID = "00000000-0000-4000-8000-00000000beef"
RANDOM_INT = "987654"

# Routes whose ids name a record of a person's case, a conference, a request, a message or a
# contact of Ennetal: an outsider cannot tell them from random ids. The body is one that would
# pass validation and fail only a later check, so that a check made before scope would show.
CASE_ROUTES: dict[tuple[str, str], Any] = {
    ("GET", "/persons/{person_id}"): None,
    ("PATCH", "/persons/{person_id}"): {"fields": {"phone": "+49 2302 999999"}, "expected_version": 99},
    ("POST", "/persons/{person_id}/interviews"): {"held_on": "2026-03-02", "language": "Arabisch",
                                                   "answers": {"residence_status": "protection_granted"}},
    ("GET", "/persons/{person_id}/interviews"): None,
    ("POST", "/persons/{person_id}/interviews/{interview_id}/chain"): {"template_key": "uma"},
    ("GET", "/chains/{chain_id}"): None,
    ("POST", "/chains/{chain_id}/steps/{step_key}/actions"): {"action": "complete", "expected_version": 99},
    ("POST", "/chains/{chain_id}/steps/{step_key}/assignment"): {"organisation_id": 1, "expected_version": 99},
    ("POST", "/chains/{chain_id}/close"): {"reason": "other", "expected_version": 99},
    ("GET", "/chains/{chain_id}/events"): None,
    ("POST", "/chains/{chain_id}/handovers"): {"kind": "step", "step_key": "registration"},
    ("GET", "/chains/{chain_id}/handovers"): None,
    ("GET", "/handovers/{handover_id}"): None,
    ("POST", "/handovers/{handover_id}/actions"): {"action": "acknowledge", "expected_version": 99},
    ("GET", "/conferences/{conference_id}"): None,
    ("POST", "/conferences/{conference_id}/participants"): {"organisation_ids": [1]},
    ("POST", "/conferences/{conference_id}/phase"): {"phase": "planned"},
    ("POST", "/conferences/{conference_id}/cases"): {"chain_id": "{chain_id}"},
    ("POST", "/conferences/{conference_id}/agreements"): {"conference_case_id": 1, "text": "ABH prüft",
                                                          "owner_organisation_id": 1, "due_date": "2026-03-24"},
    ("POST", "/conferences/{conference_id}/findings"): "finding",
    ("PUT", "/conferences/{conference_id}/findings/{finding_id}/vote"): {"dots": 1},
    ("GET", "/proposals/{proposal_id}"): None,
    ("POST", "/proposals/{proposal_id}/actions"): {"action": "submit", "expected_version": 99},
    ("POST", "/persons/{person_id}/consents"): "consent",
    ("GET", "/persons/{person_id}/consents"): None,
    ("POST", "/consents/{consent_id}/withdraw"): {},
    ("GET", "/data-subject-requests/{request_id}"): None,
    ("POST", "/data-subject-requests/{request_id}/actions"): {"action": "answer", "expected_version": 99},
    ("GET", "/persons/{person_id}/access-report"): None,
    ("GET", "/persons/{person_id}/access-report.html"): None,
    ("GET", "/persons/{person_id}/portability"): None,
    ("GET", "/persons/{person_id}/restriction"): None,
    ("POST", "/persons/{person_id}/restriction"): {"reason": "Richtigkeit bestritten"},
    ("POST", "/persons/{person_id}/restriction/lift"): {"reason": "geklärt"},
    ("GET", "/persons/{person_id}/legal-hold"): None,
    ("POST", "/persons/{person_id}/legal-hold"): {"reason": "Klage anhängig", "reference": "VG 1 K 1/26"},
    ("POST", "/persons/{person_id}/legal-hold/lift"): {"reason": "Verfahren beendet"},
    ("POST", "/persons/{person_id}/erasure"): {"request_id": 1},
    ("DELETE", "/organisations/{organisation_id}/contacts/{contact_id}"): None,
    ("POST", "/notifications/{message_id}/requeue"): None,
    ("GET", "/chains/{chain_id}/steps/{step_key}/offers"): None,
    ("POST", "/chains/{chain_id}/steps/{step_key}/offers/{offer_id}"): {"action": "refer"},
    ("POST", "/persons/{person_id}/language-pass"): {"from_date": "2026-03-02", "course_title": "Kurs"},
    ("GET", "/persons/{person_id}/language-pass"): None,
    ("GET", "/persons/{person_id}/language-pass.html"): None,
}
# Proposals to the Lenkungsgruppe carry no case data (their texts passed the scrubber) and are the
# shared work of the area's steering group, read by every moderator and member of the area: an
# outsider is an organisation of another area.
AREA_ROUTES = {("GET", "/proposals/{proposal_id}"), ("POST", "/proposals/{proposal_id}/actions")}
OTHER_AREA = {"hagenau_ki"}
# Ids of public or reference records (jurisdictions, organisations and their contact lists,
# templates, problem types, published releases, the offer directory): their existence is no
# secret, so real and random ids may be answered differently.
PUBLIC_IDS = {
    ("GET", "/jurisdictions/{jurisdiction_id}"), ("GET", "/organisations/{organisation_id}"),
    ("GET", "/templates/{key}/versions"), ("GET", "/templates/{key}/diff"), ("GET", "/templates/{key}"),
    ("GET", "/reports/steering/releases/{number}.csv"), ("GET", "/reports/steering/releases/{number}.xlsx"),
    ("GET", "/reports/steering/releases/{number}.html"), ("GET", "/reports/steering/releases/{number}"),
    ("GET", "/exports/releases/{number}/ocel"), ("GET", "/exports/releases/{number}/xes"),
    ("GET", "/organisations/{organisation_id}/contacts"), ("POST", "/organisations/{organisation_id}/contacts"),
    ("PUT", "/offers/{offer_id}"), ("GET", "/offers/{offer_id}/history"), ("GET", "/public/offers/{offer_id}"),
    ("GET", "/problems/{slug}"),
}
# Real ids that stay real in the random variant: the organisation owning the contact (public)
# and the step key (from the template, public).
KEEP = {"organisation_id", "step_key", "offer_id"}

# Outsiders: the kreisfreie Stadt next door with every role (its officer and administrator are
# outside the Kreis's area), and offices of the Kreis that have no part in the case, with every
# role an office of the Kreis may hold without the Kreis-wide view of an officer or admin.
OUTSIDERS = [
    ("hagenau_ki", ("case_manager", "clerk", "moderator", "steering", "dpo", "admin")),
    ("ennetal_sprachschule", ("case_manager", "clerk", "moderator", "steering")),
    ("ennetal_gesundheitsamt", ("case_manager", "clerk", "moderator", "steering")),
    ("hattenberg_sozialamt", ("case_manager", "clerk", "moderator", "steering")),
]
TOKENS = [(org, (role,)) for org, roles in OUTSIDERS for role in roles] + [(org, roles) for org, roles in OUTSIDERS]


def test_every_route_with_an_id_is_classified():
    with_ids = {(m, p) for m, p, _ in OPERATIONS if "{" in p}
    assert not set(CASE_ROUTES) & PUBLIC_IDS
    assert with_ids == set(CASE_ROUTES) | PUBLIC_IDS, (
        f"unclassified: {with_ids - set(CASE_ROUTES) - PUBLIC_IDS}; gone: {set(CASE_ROUTES) | PUBLIC_IDS - with_ids}")


@pytest.fixture
def case_world(client, auth, world, session_factory, clock) -> dict[str, str]:
    """Real ids of every kind, all belonging to Ennetal's case management and its partners."""
    ki = auth(*KI)
    chain = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    person_id = chain["person_id"]
    h = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    conf = conference(client, auth, world, "ennetal_abh")
    phase(client, auth, conf["id"], "case_phase")
    case_id = ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": chain["id"]},
                             headers=auth(*MOD)))["cases"][0]["id"]
    phase(client, auth, conf["id"], "structural_phase")
    found = ok(client.post(f"/conferences/{conf['id']}/findings", json=finding(conference_case_ids=[case_id]),
                           headers=auth(*MOD)))["findings"][0]
    proposal = ok(client.post("/proposals", json={
        "title": "Kinderbetreuung während der Integrationskurse", "summary": "Wartezeiten verkürzen",
        "finding_ids": [found["id"]]}, headers=auth(*MOD)), 201)
    consent_id = ok(client.get(f"/persons/{person_id}/consents", headers=ki))[0]["id"]
    interview = ok(client.post(f"/persons/{person_id}/interviews", json={
        "held_on": "2026-03-02", "language": "Arabisch", "answers": {"residence_status": "protection_granted"}},
        headers=ki), 201)
    request = ok(client.post("/data-subject-requests", json={
        "person_id": person_id, "kind": "access", "received_at": clock().isoformat(),
        "identity_checked_by": "Sachgebiet Datenschutz", "identity_check_method": "Personalausweis vorgelegt"},
        headers=auth(*DPO)), 201)
    contact = ok(client.post(f"/organisations/{world.organisations['ennetal_ki']}/contacts", json={
        "role": "inbox", "channel": "email", "address": "ki-eingang@ennetal.example"}, headers=auth(*ADMIN)), 201)
    with session_factory() as s, s.begin():
        enqueue(s, [Notification("handover.escalated", world.organisations["ennetal_abh"], "email",
                                 "abh@ennetal.example", "Übergabe überfällig", {"handover_id": "x", "kind": "step"})],
                clock())
        message_id = s.scalar(select(func.max(OutboxMessage.id)))
    offers = ok(client.get("/public/offers"))
    offer = offers[0]["id"] if offers else str(uuid.uuid4())  # public either way; the chain is what is asked
    return {"person_id": person_id, "chain_id": chain["id"], "handover_id": h["id"], "conference_id": conf["id"],
            "finding_id": found["id"], "proposal_id": proposal["id"], "consent_id": consent_id,
            "interview_id": interview["id"], "request_id": request["id"], "contact_id": contact["id"],
            "message_id": message_id, "offer_id": offer, "step_key": "residence_permit",
            "organisation_id": world.organisations["ennetal_ki"]}


def _random_like(ids: dict[str, Any]) -> dict[str, Any]:
    def random(name, value):
        if name in KEEP:
            return value
        return RANDOM_INT if isinstance(value, int) or str(value).isdigit() else RANDOM_UUID
    return {name: random(name, value) for name, value in ids.items()}


def _answer(resp) -> tuple[int, str | None]:
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/") and resp.content else {}
    return resp.status_code, body.get("type") if isinstance(body, dict) else None


def test_an_outsider_cannot_tell_a_real_id_from_a_random_one_on_any_route(client, auth, world, case_world):
    real = case_world
    fake = _random_like(real)
    bodies = {"consent": {"recipients": [{"organisation_id": world.organisations["ennetal_ki"]}],
                          "categories": ["language"], "purpose": "case_management", "consequences_explained": True,
                          "evidence_reference": "EW-9", "language": "Arabisch"},
              "finding": finding(conference_case_ids=[1])}
    before = ok(client.get(f"/chains/{real['chain_id']}", headers=auth(*KI)))
    leaks = []
    for org, roles in TOKENS:
        headers = auth(org, *roles, user=f"outsider-{org}-{'-'.join(roles)}")
        for (method, path), body in CASE_ROUTES.items():
            if (method, path) in AREA_ROUTES and org not in OTHER_AREA:
                continue
            body = bodies.get(body, body) if isinstance(body, str) else body
            answers = []
            for ids in (real, fake):
                resp = client.request(method, fill_ids(path, ids), json=fill_ids(body, ids), headers=headers)
                answers.append(_answer(resp))
                if resp.status_code < 400 or resp.status_code >= 500:
                    leaks.append((org, roles, method, path, resp.status_code, resp.text[:200]))
                if resp.status_code == 404:
                    asked = resp.request.url.path + resp.request.content.decode()
                    named = resp.json().get("id")
                    if named is not None and str(named) not in asked:
                        leaks.append((org, roles, method, path, "404 names an id not asked for", named))
            if answers[0] != answers[1]:
                leaks.append((org, roles, method, path, "real", answers[0], "random", answers[1]))
    assert not leaks, "\n".join(map(str, leaks))
    # Nobody changed anything.
    after = ok(client.get(f"/chains/{real['chain_id']}", headers=auth(*KI)))
    assert after["version"] == before["version"]
    assert ok(client.get(f"/handovers/{real['handover_id']}", headers=auth("ennetal_abh", "clerk")))["state"] \
        == "requested"
    assert not ok(client.get(f"/persons/{real['person_id']}/restriction", headers=auth(*DPO)))["active"]


def test_a_lenkungsgruppe_sees_and_decides_only_its_own_areas_proposals(client, auth, world, case_world):
    """Hagenau (kreisfreie Stadt) has its own Lenkungsgruppe: Ennetal's proposals and working
    groups are not its business, neither to read nor to decide."""
    proposal_id = case_world["proposal_id"]
    ennetal_lg, hagenau_lg = auth("ennetal_ki", "steering"), auth("hagenau_ki", "steering", "moderator")
    assert [p["id"] for p in ok(client.get("/proposals", headers=ennetal_lg))] == [proposal_id]
    assert ok(client.get("/proposals", headers=hagenau_lg)) == []
    ok(client.post(f"/proposals/{proposal_id}/actions", json={"action": "submit"}, headers=auth(*MOD)))
    for body in ({"action": "reject", "reason": "nicht unsere Zuständigkeit"},
                 {"action": "accept", "working_group_name": "AG Kinderbetreuung", "due_date": "2026-09-30",
                  "lead_organisation_id": world.organisations["hagenau_ki"]}):
        problem(client.post(f"/proposals/{proposal_id}/actions", json=body, headers=hagenau_lg), 404, "not-found")
    # The area's own group may not hand the lead to an office of another area.
    problem(client.post(f"/proposals/{proposal_id}/actions", json={
        "action": "accept", "working_group_name": "AG Kinderbetreuung", "due_date": "2026-09-30",
        "lead_organisation_id": world.organisations["hagenau_ki"]}, headers=ennetal_lg), 422, "validation-error")
    accepted = ok(client.post(f"/proposals/{proposal_id}/actions", json={
        "action": "accept", "working_group_name": "AG Kinderbetreuung", "due_date": "2026-09-30",
        "lead_organisation_id": world.organisations["ennetal_ki"]}, headers=ennetal_lg))
    assert accepted["state"] == "accepted"
    assert [g["name"] for g in ok(client.get("/working-groups", headers=ennetal_lg))] == ["AG Kinderbetreuung"]
    assert ok(client.get("/working-groups", headers=hagenau_lg)) == []


def test_officers_and_administrators_list_only_their_own_area(client, auth, world, case_world, clock):
    """The agreements and the notification outbox are listed for the caller's area (its
    organisation's jurisdiction and below); a role declared installation-wide sees all."""
    body = {"title": "Vereinbarung KI / Agentur", "categories": ["residence"], "purpose": "employment_promotion",
            "organisation_ids": [world.organisations["ennetal_ki"], world.organisations["ennetal_agentur"]],
            "valid_from": clock().isoformat(), "document_reference": "DAV-2026-07"}
    agreement_id = ok(client.post("/agreements", json=body, headers=auth(*ADMIN)), 201)["id"]

    def agreements(org, role):
        return {a["id"] for a in ok(client.get("/agreements", headers=auth(org, role)))}

    def outbox(org):
        page = ok(client.get("/notifications", headers=auth(org, "admin")))
        return {m["id"] for m in page["items"]}, sum(page["counts"].values())

    assert agreement_id in agreements("ennetal_ki", "dpo") and agreement_id in agreements("ennetal_ki", "admin")
    assert agreement_id not in agreements("hagenau_ki", "dpo") | agreements("hagenau_ki", "admin")
    assert agreement_id in agreements("hagenau_ki", "dpo_installation")
    assert case_world["message_id"] in outbox("ennetal_ki")[0]
    assert outbox("hagenau_ki") == (set(), 0)


def test_no_listing_shows_an_outsider_anything_of_the_case(client, auth, world, case_world):
    """Every GET operation without an id (listings, searches, inboxes, registers, reports), asked
    by each outsider with all its roles at once: no id of the case appears in any answer, and
    neither does the person's name."""
    secrets = {str(v) for k, v in case_world.items()
               if k.endswith("_id") and k not in ("organisation_id", "offer_id", "message_id", "contact_id")}
    listings = [p for m, p, _ in OPERATIONS if m == "GET" and "{" not in p]
    assert {"/persons", "/chains", "/handovers/incoming", "/handovers/outgoing", "/conferences", "/proposals",
            "/data-subject-requests", "/audit", "/retention/due", "/agreements"} <= set(listings)
    leaks = []
    for org, roles in OUTSIDERS:
        headers = auth(org, *roles, user=f"outsider-{org}-all")
        # The area's own moderators and steering members share its proposals (see AREA_ROUTES),
        # with their findings and the conferences these came from (not the conferences' cases).
        shared = {str(case_world[k]) for k in ("proposal_id", "finding_id", "conference_id")}
        hidden = secrets if org in OTHER_AREA else secrets - shared
        for path in listings:
            resp = client.get(path, headers=headers)
            assert resp.status_code < 500, (org, path, resp.status_code)
            leaks += [(org, path, s) for s in hidden if s in resp.text]
            if "Haddad" in resp.text:
                leaks.append((org, path, "the person's name"))
    assert not leaks, leaks
