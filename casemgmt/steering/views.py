"""Endpoints for proposals, decisions and working groups. Thin: parse, call the service, return."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.database import unit_of_work
from casemgmt.jurisdictions.service import steering_area
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.service import write_audit
from casemgmt.problems import NoRelease
from casemgmt.steering import eventlog, ondemand, releases, render, report, service
from casemgmt.steering.proposals import ProposalState
from casemgmt.steering.schemas import ProposalActionIn, ProposalIn, ProposalOut, ReleaseOut, WorkingGroupOut
from casemgmt.validation import DbId

router = APIRouter(tags=["steering"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


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
    return service.list_proposals(session, actor, state, limit, request.app.state.policies.steering.k)


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
    return service.list_working_groups(session, actor)


# --- reports and the export (anonymised; the steering group's only view of cases) ---------------


def _area_id(session: Session, actor: Actor, jurisdiction_id: int | None) -> int:
    """The requested area, or the Kreis/kreisfreie Stadt of the caller's organisation."""
    if jurisdiction_id is not None:
        return jurisdiction_id
    return steering_area(session, actor.organisation_id).id


def _audit(session: Session, actor: Actor, subtype: str, entity_type: str, entity_id: str, detail: str,
           now: datetime) -> None:
    write_audit(session, [AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id,
                                     action="R", subtype=subtype, entity_type=entity_type, entity_id=entity_id,
                                     detail=detail)], now)


def _release(session: Session, actor: Actor, jurisdiction_id: int | None, number: int | None, form: str,
             now: datetime, subtype: str = "report.steering") -> releases.SteeringRelease:
    """The stored release asked for (or the area's latest), with the read audited. Nothing is
    computed from live data."""
    with unit_of_work(session):
        if number is None:
            area = report.resolve_area(session, _area_id(session, actor, jurisdiction_id))
            row = releases.latest_release(session, area.id)
            if row is None:
                raise NoRelease(f"nothing has been released for {area.name} yet")
        else:
            row = releases.get_release(session, number)
        _audit(session, actor, subtype, "release", str(row.number), form, now)
    return row


AREA = Query(default=None, description="A Kreis or kreisfreie Stadt; default: the caller's.")
CSV_RESPONSE = {200: {"content": {"text/csv": {}}, "description": "CSV for German Excel (titles only)"}}
XLSX_RESPONSE = {200: {"content": {XLSX: {}}, "description": "Excel workbook (opens without an import dialog)"}}
HTML_RESPONSE = {200: {"content": {"text/html": {}}, "description": "Readable page with charts"}}


