"""Fallkonferenz use cases. Each public function is one transaction.

Only the participating organisations see a conference. A case goes on the agenda only if every
participant has a legal basis for the conference purpose (a consent naming it, or a statute);
the bases are recorded with the case. Agreements are about one person and are encrypted with the
person's key; findings must pass the scrubber before they are stored, so nothing personal can
leave the conference through them.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from casemgmt.chains import service as chains
from casemgmt.chains.catalog import TemplateCatalog
from casemgmt.chains.engine import Actor
from casemgmt.chains.models import Chain, ChainStep
from casemgmt.conferences.models import (
    CONFERENCE_PHASES,
    Conference,
    ConferenceAgreement,
    ConferenceCase,
    ConferenceParticipant,
    Finding,
    FindingCase,
    FindingOrganisationKind,
    FindingVote,
)
from casemgmt.conferences.policy import SteeringPolicy
from casemgmt.conferences.schemas import (
    AgreementIn,
    AgreementOut,
    CaseOut,
    ConferenceIn,
    ConferenceOut,
    ConferenceSummary,
    FindingIn,
    FindingOut,
    ParticipantOut,
)
from casemgmt.database import unit_of_work
from casemgmt.handovers import service as handovers
from casemgmt.handovers.policy import HandoverPolicy
from casemgmt.handovers.schemas import HandoverIn
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.persons.models import Person
from casemgmt.privacy.audit import AuditEntry
from casemgmt.rights.gate import active_person, refuse_unless_active
from casemgmt.privacy.crypto import decrypt_field, encrypt_field
from casemgmt.privacy.service import (
    Privacy,
    check_free_text,
    decide_category,
    person_data_key,
    person_data_key_for_writing,
    write_audit,
)
from casemgmt.problems import (
    NoLegalBasis,
    NotFound,
    TooManyDots,
    VersionConflict,
    WrongConferencePhase,
    WrongOrganisation,
    invalid_field,
)

PHASE_ORDER = {p: i for i, p in enumerate(CONFERENCE_PHASES)}



def _audit(actor: Actor, conference_id: uuid.UUID, action: str, subtype: str,
           person_id: uuid.UUID | None = None, detail: str | None = None) -> AuditEntry:
    return AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id,
                      action=action, subtype=subtype, entity_type="conference",
                      entity_id=str(conference_id), person_id=person_id, detail=detail)


# --- vocabulary for the scrubber ------------------------------------------------------------------


def taxonomy_words(policy: SteeringPolicy) -> frozenset[str]:
    """The barrier taxonomy's titles: words of the domain that are never a person's name (the
    scrubber also knows the towns and organisations)."""
    return frozenset(policy.barrier_categories.values()) | frozenset(policy.fields_of_action.values())


def agenda_persons(session: Session, conference_ids) -> list[uuid.UUID]:
    """The persons whose cases are on these conferences' agendas."""
    ids = list(conference_ids)
    if not ids:
        return []
    return list(session.scalars(select(ConferenceCase.person_id).where(ConferenceCase.conference_id.in_(ids))
                                .distinct()))


def check_text(session: Session, privacy: Privacy, policy: SteeringPolicy, text: str, field: str,
               conference_ids, actor: Actor, now: datetime, entity_type: str = "conference",
               entity_id: str | None = None) -> None:
    """Refuse a text that would carry personal data out of the conference (422, with hits). The
    name check knows only the persons on these conferences' agendas (no oracle for the names of
    everyone in the records); refusals are audited."""
    check_free_text(session, privacy, text, field, agenda_persons(session, conference_ids), actor, now,
                    entity_type=entity_type, entity_id=entity_id,
                    extra_words=taxonomy_words(policy))


# --- conferences ----------------------------------------------------------------------------------


def _load(session: Session, actor: Actor, conference_id: uuid.UUID, lock: bool = False) -> Conference:
    """The conference if the actor's organisation takes part; otherwise 404."""
    stmt = select(Conference).where(
        Conference.id == conference_id,
        select(ConferenceParticipant.id).where(
            ConferenceParticipant.conference_id == Conference.id,
            ConferenceParticipant.organisation_id == actor.organisation_id).exists(),
    )
    if lock:
        stmt = stmt.with_for_update()
    conference = session.scalar(stmt)
    if conference is None:
        raise NotFound(f"no conference {conference_id}", resource="conference", id=str(conference_id))
    return conference


