"""The HTTP API as its users meet it: reference data, persons, chains and their steps, deadlines,
listing, closing, the timeline, and errors as ``application/problem+json``.

Runs against the PostgreSQL test database of ``conftest.py`` with the synthetic Kreis Ennetal; the
clock is a :class:`FakeClock` that tests move by hand.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from http_helpers import ok, problem, ts

TEMPLATES = {"eu_newcomer", "refugee_recognised", "tolerated_family", "uma", "young_adult"}
REFUGEE = "refugee_recognised"
PERSON = {
    "residence_status": "protection_granted",
    "bleibeperspektive": "good",
    "benefit_regime": "asylblg",
}
# The consent a case management records at intake so it may write the residence attributes.
INTAKE_CONSENT = {
    "categories": ["residence", "benefits"],
    "purpose": "case_management",
    "consequences_explained": True,
    "evidence_reference": "EW-TEST-1",
    "language": "Arabisch",
}
# Who acts for a chain whose person lives in Wittmar: the town's own offices, the Kreis-level
# authorities, the BAMF of the Land. "case_management" is the Kreis's integration centre.
WITTMAR_OWNERS = {
    "case_management": "ennetal_ki",
    "sozialamt": "wittmar_sozialamt",
    "buergerbuero": "wittmar_buergerbuero",
    "gesundheitsamt": "ennetal_gesundheitsamt",
    "bamf": "bamf_ast",
    "auslaenderbehoerde": "ennetal_abh",
    "jobcenter": "ennetal_jobcenter",
    "course_provider": "ennetal_vhs",
    "kita_traeger": "ennetal_kita",
    "schulamt": "ennetal_schulamt",
    "anerkennungsstelle": "ennetal_anerkennung",
    "agentur_fuer_arbeit": "ennetal_agentur",
    "wohlfahrtsverband": "ennetal_caritas",
    "integration_point": "ennetal_integration_point",
    "migrantenorganisation": "ennetal_mso",
    "jugendamt": "wittmar_jugendamt",
}


# --- helpers ---------------------------------------------------------------------------------








def person_body(jurisdiction_id: int | None, consent_place: int | None = None, **fields: Any) -> dict[str, Any]:
    """A registration with the residence attributes and the intake consent to the integration
    centres serving the person's place (or ``consent_place``)."""
    body: dict[str, Any] = {"fields": PERSON | fields}
    place = consent_place or jurisdiction_id
    if place is not None:
        body["consents"] = [INTAKE_CONSENT | {"recipients": [
            {"organisation_kind": "kommunales_integrationszentrum", "jurisdiction_id": place}]}]
    else:
        body["fields"] = {}
    if jurisdiction_id is not None:
        body["lead_jurisdiction_id"] = jurisdiction_id
    return body


def new_person(client, headers, jurisdiction_id: int | None = None, **fields: Any) -> dict[str, Any]:
    return ok(client.post("/persons", json=person_body(jurisdiction_id, **fields), headers=headers), 201)


def start(client, headers, person: dict[str, Any], template: str = REFUGEE):
    return client.post("/chains", json={"person_id": person["id"], "template_key": template},
                       headers=headers)


def started(client, headers, person: dict[str, Any], template: str = REFUGEE) -> dict[str, Any]:
    return ok(start(client, headers, person, template), 201)


def act(client, headers, chain_id: str, step_key: str, action: str, **body: Any):
    return client.post(f"/chains/{chain_id}/steps/{step_key}/actions",
                       json={"action": action, **body}, headers=headers)


def acted(client, headers, chain_id: str, step_key: str, action: str, **body: Any) -> dict[str, Any]:
    return ok(act(client, headers, chain_id, step_key, action, **body))


def get_chain(client, headers, chain_id: str) -> dict[str, Any]:
    return ok(client.get(f"/chains/{chain_id}", headers=headers))


def events(client, headers, chain_id: str) -> list[dict[str, Any]]:
    return ok(client.get(f"/chains/{chain_id}/events", headers=headers))


def step(chain: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in chain["steps"] if s["key"] == key)


def states(chain: dict[str, Any]) -> dict[str, str]:
    return {s["key"]: s["state"] for s in chain["steps"]}


def listed(client, headers, **params: Any) -> list[str]:
    page = ok(client.get("/chains", params={"limit": 200, **params}, headers=headers))
    assert page["next_cursor"] is None
    return [item["id"] for item in page["items"]]


@pytest.fixture
def cm(auth) -> dict[str, str]:
    """A case manager of the Kreis's integration centre (serves every town of the Kreis)."""
    return auth("ennetal_ki", "case_manager")


@pytest.fixture
def owner(auth):
    """``owner("sozialamt")`` -> headers of the organisation of that kind serving Wittmar."""
    cache: dict[str, dict[str, str]] = {}

    def headers(kind: str) -> dict[str, str]:
        if kind not in cache:
            org = WITTMAR_OWNERS[kind]
            cache[kind] = auth(org, "case_manager" if kind == "case_management" else "clerk")
        return cache[kind]

    return headers


def finish(client, owner, chain: dict[str, Any], key: str) -> dict[str, Any]:
    """The step's owner starts and completes it; returns the chain afterwards."""
    headers = owner(step(chain, key)["owner"])
    acted(client, headers, chain["id"], key, "start")
    return acted(client, headers, chain["id"], key, "complete")


def skip(client, owner, chain: dict[str, Any], key: str, reason: str = "not needed") -> dict[str, Any]:
    return acted(client, owner(step(chain, key)["owner"]), chain["id"], key, "skip", reason=reason)


@pytest.fixture
def wittmar_person(client, cm, world) -> dict[str, Any]:
    return new_person(client, cm, world.jurisdictions["wittmar"])


@pytest.fixture
def chain(client, cm, wittmar_person) -> dict[str, Any]:
    """A refugee_recognised chain for a person in Wittmar, run by the Kreis's integration centre."""
    return started(client, cm, wittmar_person)


# --- reference data --------------------------------------------------------------------------


