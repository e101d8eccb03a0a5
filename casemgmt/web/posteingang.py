"""The clerk's screens: Posteingang (incoming handovers, overdue and escalated first, with
counts), the handover page (the data package: withheld fields named, not shown; acknowledge or
reject with a reason; the sender withdraws), Meine Schritte (steps assigned to my organisation
that I can act on) and the outgoing handovers."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from casemgmt.auth.dependencies import get_session
from casemgmt.chains import service as chains
from casemgmt.chains.engine import ChainStatus
from casemgmt.handovers import service as handovers
from casemgmt.handovers.lifecycle import HandoverKind
from casemgmt.handovers.schemas import Box, HandoverActionIn, StateFilter
from casemgmt.problems import Problem
from casemgmt.web import texte
from casemgmt.web.texte import N_
from casemgmt.web.faelle import german_errors, jurisdiction_names, organisation_names, template_titles
from casemgmt.web.navigation import nav_entry
from casemgmt.web.routing import WebUser, checked_form, need, redirect, render, web_router

router = web_router()
nav_entry(N_("Posteingang"), "/ui/posteingang", "handovers.read", 30)
nav_entry(N_("Meine Schritte"), "/ui/schritte", "steps.act", 40)
nav_entry(N_("Ausgang"), "/ui/ausgang", "handovers.read", 50)

PAGE = 25
STATE_OPTIONS = [("pending", "Wartend"), ("requested", "Angefragt"), ("escalated", "Eskaliert"),
                 ("acknowledged", "Bestätigt"), ("rejected", "Abgelehnt"), ("withdrawn", "Zurückgezogen")]


def _box(request: Request, user: WebUser, db: Session, box: Box, state: StateFilter, kind: HandoverKind | None,
         weiter: str | None, title: str, path: str) -> Response:
    page = handovers.inbox(db, user.actor, box, handovers.InboxFilters(state=state, kind=kind), PAGE, weiter,
                           request.app.state.clock())
    return render(request, "posteingang.html", page=page, texte=texte, state=state.value, step_titles=step_titles(request),
                  kind=kind.value if kind else "", state_options=STATE_OPTIONS, heading=title, path=path,
                  box=box.value)


@router.get("/posteingang")
def incoming(request: Request, stand: StateFilter = StateFilter.pending, art: HandoverKind | None = None,
             weiter: str | None = Query(default=None, max_length=200),
             user: WebUser = Depends(need("handovers.read")), db: Session = Depends(get_session)) -> Response:
    """Handovers to my organisation: waiting ones overdue and escalated first, with counts."""
    return _box(request, user, db, Box.incoming, stand, art, weiter, "Posteingang", "/ui/posteingang")


@router.get("/ausgang")
def outgoing(request: Request, stand: StateFilter = StateFilter.pending, art: HandoverKind | None = None,
             weiter: str | None = Query(default=None, max_length=200),
             user: WebUser = Depends(need("handovers.read")), db: Session = Depends(get_session)) -> Response:
    """Handovers my organisation sent, and those of chains it manages."""
    return _box(request, user, db, Box.outgoing, stand, art, weiter, "Ausgang", "/ui/ausgang")


def step_titles(request: Request) -> dict[str, str]:
    """Step key -> title over the current templates (a handover names its steps by key)."""
    return {step.key: step.title for template in request.app.state.policies.templates.values()
            for step in template.steps}


def _handover_context(request: Request, db: Session, user: WebUser, handover_id: uuid.UUID) -> dict[str, Any]:
    h = handovers.get_handover(db, request.app.state.privacy, user.actor, handover_id, request.app.state.clock())
    data = request.app.state.policies.data
    return {"h": h, "data": data, "texte": texte, "step_titles": step_titles(request),
            "org_names": organisation_names(db, {e.actor_organisation_id for e in h.events}
                                            | {h.case_management_organisation_id}),
            "places": jurisdiction_names(db, {i for i in (h.from_jurisdiction_id, h.to_jurisdiction_id) if i})}


@router.get("/uebergaben/{handover_id}")
def handover_page(request: Request, handover_id: uuid.UUID, user: WebUser = Depends(need("handovers.read")),
                  db: Session = Depends(get_session)) -> Response:
    """The handover with its data package: what I may see, and which fields are withheld."""
    return render(request, "uebergabe.html", **_handover_context(request, db, user, handover_id))


@router.post("/uebergaben/{handover_id}")
def act_on_handover(request: Request, handover_id: uuid.UUID, user: WebUser = Depends(need("handovers.act")),
                    form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    """Acknowledge or reject (the receiver; rejecting needs a reason), or withdraw (the sender)."""
    action = form.get("action") if isinstance(form.get("action"), str) else ""
    reason = form.get("reason").strip() if isinstance(form.get("reason"), str) and form.get("reason").strip() else None
    version = form.get("expected_version")
    if action == "reject" and not reason:
        return render(request, "uebergabe.html", http_status=422,
                      errors=[{"field": "reject-reason", "message": "Bitte begründen Sie die Ablehnung."}],
                      **_handover_context(request, db, user, handover_id))
    try:
        body = HandoverActionIn(action=action, reason=reason,
                                expected_version=int(version) if isinstance(version, str) and version.isdigit() else None)
        s = request.app.state
        handovers.respond(db, s.catalog, s.privacy, s.policies.handovers, user.actor, handover_id, body.action.value,
                          body.reason, body.expected_version, s.clock())
    except (Problem, ValidationError) as exc:
        if isinstance(exc, Problem) and exc.status in (404, 423):
            raise
        errors = german_errors(exc, {"reason": "Begründung", "action": "Aktion"})
        for e in errors:
            e["field"] = f"{action}-{e['field']}" if e["field"] else ""
        return render(request, "uebergabe.html", http_status=409 if isinstance(exc, Problem) and exc.status == 409 else 422,
                      errors=errors, **_handover_context(request, db, user, handover_id))
    notice = {"acknowledge": "bestaetigt", "reject": "abgelehnt", "withdraw": "zurueckgezogen"}[body.action.value]
    return redirect(f"/ui/uebergaben/{handover_id}", notice)


@router.get("/schritte")
def my_steps(request: Request, weiter: str | None = Query(default=None, max_length=200),
             user: WebUser = Depends(need("steps.act")), db: Session = Depends(get_session)) -> Response:
    """Steps assigned to my organisation that I can act on now, from the open chains my
    organisation is involved in (a page of chains at a time)."""
    now = request.app.state.clock()
    found = []
    cursor = weiter
    for status in (ChainStatus.stalled, ChainStatus.active):
        if weiter and status is ChainStatus.stalled:
            continue
        page = chains.list_chains(db, chains.ChainFilters(status=status, organisation_id=user.actor.organisation_id),
                                  PAGE, cursor if status is ChainStatus.active else None, now, actor=user.actor)
        for summary in page.items:
            chain = chains.get_chain(db, request.app.state.catalog, user.actor, summary.id, now)
            for step in chain.steps:
                if step.assigned_organisation_id == user.actor.organisation_id and step.allowed_actions:
                    found.append((chain, step))
        if status is ChainStatus.active:
            cursor = page.next_cursor
    places = jurisdiction_names(db, {c.lead_jurisdiction_id for c, _ in found})
    found.sort(key=lambda cs: (not cs[1].overdue, cs[1].state.value != "blocked",
                               cs[1].due_at.isoformat() if cs[1].due_at else "9999"))
    return render(request, "schritte.html", found=found, texte=texte, places=places, next_cursor=cursor,
                  templates=template_titles(request))
