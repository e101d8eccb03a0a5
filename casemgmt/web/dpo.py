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
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from casemgmt.auth.dependencies import get_session
from casemgmt.chains.agreed import LOCAL_TIMEZONE
from casemgmt.jurisdictions.models import Organisation
from casemgmt.privacy import officer
from casemgmt.privacy import service as privacy_service
from casemgmt.privacy.service import person_area_clause
from casemgmt.rights import retention
from casemgmt.rights import service as rights
from casemgmt.problems import NotFound, Problem
from casemgmt.rights.lifecycle import RequestKind
from casemgmt.rights.schemas import LiftIn, RequestActionIn, RequestIn
from casemgmt.web.navigation import nav_entry
from casemgmt.web.texte import N_
from casemgmt.web.faelle import german_errors
from casemgmt.web.routing import (PREFIX, WebUser, audit_refusal, checked_form, field_errors, need, redirect,
                                   render, web_router)

router = web_router()
nav_entry(N_("Protokoll"), f"{PREFIX}/datenschutz/protokoll", "audit.read", 60)
nav_entry(N_("Einwilligungen"), f"{PREFIX}/datenschutz/einwilligungen", "consents.read", 61)
nav_entry(N_("Verarbeitungsverzeichnis"), f"{PREFIX}/datenschutz/verzeichnis", "processing.read", 62)
nav_entry(N_("Betroffenenanfragen"), f"{PREFIX}/datenschutz/anfragen", "requests.manage", 63)
nav_entry(N_("Löschfristen"), f"{PREFIX}/datenschutz/loeschfristen", "retention.read", 64)
nav_entry(N_("Löschsperren"), f"{PREFIX}/datenschutz/loeschsperre", "holds.manage", 65)

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
                  stand=state, art=art.value if art else "", errors=[], values={})


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


# --- the request register as forms: register, and move a request through its states ------------

REQUEST_ACTIONS = {"start": N_("Bearbeitung beginnen"), "extend": N_("Frist verlängern"),
                   "answer": N_("Beantworten"), "refuse": N_("Ablehnen")}
_REQUEST_TITLES = {"person_id": "Person (Kennung)", "kind": "Art der Anfrage", "received_at": "Eingegangen am",
                   "identity_checked_by": "Identität geprüft von", "identity_check_method": "Art der Prüfung",
                   "reason": "Begründung", "action": "Aktion"}


