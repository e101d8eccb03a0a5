"""Endpoints for proposals, decisions and working groups. Thin: parse, call the service, return."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.steering import service
from casemgmt.steering.proposals import ProposalState
from casemgmt.steering.schemas import ProposalActionIn, ProposalIn, ProposalOut, WorkingGroupOut

router = APIRouter(tags=["steering"])


@router.post("/proposals", response_model=ProposalOut, status_code=201)
def create_proposal(request: Request, body: ProposalIn, actor: Actor = Depends(require("proposals.manage")),
                    session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Bundle findings (from one or several conferences) into a proposal to the Lenkungsgruppe."""
    s = request.app.state
    return service.create_proposal(session, s.privacy, s.policies.steering, actor, body, now)


@router.get("/proposals", response_model=list[ProposalOut])
def list_proposals(state: ProposalState | None = None, limit: int = Query(default=50, ge=1, le=200),
                   actor: Actor = Depends(require("proposals.read")), session: Session = Depends(get_session)):
    return service.list_proposals(session, state, limit)


@router.get("/proposals/{proposal_id}", response_model=ProposalOut)
def get_proposal(proposal_id: uuid.UUID, actor: Actor = Depends(require("proposals.read")),
                 session: Session = Depends(get_session)):
    return service.get_proposal(session, proposal_id, actor)


@router.post("/proposals/{proposal_id}/actions", response_model=ProposalOut)
def act_on_proposal(request: Request, proposal_id: uuid.UUID, body: ProposalActionIn,
                    actor: Actor = Depends(require("proposals.read")),
                    session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Submit (moderation); accept, delegate, reject, defer, start, complete, make permanent
    (Lenkungsgruppe)."""
    roles = request.app.state.policies.roles
    return service.act(session, actor, roles.allows(actor.roles, "proposals.decide"),
                       roles.allows(actor.roles, "proposals.manage"), proposal_id, body, now)


@router.get("/working-groups", response_model=list[WorkingGroupOut])
def list_working_groups(actor: Actor = Depends(require("proposals.read")), session: Session = Depends(get_session)):
    return service.list_working_groups(session)
