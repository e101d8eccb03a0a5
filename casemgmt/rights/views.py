"""The data protection officer's endpoints: the request register, the access report and the
portable copy, restriction, legal hold, erasure and what retention will delete next."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.privacy.service import person_area_clause
from casemgmt.rights import retention, service
from casemgmt.rights.letter import render_letter
from casemgmt.rights.lifecycle import RequestKind
from casemgmt.rights.schemas import (
    ErasureIn,
    ErasureOut,
    LiftIn,
    MeasuresOut,
    ReasonIn,
    RequestActionIn,
    RequestIn,
    RequestOut,
    RequestPage,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["data subject rights"])
REQUEST = Query(description="The registered data subject request this answers.")


def _privacy(request: Request):
    return request.app.state.privacy


def _calendar(request: Request):
    return request.app.state.policies.handovers.calendar


def _conference_category(request: Request) -> str:
    return request.app.state.policies.steering.conference_category


@router.post("/data-subject-requests", response_model=RequestOut, status_code=201)
def register_request(request: Request, body: RequestIn, actor: Actor = Depends(require("requests.manage")),
                     session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Register a request of a person (access, rectification, erasure, restriction, portability,
    objection). It is due one month after receipt (GDPR Art. 12(3)), on a working day."""
    return service.register_request(session, _privacy(request), _calendar(request), actor, body, now)


@router.get("/data-subject-requests", response_model=RequestPage)
def list_requests(state: str | None = Query(default="open", pattern="^(open|received|in_progress|extended|answered|refused)$"),
                  kind: RequestKind | None = None, overdue: bool | None = None, person_id: uuid.UUID | None = None,
                  limit: int = Query(default=100, ge=1, le=500),
                  actor: Actor = Depends(require("requests.manage")), session: Session = Depends(get_session),
                  now: datetime = Depends(request_now)):
    """The register of the officer's area: overdue requests first, then by due date."""
    return service.list_requests(session, actor, state, kind.value if kind else None, overdue, person_id, limit, now)


