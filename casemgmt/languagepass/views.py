"""Sprachenpass endpoints. Thin: parse, call the service, return."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.agreed import LOCAL_TIMEZONE
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.languagepass import service
from casemgmt.languagepass.schemas import EntryIn, LanguagePassOut
from casemgmt.validation import Key

router = APIRouter(prefix="/persons", tags=["language pass"])
PURPOSE = Query(default=None, description="Defaults to your organisation kind's.")


@router.post("/{person_id}/language-pass", response_model=LanguagePassOut, status_code=201)
def add_entry(request: Request, person_id: uuid.UUID, body: EntryIn,
              actor: Actor = Depends(require("languagepass.write")), session: Session = Depends(get_session),
              now: datetime = Depends(request_now)):
    """Write a Sprachenpass entry for a course your organisation ran (category `language`: it
    needs a legal basis to write that category). The German level on the person record is
    derived from the entries."""
    return service.add_entry(session, request.app.state.privacy, actor, person_id, body, now)


@router.get("/{person_id}/language-pass", response_model=LanguagePassOut)
def read_pass(request: Request, person_id: uuid.UUID, purpose: Key | None = PURPOSE,
              actor: Actor = Depends(require("persons.read")), session: Session = Depends(get_session),
              now: datetime = Depends(request_now)):
    """The person's Sprachenpass, if you have a legal basis to read the category `language`."""
    return service.read_pass(session, request.app.state.privacy, actor, person_id, purpose, now)


@router.get("/{person_id}/language-pass.html", response_class=Response,
            responses={200: {"content": {"text/html": {}}}})
def print_pass(request: Request, person_id: uuid.UUID, purpose: Key | None = PURPOSE,
               actor: Actor = Depends(require("persons.read")), session: Session = Depends(get_session),
               now: datetime = Depends(request_now)) -> Response:
    """The Sprachenpass as a printable page in German, to hand to the person (their copy)."""
    record = service.read_pass(session, request.app.state.privacy, actor, person_id, purpose, now)
    return Response(service.render_html(record, now.astimezone(LOCAL_TIMEZONE).date()),
                    media_type="text/html; charset=utf-8")
