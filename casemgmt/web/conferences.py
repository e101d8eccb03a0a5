"""The moderator's screens: Fallkonferenzen (participants, agenda, phase 1 agreements, phase 2
findings with the scrubber's objections at the spot to fix, dot votes, phase changes) and the
bundling of findings into proposals to the Lenkungsgruppe.

Every page calls the conference service with the signed-in user's Actor: a conference the
user's organisation does not take part in is 404 here as in the API, and the reads of
agreements about persons are audited by the service.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any

from fastapi import Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from casemgmt.auth.dependencies import get_session
from casemgmt.chains.agreed import LOCAL_TIMEZONE
from casemgmt.conferences import service
from casemgmt.conferences.schemas import (
    AgreementIn,
    CaseIn,
    ConferenceIn,
    FindingIn,
    ParticipantsIn,
    PhaseIn,
    VoteIn,
)
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.problems import NoLegalBasis, NotFound, Problem, invalid_field
from casemgmt.steering import service as steering
from casemgmt.steering.schemas import ProposalIn
from casemgmt.web.navigation import nav_entry
from casemgmt.web.texte import N_
from casemgmt.web.routing import (
    PREFIX,
    WebUser,
    audit_refusal,
    checked_form,
    field_errors,
    need,
    redirect,
    render,
    web_router,
)

router = web_router()
nav_entry(N_("Fallkonferenzen"), f"{PREFIX}/konferenzen", "conferences.read", 40)

PHASES = {
    "planned": (N_("Geplant"), "neutral"),
    "case_phase": (N_("Phase 1: Fallarbeit"), "aktiv"),
    "structural_phase": (N_("Phase 2: Strukturelle Befunde"), "aktiv"),
    "closed": (N_("Abgeschlossen"), "ok"),
}
NEXT_PHASE = {"planned": "case_phase", "case_phase": "structural_phase", "structural_phase": "closed"}
WEATHER = {
    "sonne": (N_("Sonne: läuft gut"), "ok"),
    "wolke": (N_("Wolke: bedenklich"), "warnung"),
    "gewitter": (N_("Gewitter: muss sich ändern"), "fehler"),
    "wind": (N_("Wind: gute Idee"), "neutral"),
}
# The kind of legal basis a participant has for a case (the basis's own id stays in the audit).
BASIS_KINDS = {"consent": N_("Einwilligung"), "statute": N_("gesetzliche Aufgabe"), "agreement": N_("Vereinbarung zum Datenaustausch")}
LEVELS = {"staff": N_("Mitarbeitende"), "organisation": N_("Organisation"), "intermunicipal": N_("Interkommunal")}
AGREEMENT_STATES = {"open": N_("offen"), "done": N_("erledigt"), "dropped": N_("entfallen")}


# --- helpers shared with the steering screens --------------------------------------------------


def form_refusal(exc: Exception) -> bool:
    """A refusal the form shows next to its fields (bad input, changed meanwhile). Everything
    else (403, 404, 423) goes to the error page, audited as the API audits it."""
    return isinstance(exc, ValidationError) or (isinstance(exc, Problem) and exc.status in (409, 422))


_GERMAN = {
    "missing": "Bitte ausfüllen.",
    "string_too_short": "Bitte ausfüllen.",
    "too_short": "Bitte mindestens eine Angabe wählen.",
    "int_parsing": "Bitte eine ganze Zahl angeben.",
    "int_type": "Bitte eine ganze Zahl angeben.",
    "uuid_parsing": "Keine gültige Kennung.",
    "uuid_type": "Keine gültige Kennung.",
    "datetime_from_date_parsing": "Bitte Datum und Uhrzeit angeben.",
    "datetime_parsing": "Bitte Datum und Uhrzeit angeben.",
    "datetime_type": "Bitte Datum und Uhrzeit angeben.",
    "literal_error": "Bitte einen der angebotenen Werte wählen.",
    "enum": "Bitte einen der angebotenen Werte wählen.",
    "less_than_equal": "Der Wert ist zu groß.",
    "greater_than_equal": "Der Wert ist zu klein.",
    "string_too_long": "Der Text ist zu lang.",
}
_DATE_FIELDS = {"due_date", "datum"}


def form_errors(exc: ValidationError | Problem) -> list[dict[str, str]]:
    """The errors for the form's error summary, in German where the input model's message is
    Pydantic's English (the services' own refusals stay as they are)."""
    if isinstance(exc, Problem) and exc.slug == "personal-data-in-text":
        field = str(exc.extra.get("field") or "text").rsplit(".", 1)[-1]  # add_step.title: the form's "title"
        hits = [h.get("message", "") for h in exc.extra.get("hits", []) if isinstance(h, dict)]
        return [{"field": field, "message": "Der Text enthält personenbezogene Daten: " + " ".join(hits)}]
    found = field_errors(exc)
    if not isinstance(exc, ValidationError):
        return found
    for entry, err in zip(found, exc.errors(), strict=False):
        german = _GERMAN.get(err.get("type", ""))
        if entry["field"] in _DATE_FIELDS and err.get("type") not in ("missing",):
            german = "Bitte ein Datum angeben (TT.MM.JJJJ)."
        if german:
            entry["message"] = german
    return found


def iso_day(value: str | None) -> str | None:
    """A day as the form sent it: JJJJ-MM-TT from a date picker, or TT.MM.JJJJ typed by hand."""
    if value and len(value) == 10 and value[2] == "." and value[5] == ".":
        return f"{value[6:]}-{value[3:5]}-{value[:2]}"
    return value


def text_with_objections(text: str, exc: Exception, field: str | None = None) -> list[dict[str, Any]] | None:
    """The refused text in pieces, each objection of the scrubber marked where it is, so the
    moderator sees the spot to fix; None when the refusal was not the scrubber's (or, with
    ``field``, was about another field of the form)."""
    if not isinstance(exc, Problem) or exc.slug != "personal-data-in-text":
        return None
    if field is not None and str(exc.extra.get("field") or field).rsplit(".", 1)[-1] != field:
        return None
    hits = sorted((h for h in exc.extra.get("hits", []) if isinstance(h, dict)), key=lambda h: h["start"])
    pieces: list[dict[str, Any]] = []
    at = 0
    for n, hit in enumerate(hits, start=1):
        start, end = max(int(hit["start"]), at), int(hit["end"])
        if start >= end:
            continue
        if start > at:
            pieces.append({"text": text[at:start]})
        pieces.append({"text": text[start:end], "number": n, "message": hit.get("message", "")})
        at = end
    if at < len(text):
        pieces.append({"text": text[at:]})
    return pieces


def _one(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _ids(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v.strip()]


def _ctx(request: Request):
    s = request.app.state
    return s.privacy, s.policies.steering


def _organisation_choices(db: Session) -> list[tuple[int, str]]:
    return [(o.id, o.name) for o in db.scalars(select(Organisation).order_by(Organisation.name))]


def _jurisdiction_choices(db: Session) -> list[tuple[int, str]]:
    return [(j.id, j.name) for j in db.scalars(select(Jurisdiction).where(
        Jurisdiction.level.in_(("kreis", "kreisfreie_stadt", "gemeinde"))).order_by(Jurisdiction.path))]


# --- list and create ---------------------------------------------------------------------------


@router.get("/konferenzen")
def conference_list(request: Request, user: WebUser = Depends(need("conferences.read")),
                    db: Session = Depends(get_session)) -> Response:
    return _list_page(request, user, db)


def _list_page(request: Request, user: WebUser, db: Session, errors=None, values=None, status: int = 200):
    conferences = service.list_conferences(db, user.actor, 100)
    return render(request, "konferenzen.html", http_status=status, conferences=conferences, phases=PHASES,
                  jurisdictions=_jurisdiction_choices(db), organisations=_organisation_choices(db),
                  may_manage=user.may(request, "conferences.manage"), errors=errors or [], values=values or {})


@router.post("/konferenzen")
def create_conference(request: Request, user: WebUser = Depends(need("conferences.manage")),
                      form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    values = {"title": _one(form, "title") or "", "datum": iso_day(_one(form, "datum")) or "",
              "uhrzeit": _one(form, "uhrzeit") or "09:00", "jurisdiction_id": _one(form, "jurisdiction_id"),
              "participant_organisation_ids": _ids(form, "participant_organisation_ids")}
    privacy, policy = _ctx(request)
    try:
        scheduled = _local_time(values["datum"], values["uhrzeit"])
        body = ConferenceIn(title=values["title"], scheduled_at=scheduled, jurisdiction_id=values["jurisdiction_id"],
                            participant_organisation_ids=values["participant_organisation_ids"])
        made = service.create_conference(db, privacy, policy, user.actor, body, request.app.state.clock())
    except (ValidationError, Problem) as exc:
        if not form_refusal(exc):
            raise
        return _list_page(request, user, db, errors=_rename(form_errors(exc), scheduled_at="datum"),
                          values=values, status=422)
    return redirect(f"{PREFIX}/konferenzen/{made.id}", "gespeichert")


def _local_time(day: str, at: str) -> datetime | str:
    """A date and time entered in Europe/Berlin; the text as it was when it is no date (the
    model's validation then names the field)."""
    try:
        return datetime.combine(date.fromisoformat(day), time.fromisoformat(at), LOCAL_TIMEZONE)
    except ValueError:
        return day


def _rename(errors: list[dict[str, str]], **names: str) -> list[dict[str, str]]:
    return [{**e, "field": names.get(e["field"], e["field"])} for e in errors]


# --- one conference ------------------------------------------------------------------------------


@router.get("/konferenzen/{conference_id}")
def conference_page(request: Request, conference_id: uuid.UUID, user: WebUser = Depends(need("conferences.read")),
                    db: Session = Depends(get_session)) -> Response:
    return _page(request, user, db, conference_id)


def _page(request: Request, user: WebUser, db: Session, conference_id: uuid.UUID, status: int = 200,
          **form_state: Any) -> Response:
    privacy, policy = _ctx(request)
    conference = service.get_conference(db, privacy, policy, user.actor, conference_id, request.app.state.clock())
    kinds = request.app.state.policies.organisation_kinds
    moderating = conference.moderator_organisation_id == user.actor.organisation_id and user.may(
        request, "conferences.manage")
    names = dict(_organisation_choices(db))
    proposals = [p for p in steering.list_proposals(db, user.actor, None, 200, policy.k)
                 if any(f.conference_id == conference.id for f in p.findings)] \
        if user.may(request, "proposals.read") else []
    return render(
        request, "konferenz.html", http_status=status, c=conference, phases=PHASES, next_phase=NEXT_PHASE.get(conference.phase),
        weather=WEATHER, levels=LEVELS, basis_kinds=BASIS_KINDS, agreement_states=AGREEMENT_STATES, moderating=moderating,
        may_vote=user.may(request, "conferences.participate"), may_propose=user.may(request, "proposals.manage"),
        organisation_names=names, organisations=sorted(names.items(), key=lambda o: o[1]),
        barriers=policy.barrier_categories, fields_of_action=policy.fields_of_action,
        kinds=[(k, v.title) for k, v in kinds.items()], kind_titles={k: v.title for k, v in kinds.items()},
        proposals=proposals, **_form_state(form_state))


def _form_state(state: dict[str, Any]) -> dict[str, Any]:
    """The refused form's section, its errors (``E``: section -> errors) and the values sent."""
    errors, section = state.pop("errors", []), state.pop("section", None)
    return {"errors": errors, "section": section, "E": {section: errors} if section else {},
            "values": state.pop("values", {}), **state}


def _after(request: Request, user: WebUser, db: Session, conference_id: uuid.UUID, section: str, call,
           values: dict[str, Any], notice: str = "gespeichert", **extra: Any) -> Response:
    """Run one change; on a refusal the page again with the errors at the section's form."""
    try:
        call()
    except (ValidationError, Problem) as exc:
        if not form_refusal(exc):
            raise
        return _page(request, user, db, conference_id, status=422, errors=form_errors(exc), section=section,
                     values=values, **{k: (v(exc) if callable(v) else v) for k, v in extra.items()})
    return redirect(f"{PREFIX}/konferenzen/{conference_id}", notice)


@router.post("/konferenzen/{conference_id}/teilnehmende")
def add_participant(request: Request, conference_id: uuid.UUID, user: WebUser = Depends(need("conferences.manage")),
                    form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    privacy, policy = _ctx(request)
    values = {"organisation_ids": _ids(form, "organisation_ids")}
    return _after(request, user, db, conference_id, "teilnehmende", lambda: service.add_participants(
        db, privacy, policy, user.actor, conference_id, ParticipantsIn(**values).organisation_ids,
        request.app.state.clock()), values)


@router.post("/konferenzen/{conference_id}/phase")
def change_phase(request: Request, conference_id: uuid.UUID, user: WebUser = Depends(need("conferences.manage")),
                 form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    privacy, policy = _ctx(request)
    values = {"phase": _one(form, "phase"), "expected_version": _one(form, "expected_version")}
    return _after(request, user, db, conference_id, "phase", lambda: service.set_phase(
        db, privacy, policy, user.actor, conference_id, PhaseIn(**values).phase,
        PhaseIn(**values).expected_version, request.app.state.clock()), values)


@router.post("/konferenzen/{conference_id}/faelle")
def add_case(request: Request, conference_id: uuid.UUID, user: WebUser = Depends(need("conferences.manage")),
             form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    """Put a case on the agenda. A chain outside the moderator's scope, and a case some
    participant has no legal basis to discuss, are answered at the field (the 404 audited as
    the API audits it, and the same for a real and a random id)."""
    privacy, policy = _ctx(request)
    values = {"chain_id": _one(form, "chain_id")}

    def call() -> None:
        try:
            service.add_case(db, privacy, policy, user.actor, conference_id, CaseIn(**values).chain_id,
                             request.app.state.clock())
        except NotFound as exc:
            if exc.extra.get("resource") != "chain":
                raise
            audit_refusal(request, exc)
            raise invalid_field("chain_id", "Keine Integrationskette mit dieser Kennung, die Sie sehen dürfen.") from None
        except NoLegalBasis as exc:
            names = dict(_organisation_choices(db))
            without = [names.get(f.get("organisation_id"), "") for f in exc.extra.get("fields", [])]
            raise invalid_field("chain_id", "Der Fall darf nicht besprochen werden: Für " + ", ".join(without)
                                + " liegt keine Einwilligung oder gesetzliche Grundlage vor.") from None

    return _after(request, user, db, conference_id, "faelle", call, values)


@router.post("/konferenzen/{conference_id}/vereinbarungen")
def add_agreement(request: Request, conference_id: uuid.UUID, user: WebUser = Depends(need("conferences.manage")),
                  form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    s = request.app.state
    values = {"conference_case_id": _one(form, "conference_case_id"), "text": _one(form, "text") or "",
              "owner_organisation_id": _one(form, "owner_organisation_id"), "due_date": iso_day(_one(form, "due_date"))}
    # Optionally the agreement adds a step to the case's chain (done by the owner organisation).
    step = {"title": _one(form, "title") or "", "requires": _one(form, "requires") or None}
    body = {**values, "add_step": step} if step["title"].strip() or step["requires"] else values
    return _after(request, user, db, conference_id, "vereinbarungen", lambda: service.add_agreement(
        db, s.catalog, s.privacy, s.policies.steering, s.policies.handovers, user.actor, conference_id,
        AgreementIn(**body), s.clock()), {**values, **step},
        agreement_objections=lambda exc: text_with_objections(values["text"], exc, "text"))


@router.post("/konferenzen/{conference_id}/befunde")
def add_finding(request: Request, conference_id: uuid.UUID, user: WebUser = Depends(need("conferences.manage")),
                form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    privacy, policy = _ctx(request)
    values = {"barrier_category": _one(form, "barrier_category"), "field_of_action": _one(form, "field_of_action"),
              "organisation_kinds": _ids(form, "organisation_kinds"), "level": _one(form, "level"),
              "weather": _one(form, "weather"), "text": _one(form, "text") or "",
              "conference_case_ids": _ids(form, "conference_case_ids")}
    kinds = request.app.state.policies.organisation_kinds.keys()
    return _after(request, user, db, conference_id, "befunde", lambda: service.add_finding(
        db, privacy, policy, kinds, user.actor, conference_id, FindingIn(**values), request.app.state.clock()),
        values, finding_objections=lambda exc: text_with_objections(values["text"], exc))


@router.post("/konferenzen/{conference_id}/befunde/{finding_id}/punkte")
def vote(request: Request, conference_id: uuid.UUID, finding_id: uuid.UUID,
         user: WebUser = Depends(need("conferences.participate")), form: FormData = Depends(checked_form),
         db: Session = Depends(get_session)) -> Response:
    privacy, policy = _ctx(request)
    values = {"dots": _one(form, "dots")}
    return _after(request, user, db, conference_id, f"punkte-{finding_id}", lambda: service.vote(
        db, privacy, policy, user.actor, conference_id, finding_id, VoteIn(**values).dots,
        request.app.state.clock()), values)


@router.post("/konferenzen/{conference_id}/vorschlag")
def propose(request: Request, conference_id: uuid.UUID, user: WebUser = Depends(need("proposals.manage")),
            form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    """Bundle findings of this conference into a proposal (then submitted from the proposals page)."""
    privacy, policy = _ctx(request)
    values = {"title": _one(form, "title") or "", "summary": _one(form, "summary") or "",
              "finding_ids": _ids(form, "finding_ids")}
    try:
        made = steering.create_proposal(db, privacy, policy, user.actor, ProposalIn(**values),
                                        request.app.state.clock())
    except (ValidationError, Problem) as exc:
        if not form_refusal(exc):
            raise
        return _page(request, user, db, conference_id, status=422, errors=form_errors(exc), section="vorschlag",
                     values=values, summary_objections=text_with_objections(
                         values["summary"] if getattr(exc, "extra", {}).get("field") == "summary" else values["title"],
                         exc), objection_field=getattr(exc, "extra", {}).get("field"))
    return redirect(f"{PREFIX}/vorschlaege/{made.id}", "gespeichert")
