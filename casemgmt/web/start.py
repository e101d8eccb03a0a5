"""The start page after sign-in: the user's organisation, roles and the entries they may use."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session
from casemgmt.jurisdictions.models import Organisation
from casemgmt.web.routing import WebUser, render, signed_in, web_router

router = web_router()


@router.get("/")
def start(request: Request, user: WebUser = Depends(signed_in), db: Session = Depends(get_session)) -> Response:
    organisation = db.get(Organisation, user.actor.organisation_id)
    return render(request, "start.html", organisation=organisation)
