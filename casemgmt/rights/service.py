"""The data protection officer's use cases: the request register, restriction, legal hold,
erasure, the access report and the portable copy. One request, one transaction; every step is
audited; the officer sees the persons of their area (``person_area_clause``)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casemgmt.chains.engine import Actor
from casemgmt.chains.models import Chain, ChainStep
from casemgmt.conferences.models import Conference, ConferenceAgreement, ConferenceCase, ConferenceParticipant
from casemgmt.database import unit_of_work
from casemgmt.handovers.models import Handover
from casemgmt.jurisdictions.models import Organisation
from casemgmt.languagepass import CATEGORY as LANGUAGE_PASS_CATEGORY
from casemgmt.languagepass import ENTITY as LANGUAGE_PASS
from casemgmt.languagepass import RECORD_CATEGORIES
from casemgmt.languagepass.schemas import EntryOut
from casemgmt.languagepass.service import person_entries
from casemgmt.offers.models import Offer, OfferBooking
from casemgmt.persons.models import Person
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.models import AuditEvent, Consent, ConsentWithdrawal, DataExchangeAgreement
from casemgmt.privacy.service import (
    Privacy,
    check_free_text,
    consent_out,
    deny_and_raise,
    disclose,
    person_area_clause,
    person_data_key,
    write_audit,
)
from casemgmt.problems import (
    ErasureRefused,
    NotFound,
    RequestMismatch,
    RestrictionState,
    ValidationFailed,
    VersionConflict,
)
from casemgmt.rights import erasure, periods
from casemgmt.rights.gate import refuse_unless_active
from casemgmt.rights.lifecycle import (
    FINAL,
    OPEN,
    RequestAction,
    RequestKind,
    RequestStatus,
    allowed_actions,
    next_state,
)
from casemgmt.rights.models import DataSubjectRequest, LegalHold, PersonRestriction
from casemgmt.rights.schemas import (
    ErasureIn,
    ErasureOut,
    MeasureOut,
    MeasuresOut,
    RequestActionIn,
    RequestCounts,
    RequestIn,
    RequestOut,
    RequestPage,
)


def _not_found(person_id: uuid.UUID) -> NotFound:
    return NotFound(f"no person {person_id}", resource="person", id=str(person_id))


def area_person(session: Session, actor: Actor, person_id: uuid.UUID, lock: bool = False) -> Person:
    """A person of the officer's area; 404 alike for a real id elsewhere and a random one."""
    stmt = select(Person).where(Person.id == person_id, person_area_clause(actor))
    if lock:
        stmt = stmt.with_for_update(of=Person)
    person = session.scalar(stmt)
    if person is None:
        raise _not_found(person_id)
    return person


def _audit(actor: Actor, action: str, subtype: str, entity_type: str, entity_id: Any,
           person_id: uuid.UUID | None, detail: str | None = None, fields: tuple[str, ...] = ()) -> AuditEntry:
    return AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action=action,
                      subtype=subtype, entity_type=entity_type, entity_id=str(entity_id),
                      person_id=person_id, detail=detail, fields=fields)


def _text(session: Session, privacy: Privacy, text: str | None, field: str, person_id: uuid.UUID,
          actor: Actor, now: datetime, entity_type: str, entity_id: str | None) -> str | None:
    """Reasons and outcomes are kept in the register for years: no names, birth dates, ... in them."""
    if text is None:
        return None
    text = text.strip()
    check_free_text(session, privacy, text, field, [person_id], actor, now,
                    entity_type=entity_type, entity_id=entity_id)
    return text


# --- the request register ------------------------------------------------------------------------


def request_out(r: DataSubjectRequest, now: datetime) -> RequestOut:
    state = RequestStatus(r.state)
    return RequestOut(
        id=r.id, person_id=r.person_id, kind=RequestKind(r.kind), state=state, received_at=r.received_at,
        identity_checked_by=r.identity_checked_by, identity_check_method=r.identity_check_method,
        original_due_date=r.original_due_date, due_date=r.due_date,
        overdue=state in OPEN and periods.local_date(now) > r.due_date,
        extension_reason=r.extension_reason, outcome=r.outcome, refusal_reason=r.refusal_reason,
        answered_at=r.answered_at, registered_by_organisation_id=r.registered_by_organisation_id,
        version=r.version, allowed_actions=allowed_actions(state),
    )


