"""Handovers at their edges, as clerks, case managers and the data protection officer check them.

- Every request that cannot be served is a clear ``application/problem+json`` with a stable
  ``type`` (never a 500), and leaves nothing behind: no handover, no handover event, no audit row
  claiming a data package was sent.
- The data package is exactly what the receiver may see under statute (policies/legal_bases.yaml)
  and consent, frozen when the handover was requested; only sender and receiver see its values;
  every look at it is audited; inbox listings carry no personal values.
- Closing a chain and a relocation withdraw the handovers they make pointless, and keep the rest.
- Inbox filters, ordering, cursors and counts; optimistic concurrency on responses.

Runs against the PostgreSQL test database of ``conftest.py`` (synthetic Kreis Ennetal, the
kreisfreie Stadt Hagenau next door); the clock is a FakeClock moved by hand. Names are invented.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from http_helpers import ok, problem
from sqlalchemy import text
from test_api import acted, new_person, started

ROOT = Path(__file__).resolve().parent.parent

KI = ("ennetal_ki", "case_manager")
ABH = ("ennetal_abh", "clerk")
JC = ("ennetal_jobcenter", "clerk")
SOZ = ("wittmar_sozialamt", "clerk")
MISSING = "00000000-0000-4000-8000-000000000000"

# A person whose record holds something in every category, so that each package shows what it
# lets through and what it withholds. Free-text values are distinctive so that a leak is visible.
RECORD: dict[str, Any] = {
    "family_name": "Qarahi-Lindqvist",
    "given_names": "Nourelin Sofie",
    "birth_date": "1988-11-23",
    "address": "Am Kalkofen 12, 58300 Wittmar",
    "phone": "+49 2302 5550173",
    "residence_status": "protection_granted",
    "bleibeperspektive": "good",
    "arrival_date": "2025-08-14",
    "abh_file_number": "ABH-EN-4471-Q",
    "benefit_regime": "asylblg",
    "benefit_case_number": "LA-9931-ZX",
    "school_years": 11,
    "vocational_qualification": "Elektronikerin (Abschluss Aleppo-Nord)",
    "german_level": "A2",
    "other_languages": "Arabisch, Schwedisch, Kurmandschi",
    "marital_status": "married",
    "children": 3,
    "housing_situation": "municipal_shelter",
    "housing_need": "Vier-Zimmer-Wohnung nahe Grundschule Kalkofen",
    "health_notes": "Insulinpflichtiger Diabetes, Termin Diabetologie Zimtgasse",
    "psychosocial_support": True,
    "case_notes": "Vertraulich: Bruder in Haft, Familiennachzug offen",
}
TEXT_VALUES = {k: v for k, v in RECORD.items() if isinstance(v, str) and len(v) > 8}
FORM = {"consequences_explained": True, "evidence_reference": "EW-EDGE-7", "language": "Arabisch"}


# --- helpers ------------------------------------------------------------------------------------


def _yaml(name: str) -> Any:
    return yaml.safe_load((ROOT / "policies" / name).read_text(encoding="utf-8"))


DATA = _yaml("data.yaml")
BASES = _yaml("legal_bases.yaml")
CATEGORY_OF = {name: spec["category"] for name, spec in DATA["fields"].items()}


def statute(kind: str, purpose: str) -> tuple[str, set[str]]:
    """The statute id and the categories an organisation kind reads by law for a purpose."""
    found = [s for s in BASES["statutory"]
             if s["organisation_kind"] == kind and purpose in s["purposes"] and "read" in s["actions"]]
    assert len(found) == 1, (kind, purpose, found)
    return found[0]["id"], set(found[0]["categories"])


def register(client, headers, world, place: str = "wittmar") -> dict[str, Any]:
    """Register RECORD with the intake consent (every category, health explicitly) to the
    integration centres serving the person's place, for case management."""
    cats = sorted(set(DATA["categories"]) - {"identity", "contact"})
    body = {
        "lead_jurisdiction_id": world.jurisdictions[place],
        "fields": RECORD,
        "consents": [FORM | {
            "recipients": [{"organisation_kind": "kommunales_integrationszentrum",
                            "jurisdiction_id": world.jurisdictions[place]}],
            "categories": cats, "purpose": "case_management", "explicit_special": True,
        }],
    }
    person = ok(client.post("/persons", json=body, headers=headers), 201)
    assert person["fields"]["health_notes"] == RECORD["health_notes"]
    return person


def handover(client, headers, chain_id: str, **body: Any):
    return client.post(f"/chains/{chain_id}/handovers", json=body, headers=headers)


def respond(client, headers, handover_id: str, action: str, **body: Any):
    return client.post(f"/handovers/{handover_id}/actions", json={"action": action, **body}, headers=headers)


def box(client, headers, which: str = "incoming", **params: Any) -> dict[str, Any]:
    return ok(client.get(f"/handovers/{which}", params=params, headers=headers))


def ids(page: dict[str, Any]) -> list[str]:
    return [i["id"] for i in page["items"]]


def rkw_ready(client, auth, chain_id: str) -> dict[str, str]:
    """The Sozialamt of Wittmar takes the person in and pays AsylbLG benefits (step in progress)."""
    soz = auth(*SOZ)
    acted(client, soz, chain_id, "arrival_assignment", "start")
    acted(client, soz, chain_id, "arrival_assignment", "complete")
    acted(client, soz, chain_id, "asylblg_subsistence", "start")
    return soz


RKW = {"kind": "rechtskreiswechsel", "step_key": "asylblg_subsistence", "to_step_key": "sgb2_application",
       "benefit_regime": "sgb_ii"}


def written(db) -> tuple[int, int, int]:
    """Handovers, handover events, and audit rows saying a handover was requested or a data
    package was assembled: what a refused request must not leave behind."""
    with db.connect() as conn:
        return (
            conn.scalar(text("SELECT count(*) FROM handovers")),
            conn.scalar(text("SELECT count(*) FROM handover_events")),
            conn.scalar(text("SELECT count(*) FROM audit_events "
                             "WHERE subtype IN ('handover.request', 'handover.package')")),
        )


def audit_rows(client, dpo, **params: Any) -> list[dict[str, Any]]:
    page = ok(client.get("/audit", params={"limit": 1000, **params}, headers=dpo))
    assert page["next_cursor"] is None
    return page["items"]


