"""A person read and a step transition write their audit entries in one statement at commit: a
statement they run anyway (the read's scope check, the transition's chain lock) brings the head
of the person's audit stream along, so no locked SELECT of the head is needed (issue 14). What
they show, change and audit stays the same; the handover answer's case is in
test_handover_answer.py."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import event, text
from test_api import started
from test_rights_api import NAMES, new_person

from http_helpers import ok
from sqlalchemy.engine import Engine
from test_privacy_api import cm, register, schulamt_consent, start_chain  # noqa: F401 (fixture)

from casemgmt.demo.seed import actor_of
from casemgmt.jurisdictions.models import Organisation
from casemgmt.privacy import service
from casemgmt.privacy.audit import verify
from casemgmt.privacy.service import Privacy, read_person


def test_a_person_read_audits_in_one_statement_and_the_trail_verifies(client, auth, world, clock, engine,
                                                                      session_factory, policies, keys):
    cm = auth("ennetal_ki", "case_manager")
    person = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    started(client, cm, person)
    privacy = Privacy(policies.data, keys)
    seen: list[str] = []
    with session_factory() as session:
        ki = actor_of(session.get(Organisation, world.organisations["ennetal_ki"]), "cm", frozenset({"case_manager"}))
        event.listen(session.connection(), "before_cursor_execute",
                     lambda conn, cursor, statement, *a: seen.append(statement))
        out = read_person(session, privacy, ki, uuid.UUID(person["id"]), None, clock.now)
    assert out.fields["family_name"] == NAMES["family_name"]
    audit_statements = [s for s in seen if "audit_events" in s or "audit_head" in s]
    head_reads = [s for s in audit_statements if "FOR UPDATE" in s]
    writes = [s for s in audit_statements if "INSERT INTO audit_events" in s]
    assert head_reads == [] and len(writes) == 1, audit_statements
    with engine.connect() as conn:
        last = conn.execute(text("SELECT subtype, person_id, agent_organisation_id FROM audit_events "
                                 "ORDER BY id DESC LIMIT 1")).one()
        assert (last.subtype, last.person_id) == ("person.read", person["id"])
        assert last.agent_organisation_id == world.organisations["ennetal_ki"]
        assert verify(conn, keys.audit_key).ok


def test_the_consents_and_fields_the_read_brings_along_are_exactly_those_read_on_their_own(
        client, cm, world, clock, session_factory):  # noqa: F811 (fixture)
    """Recipients by organisation and by kind and area, a withdrawn one, one with an end: the
    consents that come with the read's scope check (JSON) are the consents read on their own, and
    so are the stored fields with the wrapped key."""
    person = register(client, cm, world)  # brings an intake consent to the integration centres by kind and area
    start_chain(client, cm, person)
    pid = person["id"]
    clock.advance(minutes=3)
    withdrawn = ok(client.post(f"/persons/{pid}/consents", json=schulamt_consent(world), headers=cm), 201)
    clock.advance(minutes=3)
    ok(client.post(f"/consents/{withdrawn['id']}/withdraw", json={"note": "per Telefon"}, headers=cm))
    ending = schulamt_consent(world, valid_until=(clock.now + timedelta(days=365)).replace(microsecond=123456).isoformat())
    ok(client.post(f"/persons/{pid}/consents", json=ending, headers=cm), 201)
    with session_factory() as session:
        ki = actor_of(session.get(Organisation, world.organisations["ennetal_ki"]), "cm", frozenset({"case_manager"}))
        _, _, brought = service._person_access(session, ki, uuid.UUID(pid))
        read_alone = service.consent_grants(session, uuid.UUID(pid))
        stored_alone = service.StoredFields.read(session, uuid.UUID(pid))
        session.rollback()
    assert brought.stored == stored_alone and stored_alone.wrapped is not None
    assert set(stored_alone.ciphertexts) >= {"family_name", "given_names"}
    assert brought.consents is not None and len(brought.consents) == 3
    assert sorted(brought.consents, key=lambda g: g.id) == sorted(read_alone, key=lambda g: g.id)
    kinds = [g.recipient_kinds for g in read_alone if g.recipient_kinds]
    assert kinds and all(k.jurisdiction_path for group in kinds for k in group)  # the area came along
    assert sum(g.withdrawn_at is not None for g in brought.consents) == 1
    assert sum(g.valid_until is not None for g in brought.consents) >= 1


def _statements_of(fn) -> list[str]:
    """Every statement any engine sends while ``fn`` runs (the app's engine is its own)."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        fn()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    return seen


def test_a_step_transition_appends_its_audit_rows_without_locking_the_head_first(client, auth, world, engine, keys):
    cm, sozialamt = auth("ennetal_ki", "case_manager"), auth("wittmar_sozialamt", "clerk")
    chain = started(client, cm, new_person(client, cm, world.jurisdictions["wittmar"], **NAMES))
    answer: dict = {}

    def act() -> None:  # the Sozialamt starts the arrival assignment, as in bench/load.py
        answer.update(ok(client.post(f"/chains/{chain['id']}/steps/arrival_assignment/actions", headers=sozialamt,
                                     json={"action": "start", "expected_version": chain["version"]})))

    seen = _statements_of(act)
    assert answer["version"] == chain["version"] + 1
    head_locks = [s for s in seen if s.lstrip().startswith("SELECT audit_head.stream")]  # audit._LOCK_HEADS
    appends = [s for s in seen if "INSERT INTO audit_events" in s]
    assert head_locks == [] and len(appends) == 1, (head_locks, appends)
    with engine.connect() as conn:
        last = conn.execute(text("SELECT subtype, person_id FROM audit_events ORDER BY id DESC LIMIT 1")).one()
        assert last.person_id == chain["person_id"]
        assert verify(conn, keys.audit_key).ok
