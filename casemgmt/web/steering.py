"""The Lenkungsgruppe's screens: the steering report as a dashboard (goal attainment, waiting
times between organisation kinds, every table with suppressed cells shown as "."), its
downloads, the proposals with their decisions, and the working groups.

The report pages read the stored, numbered releases exactly as ``GET /reports/steering`` does
(the read is audited the same way); nothing is computed from live case data here, so no page
of the steering role can carry a personal value.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from casemgmt.auth.dependencies import get_session
from casemgmt.jurisdictions.models import Organisation
from casemgmt.problems import NoRelease, Problem
from casemgmt.steering import releases, render as report_render, service
from casemgmt.steering.proposals import ProposalState
from casemgmt.steering.schemas import ProposalActionIn
from casemgmt.steering.views import _area_id, _csv, _ocel, _release, _xlsx
from casemgmt.steering.report import resolve_area
from casemgmt.web.conferences import LEVELS, WEATHER, _one, form_errors, form_refusal, iso_day, text_with_objections
from casemgmt.web.navigation import nav_entry
from casemgmt.web.texte import N_
from casemgmt.web.routing import PREFIX, WebUser, checked_form, need, redirect, render, web_router

router = web_router()
nav_entry(N_("Steuerungsbericht"), f"{PREFIX}/lenkung", "reports.read", 50)
nav_entry(N_("Vorschläge"), f"{PREFIX}/vorschlaege", "proposals.read", 55)
nav_entry(N_("Arbeitsgruppen"), f"{PREFIX}/arbeitsgruppen", "proposals.read", 56)

STATES = {
    "bundled": (N_("Gebündelt"), "neutral"),
    "submitted": (N_("Eingereicht"), "aktiv"),
    "accepted": (N_("Angenommen"), "ok"),
    "delegated": (N_("Delegiert"), "ok"),
    "rejected": (N_("Abgelehnt"), "fehler"),
    "deferred": (N_("Zurückgestellt"), "warnung"),
    "in_implementation": (N_("In Umsetzung"), "aktiv"),
    "implemented": (N_("Umgesetzt"), "ok"),
    "made_permanent": (N_("Verstetigt"), "ok"),
}
ACTIONS = {
    "submit": N_("An die Lenkungsgruppe einreichen"),
    "accept": N_("Annehmen und Arbeitsgruppe gründen"),
    "delegate": N_("An bestehende Arbeitsgruppe delegieren"),
    "reject": N_("Ablehnen"),
    "defer": N_("Zurückstellen"),
    "start": N_("Umsetzung beginnen"),
    "complete": N_("Als umgesetzt melden"),
    "make_permanent": N_("Verstetigen"),
}
EVENTS = {"bundle": N_("gebündelt"), "submit": N_("eingereicht"), "accept": N_("angenommen"), "delegate": N_("delegiert"),
          "reject": N_("abgelehnt"), "defer": N_("zurückgestellt"), "start": N_("Umsetzung begonnen"),
          "complete": N_("umgesetzt"), "make_permanent": N_("verstetigt")}

# --- the report ------------------------------------------------------------------------------------


def _dashboard(report: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of the release document, with titles instead of keys; None stays None
    (a suppressed cell, shown as ".")."""
    goals = [{"title": g["title"], "attained": g["attained"], "missed": g["missed"],
              "percent": None if g["share"] is None else round(100 * g["share"], 1),
              "target": round(100 * g["target_share"], 1)} for g in report.get("goals", [])]
    waiting = [{"from": report_render._label("sender_kind", w, report),
                "to": report_render._label("receiver_kind", w, report), "persons": w.get("persons"),
                "median": w["working_days_median"], "p90": w["working_days_p90"]}
               for w in report.get("handover_waiting_times", [])]
    longest = max((w["p90"] or w["median"] or 0 for w in waiting), default=0) or 1
    tables = []
    for table in report.get("tables", []):
        dims = list(table["dimensions"])
        tables.append({
            "title": table["title"], "key": table["key"],
            "headings": [report_render.HEADINGS.get(d, d) for d in dims],
            "rows": [([report_render._label(d, cell, report) for d in dims], cell["value"]) for cell in table["cells"]],
            "dropped": len(table.get("dropped_breakdowns") or []),
            "merged": len(table.get("merged_breakdowns") or []),
        })
    return {"area": report["area"]["name"], "period": (report.get("period") or {}).get("title"),
            "release": report.get("release"), "k": report["k"], "goals": goals, "waiting": waiting,
            "waiting_scale": longest, "tables": tables, "supply": supply_demand(report)}