def b64json(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# --- refused requests ---------------------------------------------------------------------------


def test_refused_step_handovers_are_clear_problems_and_leave_nothing(client, auth, world, db):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    chain = started(client, ki, person)
    cid = chain["id"]
    # A completed and a skipped step.
    soz, health = auth(*SOZ), auth("ennetal_gesundheitsamt", "clerk")
    acted(client, soz, cid, "arrival_assignment", "start")
    acted(client, soz, cid, "arrival_assignment", "complete")
    acted(client, health, cid, "health_first_doctor", "skip", reason="Erstuntersuchung in der ZUE erfolgt")
    # The residence permit becomes ready, so the ABH is involved (it can try to hand on its step).
    for headers, key in ((soz, "accommodation"), (auth("wittmar_buergerbuero", "clerk"), "registration"),
                         (auth("bamf_ast", "clerk"), "asylum_decision")):
        acted(client, headers, cid, key, "start")
        acted(client, headers, cid, key, "complete")
    baseline = written(db)
    assert baseline[0] == 0

    org = world.organisations
    invalid = [  # (headers, chain, body, field named by the problem)
        (ki, cid, {"kind": "step", "step_key": "no_such_step"}, "step_key"),
        (ki, cid, {"kind": "step"}, "step_key"),
        (ki, cid, {"kind": "step", "step_key": "first_interview"}, "step_key"),  # case management's own
        (ki, cid, {"kind": "step", "step_key": "arrival_assignment"}, "step_key"),  # completed
        (ki, cid, {"kind": "step", "step_key": "health_first_doctor"}, "step_key"),  # skipped
        (ki, cid, {"kind": "step", "step_key": "residence_permit",
                   "receiver_organisation_id": org["ennetal_jobcenter"]}, "receiver_organisation_id"),
        (ki, cid, {"kind": "step", "step_key": "residence_permit",
                   "receiver_organisation_id": org["hagenau_abh"]}, "receiver_organisation_id"),
        (ki, cid, {"kind": "step", "step_key": "residence_permit",
                   "receiver_organisation_id": 987_654}, "receiver_organisation_id"),
        # The ABH cannot hand its own step to itself, named or by default.
        (auth(*ABH), cid, {"kind": "step", "step_key": "residence_permit"}, "receiver_organisation_id"),
        (auth(*ABH), cid, {"kind": "step", "step_key": "residence_permit",
                           "receiver_organisation_id": org["ennetal_abh"]}, "receiver_organisation_id"),
    ]
    for headers, chain_id, body, field in invalid:
        p = problem(handover(client, headers, chain_id, **body), 422, "invalid-handover")
        assert p["field"] == field, (body, p)
        assert p["detail"].startswith(field), p
        assert written(db) == baseline, body

    p = problem(handover(client, ki, cid, kind="step", step_key="residence_permit",
                         receiver_organisation_id=org["hagenau_abh"]), 422, "invalid-handover")
    assert "does not serve" in p["detail"] and "Wittmar" in p["detail"]

    malformed = [  # (body, field of the first error)
        ({"kind": "teleport", "step_key": "residence_permit"}, "body.kind"),
        ({"step_key": "residence_permit"}, "body.kind"),
        ({"kind": "step", "step_key": "residence_permit", "priority": "high"}, "body.priority"),
        ({"kind": "step", "step_key": "residence_permit", "receiver_organisation_id": 2**31},
         "body.receiver_organisation_id"),
        ({"kind": "step", "step_key": "residence_permit", "receiver_organisation_id": 0},
         "body.receiver_organisation_id"),
        ({"kind": "step", "step_key": "residence_permit", "receiver_organisation_id": "ABH"},
         "body.receiver_organisation_id"),
        ({"kind": "relocation", "to_jurisdiction_id": 2**31}, "body.to_jurisdiction_id"),
        ({"kind": "step", "step_key": "Residence-Permit"}, "body.step_key"),
        ({"kind": "step", "step_key": "residence_permit\x00"}, "body.step_key"),
        ({"kind": "step", "step_key": "r" * 65}, "body.step_key"),
    ]
    for body, field in malformed:
        p = problem(handover(client, ki, cid, **body), 422, "validation-error")
        assert field in [e["field"] for e in p["errors"]], (body, p)
        assert written(db) == baseline, body

    # An unknown purpose for the package.
    p = problem(handover(client, ki, cid, kind="step", step_key="residence_permit", purpose="marketing"),
                422, "validation-error")
    assert "purpose" in p["detail"]
    # Not JSON, a JSON array, no body.
    problem(client.post(f"/chains/{cid}/handovers", content=b"kind=step", headers=ki
                        | {"Content-Type": "application/x-www-form-urlencoded"}), 422, "validation-error")
    problem(client.post(f"/chains/{cid}/handovers", json=[{"kind": "step"}], headers=ki), 422, "validation-error")
    problem(client.post(f"/chains/{cid}/handovers", headers=ki), 422, "validation-error")

    # Unknown chain, malformed chain id, a chain outside the caller's scope: never revealed.
    step_body = {"kind": "step", "step_key": "residence_permit"}
    p = problem(handover(client, ki, MISSING, **step_body), 404, "not-found")
    assert p["resource"] == "chain"
    problem(handover(client, ki, "not-a-uuid", **step_body), 422, "validation-error")
    problem(handover(client, ki, str(2**31), **step_body), 422, "validation-error")
    for outsider in (auth("hagenau_ki", "case_manager"), auth("hagenau_abh", "clerk"),
                     auth("hattenberg_sozialamt", "clerk")):
        p = problem(handover(client, outsider, cid, **step_body), 404, "not-found")
        assert p["resource"] == "chain"
        assert "Qarahi" not in json.dumps(p)
    assert written(db) == baseline

    # Nothing shows in any box, and the step that was asked for can still be handed over.
    assert box(client, ki, "outgoing")["counts"]["requested"] == 0
    assert box(client, auth(*ABH))["counts"]["requested"] == 0
    h = ok(handover(client, ki, cid, **step_body), 201)
    assert h["receiver"]["id"] == org["ennetal_abh"]
    assert written(db)[0] == 1


def test_refused_rechtskreiswechsel(client, auth, world, db):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    cid = started(client, ki, person)["id"]
    soz = auth(*SOZ)
    acted(client, soz, cid, "arrival_assignment", "start")
    acted(client, soz, cid, "arrival_assignment", "complete")
    baseline = written(db)

    # The sending step is ready, not in progress: nothing to hand over yet.
    p = problem(handover(client, soz, cid, **RKW), 409, "handover-step-state")
    assert p["state"] == "ready"
    acted(client, soz, cid, "asylblg_subsistence", "start")
    acted(client, soz, cid, "asylblg_subsistence", "block", reason="Unterlagen fehlen")
    p = problem(handover(client, soz, cid, **RKW), 409, "handover-step-state")
    assert p["state"] == "blocked"
    acted(client, soz, cid, "asylblg_subsistence", "resume")
    assert written(db) == baseline

    # Somebody else's step: the Jobcenter cannot send the Sozialamt's benefits (it is not even
    # involved with the chain yet).
    problem(handover(client, auth(*JC), cid, **RKW), 404, "not-found")
    # The case management is involved, but the benefits are not its step.
    problem(handover(client, ki, cid, **RKW), 403, "wrong-organisation")

    invalid = [
        (RKW | {"benefit_regime": "sgb_ix"}, "benefit_regime"),
        ({k: v for k, v in RKW.items() if k != "benefit_regime"}, "benefit_regime"),
        (RKW | {"to_step_key": "asylblg_subsistence"}, "to_step_key"),
        ({k: v for k, v in RKW.items() if k != "to_step_key"}, "to_step_key"),
        ({k: v for k, v in RKW.items() if k != "step_key"}, "step_key"),
        (RKW | {"step_key": "no_such_step"}, "step_key"),
        (RKW | {"to_step_key": "no_such_step"}, "to_step_key"),
        (RKW | {"to_step_key": "first_interview"}, "to_step_key"),  # the case management's step
        (RKW | {"to_step_key": "arrival_assignment"}, "to_step_key"),  # completed
        (RKW | {"receiver_organisation_id": world.organisations["hagenau_jobcenter"]},
         "receiver_organisation_id"),
        (RKW | {"receiver_organisation_id": world.organisations["ennetal_agentur"]},
         "receiver_organisation_id"),
    ]
    for body, field in invalid:
        p = problem(handover(client, soz, cid, **body), 422, "invalid-handover")
        assert p["field"] == field, (body, p)
        assert written(db) == baseline, body
    problem(handover(client, soz, cid, **(RKW | {"benefit_regime": "SGB II"})), 422, "validation-error")
    assert written(db) == baseline

    # The person's Rechtskreis is untouched, and the step can still be ended by handover.
    assert ok(client.get(f"/persons/{person['id']}", headers=ki))["fields"]["benefit_regime"] == "asylblg"
    h = ok(handover(client, soz, cid, **RKW), 201)
    assert h["receiver"]["id"] == world.organisations["ennetal_jobcenter"]


def test_refused_relocations(client, auth, world, db):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["hattenberg"])
    cid = started(client, ki, person)["id"]
    baseline = written(db)
    to_wittmar = {"kind": "relocation", "to_jurisdiction_id": world.jurisdictions["wittmar"]}

    # Only the chain's case management hands the chain over.
    p = problem(handover(client, auth("hattenberg_sozialamt", "clerk"), cid, **to_wittmar), 403,
                "wrong-organisation")
    assert p["owner"] == "case_management"
    # Not involved at all: the chain does not exist for it.
    problem(handover(client, auth(*ABH), cid, **to_wittmar), 404, "not-found")

    invalid = [
        ({"kind": "relocation"}, "to_jurisdiction_id"),
        ({"kind": "relocation", "to_jurisdiction_id": world.jurisdictions["kreis_ennetal"]}, "to_jurisdiction_id"),
        ({"kind": "relocation", "to_jurisdiction_id": world.jurisdictions["nrw"]}, "to_jurisdiction_id"),
        ({"kind": "relocation", "to_jurisdiction_id": world.jurisdictions["hattenberg"]}, "to_jurisdiction_id"),
        ({"kind": "relocation", "to_jurisdiction_id": 987_654}, "to_jurisdiction_id"),
        (to_wittmar | {"receiver_organisation_id": world.organisations["wittmar_sozialamt"]},
         "receiver_organisation_id"),
        (to_wittmar | {"receiver_organisation_id": world.organisations["hagenau_ki"]},
         "receiver_organisation_id"),
    ]
    for body, field in invalid:
        p = problem(handover(client, ki, cid, **body), 422, "invalid-handover")
        assert p["field"] == field, (body, p)
        assert written(db) == baseline, body
    p = problem(handover(client, ki, cid, kind="relocation",
                         to_jurisdiction_id=world.jurisdictions["kreis_ennetal"]), 422, "invalid-handover")
    assert "town" in p["detail"]

    chain = ok(client.get(f"/chains/{cid}", headers=ki))
    assert chain["lead_jurisdiction_id"] == world.jurisdictions["hattenberg"]
    assert chain["case_management_organisation_id"] == world.organisations["ennetal_ki"]
    assert box(client, auth("wittmar_ki", "case_manager"))["counts"]["requested"] == 0