def test_jurisdictions_and_hierarchy(client, cm, world):
    everything = ok(client.get("/jurisdictions", headers=cm))
    by_key = {j["key"]: j for j in everything}
    assert by_key["nrw"]["parent_id"] is None
    assert by_key["kreis_ennetal"]["parent_id"] == world.jurisdictions["nrw"]
    assert by_key["hagenau"]["parent_id"] == world.jurisdictions["nrw"]
    assert by_key["wittmar"]["parent_id"] == world.jurisdictions["kreis_ennetal"]
    assert by_key["wittmar"]["id"] == world.jurisdictions["wittmar"]

    towns = ok(client.get("/jurisdictions", params={"level": "gemeinde"}, headers=cm))
    assert len(towns) == 9
    assert {t["level"] for t in towns} == {"gemeinde"}
    assert {t["parent_id"] for t in towns} == {world.jurisdictions["kreis_ennetal"]}
    assert "hagenau" not in {t["key"] for t in towns}

    cities = ok(client.get("/jurisdictions", params={"level": "kreisfreie_stadt"}, headers=cm))
    assert [c["key"] for c in cities] == ["hagenau"]

    children = ok(client.get("/jurisdictions", headers=cm,
                             params={"parent_id": world.jurisdictions["kreis_ennetal"]}))
    assert {c["key"] for c in children} == {t["key"] for t in towns}

    one = ok(client.get(f"/jurisdictions/{world.jurisdictions['hagenau']}", headers=cm))
    assert one["key"] == "hagenau"
    problem(client.get("/jurisdictions/999999", headers=cm), 404, "not-found")
    problem(client.get("/jurisdictions", params={"level": "bezirk"}, headers=cm), 422,
            "validation-error")


def test_organisations_and_kinds(client, cm, world):
    orgs = ok(client.get("/organisations", headers=cm))
    assert {"ennetal_ki", "ennetal_abh", "wittmar_sozialamt", "hagenau_abh"} <= {o["key"] for o in orgs}

    abhs = ok(client.get("/organisations", params={"kind": "auslaenderbehoerde"}, headers=cm))
    assert {o["key"] for o in abhs} == {"ennetal_abh", "hagenau_abh"}
    assert {o["kind_title"] for o in abhs} == {"Ausländerbehörde"}
    kreis_abh = next(o for o in abhs if o["key"] == "ennetal_abh")
    assert kreis_abh["jurisdiction_id"] == world.jurisdictions["kreis_ennetal"]
    assert kreis_abh["jurisdiction_name"] == "Kreis Ennetal"

    assert ok(client.get("/organisations", params={"kind": "no_such_kind"}, headers=cm)) == []
    in_wittmar = ok(client.get("/organisations", headers=cm,
                               params={"jurisdiction_id": world.jurisdictions["wittmar"]}))
    assert {o["key"] for o in in_wittmar} == {"wittmar_sozialamt", "wittmar_buergerbuero",
                                              "wittmar_jugendamt", "wittmar_ki"}

    one = ok(client.get(f"/organisations/{world.organisations['hagenau_abh']}", headers=cm))
    assert one["key"] == "hagenau_abh"
    problem(client.get("/organisations/999999", headers=cm), 404, "not-found")

    kinds = ok(client.get("/organisation-kinds", headers=cm))
    keys = {k["key"] for k in kinds}
    assert {"auslaenderbehoerde", "sozialamt", "course_provider", "bamf"} <= keys
    assert {o["kind"] for o in orgs} <= keys
    assert all(k["title"] for k in kinds)


def test_templates_list_and_read(client, cm):
    summaries = ok(client.get("/templates", headers=cm))
    assert {t["key"] for t in summaries} == TEMPLATES
    assert [t["key"] for t in summaries] == sorted(TEMPLATES)
    refugee = next(t for t in summaries if t["key"] == REFUGEE)
    assert refugee["version"] == 1 and refugee["versions"] == [1]
    assert refugee["step_count"] == 19

    current = ok(client.get(f"/templates/{REFUGEE}", headers=cm))
    pinned = ok(client.get(f"/templates/{REFUGEE}", params={"version": 1}, headers=cm))
    assert current == pinned
    assert current["title"] == "Geflüchtete mit Anerkennung"
    course = next(s for s in current["steps"] if s["key"] == "integration_course")
    assert course["owner"] == "course_provider"
    assert course["requires"] == ["integration_course_entitlement"]
    assert course["due"] == {"after": "integration_course_entitlement", "on": "completed",
                             "days": 56, "deadline_for": "start"}

    body = problem(client.get("/templates/no_such_template", headers=cm), 404, "not-found")
    assert body["resource"] == "template"
    problem(client.get(f"/templates/{REFUGEE}", params={"version": 2}, headers=cm), 404, "not-found")
    problem(client.get(f"/templates/{REFUGEE}", params={"version": 0}, headers=cm), 422,
            "validation-error")


def test_steering_reads_reference_data_but_no_cases(client, auth, world):
    steering = auth("ennetal_ki", "steering")
    assert ok(client.get("/organisations", headers=steering))
    assert ok(client.get("/templates", headers=steering))
    body = problem(client.post("/persons", json=person_body(world.jurisdictions["wittmar"]),
                               headers=steering), 403, "forbidden")
    assert body["permission"] == "persons.create"
    problem(client.get("/chains", headers=steering), 403, "forbidden")


def test_clerk_cannot_register_persons_or_start_chains(client, auth, cm, world, wittmar_person):
    clerk = auth("wittmar_sozialamt", "clerk")
    problem(client.post("/persons", json=person_body(world.jurisdictions["wittmar"]), headers=clerk),
            403, "forbidden")
    problem(start(client, clerk, wittmar_person), 403, "forbidden")
    # Before a chain involves the Sozialamt, the person is not in its record scope ...
    problem(client.get(f"/persons/{wittmar_person['id']}", headers=clerk), 404, "not-found")
    assert ok(client.get("/chains", headers=clerk))["items"] == []
    # ... once it owns a step of the person's chain, it reads what its statute allows.
    started(client, cm, wittmar_person)
    read = ok(client.get(f"/persons/{wittmar_person['id']}", headers=clerk))
    assert read["purpose"] == "asylum_benefits"
    assert read["fields"]["benefit_regime"] == "asylblg"
    assert read["legal_bases"]["benefit_regime"] == "statute:sozialamt_asylblg"
    assert "case_notes" in {r["field"] for r in read["redacted"]}


def test_unknown_roles_grant_nothing(client, auth):
    nobody = auth("ennetal_ki", "superuser")
    problem(client.get("/organisations", headers=nobody), 403, "forbidden")


# --- persons ---------------------------------------------------------------------------------


def test_create_and_read_person(client, cm, world, clock):
    created = new_person(client, cm, world.jurisdictions["wittmar"], family_name="Haddad")
    assert created["fields"]["residence_status"] == "protection_granted"
    assert created["fields"]["bleibeperspektive"] == "good"
    assert created["fields"]["benefit_regime"] == "asylblg"
    assert created["fields"]["family_name"] == "Haddad"
    assert created["legal_bases"]["family_name"] == "statute:case_management_intake"
    assert created["legal_bases"]["benefit_regime"].startswith("consent:")
    assert created["lead_jurisdiction_id"] == world.jurisdictions["wittmar"]
    assert created["purpose"] == "case_management"
    assert ts(created["created_at"]) == clock.now

    read = ok(client.get(f"/persons/{created['id']}", headers=cm))
    assert read == created


