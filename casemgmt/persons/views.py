"""Person endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.persons import service
from casemgmt.persons.schemas import PersonCreate, PersonOut

router = APIRouter(prefix="/persons", tags=["persons"])


@router.post("", response_model=PersonOut, status_code=201)
def create_person(
    body: PersonCreate,
    actor: Actor = Depends(require("persons.create")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    return service.create_person(session, actor, body, now)


@router.get("/{person_id}", response_model=PersonOut)
def get_person(
    person_id: uuid.UUID,
    actor: Actor = Depends(require("persons.read")),
    session: Session = Depends(get_session),
):
    return service.get_person(session, person_id)