def register_request(session: Session, privacy: Privacy, calendar, actor: Actor, body: RequestIn,
                     now: datetime) -> RequestOut:
    with unit_of_work(session):
        person = area_person(session, actor, body.person_id)
        received = body.received_at or now
        if received > now:
            raise ValidationFailed("received_at lies in the future", errors=[
                {"field": "body.received_at", "message": "a request is registered after it arrived", "type": "value_error"}])
        request_id = uuid.uuid4()
        checked_by = _text(session, privacy, body.identity_checked_by, "identity_checked_by", person.id, actor,
                           now, "data_subject_request", str(request_id))
        method = _text(session, privacy, body.identity_check_method, "identity_check_method", person.id, actor,
                       now, "data_subject_request", str(request_id))
        due = periods.answer_due(received, calendar.is_working_day)
        r = DataSubjectRequest(
            id=request_id, person_id=person.id, kind=body.kind.value, state=RequestStatus.received.value,
            received_at=received, identity_checked_by=checked_by, identity_check_method=method,
            original_due_date=due, due_date=due, registered_by_user=actor.user_id,
            registered_by_organisation_id=actor.organisation_id, created_at=now, updated_at=now, version=1)
        session.add(r)
        session.flush()
        write_audit(session, [_audit(actor, "C", "request.register", "data_subject_request", r.id, person.id,
                                     f"{body.kind.value}, due {due}")], now)
        out = request_out(r, now)
    return out


def _request_in_area(session: Session, actor: Actor, request_id: uuid.UUID, lock: bool = False) -> DataSubjectRequest:
    stmt = (select(DataSubjectRequest).join(Person, Person.id == DataSubjectRequest.person_id)
            .where(DataSubjectRequest.id == request_id, person_area_clause(actor)))
    if lock:
        stmt = stmt.with_for_update(of=DataSubjectRequest)
    r = session.scalar(stmt)
    if r is None:
        raise NotFound(f"no data subject request {request_id}", resource="data_subject_request", id=str(request_id))
    return r


def get_request(session: Session, actor: Actor, request_id: uuid.UUID, now: datetime) -> RequestOut:
    with unit_of_work(session):
        r = _request_in_area(session, actor, request_id)
        write_audit(session, [_audit(actor, "R", "request.read", "data_subject_request", r.id, r.person_id)], now)
        out = request_out(r, now)
    return out


def list_requests(session: Session, actor: Actor, state: str | None, kind: str | None, overdue: bool | None,
                  person_id: uuid.UUID | None, limit: int, now: datetime) -> RequestPage:
    """Open requests first, overdue ones at the top, then by due date (as the handover inbox);
    answered and refused ones after them, newest first."""
    today = periods.local_date(now)
    conds = [person_area_clause(actor)]
    if state == "open":
        conds.append(DataSubjectRequest.state.in_([s.value for s in OPEN]))
    elif state is not None:
        conds.append(DataSubjectRequest.state == state)
    if kind is not None:
        conds.append(DataSubjectRequest.kind == kind)
    if person_id is not None:
        conds.append(DataSubjectRequest.person_id == person_id)
    is_open = DataSubjectRequest.state.in_([s.value for s in OPEN])
    if overdue is not None:
        late = is_open & (DataSubjectRequest.due_date < today)
        conds.append(late if overdue else ~late)
    base = select(DataSubjectRequest).join(Person, Person.id == DataSubjectRequest.person_id).where(*conds)
    rows = session.scalars(base.order_by((~is_open).asc(), DataSubjectRequest.due_date.asc(),
                                         DataSubjectRequest.received_at.asc()).limit(limit)).all()
    counts = RequestCounts()
    area = select(DataSubjectRequest.state, func.count(),
                  func.count().filter(is_open & (DataSubjectRequest.due_date < today))) \
        .join(Person, Person.id == DataSubjectRequest.person_id).where(person_area_clause(actor)) \
        .group_by(DataSubjectRequest.state)
    for name, n, late in session.execute(area):
        setattr(counts, name, n)
        counts.overdue += late
    with unit_of_work(session):
        write_audit(session, [_audit(actor, "R", "request.list", "data_subject_request", "register", None,
                                     f"{len(rows)} requests")], now)
    return RequestPage(items=[request_out(r, now) for r in rows], counts=counts)