def test_person_defaults_to_the_organisations_jurisdiction(client, cm, world):
    created = new_person(client, cm)
    assert created["lead_jurisdiction_id"] == world.jurisdictions["kreis_ennetal"]


def test_person_with_invalid_enum(client, cm, world):
    body = problem(client.post("/persons", json=person_body(world.jurisdictions["wittmar"],
                                                              residence_status="illegal"),
                               headers=cm), 422, "validation-error")
    assert [e["field"] for e in body["errors"]] == ["fields.residence_status"]
    assert "residence_status" in body["detail"]


def test_person_with_unknown_and_extra_fields(client, cm, world):
    body = problem(client.post("/persons", json=person_body(world.jurisdictions["wittmar"], name="Max"),
                               headers=cm), 422, "validation-error")
    assert "fields.name" in [e["field"] for e in body["errors"]]
    body = problem(client.post("/persons", json=person_body(world.jurisdictions["wittmar"]) | {"name": "Max"},
                               headers=cm), 422, "validation-error")
    assert "body.name" in [e["field"] for e in body["errors"]]


def test_person_in_unknown_jurisdiction(client, cm, world):
    body = person_body(999999, consent_place=world.jurisdictions["wittmar"])
    body = problem(client.post("/persons", json=body, headers=cm), 422, "validation-error")
    assert [e["field"] for e in body["errors"]] == ["body.lead_jurisdiction_id"]


def test_person_in_a_jurisdiction_the_organisation_does_not_serve(client, auth, cm, world):
    hagenau_cm = auth("hagenau_ki", "case_manager")
    problem(client.post("/persons", json=person_body(world.jurisdictions["wittmar"]),
                        headers=hagenau_cm), 403, "wrong-organisation")
    # The Kreis serves its towns but not the kreisfreie Stadt next door.
    problem(client.post("/persons", json=person_body(world.jurisdictions["hagenau"]),
                        headers=cm), 403, "wrong-organisation")
    # A town's office does not serve the Kreis as a whole.
    wittmar_cm = auth("wittmar_sozialamt", "case_manager")
    problem(client.post("/persons", headers=wittmar_cm,
                        json=person_body(world.jurisdictions["kreis_ennetal"])),
            403, "wrong-organisation")


def test_unknown_and_malformed_person_id(client, cm):
    missing = "00000000-0000-4000-8000-000000000000"
    body = problem(client.get(f"/persons/{missing}", headers=cm), 404, "not-found")
    assert body["resource"] == "person" and body["id"] == missing
    body = problem(client.get("/persons/not-a-uuid", headers=cm), 422, "validation-error")
    assert body["errors"][0]["field"] == "path.person_id"


# --- starting chains -------------------------------------------------------------------------


def test_start_chain(client, cm, world, clock, wittmar_person):
    chain = started(client, cm, wittmar_person)
    assert chain["person_id"] == wittmar_person["id"]
    assert chain["template_key"] == REFUGEE and chain["template_version"] == 1
    assert chain["template_title"] == "Geflüchtete mit Anerkennung"
    assert chain["lead_jurisdiction_id"] == world.jurisdictions["wittmar"]
    assert chain["case_management_organisation_id"] == world.organisations["ennetal_ki"]
    assert chain["status"] == "active" and chain["version"] == 1
    assert ts(chain["started_at"]) == clock.now
    assert chain["completed_at"] is None and chain["closed_at"] is None
    assert [s["key"] for s in chain["steps"]][:3] == ["arrival_assignment", "accommodation", "registration"]
    assert len(chain["steps"]) == 19
    ready = {k for k, v in states(chain).items() if v == "ready"}
    assert ready == {"arrival_assignment"}
    assert {v for k, v in states(chain).items() if k != "arrival_assignment"} == {"planned"}
    # The chain's own clock runs from the start: first interview within 28 days.
    interview = step(chain, "first_interview")
    assert ts(interview["due_at"]) == clock.now + timedelta(days=28)
    assert interview["due_for"] == "completion" and interview["overdue"] is False
    assert step(chain, "accommodation")["due_at"] is None

    again = get_chain(client, cm, chain["id"])
    assert states(again) == states(chain) and again["version"] == 1


def test_allowed_actions_depend_on_the_caller(client, auth, cm, chain):
    cid = chain["id"]
    # The case manager started the chain but does not own the Sozialamt's step.
    assert step(chain, "arrival_assignment")["allowed_actions"] == []
    assert step(get_chain(client, cm, cid), "arrival_assignment")["allowed_actions"] == []

    sozialamt = get_chain(client, auth("wittmar_sozialamt", "clerk"), cid)
    assert "start" in step(sozialamt, "arrival_assignment")["allowed_actions"]
    assert "complete" not in step(sozialamt, "arrival_assignment")["allowed_actions"]
    assert step(sozialamt, "accommodation")["allowed_actions"] == []  # planned, not optional

    # Another town's Sozialamt is not involved: the chain does not exist for it.
    problem(client.get(f"/chains/{cid}", headers=auth("hattenberg_sozialamt", "clerk")), 404, "not-found")
    # Nor is the Gesundheitsamt while its step is only planned: owning a kind of step is not
    # involvement.
    problem(client.get(f"/chains/{cid}", headers=auth("ennetal_gesundheitsamt", "clerk")), 404, "not-found")

    # The case management plans the chain: it may skip the optional step before it is ready.
    assert step(get_chain(client, cm, cid), "health_first_doctor")["allowed_actions"] == ["skip"]


def test_duplicate_open_chain(client, cm, wittmar_person, chain):
    body = problem(start(client, cm, wittmar_person), 409, "duplicate-chain")
    assert body["chain_id"] == chain["id"]
    # Another template for the same person is fine.
    assert started(client, cm, wittmar_person, "eu_newcomer")["template_key"] == "eu_newcomer"
    # Once the first chain is closed, the same template can start again.
    ok(client.post(f"/chains/{chain['id']}/close", json={"reason": "opened_in_error"}, headers=cm))
    assert started(client, cm, wittmar_person)["id"] != chain["id"]