def test_no_handover_on_a_closed_chain(client, auth, world, db):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    cid = started(client, ki, person)["id"]
    ok(client.post(f"/chains/{cid}/close", json={"reason": "moved_away"}, headers=ki))
    baseline = written(db)
    for headers, body in [
        (ki, {"kind": "step", "step_key": "residence_permit"}),
        (ki, {"kind": "relocation", "to_jurisdiction_id": world.jurisdictions["hattenberg"]}),
        (auth(*SOZ), RKW),
    ]:
        p = problem(handover(client, headers, cid, **body), 409, "chain-not-active")
        assert p["lifecycle"] == "closed"
    assert written(db) == baseline


@pytest.mark.parametrize("role", ["steering", "dpo", "moderator", "admin"])
def test_roles_without_handover_permissions(client, auth, world, db, role):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    cid = started(client, ki, person)["id"]
    h = ok(handover(client, ki, cid, kind="step", step_key="residence_permit"), 201)
    baseline = written(db)
    # The same organisations as the parties, but a role without the permissions.
    for org in ("ennetal_ki", "ennetal_abh"):
        other = auth(org, role)
        p = problem(handover(client, other, cid, kind="step", step_key="integration_course_entitlement"),
                    403, "forbidden")
        assert p["permission"] == "handovers.act"
        for which in ("incoming", "outgoing"):
            assert problem(client.get(f"/handovers/{which}", headers=other), 403,
                           "forbidden")["permission"] == "handovers.read"
        problem(client.get(f"/handovers/{h['id']}", headers=other), 403, "forbidden")
        problem(respond(client, other, h["id"], "acknowledge"), 403, "forbidden")
        problem(respond(client, other, h["id"], "withdraw"), 403, "forbidden")
    assert written(db) == baseline
    still = ok(client.get(f"/handovers/{h['id']}", headers=auth(*ABH)))
    assert still["state"] == "requested" and still["version"] == 1