def supply_demand(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The Bestands- und Bedarfsanalyse of a release (``offer_supply_demand``): waiting persons
    (None where the demand table suppressed the cell, shown as ".") beside the offers' free
    places and next start. Releases made before the table existed have none."""
    out = []
    for row in report.get("offer_supply_demand") or []:
        out.append({"kind": row.get("offer_kind_title", row["offer_kind"]), "town": row.get("town_title", row["town"]),
                    "waiting": row["waiting_persons"], "median": row["waiting_days_median"], "offers": row["offers"],
                    "free": row["free_places"], "unlimited": row["unlimited_offers"],
                    "next_start": date.fromisoformat(row["next_start"]) if row.get("next_start") else None,
                    "exceeds": row["demand_exceeds_supply"]})
    return out


@router.get("/lenkung")
def report_page(request: Request, nr: int | None = Query(default=None, ge=1, le=2**31 - 1),
                user: WebUser = Depends(need("reports.read")), db: Session = Depends(get_session)) -> Response:
    now = request.app.state.clock()
    area = resolve_area(db, _area_id(db, user.actor, None))
    listed = releases.list_releases(db, area.id)
    db.rollback()
    try:
        row = _release(db, user.actor, None, nr, "web", now)
    except NoRelease:
        return render(request, "lenkung_bericht.html", report=None, area=area.name, releases=listed)
    return render(request, "lenkung_bericht.html", report=_dashboard(row.document), number=row.number,
                  releases=listed,
                  may_export=user.may(request, "export.read"))


@router.get("/lenkung/bericht-{number}.csv")
def report_csv(request: Request, number: int, user: WebUser = Depends(need("reports.read")),
               db: Session = Depends(get_session)) -> Response:
    return _csv(_release(db, user.actor, None, number, "csv", request.app.state.clock()))


@router.get("/lenkung/bericht-{number}.xlsx")
def report_xlsx(request: Request, number: int, user: WebUser = Depends(need("reports.read")),
                db: Session = Depends(get_session)) -> Response:
    return _xlsx(_release(db, user.actor, None, number, "xlsx", request.app.state.clock()))


@router.get("/lenkung/prozessprotokoll-{number}.ocel.json")
def report_ocel(request: Request, number: int, user: WebUser = Depends(need("export.read")),
                db: Session = Depends(get_session)) -> Response:
    return _ocel(request, db, _release(db, user.actor, None, number, "ocel", request.app.state.clock(), "export.ocel"),
                 f"prozessprotokoll-{number}.ocel.json")


# --- proposals and working groups ------------------------------------------------------------------


def _organisations(db: Session) -> dict[int, str]:
    return dict(db.execute(select(Organisation.id, Organisation.name).order_by(Organisation.name)).all())


def _may(request: Request, user: WebUser, action: str) -> bool:
    return user.may(request, "proposals.manage" if action == "submit" else "proposals.decide")


@router.get("/vorschlaege")
def proposal_list(request: Request, stand: ProposalState | None = None,
                  user: WebUser = Depends(need("proposals.read")), db: Session = Depends(get_session)) -> Response:
    k = request.app.state.policies.steering.k
    proposals = service.list_proposals(db, user.actor, stand, 200, k)
    return render(request, "vorschlaege.html", proposals=proposals, states=STATES, stand=stand.value if stand else "")


@router.get("/vorschlaege/{proposal_id}")
def proposal_page(request: Request, proposal_id: uuid.UUID, user: WebUser = Depends(need("proposals.read")),
                  db: Session = Depends(get_session)) -> Response:
    return _proposal_page(request, user, db, proposal_id)


def _proposal_page(request: Request, user: WebUser, db: Session, proposal_id: uuid.UUID, status: int = 200,
                   **form_state: Any) -> Response:
    s = request.app.state
    proposal = service.get_proposal(db, proposal_id, user.actor, s.policies.steering.k)
    groups = service.list_working_groups(db, user.actor)
    organisations = _organisations(db)
    db.rollback()
    actions = [a for a in proposal.allowed_actions if _may(request, user, a)]
    return render(request, "vorschlag.html", http_status=status, p=proposal, states=STATES, actions=actions,
                  action_titles=ACTIONS, event_titles=EVENTS, groups=groups, organisations=organisations, weather=WEATHER, levels=LEVELS,
                  barriers=s.policies.steering.barrier_categories, fields_of_action=s.policies.steering.fields_of_action,
                  errors=form_state.pop("errors", []), action=form_state.pop("action", None),
                  values=form_state.pop("values", {}), **form_state)


@router.post("/vorschlaege/{proposal_id}/aktion")
def proposal_action(request: Request, proposal_id: uuid.UUID, user: WebUser = Depends(need("proposals.read")),
                    form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    """Submit (moderation) or decide and follow the implementation (Lenkungsgruppe)."""
    s = request.app.state
    roles = s.policies.roles
    values = {name: _one(form, name) for name in ("action", "reason", "working_group_name", "lead_organisation_id",
                                                   "working_group_id", "due_date", "expected_version")}
    values["due_date"] = iso_day(values["due_date"])
    try:
        body = ProposalActionIn(**{k: v for k, v in values.items() if v is not None})
        service.act(db, s.privacy, s.policies.steering, user.actor, roles.allows(user.actor.roles, "proposals.decide"),
                    roles.allows(user.actor.roles, "proposals.manage"), proposal_id, body, s.clock())
    except (ValidationError, Problem) as exc:
        if not form_refusal(exc):
            raise
        field = getattr(exc, "extra", {}).get("field") if isinstance(exc, Problem) else None
        return _proposal_page(request, user, db, proposal_id, status=422, errors=form_errors(exc),
                              action=values["action"], values=values, objection_field=field,
                              objections=text_with_objections(values.get(field or "reason") or "", exc))
    return redirect(f"{PREFIX}/vorschlaege/{proposal_id}", "gespeichert")


@router.get("/arbeitsgruppen")
def working_groups(request: Request, user: WebUser = Depends(need("proposals.read")),
                   db: Session = Depends(get_session)) -> Response:
    groups = service.list_working_groups(db, user.actor)
    organisations = _organisations(db)
    db.rollback()
    return render(request, "arbeitsgruppen.html", groups=groups, organisations=organisations)
