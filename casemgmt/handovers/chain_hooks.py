"""What the chain service needs to know about handovers, without importing the handover service
(which builds on the chain service)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from casemgmt.chains.engine import Actor
from casemgmt.handovers.lifecycle import PENDING_VALUES, HandoverAction, HandoverKind, HandoverState
from casemgmt.handovers.models import Handover, HandoverEvent

handovers_t = Handover.__table__
events_t = HandoverEvent.__table__
_PENDING = list(PENDING_VALUES)


def system_withdraw(session: Session, h, reason: str, actor: Actor, now: datetime) -> None:
    session.execute(update(handovers_t).where(handovers_t.c.id == h.id).values(
        state=HandoverState.withdrawn.value, responded_at=now, responded_by_user=actor.user_id,
        response_reason=reason, version=h.version + 1, updated_at=now))
    session.execute(insert(events_t).values(
        handover_id=h.id, action=HandoverAction.withdraw.value, from_state=h.state,
        to_state=HandoverState.withdrawn.value, reason=reason, actor_user=actor.user_id,
        actor_organisation_id=actor.organisation_id, occurred_at=now))


def withdraw_for_closed_chain(session: Session, actor: Actor, chain_id: uuid.UUID, reason: str,
                              now: datetime) -> int:
    """Closing a chain ends its waiting handovers (called inside the close transaction)."""
    rows = session.execute(
        select(handovers_t.c.id, handovers_t.c.state, handovers_t.c.version)
        .where(handovers_t.c.chain_id == chain_id, handovers_t.c.state.in_(_PENDING))
        .with_for_update()
    ).all()
    for h in rows:
        system_withdraw(session, h, f"withdrawn: chain closed ({reason})", actor, now)
    return len(rows)


_PENDING_RKW = select(handovers_t.c.id).where(
    handovers_t.c.chain_id == bindparam("chain_id"), handovers_t.c.subject == bindparam("subject"),
    handovers_t.c.kind == HandoverKind.rechtskreiswechsel.value, handovers_t.c.state.in_(_PENDING))


def pending_rechtskreiswechsel(session: Session, chain_id: uuid.UUID, step_key: str) -> uuid.UUID | None:
    """A waiting Rechtskreiswechsel that will complete this step (so nobody else may)."""
    return session.scalar(_PENDING_RKW, {"chain_id": chain_id, "subject": f"step:{step_key}"})


def pending_step_handover(session: Session, chain_id: uuid.UUID, step_key: str) -> uuid.UUID | None:
    """Any waiting handover of this step (its answer decides who does the step)."""
    return session.scalar(select(handovers_t.c.id).where(
        handovers_t.c.chain_id == chain_id, handovers_t.c.subject == f"step:{step_key}",
        handovers_t.c.state.in_(_PENDING)))
