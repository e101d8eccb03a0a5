"""Who may record a consent, how the Rechtskreis changes, and which free texts may be stored,
tried as the attacker of issue 9 did and more broadly.

- A consent is recorded by the case management of the person's chain (or the organisation
  registering the person), by a kind listed in the policy, takes effect when recorded, and names
  its evidence for health data; nobody records one for itself.
- Once a person has a running chain, the Rechtskreis changes only by an acknowledged
  Rechtskreiswechsel.
- Reasons kept in append-only histories and texts that reach the steering group carry no personal
  data; the name check knows only the persons the text is about, and refusals are audited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from http_helpers import ok, problem
from test_api import acted, get_chain, new_person, started, step

KI = ("ennetal_ki", "case_manager")


def consent(world, *org_keys: str, **over: Any) -> dict[str, Any]:
    return {
        "recipients": [{"organisation_id": world.organisations[k]} for k in org_keys],
        "categories": ["case_notes"], "purpose": "case_management", "consequences_explained": True,
        "evidence_reference": "EW-2026-0815", "language": "Arabisch",
    } | over


@pytest.fixture
def ki(auth):
    return auth(*KI)


@pytest.fixture
def chain(client, ki, world):
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Yilmaz",
                        given_names="Sara", birth_date="2001-02-14")
    return started(client, ki, person)


# --- item 2: consent --------------------------------------------------------------------------


def test_an_office_cannot_record_a_consent_for_itself_and_read_at_once(client, auth, world, chain):
    """The attack of the issue: a Jobcenter token with the case manager role."""
    pid = chain["person_id"]
    for org in ("ennetal_jobcenter", "wittmar_sozialamt"):
        headers = auth(org, "case_manager")
        body = consent(world, org, categories=["health", "case_notes"], explicit_special=True,
                       valid_from="2000-01-01T00:00:00Z")
        resp = client.post(f"/persons/{pid}/consents", json=body, headers=headers)
        # The Sozialamt is involved (its step is ready): refused as not the case management; the
        # Jobcenter is not involved at all.
        if org == "wittmar_sozialamt":
            problem(resp, 403, "consent-recorder")
        else:
            problem(resp, 404, "not-found")
    history = ok(client.get(f"/persons/{pid}/consents", headers=auth(*KI)))
    assert len(history) == 1  # only the intake consent
    assert history[0]["recorded_by_organisation_id"] == world.organisations["ennetal_ki"]


def test_only_the_case_management_of_the_chain_records(client, auth, world, chain):
    pid = chain["person_id"]
    # Another case-management organisation that is involved only as a handover receiver.
    h = ok(client.post(f"/chains/{chain['id']}/handovers", json={
        "kind": "relocation", "to_jurisdiction_id": world.jurisdictions["hattenberg"],
        "receiver_organisation_id": world.organisations["ennetal_caritas"]}, headers=auth(*KI)), 201)
    caritas = auth("ennetal_caritas", "case_manager")
    assert ok(client.get(f"/persons/{pid}", headers=caritas))  # involved while the handover waits
    problem(client.post(f"/persons/{pid}/consents", json=consent(world, "ennetal_caritas"), headers=caritas),
            403, "consent-recorder")
    ok(client.post(f"/handovers/{h['id']}/actions", json={"action": "acknowledge"}, headers=caritas))
    # Now it runs the case management: it records.
    ok(client.post(f"/persons/{pid}/consents", json=consent(world, "ennetal_caritas"), headers=caritas), 201)
    # And the former case management no longer does.
    problem(client.post(f"/persons/{pid}/consents", json=consent(world, "ennetal_ki"), headers=auth(*KI)),
            403, "involvement-ended")


def test_the_registering_office_cannot_name_only_itself_before_it_runs_a_chain(client, world, ki):
    """Between registration and the chain's start the registering office may record a consent,
    but not one whose only recipient is itself: that would let it open data to itself alone."""
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Osei", given_names="Ama",
                        birth_date="1993-07-07")
    url = f"/persons/{person['id']}/consents"
    body = problem(client.post(url, json=consent(world, "ennetal_ki"), headers=ki), 422, "invalid-consent")
    assert "recipients" in body["fields"] and "only recipient" in body["detail"]
    assert len(ok(client.get(url, headers=ki))) == 1  # the intake consent only
    # With another recipient it is recorded; once the office runs the chain, it may name only itself.
    ok(client.post(url, json=consent(world, "ennetal_ki", "ennetal_abh"), headers=ki), 201)
    started(client, ki, person)
    ok(client.post(url, json=consent(world, "ennetal_ki"), headers=ki), 201)


def test_a_consent_takes_effect_when_recorded_never_earlier(client, world, clock, ki, chain):
    pid = chain["person_id"]
    for valid_from in ("2000-01-01T00:00:00Z", (clock.now - timedelta(days=1)).isoformat(),
                       (clock.now - timedelta(seconds=1)).isoformat()):
        body = problem(client.post(f"/persons/{pid}/consents", json=consent(world, "ennetal_ki", valid_from=valid_from),
                                   headers=ki), 422, "invalid-consent")
        assert "valid_from" in body["fields"]
    # The form signed yesterday: recorded now, with the signature date as evidence.
    signed = (clock.now - timedelta(days=1)).isoformat()
    out = ok(client.post(f"/persons/{pid}/consents", json=consent(world, "ennetal_ki", signed_at=signed),
                         headers=ki), 201)
    assert out["valid_from"] == out["recorded_at"]
    assert out["signed_at"].startswith((clock.now - timedelta(days=1)).date().isoformat())
    problem(client.post(f"/persons/{pid}/consents", json=consent(
        world, "ennetal_ki", signed_at=(clock.now + timedelta(days=1)).isoformat()), headers=ki), 422, "invalid-consent")
    # A start in the future is fine (it is not backdating).
    later = ok(client.post(f"/persons/{pid}/consents", json=consent(
        world, "ennetal_ki", valid_from=(clock.now + timedelta(days=3)).isoformat()), headers=ki), 201)
    assert later["status"] == "not_yet_valid"


@pytest.mark.parametrize("evidence, method", [("-", "written"), ("n/a", "written"), ("  ", "written"),
                                              ("..", "electronic"), ("EW-2026-1", "oral_documented"),
                                              ("liegt vor", "written")])
def test_a_health_consent_names_its_signed_form(client, world, ki, chain, evidence, method):
    body = consent(world, "ennetal_ki", categories=["health"], explicit_special=True,
                   evidence_reference=evidence, collection_method=method)
    resp = client.post(f"/persons/{chain['person_id']}/consents", json=body, headers=ki)
    assert resp.status_code == 422, resp.text
    ok(client.post(f"/persons/{chain['person_id']}/consents", json=body | {
        "evidence_reference": "EW-G-2026-0815", "collection_method": "written"}, headers=ki), 201)


def test_the_officer_sees_who_recorded_each_consent(client, auth, world, ki, chain):
    history = ok(client.get(f"/persons/{chain['person_id']}/consents", headers=auth("ennetal_ki", "dpo")))
    assert history[0]["recorded_by_organisation_name"] == "Kommunales Integrationszentrum Kreis Ennetal"
    assert history[0]["recorded_by_user"] == "user-ennetal_ki"


def test_consent_recorders_are_policy_data(tmp_path):
    import shutil

    from casemgmt.policy.loader import load_policies
    from casemgmt.policy.source import PolicyError
    from conftest import ROOT

    shutil.copytree(ROOT / "policies", tmp_path / "p")
    path = tmp_path / "p" / "legal_bases.yaml"
    path.write_text(path.read_text().replace("consent_recorders: [kommunales_integrationszentrum,",
                                             "consent_recorders: [no_such_kind,"))
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path / "p")
    assert "legal_bases.yaml" in str(info.value) and "consent_recorders[0]" in str(info.value)


# --- item 3: the Rechtskreiswechsel cannot be bypassed ---------------------------------------


def walk_to_rkw(client, auth, chain_id: str) -> None:
    soz, bb = auth("wittmar_sozialamt", "clerk"), auth("wittmar_buergerbuero", "clerk")
    for headers, key in ((soz, "arrival_assignment"), (soz, "accommodation"), (bb, "registration"),
                         (auth("bamf_ast", "clerk"), "asylum_decision"),
                         (auth("ennetal_abh", "clerk"), "residence_permit")):
        acted(client, headers, chain_id, key, "start")
        acted(client, headers, chain_id, key, "complete")
    acted(client, soz, chain_id, "asylblg_subsistence", "start")


def test_the_rechtskreis_changes_only_by_an_acknowledged_rechtskreiswechsel(client, auth, world, ki):
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    pid = person["id"]
    # Before any chain the case management may set it.
    ok(client.patch(f"/persons/{pid}", json={"fields": {"benefit_regime": "asylblg"}}, headers=ki))
    chain = started(client, ki, person)
    walk_to_rkw(client, auth, chain["id"])
    soz, jc = auth("wittmar_sozialamt", "clerk"), auth("ennetal_jobcenter", "clerk")
    for headers in (ki, soz):
        for value in ("sgb_ii", None, "asylblg"):
            body = problem(client.patch(f"/persons/{pid}", json={"fields": {"benefit_regime": value}},
                                        headers=headers), 409, "rechtskreis-by-handover")
            assert body["field"] == "benefit_regime"
    same = problem(client.post(f"/chains/{chain['id']}/handovers", json={
        "kind": "rechtskreiswechsel", "step_key": "asylblg_subsistence", "to_step_key": "sgb2_application",
        "benefit_regime": "asylblg"}, headers=soz), 422, "invalid-handover")
    assert same["field"] == "benefit_regime"
    h = ok(client.post(f"/chains/{chain['id']}/handovers", json={
        "kind": "rechtskreiswechsel", "step_key": "asylblg_subsistence", "to_step_key": "sgb2_application",
        "benefit_regime": "sgb_ii"}, headers=soz), 201)
    assert h["benefit_regime_from"] == "asylblg" and h["benefit_regime_to"] == "sgb_ii"
    assert ok(client.get(f"/handovers/{h['id']}", headers=jc))["benefit_regime_from"] == "asylblg"
    # While it waits, a PATCH cannot get around it (it used to, and the handover got stuck).
    problem(client.patch(f"/persons/{pid}", json={"fields": {"benefit_regime": "sgb_ii"}}, headers=soz),
            409, "rechtskreis-by-handover")
    done = ok(client.post(f"/handovers/{h['id']}/actions", json={"action": "acknowledge"}, headers=jc))
    assert done["state"] == "acknowledged"
    assert ok(client.get(f"/persons/{pid}", headers=jc))["fields"]["benefit_regime"] == "sgb_ii"
    c = get_chain(client, jc, chain["id"])
    assert step(c, "asylblg_subsistence")["state"] == "completed"
    assert step(c, "sgb2_application")["assigned_organisation_id"] == world.organisations["ennetal_jobcenter"]


# --- item 4: free texts that stay for ever or reach the steering group -------------------------


def test_reasons_in_the_histories_carry_no_personal_data(client, auth, world, ki, chain, db):
    from sqlalchemy import text

    soz = auth("wittmar_sozialamt", "clerk")
    cid = chain["id"]
    for reason in ("Frau Yilmaz ist krank", "sara yilmaz meldet sich nicht", "Rückruf unter 0171 2345678",
                   "geb. 14.02.2001", "Mail an sara.yilmaz@example.org", "Hauptstraße 95 unbekannt"):
        body = problem(client.post(f"/chains/{cid}/steps/arrival_assignment/actions",
                                   json={"action": "block", "reason": reason}, headers=soz), 422,
                       "personal-data-in-text")
        assert body["field"] == "reason" and body["hits"]
    assert step(get_chain(client, soz, cid), "arrival_assignment")["state"] == "ready"
    acted(client, soz, cid, "arrival_assignment", "block", reason="Unterlagen fehlen noch")
    problem(client.post(f"/chains/{cid}/close", json={"reason": "moved_away", "note": "zu Familie Yilmaz"},
                        headers=ki), 422, "personal-data-in-text")
    with db.connect() as conn:
        stored = " ".join(r for r in conn.execute(text("SELECT coalesce(reason, '') FROM chain_events")).scalars())
        refusals = conn.execute(text(
            "SELECT detail FROM audit_events WHERE subtype = 'text.refused' AND outcome = 'denied'")).scalars().all()
    assert "Yilmaz" not in stored and "0171" not in stored
    assert len(refusals) == 7 and all("Yilmaz" not in d and "0171" not in d for d in refusals)


def test_the_name_check_is_no_oracle_for_other_persons(client, auth, world, ki, chain):
    """A reason may not name the chain's person, but it does not reveal whether a bare word is
    the name of somebody else in the records."""
    other = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Krasniqi",
                       given_names="Dritan", birth_date="1980-01-01")
    assert other
    soz = auth("wittmar_sozialamt", "clerk")
    problem(client.post(f"/chains/{chain['id']}/steps/arrival_assignment/actions",
                        json={"action": "block", "reason": "Yilmaz fehlt"}, headers=soz), 422, "personal-data-in-text")
    c = acted(client, soz, chain["id"], "arrival_assignment", "block", reason="Krasniqi fehlt")
    assert step(c, "arrival_assignment")["state"] == "blocked"


def test_a_handover_answer_and_a_withdrawal_note_carry_no_personal_data(client, auth, world, ki, chain):
    abh = auth("ennetal_abh", "clerk")
    h = ok(client.post(f"/chains/{chain['id']}/handovers", json={"kind": "step", "step_key": "residence_permit"},
                       headers=ki), 201)
    problem(client.post(f"/handovers/{h['id']}/actions", json={
        "action": "reject", "reason": "Bitte Frau Sara Yilmaz direkt anrufen: 02302 123456"}, headers=abh),
        422, "personal-data-in-text")
    assert ok(client.get(f"/handovers/{h['id']}", headers=abh))["state"] == "requested"
    ok(client.post(f"/handovers/{h['id']}/actions", json={"action": "reject", "reason": "Nicht zuständig"},
                   headers=abh))
    consent_id = ok(client.get(f"/persons/{chain['person_id']}/consents", headers=ki))[0]["id"]
    problem(client.post(f"/consents/{consent_id}/withdraw", json={"note": "Sara Yilmaz rief an"}, headers=ki),
            422, "personal-data-in-text")
    assert ok(client.get(f"/persons/{chain['person_id']}/consents", headers=ki))[0]["status"] == "active"


def test_texts_for_the_steering_group_pass_the_scrubber(client, auth, world, ki, chain, db):
    from sqlalchemy import text

    mod, lg = auth("ennetal_ki", "moderator"), auth("ennetal_ki", "steering")
    problem(client.post("/conferences", json={
        "title": "Fallkonferenz zu Sara Yilmaz, Tel. 0171 2345678", "scheduled_at": "2026-03-10T09:00:00Z",
        "jurisdiction_id": world.jurisdictions["wittmar"], "participant_organisation_ids": []}, headers=mod),
        422, "personal-data-in-text")
    ok(client.post(f"/persons/{chain['person_id']}/consents", json=consent(
        world, "ennetal_ki", purpose="case_conference"), headers=ki), 201)
    conf = ok(client.post("/conferences", json={
        "title": "Fallkonferenz Wittmar März", "scheduled_at": "2026-03-10T09:00:00Z",
        "jurisdiction_id": world.jurisdictions["wittmar"], "participant_organisation_ids": []}, headers=mod), 201)
    ok(client.post(f"/conferences/{conf['id']}/phase", json={"phase": "case_phase"}, headers=mod))
    case = ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": chain["id"]}, headers=mod))["cases"][0]
    ok(client.post(f"/conferences/{conf['id']}/phase", json={"phase": "structural_phase"}, headers=mod))
    finding = {"barrier_category": "waiting_times", "field_of_action": "language",
               "organisation_kinds": ["course_provider"], "level": "organisation", "weather": "gewitter",
               "conference_case_ids": [case["id"]]}
    for bad in ("Wartezeit bei #SaraYilmaz zu lang", "sara_yilmaz wartet seit Monaten",
                "Kontakt sara at example dot de", "Rückruf 0171.234.5678 erbeten"):
        problem(client.post(f"/conferences/{conf['id']}/findings", json=finding | {"text": bad}, headers=mod),
                422, "personal-data-in-text")
    # A registered name of someone not on this agenda is not an oracle question.
    new_person(client, ki, world.jurisdictions["wittmar"], family_name="Berhane", given_names="Selam",
               birth_date="1985-05-05")
    out = ok(client.post(f"/conferences/{conf['id']}/findings",
                         json=finding | {"text": "Wartezeiten auf Kurse: Berhane wartet ebenfalls"}, headers=mod))
    finding_id = out["findings"][0]["id"]
    problem(client.post("/proposals", json={"title": "Kurse für Sara Yilmaz", "summary": "x",
                                            "finding_ids": [finding_id]}, headers=mod), 422, "personal-data-in-text")
    proposal = ok(client.post("/proposals", json={
        "title": "Kurse schneller", "summary": "Mehr Kursplätze kreisweit.", "finding_ids": [finding_id]},
        headers=mod), 201)
    ok(client.post(f"/proposals/{proposal['id']}/actions", json={"action": "submit"}, headers=mod))
    problem(client.post(f"/proposals/{proposal['id']}/actions", json={
        "action": "reject", "reason": "Frau Yilmaz hat schon einen Platz"}, headers=lg), 422, "personal-data-in-text")
    problem(client.post(f"/proposals/{proposal['id']}/actions", json={
        "action": "accept", "working_group_name": "AG Yilmaz", "lead_organisation_id": world.organisations["ennetal_ki"],
        "due_date": "2026-09-01"}, headers=lg), 422, "personal-data-in-text")
    ok(client.post(f"/proposals/{proposal['id']}/actions", json={
        "action": "accept", "working_group_name": "AG Kursplätze", "lead_organisation_id": world.organisations["ennetal_ki"],
        "due_date": "2026-09-01"}, headers=lg))
    with db.connect() as conn:
        kept = " ".join(conn.execute(text(
            "SELECT coalesce(reason, '') FROM proposal_events UNION ALL SELECT name FROM working_groups "
            "UNION ALL SELECT title FROM conferences UNION ALL SELECT text FROM findings")).scalars())
        refused = conn.execute(text("SELECT count(*) FROM audit_events WHERE subtype = 'text.refused'")).scalar()
    assert "Yilmaz" not in kept and "0171" not in kept
    assert refused == 8


def test_reading_the_rechtskreis_before_a_wechsel_is_audited_with_its_basis(client, auth, world, ki, db):
    """The sender's answer, the Jobcenter's view and its acknowledgement of a Rechtskreiswechsel
    show the regime the person had: a read of benefit data, in the audit trail with its legal
    basis (so the access report names it)."""
    import json

    from sqlalchemy import select

    from casemgmt.privacy.models import AuditEvent

    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Sarr", given_names="Awa",
                        birth_date="1988-08-08")
    chain = started(client, ki, person)
    soz, jc = auth("wittmar_sozialamt", "clerk"), auth("ennetal_jobcenter", "clerk")
    acted(client, soz, chain["id"], "arrival_assignment", "start")
    acted(client, soz, chain["id"], "arrival_assignment", "complete")
    acted(client, soz, chain["id"], "asylblg_subsistence", "start")
    h = ok(client.post(f"/chains/{chain['id']}/handovers", json={
        "kind": "rechtskreiswechsel", "step_key": "asylblg_subsistence", "to_step_key": "sgb2_application",
        "benefit_regime": "sgb_ii"}, headers=soz), 201)
    assert h["benefit_regime_from"] == "asylblg"  # the sender's answer shows it too
    assert ok(client.get(f"/handovers/{h['id']}", headers=jc))["benefit_regime_from"] == "asylblg"
    acknowledged = ok(client.post(f"/handovers/{h['id']}/actions", json={"action": "acknowledge"}, headers=jc))
    assert acknowledged["benefit_regime_from"] == "asylblg"

    def read_of_regime(org: str, *subtypes: str) -> str:
        with db.connect() as conn:
            row = conn.execute(select(AuditEvent.fields, AuditEvent.legal_bases).where(
                AuditEvent.entity_id == h["id"], AuditEvent.subtype.in_(subtypes),
                AuditEvent.agent_organisation_id == world.organisations[org])).one()
        bases = json.loads(row.legal_bases) if isinstance(row.legal_bases, str) else row.legal_bases
        assert "benefit_regime" in row.fields, (org, subtypes)
        return bases["benefit_regime"]

    # Every answer that showed it is audited as a read, with its basis, in its own transaction.
    assert read_of_regime("wittmar_sozialamt", "handover.request")
    assert read_of_regime("ennetal_jobcenter", "handover.read", "handover.package.read")
    assert read_of_regime("ennetal_jobcenter", "handover.acknowledge")
