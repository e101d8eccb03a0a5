"""Who may see a person or a chain at all, before any legal basis is asked.

An organisation is **involved** with a person (DOMAIN.md section 7) while it

- runs the case management of one of the person's open chains;
- is assigned to a step of an open chain that is ready, in progress or blocked;
- is the receiver of a handover of the person that waits for its answer;
- takes part in a Fallkonferenz that has not closed and has the person's case on its agenda; or
- registered the person, as long as no other organisation runs a chain of the person.

Nothing else: owning a *kind* of step somewhere in a template is not involvement, and neither is
being the Kreis office of the right kind.

When involvement ends (its step ended or was reassigned, the chain closed or completed, the
person moved and the case management with them, the conference closed, the handover was
answered), the organisation is **formerly involved**: it keeps reading what it itself wrote and
did, for appeals, but nothing new. For a chain that is its history up to its last act or
assignment (``former_until``); for a person, the fields whose current value it wrote itself.

Everybody else gets the same 404 for a real and for a random id.

The clauses are correlated EXISTS on the person or chain, so a check costs a few index look-ups
however many cases the organisation has; listings use :func:`listed_chain_ids`, a union of
index scans per organisation (the chains it is involved with, and the finished chains whose case
management it ran to the end).
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import and_, exists, func, literal, or_, select, union, union_all
from sqlalchemy.orm import Session

from casemgmt.chains.engine import ChainLifecycle, StepState
from casemgmt.chains.models import Chain, ChainEvent, ChainStep
from casemgmt.conferences.models import Conference, ConferenceCase, ConferenceParticipant
from casemgmt.handovers.lifecycle import PENDING_VALUES, HandoverState
from casemgmt.handovers.models import Handover
from casemgmt.persons.models import Person
from casemgmt.privacy.models import PersonField

chains_t = Chain.__table__
steps_t = ChainStep.__table__
events_t = ChainEvent.__table__
handovers_t = Handover.__table__
persons_t = Person.__table__
fields_t = PersonField.__table__
cases_t = ConferenceCase.__table__
conferences_t = Conference.__table__
participants_t = ConferenceParticipant.__table__

ACTIVE_STEP_STATES = (StepState.ready.value, StepState.in_progress.value, StepState.blocked.value)
_OPEN = ChainLifecycle.open.value
_PENDING = list(PENDING_VALUES)
_CLOSED_CONFERENCE = "closed"


class Access(str, enum.Enum):
    """How far an organisation may look at a person or chain."""

    current = "current"  # involved now: everything the legal bases allow
    former = "former"  # involvement ended: only what it wrote and did itself


def _on_open_conference_agenda(organisation_id: int, case_column):
    return (
        select(cases_t.c.id)
        .join(conferences_t, conferences_t.c.id == cases_t.c.conference_id)
        .join(participants_t, participants_t.c.conference_id == cases_t.c.conference_id)
        .where(case_column, participants_t.c.organisation_id == organisation_id,
               conferences_t.c.phase != _CLOSED_CONFERENCE)
        .exists()
    )


def one_of(column, values):
    """``column IN (...)`` with one ordinary bind parameter per value: a plain ``in_`` of a list
    is an "expanding" parameter that SQLAlchemy rewrites into the SQL at every execution, which
    costs the hot path (a transition's scope lock) more than the statement costs the server."""
    return column.in_([literal(v, column.type) for v in values])


def chain_involvement(organisation_id: int):
    """The organisation is involved with the chain (correlated on ``chains``)."""
    return or_(
        and_(
            chains_t.c.lifecycle == _OPEN,
            or_(
                chains_t.c.case_management_organisation_id == organisation_id,
                exists().where(steps_t.c.chain_id == chains_t.c.id,
                               steps_t.c.assigned_organisation_id == organisation_id,
                               one_of(steps_t.c.state, ACTIVE_STEP_STATES)),
            ),
        ),
        exists().where(handovers_t.c.chain_id == chains_t.c.id,
                       handovers_t.c.receiver_organisation_id == organisation_id,
                       one_of(handovers_t.c.state, _PENDING)),
        _on_open_conference_agenda(organisation_id, cases_t.c.chain_id == chains_t.c.id),
    )


def person_involvement(organisation_id: int):
    """The organisation is involved with the person (correlated on ``persons``)."""
    registered = and_(
        persons_t.c.created_by_organisation_id == organisation_id,
        ~exists().where(chains_t.c.person_id == persons_t.c.id,
                        chains_t.c.case_management_organisation_id != organisation_id),
    )
    through_a_chain = exists().where(chains_t.c.person_id == persons_t.c.id,
                                     chain_involvement(organisation_id))
    return or_(registered, through_a_chain)


def involved_chain_ids(organisation_id: int):
    """Ids of the chains the organisation is involved with, for listings: one index scan per
    way of being involved instead of a check per chain."""
    return union(*_involvement_selects(organisation_id))


def _involvement_selects(organisation_id: int) -> list:
    return [
        select(chains_t.c.id).where(chains_t.c.case_management_organisation_id == organisation_id,
                                    chains_t.c.lifecycle == _OPEN),
        select(steps_t.c.chain_id)
        .join(chains_t, chains_t.c.id == steps_t.c.chain_id)
        .where(steps_t.c.assigned_organisation_id == organisation_id,
               steps_t.c.state.in_(ACTIVE_STEP_STATES), chains_t.c.lifecycle == _OPEN),
        select(handovers_t.c.chain_id).where(handovers_t.c.receiver_organisation_id == organisation_id,
                                             handovers_t.c.state.in_(_PENDING)),
        select(cases_t.c.chain_id)
        .join(conferences_t, conferences_t.c.id == cases_t.c.conference_id)
        .join(participants_t, participants_t.c.conference_id == cases_t.c.conference_id)
        .where(participants_t.c.organisation_id == organisation_id,
               conferences_t.c.phase != _CLOSED_CONFERENCE),
    ]


def listed_chain_ids(organisation_id: int):
    """What an organisation's chain list shows: the chains it is involved with, and the ended
    (completed or closed) chains whose case management it ran to the end, so a case manager finds
    its own finished cases. The rest of its former chains it opens by id."""
    # One flat UNION: SQLite refuses a parenthesised UNION inside another ("near UNION").
    return union(
        *_involvement_selects(organisation_id),
        select(chains_t.c.id).where(chains_t.c.case_management_organisation_id == organisation_id,
                                    chains_t.c.lifecycle != _OPEN),
    )


# --- former involvement --------------------------------------------------------------------------


def _own_handover(organisation_id: int):
    """Handovers the organisation sent, or received and did not see withdrawn."""
    return or_(
        handovers_t.c.sender_organisation_id == organisation_id,
        and_(handovers_t.c.receiver_organisation_id == organisation_id,
             handovers_t.c.state != HandoverState.withdrawn.value),
    )


def _concerns(organisation_id: int):
    """Chain events the organisation did, or that gave it a step or ended its part."""
    return or_(events_t.c.actor_organisation_id == organisation_id,
               events_t.c.organisation_id == organisation_id,
               events_t.c.previous_organisation_id == organisation_id)


def former_until(session: Session, organisation_id: int, chain_id: uuid.UUID) -> datetime | None:
    """The end of the organisation's part in the chain: the time of its last act on it, of the
    last event about a step assigned to it (or of the move that ended its case management), of
    its last handover of the chain, or of the last change of a conference that discussed it.
    None: it never had a part."""
    own_events = select(func.max(events_t.c.occurred_at)).where(
        events_t.c.chain_id == chain_id, _concerns(organisation_id))
    own_handovers = select(func.max(func.coalesce(handovers_t.c.responded_at, handovers_t.c.requested_at))).where(
        handovers_t.c.chain_id == chain_id, _own_handover(organisation_id))
    conferences = (
        select(func.max(conferences_t.c.updated_at))
        .select_from(cases_t)
        .join(conferences_t, conferences_t.c.id == cases_t.c.conference_id)
        .join(participants_t, participants_t.c.conference_id == cases_t.c.conference_id)
        .where(cases_t.c.chain_id == chain_id, participants_t.c.organisation_id == organisation_id)
    )
    times = [t for t in session.scalars(union_all(own_events, own_handovers, conferences)) if t is not None]
    return max(times) if times else None


def formerly_involved_with_person(session: Session, organisation_id: int, person_id: uuid.UUID) -> bool:
    """The organisation once had a part in the person's case (it registered them, wrote one of
    their fields, acted on or was assigned to a step of their chains, sent or received a
    handover about them, or discussed them in a conference)."""
    of_person_chains = select(chains_t.c.id).where(chains_t.c.person_id == person_id)
    clauses = [
        exists().where(persons_t.c.id == person_id,
                       persons_t.c.created_by_organisation_id == organisation_id),
        exists().where(fields_t.c.person_id == person_id,
                       fields_t.c.updated_by_organisation_id == organisation_id),
        exists().where(events_t.c.chain_id.in_(of_person_chains), _concerns(organisation_id)),
        exists().where(handovers_t.c.person_id == person_id, _own_handover(organisation_id)),
        select(cases_t.c.id)
        .join(participants_t, participants_t.c.conference_id == cases_t.c.conference_id)
        .where(cases_t.c.person_id == person_id, participants_t.c.organisation_id == organisation_id)
        .exists(),
    ]
    return bool(session.scalar(select(or_(*clauses))))