@router.get("/data-subject-requests/{request_id}", response_model=RequestOut)
def get_request(request_id: uuid.UUID, actor: Actor = Depends(require("requests.manage")),
                session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    return service.get_request(session, actor, request_id, now)


@router.post("/data-subject-requests/{request_id}/actions", response_model=RequestOut)
def act_on_request(request: Request, request_id: uuid.UUID, body: RequestActionIn,
                   actor: Actor = Depends(require("requests.manage")), session: Session = Depends(get_session),
                   now: datetime = Depends(request_now)):
    """start; extend (once, by two months, with the reason); answer (with the outcome); refuse
    (with the reason)."""
    return service.act_on_request(session, _privacy(request), _calendar(request), actor, request_id, body, now)


@router.get("/persons/{person_id}/access-report")
def access_report(request: Request, person_id: uuid.UUID, request_id: uuid.UUID = REQUEST,
                  actor: Actor = Depends(require("rights.exercise")), session: Session = Depends(get_session),
                  now: datetime = Depends(request_now)) -> dict[str, Any]:
    """Everything the service holds about the person (GDPR Art. 15), for a registered access request."""
    return service.access_report(session, _privacy(request), request.app.state.policies, actor, person_id,
                                 request_id, now)


@router.get("/persons/{person_id}/access-report.html", response_class=Response,
            responses={200: {"content": {"text/html": {}}}})
def access_report_letter(request: Request, person_id: uuid.UUID, request_id: uuid.UUID = REQUEST,
                         actor: Actor = Depends(require("rights.exercise")), session: Session = Depends(get_session),
                         now: datetime = Depends(request_now)) -> Response:
    """The access report as a printable letter in plain German (print it to PDF from the browser)."""
    report = service.access_report(session, _privacy(request), request.app.state.policies, actor, person_id,
                                   request_id, now)
    return Response(render_letter(report), media_type="text/html; charset=utf-8")


@router.get("/persons/{person_id}/portability")
def portable_copy(request: Request, person_id: uuid.UUID, request_id: uuid.UUID = REQUEST,
                  actor: Actor = Depends(require("rights.exercise")), session: Session = Depends(get_session),
                  now: datetime = Depends(request_now)) -> dict[str, Any]:
    """The data the person provided, machine-readable (GDPR Art. 20), for a registered portability request."""
    return service.portable_copy(session, _privacy(request), actor, person_id, request_id, now)


@router.get("/persons/{person_id}/restriction", response_model=MeasuresOut)
def read_restriction(person_id: uuid.UUID, actor: Actor = Depends(require("rights.exercise")),
                     session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Whether the processing of the person is restricted, why, and its history."""
    return service.read_measures(session, actor, person_id, "restriction", now)


@router.post("/persons/{person_id}/restriction", response_model=MeasuresOut, status_code=201)
def restrict(request: Request, person_id: uuid.UUID, body: ReasonIn,
             actor: Actor = Depends(require("rights.exercise")), session: Session = Depends(get_session),
             now: datetime = Depends(request_now)):
    """Restrict processing (GDPR Art. 18): the record stays stored, and every read or write by an
    organisation answers 423 until the restriction is lifted; chains cannot move."""
    return service.set_measure(session, _privacy(request), actor, person_id, "restriction", body.reason,
                               body.request_id, now)


@router.post("/persons/{person_id}/restriction/lift", response_model=MeasuresOut)
def lift_restriction(request: Request, person_id: uuid.UUID, body: LiftIn,
                     actor: Actor = Depends(require("rights.exercise")), session: Session = Depends(get_session),
                     now: datetime = Depends(request_now)):
    return service.lift_measure(session, _privacy(request), actor, person_id, "restriction", body.reason, now)


@router.get("/persons/{person_id}/legal-hold", response_model=MeasuresOut)
def read_legal_hold(person_id: uuid.UUID, actor: Actor = Depends(require("holds.manage")),
                    session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    return service.read_measures(session, actor, person_id, "legal_hold", now)


@router.post("/persons/{person_id}/legal-hold", response_model=MeasuresOut, status_code=201)
def set_legal_hold(request: Request, person_id: uuid.UUID, body: LiftIn,
                   actor: Actor = Depends(require("holds.manage")), session: Session = Depends(get_session),
                   now: datetime = Depends(request_now)):
    """Set a legal hold: retention and erasure stop until it is lifted."""
    return service.set_measure(session, _privacy(request), actor, person_id, "legal_hold", body.reason, None, now)


@router.post("/persons/{person_id}/legal-hold/lift", response_model=MeasuresOut)
def lift_legal_hold(request: Request, person_id: uuid.UUID, body: LiftIn,
                    actor: Actor = Depends(require("holds.manage")), session: Session = Depends(get_session),
                    now: datetime = Depends(request_now)):
    return service.lift_measure(session, _privacy(request), actor, person_id, "legal_hold", body.reason, now)


@router.post("/persons/{person_id}/erasure", response_model=ErasureOut)
def erase(request: Request, person_id: uuid.UUID, body: ErasureIn,
          actor: Actor = Depends(require("rights.exercise")), session: Session = Depends(get_session),
          now: datetime = Depends(request_now)):
    """Erase the person for a registered erasure request (GDPR Art. 17): their data key is
    destroyed with a tombstone, their values deleted; the pseudonymous case history stays. Refused
    (409 erasure-refused) where a legal hold, an open chain or a retention obligation stands
    against it."""
    out, tombstone = service.erase_on_request(session, _privacy(request), _conference_category(request), actor,
                                              person_id, body, now)
    directory = request.app.state.settings.tombstone_dir
    if directory is not None:
        from casemgmt.rights.tombstones import append

        try:
            append(directory, [tombstone])
        except OSError:
            # The table holds the tombstone; `casemgmt erasure replay` copies it to the file.
            log.exception("could not append the tombstone of %s to %s", person_id, directory)
    return out


@router.get("/retention/due")
def retention_due(request: Request, days: int = Query(default=30, ge=0, le=366),
                  actor: Actor = Depends(require("retention.read")), session: Session = Depends(get_session),
                  now: datetime = Depends(request_now)) -> dict[str, Any]:
    """What retention deletes from today until ``days`` ahead (default 30): persons per category,
    and each person with the day (for the officer's area); persons under a legal hold or a
    restriction are listed with what stops it."""
    out = retention.upcoming(session, _privacy(request), _conference_category(request), now, days,
                             person_area_clause(actor))
    session.rollback()
    return out
