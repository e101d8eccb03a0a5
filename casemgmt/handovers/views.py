"""Endpoints for handovers, inboxes, organisations' contact points and the notification outbox.
Thin: parse, call the service, return."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.handovers import service
from casemgmt.handovers.lifecycle import HandoverKind
from casemgmt.netguard import OutboundPolicy
from casemgmt.handovers.schemas import (
    Box,
    ContactIn,
    ContactOut,
    HandoverActionIn,
    HandoverIn,
    HandoverOut,
    HandoverPage,
    HandoverSummary,
    StateFilter,
)
from casemgmt.notifications import service as outbox
from casemgmt.notifications.schemas import OutboxMessageOut, OutboxPage
from casemgmt.validation import DbId

router = APIRouter(tags=["handovers"])
admin_router = APIRouter(tags=["notifications"])


def _state(request: Request):
    s = request.app.state
    return s.catalog, s.privacy, s.policies.handovers


@router.post("/chains/{chain_id}/handovers", response_model=HandoverOut, status_code=201)
def request_handover(
    request: Request,
    chain_id: uuid.UUID,
    body: HandoverIn,
    actor: Actor = Depends(require("handovers.act")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """Hand a step, a Rechtskreiswechsel or (on relocation) the whole chain to another
    organisation. The receiver's data package is decided and frozen now."""
    catalog, privacy, policy = _state(request)
    return service.request_handover(session, catalog, privacy, policy, actor, chain_id, body, now)


@router.get("/chains/{chain_id}/handovers", response_model=list[HandoverSummary])
def list_chain_handovers(
    chain_id: uuid.UUID,
    actor: Actor = Depends(require("handovers.read")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """All handovers of the chain in every state, oldest first: those your organisation sent,
    received or manages. The chain's record scope is checked first (404 for outsiders)."""
    return service.chain_handovers(session, actor, chain_id, now)


def _inbox(box: Box):
    def endpoint(
        state: StateFilter = StateFilter.pending,
        kind: HandoverKind | None = None,
        overdue: bool | None = None,
        chain_id: uuid.UUID | None = None,
        limit: int = Query(default=50, ge=1, le=200),
        cursor: str | None = Query(default=None, max_length=200),
        actor: Actor = Depends(require("handovers.read")),
        session: Session = Depends(get_session),
        now: datetime = Depends(request_now),
    ) -> HandoverPage:
        filters = service.InboxFilters(state=state, kind=kind, overdue=overdue, chain_id=chain_id)
        return service.inbox(session, actor, box, filters, limit, cursor, now)

    return endpoint


router.add_api_route(
    "/handovers/incoming", _inbox(Box.incoming), methods=["GET"], response_model=HandoverPage,
    summary="Handovers to my organisation",
    description="Waiting handovers (default) overdue first, then by due date; or decided ones, "
                "newest first. `counts` covers the whole box.",
)
router.add_api_route(
    "/handovers/outgoing", _inbox(Box.outgoing), methods=["GET"], response_model=HandoverPage,
    summary="Handovers from my organisation",
    description="Handovers my organisation sent, and those of chains whose case management it "
                "runs; ordered like the incoming box.",
)


@router.get("/handovers/{handover_id}", response_model=HandoverOut)
def get_handover(
    request: Request,
    handover_id: uuid.UUID,
    actor: Actor = Depends(require("handovers.read")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """The handover with its history; the receiver (and the sender) see the data package."""
    return service.get_handover(session, request.app.state.privacy, actor, handover_id, now)


@router.post("/handovers/{handover_id}/actions", response_model=HandoverOut)
def act_on_handover(
    request: Request,
    handover_id: uuid.UUID,
    body: HandoverActionIn,
    actor: Actor = Depends(require("handovers.act")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """Acknowledge or reject (receiver), or withdraw (sender)."""
    catalog, privacy, policy = _state(request)
    return service.respond(session, catalog, privacy, policy, actor, handover_id, body.action.value,
                           body.reason, body.expected_version, now)


# --- contacts and the outbox (administration) -------------------------------------------------


def _area(actor: Actor) -> str | None:
    """The administrator's area: its organisation's jurisdiction and below, unless its role is
    installation-wide."""
    return None if actor.installation_wide else actor.jurisdiction_path


@admin_router.get("/organisations/{organisation_id}/contacts", response_model=list[ContactOut])
def list_contacts(
    organisation_id: DbId,
    actor: Actor = Depends(require("contacts.manage")),
    session: Session = Depends(get_session),
):
    return service.list_contacts(session, actor, organisation_id)


@admin_router.post("/organisations/{organisation_id}/contacts", response_model=ContactOut, status_code=201)
def add_contact(
    request: Request,
    organisation_id: DbId,
    body: ContactIn,
    actor: Actor = Depends(require("contacts.manage")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """Where the organisation's lead (escalations) or team inbox is notified: exactly one email
    address, or a webhook URL on the public internet (409 while no signing secret is configured)."""
    settings = request.app.state.settings
    outbound = OutboundPolicy(signing_secret_configured=bool(settings.webhook_secret),
                              allow_private_networks=settings.webhook_allow_private_networks)
    return service.add_contact(session, actor, organisation_id, body, now, outbound)


@admin_router.delete("/organisations/{organisation_id}/contacts/{contact_id}", status_code=204)
def remove_contact(
    organisation_id: DbId,
    contact_id: DbId,
    actor: Actor = Depends(require("contacts.manage")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    service.remove_contact(session, actor, organisation_id, contact_id, now)
    return Response(status_code=204)


@admin_router.get("/notifications", response_model=OutboxPage)
def list_notifications(
    state: str | None = Query(default=None, pattern="^(pending|delivered|failed)$"),
    limit: int = Query(default=50, ge=1, le=500),
    actor: Actor = Depends(require("notifications.read")),
    session: Session = Depends(get_session),
):
    """The outbox, newest first: what was sent, what is waiting for a retry and why, what failed."""
    area = _area(actor)
    counts = outbox.outbox_counts(session, area)
    items = outbox.list_messages(session, state, limit, area)
    return OutboxPage(counts=counts, items=items)


@admin_router.post("/notifications/{message_id}/requeue", response_model=OutboxMessageOut)
def requeue_notification(
    message_id: DbId,
    actor: Actor = Depends(require("notifications.manage")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """Send a failed notification again (attempts start from zero)."""
    outbox.requeue(session, message_id, now, actor, _area(actor))
    return outbox.get_message(session, message_id, _area(actor))
