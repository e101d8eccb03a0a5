"""Data protection as the users of the HTTP API notice it: which fields each organisation sees of a
person (and on which legal basis), consent and its withdrawal, refused writes, the look-up of a
person, the record scope, data-exchange agreements, the audit trail and the record of processing.

Runs against the PostgreSQL test database of ``conftest.py`` with the synthetic Kreis Ennetal; the
clock is a :class:`FakeClock` that tests move by hand. Names and data are invented.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from http_helpers import ok, problem, ts

# --- the person -----------------------------------------------------------------------------------

IDENTITY = {
    "family_name": "Haddad-Weiß",
    "given_names": "Amira Léa",
    "birth_date": "1991-04-17",
}
CONTACT = {
    "address": "Lindenweg 7, 58300 Wittmar",
    "phone": "+49 2331 555019",
}
RESIDENCE = {
    "residence_status": "protection_granted",
    "bleibeperspektive": "good",
    "arrival_date": "2025-09-30",
}
BENEFITS = {"benefit_regime": "asylblg", "benefit_case_number": "LA-7781-Q"}
EDUCATION = {"school_years": 12, "vocational_qualification": "Zahntechnikerin (Abschluss Homs)"}
LANGUAGE = {"german_level": "A2", "other_languages": "Arabisch, Kurmandschi"}
FAMILY = {"marital_status": "married", "children": 2}
HOUSING = {"housing_situation": "municipal_shelter"}
CASE_NOTES = {"case_notes": "Vertraulich: Ehemann noch in Idlib, Familiennachzug beantragt"}
HEALTH = {"psychosocial_support": True, "health_notes": "Belastungsreaktion, Termin PSZ Zimtgasse"}

BASE_FIELDS = (IDENTITY | CONTACT | RESIDENCE | BENEFITS | EDUCATION | LANGUAGE | FAMILY | HOUSING
               | CASE_NOTES)
# Values that must never appear in a response (or audit row) that does not disclose them.
SECRET_TEXT = {
    "case_notes": CASE_NOTES["case_notes"],
    "health_notes": HEALTH["health_notes"],
    "vocational_qualification": EDUCATION["vocational_qualification"],
    "benefit_case_number": BENEFITS["benefit_case_number"],
    "other_languages": LANGUAGE["other_languages"],
}
INTAKE_CATEGORIES = ["residence", "benefits", "education", "language", "family", "housing",
                     "case_notes", "feedback", "own_goals"]
CONSENT = {
    "consequences_explained": True,
    "evidence_reference": "EW-2026-0042",
    "language": "Arabisch",
    "interpreter_used": True,
}
ALL_CATEGORIES = {"identity", "contact", "residence", "benefits", "education", "language", "family",
                  "housing", "health", "case_notes", "feedback", "own_goals"}


# --- helpers ------------------------------------------------------------------------------------






def iso(value: datetime) -> str:
    return value.isoformat()




def intake_consent(world, health: bool = False) -> dict[str, Any]:
    """The intake consent to the integration centres serving Wittmar, for case management."""
    categories = INTAKE_CATEGORIES + (["health"] if health else [])
    return CONSENT | {
        "recipients": [{"organisation_kind": "kommunales_integrationszentrum",
                        "jurisdiction_id": world.jurisdictions["wittmar"]}],
        "categories": categories,
        "purpose": "case_management",
        "explicit_special": health,
    }


def register(client, cm, world, health: bool = False, **extra: Any) -> dict[str, Any]:
    fields = BASE_FIELDS | (HEALTH if health else {}) | extra
    body = {"lead_jurisdiction_id": world.jurisdictions["wittmar"], "fields": fields,
            "consents": [intake_consent(world, health)]}
    return ok(client.post("/persons", json=body, headers=cm), 201)


def start_chain(client, cm, person: dict[str, Any], template: str = "refugee_recognised") -> dict[str, Any]:
    return ok(client.post("/chains", json={"person_id": person["id"], "template_key": template},
                          headers=cm), 201)


def read(client, headers, person_id: str, **params: Any):
    return client.get(f"/persons/{person_id}", params=params, headers=headers)


def consent_id_of(record: dict[str, Any], field: str) -> str:
    basis = record["legal_bases"][field]
    assert basis.startswith("consent:"), basis
    return basis.removeprefix("consent:")


def catalogue(policies) -> dict[str, str]:
    """field -> category, from the data catalogue."""
    return {name: spec.category for name, spec in policies.data.fields.items()}


def assert_view(record: dict[str, Any], policies, stored: dict[str, Any],
                bases: dict[str, str], text: str) -> None:
    """``bases`` maps each category the caller may see to the expected basis (exact, or a prefix
    ending in ':'). Every other catalogue field is listed as redacted, without its value."""
    cats = catalogue(policies)
    redacted = {r["field"]: r for r in record["redacted"]}
    for name, category in cats.items():
        if category in bases:
            assert name not in redacted, (name, redacted.get(name))
            if name in stored and stored[name] is not None:
                assert record["fields"][name] == stored[name], name
                expected = bases[category]
                if expected.endswith(":"):
                    assert record["legal_bases"][name].startswith(expected), (name, record["legal_bases"][name])
                else:
                    assert record["legal_bases"][name] == expected, name
            else:
                assert name not in record["fields"], name
        else:
            assert name in redacted, name
            assert redacted[name]["category"] == category
            assert redacted[name]["reason"]
            assert set(redacted[name]) == {"field", "category", "reason"}
            assert name not in record["fields"], name
            assert name not in record["legal_bases"], name
            if isinstance(stored.get(name), str):
                assert stored[name] not in text, name
    # Every field shown has a basis, and nothing is both shown and redacted.
    assert set(record["legal_bases"]) == set(record["fields"])
    assert not set(record["fields"]) & set(redacted)
    assert len(record["redacted"]) == len(redacted)


def audit_items(client, headers, **params: Any) -> list[dict[str, Any]]:
    page = ok(client.get("/audit", params={"limit": 1000, **params}, headers=headers))
    assert page["next_cursor"] is None
    return page["items"]


@pytest.fixture
def cm(auth) -> dict[str, str]:
    return auth("ennetal_ki", "case_manager", user="cm-amal")


@pytest.fixture
def dpo(auth) -> dict[str, str]:
    return auth("ennetal_ki", "dpo", user="dpo-ennetal")


@pytest.fixture
def clerk(auth):
    cache: dict[str, dict[str, str]] = {}

    def headers(org: str) -> dict[str, str]:
        if org not in cache:
            cache[org] = auth(org, "clerk", user=f"clerk-{org}")
        return cache[org]

    return headers


KIND_OF = {"ennetal_abh": "auslaenderbehoerde", "ennetal_gesundheitsamt": "gesundheitsamt",
           "ennetal_jobcenter": "jobcenter", "ennetal_schulamt": "schulamt",
           "ennetal_agentur": "agentur_fuer_arbeit"}


@pytest.fixture
def involved(client, cm, clerk, world):
    """``involved("ennetal_abh", person)`` -> the clerk's headers, after the case management has
    handed the office a step of the person's chain: while that handover waits for its answer, the
    office is involved with the person (and only then does it see anything of them)."""
    done: set[tuple[str, str]] = set()

    def headers(org: str, person: dict[str, Any]) -> dict[str, str]:
        if (org, person["id"]) not in done:
            page = ok(client.get("/chains", params={"person_id": person["id"]}, headers=cm))
            steps = [(c["id"], s["key"]) for item in page["items"]
                     for c in [ok(client.get(f"/chains/{item['id']}", headers=cm))]
                     for s in c["steps"] if s["owner"] == KIND_OF[org]
                     and s["state"] not in ("completed", "skipped", "cancelled")]
            chain_id, key = steps[0]
            ok(client.post(f"/chains/{chain_id}/handovers", json={
                "kind": "step", "step_key": key, "receiver_organisation_id": world.organisations[org]},
                headers=cm), 201)
            done.add((org, person["id"]))
        return clerk(org)

    return headers


@pytest.fixture
def person(client, cm, world) -> dict[str, Any]:
    """A person in Wittmar with a running refugee_recognised chain (no health data)."""
    p = register(client, cm, world)
    start_chain(client, cm, p)
    return p


@pytest.fixture
def health_person(client, cm, world) -> dict[str, Any]:
    """As ``person``, with health data and an explicit consent covering it."""
    p = register(client, cm, world, health=True)
    start_chain(client, cm, p)
    return p


# --- redaction by organisation and consent --------------------------------------------------------


def test_case_manager_sees_what_consent_and_statute_allow(client, cm, world, policies, person):
    resp = read(client, cm, person["id"])
    record = ok(resp)
    assert record["purpose"] == "case_management"
    consent = consent_id_of(record, "residence_status")
    bases = {"identity": "statute:case_management_intake", "contact": "statute:case_management_intake"}
    bases |= {c: f"consent:{consent}" for c in INTAKE_CATEGORIES}
    assert_view(record, policies, BASE_FIELDS, bases, resp.text)
    # Health is not covered by this consent: redacted with the reason, and nothing of it is shown.
    health = {r["field"]: r for r in record["redacted"] if r["category"] == "health"}
    assert set(health) == {"health_notes", "disability", "psychosocial_support"}
    assert {r["reason"] for r in health.values()} == {"no legal basis for health (read, purpose case_management)"}
    assert [r["field"] for r in record["redacted"]] == ["health_notes", "disability", "psychosocial_support"]
    # The consent history names this consent.
    history = ok(client.get(f"/persons/{person['id']}/consents", headers=cm))
    assert [c["id"] for c in history] == [consent]
    assert history[0]["status"] == "active"
    assert history[0]["categories"] == sorted(INTAKE_CATEGORIES)


def test_health_needs_an_explicit_consent_and_the_registration_is_refused_without(client, cm, dpo, world):
    body = {"lead_jurisdiction_id": world.jurisdictions["wittmar"], "fields": BASE_FIELDS | HEALTH,
            "consents": [intake_consent(world)]}
    resp = client.post("/persons", json=body, headers=cm)
    err = problem(resp, 403, "no-legal-basis")
    assert sorted((f["field"], f["category"]) for f in err["fields"]) == [
        ("health_notes", "health"), ("psychosocial_support", "health")]
    assert all(f["reason"] == "no legal basis for health (write, purpose case_management)"
               for f in err["fields"])
    assert HEALTH["health_notes"] not in resp.text
    # Nothing of the refused registration was stored: the person cannot be found.
    search = {k: IDENTITY[k] for k in ("family_name", "given_names", "birth_date")}
    assert ok(client.post("/persons/search", json=search, headers=cm)) == []
    # ... but the refusal is audited, once.
    denied = [e for e in audit_items(client, dpo, user="cm-amal", outcome="denied")
              if e["subtype"] == "person.create"]
    assert len(denied) == 1
    assert sorted(denied[0]["fields"]) == ["health_notes", "psychosocial_support"]


def test_explicit_health_consent_opens_health_to_the_case_manager(client, cm, policies, health_person):
    resp = read(client, cm, health_person["id"])
    record = ok(resp)
    consent = consent_id_of(record, "psychosocial_support")
    assert record["legal_bases"]["health_notes"] == f"consent:{consent}"
    bases = {"identity": "statute:case_management_intake", "contact": "statute:case_management_intake"}
    bases |= {c: f"consent:{consent}" for c in [*INTAKE_CATEGORIES, "health"]}
    assert_view(record, policies, BASE_FIELDS | HEALTH, bases, resp.text)
    assert record["redacted"] == []
    assert record["fields"]["psychosocial_support"] is True


def test_abh_sees_residence_data_by_statute_only(client, involved, clerk, policies, health_person):
    resp = read(client, involved("ennetal_abh", health_person), health_person["id"])
    record = ok(resp)
    assert record["purpose"] == "residence_procedure"
    basis = "statute:abh_residence"
    assert_view(record, policies, BASE_FIELDS | HEALTH,
                {"identity": basis, "contact": basis, "residence": basis, "family": basis}, resp.text)
    redacted = {r["field"]: r for r in record["redacted"]}
    for name in ("case_notes", "health_notes", "psychosocial_support", "school_years",
                 "vocational_qualification", "benefit_regime", "german_level"):
        assert name in redacted
    assert redacted["case_notes"] == {
        "field": "case_notes", "category": "case_notes",
        "reason": "no legal basis for case_notes (read, purpose residence_procedure)"}
    for secret in SECRET_TEXT.values():
        assert secret not in resp.text
    assert "psychosocial_support" not in record["fields"]
    assert record["fields"]["family_name"] == "Haddad-Weiß"
    assert record["fields"]["marital_status"] == "married"


def test_sozialamt_sees_benefits(client, clerk, policies, health_person):
    resp = read(client, clerk("wittmar_sozialamt"), health_person["id"])
    record = ok(resp)
    assert record["purpose"] == "asylum_benefits"
    basis = "statute:sozialamt_asylblg"
    assert_view(record, policies, BASE_FIELDS | HEALTH,
                {c: basis for c in ("identity", "contact", "residence", "benefits", "family", "housing")},
                resp.text)
    assert record["fields"]["benefit_regime"] == "asylblg"
    assert record["fields"]["benefit_case_number"] == BENEFITS["benefit_case_number"]
    assert CASE_NOTES["case_notes"] not in resp.text and HEALTH["health_notes"] not in resp.text


def test_gesundheitsamt_sees_health_by_statute(client, involved, clerk, policies, health_person, person):
    resp = read(client, involved("ennetal_gesundheitsamt", health_person), health_person["id"])
    record = ok(resp)
    assert record["purpose"] == "health_protection"
    basis = "statute:gesundheitsamt_health"
    assert_view(record, policies, BASE_FIELDS | HEALTH,
                {"identity": basis, "contact": basis, "health": basis}, resp.text)
    assert record["fields"]["health_notes"] == HEALTH["health_notes"]
    assert record["fields"]["psychosocial_support"] is True
    assert record["legal_bases"]["psychosocial_support"] == basis
    # Its statute does not depend on the consent: the person without a health consent is read the
    # same way (health empty, but not redacted); case notes stay closed.
    other = ok(read(client, involved("ennetal_gesundheitsamt", person), person["id"]))
    assert {r["category"] for r in other["redacted"]} == ALL_CATEGORIES - {"identity", "contact", "health"}
    # With another purpose it has no statute: everything is redacted.
    resp = read(client, clerk("ennetal_gesundheitsamt"), health_person["id"], purpose="schooling")
    record = ok(resp)
    assert record["fields"] == {} and record["legal_bases"] == {}
    assert {r["category"] for r in record["redacted"]} == ALL_CATEGORIES
    assert HEALTH["health_notes"] not in resp.text


def test_a_purpose_without_statute_shows_only_what_consent_allows(client, involved, cm, clerk, world, policies, person):
    jobcenter = involved("ennetal_jobcenter", person)
    resp = read(client, jobcenter, person["id"], purpose="residence_procedure")
    record = ok(resp)
    assert record["purpose"] == "residence_procedure"
    assert record["fields"] == {} and record["legal_bases"] == {}
    assert {r["field"] for r in record["redacted"]} == set(policies.data.fields)
    assert all(r["reason"].startswith("no legal basis for ") for r in record["redacted"])
    for value in IDENTITY.values():
        assert value not in resp.text
    # A consent naming the Jobcenters serving Wittmar for this purpose opens just its categories.
    consent = ok(client.post(f"/persons/{person['id']}/consents", headers=cm, json=CONSENT | {
        "recipients": [{"organisation_kind": "jobcenter", "jurisdiction_id": world.jurisdictions["wittmar"]}],
        "categories": ["language"], "purpose": "residence_procedure"}), 201)
    resp = read(client, jobcenter, person["id"], purpose="residence_procedure")
    record = ok(resp)
    assert_view(record, policies, BASE_FIELDS, {"language": f"consent:{consent['id']}"}, resp.text)
    assert record["fields"] == LANGUAGE
    # The Jobcenter's own purpose uses its statute (which does not cover case notes).
    record = ok(read(client, jobcenter, person["id"]))
    assert record["purpose"] == "basic_income"
    assert record["legal_bases"]["german_level"] == "statute:jobcenter_sgb2"
    assert "case_notes" in {r["field"] for r in record["redacted"]}
    # An unknown purpose is a validation error, not an empty record.
    body = problem(read(client, jobcenter, person["id"], purpose="curiosity"), 422, "validation-error")
    assert body["errors"][0]["field"] == "purpose"


# --- roles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["steering", "admin", "moderator"])
def test_roles_without_case_access_are_refused_on_every_person_endpoint(client, auth, cm, world, person, role):
    headers = auth("ennetal_ki", role)
    pid = person["id"]
    consent = consent_id_of(ok(read(client, cm, pid)), "residence_status")
    calls = [
        ("persons.create", client.post("/persons", headers=headers, json={
            "lead_jurisdiction_id": world.jurisdictions["wittmar"], "fields": {"family_name": "X"}})),
        ("persons.read", read(client, headers, pid)),
        ("persons.write", client.patch(f"/persons/{pid}", json={"fields": {"phone": "1"}}, headers=headers)),
        ("persons.read", client.post("/persons/search", headers=headers, json={
            k: IDENTITY[k] for k in ("family_name", "given_names", "birth_date")})),
        ("consents.record", client.post(f"/persons/{pid}/consents", headers=headers,
                                        json=intake_consent(world))),
        ("consents.read", client.get(f"/persons/{pid}/consents", headers=headers)),
        ("consents.record", client.post(f"/consents/{consent}/withdraw", json={}, headers=headers)),
    ]
    for permission, resp in calls:
        body = problem(resp, 403, "forbidden")
        assert body["permission"] == permission
        assert IDENTITY["family_name"] not in resp.text
    # Nothing changed: the phone number is what it was, the consent still active.
    record = ok(read(client, cm, pid))
    assert record["fields"]["phone"] == CONTACT["phone"]
    assert [c["status"] for c in ok(client.get(f"/persons/{pid}/consents", headers=cm))] == ["active"]


def test_dpo_reads_consents_audit_and_record_but_no_person_fields(client, cm, dpo, world, person):
    pid = person["id"]
    for resp, permission in [
        (read(client, dpo, pid), "persons.read"),
        (client.patch(f"/persons/{pid}", json={"fields": {"phone": "1"}}, headers=dpo), "persons.write"),
        (client.post("/persons/search", headers=dpo, json={
            k: IDENTITY[k] for k in ("family_name", "given_names", "birth_date")}), "persons.read"),
        (client.post("/persons", json={"fields": {}}, headers=dpo), "persons.create"),
        (client.post(f"/persons/{pid}/consents", headers=dpo, json=intake_consent(world)), "consents.record"),
    ]:
        assert problem(resp, 403, "forbidden")["permission"] == permission
        assert IDENTITY["family_name"] not in resp.text
    history = ok(client.get(f"/persons/{pid}/consents", headers=dpo))
    assert len(history) == 1 and history[0]["status"] == "active"
    assert history[0]["recorded_by_user"] == "cm-amal"
    assert ok(client.get("/audit", params={"person_id": pid}, headers=dpo))["items"]
    assert ok(client.get("/record-of-processing", headers=dpo))["categories_of_personal_data"]
    assert ok(client.get("/agreements", headers=dpo)) == []
    missing = "00000000-0000-4000-8000-000000000000"
    assert problem(client.get(f"/persons/{missing}/consents", headers=dpo), 404, "not-found")["resource"] == "person"


# --- consent: withdrawal and expiry ---------------------------------------------------------------


def schulamt_consent(world, **extra: Any) -> dict[str, Any]:
    return CONSENT | {"recipients": [{"organisation_id": world.organisations["ennetal_schulamt"]}],
                      "categories": ["family", "language"], "purpose": "schooling"} | extra


def test_withdrawal_takes_effect_on_the_very_next_read(client, involved, cm, clerk, dpo, world, clock, person):
    pid = person["id"]
    schulamt = involved("ennetal_schulamt", person)
    # The refugee_recognised chain has a school_place step: the Schulamt is in the record scope.
    before = ok(read(client, schulamt, pid))
    assert before["purpose"] == "schooling"
    redacted = {r["field"]: r["reason"] for r in before["redacted"]}
    assert redacted["marital_status"] == "no legal basis for family (read, purpose schooling)"
    assert before["legal_bases"]["german_level"] == "statute:schulamt_schooling"

    clock.advance(minutes=5)
    consent = ok(client.post(f"/persons/{pid}/consents", json=schulamt_consent(world), headers=cm), 201)
    assert consent["status"] == "active"
    assert consent["recipients"] == [{"organisation_id": world.organisations["ennetal_schulamt"]}]
    assert consent["categories"] == ["family", "language"]
    clock.advance(minutes=5)
    granted = ok(read(client, schulamt, pid))
    assert granted["fields"]["marital_status"] == "married"
    assert granted["fields"]["children"] == 2
    assert granted["legal_bases"]["marital_status"] == f"consent:{consent['id']}"
    assert granted["legal_bases"]["children"] == f"consent:{consent['id']}"
    # The statute still comes first for what it covers.
    assert granted["legal_bases"]["german_level"] == "statute:schulamt_schooling"
    # Another Schulamt is not named by the consent (and has no business with the person anyway).
    problem(read(client, clerk("hagenau_schulamt"), pid), 404, "not-found")

    withdrawn = ok(client.post(f"/consents/{consent['id']}/withdraw", json={"note": "per Telefon"},
                               headers=cm))
    assert withdrawn["status"] == "withdrawn"
    assert withdrawn["withdrawn_at"] is not None
    # No clock movement: the very next read already lacks the family data.
    resp = read(client, schulamt, pid)
    after = ok(resp)
    reasons = {r["field"]: r["reason"] for r in after["redacted"]}
    assert reasons["marital_status"] == "consent withdrawn"
    assert reasons["children"] == "consent withdrawn"
    assert "marital_status" not in after["fields"] and "children" not in after["fields"]
    assert after["fields"]["german_level"] == "A2"

    again = problem(client.post(f"/consents/{consent['id']}/withdraw", json={}, headers=cm),
                    409, "consent-already-withdrawn")
    assert consent["id"] in again["detail"]
    problem(client.post("/consents/00000000-0000-4000-8000-000000000000/withdraw", json={}, headers=cm),
            404, "not-found")

    # The audit shows which basis applied at each access: before, the consent; after, nothing.
    reads = [e for e in audit_items(client, dpo, person_id=pid, user="clerk-ennetal_schulamt")
             if e["subtype"] == "person.read"]
    granted_rows = [e for e in reads if e["outcome"] == "success" and "marital_status" in e["fields"]]
    assert len(granted_rows) == 1
    assert granted_rows[0]["legal_bases"]["marital_status"] == f"consent:{consent['id']}"
    latest_denied = next(e for e in reads if e["outcome"] == "denied")
    assert "marital_status" in latest_denied["fields"]


def test_expiry_redacts_and_the_history_shows_each_status(client, involved, cm, clerk, dpo, world, clock, person):
    pid = person["id"]
    schulamt = involved("ennetal_schulamt", person)
    clock.advance(hours=1)
    until = clock.now + timedelta(days=10)
    expiring = ok(client.post(f"/persons/{pid}/consents", headers=cm,
                              json=schulamt_consent(world, valid_until=iso(until))), 201)
    assert expiring["status"] == "active"
    assert ts(expiring["valid_until"]) == until and ts(expiring["valid_from"]) == clock.now
    record = ok(read(client, schulamt, pid))
    assert record["legal_bases"]["marital_status"] == f"consent:{expiring['id']}"

    clock.advance(days=9, hours=23)
    assert ok(read(client, schulamt, pid))["fields"]["marital_status"] == "married"
    clock.advance(hours=1)  # exactly valid_until: no longer in force
    record = ok(read(client, schulamt, pid))
    assert "marital_status" not in record["fields"]
    assert {r["field"]: r["reason"] for r in record["redacted"]}["marital_status"] == "consent expired"

    clock.advance(hours=1)
    withdrawn = ok(client.post(f"/persons/{pid}/consents", json=schulamt_consent(world), headers=cm), 201)
    assert ok(read(client, schulamt, pid))["legal_bases"]["marital_status"] == f"consent:{withdrawn['id']}"
    ok(client.post(f"/consents/{withdrawn['id']}/withdraw", json={}, headers=cm))
    assert "marital_status" not in ok(read(client, schulamt, pid))["fields"]

    history = ok(client.get(f"/persons/{pid}/consents", headers=cm))
    intake = consent_id_of(ok(read(client, cm, pid)), "residence_status")
    assert [(c["id"], c["status"]) for c in history] == [  # newest first
        (withdrawn["id"], "withdrawn"), (expiring["id"], "expired"), (intake, "active")]
    assert history[0]["withdrawn_at"] is not None and history[1]["withdrawn_at"] is None
    assert ok(client.get(f"/persons/{pid}/consents", headers=dpo)) == history

    # A consent starting later is not yet in force.
    clock.advance(hours=1)
    later = ok(client.post(f"/persons/{pid}/consents", headers=cm, json=schulamt_consent(
        world, valid_from=iso(clock.now + timedelta(days=3)))), 201)
    assert later["status"] == "not_yet_valid"
    assert "marital_status" not in ok(read(client, schulamt, pid))["fields"]
    clock.advance(days=3)
    record = ok(read(client, schulamt, pid))
    assert record["legal_bases"]["marital_status"] == f"consent:{later['id']}"
    statuses = [c["status"] for c in ok(client.get(f"/persons/{pid}/consents", headers=cm))]
    assert statuses == ["active", "withdrawn", "expired", "active"]


def test_withdrawing_the_intake_consent_closes_reads_and_writes_of_the_case_manager(client, cm, person):
    pid = person["id"]
    consent = consent_id_of(ok(read(client, cm, pid)), "residence_status")
    ok(client.post(f"/consents/{consent}/withdraw", json={}, headers=cm))
    resp = read(client, cm, pid)
    record = ok(resp)
    reasons = {r["field"]: r["reason"] for r in record["redacted"]}
    for name in ("residence_status", "benefit_regime", "case_notes", "german_level", "marital_status"):
        assert reasons[name] == "consent withdrawn", name
        assert name not in record["fields"]
    assert CASE_NOTES["case_notes"] not in resp.text
    # Identity and contact rest on the programme's statute, not on the consent.
    assert record["fields"]["family_name"] == IDENTITY["family_name"]
    assert record["legal_bases"]["family_name"] == "statute:case_management_intake"
    err = problem(client.patch(f"/persons/{pid}", json={"fields": {"german_level": "B1"}}, headers=cm),
                  403, "no-legal-basis")
    assert err["fields"] == [{"field": "german_level", "category": "language", "reason": "consent withdrawn"}]


# --- writing ------------------------------------------------------------------------------------


def test_write_without_legal_basis_is_refused_and_changes_nothing(client, involved, cm, clerk, dpo, person):
    pid = person["id"]
    abh = involved("ennetal_abh", person)
    new_notes = "ABH-Vermerk: Vorsprache verpasst, Kontakt Zimmer 214"
    resp = client.patch(f"/persons/{pid}", json={"fields": {"case_notes": new_notes}}, headers=abh)
    err = problem(resp, 403, "no-legal-basis")
    assert err["fields"] == [{"field": "case_notes", "category": "case_notes",
                              "reason": "no legal basis for case_notes (write, purpose residence_procedure)"}]
    assert new_notes not in resp.text
    assert ok(read(client, cm, pid))["fields"]["case_notes"] == CASE_NOTES["case_notes"]

    # A mixed patch (one field allowed, one not) changes nothing either.
    resp = client.patch(f"/persons/{pid}", headers=abh, json={"fields": {
        "abh_file_number": "ABH-W-2026-0815", "residence_status": "third_country_permit",
        "school_years": 3}})
    err = problem(resp, 403, "no-legal-basis")
    assert [(f["field"], f["category"]) for f in err["fields"]] == [("school_years", "education")]
    assert ok(read(client, abh, pid))["fields"].get("abh_file_number") is None
    record = ok(read(client, cm, pid))
    assert record["fields"]["residence_status"] == "protection_granted"
    assert record["fields"]["school_years"] == 12
    assert "abh_file_number" not in record["fields"]

    # The case manager without a health consent cannot write health data alongside other fields.
    err = problem(client.patch(f"/persons/{pid}", headers=cm, json={"fields": {
        "german_level": "B2", "disability": True}}), 403, "no-legal-basis")
    assert [f["field"] for f in err["fields"]] == ["disability"]
    assert ok(read(client, cm, pid))["fields"]["german_level"] == "A2"

    # Exactly one denied audit row per refused write, and no success row for any of them.
    updates = [e for e in audit_items(client, dpo, person_id=pid) if e["subtype"] == "person.update"]
    assert [(e["outcome"], e["fields"]) for e in updates] == [
        ("denied", ["disability"]), ("denied", ["school_years"]), ("denied", ["case_notes"])]
    assert all(e["legal_bases"] == {} for e in updates)

    # What the ABH may write is written, on its statute.
    updated = ok(client.patch(f"/persons/{pid}", headers=abh, json={"fields": {
        "abh_file_number": "ABH-W-2026-0815", "residence_permit_valid_until": "2029-03-01"}}))
    assert updated["fields"]["abh_file_number"] == "ABH-W-2026-0815"
    assert updated["legal_bases"]["abh_file_number"] == "statute:abh_residence"
    assert CASE_NOTES["case_notes"] not in json.dumps(updated)
    record = ok(read(client, cm, pid))
    assert record["fields"]["abh_file_number"] == "ABH-W-2026-0815"
    assert record["fields"]["residence_permit_valid_until"] == "2029-03-01"


@pytest.mark.parametrize("fields, bad", [
    ({"nickname": "Mimi"}, ["fields.nickname"]),
    ({"family_name": 5}, ["fields.family_name"]),
    ({"birth_date": "1991-02-30"}, ["fields.birth_date"]),
    ({"birth_date": "17.04.1991"}, ["fields.birth_date"]),
    ({"german_level": "D1"}, ["fields.german_level"]),
    ({"school_years": "12"}, ["fields.school_years"]),
    ({"school_years": 12.5}, ["fields.school_years"]),
    ({"children": -1}, ["fields.children"]),
    ({"interpreter_needed": "yes"}, ["fields.interpreter_needed"]),
    ({"phone": "x" * 51}, ["fields.phone"]),
    ({"german_level": "B1", "nickname": "Mimi", "marital_status": "complicated"},
     ["fields.nickname", "fields.marital_status"]),
])
def test_invalid_field_values_are_422_and_change_nothing(client, cm, person, fields, bad):
    pid = person["id"]
    body = problem(client.patch(f"/persons/{pid}", json={"fields": fields}, headers=cm), 422,
                   "validation-error")
    assert sorted(e["field"] for e in body["errors"]) == sorted(bad)
    if "fields.nickname" in bad:
        assert next(e for e in body["errors"] if e["field"] == "fields.nickname")["type"] == "unknown_field"
    record = ok(read(client, cm, pid))
    assert record["fields"]["german_level"] == "A2"
    assert record["fields"]["birth_date"] == IDENTITY["birth_date"]
    assert "nickname" not in record["fields"]


def test_patch_shape_errors(client, cm, person):
    pid = person["id"]
    problem(client.patch(f"/persons/{pid}", json={"fields": {}}, headers=cm), 422, "validation-error")
    body = problem(client.patch(f"/persons/{pid}", json={"fields": {"phone": "1"}, "reason": "x"},
                                headers=cm), 422, "validation-error")
    assert "body.reason" in [e["field"] for e in body["errors"]]


def test_setting_a_field_to_null_clears_it(client, involved, cm, clerk, person):
    pid = person["id"]
    updated = ok(client.patch(f"/persons/{pid}", headers=cm, json={"fields": {
        "case_notes": None, "residence_status": None, "german_level": "B1", "phone": None}}))
    for name in ("case_notes", "residence_status", "phone"):
        assert name not in updated["fields"] and name not in updated["legal_bases"]
        assert name not in {r["field"] for r in updated["redacted"]}
    assert updated["fields"]["german_level"] == "B1"
    record = ok(read(client, cm, pid))
    assert record == updated
    assert CASE_NOTES["case_notes"] not in json.dumps(record)
    # The ABH reads the cleared residence status as absent, too.
    assert "residence_status" not in ok(read(client, involved("ennetal_abh", person), pid))["fields"]
    # Clearing something already empty is fine; setting it again works.
    ok(client.patch(f"/persons/{pid}", json={"fields": {"case_notes": None}}, headers=cm))
    again = ok(client.patch(f"/persons/{pid}", json={"fields": {"case_notes": "neu"}}, headers=cm))
    assert again["fields"]["case_notes"] == "neu"


def consent_body(world, **changes: Any) -> dict[str, Any]:
    return schulamt_consent(world) | changes


@pytest.mark.parametrize("changes, slug", [
    ({"categories": ["health", "language"], "explicit_special": False}, "invalid-consent"),
    ({"categories": ["health"]}, "invalid-consent"),
    ({"consequences_explained": False}, "invalid-consent"),
    ({"valid_from": "2026-04-01T00:00:00+00:00", "valid_until": "2026-03-15T00:00:00+00:00"}, "invalid-consent"),
    ({"valid_from": "2026-04-01T00:00:00+00:00", "valid_until": "2026-04-01T00:00:00+00:00"}, "invalid-consent"),
    ({"valid_until": "2026-03-01T00:00:00+00:00"}, "invalid-consent"),  # before now (the default start)
    ({"categories": ["religion"]}, "invalid-consent"),
    ({"purpose": "curiosity"}, "invalid-consent"),
    ({"recipients": [{"organisation_id": 999999}]}, "invalid-consent"),
    ({"recipients": [{"organisation_kind": "schulamt", "jurisdiction_id": 999999}]}, "invalid-consent"),
    ({"consequences_explained": None}, "validation-error"),
    ({"recipients": []}, "validation-error"),
    ({"recipients": [{}]}, "validation-error"),
    ({"recipients": [{"organisation_kind": "schulamt"}]}, "validation-error"),
    ({"evidence_reference": ""}, "validation-error"),
])
def test_invalid_consents_are_refused(client, cm, world, person, changes, slug):
    pid = person["id"]
    body = consent_body(world, **changes)
    if changes.get("consequences_explained", True) is None:
        del body["consequences_explained"]
    resp = client.post(f"/persons/{pid}/consents", json=body, headers=cm)
    err = problem(resp, 422, slug)
    if slug == "invalid-consent":
        assert err["problems"]
    assert len(ok(client.get(f"/persons/{pid}/consents", headers=cm))) == 1


def test_recipient_given_both_ways_is_refused(client, cm, world, person):
    pid = person["id"]
    both = {"organisation_id": world.organisations["ennetal_schulamt"], "organisation_kind": "schulamt",
            "jurisdiction_id": world.jurisdictions["wittmar"]}
    half = {"organisation_id": world.organisations["ennetal_schulamt"], "organisation_kind": "schulamt"}
    for recipient in (both, half):
        body = problem(client.post(f"/persons/{pid}/consents", headers=cm,
                                   json=schulamt_consent(world, recipients=[recipient])), 422,
                       "validation-error")
        assert body["errors"][0]["field"].startswith("body.recipients.0")
    assert len(ok(client.get(f"/persons/{pid}/consents", headers=cm))) == 1


def test_registration_with_an_invalid_intake_consent_stores_nothing(client, cm, dpo, world):
    consent = intake_consent(world) | {"consequences_explained": False}
    body = {"lead_jurisdiction_id": world.jurisdictions["wittmar"], "fields": BASE_FIELDS,
            "consents": [consent]}
    err = problem(client.post("/persons", json=body, headers=cm), 422, "invalid-consent")
    assert any("consequences" in p for p in err["problems"])
    query = {k: IDENTITY[k] for k in ("family_name", "given_names", "birth_date")}
    assert ok(client.post("/persons/search", json=query, headers=cm)) == []
    assert [e for e in audit_items(client, dpo) if e["subtype"] != "audit.search"] == []


def test_explicit_health_consent_is_accepted(client, cm, world, person):
    consent = ok(client.post(f"/persons/{person['id']}/consents", headers=cm, json=schulamt_consent(
        world, categories=["health"], explicit_special=True, purpose="case_management")), 201)
    assert consent["explicit_special"] is True and consent["categories"] == ["health"]


@pytest.mark.parametrize("field", ["valid_until", "valid_from"])
def test_consent_dates_without_time_zone_are_not_a_server_error(client, cm, world, person, field):
    """A client sending a local time without offset gets a 422 (or the time taken as UTC), never a
    500: the service compares it with its own aware clock."""
    resp = client.post(f"/persons/{person['id']}/consents", headers=cm,
                       json=schulamt_consent(world, **{field: "2026-06-01T12:00:00"}))
    assert resp.status_code in (201, 422), resp.text


@pytest.mark.parametrize("field", ["valid_from", "valid_until"])
def test_agreement_dates_without_time_zone_are_not_a_server_error(client, auth, world, clock, field):
    admin = auth("ennetal_ki", "admin")
    body = agreement(world, clock, **{field: "2026-06-01T12:00:00"})
    if field == "valid_from":
        body["valid_until"] = "2026-09-01T12:00:00+00:00"
    resp = client.post("/agreements", json=body, headers=admin)
    assert resp.status_code in (201, 422), resp.text


@pytest.mark.parametrize("param", ["from", "to"])
def test_audit_time_filter_without_time_zone_is_not_a_server_error(client, dpo, param):
    resp = client.get("/audit", params={param: "2026-03-01T00:00:00"}, headers=dpo)
    assert resp.status_code in (200, 422), resp.text


def test_consent_for_a_person_outside_the_scope(client, auth, world, person):
    hagenau_cm = auth("hagenau_ki", "case_manager")
    problem(client.post(f"/persons/{person['id']}/consents", json=schulamt_consent(world),
                        headers=hagenau_cm), 404, "not-found")
    problem(client.get(f"/persons/{person['id']}/consents", headers=hagenau_cm), 404, "not-found")


# --- search ---------------------------------------------------------------------------------------


def search(client, headers, **body: Any):
    return client.post("/persons/search", json=body, headers=headers)


def test_search_ignores_case_accents_and_spacing(client, cm, world):
    p = register(client, cm, world)
    other = register(client, cm, world, birth_date="1992-04-17")
    for family, given in [
        ("Haddad-Weiß", "Amira Léa"),
        ("  HADDAD  WEISS ", "amira   lea"),
        ("haddad weiss", "AMIRA LÉA"),
        ("Haddad-Weiss", " Amira Lea "),
    ]:
        found = ok(search(client, cm, family_name=family, given_names=given, birth_date="1991-04-17"))
        assert [f["id"] for f in found] == [p["id"]], (family, given)
    found = ok(search(client, cm, family_name="Haddad-Weiß", given_names="Amira Léa", birth_date="1992-04-17"))
    assert [f["id"] for f in found] == [other["id"]]
    assert ok(search(client, cm, family_name="Haddad-Weiß", given_names="Amira Léa", birth_date="1991-04-18")) == []
    assert ok(search(client, cm, family_name="Haddad", given_names="Amira Léa", birth_date="1991-04-17")) == []
    body = problem(search(client, cm, family_name="Haddad", given_names="Amira", birth_date="17.04.1991"),
                   422, "validation-error")
    assert body["errors"][0]["field"] == "body.birth_date"
    # A case manager's result is the read record.
    found = ok(search(client, cm, family_name="haddad weiss", given_names="amira lea", birth_date="1991-04-17"))
    assert found[0] == ok(read(client, cm, p["id"]))
    # Changing the name moves the look-up with it; clearing the birth date takes the person out of it.
    ok(client.patch(f"/persons/{p['id']}", json={"fields": {"given_names": "Amira Samira"}}, headers=cm))
    assert ok(search(client, cm, family_name="Haddad-Weiß", given_names="Amira Léa", birth_date="1991-04-17")) == []
    found = ok(search(client, cm, family_name="haddad weiss", given_names="amira samira", birth_date="1991-04-17"))
    assert [f["id"] for f in found] == [p["id"]]
    ok(client.patch(f"/persons/{p['id']}", json={"fields": {"birth_date": None}}, headers=cm))
    assert ok(search(client, cm, family_name="haddad weiss", given_names="amira samira", birth_date="1991-04-17")) == []


def test_search_stays_within_the_record_scope_and_redacts(client, involved, cm, clerk, auth, dpo, world, policies):
    p = register(client, cm, world)
    query = {"family_name": "haddad weiss", "given_names": "amira lea", "birth_date": "1991-04-17"}
    abh = clerk("ennetal_abh")
    # Before a chain involves the ABH it finds nothing; nor once the chain is started, while
    # its steps are only planned.
    assert ok(search(client, abh, **query)) == []
    start_chain(client, cm, p)
    assert ok(search(client, abh, **query)) == []
    involved("ennetal_abh", p)
    resp = search(client, abh, **query)
    found = ok(resp)
    assert [f["id"] for f in found] == [p["id"]]
    basis = "statute:abh_residence"
    assert_view(found[0], policies, BASE_FIELDS,
                {"identity": basis, "contact": basis, "residence": basis, "family": basis}, resp.text)
    assert CASE_NOTES["case_notes"] not in resp.text
    # Organisations outside the record scope find nothing, and are not told the person exists.
    for org in ("hattenberg_sozialamt", "hagenau_abh"):
        assert ok(search(client, clerk(org), **query)) == []
    assert ok(search(client, auth("hagenau_ki", "case_manager"), **query)) == []
    assert ok(search(client, auth("ennetal_caritas", "case_manager"), **query)) == []
    # The search is audited as such, with the fields shown and their bases.
    rows = [e for e in audit_items(client, dpo, person_id=p["id"], user="clerk-ennetal_abh")
            if e["subtype"] == "person.search"]
    assert {e["outcome"] for e in rows} == {"success", "denied"}
    shown = next(e for e in rows if e["outcome"] == "success")
    assert "family_name" in shown["fields"] and shown["legal_bases"]["family_name"] == basis


# --- record scope ---------------------------------------------------------------------------------


def test_record_scope(client, cm, clerk, person):
    pid = person["id"]
    for org in ("hagenau_abh", "hattenberg_sozialamt"):
        headers = clerk(org)
        body = problem(read(client, headers, pid), 404, "not-found")
        assert body["resource"] == "person" and body["id"] == pid
        assert IDENTITY["family_name"] not in json.dumps(body)
        problem(client.patch(f"/persons/{pid}", json={"fields": {"phone": "1"}}, headers=headers),
                404, "not-found")
    # A missing person and one outside the scope look alike.
    missing = "00000000-0000-4000-8000-000000000000"
    a = problem(read(client, clerk("hagenau_abh"), missing), 404, "not-found")
    b = problem(read(client, clerk("hagenau_abh"), pid), 404, "not-found")
    assert a["title"] == b["title"] and a["detail"].replace(missing, pid) == b["detail"]
    # The Agentur has no step in the refugee chain: not in scope either.
    problem(read(client, clerk("ennetal_agentur"), pid), 404, "not-found")
    # The phone number is unchanged.
    assert ok(read(client, cm, pid))["fields"]["phone"] == CONTACT["phone"]


# --- agreements -----------------------------------------------------------------------------------


def agreement(world, clock, **changes: Any) -> dict[str, Any]:
    return {
        "title": "Vereinbarung KI / Agentur über anlassbezogenen Datenaustausch",
        "organisation_ids": [world.organisations["ennetal_ki"], world.organisations["ennetal_agentur"]],
        "categories": ["residence", "benefits"],
        "purpose": "employment_promotion",
        "valid_from": iso(clock.now - timedelta(days=1)),
        "document_reference": "DAV-2026-03",
    } | changes


def test_agreement_opens_categories_between_named_organisations(client, involved, cm, clerk, auth, dpo, world,
                                                                 clock, policies, person):
    pid = person["id"]
    admin = auth("ennetal_ki", "admin", user="admin-ennetal")
    agentur = clerk("ennetal_agentur")
    start_chain(client, cm, person, "young_adult")  # has agentur_fuer_arbeit steps
    involved("ennetal_agentur", person)
    before = ok(read(client, agentur, pid))
    assert before["purpose"] == "employment_promotion"
    assert {r["category"] for r in before["redacted"]} == ALL_CATEGORIES - {
        "identity", "contact", "education", "language"}

    # Only administration records agreements; health can never be opened by one.
    problem(client.post("/agreements", json=agreement(world, clock), headers=cm), 403, "forbidden")
    problem(client.post("/agreements", json=agreement(world, clock), headers=dpo), 403, "forbidden")
    body = problem(client.post("/agreements", json=agreement(world, clock, categories=["residence", "health"]),
                               headers=admin), 422, "validation-error")
    assert "health" in body["detail"]
    for changes in ({"valid_until": iso(clock.now - timedelta(days=2))},
                    {"organisation_ids": [world.organisations["ennetal_ki"]]},
                    {"organisation_ids": [world.organisations["ennetal_ki"], 999999]},
                    {"purpose": "curiosity"}):
        problem(client.post("/agreements", json=agreement(world, clock, **changes), headers=admin),
                422, "validation-error")
    assert ok(client.get("/agreements", headers=dpo)) == []

    recorded = ok(client.post("/agreements", json=agreement(world, clock), headers=admin), 201)
    assert recorded["recorded_by_user"] == "admin-ennetal"
    assert recorded["categories"] == ["benefits", "residence"]
    resp = read(client, agentur, pid)
    record = ok(resp)
    statute = "statute:agentur_sgb3"
    via = f"agreement:{recorded['id']}"
    assert_view(record, policies, BASE_FIELDS,
                {"identity": statute, "contact": statute, "education": statute, "language": statute,
                 "residence": via, "benefits": via}, resp.text)
    assert record["fields"]["residence_status"] == "protection_granted"
    assert record["legal_bases"]["residence_status"] == via
    assert CASE_NOTES["case_notes"] not in resp.text
    # The agreement is for its purpose only.
    other = ok(read(client, agentur, pid, purpose="basic_income"))
    assert other["fields"] == {}
    listed = ok(client.get("/agreements", headers=dpo))
    assert [a["id"] for a in listed] == [recorded["id"]]
    assert ok(client.get("/agreements", headers=cm)) == listed
    problem(client.get("/agreements", headers=auth("ennetal_ki", "steering")), 403, "forbidden")


def test_agreement_in_force_only_for_its_period(client, involved, cm, clerk, auth, world, clock, person):
    pid = person["id"]
    admin = auth("ennetal_ki", "admin")
    agentur = clerk("ennetal_agentur")
    start_chain(client, cm, person, "young_adult")
    involved("ennetal_agentur", person)
    ok(client.post("/agreements", headers=admin, json=agreement(
        world, clock, valid_from=iso(clock.now + timedelta(days=2)),
        valid_until=iso(clock.now + timedelta(days=5)))), 201)
    assert "residence_status" not in ok(read(client, agentur, pid))["fields"]
    clock.advance(days=2)
    assert ok(read(client, agentur, pid))["legal_bases"]["residence_status"].startswith("agreement:")
    clock.advance(days=3)
    assert "residence_status" not in ok(read(client, agentur, pid))["fields"]


def test_agreement_changed_in_the_database_is_not_used_from_memory(client, involved, cm, clerk, auth, world, clock,
                                                                    person, owner_db):
    """A worker reuses the agreements it read while they are unchanged; one ended or removed in
    the database (by hand, by a restore) stops granting with the very next read."""
    from sqlalchemy import text

    pid = person["id"]
    agentur = clerk("ennetal_agentur")
    start_chain(client, cm, person, "young_adult")
    involved("ennetal_agentur", person)
    recorded = ok(client.post("/agreements", headers=auth("ennetal_ki", "admin"), json=agreement(world, clock)), 201)
    for _ in range(2):  # read, then read from memory
        assert ok(read(client, agentur, pid))["legal_bases"]["residence_status"] == f"agreement:{recorded['id']}"
    with owner_db.begin() as conn:
        conn.execute(text("UPDATE data_exchange_agreements SET valid_until = :t WHERE id = :id"),
                     {"t": clock.now - timedelta(hours=1), "id": recorded["id"]})
    assert "residence_status" not in ok(read(client, agentur, pid))["fields"]
    with owner_db.begin() as conn:
        conn.execute(text("UPDATE data_exchange_agreements SET valid_until = NULL WHERE id = :id"), {"id": recorded["id"]})
    assert ok(read(client, agentur, pid))["legal_bases"]["residence_status"] == f"agreement:{recorded['id']}"
    with owner_db.begin() as conn:
        conn.execute(text("DELETE FROM data_exchange_agreements WHERE id = :id"), {"id": recorded["id"]})
    assert "residence_status" not in ok(read(client, agentur, pid))["fields"]


def test_agreement_between_other_organisations_opens_nothing(client, involved, cm, clerk, auth, world, clock, person):
    """An agreement opens data only between parties that include an organisation holding the case."""
    admin = auth("ennetal_ki", "admin")
    start_chain(client, cm, person, "young_adult")
    involved("ennetal_agentur", person)
    ok(client.post("/agreements", headers=admin, json=agreement(world, clock, organisation_ids=[
        world.organisations["ennetal_jobcenter"], world.organisations["ennetal_agentur"]])), 201)
    record = ok(read(client, clerk("ennetal_agentur"), person["id"]))
    assert "residence_status" not in record["fields"]


# --- audit ----------------------------------------------------------------------------------------


def test_audit_trail(client, involved, cm, clerk, dpo, world, clock, person):
    pid = person["id"]
    abh = involved("ennetal_abh", person)
    t0 = clock.now
    clock.advance(minutes=10)
    t1 = clock.now
    ok(read(client, abh, pid))
    clock.advance(minutes=10)
    t2 = clock.now
    problem(client.patch(f"/persons/{pid}", json={"fields": {"case_notes": "ABH ueberschreibt"}}, headers=abh),
            403, "no-legal-basis")
    clock.advance(minutes=10)
    t3 = clock.now
    consent = consent_id_of(ok(read(client, cm, pid)), "residence_status")
    ok(client.post(f"/consents/{consent}/withdraw", json={"note": "Person zieht zurück"}, headers=cm))
    clock.advance(minutes=10)

    resp = client.get("/audit", params={"person_id": pid, "limit": 1000}, headers=dpo)
    page = ok(resp)
    items = page["items"]
    assert page["next_cursor"] is None
    ids = [e["id"] for e in items]
    assert ids == sorted(ids, reverse=True)
    assert [e["recorded_at"] for e in items] == sorted((e["recorded_at"] for e in items), reverse=True)
    assert {e["person_id"] for e in items} == {pid}
    assert {e["outcome"] for e in items} == {"success", "denied"}
    # Never a personal value in the trail.
    for value in [*IDENTITY.values(), *CONTACT.values(), *SECRET_TEXT.values(), "ABH ueberschreibt",
                  "Person zieht zurück"]:
        assert value not in resp.text, value

    newest = items[0]
    assert (newest["subtype"], newest["outcome"], newest["action"]) == ("consent.withdraw", "success", "U")
    assert newest["entity_id"] == consent and newest["agent_user"] == "cm-amal"
    by_subtype: dict[str, list[dict[str, Any]]] = {}
    for e in items:
        by_subtype.setdefault(e["subtype"], []).append(e)
    assert set(by_subtype) >= {"person.create", "consent.record", "person.read", "person.update",
                               "consent.withdraw"}
    create = by_subtype["person.create"][0]
    assert create["legal_bases"]["family_name"] == "statute:case_management_intake"
    assert create["legal_bases"]["case_notes"] == f"consent:{consent}"
    assert set(create["fields"]) == set(BASE_FIELDS)

    abh_reads = [e for e in by_subtype["person.read"] if e["agent_user"] == "clerk-ennetal_abh"]
    shown = next(e for e in abh_reads if e["outcome"] == "success")
    assert shown["purpose"] == "residence_procedure"
    assert shown["agent_organisation_id"] == world.organisations["ennetal_abh"]
    assert set(shown["fields"]) == set(shown["legal_bases"])
    assert set(shown["fields"]) == {n for n in BASE_FIELDS if n in IDENTITY | CONTACT | RESIDENCE | FAMILY}
    assert set(shown["legal_bases"].values()) == {"statute:abh_residence"}
    withheld = next(e for e in abh_reads if e["outcome"] == "denied")
    assert "case_notes" in withheld["fields"] and withheld["legal_bases"] == {}

    cm_reads = [e for e in by_subtype["person.read"] if e["agent_user"] == "cm-amal" and e["outcome"] == "success"]
    assert cm_reads[0]["legal_bases"]["case_notes"] == f"consent:{consent}"
    assert cm_reads[0]["legal_bases"]["phone"] == "statute:case_management_intake"

    denied_writes = [e for e in by_subtype["person.update"]]
    assert len(denied_writes) == 1
    assert (denied_writes[0]["outcome"], denied_writes[0]["fields"]) == ("denied", ["case_notes"])
    assert denied_writes[0]["agent_user"] == "clerk-ennetal_abh"

    # Filters.
    abh_rows = audit_items(client, dpo, person_id=pid, user="clerk-ennetal_abh")
    assert abh_rows and {e["agent_user"] for e in abh_rows} == {"clerk-ennetal_abh"}
    assert [e["id"] for e in abh_rows] == [e["id"] for e in items if e["agent_user"] == "clerk-ennetal_abh"]
    by_org = audit_items(client, dpo, person_id=pid, organisation_id=world.organisations["ennetal_abh"])
    assert [e["id"] for e in by_org] == [e["id"] for e in abh_rows]
    denied = audit_items(client, dpo, person_id=pid, outcome="denied")
    assert denied and {e["outcome"] for e in denied} == {"denied"}
    assert [e["id"] for e in denied] == [e["id"] for e in items if e["outcome"] == "denied"]
    window = audit_items(client, dpo, person_id=pid, **{"from": iso(t2), "to": iso(t3)})
    assert [(e["subtype"], e["outcome"]) for e in window] == [("person.update", "denied")]
    early = audit_items(client, dpo, person_id=pid, to=iso(t1))
    assert early and all(ts(e["recorded_at"]) < t1 for e in early)
    assert [e["id"] for e in early] == [e["id"] for e in items if ts(e["recorded_at"]) < t1]
    assert "person.create" in {e["subtype"] for e in early}
    late = audit_items(client, dpo, person_id=pid, **{"from": iso(t1), "to": iso(clock.now)})
    assert all(ts(e["recorded_at"]) >= t1 for e in late)
    assert [e["id"] for e in late] + [e["id"] for e in early] == ids
    assert audit_items(client, dpo, person_id=pid, to=iso(t0 - timedelta(days=1))) == []
    problem(client.get("/audit", params={"outcome": "maybe"}, headers=dpo), 422, "validation-error")

    # Cursor pagination: small pages, newest first, nothing lost or repeated.
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"person_id": pid, "limit": 3, "to": iso(clock.now)}
        if cursor is not None:
            params["cursor"] = cursor
        page = ok(client.get("/audit", params=params, headers=dpo))
        assert len(page["items"]) <= 3
        seen += [e["id"] for e in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == -(-len(ids) // 3)

    # The officer's own searches are audited too.
    latest = audit_items(client, dpo, person_id=pid)
    own = [e for e in latest if e["subtype"] == "audit.search"]
    assert own and own[0]["agent_user"] == "dpo-ennetal" and own[0]["outcome"] == "success"
    assert own[0]["action"] == "R" and own[0]["id"] > ids[0]
    assert own[0]["detail"].endswith("rows")
    # ... as is reading the consent history.
    ok(client.get(f"/persons/{pid}/consents", headers=dpo))
    top = audit_items(client, dpo, person_id=pid, user="dpo-ennetal")
    assert top[0]["subtype"] == "consent.list"  # the row of this search is written after it
    assert top[1]["subtype"] == "audit.search"
    assert len(audit_items(client, dpo, person_id=pid, user="dpo-ennetal")) == len(top) + 1

    # Only the officer reads the trail.
    problem(client.get("/audit", headers=cm), 403, "forbidden")
    problem(client.get("/audit", headers=abh), 403, "forbidden")


# --- record of processing -------------------------------------------------------------------------


def test_record_of_processing(client, cm, dpo, auth, policies):
    record = ok(client.get("/record-of-processing", headers=dpo))
    assert ok(client.get("/record-of-processing", headers=auth("ennetal_ki", "admin"))) == record
    problem(client.get("/record-of-processing", headers=cm), 403, "forbidden")
    problem(client.get("/record-of-processing", headers=auth("ennetal_ki", "steering")), 403, "forbidden")

    categories = {c["category"]: c for c in record["categories_of_personal_data"]}
    assert set(categories) == ALL_CATEGORIES
    for key, c in categories.items():
        assert c["special_category_art_9"] is (key == "health")
        assert c["retention"]
        assert c["fields"] == [n for n, spec in policies.data.fields.items() if spec.category == key]
    assert categories["identity"]["retention"] == "10 years after the case is closed"
    assert categories["health"]["retention"] == "3 years after the case is closed"
    assert categories["feedback"]["retention"] == "2 years after the last contact"
    # The deletion concept as data: each category's rule and its legal source.
    assert categories["benefits"]["retention_rule"] == {"years": 10, "after": "case_closed", "obligation": True}
    assert "SGB X" in categories["benefits"]["retention_source"]
    assert all(c["retention_source"] for c in categories.values())
    assert categories["own_goals"]["retention"] == "3 years after the case is closed"

    activities = {a["purpose"]: a for a in record["processing_activities"]}
    assert set(activities) == set(policies.data.purposes)
    residence = activities["residence_procedure"]
    assert residence["title"] == "Aufenthaltsrechtliches Verfahren"
    assert residence["statutory_recipients"] == [{
        "organisation_kind": "auslaenderbehoerde", "organisation_kind_title": "Ausländerbehörde",
        "categories": ["contact", "family", "identity", "residence"], "actions": ["read", "write"],
        "legal_basis": "§ 86 AufenthG (Erhebung personenbezogener Daten)"}]
    cm_recipients = {r["organisation_kind"]: r for r in activities["case_management"]["statutory_recipients"]}
    assert set(cm_recipients) == {"kommunales_integrationszentrum", "wohlfahrtsverband"}
    assert cm_recipients["kommunales_integrationszentrum"]["categories"] == ["contact", "identity"]
    health = activities["health_protection"]["statutory_recipients"]
    assert [(r["organisation_kind"], r["legal_basis"]) for r in health] == [
        ("gesundheitsamt", "§ 62 AsylG; ÖGDG NRW")]
    sozial = {r["legal_basis"] for r in activities["asylum_benefits"]["statutory_recipients"]}
    assert sozial == {"§ 67a SGB X i.V.m. §§ 7, 9 AsylbLG"}
    assert activities["case_conference"]["statutory_recipients"] == []
    assert all(a["other_recipients"] for a in activities.values())
    for a in activities.values():
        for r in a["statutory_recipients"]:
            assert r["legal_basis"] and r["organisation_kind_title"]


def test_a_consent_to_an_organisation_kind_nobody_has_is_refused(client, cm, person):
    body = {
        "recipients": [{"organisation_kind": "no_such_kind", "jurisdiction_id": 1}],
        "categories": ["family"], "purpose": "schooling", "consequences_explained": True,
        "evidence_reference": "EW-X", "language": "Farsi",
    }
    resp = client.post(f"/persons/{person['id']}/consents", json=body, headers=cm)
    assert "no_such_kind" in problem(resp, 422, "invalid-consent")["detail"]
