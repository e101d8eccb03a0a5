"""Endpoints for proposals, decisions and working groups. Thin: parse, call the service, return."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.database import unit_of_work
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.service import write_audit
from casemgmt.steering import render, report, service
from casemgmt.steering.ocel import export_ocel
from casemgmt.steering.proposals import ProposalState
from casemgmt.steering.schemas import ProposalActionIn, ProposalIn, ProposalOut, WorkingGroupOut
from casemgmt.validation import DbId

router = APIRouter(tags=["steering"])


@router.post("/proposals", response_model=ProposalOut, status_code=201)
def create_proposal(request: Request, body: ProposalIn, actor: Actor = Depends(require("proposals.manage")),
                    session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Bundle findings (from one or several conferences) into a proposal to the Lenkungsgruppe."""
    s = request.app.state
    return service.create_proposal(session, s.privacy, s.policies.steering, actor, body, now)


@router.get("/proposals", response_model=list[ProposalOut])
def list_proposals(request: Request, state: ProposalState | None = None,
                   limit: int = Query(default=50, ge=1, le=200),
                   actor: Actor = Depends(require("proposals.read")), session: Session = Depends(get_session)):
    return service.list_proposals(session, state, limit, request.app.state.policies.steering.k)


@router.get("/proposals/{proposal_id}", response_model=ProposalOut)
def get_proposal(request: Request, proposal_id: uuid.UUID, actor: Actor = Depends(require("proposals.read")),
                 session: Session = Depends(get_session)):
    return service.get_proposal(session, proposal_id, actor, request.app.state.policies.steering.k)


@router.post("/proposals/{proposal_id}/actions", response_model=ProposalOut)
def act_on_proposal(request: Request, proposal_id: uuid.UUID, body: ProposalActionIn,
                    actor: Actor = Depends(require("proposals.read")),
                    session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Submit (moderation); accept, delegate, reject, defer, start, complete, make permanent
    (Lenkungsgruppe)."""
    s = request.app.state
    roles = s.policies.roles
    return service.act(session, s.privacy, s.policies.steering, actor, roles.allows(actor.roles, "proposals.decide"),
                       roles.allows(actor.roles, "proposals.manage"), proposal_id, body, now)


@router.get("/working-groups", response_model=list[WorkingGroupOut])
def list_working_groups(actor: Actor = Depends(require("proposals.read")), session: Session = Depends(get_session)):
    return service.list_working_groups(session)


# --- reports and the export (anonymised; the steering group's only view of cases) ---------------


def _area_id(session: Session, actor: Actor, jurisdiction_id: int | None) -> int:
    """The requested area, or the Kreis/kreisfreie Stadt of the caller's organisation."""
    if jurisdiction_id is not None:
        return jurisdiction_id
    org = session.get(Organisation, actor.organisation_id)
    assert org is not None
    here = session.get(Jurisdiction, org.jurisdiction_id)
    while here is not None and here.level not in ("kreis", "kreisfreie_stadt"):
        here = session.get(Jurisdiction, here.parent_id) if here.parent_id else None
    return here.id if here is not None else org.jurisdiction_id


def _report(request: Request, session: Session, actor: Actor, jurisdiction_id: int | None, now: datetime,
            form: str) -> dict:
    policies = request.app.state.policies
    with unit_of_work(session):
        area = report.resolve_area(session, _area_id(session, actor, jurisdiction_id))
        document = report.build_report(session, policies.steering, policies.goals, area, now)
        write_audit(session, [AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id,
                                         action="R", subtype="report.steering", entity_type="report",
                                         entity_id=str(area.id), detail=form)], now)
    return document


AREA = Query(default=None, description="A Kreis or kreisfreie Stadt; default: the caller's.")


@router.get("/reports/steering")
def steering_report(request: Request, jurisdiction_id: DbId | None = AREA,
                    actor: Actor = Depends(require("reports.read")),
                    session: Session = Depends(get_session), now: datetime = Depends(request_now)) -> dict:
    """Anonymised aggregates for the Lenkungsgruppe: persons per barrier x field of action x
    organisation kind, handover waiting times, goal attainment, overdue steps, trends per quarter;
    each with the Kreis total and the towns. Cells under k persons, and cells from which such a
    cell could be worked out, are null (shown as ".")."""
    return _report(request, session, actor, jurisdiction_id, now, "json")


@router.get("/reports/steering.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "CSV for German Excel"}})
def steering_report_csv(request: Request, jurisdiction_id: DbId | None = AREA,
                        actor: Actor = Depends(require("reports.read")),
                        session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """The report as CSV for German Excel (semicolons, UTF-8 with BOM, decimal comma)."""
    document = _report(request, session, actor, jurisdiction_id, now, "csv")
    name = f"steuerungsbericht-{now:%Y-%m-%d}.csv"
    return Response(render.to_csv(document), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/reports/steering.html", response_class=Response,
            responses={200: {"content": {"text/html": {}}, "description": "Readable page with charts"}})
def steering_report_html(request: Request, jurisdiction_id: DbId | None = AREA,
                         actor: Actor = Depends(require("reports.read")),
                         session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """The report as a readable page with charts."""
    document = _report(request, session, actor, jurisdiction_id, now, "html")
    return Response(render.to_html(document), media_type="text/html; charset=utf-8")


@router.get("/exports/ocel")
def ocel_export(request: Request, actor: Actor = Depends(require("export.read")),
                session: Session = Depends(get_session), now: datetime = Depends(request_now)) -> dict:
    """The chain and handover event log as OCEL 2.0 JSON, for process mining: pseudonyms new with
    every export, times coarsened to days, paths of fewer than k chains left out."""
    policy = request.app.state.policies.steering
    with unit_of_work(session):
        document, stats = export_ocel(session, min_variant_chains=policy.min_variant_chains)
        write_audit(session, [AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id,
                                         action="R", subtype="export.ocel", entity_type="export",
                                         detail=f"{stats.chains_exported} of {stats.chains_total} chains")], now)
    return document