def test_start_errors(client, auth, cm, world, wittmar_person):
    body = problem(start(client, cm, wittmar_person, "no_such_template"), 404, "not-found")
    assert body["resource"] == "template"
    ghost = {"id": "00000000-0000-4000-8000-000000000000"}
    assert problem(start(client, cm, ghost), 404, "not-found")["resource"] == "person"
    problem(client.post("/chains", json={"person_id": "nope", "template_key": REFUGEE}, headers=cm),
            422, "validation-error")
    problem(client.post("/chains", json={"person_id": wittmar_person["id"], "template_key": REFUGEE,
                                         "priority": "high"}, headers=cm), 422, "validation-error")
    # Hagenau's case management has no business with a person the Kreis registered in Wittmar.
    problem(start(client, auth("hagenau_ki", "case_manager"), wittmar_person), 404, "not-found")
    assert listed(client, cm) == []


# --- acting on steps -------------------------------------------------------------------------


def test_happy_path_of_the_first_steps(client, owner, cm, clock, chain):
    cid = chain["id"]
    sozialamt = owner("sozialamt")
    t0 = clock.now

    clock.advance(hours=2)
    c = acted(client, sozialamt, cid, "arrival_assignment", "start")
    arrival = step(c, "arrival_assignment")
    assert arrival["state"] == "in_progress" and ts(arrival["started_at"]) == clock.now
    assert arrival["allowed_actions"] == ["complete", "block"]
    assert c["version"] == 2
    # Accommodation is due one day after the arrival started.
    assert ts(step(c, "accommodation")["due_at"]) == t0 + timedelta(hours=2, days=1)

    clock.advance(hours=1)
    c = acted(client, sozialamt, cid, "arrival_assignment", "complete")
    assert step(c, "arrival_assignment")["state"] == "completed"
    assert ts(step(c, "arrival_assignment")["completed_at"]) == clock.now
    assert step(c, "arrival_assignment")["allowed_actions"] == []
    for key in ("accommodation", "asylblg_subsistence", "health_first_doctor", "asylum_decision"):
        assert step(c, key)["state"] == "ready", key
    assert step(c, "registration")["state"] == "planned"
    assert c["version"] == 3 and c["status"] == "active"

    c = finish(client, owner, c, "accommodation")
    assert step(c, "registration")["state"] == "ready"
    assert ts(step(c, "registration")["due_at"]) == clock.now + timedelta(days=14)
    assert step(c, "registration")["due_for"] == "completion"

    c = finish(client, owner, c, "registration")
    for key in ("first_interview", "kita_place", "school_place"):
        assert step(c, key)["state"] == "ready", key
    assert step(c, "residence_permit")["state"] == "planned"  # waits for the asylum decision too

    c = finish(client, owner, c, "asylum_decision")
    assert step(c, "residence_permit")["state"] == "ready"

    # The case manager now sees their own step.
    c = get_chain(client, cm, cid)
    assert step(c, "first_interview")["allowed_actions"] == ["start", "block"]
    c = finish(client, owner, c, "first_interview")
    assert step(c, "recognition_of_qualifications")["state"] == "ready"
    assert c["version"] == 11
    assert get_chain(client, cm, cid) == c  # what the action returned is what is stored


def test_whole_chain_to_completion(client, owner, cm, chain):
    c = chain
    for spec in chain["steps"]:
        c = skip(client, owner, c, spec["key"]) if spec["optional"] else finish(client, owner, c, spec["key"])
        assert step(c, spec["key"])["state"] in ("completed", "skipped")
    assert c["status"] == "completed"
    assert c["completed_at"] is not None and c["closed_at"] is None
    assert set(states(c).values()) == {"completed", "skipped"}
    assert all(s["allowed_actions"] == [] for s in c["steps"])
    timeline = events(client, cm, c["id"])
    assert timeline[-1]["kind"] == "chain_completed"
    # A completed chain does not change any more.
    problem(act(client, owner("jobcenter"), c["id"], "housing_search", "block", reason="x"), 409,
            "chain-not-active")
    problem(client.post(f"/chains/{c['id']}/close", json={"reason": "other"}, headers=cm), 409,
            "chain-not-active")
    assert ok(client.get("/chains", params={"status": "completed"}, headers=cm))["items"][0]["id"] == c["id"]


def test_illegal_transition(client, owner, chain):
    sozialamt = owner("sozialamt")
    body = problem(act(client, sozialamt, chain["id"], "arrival_assignment", "complete"), 409,
                   "illegal-transition")
    assert body["state"] == "ready"
    assert body["allowed_actions"] == ["start", "block"]
    body = problem(act(client, sozialamt, chain["id"], "arrival_assignment", "resume"), 409,
                   "illegal-transition")
    assert body["state"] == "ready"
    # Planned steps cannot be started before their prerequisites are done.
    body = problem(act(client, sozialamt, chain["id"], "accommodation", "start"), 409,
                   "illegal-transition")
    assert body["state"] == "planned" and body["allowed_actions"] == []
    assert get_chain(client, sozialamt, chain["id"])["version"] == 1


def test_wrong_organisation(client, auth, owner, cm, chain):
    cid = chain["id"]
    # Organisations not involved with the chain learn nothing: the same 404 as for a random id.
    random_id = "00000000-0000-4000-8000-000000000000"
    for outsider, key in [(auth("hagenau_abh", "clerk"), "residence_permit"),
                          (auth("hattenberg_sozialamt", "clerk"), "arrival_assignment"),
                          (auth("wittmar_buergerbuero", "clerk"), "arrival_assignment"),
                          (auth("hagenau_ki", "case_manager"), "first_interview"),
                          (owner("auslaenderbehoerde"), "residence_permit")]:
        real = problem(act(client, outsider, cid, key, "start", expected_version=99), 404, "not-found")
        fake = problem(act(client, outsider, random_id, key, "start", expected_version=99), 404, "not-found")
        assert {k: v for k, v in real.items() if k not in ("instance", "detail", "id", "request_id")} == \
            {k: v for k, v in fake.items() if k not in ("instance", "detail", "id", "request_id")}
        assert real["detail"] == f"no chain {cid}"
    # The case management is involved, but the Sozialamt's step is not its own.
    body = problem(act(client, cm, cid, "arrival_assignment", "start"), 403, "wrong-organisation")
    assert body["owner"] == "sozialamt"
    # A planned step cannot be started by anyone yet.
    problem(act(client, owner("sozialamt"), cid, "accommodation", "start"), 409, "illegal-transition")
    c = get_chain(client, owner("sozialamt"), cid)
    assert c["version"] == 1 and step(c, "arrival_assignment")["state"] == "ready"