def _require_moderator(conference: Conference, actor: Actor) -> None:
    if actor.organisation_id != conference.moderator_organisation_id:
        raise WrongOrganisation("only the moderating organisation may do this", owner="moderator")


def _require_phase(conference: Conference, *phases: str) -> None:
    if conference.phase not in phases:
        raise WrongConferencePhase(
            f"the conference is in phase {conference.phase}; this needs {' or '.join(phases)}",
            phase=conference.phase)


def _organisations(session: Session, ids: list[int], field: str) -> list[Organisation]:
    found = {o.id: o for o in session.scalars(select(Organisation).where(Organisation.id.in_(ids)))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise invalid_field(field, f"no organisation {missing[0]}")
    return [found[i] for i in dict.fromkeys(ids)]


def create_conference(session: Session, privacy: Privacy, policy: SteeringPolicy, actor: Actor,
                      body: ConferenceIn, now: datetime) -> ConferenceOut:
    with unit_of_work(session):
        if session.get(Jurisdiction, body.jurisdiction_id) is None:
            raise invalid_field("jurisdiction_id", f"no jurisdiction {body.jurisdiction_id}")
        # The title names the conference in lists the steering group's proposals point to.
        check_text(session, privacy, policy, body.title.strip(), "title", [], actor, now)
        others = _organisations(session, body.participant_organisation_ids, "participant_organisation_ids")
        conference = Conference(id=uuid.uuid4(), title=body.title.strip(), scheduled_at=body.scheduled_at,
                                jurisdiction_id=body.jurisdiction_id,
                                moderator_organisation_id=actor.organisation_id,
                                moderator_user=actor.user_id, phase="planned", created_at=now,
                                updated_at=now, version=1)
        session.add(conference)
        session.flush()
        ids = dict.fromkeys([actor.organisation_id, *(o.id for o in others)])
        session.add_all(ConferenceParticipant(conference_id=conference.id, organisation_id=i) for i in ids)
        write_audit(session, [_audit(actor, conference.id, "C", "conference.create")], now)
    return _out(session, None, policy, actor, conference.id)


def add_participants(session: Session, privacy: Privacy, policy: SteeringPolicy, actor: Actor,
                     conference_id: uuid.UUID, organisation_ids: list[int], now: datetime) -> ConferenceOut:
    """Invite more organisations; each must have a legal basis for every case already on the agenda."""
    with unit_of_work(session):
        conference = _load(session, actor, conference_id, lock=True)
        _require_moderator(conference, actor)
        _require_phase(conference, "planned", "case_phase")
        new = [o for o in _organisations(session, organisation_ids, "organisation_ids")
               if o.id not in _participant_ids(session, conference.id)]
        cases = session.scalars(select(ConferenceCase).where(ConferenceCase.conference_id == conference.id)).all()
        for case in cases:
            person = session.get(Person, case.person_id)
            assert person is not None
            bases = _bases_for(session, privacy, policy, person, new, now)
            case.legal_bases = {**case.legal_bases, **bases}
        session.add_all(ConferenceParticipant(conference_id=conference.id, organisation_id=o.id) for o in new)
        _bump(conference, now)
        write_audit(session, [_audit(actor, conference.id, "U", "conference.participants",
                                     detail="added " + ", ".join(str(o.id) for o in new))], now)
    return _out(session, None, policy, actor, conference_id)


def _participant_ids(session: Session, conference_id: uuid.UUID) -> list[int]:
    return list(session.scalars(select(ConferenceParticipant.organisation_id)
                                .where(ConferenceParticipant.conference_id == conference_id)
                                .order_by(ConferenceParticipant.id)))


def _bases_for(session: Session, privacy: Privacy, policy: SteeringPolicy, person: Person,
               organisations: list[Organisation], now: datetime) -> dict[str, str]:
    """The legal basis of each organisation to discuss this person; 403 naming those without."""
    bases: dict[str, str] = {}
    refused = []
    for org in organisations:
        as_actor = Actor(user_id="conference", organisation_id=org.id, organisation_kind=org.kind,
                         jurisdiction_path=org.jurisdiction.path)
        decision = decide_category(session, privacy, as_actor, person, policy.conference_purpose,
                                   policy.conference_category, "read", now)
        if decision.permit:
            assert decision.basis is not None
            bases[str(org.id)] = decision.basis
        else:
            refused.append({"organisation_id": org.id, "organisation": org.name, "reason": decision.reason})
    if refused:
        raise NoLegalBasis(
            "the case may not be discussed with " + ", ".join(r["organisation"] for r in refused)
            + f": no consent or statute for {policy.conference_purpose}",
            fields=[{"field": policy.conference_category, "category": policy.conference_category,
                     "reason": r["reason"], "organisation_id": r["organisation_id"]} for r in refused],
        )
    return bases


def set_phase(session: Session, privacy: Privacy, policy: SteeringPolicy, actor: Actor,
              conference_id: uuid.UUID, phase: str,
              expected_version: int | None, now: datetime) -> ConferenceOut:
    """Move forward through planned -> case_phase -> structural_phase -> closed (no way back)."""
    with unit_of_work(session):
        conference = _load(session, actor, conference_id, lock=True)
        _require_moderator(conference, actor)
        if expected_version is not None and expected_version != conference.version:
            raise VersionConflict(f"the conference is at version {conference.version}",
                                  current_version=conference.version)
        if PHASE_ORDER[phase] <= PHASE_ORDER[conference.phase]:
            raise WrongConferencePhase(f"the conference is already in phase {conference.phase}",
                                       phase=conference.phase)
        before = conference.phase
        conference.phase = phase
        _bump(conference, now)
        write_audit(session, [_audit(actor, conference.id, "U", "conference.phase", detail=f"{before} -> {phase}")], now)
    return _out(session, None, policy, actor, conference_id)


def _bump(conference: Conference, now: datetime) -> None:
    conference.version += 1
    conference.updated_at = now


def add_case(session: Session, privacy: Privacy, policy: SteeringPolicy, actor: Actor,
             conference_id: uuid.UUID, chain_id: uuid.UUID, now: datetime) -> ConferenceOut:
    with unit_of_work(session):
        conference = _load(session, actor, conference_id, lock=True)
        _require_moderator(conference, actor)
        _require_phase(conference, "planned", "case_phase")
        chains.require_chain_in_scope(session, actor, chain_id)
        person_id = session.scalar(select(Chain.person_id).where(Chain.id == chain_id))
        person = session.get(Person, person_id)
        assert person is not None
        participants = _organisations(session, _participant_ids(session, conference.id), "participants")
        bases = _bases_for(session, privacy, policy, person, participants, now)
        case = ConferenceCase(conference_id=conference.id, chain_id=chain_id, person_id=person.id,
                              legal_bases=bases, added_by_user=actor.user_id, added_at=now)
        session.add(case)
        try:
            session.flush()
        except IntegrityError:
            raise invalid_field("chain_id", "the case is already on the agenda") from None
        _bump(conference, now)
        write_audit(session, [AuditEntry(
            agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="C",
            subtype="conference.case", entity_type="conference", entity_id=str(conference.id),
            person_id=person.id, purpose=policy.conference_purpose,
            legal_bases=dict(sorted(bases.items())), detail=f"chain {chain_id}")], now)
    return _out(session, None, policy, actor, conference_id)


def _case(session: Session, conference_id: uuid.UUID, case_id: int, field: str) -> ConferenceCase:
    case = session.get(ConferenceCase, case_id)
    if case is None or case.conference_id != conference_id:
        raise invalid_field(field, f"no case {case_id} on this conference's agenda")
    return case


def add_agreement(session: Session, catalog: TemplateCatalog, privacy: Privacy, policy: SteeringPolicy,
                  handover_policy: HandoverPolicy, actor: Actor, conference_id: uuid.UUID,
                  body: AgreementIn, now: datetime) -> ConferenceOut:
    """Case phase: record who does what by when; optionally hand the chain step to the owner."""
    with unit_of_work(session):
        conference = _load(session, actor, conference_id, lock=True)
        _require_moderator(conference, actor)
        _require_phase(conference, "case_phase")
        case = _case(session, conference.id, body.conference_case_id, "conference_case_id")
        # A consent withdrawn since the case was put on the agenda ends the discussion of it.
        person = session.get(Person, case.person_id)
        assert person is not None
        refuse_unless_active(person.processing, person.id)
        _bases_for(session, privacy, policy, person,
                   _organisations(session, _participant_ids(session, conference.id), "participants"), now)
        owner = session.get(Organisation, body.owner_organisation_id)
        if owner is None:
            raise invalid_field("owner_organisation_id", f"no organisation {body.owner_organisation_id}")
        handover_id = None
        if body.step_key is not None:
            handover_id = handovers.open_handover(
                session, catalog, privacy, handover_policy, actor, case.chain_id,
                HandoverIn(kind="step", step_key=body.step_key, receiver_organisation_id=owner.id), now, agreed=True)
        agreement_id = uuid.uuid4()
        key = person_data_key_for_writing(session, privacy, case.person_id, now)
        session.add(ConferenceAgreement(
            id=agreement_id, conference_id=conference.id, conference_case_id=case.id,
            text_ciphertext=encrypt_field(key, case.person_id, _agreement_aad(agreement_id), body.text.strip()),
            owner_organisation_id=owner.id, due_date=body.due_date, step_key=body.step_key,
            handover_id=handover_id, state="open", created_by_user=actor.user_id, created_at=now))
        added = None
        if body.add_step is not None:
            session.flush()  # the step row refers to the agreement
            added = chains.add_agreed_step(
                session, catalog, privacy, actor, case.chain_id, title=body.add_step.title,
                owner=owner, due_date=body.due_date, requires=body.add_step.requires,
                agreement_id=agreement_id, conference_id=conference.id, conference_title=conference.title,
                conference_scheduled_at=conference.scheduled_at, now=now)
        _bump(conference, now)
        write_audit(session, [_audit(actor, conference.id, "C", "conference.agreement", case.person_id,
                                     detail=f"owner {owner.id}, due {body.due_date}"
                                            + (f", added step {added}" if added else ""))], now)
    return _out(session, None, policy, actor, conference_id)


def _agreement_aad(agreement_id: uuid.UUID) -> str:
    return f"conference-agreement:{agreement_id}"


def add_finding(session: Session, privacy: Privacy, policy: SteeringPolicy, known_kinds,
                actor: Actor, conference_id: uuid.UUID, body: FindingIn, now: datetime) -> ConferenceOut:
    """Structural phase: a need for change, tagged by the taxonomy, with the cases behind it."""
    with unit_of_work(session):
        conference = _load(session, actor, conference_id, lock=True)
        _require_moderator(conference, actor)
        _require_phase(conference, "structural_phase")
        if body.barrier_category not in policy.barrier_categories:
            raise invalid_field("barrier_category", f"one of {sorted(policy.barrier_categories)}")
        if body.field_of_action not in policy.fields_of_action:
            raise invalid_field("field_of_action", f"one of {sorted(policy.fields_of_action)}")
        unknown = [k for k in body.organisation_kinds if k not in known_kinds]
        if unknown:
            raise invalid_field("organisation_kinds", f"unknown organisation kind '{unknown[0]}'")
        cases = [_case(session, conference.id, i, "conference_case_ids") for i in dict.fromkeys(body.conference_case_ids)]
        text = body.text.strip()
        check_text(session, privacy, policy, text, "text", [conference.id], actor, now,
                   entity_id=str(conference.id))
        finding = Finding(
            id=uuid.uuid4(), conference_id=conference.id, barrier_category=body.barrier_category,
            field_of_action=body.field_of_action, organisation_kinds=sorted(set(body.organisation_kinds)),
            level=body.level, weather=body.weather, text=text, case_count=len(cases),
            created_by_user=actor.user_id, created_at=now)
        session.add(finding)
        session.flush()
        session.add_all(FindingCase(finding_id=finding.id, conference_case_id=c.id) for c in cases)
        session.add_all(FindingOrganisationKind(finding_id=finding.id, organisation_kind=k)
                        for k in finding.organisation_kinds)
        _bump(conference, now)
        write_audit(session, [_audit(actor, conference.id, "C", "conference.finding",
                                     detail=f"finding {finding.id}: {len(cases)} cases")], now)
    return _out(session, None, policy, actor, conference_id)


def vote(session: Session, privacy: Privacy, policy: SteeringPolicy, actor: Actor,
         conference_id: uuid.UUID, finding_id: uuid.UUID, dots: int, now: datetime) -> ConferenceOut:
    """Put dots on a finding (replacing the voter's earlier dots on it); 0 takes them back."""
    with unit_of_work(session):
        conference = _load(session, actor, conference_id, lock=True)
        _require_phase(conference, "structural_phase")
        finding = session.get(Finding, finding_id)
        if finding is None or finding.conference_id != conference.id:
            raise NotFound(f"no finding {finding_id} in this conference", resource="finding", id=str(finding_id))
        session.execute(delete(FindingVote).where(FindingVote.finding_id == finding_id,
                                                  FindingVote.voter_user == actor.user_id))
        used = session.scalar(select(func.coalesce(func.sum(FindingVote.dots), 0)).where(
            FindingVote.conference_id == conference.id, FindingVote.voter_user == actor.user_id)) or 0
        left = policy.dots_per_participant - used
        if dots > left:
            raise TooManyDots(f"you have {left} dots left in this conference", dots_left=left)
        if dots:
            session.add(FindingVote(conference_id=conference.id, finding_id=finding_id, voter_user=actor.user_id,
                                    voter_organisation_id=actor.organisation_id, dots=dots))
        write_audit(session, [_audit(actor, conference.id, "U", "conference.vote",
                                     detail=f"finding {finding_id}: {dots} dots")], now)
    return _out(session, None, policy, actor, conference_id)


# --- reading --------------------------------------------------------------------------------------


def finding_out(finding: Finding, dots: int, k: int | None = None) -> FindingOut:
    """With ``k`` (outside the conference), a number of cases under k is not shown."""
    return FindingOut(
        id=finding.id, conference_id=finding.conference_id, barrier_category=finding.barrier_category,
        field_of_action=finding.field_of_action, organisation_kinds=list(finding.organisation_kinds),
        level=finding.level, weather=finding.weather, text=finding.text,
        dots=dots, proposal_id=finding.proposal_id, created_at=finding.created_at,
        case_count=finding.case_count if k is None or finding.case_count == 0 or finding.case_count >= k else None)


def dots_by_finding(session: Session, finding_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not finding_ids:
        return {}
    return dict(session.execute(select(FindingVote.finding_id, func.sum(FindingVote.dots))
                                .where(FindingVote.finding_id.in_(finding_ids))
                                .group_by(FindingVote.finding_id)).all())


def get_conference(session: Session, privacy: Privacy, policy: SteeringPolicy, actor: Actor,
                   conference_id: uuid.UUID, now: datetime) -> ConferenceOut:
    """The conference as its participants see it; reading agreements about persons is audited."""
    with unit_of_work(session):
        _load(session, actor, conference_id)
        readable: dict[int, str] = {}
        entries = []
        for case in session.scalars(select(ConferenceCase).where(ConferenceCase.conference_id == conference_id)
                                    .order_by(ConferenceCase.id)):
            person = session.get(Person, case.person_id)
            assert person is not None
            if person.processing != "active":
                continue  # stored, not shown: restricted or erased (casemgmt.rights)
            # Decided again at every read: a consent withdrawn since takes effect at once.
            decision = decide_category(session, privacy, actor, person, policy.conference_purpose,
                                       policy.conference_category, "read", now)
            if decision.permit:
                assert decision.basis is not None
                readable[case.id] = decision.basis
            entries.append(AuditEntry(
                agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="R",
                subtype="conference.read", entity_type="conference", entity_id=str(conference_id),
                person_id=person.id, fields=("agreements",) if decision.permit else (),
                legal_bases={"agreements": decision.basis} if decision.permit and decision.basis else {},
                purpose=policy.conference_purpose, outcome="success" if decision.permit else "denied",
                detail=None if decision.permit else f"agreements withheld: {decision.reason}"))
        out = _out(session, privacy, policy, actor, conference_id, commit=False, readable=readable)
        write_audit(session, entries or [_audit(actor, conference_id, "R", "conference.read")], now)
    return out


def _out(session: Session, privacy: Privacy | None, policy: SteeringPolicy, actor: Actor,
         conference_id: uuid.UUID, commit: bool = True, readable: dict[int, str] | None = None) -> ConferenceOut:
    """The conference; agreement texts only for the cases in ``readable`` (case id -> basis)."""
    conference = session.get(Conference, conference_id)
    assert conference is not None
    participants = session.execute(
        select(Organisation.id, Organisation.name, Organisation.kind)
        .join(ConferenceParticipant, ConferenceParticipant.organisation_id == Organisation.id)
        .where(ConferenceParticipant.conference_id == conference_id).order_by(ConferenceParticipant.id)).all()
    # A restricted or erased person's case is stored, not shown (casemgmt.rights).
    cases = session.scalars(select(ConferenceCase).where(ConferenceCase.conference_id == conference_id,
                                                         active_person(ConferenceCase.person_id))
                            .order_by(ConferenceCase.id)).all()
    person_of = {c.id: c.person_id for c in cases}
    agreements = []
    added_steps = dict(session.execute(
        select(ChainStep.agreement_id, ChainStep.key)
        .join(ConferenceAgreement, ConferenceAgreement.id == ChainStep.agreement_id)
        .where(ConferenceAgreement.conference_id == conference_id)).all())
    for a in session.scalars(select(ConferenceAgreement).where(ConferenceAgreement.conference_id == conference_id)
                             .order_by(ConferenceAgreement.created_at, ConferenceAgreement.id)):
        if a.conference_case_id not in person_of:
            continue
        text = None
        if privacy is not None and readable is not None and a.conference_case_id in readable:
            person_id = person_of[a.conference_case_id]
            try:
                key = person_data_key(session, privacy, person_id)
            except NotFound:  # the person's data was erased: the agreement's text went with it
                key = None
            if key is not None and a.text_ciphertext is not None:
                text = decrypt_field(key, person_id, _agreement_aad(a.id), a.text_ciphertext)
        agreements.append(AgreementOut(
            id=a.id, conference_case_id=a.conference_case_id, text=text,
            owner_organisation_id=a.owner_organisation_id, due_date=a.due_date, step_key=a.step_key,
            handover_id=a.handover_id, added_step_key=added_steps.get(a.id), state=a.state))
    findings = session.scalars(select(Finding).where(Finding.conference_id == conference_id)
                               .order_by(Finding.created_at, Finding.id)).all()
    dots = dots_by_finding(session, [f.id for f in findings])
    used = session.scalar(select(func.coalesce(func.sum(FindingVote.dots), 0)).where(
        FindingVote.conference_id == conference_id, FindingVote.voter_user == actor.user_id)) or 0
    out = ConferenceOut(
        id=conference.id, title=conference.title, scheduled_at=conference.scheduled_at,
        jurisdiction_id=conference.jurisdiction_id, moderator_organisation_id=conference.moderator_organisation_id,
        moderator_user=conference.moderator_user, phase=conference.phase, version=conference.version,
        participants=[ParticipantOut(organisation_id=p.id, name=p.name, kind=p.kind) for p in participants],
        cases=[CaseOut(id=c.id, chain_id=c.chain_id, person_id=c.person_id, legal_bases=dict(c.legal_bases),
                       added_at=c.added_at) for c in cases],
        agreements=agreements,
        findings=sorted((finding_out(f, dots.get(f.id, 0)) for f in findings), key=lambda f: -f.dots),
        my_dots_left=max(policy.dots_per_participant - used, 0),
    )
    if commit:
        session.rollback()
    return out


def list_conferences(session: Session, actor: Actor, limit: int) -> list[ConferenceSummary]:
    cases = (select(ConferenceCase.conference_id, func.count().label("n")).group_by(ConferenceCase.conference_id)
             .subquery())
    finds = (select(Finding.conference_id, func.count().label("n")).group_by(Finding.conference_id).subquery())
    rows = session.execute(
        select(Conference, func.coalesce(cases.c.n, 0), func.coalesce(finds.c.n, 0))
        .outerjoin(cases, cases.c.conference_id == Conference.id)
        .outerjoin(finds, finds.c.conference_id == Conference.id)
        .where(select(ConferenceParticipant.id).where(
            ConferenceParticipant.conference_id == Conference.id,
            ConferenceParticipant.organisation_id == actor.organisation_id).exists())
        .order_by(Conference.scheduled_at.desc()).limit(limit)).all()
    out = [ConferenceSummary(id=c.id, title=c.title, scheduled_at=c.scheduled_at, jurisdiction_id=c.jurisdiction_id,
                             phase=c.phase, case_count=n_cases, finding_count=n_findings)
           for c, n_cases, n_findings in rows]
    session.rollback()
    return out