def act_on_request(session: Session, privacy: Privacy, calendar, actor: Actor, request_id: uuid.UUID,
                   body: RequestActionIn, now: datetime) -> RequestOut:
    with unit_of_work(session):
        r = _request_in_area(session, actor, request_id, lock=True)
        if body.expected_version is not None and body.expected_version != r.version:
            raise VersionConflict(f"the request is at version {r.version}", version=r.version)
        state = next_state(RequestStatus(r.state), body.action)
        needs_text = body.action in (RequestAction.extend, RequestAction.refuse, RequestAction.answer)
        if needs_text and not (body.reason or "").strip():
            raise ValidationFailed("reason: say why (extend, refuse) or what the answer was (answer)", errors=[
                {"field": "body.reason", "message": "required for " + body.action.value, "type": "missing"}])
        text = _text(session, privacy, body.reason, "reason", r.person_id, actor, now,
                     "data_subject_request", str(r.id))
        if body.action is RequestAction.extend:
            r.extension_reason = text
            r.due_date = periods.extended_due(r.received_at, calendar.is_working_day)
        elif body.action is RequestAction.answer:
            r.outcome, r.answered_at = text, now
        elif body.action is RequestAction.refuse:
            r.refusal_reason, r.answered_at = text, now
        r.state, r.version, r.updated_at = state.value, r.version + 1, now
        write_audit(session, [_audit(actor, "U", f"request.{body.action.value}", "data_subject_request", r.id,
                                     r.person_id, f"now {state.value}, due {r.due_date}")], now)
        out = request_out(r, now)
    return out


def _open_request_for(session: Session, request_id: uuid.UUID, person_id: uuid.UUID,
                      kinds: tuple[RequestKind, ...], allow_answered: bool = False) -> DataSubjectRequest:
    r = session.get(DataSubjectRequest, request_id, with_for_update=True)
    states = {s.value for s in OPEN} | ({RequestStatus.answered.value} if allow_answered else set())
    if r is None or r.person_id != person_id or r.kind not in {k.value for k in kinds} or r.state not in states:
        raise RequestMismatch(
            f"request {request_id} is not an open {' or '.join(k.value for k in kinds)} request of this person",
            request_id=str(request_id), expected_kind=[k.value for k in kinds])
    return r


# --- restriction and legal hold ------------------------------------------------------------------


def _measure_out(m, kind: str) -> MeasureOut:
    return MeasureOut(id=m.id, kind=kind, person_id=m.person_id, reason=m.reason,
                      request_id=getattr(m, "request_id", None), set_at=m.set_at,
                      set_by_organisation_id=m.set_by_organisation_id, lifted_at=m.lifted_at,
                      lift_reason=m.lift_reason)


def _measures(session: Session, model, person_id: uuid.UUID, kind: str) -> MeasuresOut:
    rows = session.scalars(select(model).where(model.person_id == person_id).order_by(model.set_at.desc(), model.id.desc())).all()
    active = next((m for m in rows if m.lifted_at is None), None)
    return MeasuresOut(active=_measure_out(active, kind) if active else None,
                       history=[_measure_out(m, kind) for m in rows])


def read_measures(session: Session, actor: Actor, person_id: uuid.UUID, kind: str, now: datetime) -> MeasuresOut:
    """Only the data protection officer sees that a restriction or a hold exists, and why."""
    with unit_of_work(session):
        area_person(session, actor, person_id)
        model = PersonRestriction if kind == "restriction" else LegalHold
        out = _measures(session, model, person_id, kind)
        write_audit(session, [_audit(actor, "R", f"{kind}.read", "person", person_id, person_id)], now)
    return out


