"""The administrator's screens: the organisations of the administrator's area and where each is
notified (its lead for escalations, its team inbox, its data protection contact). The contact
service checks every address (one e-mail address, or a signed webhook to a public URL) and
audits each change; an organisation outside the area is 404 as in the API.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from casemgmt.auth.dependencies import get_session
from casemgmt.handovers import service as handovers
from casemgmt.handovers.schemas import ContactIn
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.netguard import OutboundPolicy
from casemgmt.problems import NotFound, Problem
from casemgmt.validation import DbId
from casemgmt.web.conferences import _one, form_errors, form_refusal
from casemgmt.web.navigation import nav_entry
from casemgmt.web.texte import N_
from casemgmt.web.routing import PREFIX, WebUser, checked_form, need, redirect, render, web_router

router = web_router()
nav_entry(N_("Organisationen"), f"{PREFIX}/verwaltung/organisationen", "contacts.manage", 70)

ROLES = {"lead": N_("Leitung (Eskalationen)"), "inbox": N_("Team-Postfach"), "dpo": N_("Datenschutz")}
CHANNELS = {"email": N_("E-Mail"), "webhook": N_("Webhook")}


def _area(user: WebUser):
    """Organisations of the administrator's area (its jurisdiction and below), unless installation-wide."""
    stmt = select(Organisation).join(Jurisdiction, Jurisdiction.id == Organisation.jurisdiction_id)
    if not user.actor.installation_wide:
        stmt = stmt.where(Jurisdiction.path.startswith(user.actor.jurisdiction_path))
    return stmt


@router.get("/verwaltung/organisationen")
def organisations(request: Request, user: WebUser = Depends(need("contacts.manage")),
                  db: Session = Depends(get_session)) -> Response:
    kinds = request.app.state.policies.organisation_kinds
    rows = [(o, o.jurisdiction.name) for o in db.scalars(_area(user).order_by(Jurisdiction.path, Organisation.name))]
    return render(request, "admin_organisationen.html", rows=rows,
                  kind_titles={k: v.title for k, v in kinds.items()})


def _contacts_page(request: Request, user: WebUser, db: Session, organisation_id: int, status: int = 200,
                   errors=None, values=None) -> Response:
    contacts = handovers.list_contacts(db, user.actor, organisation_id)  # 404 outside the area
    org = db.get(Organisation, organisation_id)
    if org is None:  # pragma: no cover - list_contacts found it
        raise NotFound(f"no organisation {organisation_id}", resource="organisation", id=str(organisation_id))
    return render(request, "admin_kontakte.html", http_status=status, org=org, contacts=contacts, roles=ROLES,
                  channels=CHANNELS, errors=errors or [], values=values or {})


@router.get("/verwaltung/organisationen/{organisation_id}")
def contacts(request: Request, organisation_id: DbId, user: WebUser = Depends(need("contacts.manage")),
             db: Session = Depends(get_session)) -> Response:
    return _contacts_page(request, user, db, organisation_id)


@router.post("/verwaltung/organisationen/{organisation_id}/kontakte")
def add_contact(request: Request, organisation_id: DbId, user: WebUser = Depends(need("contacts.manage")),
                form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    settings = request.app.state.settings
    values = {"role": _one(form, "role"), "channel": _one(form, "channel"), "address": _one(form, "address") or ""}
    outbound = OutboundPolicy(signing_secret_configured=bool(settings.webhook_secret),
                              allow_private_networks=settings.webhook_allow_private_networks)
    try:
        handovers.add_contact(db, user.actor, organisation_id, ContactIn(**values), request.app.state.clock(), outbound)
    except (ValidationError, Problem) as exc:
        if not form_refusal(exc):
            raise
        db.rollback()
        return _contacts_page(request, user, db, organisation_id, status=422, errors=form_errors(exc), values=values)
    return redirect(f"{PREFIX}/verwaltung/organisationen/{organisation_id}", "gespeichert")


@router.post("/verwaltung/organisationen/{organisation_id}/kontakte/{contact_id}/entfernen")
def remove_contact(request: Request, organisation_id: DbId, contact_id: DbId,
                   user: WebUser = Depends(need("contacts.manage")), form: FormData = Depends(checked_form),
                   db: Session = Depends(get_session)) -> Response:
    handovers.remove_contact(db, user.actor, organisation_id, contact_id, request.app.state.clock())
    return redirect(f"{PREFIX}/verwaltung/organisationen/{organisation_id}", "gespeichert")