def _one(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _not_found_at_field(request: Request, exc: NotFound, field: str) -> list[dict[str, str]]:
    """A person outside the officer's area, typed into a form: audited as the API audits the 404,
    answered at the field (alike for a real id elsewhere and a random one)."""
    audit_refusal(request, exc)
    return [{"field": field, "message": "Keine Person mit dieser Kennung in Ihrem Bereich."}]


def _register_page(request: Request, db: Session, user: WebUser, errors=None, values=None,
                   http_status: int = 200) -> Response:
    page = rights.list_requests(db, user.actor, "open", None, None, None, 200, request.app.state.clock())
    return render(request, "dpo_anfragen.html", http_status=http_status, page=page, kinds=REQUEST_KINDS,
                  states=REQUEST_STATES, stand="open", art="", errors=errors or [], values=values or {})


@router.post("/datenschutz/anfragen")
def register_request(request: Request, user: WebUser = Depends(need("requests.manage")),
                     form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    """Register a request as received (GDPR Art. 12): the person, the kind, when it came in and
    how the requester's identity was checked."""
    values = {k: _one(form, k) for k in ("person_id", "kind", "received_at", "identity_checked_by",
                                         "identity_check_method")}
    errors: list[dict[str, str]] = []
    received = None
    if values["received_at"]:
        received = _local_day(values["received_at"])
        if received is None:
            errors.append({"field": "received_at", "message": "Bitte ein Datum als TT.MM.JJJJ angeben."})
    now = request.app.state.clock()
    if received is not None and received.date() == now.astimezone(LOCAL_TIMEZONE).date():
        received = None  # today: received now
    try:
        body = RequestIn(person_id=values["person_id"], kind=values["kind"], received_at=received,
                         identity_checked_by=values["identity_checked_by"],
                         identity_check_method=values["identity_check_method"])
    except ValidationError as exc:
        errors += german_errors(exc, _REQUEST_TITLES)
        body = None
    if not errors and body is not None:
        try:
            out = rights.register_request(db, request.app.state.privacy, request.app.state.policies.handovers.calendar,
                                          user.actor, body, now)
            return redirect(f"{PREFIX}/datenschutz/anfragen/{out.id}", "anfrage")
        except NotFound as exc:
            errors = _not_found_at_field(request, exc, "person_id")
        except Problem as exc:
            errors = field_errors(exc)
    return _register_page(request, db, user, errors, values, http_status=422)


def _request_page(request: Request, db: Session, user: WebUser, request_id: uuid.UUID, errors=None,
                  values=None, http_status: int = 200) -> Response:
    r = rights.get_request(db, user.actor, request_id, request.app.state.clock())
    return render(request, "dpo_anfrage.html", http_status=http_status, r=r, kinds=REQUEST_KINDS,
                  states=REQUEST_STATES, actions=REQUEST_ACTIONS, organisations=_organisations(db),
                  errors=errors or [], values=values or {})


@router.get("/datenschutz/anfragen/{request_id}")
def request_page(request: Request, request_id: uuid.UUID, user: WebUser = Depends(need("requests.manage")),
                 db: Session = Depends(get_session)) -> Response:
    """One request: its dates, what was done, and the actions its state allows."""
    return _request_page(request, db, user, request_id)


@router.post("/datenschutz/anfragen/{request_id}")
def act_on_request(request: Request, request_id: uuid.UUID, user: WebUser = Depends(need("requests.manage")),
                   form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    """Begin, extend (once, with the reason), answer (with the outcome) or refuse (with the reason)."""
    action = _one(form, "action")[:20]
    values = {"action": action, "reason": _one(form, "reason")}
    try:
        version = _one(form, "expected_version")
        body = RequestActionIn(action=action, reason=values["reason"] or None,
                               expected_version=int(version) if version.isdigit() else None)
        rights.act_on_request(db, request.app.state.privacy, request.app.state.policies.handovers.calendar,
                              user.actor, request_id, body, request.app.state.clock())
    except (Problem, ValidationError) as exc:
        if isinstance(exc, Problem) and exc.status == 404:
            raise
        errors = german_errors(exc, _REQUEST_TITLES)
        for e in errors:
            e["field"] = f"{action}-{e['field']}" if e["field"] else ""
        status = exc.status if isinstance(exc, Problem) and exc.status == 409 else 422
        return _request_page(request, db, user, request_id, errors, values, http_status=status)
    return redirect(f"{PREFIX}/datenschutz/anfragen/{request_id}", "gespeichert")


# --- legal hold ----------------------------------------------------------------------------------


def _hold_page(request: Request, db: Session, user: WebUser, person_id: str, errors=None, values=None,
               http_status: int = 200) -> Response:
    measures, errors = None, list(errors or [])
    person = None
    if person_id and not errors:
        try:
            person = uuid.UUID(person_id)
        except ValueError:
            errors.append({"field": "person_id", "message": "Keine gültige Personenkennung."})
        else:
            try:
                measures = rights.read_measures(db, user.actor, person, "legal_hold", request.app.state.clock())
            except NotFound as exc:
                errors = _not_found_at_field(request, exc, "person_id")
    return render(request, "dpo_loeschsperre.html", http_status=422 if errors and http_status == 200 else http_status,
                  measures=measures, person_id=person_id, person=person, errors=errors, values=values or {},
                  organisations=_organisations(db))


@router.get("/datenschutz/loeschsperre")
def legal_hold_page(request: Request, person_id: str | None = Query(default=None, max_length=64),
                    user: WebUser = Depends(need("holds.manage")), db: Session = Depends(get_session)) -> Response:
    """A person's legal hold (it stops retention and erasure): whether one is set, why, its
    history, and the form to set or lift it."""
    return _hold_page(request, db, user, (person_id or "").strip())


@router.post("/datenschutz/loeschsperre/{person_id}")
def set_or_lift_legal_hold(request: Request, person_id: uuid.UUID, user: WebUser = Depends(need("holds.manage")),
                           form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    lift = _one(form, "action") == "lift"
    values = {"reason": _one(form, "reason")}
    try:
        body = LiftIn(reason=values["reason"])
        s = request.app.state
        if lift:
            rights.lift_measure(db, s.privacy, user.actor, person_id, "legal_hold", body.reason, s.clock())
        else:
            rights.set_measure(db, s.privacy, user.actor, person_id, "legal_hold", body.reason, None, s.clock())
    except (Problem, ValidationError) as exc:
        if isinstance(exc, Problem) and exc.status == 404:
            raise
        errors = german_errors(exc, _REQUEST_TITLES)
        status = exc.status if isinstance(exc, Problem) and exc.status == 409 else 422
        return _hold_page(request, db, user, str(person_id), errors, values, http_status=status)
    return redirect(f"{PREFIX}/datenschutz/loeschsperre", "sperre_aufgehoben" if lift else "sperre_gesetzt",
                    person_id=str(person_id))
