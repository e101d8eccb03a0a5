"""Erstgespräch endpoints. Thin: parse, call the service, return."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.chains.schemas import ChainOut
from casemgmt.clock import request_now
from casemgmt.interviews import service
from casemgmt.interviews.schemas import InterviewIn, InterviewOut, StartFromInterviewIn

router = APIRouter(prefix="/persons", tags=["interviews"])


def _context(request: Request):
    state = request.app.state
    return state.privacy, state.policies.interview, state.catalog, state.policies.handovers.case_management_kinds


@router.post("/{person_id}/interviews", response_model=InterviewOut, status_code=201)
def record_interview(
    request: Request,
    person_id: uuid.UUID,
    body: InterviewIn,
    actor: Actor = Depends(require("interviews.record")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """Record an Erstgespräch held by the case management by the Gesprächsleitfaden
    (`policies/interview.yaml`). Each answer is written to its person field with that field's
    legal basis (a field without one: 403 naming it, and nothing is stored). The answer suggests a
    chain template and optional steps, with the reasons."""
    privacy, guide, catalog, kinds = _context(request)
    return service.record_interview(session, privacy, guide, catalog, kinds, actor, person_id, body, now)


@router.get("/{person_id}/interviews", response_model=list[InterviewOut])
def list_interviews(
    request: Request,
    person_id: uuid.UUID,
    actor: Actor = Depends(require("interviews.record")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """The Erstgespräche your organisation held with the person, with what they suggested."""
    privacy, guide, catalog, _ = _context(request)
    return service.list_interviews(session, privacy, guide, catalog, actor, person_id, now)


@router.post("/{person_id}/interviews/{interview_id}/chain", response_model=ChainOut, status_code=201)
def start_from_interview(
    request: Request,
    person_id: uuid.UUID,
    interview_id: uuid.UUID,
    body: StartFromInterviewIn,
    actor: Actor = Depends(require("chains.start")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """Take the interview into a chain in one request: the suggested template (or
    `template_key`) is started, or the person's running chain of it taken if your organisation
    runs it, and its `first_interview` step is completed."""
    privacy, guide, catalog, kinds = _context(request)
    return service.start_from_interview(session, catalog, privacy, guide, kinds, actor, person_id, interview_id,
                                        body, now)