def set_measure(session: Session, privacy: Privacy, actor: Actor, person_id: uuid.UUID, kind: str,
                reason: str, request_id: uuid.UUID | None, now: datetime) -> MeasuresOut:
    with unit_of_work(session):
        person = area_person(session, actor, person_id, lock=True)
        refuse_unless_active(person.processing if person.processing == "erased" else "active", person.id)
        model = PersonRestriction if kind == "restriction" else LegalHold
        if session.scalar(select(model.id).where(model.person_id == person_id, model.lifted_at.is_(None))) is not None:
            raise RestrictionState(f"a {kind.replace('_', ' ')} is already set for this person")
        text = _text(session, privacy, reason, "reason", person.id, actor, now, kind, str(person_id))
        values = dict(person_id=person_id, reason=text, set_at=now, set_by_user=actor.user_id,
                      set_by_organisation_id=actor.organisation_id)
        if kind == "restriction":
            if request_id is not None:
                _open_request_for(session, request_id, person_id, (RequestKind.restriction, RequestKind.erasure,
                                                                   RequestKind.objection, RequestKind.rectification))
            values["request_id"] = request_id
            person.processing = "restricted"
        session.add(model(**values))
        session.flush()
        write_audit(session, [_audit(actor, "C", f"{kind}.set", "person", person_id, person_id,
                                     f"request {request_id}" if request_id else None)], now)
        out = _measures(session, model, person_id, kind)
    return out


def lift_measure(session: Session, privacy: Privacy, actor: Actor, person_id: uuid.UUID, kind: str,
                 reason: str, now: datetime) -> MeasuresOut:
    with unit_of_work(session):
        person = area_person(session, actor, person_id, lock=True)
        model = PersonRestriction if kind == "restriction" else LegalHold
        active = session.scalar(select(model).where(model.person_id == person_id, model.lifted_at.is_(None)))
        if active is None:
            raise RestrictionState(f"no {kind.replace('_', ' ')} is set for this person")
        active.lift_reason = _text(session, privacy, reason, "reason", person.id, actor, now, kind, str(person_id))
        active.lifted_at, active.lifted_by_user = now, actor.user_id
        if kind == "restriction" and person.processing == "restricted":
            person.processing = "active"
        write_audit(session, [_audit(actor, "U", f"{kind}.lift", "person", person_id, person_id)], now)
        session.flush()
        out = _measures(session, model, person_id, kind)
    return out


# --- erasure -------------------------------------------------------------------------------------


def erase_on_request(session: Session, privacy: Privacy, conference_category: str, actor: Actor,
                     person_id: uuid.UUID, body: ErasureIn, now: datetime):
    """Erase the person for an erasure request, or refuse (409 erasure-refused, audited) where a
    legal hold, an open chain or a running retention obligation stands against it. Returns the
    answer and the tombstone (for the file beside the audit checkpoints)."""
    from casemgmt.rights.tombstones import Tombstone

    with unit_of_work(session):
        person = area_person(session, actor, person_id, lock=True)
        refuse_unless_active(person.processing, person.id, allow_restricted=True)
        request = _open_request_for(session, body.request_id, person.id, (RequestKind.erasure,))
        assessment = _text(session, privacy, body.legal_assessment, "legal_assessment", person.id, actor, now,
                           "data_subject_request", str(request.id))
        obstacles = erasure.erasure_obstacles(session, privacy, conference_category, person, now)
        if obstacles:
            deny_and_raise(session, _audit(actor, "D", "person.erase", "person", person.id, person.id,
                                           "refused: " + "; ".join(o["kind"] for o in obstacles)), now,
                           ErasureRefused("erasure refused: " + "; ".join(o["message"] for o in obstacles),
                                          obstacles=obstacles, request_id=str(request.id)))
        tombstone = erasure.erase(session, privacy, person, now, cause="request", request_id=request.id,
                                  agent_user=actor.user_id, agent_organisation_id=actor.organisation_id)
        request.state, request.outcome, request.answered_at = RequestStatus.answered.value, assessment, now
        request.version, request.updated_at = request.version + 1, now
        write_audit(session, [_audit(actor, "U", "request.answer", "data_subject_request", request.id,
                                     person.id, "erased")], now)
        out = ErasureOut(person_id=person.id, erased_at=tombstone.erased_at, cause=tombstone.cause,
                         request_id=request.id, request_state=RequestStatus.answered)
    return out, Tombstone(person.id, tombstone.erased_at, tombstone.cause, request.id)


# --- access report and portable copy ---------------------------------------------------------------