def test_block_requires_a_reason(client, owner, chain):
    sozialamt = owner("sozialamt")
    problem(act(client, sozialamt, chain["id"], "arrival_assignment", "block"), 422, "reason-required")
    problem(act(client, sozialamt, chain["id"], "arrival_assignment", "block", reason="   "), 422,
            "reason-required")
    problem(act(client, sozialamt, chain["id"], "arrival_assignment", "block", reason=None), 422,
            "reason-required")
    assert step(get_chain(client, sozialamt, chain["id"]), "arrival_assignment")["state"] == "ready"


def test_block_and_resume_return_to_the_previous_state(client, owner, chain):
    cid = chain["id"]
    sozialamt = owner("sozialamt")

    # Blocked before it started: resuming makes it ready again.
    c = acted(client, sozialamt, cid, "arrival_assignment", "block", reason="  keine Zuweisung  ")
    s = step(c, "arrival_assignment")
    assert s["state"] == "blocked" and s["reason"] == "keine Zuweisung"
    assert s["allowed_actions"] == ["resume"]
    assert c["status"] == "stalled"
    c = acted(client, sozialamt, cid, "arrival_assignment", "resume")
    assert step(c, "arrival_assignment")["state"] == "ready"
    assert step(c, "arrival_assignment")["started_at"] is None
    assert c["status"] == "active"

    # Blocked while in progress: resuming continues the work.
    acted(client, sozialamt, cid, "arrival_assignment", "start")
    c = acted(client, sozialamt, cid, "arrival_assignment", "block", reason="Dolmetscher fehlt")
    assert step(c, "arrival_assignment")["state"] == "blocked"
    c = acted(client, sozialamt, cid, "arrival_assignment", "resume")
    assert step(c, "arrival_assignment")["state"] == "in_progress"
    assert step(c, "arrival_assignment")["started_at"] is not None
    c = acted(client, sozialamt, cid, "arrival_assignment", "complete")
    assert step(c, "arrival_assignment")["state"] == "completed"
    assert c["version"] == 7


def test_skip_of_a_required_step_is_refused(client, owner, chain):
    sozialamt = owner("sozialamt")
    body = problem(act(client, sozialamt, chain["id"], "arrival_assignment", "skip",
                       reason="schon erledigt"), 409, "transition-guard-failed")
    assert body["guard"] == "step_is_optional"
    assert step(get_chain(client, sozialamt, chain["id"]), "arrival_assignment")["state"] == "ready"


def test_skip_of_an_optional_step(client, owner, cm, wittmar_person):
    """eu_newcomer: the school place waits for registration and the (optional) health check."""
    c = started(client, cm, wittmar_person, "eu_newcomer")
    cid = c["id"]
    health = owner("gesundheitsamt")
    # Not involved while its step is only planned; the case management plans the chain.
    problem(act(client, health, cid, "school_health_check", "skip"), 404, "not-found")
    problem(act(client, cm, cid, "school_health_check", "skip"), 422, "reason-required")

    # Skipped while still planned: the school place keeps waiting for the registration.
    c = acted(client, cm, cid, "school_health_check", "skip", reason="Untersuchung im Herkunftsland")
    assert step(c, "school_health_check")["state"] == "skipped"
    assert step(c, "school_health_check")["reason"] == "Untersuchung im Herkunftsland"
    assert step(c, "school_health_check")["allowed_actions"] == []
    assert step(c, "school_place")["state"] == "planned"

    c = finish(client, owner, c, "registration")
    assert step(c, "school_place")["state"] == "ready"
    assert step(c, "school_health_check")["state"] == "skipped"
    problem(act(client, cm, cid, "school_health_check", "start"), 409, "illegal-transition")
    # The step was never assigned to the Gesundheitsamt: it still does not see the chain.
    problem(act(client, health, cid, "school_health_check", "start"), 404, "not-found")


def test_skip_after_the_other_prerequisites_makes_dependant_ready(client, owner, cm, wittmar_person):
    c = started(client, cm, wittmar_person, "eu_newcomer")
    c = finish(client, owner, c, "registration")
    assert step(c, "school_health_check")["state"] == "ready"
    assert step(c, "school_place")["state"] == "planned"
    c = skip(client, owner, c, "school_health_check")
    assert step(c, "school_place")["state"] == "ready"


def test_stale_expected_version_changes_nothing(client, owner, cm, chain):
    cid = chain["id"]
    sozialamt = owner("sozialamt")
    c = acted(client, sozialamt, cid, "arrival_assignment", "start", expected_version=1)
    assert c["version"] == 2
    before = get_chain(client, cm, cid)
    timeline = events(client, cm, cid)

    body = problem(act(client, sozialamt, cid, "arrival_assignment", "complete", expected_version=1),
                   409, "version-conflict")
    assert body["current_version"] == 2
    problem(act(client, sozialamt, cid, "arrival_assignment", "block", reason="x",
                expected_version=7), 409, "version-conflict")

    after = get_chain(client, cm, cid)
    assert after["version"] == 2
    assert states(after) == states(before)
    assert after == before
    assert events(client, cm, cid) == timeline

    c = acted(client, sozialamt, cid, "arrival_assignment", "complete", expected_version=2)
    assert c["version"] == 3


def test_step_action_request_errors(client, owner, cm, chain):
    cid = chain["id"]
    sozialamt = owner("sozialamt")
    body = problem(act(client, sozialamt, cid, "no_such_step", "start"), 404, "not-found")
    assert body["resource"] == "step"
    missing = "00000000-0000-4000-8000-000000000000"
    assert problem(act(client, sozialamt, missing, "arrival_assignment", "start"), 404,
                   "not-found")["resource"] == "chain"
    problem(act(client, sozialamt, "not-a-uuid", "arrival_assignment", "start"), 422, "validation-error")

    body = problem(act(client, sozialamt, cid, "arrival_assignment", "finish"), 422, "validation-error")
    assert [e["field"] for e in body["errors"]] == ["body.action"]
    problem(act(client, sozialamt, cid, "arrival_assignment", "make_ready"), 422, "validation-error")
    problem(act(client, sozialamt, cid, "arrival_assignment", "cancel"), 422, "validation-error")
    body = problem(act(client, sozialamt, cid, "arrival_assignment", "start", force=True), 422,
                   "validation-error")
    assert "body.force" in [e["field"] for e in body["errors"]]
    problem(act(client, sozialamt, cid, "arrival_assignment", "start", expected_version=0), 422,
            "validation-error")
    problem(act(client, sozialamt, cid, "arrival_assignment", "block", reason="x" * 2001), 422,
            "validation-error")
    problem(client.post(f"/chains/{cid}/steps/arrival_assignment/actions", json={}, headers=sozialamt),
            422, "validation-error")

    c = get_chain(client, cm, cid)
    assert c["version"] == 1 and step(c, "arrival_assignment")["state"] == "ready"
    assert len(events(client, cm, cid)) == 2


