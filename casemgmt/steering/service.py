"""Proposals to the Lenkungsgruppe and its decisions. Each public function is one transaction:
the proposal's new state, its history event and the audit row are written together."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from casemgmt.chains.engine import Actor
from casemgmt.conferences.models import Conference, ConferenceParticipant, Finding
from casemgmt.conferences.policy import SteeringPolicy
from casemgmt.conferences.service import check_text, dots_by_finding, finding_out
from casemgmt.database import unit_of_work
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.jurisdictions.service import area_organisation_ids, steering_area
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.service import Privacy, write_audit
from casemgmt.problems import DuplicateName, Forbidden, NotFound, VersionConflict, invalid_field
from casemgmt.steering import proposals as lifecycle
from casemgmt.steering.models import Proposal, ProposalEvent, WorkingGroup
from casemgmt.steering.proposals import ProposalAction, ProposalState
from casemgmt.steering.schemas import (
    ProposalActionIn,
    ProposalEventOut,
    ProposalIn,
    ProposalOut,
    WorkingGroupOut,
)


def _area_path(session: Session, actor: Actor) -> str:
    return steering_area(session, actor.organisation_id).path


def _in_area(area_path: str):
    """The proposal bundles findings of conferences held in the area (correlated on ``proposals``):
    a Lenkungsgruppe sees and decides its own area's proposals; others get the 404 of a random id."""
    return (select(Finding.id).join(Conference, Conference.id == Finding.conference_id)
            .join(Jurisdiction, Jurisdiction.id == Conference.jurisdiction_id)
            .where(Finding.proposal_id == Proposal.id, Jurisdiction.path.startswith(area_path)).exists())


def _audit(actor: Actor, proposal_id: uuid.UUID, action: str, subtype: str, detail: str | None = None) -> AuditEntry:
    return AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action=action,
                      subtype=subtype, entity_type="proposal", entity_id=str(proposal_id), detail=detail)


def _event(proposal_id: uuid.UUID, action: str, before: str | None, after: str, actor: Actor, now: datetime,
           reason: str | None = None, working_group_id: int | None = None, due_date=None) -> ProposalEvent:
    return ProposalEvent(proposal_id=proposal_id, action=action, from_state=before, to_state=after, reason=reason,
                         working_group_id=working_group_id, due_date=due_date, actor_user=actor.user_id,
                         actor_organisation_id=actor.organisation_id, occurred_at=now)


def create_proposal(session: Session, privacy: Privacy, policy: SteeringPolicy, actor: Actor,
                    body: ProposalIn, now: datetime) -> ProposalOut:
    """Bundle findings of conferences the actor's organisation took part in into a proposal."""
    with unit_of_work(session):
        ids = list(dict.fromkeys(body.finding_ids))
        findings = session.scalars(
            select(Finding).where(
                Finding.id.in_(ids),
                select(ConferenceParticipant.id).where(
                    ConferenceParticipant.conference_id == Finding.conference_id,
                    ConferenceParticipant.organisation_id == actor.organisation_id).exists(),
                Finding.conference_id.in_(select(Conference.id).join(
                    Jurisdiction, Jurisdiction.id == Conference.jurisdiction_id).where(
                    Jurisdiction.path.startswith(_area_path(session, actor)))),
            ).with_for_update(of=Finding)
        ).all()
        found = {f.id for f in findings}
        missing = [i for i in ids if i not in found]
        if missing:
            raise invalid_field("finding_ids", f"no finding {missing[0]} of a conference of your area that your "
                                              "organisation took part in")
        taken = [f for f in findings if f.proposal_id is not None]
        if taken:
            raise invalid_field("finding_ids", f"finding {taken[0].id} is already part of proposal {taken[0].proposal_id}")
        title, summary = body.title.strip(), body.summary.strip()
        conference_ids = {f.conference_id for f in findings}
        check_text(session, privacy, policy, title, "title", conference_ids, actor, now, "proposal")
        check_text(session, privacy, policy, summary, "summary", conference_ids, actor, now, "proposal")
        proposal = Proposal(id=uuid.uuid4(), title=title, summary=summary, state=ProposalState.bundled.value,
                            created_by_user=actor.user_id, created_by_organisation_id=actor.organisation_id,
                            created_at=now, updated_at=now, version=1)
        session.add(proposal)
        session.flush()
        session.execute(update(Finding).where(Finding.id.in_(ids)).values(proposal_id=proposal.id))
        session.add(_event(proposal.id, "bundle", None, proposal.state, actor, now,
                           reason=f"{len(ids)} findings"))
        write_audit(session, [_audit(actor, proposal.id, "C", "proposal.bundle", f"{len(ids)} findings")], now)
    return get_proposal(session, proposal.id, actor, policy.k)


