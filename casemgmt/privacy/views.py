"""Consents, data-exchange agreements, and the data protection officer's views."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.privacy import officer, service
from casemgmt.privacy.schemas import (
    AgreementIn,
    AgreementOut,
    AuditPage,
    CatalogueOut,
    ConsentIn,
    ConsentOut,
    WithdrawalIn,
)
from casemgmt.validation import DbId, IsoDateTime, Text

router = APIRouter(tags=["data protection"])


@router.post("/persons/{person_id}/consents", response_model=ConsentOut, status_code=201)
def record_consent(
    request: Request,
    person_id: uuid.UUID,
    body: ConsentIn,
    actor: Actor = Depends(require("consents.record")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    return service.record_consent(session, request.app.state.privacy, actor, person_id, body, now)


@router.get("/persons/{person_id}/consents", response_model=list[ConsentOut])
def consent_history(
    request: Request,
    person_id: uuid.UUID,
    actor: Actor = Depends(require("consents.read")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """The person's consents, newest first, with their status now. Case managers see persons in
    their record scope; the data protection officer sees every person's."""
    officer_view = request.app.state.policies.roles.allows(actor.roles, "audit.read")
    return service.list_consents(session, actor, person_id, now, officer=officer_view)


@router.post("/consents/{consent_id}/withdraw", response_model=ConsentOut)
def withdraw_consent(
    request: Request,
    consent_id: uuid.UUID,
    body: WithdrawalIn,
    actor: Actor = Depends(require("consents.record")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """Takes effect immediately for every later access; earlier access stays lawful."""
    return service.withdraw_consent(session, request.app.state.privacy, actor, consent_id, body.note, now)


@router.post("/agreements", response_model=AgreementOut, status_code=201)
def record_agreement(
    request: Request,
    body: AgreementIn,
    actor: Actor = Depends(require("agreements.manage")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    return service.record_agreement(session, request.app.state.privacy, actor, body, now)


@router.get("/agreements", response_model=list[AgreementOut])
def list_agreements(
    actor: Actor = Depends(require("agreements.read")),
    session: Session = Depends(get_session),
):
    return officer.list_agreements(session, actor)


@router.get("/audit", response_model=AuditPage)
def search_audit(
    person_id: uuid.UUID | None = None,
    user: Text | None = Query(default=None, max_length=200),
    organisation_id: DbId | None = None,
    since: IsoDateTime | None = Query(default=None, alias="from"),
    until: IsoDateTime | None = Query(default=None, alias="to"),
    outcome: str | None = Query(default=None, pattern="^(success|denied)$"),
    cursor: int | None = Query(default=None, ge=1, le=2**62, description="`next_cursor` of the previous page."),
    limit: int = Query(default=100, ge=1, le=1000),
    actor: Actor = Depends(require("audit.read")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """The audit trail, newest first, by person, user, organisation, time and outcome."""
    filters = officer.AuditFilters(person_id, user, organisation_id, since, until, outcome)
    return officer.search_audit(session, actor, filters, cursor, limit, now)


@router.get("/record-of-processing")
def record_of_processing(
    request: Request,
    actor: Actor = Depends(require("processing.read")),
):
    """The record of processing activities (GDPR Art. 30), generated from the policy files."""
    return officer.record_of_processing(request.app.state.policies)


@router.get("/catalogue", response_model=CatalogueOut, tags=["reference"])
def data_catalogue(request: Request, actor: Actor = Depends(require("reference.read"))):
    """The catalogue of personal data: categories (with retention), the fields of the person
    record with their German titles, types and allowed values, and the purposes of access."""
    return service.data_catalogue(request.app.state.privacy.policy)
