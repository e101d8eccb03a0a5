"""Fallkonferenzen and the Lenkungsgruppe as their users meet them: the KI moderates a conference
with the ABH and the Jobcenter, puts cases on the agenda only with the persons' consent, records
agreements, turns structural findings (checked for personal data) into a proposal, and the
steering group decides and follows the implementation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from http_helpers import ok, problem
from test_api import new_person, started

MOD = ("ennetal_ki", "moderator")
KI = ("ennetal_ki", "case_manager")
LG = ("ennetal_ki", "steering")


def conference_consent(world, *org_keys: str) -> dict[str, Any]:
    """A Schweigepflichtentbindung for the conference, naming the organisations at the table."""
    return {
        "recipients": [{"organisation_id": world.organisations[k]} for k in org_keys],
        "categories": ["case_notes"], "purpose": "case_conference", "consequences_explained": True,
        "evidence_reference": "EW-FK-1", "language": "Arabisch",
    }


def consenting_case(client, auth, world, *org_keys: str, family_name: str = "Haddad") -> dict[str, Any]:
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name=family_name,
                        given_names="Rana", birth_date="1990-04-01")
    ok(client.post(f"/persons/{person['id']}/consents", json=conference_consent(world, *org_keys), headers=ki), 201)
    return started(client, ki, person)


def conference(client, auth, world, *others: str) -> dict[str, Any]:
    return ok(client.post("/conferences", json={
        "title": "Fallkonferenz Wittmar November", "scheduled_at": "2026-03-10T09:00:00Z",
        "jurisdiction_id": world.jurisdictions["wittmar"],
        "participant_organisation_ids": [world.organisations[k] for k in others],
    }, headers=auth(*MOD)), 201)


def phase(client, auth, conf_id: str, to: str) -> dict[str, Any]:
    return ok(client.post(f"/conferences/{conf_id}/phase", json={"phase": to}, headers=auth(*MOD)))


def finding(**over: Any) -> dict[str, Any]:
    return {
        "barrier_category": "waiting_times", "field_of_action": "language",
        "organisation_kinds": ["course_provider", "auslaenderbehoerde"], "level": "intermunicipal",
        "weather": "gewitter",
        "text": "Wartezeiten auf Integrationskurse liegen bei über drei Monaten; Kinderbetreuung fehlt.",
    } | over


def test_case_needs_a_basis_for_every_participant(client, auth, world):
    conf = conference(client, auth, world, "ennetal_abh", "ennetal_jobcenter")
    phase(client, auth, conf["id"], "case_phase")
    partial = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    body = problem(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": partial["id"]},
                               headers=auth(*MOD)), 403, "no-legal-basis")
    assert "Jobcenter" in body["detail"]
    full = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh", "ennetal_jobcenter")
    out = ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": full["id"]}, headers=auth(*MOD)))
    assert len(out["cases"]) == 1
    assert set(out["cases"][0]["legal_bases"]) == {str(world.organisations[k])
                                                   for k in ("ennetal_ki", "ennetal_abh", "ennetal_jobcenter")}


def test_from_conference_to_decision(client, auth, world):
    conf = conference(client, auth, world, "ennetal_abh")
    phase(client, auth, conf["id"], "case_phase")
    chain = consenting_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    conf = ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": chain["id"]}, headers=auth(*MOD)))
    case_id = conf["cases"][0]["id"]
    conf = ok(client.post(f"/conferences/{conf['id']}/agreements", json={
        "conference_case_id": case_id, "text": "ABH prüft die Verlängerung vorrangig",
        "owner_organisation_id": world.organisations["ennetal_abh"], "due_date": "2026-03-24",
        "step_key": "residence_permit"}, headers=auth(*MOD)))
    agreement = conf["agreements"][0]
    assert agreement["handover_id"] and agreement["text"] is None  # not echoed by a change
    seen = ok(client.get(f"/conferences/{conf['id']}", headers=auth("ennetal_abh", "clerk")))
    assert seen["agreements"][0]["text"] == "ABH prüft die Verlängerung vorrangig"
    inbox = ok(client.get("/handovers/incoming", headers=auth("ennetal_abh", "clerk")))
    assert [i["id"] for i in inbox["items"]] == [agreement["handover_id"]]

    phase(client, auth, conf["id"], "structural_phase")
    dirty = client.post(f"/conferences/{conf['id']}/findings",
                        json=finding(text="Frau Haddad wartet seit vier Monaten auf einen Kursplatz.",
                                     conference_case_ids=[case_id]), headers=auth(*MOD))
    body = problem(dirty, 422, "personal-data-in-text")
    assert body["hits"][0]["kind"] == "name"
    # A bare registered name is caught by the closed-world check against the records.
    bare = client.post(f"/conferences/{conf['id']}/findings",
                       json=finding(text="Haddad wartet seit vier Monaten auf einen Kursplatz.",
                                    conference_case_ids=[case_id]), headers=auth(*MOD))
    problem(bare, 422, "personal-data-in-text")
    conf = ok(client.post(f"/conferences/{conf['id']}/findings", json=finding(conference_case_ids=[case_id]),
                          headers=auth(*MOD)))
    found = conf["findings"][0]
    assert found["case_count"] == 1 and "cases" not in found
    voted = ok(client.put(f"/conferences/{conf['id']}/findings/{found['id']}/vote", json={"dots": 2},
                          headers=auth("ennetal_abh", "clerk")))
    assert voted["findings"][0]["dots"] == 2 and voted["my_dots_left"] == 1
    problem(client.put(f"/conferences/{conf['id']}/findings/{found['id']}/vote", json={"dots": 4},
                       headers=auth("ennetal_abh", "clerk")), 422, "too-many-dots")

    proposal = ok(client.post("/proposals", json={
        "title": "Kursplätze mit Kinderbetreuung", "summary": "Mehr Kurse mit Kinderbetreuung im Kreis",
        "finding_ids": [found["id"]]}, headers=auth(*MOD)), 201)
    assert proposal["state"] == "bundled"
    problem(client.post(f"/proposals/{proposal['id']}/actions", json={"action": "submit"}, headers=auth(*LG)),
            403, "forbidden")
    ok(client.post(f"/proposals/{proposal['id']}/actions", json={"action": "submit"}, headers=auth(*MOD)))
    problem(client.post(f"/proposals/{proposal['id']}/actions", json={"action": "reject"}, headers=auth(*LG)),
            422, "reason-required")
    decided = ok(client.post(f"/proposals/{proposal['id']}/actions", json={
        "action": "accept", "working_group_name": "AG Sprache", "due_date": "2026-09-30",
        "lead_organisation_id": world.organisations["ennetal_vhs"]}, headers=auth(*LG)))
    assert decided["state"] == "accepted" and decided["working_group"]["name"] == "AG Sprache"
    for action, state in (("start", "in_implementation"), ("complete", "implemented"),
                          ("make_permanent", "made_permanent")):
        decided = ok(client.post(f"/proposals/{proposal['id']}/actions", json={"action": action}, headers=auth(*LG)))
        assert decided["state"] == state
    assert [e["action"] for e in decided["events"]] == [
        "bundle", "submit", "accept", "start", "complete", "make_permanent"]
    # The steering group reads the proposal and its findings, never the cases behind them.
    assert "Haddad" not in str(decided)


def test_steering_report_publishes_and_suppresses(client, auth, world, release):
    towns = ["wittmar"] * 6 + ["hattenberg"] * 2
    conf = conference(client, auth, world, "ennetal_abh")
    phase(client, auth, conf["id"], "case_phase")
    case_ids = []
    for i, town in enumerate(towns):
        ki = auth(*KI)
        person = new_person(client, ki, world.jurisdictions[town], family_name=f"Testperson{i}",
                            given_names="Kim", birth_date="1991-01-01")
        ok(client.post(f"/persons/{person['id']}/consents",
                       json=conference_consent(world, "ennetal_ki", "ennetal_abh"), headers=ki), 201)
        chain = started(client, ki, person)
        conf = ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": chain["id"]}, headers=auth(*MOD)))
        case_ids.append(conf["cases"][-1]["id"])
    phase(client, auth, conf["id"], "structural_phase")
    ok(client.post(f"/conferences/{conf['id']}/findings", json=finding(conference_case_ids=case_ids),
                   headers=auth(*MOD)))
    problem(client.get("/reports/steering", headers=auth(*LG)), 404, "no-release")  # nothing released yet
    release("2026-Q1", datetime(2026, 6, 1, tzinfo=UTC))  # the conference was held in 2026-Q1
    report = ok(client.get("/reports/steering", headers=auth(*LG)))
    assert report["period"]["key"] == "2026-Q1" and report["release"]["number"] == 1
    barriers = next(t for t in report["tables"] if t["key"] == "barriers")
    cells = {(c["organisation_kind"], c["town"]): c["value"] for c in barriers["cells"]}
    assert cells[("course_provider", "_total")] == 8
    assert cells[("course_provider", "wittmar")] is None  # 6 would reveal Hattenberg's 2
    assert cells[("course_provider", "hattenberg")] is None
    assert cells[("course_provider", "breckenfeld")] == 0
    csv_body = client.get("/reports/steering.csv", headers=auth(*LG))
    assert csv_body.status_code == 200 and csv_body.content.startswith("\ufeff".encode())
    assert b";" in csv_body.content
    page = client.get("/reports/steering.html", headers=auth(*LG))
    assert page.status_code == 200 and "<svg" in page.text
    problem(client.get("/reports/steering", headers=auth(*KI)), 403, "forbidden")
    ocel = ok(client.get("/exports/ocel", headers=auth(*LG)))
    assert "objectTypes" in ocel and not any(o["type"] == "Kette" for o in ocel["objects"])  # no chain ended