# --- deadlines and status --------------------------------------------------------------------


def test_integration_course_deadline(client, owner, cm, clock, chain):
    cid = chain["id"]
    c = chain
    for key in ("arrival_assignment", "accommodation", "registration", "first_interview",
                "asylblg_subsistence", "asylum_decision", "residence_permit"):
        c = finish(client, owner, c, key)
    # Keep every other clock satisfied so that only the course can make the chain stall.
    c = acted(client, owner("jobcenter"), cid, "sgb2_application", "start")
    c = skip(client, owner, c, "school_place")
    clock.advance(days=3)
    c = finish(client, owner, c, "integration_course_entitlement")
    entitled_at = ts(step(c, "integration_course_entitlement")["completed_at"])
    assert entitled_at == clock.now

    course = step(c, "integration_course")
    assert course["state"] == "ready"
    assert ts(course["due_at"]) == entitled_at + timedelta(days=56)
    assert course["due_for"] == "start"
    assert course["overdue"] is False
    assert c["status"] == "active"

    clock.advance(days=56)  # exactly at the deadline: not yet overdue
    c = get_chain(client, cm, cid)
    assert step(c, "integration_course")["overdue"] is False and c["status"] == "active"
    assert listed(client, cm, overdue="true") == []

    clock.advance(minutes=1)
    c = get_chain(client, cm, cid)
    assert step(c, "integration_course")["overdue"] is True
    assert [s["key"] for s in c["steps"] if s["overdue"]] == ["integration_course"]
    assert c["status"] == "stalled"
    assert listed(client, cm, overdue="true") == [cid]
    assert listed(client, cm, overdue="false") == []
    assert listed(client, cm, status="stalled") == [cid]
    assert listed(client, cm, status="active") == []
    summary = ok(client.get("/chains", headers=cm))["items"][0]
    assert summary["status"] == "stalled" and summary["steps_overdue"] == 1

    c = acted(client, owner("course_provider"), cid, "integration_course", "start")
    assert step(c, "integration_course")["overdue"] is False
    assert c["status"] == "active"
    assert listed(client, cm, overdue="true") == []
    assert listed(client, cm, overdue="false") == [cid]
    assert listed(client, cm, status="stalled") == []
    assert listed(client, cm, status="active") == [cid]


def test_blocked_step_makes_the_chain_stalled_in_listings(client, owner, cm, chain):
    acted(client, owner("sozialamt"), chain["id"], "arrival_assignment", "block", reason="wartet")
    assert listed(client, cm, status="stalled") == [chain["id"]]
    assert listed(client, cm, status="active") == []
    assert listed(client, cm, overdue="true") == []
    summary = ok(client.get("/chains", headers=cm))["items"][0]
    assert summary["steps_blocked"] == 1 and summary["status"] == "stalled"


# --- listing ---------------------------------------------------------------------------------


def test_listing_filters(client, auth, cm, world, clock):
    hagenau_cm = auth("hagenau_ki", "case_manager")
    anna = new_person(client, cm, world.jurisdictions["wittmar"])
    ben = new_person(client, cm, world.jurisdictions["wittmar"])
    cem = new_person(client, hagenau_cm, world.jurisdictions["hagenau"])
    a = started(client, cm, anna)["id"]
    clock.advance(minutes=1)
    b = started(client, cm, ben, "eu_newcomer")["id"]
    clock.advance(minutes=1)
    h = started(client, hagenau_cm, cem)["id"]

    # Each organisation lists only the chains it is involved in (its record scope): the case
    # management, and whoever has a step that is ready (here the first steps only).
    assert listed(client, cm) == [b, a]  # newest first
    assert listed(client, hagenau_cm) == [h]
    assert listed(client, auth("hagenau_sozialamt", "clerk")) == [h]
    assert listed(client, auth("hagenau_abh", "clerk")) == []  # its step is not ready yet
    assert listed(client, auth("ennetal_abh", "clerk")) == []
    assert listed(client, auth("wittmar_sozialamt", "clerk")) == [a]  # eu_newcomer: no Sozialamt
    assert listed(client, auth("wittmar_buergerbuero", "clerk")) == [b]  # eu_newcomer starts there
    assert listed(client, auth("hattenberg_sozialamt", "clerk")) == []

    assert listed(client, cm, template_key="eu_newcomer") == [b]
    assert listed(client, cm, template_key=REFUGEE) == [a]
    assert listed(client, hagenau_cm, template_key=REFUGEE) == [h]
    assert listed(client, cm, template_key="no_such_template") == []

    j = world.jurisdictions
    assert listed(client, cm, jurisdiction_id=j["kreis_ennetal"]) == [b, a]
    assert listed(client, cm, jurisdiction_id=j["wittmar"]) == [b, a]
    assert listed(client, cm, jurisdiction_id=j["hattenberg"]) == []
    assert listed(client, cm, jurisdiction_id=j["hagenau"]) == []
    assert listed(client, hagenau_cm, jurisdiction_id=j["nrw"]) == [h]
    assert listed(client, cm, jurisdiction_id=j["nrw"]) == [b, a]

    o = world.organisations
    assert listed(client, cm, organisation_id=o["ennetal_abh"]) == []
    assert listed(client, cm, organisation_id=o["wittmar_sozialamt"]) == [a]
    assert listed(client, cm, organisation_id=o["hagenau_abh"]) == []
    assert listed(client, hagenau_cm, organisation_id=o["hagenau_sozialamt"]) == [h]
    assert listed(client, cm, organisation_id=o["hattenberg_sozialamt"]) == []
    assert listed(client, cm, organisation_id=o["ennetal_ki"]) == [b, a]
    assert listed(client, cm, organisation_id=o["hagenau_ki"]) == []

    assert listed(client, cm, person_id=anna["id"]) == [a]
    assert listed(client, cm, person_id=cem["id"]) == []
    assert listed(client, hagenau_cm, person_id=cem["id"]) == [h]
    assert listed(client, cm, person_id=anna["id"], template_key="eu_newcomer") == []

    summary = next(i for i in ok(client.get("/chains", headers=cm))["items"] if i["id"] == a)
    assert summary["person_id"] == anna["id"] and summary["template_key"] == REFUGEE
    assert summary["steps_total"] == 19 and summary["steps_ended"] == 0
    assert summary["lead_jurisdiction_id"] == j["wittmar"]
    assert ts(summary["next_due_at"]) == ts(step(get_chain(client, cm, a), "first_interview")["due_at"])

    problem(client.get("/chains", params={"jurisdiction_id": 999999}, headers=cm), 404, "not-found")
    problem(client.get("/chains", params={"organisation_id": 999999}, headers=cm), 404, "not-found")
    problem(client.get("/chains", params={"status": "sleeping"}, headers=cm), 422, "validation-error")
    problem(client.get("/chains", params={"person_id": "x"}, headers=cm), 422, "validation-error")


