"""The data subject's rights end to end through HTTP on PostgreSQL: the request register from
receipt to answer, the access report and the portable copy, rectification, restriction, legal
hold and erasure by key destruction (with the steering report unchanged and the audit trail
intact), and the reminder of overdue requests."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from http_helpers import ok, problem
from sqlalchemy import select, text
from test_api import INTAKE_CONSENT, person_body, started

from casemgmt.privacy.audit import verify
from casemgmt.privacy.crypto import DecryptionError, decrypt_field
from casemgmt.privacy.rotation import audit_keyset

CM = ("ennetal_ki", "case_manager")
DPO = ("ennetal_ki", "dpo")
NAMES = {"family_name": "Haddad", "given_names": "Rania", "birth_date": "1991-02-03", "phone": "+49 2331 554433",
         "german_level": "A2", "case_notes": "Wünscht einen Kurs am Vormittag.", "benefit_regime": None}


@pytest.fixture
def cm(auth):
    return auth(*CM, user="cm-rights")


@pytest.fixture
def dpo(auth):
    return auth(*DPO, user="dpo-rights")


def new_person(client, headers, jurisdiction_id, **fields):
    """A registration whose intake consent also covers the language level and case notes."""
    body = person_body(jurisdiction_id, **fields)
    body["consents"][0] = INTAKE_CONSENT | {
        "categories": ["residence", "benefits", "language", "case_notes"],
        "recipients": [{"organisation_kind": "kommunales_integrationszentrum", "jurisdiction_id": jurisdiction_id}]}
    return ok(client.post("/persons", json=body, headers=headers), 201)


def register(client, dpo, person_id, kind, **extra):
    body = {"person_id": person_id, "kind": kind, "identity_checked_by": "Bürgerbüro, Schalter 2",
            "identity_check_method": "Personalausweis vorgelegt"} | extra
    return ok(client.post("/data-subject-requests", json=body, headers=dpo), 201)


def act(client, dpo, request_id, action, reason=None):
    return client.post(f"/data-subject-requests/{request_id}/actions", json={"action": action, "reason": reason},
                       headers=dpo)


def test_request_from_receipt_to_answer_with_due_dates_and_overdue_first(client, cm, dpo, world, clock):
    p = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    # Received on Friday 2026-01-30: one month later is 2026-02-28, a Saturday -> Monday 2 March,
    # which is today: due today is not overdue yet.
    weekend = register(client, dpo, p["id"], "objection", received_at="2026-01-30T10:00:00+01:00")
    assert weekend["due_date"] == "2026-03-02" and not weekend["overdue"]
    early = register(client, dpo, p["id"], "access", received_at="2026-01-27T10:00:00+01:00")
    assert early["state"] == "received" and early["due_date"] == "2026-02-27" and early["overdue"]
    fresh = register(client, dpo, p["id"], "erasure")
    assert fresh["due_date"] == "2026-04-02" and not fresh["overdue"]  # received Monday 2 March
    page = ok(client.get("/data-subject-requests", headers=dpo))
    assert [r["id"] for r in page["items"]] == [early["id"], weekend["id"], fresh["id"]]
    assert page["counts"]["received"] == 3 and page["counts"]["overdue"] == 1
    assert ok(act(client, dpo, early["id"], "start"))["state"] == "in_progress"
    problem(act(client, dpo, early["id"], "extend"), 422, "validation-error")  # a reason is required
    ext = ok(act(client, dpo, early["id"], "extend", "Umfangreiche Akten bei drei Stellen"))
    # Three months after 27 January is 27 April (a Monday).
    assert ext["state"] == "extended" and ext["due_date"] == "2026-04-27" and ext["original_due_date"] == "2026-02-27"
    assert not ext["overdue"]
    body = problem(act(client, dpo, early["id"], "extend", "noch einmal"), 409, "request-state")
    assert set(body["allowed_actions"]) == {"answer", "refuse"}
    done = ok(act(client, dpo, early["id"], "answer", "Auskunft per Brief versandt"))
    assert done["state"] == "answered" and done["outcome"] == "Auskunft per Brief versandt" and done["answered_at"]
    problem(act(client, dpo, early["id"], "refuse", "zu spät"), 409, "request-state")
    refused = ok(act(client, dpo, fresh["id"], "refuse", "Identität nicht nachgewiesen"))
    assert refused["state"] == "refused"
    # A reason kept in the register must not carry the person's name.
    other = weekend
    problem(act(client, dpo, other["id"], "refuse", "Frau Haddad hat nicht unterschrieben"), 422,
            "personal-data-in-text")
    # Case workers have no access to the register; another area's officer sees nothing.
    problem(client.get("/data-subject-requests", headers=cm), 403, "forbidden")
    problem(client.get(f"/data-subject-requests/{other['id']}", headers=client_auth(client, "hagenau_ki")), 404,
            "not-found")


def client_auth(client, org):
    from casemgmt.auth.tokens import mint_dev_token

    return {"Authorization": "Bearer " + mint_dev_token(client.app.state.settings, "dpo-other", org, ["dpo"])}


def test_overdue_requests_remind_the_officers_contacts_once_per_due_date(client, cm, dpo, world, clock,
                                                                        session_factory, auth):
    from casemgmt.notifications.models import OutboxMessage
    from casemgmt.rights.reminders import remind_overdue

    admin = auth("ennetal_ki", "admin")
    ok(client.post(f"/organisations/{world.organisations['ennetal_ki']}/contacts",
                   json={"role": "dpo", "channel": "email", "address": "datenschutz@ennetal.example"},
                   headers=admin), 201)
    p = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    r = register(client, dpo, p["id"], "access", received_at="2026-01-15T09:00:00+01:00")
    with session_factory() as s:
        assert remind_overdue(s, clock.now, "https://casemgmt.example").reminded == 1
        assert remind_overdue(s, clock.now, "https://casemgmt.example").reminded == 0  # once
        msg = s.scalars(select(OutboxMessage)).one()
    assert msg.address == "datenschutz@ennetal.example" and msg.body["request_id"] == r["id"]
    assert "Haddad" not in json.dumps(msg.body) + msg.subject and "Auskunft" in msg.subject


def test_access_report_lists_values_bases_recipients_and_rights_without_naming_users(client, cm, dpo, auth,
                                                                                     world, policies):
    p = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    chain = started(client, cm, p)
    ok(client.get(f"/persons/{p['id']}", headers=cm))
    # Only for a registered access request of this person.
    problem(client.get(f"/persons/{p['id']}/access-report", params={"request_id": chain["id"]}, headers=dpo),
            409, "request-mismatch")
    r = register(client, dpo, p["id"], "access")
    problem(client.get(f"/persons/{p['id']}/access-report", params={"request_id": r["id"]}, headers=cm),
            403, "forbidden")
    report = ok(client.get(f"/persons/{p['id']}/access-report", params={"request_id": r["id"]}, headers=dpo))
    by_field = {f["field"]: f for f in report["fields"]}
    assert by_field["family_name"]["value"] == "Haddad" and by_field["case_notes"]["category"] == "case_notes"
    assert by_field["residence_status"]["legal_basis"].startswith(("consent:", "statute:"))
    assert by_field["residence_status"]["legal_basis_text"]
    assert by_field["residence_status"]["purpose"] == "case_management"
    ki = "Kommunales Integrationszentrum Kreis Ennetal"
    assert any(rec["organisation"] == ki and "identity" in rec["categories"] for rec in report["recipients"])
    assert report["consents"] and report["consents"][0]["status"] == "active"
    assert report["chains"][0]["template"] == "refugee_recognised" and report["chains"][0]["steps"]
    assert {x["category"] for x in report["retention"]} == set(policies.data.categories)
    assert all(x["kept_until"] is None for x in report["retention"])  # the case is still open
    assert any(x["right"] == "Beschwerde" for x in report["rights"])
    dumped = json.dumps(report)
    assert "cm-rights" not in dumped and "dpo-rights" not in dumped  # users are never named
    letter = client.get(f"/persons/{p['id']}/access-report.html", params={"request_id": r["id"]}, headers=dpo)
    assert letter.status_code == 200 and letter.headers["content-type"].startswith("text/html")
    assert "Auskunft über Ihre Daten" in letter.text and "Haddad" in letter.text and "cm-rights" not in letter.text
    # The issue of the report is audited with the request as its basis.
    rows = ok(client.get("/audit", params={"person_id": p["id"]}, headers=dpo))["items"]
    issued = [x for x in rows if x["subtype"] == "person.access_report"]
    assert issued and set(issued[0]["legal_bases"].values()) == {f"gdpr_art15:request {r['id']}"}


def test_portable_copy_holds_only_what_the_person_provided(client, cm, dpo, world):
    p = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    r = register(client, dpo, p["id"], "portability")
    copy = ok(client.get(f"/persons/{p['id']}/portability", params={"request_id": r["id"]}, headers=dpo))
    assert copy["fields"]["family_name"] == "Haddad" and copy["fields"]["german_level"] == "A2"
    assert "case_notes" not in copy["fields"] and "residence_status" not in copy["fields"]
    assert copy["schema"]["phone"]["category"] == "contact"


def test_rectification_keeps_that_the_old_value_existed_not_the_value(client, cm, dpo, world):
    p = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    r = register(client, dpo, p["id"], "rectification")
    problem(client.patch(f"/persons/{p['id']}", json={"fields": {"given_names": "Rana"},
                                                      "rectification_request_id": p["id"]}, headers=cm),
            409, "request-mismatch")
    out = ok(client.patch(f"/persons/{p['id']}", json={"fields": {"given_names": "Rana"},
                                                       "rectification_request_id": r["id"]}, headers=cm))
    assert out["fields"]["given_names"] == "Rana"
    rows = ok(client.get("/audit", params={"person_id": p["id"]}, headers=dpo))["items"]
    replaced = next(x for x in rows if x["subtype"] == "person.rectify.replaced")
    assert replaced["fields"] == ["given_names"] and r["id"] in replaced["detail"] and "since" in replaced["detail"]
    assert "Rania" not in json.dumps(rows)  # the old value itself is nowhere in the trail
    assert any(x["subtype"] == "person.rectify" for x in rows)


def test_restriction_stops_every_organisation_and_only_the_officer_sees_why(client, cm, dpo, world):
    p = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    chain = started(client, cm, p)
    r = register(client, dpo, p["id"], "restriction")
    out = ok(client.post(f"/persons/{p['id']}/restriction",
                         json={"reason": "Richtigkeit der Angaben bestritten", "request_id": r["id"]}, headers=dpo), 201)
    assert out["active"]["reason"] == "Richtigkeit der Angaben bestritten"
    problem(client.post(f"/persons/{p['id']}/restriction", json={"reason": "noch einmal"}, headers=dpo), 409,
            "restriction-state")
    for resp in (client.get(f"/persons/{p['id']}", headers=cm),
                 client.patch(f"/persons/{p['id']}", json={"fields": {"german_level": "B1"}}, headers=cm),
                 client.get(f"/chains/{chain['id']}", headers=cm),
                 client.post(f"/chains/{chain['id']}/close", json={"reason": "other"}, headers=cm)):
        body = problem(resp, 423, "person-restricted")
        assert body["restriction"] == "GDPR Art. 18"
        assert "bestritten" not in json.dumps(body) and "since" not in body  # no reason, no date
    assert chain["id"] not in [c["id"] for c in ok(client.get("/chains", headers=cm))["items"]]
    problem(client.get(f"/persons/{p['id']}/restriction", headers=cm), 403, "forbidden")
    # An organisation that was never involved learns nothing: 404 as for any id.
    problem(client.get(f"/persons/{p['id']}", headers=client_auth_clerk(client, "hagenau_sozialamt")), 404, "not-found")
    lifted = ok(client.post(f"/persons/{p['id']}/restriction/lift", json={"reason": "Angaben geprüft"}, headers=dpo))
    assert lifted["active"] is None and lifted["history"][0]["lift_reason"] == "Angaben geprüft"
    ok(client.get(f"/persons/{p['id']}", headers=cm))


def client_auth_clerk(client, org):
    from casemgmt.auth.tokens import mint_dev_token

    return {"Authorization": "Bearer " + mint_dev_token(client.app.state.settings, "clerk-x", org, ["clerk"])}


def _report(session_factory, policies, world, now):
    from casemgmt.steering.report import build_report, resolve_area

    with session_factory() as s:
        area = resolve_area(s, world.jurisdictions["kreis_ennetal"])
        doc = build_report(s, policies.steering, policies.goals, area, now)
        s.rollback()
    doc.pop("generated_at", None)
    return doc


def test_erasure_destroys_the_key_keeps_the_report_and_the_trail(client, cm, dpo, world, clock, policies,
                                                                 session_factory, owner_db, keys, settings,
                                                                 tmp_path, app):
    app.state.settings = settings.model_copy(update={"erasure_tombstone_dir": tmp_path})
    p = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    chain = started(client, cm, p)
    keep = new_person(client, cm, world.jurisdictions["wittmar"], **(NAMES | {"given_names": "Samir"}))
    r = register(client, dpo, p["id"], "erasure")
    erase = {"request_id": r["id"], "legal_assessment": "Einwilligung widerrufen, keine Aufbewahrungspflicht"}
    body = problem(client.post(f"/persons/{p['id']}/erasure", json=erase, headers=dpo), 409, "erasure-refused")
    assert [o["kind"] for o in body["obstacles"]] == ["open_chain"]
    ok(client.post(f"/chains/{chain['id']}/close", json={"reason": "ended_by_person"}, headers=cm))
    ok(client.post(f"/persons/{p['id']}/legal-hold", json={"reason": "Klageverfahren anhängig"}, headers=dpo), 201)
    body = problem(client.post(f"/persons/{p['id']}/erasure", json=erase, headers=dpo), 409, "erasure-refused")
    assert [o["kind"] for o in body["obstacles"]] == ["legal_hold"]
    ok(client.post(f"/persons/{p['id']}/legal-hold/lift", json={"reason": "Verfahren beendet"}, headers=dpo))
    clock.advance(minutes=5)
    with owner_db.connect() as conn:
        blobs = conn.execute(text("SELECT field, ciphertext FROM person_fields WHERE person_id = :p"),
                             {"p": p["id"]}).all()
    before = _report(session_factory, policies, world, clock.now)
    out = ok(client.post(f"/persons/{p['id']}/erasure", json=erase, headers=dpo))
    assert out["cause"] == "request" and out["request_state"] == "answered"
    assert _report(session_factory, policies, world, clock.now) == before
    # The key is gone; no wrapped key left in the database opens the old ciphertexts.
    import uuid as _uuid
    pid = _uuid.UUID(p["id"])
    with owner_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM person_keys WHERE person_id = :p"), {"p": p["id"]}).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM person_fields WHERE person_id = :p"), {"p": p["id"]}).scalar() == 0
        assert conn.execute(text("SELECT blind_index, residence_status, processing FROM persons WHERE id = :p"),
                            {"p": p["id"]}).one() == (None, None, "erased")
        assert conn.execute(text("SELECT count(*) FROM person_name_tokens WHERE person_id = :p"), {"p": p["id"]}).scalar() == 0
        wrapped = conn.execute(text("SELECT person_id, wrapped_key FROM person_keys")).all()
        assert conn.execute(text("SELECT count(*) FROM chains WHERE person_id = :p"), {"p": p["id"]}).scalar() == 1
    assert blobs
    for person_id, w in wrapped:
        for candidate in (person_id, pid):
            try:
                data_key = keys.unwrap(candidate, w)
            except DecryptionError:
                continue
            for field, blob in blobs:
                with pytest.raises(DecryptionError):
                    decrypt_field(data_key, pid, field, blob)
    # 410 to those who were involved, 404 to others; the kept person is untouched.
    problem(client.get(f"/persons/{p['id']}", headers=cm), 410, "person-erased")
    problem(client.get(f"/chains/{chain['id']}", headers=cm), 410, "person-erased")
    problem(client.get(f"/persons/{p['id']}", headers=client_auth_clerk(client, "hagenau_sozialamt")), 404, "not-found")
    assert ok(client.get(f"/persons/{keep['id']}", headers=cm))["fields"]["given_names"] == "Samir"
    problem(client.post(f"/persons/{p['id']}/erasure", json=erase, headers=dpo), 410, "person-erased")
    # The audit trail verifies over every row, and the tombstone is also in the file.
    with owner_db.connect() as conn:
        result = verify(conn, audit_keyset(conn, keys))
    assert result.ok, result.problem
    line = json.loads((tmp_path / "erasures.tombstones").read_text().splitlines()[0])
    assert line["person_id"] == p["id"] and line["cause"] == "request"


def test_a_retention_obligation_refuses_erasure_and_names_its_source(client, cm, dpo, world):
    p = new_person(client, cm, world.jurisdictions["wittmar"], **(NAMES | {"benefit_regime": "asylblg"}))
    r = register(client, dpo, p["id"], "erasure")
    body = problem(client.post(f"/persons/{p['id']}/erasure", headers=dpo, json={
        "request_id": r["id"], "legal_assessment": "Antrag geprüft"}), 409, "erasure-refused")
    (obligation,) = body["obstacles"]
    assert obligation["kind"] == "retention_obligation" and obligation["category"] == "benefits"
    assert "SGB X" in obligation["source"]
    ok(client.get(f"/persons/{p['id']}", headers=cm))  # nothing changed


def test_sprachenpass_and_offer_bookings_are_in_the_report_the_copy_and_go_with_erasure(
        client, cm, dpo, auth, world, owner_db, settings, tmp_path, app):
    """Issue 16's records reach the person: the access report lists the Sprachenpass and the
    offers the person was referred to or enrolled in (no other person's), counts reads of the
    pass under `language`; the portable copy carries the pass; erasure leaves no value of either."""
    from test_offers import STEP, VHS, offer_body

    app.state.settings = settings.model_copy(update={"erasure_tombstone_dir": tmp_path})
    vhs = auth(*VHS)
    course = ok(client.post("/offers", json=offer_body(world, title="Integrationskurs Vormittag"), headers=vhs), 201)
    other_course = ok(client.post("/offers", json=offer_body(world, title="Abendkurs Aufbau"), headers=vhs), 201)
    p = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    other = new_person(client, cm, world.jurisdictions["wittmar"], **(NAMES | {"given_names": "Samir"}))
    chain, other_chain = started(client, cm, p), started(client, cm, other)
    for c, o in ((chain, course), (other_chain, other_course)):
        ok(client.post(f"/chains/{c['id']}/steps/{STEP}/offers/{o['id']}", json={"action": "enrol"}, headers=cm))
    entry = {"offer_id": course["id"], "from_date": "2026-03-16", "to_date": "2026-09-30", "hours": 700,
             "levels": {"speaking": "B1", "writing": "A2"},
             "certificates": [{"exam": "DTZ", "title": "Deutsch-Test für Zuwanderer", "level": "B1",
                               "date": "2026-09-25", "evidence_reference": "VHS-DTZ-2026-17"}]}
    ok(client.post(f"/persons/{p['id']}/language-pass", json=entry, headers=vhs), 201)
    ok(client.post(f"/persons/{other['id']}/language-pass", json=entry | {"offer_id": other_course["id"], "hours": 313},
                   headers=vhs), 201)
    assert len(ok(client.get(f"/persons/{p['id']}/language-pass", headers=cm))["entries"]) == 1

    r = register(client, dpo, p["id"], "access")
    report = ok(client.get(f"/persons/{p['id']}/access-report", params={"request_id": r["id"]}, headers=dpo))
    [shown] = report["language_pass"]
    assert (shown["course_title"], shown["provider"], shown["hours"]) == ("Integrationskurs Vormittag", "VHS Ennetal", 700)
    assert shown["from_date"] == "2026-03-16" and shown["levels"] == {"speaking": "B1", "writing": "A2"}
    assert shown["certificates"][0]["evidence_reference"] == "VHS-DTZ-2026-17"
    [booked] = report["offers"]
    assert (booked["offer"], booked["provider"], booked["state"]) == ("Integrationskurs Vormittag", "VHS Ennetal", "enrolled")
    assert booked["enrolled_at"]
    dumped = json.dumps(report)
    assert "Abendkurs Aufbau" not in dumped and other["id"] not in dumped
    # The KI's read of the pass is a read of `language`, not a read of no category.
    ki = "Kommunales Integrationszentrum Kreis Ennetal"
    assert any(x["organisation"] == ki and x["categories"] == ["language"] for x in report["recipients"])
    assert all(x["categories"] for x in report["recipients"])
    letter = client.get(f"/persons/{p['id']}/access-report.html", params={"request_id": r["id"]}, headers=dpo).text
    assert "Sprachenpass" in letter and "Integrationskurs Vormittag" in letter and "700 UE" in letter
    assert "Deutsch-Test für Zuwanderer (B1), 25.09.2026" in letter and "angemeldet" in letter
    assert "Abendkurs Aufbau" not in letter

    copy = ok(client.get(f"/persons/{p['id']}/portability",
                         params={"request_id": register(client, dpo, p["id"], "portability")["id"]}, headers=dpo))
    assert [e["course_title"] for e in copy["language_pass"]] == ["Integrationskurs Vormittag"]

    ok(client.post(f"/chains/{chain['id']}/close", json={"reason": "ended_by_person"}, headers=cm))
    erase = {"request_id": register(client, dpo, p["id"], "erasure")["id"],
             "legal_assessment": "Einwilligung widerrufen, keine Aufbewahrungspflicht"}
    ok(client.post(f"/persons/{p['id']}/erasure", json=erase, headers=dpo))
    with owner_db.connect() as conn:
        count = "SELECT count(*) FROM language_pass_entries WHERE person_id = :p"
        assert conn.execute(text(count), {"p": p["id"]}).scalar() == 0
        assert conn.execute(text(count), {"p": other["id"]}).scalar() == 1
        # The booking stays as a pseudonymous row: which offer, which step, when; no value of the person.
        rows = conn.execute(text("SELECT * FROM offer_bookings WHERE person_id = :p"), {"p": p["id"]}).mappings().all()
    assert [row["state"] for row in rows] == ["enrolled"]
    assert set(rows[0]) == {"id", "offer_id", "chain_id", "step_key", "person_id", "state", "referred_at",
                            "enrolled_at", "organisation_id", "updated_at"}, "a new column: decide what erasure does with it"
