"""The case manager's screens: Meine Fälle, registering a person with the intake consent, the
person page (what is shown, what is withheld and why, consent history and withdrawal), and the
chain page (the steps as a chain with the actions the user may take, the timeline, the chain's
handovers; requesting a handover, a relocation; closing the chain). Clerks reach the chain and
person pages of their cases through the same routes, with what the API shows them."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Depends, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from casemgmt.auth.dependencies import get_session
from casemgmt.chains import service as chains
from casemgmt.chains.engine import ChainStatus
from casemgmt.chains.schemas import ChainCloseIn, StepActionIn
from casemgmt.handovers import service as handovers
from casemgmt.handovers.schemas import HandoverIn
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.persons import service as persons
from casemgmt.privacy import service as privacy
from casemgmt.privacy.schemas import PersonCreateIn, PersonRecordOut, WithdrawalIn
from casemgmt.problems import Problem
from casemgmt.web import texte
from casemgmt.web.texte import N_
from casemgmt.web.navigation import nav_entry
from casemgmt.web.routing import (
    WebUser,
    checked_form,
    field_errors,
    need,
    redirect,
    render,
    web_router,
)

router = web_router()
nav_entry(N_("Meine Fälle"), "/ui/faelle", "chains.start", 10)
nav_entry(N_("Person registrieren"), "/ui/personen/neu", "persons.create", 20)

PAGE = 25


# --- shared look-ups -------------------------------------------------------------------------


def organisation_names(db: Session, ids: set[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return dict(db.execute(select(Organisation.id, Organisation.name).where(Organisation.id.in_(wanted))).all())


def towns(db: Session, user: WebUser) -> list[Jurisdiction]:
    """The towns (and kreisfreie Städte) of the user's area, by name."""
    rows = db.execute(select(Jurisdiction).where(
        Jurisdiction.path.startswith(user.actor.jurisdiction_path),
        Jurisdiction.level.in_(("gemeinde", "kreisfreie_stadt"))).order_by(Jurisdiction.name)).scalars().all()
    db.rollback()
    return list(rows)


def all_towns(db: Session) -> list[Jurisdiction]:
    rows = db.execute(select(Jurisdiction).where(Jurisdiction.level.in_(("gemeinde", "kreisfreie_stadt")))
                      .order_by(Jurisdiction.name)).scalars().all()
    db.rollback()
    return list(rows)