RIGHTS = [
    ("Auskunft", "Art. 15 DSGVO", "Sie können jederzeit fragen, welche Daten wir über Sie speichern."),
    ("Berichtigung", "Art. 16 DSGVO", "Sind Daten falsch, berichtigen wir sie."),
    ("Löschung", "Art. 17 DSGVO", "Sie können verlangen, dass wir Ihre Daten löschen, wenn keine gesetzliche "
                                    "Pflicht zur Aufbewahrung besteht."),
    ("Einschränkung", "Art. 18 DSGVO", "Sie können verlangen, dass wir Ihre Daten nur noch speichern und "
                                         "nicht mehr anders verwenden."),
    ("Datenübertragbarkeit", "Art. 20 DSGVO", "Die Daten, die Sie uns selbst gegeben haben, erhalten Sie in "
                                                "einem maschinenlesbaren Format."),
    ("Widerspruch", "Art. 21 DSGVO", "Sie können der Verarbeitung aus Gründen Ihrer besonderen Situation "
                                       "widersprechen."),
    ("Widerruf der Einwilligung", "Art. 7 Abs. 3 DSGVO", "Eine Einwilligung können Sie jederzeit für die "
                                                          "Zukunft widerrufen."),
    ("Beschwerde", "Art. 77 DSGVO", "Sie können sich bei der Aufsichtsbehörde beschweren: der "
                                     "Landesbeauftragten für Datenschutz und Informationsfreiheit "
                                     "Nordrhein-Westfalen."),
]


def _org_names(session: Session, ids) -> dict[int, str]:
    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(session.execute(select(Organisation.id, Organisation.name).where(Organisation.id.in_(ids))).all())


def _basis_text(privacy: Privacy, basis: str | None, consents: dict[str, Consent],
                agreements: dict[str, str]) -> str | None:
    """A legal basis in words: the statute, the consent and its date, or the agreement's title."""
    if not basis:
        return None
    kind, _, ref = basis.partition(":")
    if kind == "statute":
        law = next((s.law for s in privacy.policy.statutes if s.id == ref), None)
        return f"Gesetz: {law}" if law else basis
    if kind == "consent" and ref in consents:
        return f"Ihre Einwilligung vom {consents[ref].recorded_at:%d.%m.%Y}"
    if kind == "agreement" and ref in agreements:
        return f"Datenaustauschvereinbarung „{agreements[ref]}“"
    if kind.startswith("gdpr_art"):
        return f"Ihr Antrag nach Art. {kind.removeprefix('gdpr_art')} DSGVO"
    return basis


def category_of(policy, field: str) -> str | None:
    """The data category of an audited field: a field of policies/data.yaml, or a record kind
    kept outside the person's fields (the Sprachenpass)."""
    spec = policy.fields.get(field)
    return spec.category if spec is not None else RECORD_CATEGORIES.get(field)


def _language_pass_out(entry: EntryOut) -> dict[str, Any]:
    """One Sprachenpass entry as the person reads it: the course, who ran it, when, how long,
    the levels and certificates (no ids of the service's records)."""
    return {"course_title": entry.course_title, "language": entry.language, "provider": entry.provider,
            "from_date": entry.from_date.isoformat(), "to_date": entry.to_date.isoformat() if entry.to_date else None,
            "hours": entry.hours, "levels": dict(entry.levels),
            "certificates": [c.model_dump(mode="json") for c in entry.certificates],
            "recorded_at": entry.recorded_at.isoformat()}


def _read_language_pass(session: Session, privacy: Privacy, actor: Actor, person: Person, article: str,
                        request_id: uuid.UUID, purpose: str, subtype: str, now: datetime) -> list[EntryOut]:
    """The person's Sprachenpass for their own request (Art. 15 or 20), the read audited with the
    request as its basis (as ``disclose`` does for the fields)."""
    entries = person_entries(session, privacy, person.id)
    if entries:
        write_audit(session, [AuditEntry(
            agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="R", subtype=subtype,
            entity_type=LANGUAGE_PASS, entity_id=str(person.id), person_id=person.id, fields=(LANGUAGE_PASS,),
            legal_bases={LANGUAGE_PASS: f"gdpr_art{article}:request {request_id}"}, purpose=purpose,
            detail=f"{len(entries)} entries")], now)
    return entries