def test_bad_ids_on_reading_and_responding(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    cid = started(client, ki, person)["id"]
    h = ok(handover(client, ki, cid, kind="step", step_key="residence_permit"), 201)
    abh = auth(*ABH)
    problem(client.get("/handovers/not-a-uuid", headers=abh), 422, "validation-error")
    problem(respond(client, abh, "not-a-uuid", "acknowledge"), 422, "validation-error")
    assert problem(client.get(f"/handovers/{MISSING}", headers=abh), 404, "not-found")["resource"] == "handover"
    problem(respond(client, abh, MISSING, "acknowledge"), 404, "not-found")
    # An organisation not involved does not learn that the handover exists.
    for outsider in (auth("hagenau_abh", "clerk"), auth(*JC)):
        problem(client.get(f"/handovers/{h['id']}", headers=outsider), 404, "not-found")
        problem(respond(client, outsider, h["id"], "acknowledge"), 404, "not-found")
    for body in ({"action": "approve"}, {"action": "acknowledge", "expected_version": 0},
                 {"action": "acknowledge", "expected_version": 2**31},
                 {"action": "acknowledge", "note": "x"}, {"action": "reject", "reason": "x" * 2001}):
        problem(client.post(f"/handovers/{h['id']}/actions", json=body, headers=abh), 422, "validation-error")
    assert ok(client.get(f"/handovers/{h['id']}", headers=abh))["state"] == "requested"


def test_stale_expected_version_is_a_conflict(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    cid = started(client, ki, person)["id"]
    h = ok(handover(client, ki, cid, kind="step", step_key="residence_permit"), 201)
    abh = auth(*ABH)
    assert h["version"] == 1
    p = problem(respond(client, abh, h["id"], "acknowledge", expected_version=2), 409, "version-conflict")
    assert p["current_version"] == 1
    p = problem(respond(client, abh, h["id"], "reject", reason="nicht zuständig", expected_version=7),
                409, "version-conflict")
    seen = ok(client.get(f"/handovers/{h['id']}", headers=abh))
    assert seen["state"] == "requested" and seen["version"] == 1
    assert [e["action"] for e in seen["events"]] == ["request"]

    done = ok(respond(client, abh, h["id"], "acknowledge", expected_version=1))
    assert done["state"] == "acknowledged" and done["version"] == 2
    # The sender decided on what it last saw: version 1. It is too late now.
    p = problem(respond(client, ki, h["id"], "withdraw", expected_version=1), 409, "version-conflict")
    assert p["current_version"] == 2
    problem(respond(client, ki, h["id"], "withdraw", expected_version=2), 409, "handover-not-pending")
    final = ok(client.get(f"/handovers/{h['id']}", headers=ki))
    assert final["state"] == "acknowledged" and final["version"] == 2
    assert [e["action"] for e in final["events"]] == ["request", "acknowledge"]


# --- the data package ---------------------------------------------------------------------------


def expected_package(kind: str, purpose: str, consented: dict[str, str] | None = None):
    """Fields with a value the receiver may see, their bases, and the catalogue fields withheld."""
    statute_id, cats = statute(kind, purpose)
    bases = {f: f"statute:{statute_id}" for f in RECORD if CATEGORY_OF[f] in cats}
    for category, basis in (consented or {}).items():
        bases |= {f: basis for f in RECORD if CATEGORY_OF[f] == category and f not in bases}
    withheld = {f for f in CATEGORY_OF if CATEGORY_OF[f] not in cats | set(consented or {})}
    return bases, withheld


def test_packages_follow_the_statutes_and_consent(client, auth, world, clock):
    ki = auth(*KI)
    person = register(client, ki, world)
    pid = person["id"]
    cid = started(client, ki, person)["id"]
    schulamt_id = world.organisations["ennetal_schulamt"]

    # Consents to the Schulamt for schooling: family (in force) and housing (withdrawn again).
    family = ok(client.post(f"/persons/{pid}/consents", headers=ki, json=FORM | {
        "recipients": [{"organisation_id": schulamt_id}], "categories": ["family"], "purpose": "schooling"}), 201)
    housing = ok(client.post(f"/persons/{pid}/consents", headers=ki, json=FORM | {
        "recipients": [{"organisation_id": schulamt_id}], "categories": ["housing"], "purpose": "schooling"}), 201)
    clock.advance(minutes=5)
    ok(client.post(f"/consents/{housing['id']}/withdraw", json={"note": "widerrufen"}, headers=ki))
    clock.advance(minutes=5)

    cases = [  # (step, receiver org, receiver kind, purpose, consented categories)
        ("sgb2_application", "ennetal_jobcenter", "jobcenter", "basic_income", {}),
        ("health_first_doctor", "ennetal_gesundheitsamt", "gesundheitsamt", "health_protection", {}),
        ("school_place", "ennetal_schulamt", "schulamt", "schooling", {"family": f"consent:{family['id']}"}),
    ]
    made = {}
    for step_key, org, kind, purpose, consented in cases:
        h = ok(handover(client, ki, cid, kind="step", step_key=step_key), 201)
        assert h["receiver"]["id"] == world.organisations[org]
        package = h["package"]
        bases, withheld = expected_package(kind, purpose, consented)
        assert package["purpose"] == purpose
        assert set(package["fields"]) == set(bases), (kind, set(package["fields"]) ^ set(bases))
        assert package["legal_bases"] == bases
        redacted = {r["field"]: r for r in package["redacted"]}
        assert set(redacted) == withheld, (kind, set(redacted) ^ withheld)
        assert all(r["category"] == CATEGORY_OF[f] and r["reason"] for f, r in redacted.items())
        made[kind] = h

    # By hand, the statutes' substance: health goes to the Gesundheitsamt only; case notes nowhere.
    assert "health_notes" in made["gesundheitsamt"]["package"]["fields"]
    assert "residence_status" not in made["gesundheitsamt"]["package"]["fields"]
    assert {"health_notes", "case_notes"} <= {r["field"] for r in made["jobcenter"]["package"]["redacted"]}
    assert {"benefit_case_number", "housing_situation", "family_name"} <= set(made["jobcenter"]["package"]["fields"])
    school = made["schulamt"]["package"]
    assert school["legal_bases"]["children"] == f"consent:{family['id']}"
    assert school["legal_bases"]["german_level"] == "statute:schulamt_schooling"
    # The withdrawn consent opens nothing; the reason says why.
    housing_redacted = {r["field"]: r for r in school["redacted"]}["housing_situation"]
    assert "withdrawn" in housing_redacted["reason"]
    assert "housing_need" not in school["fields"]

    # The receivers see the values of their package and nothing else.
    for kind, org in (("jobcenter", "ennetal_jobcenter"), ("gesundheitsamt", "ennetal_gesundheitsamt"),
                      ("schulamt", "ennetal_schulamt")):
        seen = ok(client.get(f"/handovers/{made[kind]['id']}", headers=auth(org, "clerk")))
        values = seen["package"]["values"]
        assert values == {f: RECORD[f] for f in made[kind]["package"]["fields"]}
        body = json.dumps(seen, ensure_ascii=False)
        for f, v in TEXT_VALUES.items():
            if f not in values:
                assert v not in body, (kind, f)


def test_package_is_frozen_when_requested(client, auth, world, clock):
    ki = auth(*KI)
    person = register(client, ki, world)
    pid = person["id"]
    cid = started(client, ki, person)["id"]
    h = ok(handover(client, ki, cid, kind="step", step_key="sgb2_application"), 201)
    jc = auth(*JC)
    before = ok(client.get(f"/handovers/{h['id']}", headers=jc))["package"]

    clock.advance(hours=2)
    ok(client.patch(f"/persons/{pid}", json={"fields": {"family_name": "Lindqvist", "german_level": "B1",
                                                        "housing_need": None}}, headers=ki))
    # A consent given later to the Jobcenter for health data does not reach into the package.
    ok(client.post(f"/persons/{pid}/consents", headers=ki, json=FORM | {
        "recipients": [{"organisation_id": world.organisations["ennetal_jobcenter"]}],
        "categories": ["health"], "purpose": "basic_income", "explicit_special": True}), 201)
    clock.advance(hours=2)

    after = ok(client.get(f"/handovers/{h['id']}", headers=jc))["package"]
    assert after == before
    assert after["values"]["family_name"] == "Qarahi-Lindqvist"
    assert after["values"]["german_level"] == "A2"
    assert after["values"]["housing_need"] == RECORD["housing_need"]
    assert "health_notes" not in after["values"] and "health_notes" not in after["fields"]
    # The person record itself moved on.
    now = ok(client.get(f"/persons/{pid}", headers=jc))
    assert now["fields"]["family_name"] == "Lindqvist" and "housing_need" not in now["fields"]


def test_consent_withdrawn_after_the_request_closes_the_package(client, auth, world, clock):
    ki = auth(*KI)
    dpo = auth("ennetal_ki", "dpo", user="dpo-edge")
    person = register(client, ki, world)
    pid = person["id"]
    cid = started(client, ki, person)["id"]
    consent = ok(client.post(f"/persons/{pid}/consents", headers=ki, json=FORM | {
        "recipients": [{"organisation_id": world.organisations["ennetal_schulamt"]}],
        "categories": ["family"], "purpose": "schooling"}), 201)
    h = ok(handover(client, ki, cid, kind="step", step_key="school_place"), 201)
    assert h["package"]["legal_bases"]["children"] == f"consent:{consent['id']}"
    clock.advance(hours=1)
    ok(client.post(f"/consents/{consent['id']}/withdraw", json={}, headers=ki))
    clock.advance(hours=1)

    schulamt = auth("ennetal_schulamt", "clerk", user="clerk-sa")
    # The person record already withholds the family data from the Schulamt ...
    assert "children" not in ok(client.get(f"/persons/{pid}", headers=schulamt))["fields"]
    # ... the first look at the package must too, and no read may cite the withdrawn consent.
    seen = ok(client.get(f"/handovers/{h['id']}", headers=schulamt))
    assert "children" not in (seen["package"]["values"] or {})
    assert "marital_status" not in (seen["package"]["values"] or {})
    reads = [r for r in audit_rows(client, dpo, person_id=pid, user="clerk-sa")
             if r["subtype"] == "handover.package.read"]
    assert reads and f"consent:{consent['id']}" not in reads[0]["legal_bases"].values()


def test_case_management_sees_the_handover_but_not_the_package(client, auth, world):
    """The Sozialamt hands the benefits of a KI-managed chain to the Jobcenter."""
    ki = auth(*KI, user="cm-edge")
    dpo = auth("ennetal_ki", "dpo", user="dpo-edge")
    person = register(client, ki, world)
    pid = person["id"]
    cid = started(client, ki, person)["id"]
    soz = rkw_ready(client, auth, cid)
    h = ok(handover(client, soz, cid, **RKW), 201)
    assert h["case_management_organisation_id"] == world.organisations["ennetal_ki"]

    seen = ok(client.get(f"/handovers/{h['id']}", headers=ki))
    assert seen["state"] == "requested" and seen["allowed_actions"] == []
    assert seen["package"]["fields"] == h["package"]["fields"]  # which fields, for oversight
    assert seen["package"]["values"] is None
    text_seen = json.dumps(seen, ensure_ascii=False)
    for f, v in TEXT_VALUES.items():
        assert v not in text_seen, f
    # The case management may act on nothing.
    problem(respond(client, ki, h["id"], "acknowledge"), 403, "wrong-organisation")
    problem(respond(client, ki, h["id"], "withdraw"), 403, "wrong-organisation")

    # Its look is audited as a read of the handover, naming no fields.
    rows = [r for r in audit_rows(client, dpo, person_id=pid, user="cm-edge") if r["entity_id"] == h["id"]]
    assert [r["subtype"] for r in rows] == ["handover.read"]
    assert rows[0]["fields"] == [] and rows[0]["legal_bases"] == {}


def test_every_look_at_the_package_is_audited(client, auth, world, clock):
    ki = auth(*KI)
    dpo = auth("ennetal_ki", "dpo", user="dpo-edge")
    person = register(client, ki, world)
    pid = person["id"]
    cid = started(client, ki, person)["id"]
    h = ok(handover(client, ki, cid, kind="step", step_key="health_first_doctor"), 201)
    ga = auth("ennetal_gesundheitsamt", "clerk", user="clerk-ga")
    fields = sorted(h["package"]["fields"])

    def package_reads() -> list[dict[str, Any]]:
        return [r for r in audit_rows(client, dpo, person_id=pid, user="clerk-ga")
                if r["subtype"] == "handover.package.read"]

    assert package_reads() == []
    # Listing the inbox shows no data and is no read of the package.
    box(client, ga)
    assert package_reads() == []
    for n in (1, 2, 3):
        clock.advance(minutes=10)
        ok(client.get(f"/handovers/{h['id']}", headers=ga))
        rows = package_reads()
        assert len(rows) == n
    latest = rows[0]
    assert latest["entity_type"] == "handover" and latest["entity_id"] == h["id"]
    assert latest["agent_organisation_id"] == world.organisations["ennetal_gesundheitsamt"]
    assert latest["action"] == "R" and latest["outcome"] == "success"
    assert latest["fields"] == fields and "health_notes" in latest["fields"]
    assert latest["legal_bases"] == {f: "statute:gesundheitsamt_health" for f in fields}
    assert latest["purpose"] == "health_protection"
    # The audit trail names fields, never their values.
    trail = json.dumps(audit_rows(client, dpo, person_id=pid), ensure_ascii=False)
    for f, v in TEXT_VALUES.items():
        assert v not in trail, f


def test_the_sender_sees_no_more_than_it_may_itself_read(client, auth, world):
    """The Sozialamt (AsylbLG: no education or language data) sends the Rechtskreiswechsel; the
    Jobcenter's package carries education and language. The Sozialamt may not read them through
    the handover any more than through the person record."""
    ki = auth(*KI)
    person = register(client, ki, world)
    cid = started(client, ki, person)["id"]
    soz = rkw_ready(client, auth, cid)
    own = ok(client.get(f"/persons/{person['id']}", headers=soz))
    assert "vocational_qualification" not in own["fields"]
    h = ok(handover(client, soz, cid, **RKW), 201)
    assert "vocational_qualification" in h["package"]["fields"]  # the Jobcenter's by statute
    for shown in (h, ok(client.get(f"/handovers/{h['id']}", headers=soz))):
        values = shown["package"]["values"] or {}
        assert set(values) <= set(own["fields"]), set(values) - set(own["fields"])


def test_inbox_items_carry_no_personal_values(client, auth, world):
    ki = auth(*KI)
    person = register(client, ki, world)
    cid = started(client, ki, person)["id"]
    soz = rkw_ready(client, auth, cid)
    ok(handover(client, soz, cid, **RKW), 201)
    ok(handover(client, ki, cid, kind="step", step_key="residence_permit"), 201)
    pages = [
        client.get("/handovers/incoming", headers=auth(*JC)),
        client.get("/handovers/incoming", headers=auth(*ABH)),
        client.get("/handovers/outgoing", headers=ki),
        client.get("/handovers/outgoing", headers=soz),
    ]
    for resp in pages:
        page = ok(resp)
        assert page["items"]
        for item in page["items"]:
            assert "package" not in item and "values" not in item
        raw = resp.text
        for v in TEXT_VALUES.values():
            assert v not in raw and json.dumps(v)[1:-1] not in raw, v
        assert RECORD["birth_date"] not in raw


# --- what closing and relocating do to waiting handovers -----------------------------------------


def test_closing_a_chain_withdraws_its_waiting_handovers(client, auth, world, clock):
    ki = auth(*KI, user="cm-closer")
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    cid = started(client, ki, person)["id"]
    soz = rkw_ready(client, auth, cid)
    rkw = ok(handover(client, soz, cid, **RKW), 201)
    step_h = ok(handover(client, ki, cid, kind="step", step_key="residence_permit"), 201)
    done = ok(handover(client, ki, cid, kind="step", step_key="school_place"), 201)
    ok(respond(client, auth("ennetal_schulamt", "clerk"), done["id"], "acknowledge"))
    abh, jc = auth(*ABH), auth(*JC)
    assert box(client, abh)["counts"]["requested"] == 1

    clock.advance(days=1)
    ok(client.post(f"/chains/{cid}/close", json={"reason": "moved_away", "note": "nach Hagenau"}, headers=ki))

    for h, receiver in ((rkw, jc), (step_h, abh)):
        seen = ok(client.get(f"/handovers/{h['id']}", headers=receiver))
        assert seen["state"] == "withdrawn"
        assert "chain closed" in seen["response_reason"] and "moved_away" in seen["response_reason"]
        assert seen["allowed_actions"] == [] and seen["version"] == 2
        assert seen["responded_at"] is not None
        last = seen["events"][-1]
        assert last["action"] == "withdraw" and last["to_state"] == "withdrawn"
        assert last["actor_user"] == "cm-closer"
        problem(respond(client, receiver, h["id"], "acknowledge"), 409, "handover-not-pending")
        page = box(client, receiver)
        assert page["items"] == [] and page["counts"]["requested"] == 0
        assert page["counts"]["withdrawn"] == 1
        assert ids(box(client, receiver, state="withdrawn")) == [h["id"]]
    problem(respond(client, soz, rkw["id"], "withdraw"), 409, "handover-not-pending")
    # A handover decided before the closure keeps its decision.
    assert ok(client.get(f"/handovers/{done['id']}", headers=ki))["state"] == "acknowledged"
    out = box(client, ki, "outgoing", state="withdrawn")
    assert sorted(ids(out)) == sorted([rkw["id"], step_h["id"]])
    assert out["counts"]["withdrawn"] == 2 and out["counts"]["acknowledged"] == 1


def _relocate_hattenberg_to_wittmar(client, auth, world):
    """A person in Hattenberg, case managed by the Kreis KI, with waiting handovers to the town's
    Sozialamt and to the Kreis ABH, moves to Wittmar (which has its own integration office)."""
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["hattenberg"])
    cid = started(client, ki, person)["id"]
    to_town = ok(handover(client, ki, cid, kind="step", step_key="accommodation"), 201)
    assert to_town["receiver"]["id"] == world.organisations["hattenberg_sozialamt"]
    to_kreis = ok(handover(client, ki, cid, kind="step", step_key="residence_permit"), 201)
    assert to_kreis["receiver"]["id"] == world.organisations["ennetal_abh"]
    move = ok(handover(client, ki, cid, kind="relocation", to_jurisdiction_id=world.jurisdictions["wittmar"]), 201)
    new_cm = auth("wittmar_ki", "case_manager", user="cm-wittmar")
    assert ids(box(client, new_cm)) == [move["id"]]
    ok(respond(client, new_cm, move["id"], "acknowledge"))
    return cid, to_town, to_kreis, new_cm


def test_relocation_withdraws_handovers_to_offices_of_the_old_town(client, auth, world):
    cid, to_town, to_kreis, new_cm = _relocate_hattenberg_to_wittmar(client, auth, world)
    ki = auth(*KI)
    old_soz = auth("hattenberg_sozialamt", "clerk")

    gone = ok(client.get(f"/handovers/{to_town['id']}", headers=old_soz))
    assert gone["state"] == "withdrawn"
    assert "moved" in gone["response_reason"] and "Wittmar" in gone["response_reason"]
    assert gone["events"][-1]["action"] == "withdraw"
    page = box(client, old_soz)
    assert page["items"] == [] and page["counts"]["requested"] == 0 and page["counts"]["withdrawn"] == 1
    problem(respond(client, old_soz, to_town["id"], "acknowledge"), 409, "handover-not-pending")

    # The Kreis ABH serves Wittmar too: its handover stays and can be acknowledged.
    abh = auth(*ABH)
    kept = ok(client.get(f"/handovers/{to_kreis['id']}", headers=abh))
    assert kept["state"] == "requested" and kept["version"] == 1
    assert ids(box(client, abh)) == [to_kreis["id"]]

    # The chain now belongs to Wittmar's office; the Kreis KI reads only its history up to the
    # move, and acts no more.
    chain = ok(client.get(f"/chains/{cid}", headers=new_cm))
    assert chain["lead_jurisdiction_id"] == world.jurisdictions["wittmar"]
    assert chain["case_management_organisation_id"] == world.organisations["wittmar_ki"]
    old = ok(client.get(f"/chains/{cid}", headers=ki))
    assert old["access"] == "former" and old["lead_jurisdiction_id"] == world.jurisdictions["hattenberg"]
    problem(handover(client, ki, cid, kind="step", step_key="registration"), 403, "involvement-ended")
    # The Sozialamt of the new town is in; the old town's reads only its own part.
    assert ok(client.get(f"/chains/{cid}", headers=auth(*SOZ)))["access"] == "current"
    assert ok(client.get(f"/chains/{cid}", headers=old_soz))["access"] == "former"
    problem(client.get(f"/chains/{cid}", headers=auth("gevelstein_sozialamt", "clerk")), 404, "not-found")
    # A new step handover goes to the new town's office.
    again = ok(handover(client, new_cm, cid, kind="step", step_key="accommodation"), 201)
    assert again["receiver"]["id"] == world.organisations["wittmar_sozialamt"]
    ok(respond(client, abh, to_kreis["id"], "acknowledge"))


def test_new_case_management_sees_the_kept_handovers(client, auth, world):
    cid, _, to_kreis, new_cm = _relocate_hattenberg_to_wittmar(client, auth, world)
    out = box(client, new_cm, "outgoing", chain_id=cid)
    assert to_kreis["id"] in ids(out)
    assert ok(client.get(f"/handovers/{to_kreis['id']}", headers=new_cm))["state"] == "requested"


# --- inboxes ------------------------------------------------------------------------------------


def test_inbox_filters_order_and_counts(client, auth, world, clock):
    ki = auth(*KI)
    abh = auth(*ABH)
    chains, hs = [], []
    for _ in range(5):
        person = new_person(client, ki, world.jurisdictions["wittmar"])
        chains.append(started(client, ki, person)["id"])
        hs.append(ok(handover(client, ki, chains[-1], kind="step", step_key="residence_permit"), 201)["id"])
        clock.advance(minutes=30)
    # Decide them in an order that differs from the order of the requests.
    for i in (2, 0, 4):
        clock.advance(hours=1)
        ok(respond(client, abh, hs[i], "acknowledge"))
    clock.advance(hours=1)
    ok(respond(client, abh, hs[1], "reject", reason="Person nicht bekannt"))
    clock.advance(hours=1)
    ok(respond(client, ki, hs[3], "withdraw"))
    clock.advance(hours=1)
    waiting = ok(handover(client, ki, chains[1], kind="step", step_key="residence_permit"), 201)["id"]

    expected = {"requested": 1, "escalated": 0, "overdue": 0, "acknowledged": 3, "rejected": 1,
                "withdrawn": 1, "decided_window_days": 30}
    for headers, which in ((abh, "incoming"), (ki, "outgoing")):
        assert ids(box(client, headers, which, state="acknowledged")) == [hs[4], hs[0], hs[2]]
        assert ids(box(client, headers, which, state="rejected")) == [hs[1]]
        assert ids(box(client, headers, which, state="withdrawn")) == [hs[3]]
        assert ids(box(client, headers, which)) == [waiting]
        assert ids(box(client, headers, which, state="requested")) == [waiting]
        assert ids(box(client, headers, which, state="escalated")) == []
        for state in ("acknowledged", "rejected", "withdrawn", "pending"):
            assert box(client, headers, which, state=state)["counts"] == expected
    # Newest decided first, page by page.
    first = box(client, abh, state="acknowledged", limit=2)
    assert ids(first) == [hs[4], hs[0]] and first["next_cursor"]
    rest = box(client, abh, state="acknowledged", limit=2, cursor=first["next_cursor"])
    assert ids(rest) == [hs[2]] and rest["next_cursor"] is None
    first = box(client, ki, "outgoing", state="acknowledged", limit=1)
    second = box(client, ki, "outgoing", state="acknowledged", limit=1, cursor=first["next_cursor"])
    third = box(client, ki, "outgoing", state="acknowledged", limit=1, cursor=second["next_cursor"])
    assert ids(first) + ids(second) + ids(third) == [hs[4], hs[0], hs[2]]
    assert third["next_cursor"] is None

    # Kind and chain filters.
    assert ids(box(client, abh, kind="rechtskreiswechsel", state="acknowledged")) == []
    assert ids(box(client, abh, kind="step", state="acknowledged")) == [hs[4], hs[0], hs[2]]
    assert ids(box(client, abh, kind="relocation")) == []
    assert ids(box(client, abh, chain_id=chains[0], state="acknowledged")) == [hs[0]]
    assert ids(box(client, abh, chain_id=chains[0])) == []
    assert ids(box(client, abh, chain_id=chains[1])) == [waiting]
    assert ids(box(client, abh, chain_id=chains[1], state="rejected")) == [hs[1]]
    assert ids(box(client, abh, chain_id=MISSING)) == []
    # Overdue: not yet; after the deadline the waiting one is.
    assert ids(box(client, abh, overdue="false")) == [waiting]
    assert ids(box(client, abh, overdue="true")) == []
    clock.advance(days=10)
    assert ids(box(client, abh, overdue="true")) == [waiting]
    assert ids(box(client, abh, overdue="false")) == []
    page = box(client, abh)
    assert page["items"][0]["overdue"] is True and page["counts"]["overdue"] == 1
    # Decided handovers are never overdue.
    assert ids(box(client, abh, state="acknowledged", overdue="true")) == []
    # Other organisations see none of it.
    assert box(client, auth(*JC))["counts"] == expected | {"requested": 0, "acknowledged": 0,
                                                           "rejected": 0, "withdrawn": 0}
    assert ids(box(client, abh, "outgoing", state="acknowledged")) == []


def test_not_overdue_filter_keeps_decided_handovers(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    cid = started(client, ki, person)["id"]
    h = ok(handover(client, ki, cid, kind="step", step_key="residence_permit"), 201)
    abh = auth(*ABH)
    ok(respond(client, abh, h["id"], "acknowledge"))
    listed = box(client, abh, state="acknowledged")
    assert [i["overdue"] for i in listed["items"]] == [False]
    assert ids(box(client, abh, state="acknowledged", overdue="false")) == [h["id"]]


@pytest.mark.parametrize("params", [
    {"cursor": "garbage"},
    {"cursor": "!!!"},
    {"cursor": b64json({"not": "a cursor"})},
    {"cursor": b64json(["2026-03-02T09:00:00", MISSING])},
    {"cursor": b64json(["2026-03-02T09:00:00+00:00", 5])},
    {"cursor": "x" * 201},
    {"limit": 0},
    {"limit": 201},
    {"limit": "many"},
    {"state": "open"},
    {"kind": "transfer"},
    {"overdue": "maybe"},
    {"chain_id": "not-a-uuid"},
], ids=["garbage", "not-base64", "object", "naive-date", "int-id", "too-long", "limit-0", "limit-201",
        "limit-text", "state", "kind", "overdue", "chain-id"])
def test_bad_inbox_queries(client, auth, params):
    for which in ("incoming", "outgoing"):
        body = problem(client.get(f"/handovers/{which}", params=params, headers=auth(*ABH)), 422,
                       "validation-error")
        assert body["errors"][0]["field"] == f"query.{next(iter(params))}", body


def test_limit_bounds_are_served(client, auth, world):
    ki = auth(*KI)
    for limit in (1, 200):
        page = box(client, ki, "outgoing", limit=limit)
        assert page["items"] == [] and page["next_cursor"] is None


def test_outgoing_box_of_the_case_management(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    cid = started(client, ki, person)["id"]
    soz = rkw_ready(client, auth, cid)
    rkw = ok(handover(client, soz, cid, **RKW), 201)
    own = ok(handover(client, ki, cid, kind="step", step_key="residence_permit"), 201)

    out = box(client, ki, "outgoing")
    # The Sozialamt's handover on the KI's chain shows too; the KI's own shows once although the
    # KI is both its sender and the chain's case management.
    assert sorted(ids(out)) == sorted([rkw["id"], own["id"]])
    assert len(ids(out)) == len(set(ids(out)))
    assert out["counts"]["requested"] == 2
    item = {i["id"]: i for i in out["items"]}[rkw["id"]]
    assert item["sender"]["id"] == world.organisations["wittmar_sozialamt"] and item["allowed_actions"] == []
    assert ids(box(client, ki, "outgoing", kind="rechtskreiswechsel")) == [rkw["id"]]
    # Paging through one at a time yields each once.
    first = box(client, ki, "outgoing", limit=1)
    second = box(client, ki, "outgoing", limit=1, cursor=first["next_cursor"])
    assert sorted(ids(first) + ids(second)) == sorted([rkw["id"], own["id"]])
    assert second["next_cursor"] is None

    # The Sozialamt sees only what it sent; the Jobcenter receives the Rechtskreiswechsel only.
    assert ids(box(client, soz, "outgoing")) == [rkw["id"]]
    assert box(client, soz, "outgoing")["counts"]["requested"] == 1
    assert ids(box(client, auth(*JC))) == [rkw["id"]]
    assert ids(box(client, auth(*JC), "outgoing")) == []
    assert ids(box(client, ki)) == []

    # Once decided, both move to the decided views of the case management, still once each.
    ok(respond(client, auth(*JC), rkw["id"], "acknowledge"))
    ok(respond(client, ki, own["id"], "withdraw"))
    assert ids(box(client, ki, "outgoing")) == []
    assert ids(box(client, ki, "outgoing", state="acknowledged")) == [rkw["id"]]
    assert ids(box(client, ki, "outgoing", state="withdrawn")) == [own["id"]]
    counts = box(client, ki, "outgoing")["counts"]
    assert (counts["requested"], counts["acknowledged"], counts["withdrawn"]) == (0, 1, 1)