def jurisdiction_names(db: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(db.execute(select(Jurisdiction.id, Jurisdiction.name).where(Jurisdiction.id.in_(ids))).all())


def template_titles(request: Request) -> dict[str, str]:
    return {k: t.title for k, t in sorted(request.app.state.policies.templates.items(), key=lambda kv: kv[1].title)}


def german_errors(exc: ValidationError | Problem, titles: dict[str, str]) -> list[dict[str, str]]:
    """The errors of a form in German, each naming its field's title."""
    if isinstance(exc, Problem):
        return field_errors(exc)
    found = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
        name = loc[-1] if loc else ""
        found.append({"field": name, "message": texte.german_error(err.get("type", ""), titles.get(name, name),
                                                                  err.get("msg", ""))})
    return found


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _int(form: FormData, name: str) -> int | str | None:
    value = _text(form, name)
    if value is None:
        return None
    return int(value) if value.isdigit() else value


# --- Meine Fälle -----------------------------------------------------------------------------


@router.get("/faelle")
def my_cases(
    request: Request,
    status: ChainStatus | None = None,
    ort: int | None = Query(default=None, ge=1, le=2**31 - 1),
    vorlage: str | None = Query(default=None, max_length=64),
    weiter: str | None = Query(default=None, max_length=200),
    user: WebUser = Depends(need("chains.read")),
    db: Session = Depends(get_session),
) -> Response:
    """Chains I manage: the stalled ones (blocked or overdue) first, then all, with filters."""
    now = request.app.state.clock()
    templates = template_titles(request)
    if vorlage is not None and vorlage not in templates:
        vorlage = None
    filters = chains.ChainFilters(status=status, template_key=vorlage, jurisdiction_id=ort)
    stalled = None
    if status is None and weiter is None:
        stalled = chains.list_chains(db, chains.ChainFilters(status=ChainStatus.stalled, template_key=vorlage,
                                                             jurisdiction_id=ort), PAGE, None, now, actor=user.actor)
    page = chains.list_chains(db, filters, PAGE, weiter, now, actor=user.actor)
    shown = (stalled.items if stalled else []) + page.items
    return render(request, "faelle.html", stalled=stalled, page=page, templates=templates,
                  names=person_names(request, db, user, {c.person_id for c in shown}),
                  towns=towns(db, user), status=status.value if status else "", ort=ort, vorlage=vorlage or "",
                  places=jurisdiction_names(db, {c.lead_jurisdiction_id for c in shown}),
                  texte=texte, weiter=weiter)


NAME_FIELDS = ("family_name", "given_names")


def person_names(request: Request, db: Session, user: WebUser, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The names the user may see of these persons: one call of the service behind
    ``GET /persons`` (the privacy exit point, an audited read of just the name fields per person
    shown). A person whose
    name is withheld, or who is not listed (restricted processing), is missing from the result."""
    if not ids or not user.may(request, "persons.read"):
        return {}
    page = persons.list_persons(db, request.app.state.privacy, user.actor,
                                persons.PersonFilters(person_ids=frozenset(ids)), len(ids), None, None,
                                request.app.state.clock(), only=NAME_FIELDS)
    return {record.id: name for record in page.items if (name := shown_name(record)) is not None}


def shown_name(record: PersonRecordOut | None) -> str | None:
    """"Familienname, Vornamen" as far as the user may see them; ``None`` when both are withheld
    (or the person is not listed): the screen then says "(nicht freigegeben)"."""
    if record is None:
        return None
    parts = [str(record.fields[k]) for k in NAME_FIELDS if record.fields.get(k)]
    return ", ".join(parts) or None


# --- register a person ------------------------------------------------------------------------

INTAKE_FIELDS = ("family_name", "given_names", "birth_date", "nationality", "residence_status",
                 "bleibeperspektive", "benefit_regime", "preferred_language")


def _person_form_context(request: Request, db: Session, user: WebUser) -> dict[str, Any]:
    data = request.app.state.policies.data
    kinds = request.app.state.policies.organisation_kinds
    return {
        "fields": [data.fields[k] for k in INTAKE_FIELDS if k in data.fields],
        "options": {k: [(v, texte.value_title(k, v)) for v in (f.values or ())] for k, f in data.fields.items()},
        "categories": sorted(data.categories.values(), key=lambda c: c.title),
        "purposes": sorted(data.purposes.items(), key=lambda p: p[1]),
        "kinds": sorted(((k, getattr(v, "title", k)) for k, v in kinds.items()), key=lambda kv: kv[1]),
        "towns": towns(db, user),
    }


@router.get("/personen/neu")
def new_person(request: Request, user: WebUser = Depends(need("persons.create")),
               db: Session = Depends(get_session)) -> Response:
    return render(request, "person_neu.html", values={"purpose": "case_management", "language": "Deutsch"},
                  **_person_form_context(request, db, user))


def _intake_titles(request: Request) -> dict[str, str]:
    titles = {k: f.title for k, f in request.app.state.policies.data.fields.items()}
    titles.update(lead_jurisdiction_id="Wohnort", recipients="Empfänger der Einwilligung",
                  categories="Datenkategorien", purpose="Zweck", evidence_reference="Nachweis (Aktenzeichen des Formulars)",
                  language="Sprache der Aufklärung", consequences_explained="Aufklärung über die Folgen",
                  explicit_special="Ausdrückliche Einwilligung für Gesundheitsdaten")
    return titles


@router.post("/personen/neu")
def create_person(request: Request, user: WebUser = Depends(need("persons.create")),
                  form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    """Register the person with the consent signed at intake (the Schweigepflichtentbindung)."""
    titles = _intake_titles(request)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    errors: list[dict[str, str]] = []
    fields: dict[str, Any] = {}
    for key in INTAKE_FIELDS:
        value = _text(form, key)
        if value is None:
            continue
        if key == "birth_date":
            iso = texte.parse_date(value)
            if iso is None:
                errors.append({"field": key, "message": "Bitte geben Sie das Geburtsdatum als TT.MM.JJJJ an."})
                continue
            value = iso
        fields[key] = value
    town = _int(form, "lead_jurisdiction_id")
    consent = {
        "recipients": [{"organisation_kind": k, "jurisdiction_id": town if isinstance(town, int) else None}
                       for k in form.getlist("recipients") if isinstance(k, str)],
        "categories": [c for c in form.getlist("categories") if isinstance(c, str)],
        "purpose": _text(form, "purpose") or "",
        "explicit_special": form.get("explicit_special") == "ja",
        "consequences_explained": form.get("consequences_explained") == "ja",
        "evidence_reference": _text(form, "evidence_reference") or "",
        "language": _text(form, "language") or "",
        "interpreter_used": form.get("interpreter_used") == "ja",
    }
    if not consent["consequences_explained"]:
        errors.append({"field": "consequences_explained",
                       "message": "Bitte bestätigen Sie, dass die Person über die Folgen aufgeklärt wurde."})
    if "health" in consent["categories"] and not consent["explicit_special"]:
        errors.append({"field": "explicit_special", "message": "Gesundheitsdaten brauchen die ausdrückliche "
                                                               "Einwilligung (Art. 9 DSGVO)."})
    try:
        body = PersonCreateIn(lead_jurisdiction_id=town, fields=fields, consents=[consent])
    except ValidationError as exc:
        errors += german_errors(exc, titles)
        body = None
    if not errors and body is not None:
        try:
            person = privacy.create_person(db, request.app.state.privacy, user.actor, body, request.app.state.clock())
            return redirect(f"/ui/personen/{person.id}", "person")
        except Problem as exc:
            errors = german_errors(exc, titles)
    values["recipients"] = form.getlist("recipients")
    values["categories"] = form.getlist("categories")
    return render(request, "person_neu.html", http_status=422, errors=errors, values=values,
                  **_person_form_context(request, db, user))


# --- the person page --------------------------------------------------------------------------


def _person_context(request: Request, db: Session, user: WebUser, person_id: uuid.UUID) -> dict[str, Any]:
    now = request.app.state.clock()
    record = privacy.read_person(db, request.app.state.privacy, user.actor, person_id, None, now)
    consents, consents_note = None, None
    if user.may(request, "consents.read"):
        try:
            consents = privacy.list_consents(db, user.actor, person_id, now)
        except Problem as exc:
            if exc.status != 403:
                raise
            # The API refuses the history to an organisation whose part has ended; the page says so.
            consents_note = exc.slug
    person_chains = chains.list_chains(db, chains.ChainFilters(person_id=person_id), 50, None, now, actor=user.actor)
    from casemgmt.web.angebote import sprachenpass_context  # the Sprachenpass section (casemgmt.web.angebote)

    return {**sprachenpass_context(request, db, user, person_id), "record": record, "consents": consents, "consents_note": consents_note, "chains": person_chains.items,
            "data": request.app.state.policies.data, "texte": texte, "templates": template_titles(request),
            "places": jurisdiction_names(db, {record.lead_jurisdiction_id}),
            "org_names": organisation_names(db, {c.recorded_by_organisation_id for c in consents or []})}


@router.get("/personen/{person_id}")
def person_page(request: Request, person_id: uuid.UUID, user: WebUser = Depends(need("persons.read")),
                db: Session = Depends(get_session)) -> Response:
    """What I may see of the person, what is withheld and why; consents; chains."""
    return render(request, "person.html", **_person_context(request, db, user, person_id))


@router.post("/personen/{person_id}/einwilligungen/{consent_id}/widerruf")
def withdraw(request: Request, person_id: uuid.UUID, consent_id: uuid.UUID,
             user: WebUser = Depends(need("consents.record")), form: FormData = Depends(checked_form),
             db: Session = Depends(get_session)) -> Response:
    """Withdraw a consent (it narrows processing from now on; earlier access stays lawful)."""
    body = WithdrawalIn(note=_text(form, "note"))
    privacy.withdraw_consent(db, request.app.state.privacy, user.actor, consent_id, body.note,
                             request.app.state.clock())
    return redirect(f"/ui/personen/{person_id}", "widerrufen")


@router.post("/personen/{person_id}/ketten")
def start_chain(request: Request, person_id: uuid.UUID, user: WebUser = Depends(need("chains.start")),
                form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    template = _text(form, "template_key")
    if template not in request.app.state.policies.templates:
        return person_page_with_errors(request, person_id, user, db,
                                       [{"field": "template_key", "message": "Bitte wählen Sie eine Vorlage."}])
    try:
        chain = chains.start_chain(db, request.app.state.catalog, user.actor, person_id, template,
                                   request.app.state.clock())
    except Problem as exc:
        if exc.status in (404, 423):
            raise
        return person_page_with_errors(request, person_id, user, db, field_errors(exc))
    return redirect(f"/ui/ketten/{chain.id}", "kette")


def person_page_with_errors(request: Request, person_id: uuid.UUID, user: WebUser, db: Session,
                            errors: list[dict[str, str]], **extra: Any) -> Response:
    return render(request, "person.html", http_status=422, errors=errors,
                  **_person_context(request, db, user, person_id), **extra)


# --- the chain page ---------------------------------------------------------------------------


def _chain_handovers(db: Session, user: WebUser, chain_id: uuid.UUID, now) -> list:
    """Every handover of the chain the user's organisation sends, receives or manages, newest
    first: one call of the service behind ``GET /chains/{id}/handovers`` (its scope and audit)."""
    return list(reversed(handovers.chain_handovers(db, user.actor, chain_id, now)))


def chain_context(request: Request, db: Session, user: WebUser, chain_id: uuid.UUID) -> dict[str, Any]:
    now = request.app.state.clock()
    chain = chains.get_chain(db, request.app.state.catalog, user.actor, chain_id, now)
    events = chains.chain_events(db, user.actor, chain_id, now)
    chain_handovers = (_chain_handovers(db, user, chain_id, now) if user.may(request, "handovers.read") else [])
    org_ids = {s.assigned_organisation_id for s in chain.steps} | {e.actor_organisation_id for e in events} \
        | {e.organisation_id for e in events} | {chain.case_management_organisation_id}
    for h in chain_handovers:
        org_ids |= {h.sender.id, h.receiver.id}
    return {
        "chain": chain, "events": list(reversed(events)), "handovers": chain_handovers,
        "org_names": organisation_names(db, org_ids), "texte": texte,
        "places": jurisdiction_names(db, {chain.lead_jurisdiction_id}),
        "kind_titles": {k: v.title for k, v in request.app.state.policies.organisation_kinds.items()},
        "step_options": [(s.key, s.title) for s in chain.steps],
        "step_titles": {s.key: s.title for s in chain.steps},
        "benefit_options": [(v, texte.value_title("benefit_regime", v))
                            for v in request.app.state.policies.data.fields["benefit_regime"].values or ()],
        "town_options": [(t.id, t.name) for t in all_towns(db)],
        "close_options": list(texte.CLOSE_REASON.items()),
        "may_handover": user.may(request, "handovers.act") and chain.status.value in ("active", "stalled")
        and chain.access == "current",
        "may_close": user.may(request, "chains.close") and chain.status.value in ("active", "stalled")
        and chain.access == "current" and chain.case_management_organisation_id == user.actor.organisation_id,
    }


@router.get("/ketten/{chain_id}")
def chain_page(request: Request, chain_id: uuid.UUID, user: WebUser = Depends(need("chains.read")),
               db: Session = Depends(get_session)) -> Response:
    return render(request, "kette.html", **chain_context(request, db, user, chain_id))


def _chain_errors(request: Request, db: Session, user: WebUser, chain_id: uuid.UUID, exc: Problem | ValidationError,
                  titles: dict[str, str], where: str) -> Response:
    if isinstance(exc, Problem) and exc.status in (404, 423):
        raise exc
    errors = german_errors(exc, titles)
    for e in errors:
        e["field"] = f"{where}-{e['field']}" if e["field"] else ""
    return render(request, "kette.html", http_status=409 if isinstance(exc, Problem) and exc.status == 409 else 422,
                  errors=errors, **chain_context(request, db, user, chain_id))


@router.post("/ketten/{chain_id}/schritte/{step_key}")
def act_on_step(request: Request, chain_id: uuid.UUID, step_key: str,
                user: WebUser = Depends(need("steps.act")), form: FormData = Depends(checked_form),
                db: Session = Depends(get_session)) -> Response:
    """Start, complete, block, resume or skip a step (block and skip need a reason)."""
    try:
        body = StepActionIn(action=_text(form, "action") or "", reason=_text(form, "reason"),
                            expected_version=_int(form, "expected_version"))
        chains.transition_step(db, request.app.state.catalog, user.actor, chain_id, step_key[:64],
                               body.action.value, body.reason, body.expected_version, request.app.state.clock(),
                               privacy=request.app.state.privacy)
    except (Problem, ValidationError) as exc:
        return _chain_errors(request, db, user, chain_id, exc, {"reason": "Begründung", "action": "Aktion"},
                             f"schritt-{step_key[:64]}-{(_text(form, 'action') or '')[:20]}")
    return redirect(f"/ui/ketten/{chain_id}", "schritt")


@router.post("/ketten/{chain_id}/uebergaben")
def request_handover(request: Request, chain_id: uuid.UUID, user: WebUser = Depends(need("handovers.act")),
                     form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    """Hand a step on, a Rechtskreiswechsel, or the whole chain on relocation."""
    titles = {"kind": "Art der Übergabe", "step_key": "Schritt", "to_step_key": "Schritt beim Empfänger",
              "benefit_regime": "Neuer Rechtskreis", "to_jurisdiction_id": "Neuer Wohnort"}
    kind = _text(form, "kind")
    try:
        body = HandoverIn(kind=kind or "", step_key=_text(form, "step_key") if kind != "relocation" else None,
                          to_step_key=_text(form, "to_step_key") if kind == "rechtskreiswechsel" else None,
                          benefit_regime=_text(form, "benefit_regime") if kind == "rechtskreiswechsel" else None,
                          to_jurisdiction_id=_int(form, "to_jurisdiction_id") if kind == "relocation" else None)
        s = request.app.state
        handover = handovers.request_handover(db, s.catalog, s.privacy, s.policies.handovers, user.actor, chain_id,
                                              body, s.clock())
    except (Problem, ValidationError) as exc:
        return _chain_errors(request, db, user, chain_id, exc, titles, "uebergabe")
    return redirect(f"/ui/uebergaben/{handover.id}", "uebergabe")


@router.post("/ketten/{chain_id}/schliessen")
def close_chain(request: Request, chain_id: uuid.UUID, user: WebUser = Depends(need("chains.close")),
                form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    try:
        body = ChainCloseIn(reason=_text(form, "reason") or "", note=_text(form, "note"),
                            expected_version=_int(form, "expected_version"))
        chains.close_chain(db, request.app.state.catalog, user.actor, chain_id, body.reason.value, body.note,
                           body.expected_version, request.app.state.clock(), privacy=request.app.state.privacy)
    except (Problem, ValidationError) as exc:
        return _chain_errors(request, db, user, chain_id, exc, {"reason": "Grund", "note": "Anmerkung"}, "schliessen")
    return redirect(f"/ui/ketten/{chain_id}", "geschlossen")