def test_pagination(client, cm, world, clock):
    ids = []
    for i in range(5):
        person = new_person(client, cm, world.jurisdictions["wittmar"])
        ids.append(started(client, cm, person)["id"])
        if i % 2:  # some chains share their start time, some do not
            clock.advance(seconds=30)

    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = ok(client.get("/chains", params=params, headers=cm))
        pages += 1
        assert len(page["items"]) == (2 if pages < 3 else 1)
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 5, "pagination does not end"
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == set(ids)
    assert seen == listed(client, cm)
    started_at = [ts(get_chain(client, cm, cid)["started_at"]) for cid in seen]
    assert started_at == sorted(started_at, reverse=True)


def b64json(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "garbage",
    "!!!",
    b64json({"not": "a cursor"}),
    b64json([]),
    b64json(["yesterday", "00000000-0000-4000-8000-000000000000"]),
    # Well-formed JSON that a client could forge or corrupt:
    b64json(["2026-03-02T09:00:00", "00000000-0000-4000-8000-000000000000"]),  # no time zone
    b64json(["2026-03-02T09:00:00+00:00", 5]),  # id is not a string
    b64json(["0001-01-01T00:00:00+14:00", "00000000-0000-4000-8000-000000000000"]),  # before year 1 in UTC
], ids=["garbage", "not-base64", "object", "empty-list", "bad-date", "naive-date", "int-id",
        "date-out-of-range"])
def test_bad_cursor(client, cm, cursor):
    body = problem(client.get("/chains", params={"cursor": cursor}, headers=cm), 422,
                   "validation-error")
    assert body["errors"][0]["field"] == "query.cursor"


def test_bad_limit(client, cm):
    problem(client.get("/chains", params={"limit": 0}, headers=cm), 422, "validation-error")
    problem(client.get("/chains", params={"limit": 201}, headers=cm), 422, "validation-error")
    problem(client.get("/chains", params={"limit": "many"}, headers=cm), 422, "validation-error")


# --- closing and the timeline ----------------------------------------------------------------


def test_only_case_management_may_close(client, auth, cm, chain):
    cid = chain["id"]
    body = {"reason": "moved_away"}
    problem(client.post(f"/chains/{cid}/close", json=body, headers=auth("wittmar_sozialamt", "case_manager")),
            403, "wrong-organisation")
    # Not involved: the chain does not exist for it.
    problem(client.post(f"/chains/{cid}/close", json=body, headers=auth("hagenau_ki", "case_manager")),
            404, "not-found")
    problem(client.post(f"/chains/{cid}/close", json=body, headers=auth("ennetal_ki", "clerk")),
            403, "forbidden")
    problem(client.post(f"/chains/{cid}/close", json={"reason": "bored"}, headers=cm), 422,
            "validation-error")
    problem(client.post(f"/chains/{cid}/close", json={}, headers=cm), 422, "validation-error")
    assert get_chain(client, cm, cid)["status"] == "active"


def test_close_cancels_open_steps(client, owner, cm, clock, chain):
    cid = chain["id"]
    c = finish(client, owner, chain, "arrival_assignment")
    clock.advance(days=2)
    c = ok(client.post(f"/chains/{cid}/close", headers=cm,
                       json={"reason": "moved_away", "note": "nach Hagenau verzogen"}))
    assert c["status"] == "closed" and c["closed_reason"] == "moved_away"
    assert ts(c["closed_at"]) == clock.now
    assert step(c, "arrival_assignment")["state"] == "completed"
    others = {k: v for k, v in states(c).items() if k != "arrival_assignment"}
    assert set(others.values()) == {"cancelled"}
    assert step(c, "accommodation")["reason"] == "moved_away: nach Hagenau verzogen"
    assert all(s["allowed_actions"] == [] and not s["overdue"] for s in c["steps"])
    # Closing ends the case management's involvement: it reads the chain as it was closed.
    after = get_chain(client, cm, cid)
    assert after["access"] == "former" and ts(after["history_until"]) == clock.now
    assert {k: v for k, v in after.items() if k not in ("access", "history_until")} == \
        {k: v for k, v in c.items() if k not in ("access", "history_until")}

    problem(act(client, owner("sozialamt"), cid, "accommodation", "start"), 409, "chain-not-active")
    problem(client.post(f"/chains/{cid}/close", json={"reason": "other"}, headers=cm), 409,
            "chain-not-active")
    assert listed(client, cm, status="closed") == [cid]
    assert listed(client, cm, status="active") == []
    clock.advance(days=60)  # closed chains are never overdue
    assert listed(client, cm, overdue="true") == []


