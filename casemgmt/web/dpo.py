"""The data protection officer's screens: audit search, consent histories, the record of
processing activities (GDPR Art. 30), the register of data-subject requests and what retention
deletes in the coming days. Each calls the officer's service with the signed-in Actor, so the
officer's area and the audit of the search itself are the API's.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session
from casemgmt.chains.agreed import LOCAL_TIMEZONE
from casemgmt.jurisdictions.models import Organisation
from casemgmt.privacy import officer
from casemgmt.privacy import service as privacy_service
from casemgmt.privacy.service import person_area_clause
from casemgmt.rights import retention
from casemgmt.rights import service as rights
from casemgmt.rights.lifecycle import RequestKind
from casemgmt.web.navigation import nav_entry
from casemgmt.web.texte import N_
from casemgmt.web.routing import PREFIX, WebUser, need, render, web_router

router = web_router()
nav_entry(N_("Protokoll"), f"{PREFIX}/datenschutz/protokoll", "audit.read", 60)
nav_entry(N_("Einwilligungen"), f"{PREFIX}/datenschutz/einwilligungen", "consents.read", 61)
nav_entry(N_("Verarbeitungsverzeichnis"), f"{PREFIX}/datenschutz/verzeichnis", "processing.read", 62)
nav_entry(N_("Betroffenenanfragen"), f"{PREFIX}/datenschutz/anfragen", "requests.manage", 63)
nav_entry(N_("Löschfristen"), f"{PREFIX}/datenschutz/loeschfristen", "retention.read", 64)

ACTIONS = {"C": N_("angelegt"), "R": N_("gelesen"), "U": N_("geändert"), "D": N_("gelöscht"), "E": N_("ausgeführt")}
OUTCOMES = {"success": N_("erfolgreich"), "denied": N_("verweigert")}
CONSENT_STATES = {"active": (N_("gültig"), "ok"), "not_yet_valid": (N_("noch nicht gültig"), "neutral"),
                  "expired": (N_("abgelaufen"), "warnung"), "withdrawn": (N_("widerrufen"), "fehler")}
REQUEST_KINDS = {"access": N_("Auskunft (Art. 15)"), "rectification": N_("Berichtigung (Art. 16)"),
                 "erasure": N_("Löschung (Art. 17)"), "restriction": N_("Einschränkung (Art. 18)"),
                 "portability": N_("Datenübertragbarkeit (Art. 20)"), "objection": N_("Widerspruch (Art. 21)")}
REQUEST_STATES = {"received": (N_("eingegangen"), "neutral"), "in_progress": (N_("in Bearbeitung"), "aktiv"),
                  "extended": (N_("verlängert"), "warnung"), "answered": (N_("beantwortet"), "ok"),
                  "refused": (N_("abgelehnt"), "fehler")}


def _organisations(db: Session) -> dict[int, str]:
    return dict(db.execute(select(Organisation.id, Organisation.name)).all())


def _local_day(value: str | None, next_day: bool = False) -> datetime | None:
    """A day entered as TT.MM.JJJJ or JJJJ-MM-TT, as the start of that day (or of the next) in Berlin."""
    if not value:
        return None
    for parse in (date.fromisoformat, lambda v: datetime.strptime(v, "%d.%m.%Y").date()):
        try:
            day = parse(value.strip())
            break
        except ValueError:
            continue
    else:
        return None
    if next_day:
        day += timedelta(days=1)
    return datetime.combine(day, time(0), LOCAL_TIMEZONE)


@router.get("/datenschutz/protokoll")
def audit_search(request: Request,
                 person_id: str | None = Query(default=None, max_length=64),
                 benutzer: str | None = Query(default=None, max_length=200),
                 organisation_id: str | None = Query(default=None, max_length=12),
                 von: str | None = Query(default=None, max_length=10),
                 bis: str | None = Query(default=None, max_length=10),
                 ergebnis: str | None = Query(default=None, max_length=10),
                 weiter: int | None = Query(default=None, ge=1, le=2**62),
                 user: WebUser = Depends(need("audit.read")), db: Session = Depends(get_session)) -> Response:
    """The audit trail, newest first, by person, user, organisation, days and outcome."""
    values = {"person_id": person_id or "", "benutzer": benutzer or "", "organisation_id": organisation_id or "",
              "von": von or "", "bis": bis or "", "ergebnis": ergebnis or ""}
    errors = []
    person = None
    if person_id:
        try:
            person = uuid.UUID(person_id.strip())
        except ValueError:
            errors.append({"field": "person_id", "message": "Keine gültige Personenkennung."})
    org = int(organisation_id) if organisation_id and organisation_id.isdigit() else None
    since, until = _local_day(von), _local_day(bis, next_day=True)
    for name, raw, parsed in (("von", von, since), ("bis", bis, until)):
        if raw and parsed is None:
            errors.append({"field": name, "message": "Bitte ein Datum als TT.MM.JJJJ angeben."})
    page = None
    if not errors:
        filters = officer.AuditFilters(person, benutzer.strip() if benutzer and benutzer.strip() else None, org,
                                       since, until, ergebnis if ergebnis in OUTCOMES else None)
        page = officer.search_audit(db, user.actor, filters, weiter, 50, request.app.state.clock())
    query = {k: v for k, v in values.items() if v}
    return render(request, "dpo_protokoll.html", http_status=422 if errors else 200, page=page, values=values,
                  errors=errors, organisations=_organisations(db), actions=ACTIONS, outcomes=OUTCOMES,
                  next_query=urlencode(query))


@router.get("/datenschutz/einwilligungen")
def consent_history(request: Request, person_id: str | None = Query(default=None, max_length=64),
                    user: WebUser = Depends(need("consents.read")), db: Session = Depends(get_session)) -> Response:
    consents, errors = None, []
    if person_id:
        try:
            person = uuid.UUID(person_id.strip())
        except ValueError:
            errors.append({"field": "person_id", "message": "Keine gültige Personenkennung."})
        else:
            consents = privacy_service.list_consents(db, user.actor, person, request.app.state.clock(),
                                                     officer=user.may(request, "audit.read"))
    categories = request.app.state.policies.data.categories
    return render(request, "dpo_einwilligungen.html", http_status=422 if errors else 200, consents=consents,
                  person_id=person_id or "", errors=errors, states=CONSENT_STATES,
                  category_titles={k: c.title for k, c in categories.items()},
                  purposes=request.app.state.policies.data.purposes)


@router.get("/datenschutz/verzeichnis")
def record_of_processing(request: Request, user: WebUser = Depends(need("processing.read"))) -> Response:
    record = officer.record_of_processing(request.app.state.policies)
    return render(request, "dpo_verzeichnis.html", record=record)


@router.get("/datenschutz/anfragen")
def requests_register(request: Request, stand: str | None = Query(default="open", max_length=20),
                      art: RequestKind | None = None,
                      user: WebUser = Depends(need("requests.manage")), db: Session = Depends(get_session)) -> Response:
    state = stand if stand in ("open", *REQUEST_STATES) else "open"
    page = rights.list_requests(db, user.actor, state, art.value if art else None, None, None, 200,
                                request.app.state.clock())
    return render(request, "dpo_anfragen.html", page=page, kinds=REQUEST_KINDS, states=REQUEST_STATES,
                  stand=state, art=art.value if art else "")


@router.get("/datenschutz/loeschfristen")
def retention_list(request: Request, tage: int = Query(default=30, ge=0, le=366),
                   user: WebUser = Depends(need("retention.read")), db: Session = Depends(get_session)) -> Response:
    s = request.app.state
    due = retention.upcoming(db, s.privacy, s.policies.steering.conference_category, s.clock(), tage,
                             person_area_clause(user.actor))
    db.rollback()
    return render(request, "dpo_loeschfristen.html", due=due, tage=tage,
                  category_titles={k: c.title for k, c in s.policies.data.categories.items()},
                  today=date.fromisoformat(due["from"]), until=date.fromisoformat(due["until"]),
                  due_days={e["due"]: date.fromisoformat(e["due"]) for e in due["persons"]})
