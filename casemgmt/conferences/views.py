"""Endpoints for Fallkonferenzen. Thin: parse, call the service, return."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.conferences import service
from casemgmt.conferences.schemas import (
    AgreementIn,
    CaseIn,
    ConferenceIn,
    ConferenceOut,
    ConferenceSummary,
    FindingIn,
    ParticipantsIn,
    PhaseIn,
    VoteIn,
)

router = APIRouter(prefix="/conferences", tags=["conferences"])


def _ctx(request: Request):
    s = request.app.state
    return s.privacy, s.policies.steering


@router.post("", response_model=ConferenceOut, status_code=201)
def create_conference(request: Request, body: ConferenceIn, actor: Actor = Depends(require("conferences.manage")),
                      session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Schedule a Fallkonferenz; the caller's organisation moderates it."""
    privacy, policy = _ctx(request)
    return service.create_conference(session, privacy, policy, actor, body, now)


@router.get("", response_model=list[ConferenceSummary])
def list_conferences(limit: int = Query(default=50, ge=1, le=200),
                     actor: Actor = Depends(require("conferences.read")),
                     session: Session = Depends(get_session)):
    """Conferences the caller's organisation takes part in, newest first."""
    return service.list_conferences(session, actor, limit)


@router.get("/{conference_id}", response_model=ConferenceOut)
def get_conference(request: Request, conference_id: uuid.UUID, actor: Actor = Depends(require("conferences.read")),
                   session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    privacy, policy = _ctx(request)
    return service.get_conference(session, privacy, policy, actor, conference_id, now)


@router.post("/{conference_id}/participants", response_model=ConferenceOut)
def add_participants(request: Request, conference_id: uuid.UUID, body: ParticipantsIn,
                     actor: Actor = Depends(require("conferences.manage")),
                     session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    privacy, policy = _ctx(request)
    return service.add_participants(session, privacy, policy, actor, conference_id, body.organisation_ids, now)


@router.post("/{conference_id}/phase", response_model=ConferenceOut)
def set_phase(request: Request, conference_id: uuid.UUID, body: PhaseIn,
              actor: Actor = Depends(require("conferences.manage")),
              session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Move to the case phase, the structural phase, or close the conference."""
    privacy, policy = _ctx(request)
    return service.set_phase(session, privacy, policy, actor, conference_id, body.phase, body.expected_version, now)


@router.post("/{conference_id}/cases", response_model=ConferenceOut)
def add_case(request: Request, conference_id: uuid.UUID, body: CaseIn,
             actor: Actor = Depends(require("conferences.manage")),
             session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Put a case on the agenda: every participant needs a legal basis for the conference purpose."""
    privacy, policy = _ctx(request)
    return service.add_case(session, privacy, policy, actor, conference_id, body.chain_id, now)


@router.post("/{conference_id}/agreements", response_model=ConferenceOut)
def add_agreement(request: Request, conference_id: uuid.UUID, body: AgreementIn,
                  actor: Actor = Depends(require("conferences.manage")),
                  session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Case phase: an action item with an owner organisation and a due date."""
    s = request.app.state
    return service.add_agreement(session, s.catalog, s.privacy, s.policies.steering, s.policies.handovers,
                                 actor, conference_id, body, now)


@router.post("/{conference_id}/findings", response_model=ConferenceOut)
def add_finding(request: Request, conference_id: uuid.UUID, body: FindingIn,
                actor: Actor = Depends(require("conferences.manage")),
                session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Structural phase: a finding without personal data (checked), with the cases behind it."""
    privacy, policy = _ctx(request)
    kinds = request.app.state.policies.organisation_kinds.keys()
    return service.add_finding(session, privacy, policy, kinds, actor, conference_id, body, now)


@router.put("/{conference_id}/findings/{finding_id}/vote", response_model=ConferenceOut)
def vote(request: Request, conference_id: uuid.UUID, finding_id: uuid.UUID, body: VoteIn,
         actor: Actor = Depends(require("conferences.participate")),
         session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Dot voting: put dots on a finding (replaces your earlier dots on it)."""
    privacy, policy = _ctx(request)
    return service.vote(session, privacy, policy, actor, conference_id, finding_id, body.dots, now)