def test_timeline_has_one_event_per_state_change(client, owner, cm, world, clock, chain):
    cid = chain["id"]
    sozialamt = owner("sozialamt")
    health = owner("gesundheitsamt")
    t0 = clock.now
    steps = [
        (sozialamt, "arrival_assignment", "start", {}),
        (sozialamt, "arrival_assignment", "complete", {}),
        (sozialamt, "accommodation", "block", {"reason": "kein Platz"}),
        (sozialamt, "accommodation", "resume", {}),
        (sozialamt, "accommodation", "start", {}),
        (health, "health_first_doctor", "skip", {"reason": "Hausarzt vorhanden"}),
    ]
    for headers, key, action, body in steps:
        clock.advance(hours=1)
        acted(client, headers, cid, key, action, **body)
    # Refused requests leave no trace.
    problem(act(client, sozialamt, cid, "accommodation", "start"), 409, "illegal-transition")
    problem(act(client, sozialamt, cid, "accommodation", "skip", reason="x"), 409,
            "transition-guard-failed")
    clock.advance(hours=1)
    closed = ok(client.post(f"/chains/{cid}/close", json={"reason": "ended_by_person"}, headers=cm))

    timeline = events(client, cm, cid)
    got = [(e["kind"], e["step_key"], e["action"], e["from_state"], e["to_state"]) for e in timeline]
    expected_head = [
        ("chain_started", None, None, None, "open"),
        ("step", "arrival_assignment", "make_ready", "planned", "ready"),
        ("step", "arrival_assignment", "start", "ready", "in_progress"),
        ("step", "arrival_assignment", "complete", "in_progress", "completed"),
        ("step", "accommodation", "make_ready", "planned", "ready"),
        ("step", "asylblg_subsistence", "make_ready", "planned", "ready"),
        ("step", "health_first_doctor", "make_ready", "planned", "ready"),
        ("step", "asylum_decision", "make_ready", "planned", "ready"),
        ("step", "accommodation", "block", "ready", "blocked"),
        ("step", "accommodation", "resume", "blocked", "ready"),
        ("step", "accommodation", "start", "ready", "in_progress"),
        ("step", "health_first_doctor", "skip", "ready", "skipped"),
    ]
    assert got[:len(expected_head)] == expected_head
    assert got[-1] == ("chain_closed", None, None, None, "closed")
    cancels = got[len(expected_head):-1]
    open_before_close = {k for k, v in states(closed).items() if v == "cancelled"}
    assert len(open_before_close) == 17
    assert {(c[0], c[2], c[4]) for c in cancels} == {("step", "cancel", "cancelled")}
    assert sorted(c[1] for c in cancels) == sorted(open_before_close)
    assert dict((c[1], c[3]) for c in cancels)["accommodation"] == "in_progress"
    assert len(timeline) == 1 + 1 + len(steps) + 4 + 17 + 1

    # Ids increase, times never go backwards, and each change names who made it and why.
    assert [e["id"] for e in timeline] == sorted(e["id"] for e in timeline)
    times = [ts(e["occurred_at"]) for e in timeline]
    assert times == sorted(times) and times[0] == t0 and times[-1] == clock.now
    block = timeline[8]
    assert block["reason"] == "kein Platz"
    assert block["actor_user"] == "user-wittmar_sozialamt"
    assert block["actor_organisation_id"] == world.organisations["wittmar_sozialamt"]
    assert timeline[11]["actor_organisation_id"] == world.organisations["ennetal_gesundheitsamt"]
    assert timeline[-1]["actor_organisation_id"] == world.organisations["ennetal_ki"]
    assert timeline[-1]["reason"] == "ended_by_person"

    problem(client.get("/chains/00000000-0000-4000-8000-000000000000/events", headers=cm), 404,
            "not-found")


# --- errors are problems, never 500 ----------------------------------------------------------


def test_unknown_route_and_wrong_method(client, cm):
    problem(client.get("/nowhere", headers=cm), 404, "route-not-found")
    problem(client.get("/nowhere"), 404, "route-not-found")
    problem(client.get("/chains/x/y/z", headers=cm), 404, "route-not-found")
    problem(client.delete("/persons", headers=cm), 405, "method-not-allowed")
    problem(client.delete("/chains", headers=cm), 405, "method-not-allowed")
    problem(client.put("/templates", headers=cm), 405, "method-not-allowed")


@pytest.mark.parametrize("content, content_type", [
    ("residence_status=good", "application/x-www-form-urlencoded"),
    ("{not json", "application/json"),
    ("just text", "text/plain"),
    ('["a", "list"]', "application/json"),
    ("", "application/json"),
])
def test_non_json_body(client, cm, content, content_type):
    resp = client.post("/persons", content=content, headers=cm | {"Content-Type": content_type})
    body = problem(resp, 422, "validation-error")
    assert body["errors"]


def test_problem_catalogue(client):
    catalogue = ok(client.get("/problems"))
    by_type = {p["type"]: p for p in catalogue}
    for slug, status in [("not-authenticated", 401), ("forbidden", 403), ("wrong-organisation", 403),
                         ("not-found", 404), ("route-not-found", 404), ("validation-error", 422),
                         ("illegal-transition", 409), ("transition-guard-failed", 409),
                         ("reason-required", 422), ("version-conflict", 409),
                         ("chain-not-active", 409), ("duplicate-chain", 409)]:
        assert by_type[f"/problems/{slug}"]["status"] == status, slug
    assert all(p["title"] and p["description"] for p in catalogue)

    one = ok(client.get("/problems/illegal-transition"))
    assert one == by_type["/problems/illegal-transition"]
    assert "allowed_actions" in one["description"]
    problem(client.get("/problems/no-such-problem"), 404, "not-found")


# Odd but possible input: a NUL character (PostgreSQL text cannot hold one) and ids beyond the
# range of the database's integer columns. A client must get a 4xx problem, never a 500.


def test_nul_character_in_block_reason(client, owner, cm, chain):
    resp = act(client, owner("sozialamt"), chain["id"], "arrival_assignment", "block",
               reason="Dolmetscher\x00fehlt")
    problem(resp, 422, "validation-error")
    c = get_chain(client, cm, chain["id"])
    assert c["version"] == 1 and step(c, "arrival_assignment")["state"] == "ready"


def test_nul_character_in_close_note(client, cm, chain):
    resp = client.post(f"/chains/{chain['id']}/close", headers=cm,
                       json={"reason": "other", "note": "verzogen\x00"})
    problem(resp, 422, "validation-error")
    assert get_chain(client, cm, chain["id"])["status"] == "active"


@pytest.mark.parametrize("url, params", [
    ("/chains", {"template_key": "refugee\x00recognised"}),
    ("/organisations", {"kind": "auslaender\x00behoerde"}),
])
def test_nul_character_in_a_filter(client, cm, url, params):
    resp = client.get(url, params=params, headers=cm)
    assert resp.status_code < 500, resp.text
    if resp.status_code == 200:  # nothing can match; an empty list is as good as a 422
        assert resp.json() in ([], {"items": [], "next_cursor": None})
    else:
        problem(resp, 422, "validation-error")


@pytest.mark.parametrize("url, params", [
    ("/jurisdictions/99999999999999999999", {}),
    ("/organisations/9223372036854775808", {}),
    ("/chains", {"jurisdiction_id": 2**40}),
    ("/chains", {"organisation_id": 2**40}),
    ("/jurisdictions", {"parent_id": 2**40}),
])
def test_out_of_range_ids_in_reads(client, cm, url, params):
    resp = client.get(url, params=params, headers=cm)
    assert resp.status_code < 500, resp.text
    if resp.status_code == 200:  # a filter on an id that cannot exist matches nothing
        assert resp.json() == []
    elif resp.status_code == 404:
        problem(resp, 404, "not-found")
    else:
        problem(resp, 422, "validation-error")


def test_out_of_range_jurisdiction_for_a_person(client, cm):
    body = problem(client.post("/persons", json={"lead_jurisdiction_id": 2**31}, headers=cm),
                   422, "validation-error")
    assert body["errors"][0]["field"] == "body.lead_jurisdiction_id"


def test_health(client):
    assert ok(client.get("/health")) == {"status": "ok"}