def access_report(session: Session, privacy: Privacy, policies, actor: Actor, person_id: uuid.UUID,
                  request_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    """Everything the service holds about the person (GDPR Art. 15), for a registered access
    request: values with category, purpose and legal basis of storage; who read which categories
    when and on which basis; consents; chains, steps, handovers and conference cases; the retention
    of each category; the person's rights. Other persons and users are never named; organisations
    are."""
    with unit_of_work(session):
        person = area_person(session, actor, person_id)
        refuse_unless_active(person.processing, person.id, allow_restricted=True)
        request = _open_request_for(session, request_id, person.id, (RequestKind.access,), allow_answered=True)
        policy = privacy.policy
        purpose = "data_subject_rights" if "data_subject_rights" in policy.purposes else next(iter(policy.purposes))
        record = disclose(session, privacy, actor, person, purpose, now, subtype="person.access_report",
                          data_subject_request=("15", request.id))
        language_pass = _read_language_pass(session, privacy, actor, person, "15", request.id, purpose,
                                            "person.access_report.language_pass", now)
        consents = {str(c.id): c for c in session.scalars(select(Consent).where(Consent.person_id == person.id))}
        agreements = {str(a.id): a.title for a in session.scalars(select(DataExchangeAgreement))}
        audit_rows = session.execute(
            select(AuditEvent.recorded_at, AuditEvent.agent_organisation_id, AuditEvent.action, AuditEvent.subtype,
                   AuditEvent.fields, AuditEvent.legal_bases, AuditEvent.purpose)
            .where(AuditEvent.person_id == str(person.id), AuditEvent.outcome == "success")
            .order_by(AuditEvent.id)).all()
        stored: dict[str, dict[str, Any]] = {}
        reads: dict[tuple, dict[str, Any]] = {}
        for row in audit_rows:
            fields = json.loads(row.fields)
            bases = json.loads(row.legal_bases)
            if row.action in ("C", "U") and fields:
                for f in fields:
                    stored[f] = {"organisation_id": row.agent_organisation_id, "at": row.recorded_at,
                                 "purpose": row.purpose, "basis": bases.get(f)}
            elif row.action == "R" and fields and row.agent_organisation_id is not None \
                    and not row.subtype.startswith("person.access_report"):
                cats = tuple(sorted({c for c in (category_of(policy, f) for f in fields) if c is not None}))
                basis_set = tuple(sorted({b for b in bases.values() if b}))
                key = (row.agent_organisation_id, periods.local_date(row.recorded_at), cats, basis_set, row.purpose)
                reads.setdefault(key, {"times": 0})["times"] += 1
        org_ids = {s["organisation_id"] for s in stored.values()} | {k[0] for k in reads}
        chains = session.scalars(select(Chain).where(Chain.person_id == person.id).order_by(Chain.started_at)).all()
        steps = session.scalars(select(ChainStep).where(ChainStep.chain_id.in_([c.id for c in chains]))
                                .order_by(ChainStep.id)).all() if chains else []
        handovers = session.scalars(select(Handover).where(Handover.person_id == person.id)
                                    .order_by(Handover.requested_at)).all()
        cases = session.execute(select(ConferenceCase, Conference).join(Conference, Conference.id == ConferenceCase.conference_id)
                                .where(ConferenceCase.person_id == person.id).order_by(Conference.scheduled_at)).all()
        participants: dict[uuid.UUID, list[int]] = {}
        for conf_id, org_id in session.execute(select(ConferenceParticipant.conference_id, ConferenceParticipant.organisation_id)
                                               .where(ConferenceParticipant.conference_id.in_([c.id for _, c in cases]))):
            participants.setdefault(conf_id, []).append(org_id)
        bookings = session.execute(
            select(OfferBooking, Offer.title, Offer.provider_organisation_id)
            .join(Offer, Offer.id == OfferBooking.offer_id).where(OfferBooking.person_id == person.id)
            .order_by(func.coalesce(OfferBooking.referred_at, OfferBooking.enrolled_at), OfferBooking.id)).all()
        withdrawals = dict(session.execute(select(ConsentWithdrawal.consent_id, ConsentWithdrawal.withdrawn_at)
                                           .where(ConsentWithdrawal.consent_id.in_([c.id for c in consents.values()]))).all()) if consents else {}
        org_ids |= {c.case_management_organisation_id for c in chains} | {s.assigned_organisation_id for s in steps}
        org_ids |= {h.sender_organisation_id for h in handovers} | {h.receiver_organisation_id for h in handovers}
        org_ids |= {c.recorded_by_organisation_id for c in consents.values()}
        org_ids |= {o for ids in participants.values() for o in ids}
        org_ids |= {provider for _, _, provider in bookings}
        org_ids |= {r.get("organisation_id") for c in consents.values() for r in c.recipients}
        names = _org_names(session, org_ids)
        agreement_texts = _agreement_texts(session, privacy, person.id, [case.id for case, _ in cases])
        clocks = erasure.clocks_of(session, [person.id])[person.id]
        dues = erasure.due_dates(policy, clocks)
        templates = policies.templates
        report: dict[str, Any] = {
            "person_id": str(person.id),
            "request_id": str(request.id),
            "generated_at": now.isoformat(),
            "controller": "the municipality operating this installation",
            "registered": {"at": person.created_at.isoformat(),
                           "by_organisation": names.get(person.created_by_organisation_id)
                           or _org_names(session, [person.created_by_organisation_id]).get(person.created_by_organisation_id)},
            "processing": person.processing,
            "fields": [
                {"field": f, "title": policy.fields[f].title, "value": v,
                 "category": policy.fields[f].category, "category_title": policy.categories[policy.fields[f].category].title,
                 "purpose": stored.get(f, {}).get("purpose"),
                 "purpose_title": policy.purposes.get(stored.get(f, {}).get("purpose") or "", None),
                 "legal_basis": stored.get(f, {}).get("basis"),
                 "legal_basis_text": _basis_text(privacy, stored.get(f, {}).get("basis"), consents, agreements),
                 "written_by_organisation": names.get(stored.get(f, {}).get("organisation_id")),
                 "written_at": stored[f]["at"].isoformat() if f in stored else None}
                for f, v in record.fields.items()
            ],
            "recipients": [
                {"organisation": names.get(org), "date": day.isoformat(), "categories": list(cats),
                 "category_titles": [policy.categories[c].title for c in cats],
                 "legal_bases": list(bases), "legal_basis_texts": [_basis_text(privacy, b, consents, agreements) for b in bases],
                 "purpose": purpose, "accesses": info["times"]}
                for (org, day, cats, bases, purpose), info in sorted(reads.items(), key=lambda kv: (kv[0][1], names.get(kv[0][0]) or ""))
            ],
            "consents": [
                {"recorded_at": c.recorded_at.isoformat(), "recorded_by_organisation": names.get(c.recorded_by_organisation_id),
                 "categories": list(c.categories), "purpose": c.purpose,
                 "recipients": [names.get(r["organisation_id"]) if "organisation_id" in r
                                else f"{r['organisation_kind']} (jurisdiction {r['jurisdiction_id']})" for r in c.recipients],
                 "valid_from": c.valid_from.isoformat(), "valid_until": c.valid_until.isoformat() if c.valid_until else None,
                 "withdrawn_at": withdrawals[c.id].isoformat() if c.id in withdrawals else None,
                 "status": consent_out(c, withdrawals.get(c.id), now).status}
                for c in sorted(consents.values(), key=lambda c: c.recorded_at)
            ],
            "chains": [
                {"template": c.template_key, "title": templates[c.template_key].title if c.template_key in templates else c.template_key,
                 "case_management": names.get(c.case_management_organisation_id), "started_at": c.started_at.isoformat(),
                 "status": c.lifecycle, "ended_at": (c.completed_at or c.closed_at).isoformat() if (c.completed_at or c.closed_at) else None,
                 "steps": [{"step": s.key, "state": s.state, "organisation": names.get(s.assigned_organisation_id),
                            "started_at": s.started_at.isoformat() if s.started_at else None,
                            "completed_at": s.completed_at.isoformat() if s.completed_at else None,
                            "reason": s.reason} for s in steps if s.chain_id == c.id]}
                for c in chains
            ],
            "handovers": [
                {"kind": h.kind, "from": names.get(h.sender_organisation_id), "to": names.get(h.receiver_organisation_id),
                 "state": h.state, "requested_at": h.requested_at.isoformat(),
                 "answered_at": h.responded_at.isoformat() if h.responded_at else None,
                 "package_fields": [{"field": f, "title": policy.fields[f].title if f in policy.fields else f}
                                    for f in h.package_fields],
                 "withheld_fields": [r.get("field") for r in h.package_redacted]}
                for h in handovers
            ],
            "language_pass": [_language_pass_out(e) for e in language_pass],
            "offers": [
                {"offer": title, "provider": names.get(provider), "state": b.state, "step": b.step_key,
                 "referred_at": b.referred_at.isoformat() if b.referred_at else None,
                 "enrolled_at": b.enrolled_at.isoformat() if b.enrolled_at else None}
                for b, title, provider in bookings
            ],
            "conference_cases": [
                {"conference": conf.title, "date": conf.scheduled_at.date().isoformat(),
                 "organisations": sorted(names.get(o) or "" for o in participants.get(conf.id, [])),
                 "agreements": agreement_texts.get(case.id, [])}
                for case, conf in cases
            ],
            "retention": [
                {"category": key, "title": cat.title, "rule": cat.retention.describe() if cat.retention else None,
                 "source": cat.retention.source if cat.retention else None,
                 "obligation": bool(cat.retention and cat.retention.obligation),
                 "kept_until": (dues[key] - timedelta(days=1)).isoformat() if dues[key] else None,
                 "note": None if dues[key] else "while the case is open; the period starts when it ends"}
                for key, cat in policy.categories.items()
            ],
            "rights": [{"right": r, "article": a, "text": t} for r, a, t in RIGHTS],
        }
        write_audit(session, [_audit(actor, "R", "person.access_report.issued", "data_subject_request", request.id,
                                     person.id, "access report")], now)
    return report


def _agreement_texts(session: Session, privacy: Privacy, person_id: uuid.UUID, case_ids: list[int]) -> dict[int, list[dict]]:
    """Agreements of the person's conference cases, their texts decrypted for the person themselves."""
    from casemgmt.privacy.crypto import decrypt_field

    if not case_ids:
        return {}
    out: dict[int, list[dict]] = {}
    rows = session.scalars(select(ConferenceAgreement).where(ConferenceAgreement.conference_case_id.in_(case_ids))
                           .order_by(ConferenceAgreement.created_at)).all()
    key = person_data_key(session, privacy, person_id) if rows else None
    names = _org_names(session, [a.owner_organisation_id for a in rows])
    for a in rows:
        text = (decrypt_field(key, person_id, f"conference-agreement:{a.id}", a.text_ciphertext)
                if key is not None and a.text_ciphertext is not None else None)
        out.setdefault(a.conference_case_id, []).append(
            {"text": text, "owner": names.get(a.owner_organisation_id), "due_date": a.due_date.isoformat(), "state": a.state})
    return out


def portable_copy(session: Session, privacy: Privacy, actor: Actor, person_id: uuid.UUID,
                  request_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    """The data the person provided (categories marked ``portable``), machine-readable (Art. 20)."""
    with unit_of_work(session):
        person = area_person(session, actor, person_id)
        refuse_unless_active(person.processing, person.id, allow_restricted=True)
        request = _open_request_for(session, request_id, person.id, (RequestKind.portability,), allow_answered=True)
        policy = privacy.policy
        portable = [f for f, spec in policy.fields.items() if policy.categories[spec.category].portable]
        record = disclose(session, privacy, actor, person, next(iter(policy.purposes)), now,
                          subtype="person.portability", only=portable, data_subject_request=("20", request.id))
        out = {
            "format": "casemgmt-portable/1",
            "person_id": str(person.id),
            "exported_at": now.isoformat(),
            "fields": {f: v for f, v in record.fields.items()},
            "schema": {f: {"title": policy.fields[f].title, "type": policy.fields[f].type,
                           "category": policy.fields[f].category} for f in record.fields},
        }
        if policy.categories[LANGUAGE_PASS_CATEGORY].portable:
            # The Sprachenpass follows its category's rule like every field of it.
            entries = _read_language_pass(session, privacy, actor, person, "20", request.id,
                                          next(iter(policy.purposes)), "person.portability.language_pass", now)
            out[LANGUAGE_PASS] = [_language_pass_out(e) for e in entries]
    return out