def act(session: Session, privacy: Privacy, policy: SteeringPolicy, actor: Actor, may_decide: bool,
        may_manage: bool, proposal_id: uuid.UUID, body: ProposalActionIn, now: datetime) -> ProposalOut:
    """Submit (moderators), decide or move the implementation on (steering group)."""
    action = ProposalAction(body.action)
    if action in lifecycle.MODERATOR_ACTIONS and not may_manage:
        raise Forbidden("submitting a proposal needs proposals.manage", permission="proposals.manage")
    if action not in lifecycle.MODERATOR_ACTIONS and not may_decide:
        raise Forbidden(f"'{action.value}' is the steering group's decision (proposals.decide)",
                        permission="proposals.decide")
    with unit_of_work(session):
        proposal = session.scalar(select(Proposal).where(Proposal.id == proposal_id,
                                                         _in_area(_area_path(session, actor))).with_for_update())
        if proposal is None:
            raise NotFound(f"no proposal {proposal_id}", resource="proposal", id=str(proposal_id))
        if body.expected_version is not None and body.expected_version != proposal.version:
            raise VersionConflict(f"the proposal is at version {proposal.version}", current_version=proposal.version)
        target = lifecycle.next_state(proposal.state, action.value, lifecycle.Decision(
            reason=body.reason, working_group_name=body.working_group_name,
            working_group_id=body.working_group_id, has_due_date=body.due_date is not None))
        # Both are kept for ever (the history is append-only) and read by the steering group.
        conference_ids = set(session.scalars(select(Finding.conference_id).where(Finding.proposal_id == proposal.id)))
        for field, text in (("reason", body.reason), ("working_group_name", body.working_group_name)):
            if text and text.strip():
                check_text(session, privacy, policy, text.strip(), field, conference_ids, actor, now,
                           "proposal", str(proposal.id))
        group_id = None
        if action is ProposalAction.accept:
            group_id = _new_working_group(session, actor, body, now).id
        elif action is ProposalAction.delegate:
            group = session.scalar(select(WorkingGroup).where(
                WorkingGroup.id == body.working_group_id,
                WorkingGroup.lead_organisation_id.in_(area_organisation_ids(_area_path(session, actor)))))
            if group is None:
                raise invalid_field("working_group_id", f"no working group {body.working_group_id}")
            group_id = group.id
        before = proposal.state
        proposal.state = target.value
        if group_id is not None:
            proposal.working_group_id = group_id
            proposal.due_date = body.due_date
        if action in lifecycle.DECISIONS:
            proposal.decision_reason = (body.reason or "").strip() or None
        proposal.version += 1
        proposal.updated_at = now
        session.add(_event(proposal.id, action.value, before, target.value, actor, now,
                           reason=(body.reason or "").strip() or None, working_group_id=group_id,
                           due_date=body.due_date if group_id else None))
        write_audit(session, [_audit(actor, proposal.id, "U", f"proposal.{action.value}", f"{before} -> {target.value}")], now)
    return get_proposal(session, proposal_id, actor, policy.k)


def _new_working_group(session: Session, actor: Actor, body: ProposalActionIn, now: datetime) -> WorkingGroup:
    lead = None if body.lead_organisation_id is None else session.scalar(select(Organisation.id).where(
        Organisation.id == body.lead_organisation_id,
        Organisation.id.in_(area_organisation_ids(_area_path(session, actor)))))
    if lead is None:
        raise invalid_field("lead_organisation_id",
                            "the new working group needs an existing lead organisation of the area")
    assert body.working_group_name is not None
    group = WorkingGroup(name=body.working_group_name.strip(), lead_organisation_id=body.lead_organisation_id,
                         created_at=now)
    session.add(group)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise DuplicateName(f"a working group '{group.name}' exists already; delegate to it",
                            name=group.name) from None
    return group


def get_proposal(session: Session, proposal_id: uuid.UUID, actor: Actor, k: int) -> ProposalOut:
    proposal = session.scalar(select(Proposal).where(Proposal.id == proposal_id,
                                                     _in_area(_area_path(session, actor))))
    if proposal is None:
        session.rollback()
        raise NotFound(f"no proposal {proposal_id}", resource="proposal", id=str(proposal_id))
    out = _proposal_out(session, proposal, k)
    session.rollback()
    return out


def _proposal_out(session: Session, proposal: Proposal, k: int) -> ProposalOut:
    findings = session.scalars(select(Finding).where(Finding.proposal_id == proposal.id)
                               .order_by(Finding.created_at, Finding.id)).all()
    dots = dots_by_finding(session, [f.id for f in findings])
    group = session.get(WorkingGroup, proposal.working_group_id) if proposal.working_group_id else None
    events = session.scalars(select(ProposalEvent).where(ProposalEvent.proposal_id == proposal.id)
                             .order_by(ProposalEvent.id)).all()
    return ProposalOut(
        id=proposal.id, title=proposal.title, summary=proposal.summary, state=ProposalState(proposal.state),
        working_group=WorkingGroupOut(id=group.id, name=group.name, lead_organisation_id=group.lead_organisation_id,
                                      created_at=group.created_at) if group else None,
        due_date=proposal.due_date, decision_reason=proposal.decision_reason, created_at=proposal.created_at,
        updated_at=proposal.updated_at, version=proposal.version,
        allowed_actions=lifecycle.allowed_actions(proposal.state),
        findings=[finding_out(f, dots.get(f.id, 0), k) for f in findings],
        events=[ProposalEventOut.model_validate(e) for e in events],
    )


def list_proposals(session: Session, actor: Actor, state: ProposalState | None, limit: int,
                   k: int) -> list[ProposalOut]:
    """The proposals of the actor's area, most recently changed first."""
    stmt = (select(Proposal).where(_in_area(_area_path(session, actor)))
            .order_by(Proposal.updated_at.desc(), Proposal.id).limit(limit))
    if state is not None:
        stmt = stmt.where(Proposal.state == state.value)
    out = [_proposal_out(session, p, k) for p in session.scalars(stmt).all()]
    session.rollback()
    return out


def list_working_groups(session: Session, actor: Actor) -> list[WorkingGroupOut]:
    """The working groups led by organisations of the actor's area."""
    stmt = (select(WorkingGroup)
            .where(WorkingGroup.lead_organisation_id.in_(area_organisation_ids(_area_path(session, actor))))
            .order_by(WorkingGroup.name))
    out = [WorkingGroupOut(id=g.id, name=g.name, lead_organisation_id=g.lead_organisation_id, created_at=g.created_at)
           for g in session.scalars(stmt)]
    session.rollback()
    return out
