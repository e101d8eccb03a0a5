"""Person endpoints. Every response goes through the exit point (privacy.service.disclose)."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.persons import service as persons
from casemgmt.persons.schemas import CaseStatus, PersonPage
from casemgmt.privacy import service
from casemgmt.privacy.schemas import (
    PersonCreateIn,
    PersonRecordOut,
    PersonSearchIn,
    PersonUpdateIn,
)
from casemgmt.problems import invalid_field
from casemgmt.validation import DbId, Key

router = APIRouter(prefix="/persons", tags=["persons"])
PURPOSE = Query(default=None, description="Purpose of the access; defaults to your organisation kind's.")


def _privacy(request: Request) -> service.Privacy:
    return request.app.state.privacy


def _at_most_catalogue(request: Request, fields: dict) -> None:
    """More fields than the data catalogue has cannot all be fields of the record: one short 422
    instead of an error (and an audit detail) per invented name."""
    known = len(request.app.state.policies.data.fields)
    if len(fields) > known:
        raise invalid_field("fields", f"{len(fields)} fields sent; the person record has {known}",
                            "too_long")


@router.post("", response_model=PersonRecordOut, status_code=201)
def create_person(
    request: Request,
    body: PersonCreateIn,
    actor: Actor = Depends(require("persons.create")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """Register a person; consents signed at intake are recorded before the fields are written."""
    _at_most_catalogue(request, body.fields)
    return service.create_person(session, _privacy(request), actor, body, now)


@router.get("", response_model=PersonPage)
def list_persons(
    request: Request,
    jurisdiction_id: DbId | None = Query(default=None, description="The town (or jurisdiction) and those below it."),
    status: CaseStatus | None = Query(default=None, description="Persons with a chain you list in this status, "
                                                                "or `no_chain`."),
    purpose: Key | None = PURPOSE,
    limit: int = Query(default=20, ge=1, le=100),
    cursor: str | None = Query(default=None, max_length=200),
    actor: Actor = Depends(require("persons.read")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """The persons your organisation is involved with now, newest registration first. Each is
    shown as `GET /persons/{id}` would show it to you, and each is audited as a read."""
    filters = persons.PersonFilters(jurisdiction_id=jurisdiction_id, status=status)
    return persons.list_persons(session, _privacy(request), actor, filters, limit, cursor, purpose, now)


@router.post("/search", response_model=list[PersonRecordOut])
def search_persons(
    request: Request,
    body: PersonSearchIn,
    actor: Actor = Depends(require("persons.read")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """Find persons by name and birth date (through the blind index), within your record scope."""
    return service.find_persons(session, _privacy(request), actor, body.family_name,
                                body.given_names, body.birth_date, body.purpose, now)


@router.get("/{person_id}", response_model=PersonRecordOut)
def read_person(
    request: Request,
    person_id: uuid.UUID,
    purpose: Key | None = PURPOSE,
    actor: Actor = Depends(require("persons.read")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    return service.read_person(session, _privacy(request), actor, person_id, purpose, now)


@router.patch("/{person_id}", response_model=PersonRecordOut)
def update_person(
    request: Request,
    person_id: uuid.UUID,
    body: PersonUpdateIn,
    actor: Actor = Depends(require("persons.write")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """Set or clear fields; a field without a legal basis refuses the whole change (403)."""
    _at_most_catalogue(request, body.fields)
    return service.update_person(session, _privacy(request), actor, person_id, body.fields,
                                 body.purpose, now, rectification_request_id=body.rectification_request_id)