def _csv(row: releases.SteeringRelease) -> Response:
    name = f"steuerungsbericht-{row.document['area']['name']}-{row.period}-nr{row.number}.csv"
    return Response(render.to_csv(row.document), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": _attachment(name)})


def _xlsx(row: releases.SteeringRelease) -> Response:
    name = f"steuerungsbericht-{row.document['area']['name']}-{row.period}-nr{row.number}.xlsx"
    return Response(render.to_xlsx(row.document), media_type=XLSX,
                    headers={"Content-Disposition": _attachment(name)})


def _attachment(name: str) -> str:
    ascii_name = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    return f'attachment; filename="{ascii_name}"; filename*=UTF-8\'\'{quote(name)}'


@router.get("/reports/steering/releases", response_model=list[ReleaseOut])
def list_steering_releases(jurisdiction_id: DbId | None = AREA, actor: Actor = Depends(require("reports.read")),
                           session: Session = Depends(get_session)):
    """The numbered releases of the steering report for an area, newest first. Each covers one
    closed quarter and never changes; a re-release of a quarter names the release it revises."""
    area = report.resolve_area(session, _area_id(session, actor, jurisdiction_id))
    return releases.list_releases(session, area.id)


@router.get("/reports/steering")
def steering_report(request: Request, jurisdiction_id: DbId | None = AREA,
                    actor: Actor = Depends(require("reports.read")),
                    session: Session = Depends(get_session), now: datetime = Depends(request_now)) -> dict:
    """The area's latest release (see ``/reports/steering/releases``): anonymised aggregates
    of one closed quarter for the Lenkungsgruppe, every key with its German title. Cells under k
    persons, and cells from which such a cell could be worked out, are null (shown as ".")."""
    return _release(session, actor, jurisdiction_id, None, "json", now).document


@router.get("/reports/steering.csv", response_class=Response, responses=CSV_RESPONSE)
def steering_report_csv(request: Request, jurisdiction_id: DbId | None = AREA,
                        actor: Actor = Depends(require("reports.read")),
                        session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """The latest release as CSV for German Excel (semicolons, UTF-8 with BOM, decimal comma)."""
    return _csv(_release(session, actor, jurisdiction_id, None, "csv", now))


@router.get("/reports/steering.xlsx", response_class=Response, responses=XLSX_RESPONSE)
def steering_report_xlsx(request: Request, jurisdiction_id: DbId | None = AREA,
                         actor: Actor = Depends(require("reports.read")),
                         session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """The latest release as an Excel workbook."""
    return _xlsx(_release(session, actor, jurisdiction_id, None, "xlsx", now))


@router.get("/reports/steering.html", response_class=Response, responses=HTML_RESPONSE)
def steering_report_html(request: Request, jurisdiction_id: DbId | None = AREA,
                         actor: Actor = Depends(require("reports.read")),
                         session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """The latest release as a readable page with charts."""
    row = _release(session, actor, jurisdiction_id, None, "html", now)
    return Response(render.to_html(row.document), media_type="text/html; charset=utf-8")


NUMBER = Path(description="The release's number.", ge=1, le=2_147_483_647)


@router.get("/reports/steering/releases/{number}.csv", response_class=Response, responses=CSV_RESPONSE)
def steering_release_csv(number: int = NUMBER, actor: Actor = Depends(require("reports.read")),
                         session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """One release as CSV for German Excel."""
    return _csv(_release(session, actor, None, number, "csv", now))


@router.get("/reports/steering/releases/{number}.xlsx", response_class=Response, responses=XLSX_RESPONSE)
def steering_release_xlsx(number: int = NUMBER, actor: Actor = Depends(require("reports.read")),
                          session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """One release as an Excel workbook."""
    return _xlsx(_release(session, actor, None, number, "xlsx", now))


@router.get("/reports/steering/releases/{number}.html", response_class=Response, responses=HTML_RESPONSE)
def steering_release_html(number: int = NUMBER, actor: Actor = Depends(require("reports.read")),
                          session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """One release as a readable page with charts."""
    row = _release(session, actor, None, number, "html", now)
    return Response(render.to_html(row.document), media_type="text/html; charset=utf-8")


# After the routes with a suffix: a plain {number} would match "5.csv" first.
@router.get("/reports/steering/releases/{number}")
def steering_release(number: int = NUMBER, actor: Actor = Depends(require("reports.read")),
                     session: Session = Depends(get_session), now: datetime = Depends(request_now)) -> dict:
    """One release of the steering report, as stored."""
    return _release(session, actor, None, number, "json", now).document


QUARTER = Query(default=None, pattern=r"^\d{4}-?[Qq][1-4]$",
                description="A quarter such as 2026Q3 (default: everything so far)")


@router.get("/reports/on-demand")
def on_demand_report(request: Request, jurisdiction_id: DbId | None = Query(
                         default=None, description="A town, a Kreis or a kreisfreie Stadt; default: the caller's area."),
                     quarter: str | None = QUARTER, actor: Actor = Depends(require("reports.read")),
                     session: Session = Depends(get_session), now: datetime = Depends(request_now)) -> dict:
    """Figures for one town (or area) between releases, e.g. for a working group: persons per
    barrier, overdue step, Fallkonferenz quarter and goal outcome. Every count is perturbed by
    the Cell Key Method (``perturbed: true``): the same cell gets the same noise in any table and
    however often it is asked, and no count in 1..k-1 is ever shown. Nothing is suppressed."""
    policies = request.app.state.policies
    with unit_of_work(session):
        area = jurisdiction_id if jurisdiction_id is not None else _area_id(session, actor, None)
        label = releases.normalise_quarter(quarter) if quarter else None
        document = ondemand.on_demand_figures(session, policies.steering, policies.goals, area, now, label)
        _audit(session, actor, "report.on_demand", "jurisdiction", str(area), label or "all", now)
    return document


def _stored_log(request: Request, session: Session, row: releases.SteeringRelease
                ) -> tuple[eventlog.StoredLog, dict[str, Any]]:
    """The release's log in two steps, and its metadata. The head now, in the request's session
    (after the read was audited; an error here is answered before the first byte), which then
    ends its read-only transaction: the request's session lives until the last byte is sent, and
    must not hold a connection idle in a transaction meanwhile. The whole stored log once the
    head is sent, in a session of its own."""
    factory, number, release = request.app.state.sessionmaker, row.number, {"number": row.number, "period": row.period}
    head = releases.log_head(session, number)
    session.rollback()  # nothing written since the audit's commit

    def read() -> Any:
        with factory() as later:
            return releases.stored_log(later, number)

    return eventlog.StoredLog(head, read), release


def _ocel(request: Request, session: Session, row: releases.SteeringRelease,
          filename: str | None = None) -> StreamingResponse:
    """The release's log as OCEL 2.0 JSON, streamed: the same bytes as the document rendered
    whole (:func:`eventlog.to_ocel` through ``JSONResponse``), written objects first, then the
    events week by week. The caller has found the release and audited the read."""
    chunks = eventlog.ocel_chunks(*_stored_log(request, session, row))
    headers = {"Content-Disposition": _attachment(filename)} if filename else None
    return StreamingResponse(chunks, media_type="application/json", headers=headers)


def _xes(request: Request, session: Session, row: releases.SteeringRelease) -> StreamingResponse:
    name = f"integrationsketten-nr{row.number}.xes"
    chunks = eventlog.xes_chunks(*_stored_log(request, session, row))
    return StreamingResponse(chunks, media_type="application/xml", headers={"Content-Disposition": _attachment(name)})


XES_RESPONSE = {200: {"content": {"application/xml": {}}, "description": "XES (IEEE 1849) event log, streamed"}}
OCEL_RESPONSE = {200: {"content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
                       "description": "OCEL 2.0 JSON event log, streamed"}}


@router.get("/exports/ocel", response_class=StreamingResponse, responses=OCEL_RESPONSE)
def ocel_export(request: Request, jurisdiction_id: DbId | None = AREA, actor: Actor = Depends(require("export.read")),
                session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """The process-mining log of the area's latest release as OCEL 2.0 JSON: the chains that
    ended in the released quarter, generalised so that every published trace is shared by at
    least k chains (activities in German, weeks since the chain's start, rare activities
    merged); the ``Export`` object says how much was generalised and dropped. Streamed: the
    document starts at once and is written in pieces, so a large log neither waits nor fills
    memory."""
    return _ocel(request, session, _release(session, actor, jurisdiction_id, None, "ocel", now, "export.ocel"))


@router.get("/exports/xes", response_class=StreamingResponse, responses=XES_RESPONSE)
def xes_export(request: Request, jurisdiction_id: DbId | None = AREA, actor: Actor = Depends(require("export.read")),
               session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """The same log as XES, one trace per chain (for ProM, Disco, Celonis); streamed."""
    return _xes(request, session, _release(session, actor, jurisdiction_id, None, "xes", now, "export.xes"))


@router.get("/exports/releases/{number}/ocel", response_class=StreamingResponse, responses=OCEL_RESPONSE)
def ocel_release_export(request: Request, number: int = NUMBER, actor: Actor = Depends(require("export.read")),
                        session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """The process-mining log of one release as OCEL 2.0 JSON; streamed."""
    return _ocel(request, session, _release(session, actor, None, number, "ocel", now, "export.ocel"))


@router.get("/exports/releases/{number}/xes", response_class=StreamingResponse, responses=XES_RESPONSE)
def xes_release_export(request: Request, number: int = NUMBER, actor: Actor = Depends(require("export.read")),
                       session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """The process-mining log of one release as XES; streamed."""
    return _xes(request, session, _release(session, actor, None, number, "xes", now, "export.xes"))
