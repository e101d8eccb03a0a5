"""The screens of the Angebotsdatenbank and the Sprachenpass.

- ``/ui/angebote``: the public German directory of integration offers, without a login; it calls
  the service behind ``GET /public/offers`` (and ``/public/good-practices``), so it shows exactly
  what the public API shows: places only as a band, never a count, never a person.
- ``/ui/ketten/{id}/schritte/{key}/angebote``: the offers matching a chain step, ranked as the
  API ranks them, with referral and enrolment (the services behind
  ``GET``/``POST /chains/{id}/steps/{key}/offers``).
- The Sprachenpass on the person page (``sprachenpass_context``), its printable page and, for
  a course provider, the form to add an entry (the services behind
  ``/persons/{id}/language-pass``).
"""

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
from casemgmt.chains.agreed import LOCAL_TIMEZONE
from casemgmt.languagepass import levels as lv
from casemgmt.languagepass import service as languagepass
from casemgmt.languagepass.schemas import EntryIn
from casemgmt.offers import service as offers
from casemgmt.offers.matching import MAX_AGE
from casemgmt.offers.schemas import BookingIn
from casemgmt.problems import Problem
from casemgmt.web import texte
from casemgmt.web.faelle import all_towns, german_errors, person_page_with_errors
from casemgmt.web.routing import (
    NOTICES,
    PREFIX,
    SignInNeeded,
    WebUser,
    checked_form,
    need,
    redirect,
    render,
    signed_in,
    web_router,
)
from casemgmt.web.texte import N_

router = web_router()
NOTICES.update(
    vermittelt=N_("Die Person ist an das Angebot vermittelt."),
    angemeldet_kurs=N_("Die Person ist im Angebot angemeldet; ein Platz ist belegt."),
    sprachenpass=N_("Der Eintrag im Sprachenpass ist gespeichert."),
)

# The places band of the public directory, as text and symbol (never a number).
PLACES = {
    "open": (N_("Ohne Platzbegrenzung"), "ok"),
    "available": (N_("Plätze frei"), "ok"),
    "few": (N_("Wenige Plätze frei"), "warnung"),
    "full": (N_("Ausgebucht"), "fehler"),
}
BOOKING_STATE = {"referred": (N_("Vermittelt"), "aktiv"), "enrolled": (N_("Angemeldet"), "ok")}
RESIDENCE_STATUSES = ("asylum_pending", "protection_granted", "tolerated", "eu_free_movement",
                      "third_country_permit", "spaetaussiedler", "naturalised")
FREE_CHOICES = {"": N_("egal"), "ja": N_("nur mit freien Plätzen"), "nein": N_("nur ausgebuchte")}
EXAMS = ("DTZ", "telc", "Goethe", "TestDaF", "ÖSD", "DSH", "other")
# German texts of the refusals a booking can meet, shown in the error summary.
BOOKING_REFUSALS = {
    "offer-full": "Dieses Angebot hat keinen freien Platz mehr. Es wurde nichts gebucht. Wählen Sie ein anderes "
                  "Angebot oder vermitteln Sie die Person und melden Sie sie an, wenn ein Platz frei wird.",
    "already-enrolled": "Die Person ist für diesen Schritt bereits in diesem Angebot angemeldet.",
    "version-conflict": "Die Integrationskette wurde inzwischen geändert. Bitte prüfen Sie die Angebote und "
                        "versuchen Sie es erneut.",
    "offer-does-not-fit": "Das Angebot passt nicht zu diesem Schritt (Art, Gültigkeit, Wohnort, oder der Schritt "
                          "ist beendet).",
    "wrong-organisation": "Buchen dürfen nur die Fallführung und die Stelle, die den Schritt bearbeitet.",
    "chain-closed": "Die Integrationskette ist geschlossen.",
}


def _optional_user(request: Request, db: Session = Depends(get_session),
                   hinweis: str | None = Query(default=None, max_length=40, description="notice after a redirect"),
                   ) -> WebUser | None:
    """The signed-in user if there is one (for the header and navigation); the page is public."""
    try:
        return signed_in(request, db)
    except SignInNeeded:
        return None
    except Problem:
        return None


def _one(params, name: str, limit: int = 60) -> str | None:
    value = params.get(name)
    return value.strip()[:limit] if isinstance(value, str) and value.strip() else None


# --- the public directory --------------------------------------------------------------------------


def _search_field(description: str):
    return Query(default=None, max_length=60, description=description)


@router.get("/angebote")
def directory(request: Request, art: str | None = _search_field("offer kind"), ort: str | None = _search_field("town"),
              sprache: str | None = _search_field("language"), zielgruppe: str | None = _search_field("residence status"),
              alter: str | None = _search_field("age in years"),
              beginn: str | None = _search_field("starts within N days"),
              plaetze: str | None = _search_field("free places: ja, nein or empty"),
              db: Session = Depends(get_session), user: WebUser | None = Depends(_optional_user)) -> Response:
    """The public directory: search by kind, town, language, target group, age, start within N
    days and free places; every value checked, a wrong one named in the error summary."""
    s = request.app.state
    policy, k = s.policies.offers, s.policies.steering.k
    given = {"art": art, "ort": ort, "sprache": sprache, "zielgruppe": zielgruppe, "alter": alter, "beginn": beginn,
             "plaetze": plaetze}
    values = {name: (v or "").strip() for name, v in given.items()}
    towns = all_towns(db)
    errors: list[dict[str, str]] = []
    kind = values["art"] or None
    if kind is not None and kind not in policy.kinds:
        errors.append({"field": "art", "message": "Bitte wählen Sie eine Angebotsart aus der Liste."})
    town = None
    if values["ort"]:
        town = int(values["ort"]) if values["ort"].isdigit() else None
        if town not in {t.id for t in towns}:
            errors.append({"field": "ort", "message": "Bitte wählen Sie einen Ort aus der Liste."})
    language = values["sprache"] or None
    if language is not None and language not in policy.languages:
        errors.append({"field": "sprache", "message": "Bitte wählen Sie eine Sprache aus der Liste."})
    target = values["zielgruppe"] or None
    if target is not None and target not in RESIDENCE_STATUSES:
        errors.append({"field": "zielgruppe", "message": "Bitte wählen Sie eine Zielgruppe aus der Liste."})
    age = None
    if values["alter"]:
        if values["alter"].isdigit() and int(values["alter"]) <= MAX_AGE:
            age = int(values["alter"])
        else:
            errors.append({"field": "alter", "message": f"Bitte geben Sie das Alter in ganzen Jahren an (0 bis {MAX_AGE})."})
    within = None
    if values["beginn"]:
        if values["beginn"].isdigit() and int(values["beginn"]) <= policy.max_start_within_days:
            within = int(values["beginn"])
        else:
            errors.append({"field": "beginn", "message": "Bitte geben Sie eine ganze Zahl von Tagen zwischen 0 und "
                                                         f"{policy.max_start_within_days} an."})
    if values["plaetze"] not in FREE_CHOICES:
        errors.append({"field": "plaetze", "message": "Bitte wählen Sie eine Angabe zu freien Plätzen aus der Liste."})
    free = {"ja": True, "nein": False}.get(values["plaetze"])
    found = None
    if not errors:
        found = offers.search_public(db, policy, k, s.clock(), kind=kind, town=town, language=language,
                                     target_group=target, age=age, starts_within_days=within, free_places=free)
    practices = offers.public_good_practices(db, None)
    return render(request, "angebote.html", http_status=422 if errors else 200, errors=errors, values=values,
                  offers=found, practices=practices, places=PLACES, texte=texte,
                  kinds=sorted(((key, kd.title) for key, kd in policy.kinds.items()), key=lambda kv: kv[1]),
                  towns=[(t.id, t.name) for t in towns], languages=[(lang, lang) for lang in policy.languages],
                  targets=[(v, texte.value_title("residence_status", v)) for v in RESIDENCE_STATUSES],
                  free_choices=list(FREE_CHOICES.items()), searched=bool(request.url.query))


@router.get("/angebote/{offer_id}")
def public_offer(request: Request, offer_id: uuid.UUID, db: Session = Depends(get_session),
                 user: WebUser | None = Depends(_optional_user)) -> Response:
    """One offer of the public directory, with its contact persons and good-practice examples."""
    s = request.app.state
    offer = offers.public_offer(db, s.policies.offers, s.policies.steering.k, offer_id, s.clock())
    return render(request, "angebot.html", offer=offer, places=PLACES, texte=texte)


# --- offers for a chain step -----------------------------------------------------------------------


def served_steps(request: Request) -> set[str]:
    """The step keys some offer kind serves (the chain page links these to their offers)."""
    return set(request.app.state.policies.offers.step_kinds())


def _matching_page(request: Request, db: Session, user: WebUser, chain_id: uuid.UUID, step_key: str,
                   language: str | None = None, http_status: int = 200,
                   errors: list[dict[str, str]] | None = None) -> Response:
    s = request.app.state
    now = s.clock()
    chain = chains.get_chain(db, s.catalog, user.actor, chain_id, now)
    step = next((st for st in chain.steps if st.key == step_key), None)
    found = offers.matching_offers(db, s.catalog, s.privacy, s.policies.offers, s.policies.steering.k, user.actor,
                                   chain_id, step_key, language, now)
    ended = step is not None and step.state.value in ("completed", "skipped", "cancelled")
    may_book = (user.may(request, "steps.act") and chain.access == "current" and not ended
                and chain.status.value in ("active", "stalled") and step is not None
                and user.actor.organisation_id in (chain.case_management_organisation_id,
                                                   step.assigned_organisation_id))
    return render(request, "angebote_schritt.html", http_status=http_status, errors=errors or [], chain=chain,
                  step=step, found=found, may_book=may_book, places=PLACES, bookings=BOOKING_STATE, texte=texte,
                  kind_titles={key: kd.title for key, kd in s.policies.offers.kinds.items()},
                  titles={o.offer.id: o.offer.title for o in found.offers},
                  languages=[(lang, lang) for lang in s.policies.offers.languages])


@router.get("/ketten/{chain_id}/schritte/{step_key}/angebote")
def matching(request: Request, chain_id: uuid.UUID, step_key: str,
             sprache: str | None = Query(default=None, max_length=50, description="rank this language first"),
             user: WebUser = Depends(need("chains.read")), db: Session = Depends(get_session)) -> Response:
    """The offers matching the step for the person's town and language, best first."""
    language = sprache.strip() if sprache and sprache.strip() else None
    if language is not None and language not in request.app.state.policies.offers.languages:
        language = None
    return _matching_page(request, db, user, chain_id, step_key[:64], language)


@router.post("/ketten/{chain_id}/schritte/{step_key}/angebote/{offer_id}")
def book(request: Request, chain_id: uuid.UUID, step_key: str, offer_id: uuid.UUID,
         user: WebUser = Depends(need("steps.act")), form: FormData = Depends(checked_form),
         db: Session = Depends(get_session)) -> Response:
    """Refer the person to the offer or enrol them (a place taken, in the step's transaction)."""
    s = request.app.state
    step_key = step_key[:64]
    action = _one(form, "action", 10) or ""
    try:
        version = _one(form, "expected_version", 12)
        body = BookingIn(action=action, expected_version=int(version) if version and version.isdigit() else None)
        offers.book_offer(db, s.catalog, s.policies.offers, user.actor, chain_id, step_key, offer_id, body, s.clock())
    except ValidationError:
        return _matching_page(request, db, user, chain_id, step_key, http_status=422, errors=[
            {"field": "", "message": "Bitte wählen Sie „Vermitteln“ oder „Anmelden“."}])
    except Problem as exc:
        if exc.status in (403, 404, 423) and exc.slug != "wrong-organisation":
            raise
        message = BOOKING_REFUSALS.get(exc.slug, exc.detail)
        return _matching_page(request, db, user, chain_id, step_key, http_status=exc.status,
                              errors=[{"field": f"angebot-{offer_id}", "message": message}])
    return redirect(f"{PREFIX}/ketten/{chain_id}/schritte/{step_key}/angebote",
                    "angemeldet_kurs" if action == "enrol" else "vermittelt")


# --- the Sprachenpass ------------------------------------------------------------------------------


def sprachenpass_context(request: Request, db: Session, user: WebUser, person_id: uuid.UUID) -> dict[str, Any]:
    """The Sprachenpass as the user may read it (withheld with the reason otherwise) and, for a
    course provider, its courses for the entry form. Called by the person page."""
    s = request.app.state
    record = languagepass.read_pass(db, s.privacy, user.actor, person_id, None, s.clock())
    courses: list[tuple[str, str]] = []
    if user.may(request, "languagepass.write"):
        course_kinds = {key for key, kd in s.policies.offers.kinds.items() if kd.course}
        if user.may(request, "offers.manage"):
            managed = offers.list_managed(db, s.policies.offers, s.policies.steering.k, user.actor)
            courses = [(str(o.id), o.title) for o in managed
                       if o.offer_kind in course_kinds and o.provider_organisation_id == user.actor.organisation_id]
    return {"sprachenpass": record, "sp_courses": courses, "sp_skills": [(k, lv.SKILL_TITLES[k]) for k in lv.SKILLS],
            "sp_levels": [(v, v) for v in lv.CEFR], "sp_exams": [(e, "andere" if e == "other" else e) for e in EXAMS],
            "sp_may_write": user.may(request, "languagepass.write")}


@router.get("/personen/{person_id}/sprachenpass")
def printable(request: Request, person_id: uuid.UUID, user: WebUser = Depends(need("persons.read")),
              db: Session = Depends(get_session)) -> Response:
    """The printable Sprachenpass (the person's copy), as ``GET /persons/{id}/language-pass.html``
    prints it; the stylesheet comes from this server (the pages' CSP allows no inline style)."""
    s = request.app.state
    now = s.clock()
    record = languagepass.read_pass(db, s.privacy, user.actor, person_id, None, now)
    page = languagepass.render_html(record, now.astimezone(LOCAL_TIMEZONE).date(),
                                    stylesheet=f"{PREFIX}/sprachenpass.css")
    return Response(page, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})


@router.get("/sprachenpass.css")
def printable_style() -> Response:
    return Response(languagepass.PRINT_STYLE, media_type="text/css; charset=utf-8")


ENTRY_TITLES = {"offer_id": "Kurs aus Ihren Angeboten", "course_title": "Kurstitel", "language": "Sprache",
                "from_date": "Beginn", "to_date": "Ende", "hours": "Unterrichtseinheiten", "levels": "Niveaus",
                "exam": "Prüfung", "level": "Niveau des Zertifikats", "date": "Datum des Zertifikats",
                "evidence_reference": "Nachweis (Ablageort)", "title": "Titel des Zertifikats"}


# Fields of EntryIn (and its certificate) -> the form's controls.
FORM_FIELDS = {"exam": "cert_exam", "title": "cert_title", "level": "cert_level", "date": "cert_date",
               "evidence_reference": "cert_evidence", **{k: f"level_{k}" for k in lv.SKILLS}}


def _day(form: FormData, name: str, errors: list[dict[str, str]]) -> str | None:
    value = _one(form, name, 20)
    if value is None:
        return None
    iso = texte.parse_date(value)
    if iso is None:
        errors.append({"field": f"sp-{name}", "message": f"Bitte geben Sie „{ENTRY_TITLES.get(name, name)}“ als "
                                                         "TT.MM.JJJJ an."})
    return iso


@router.post("/personen/{person_id}/sprachenpass")
def add_entry(request: Request, person_id: uuid.UUID, user: WebUser = Depends(need("languagepass.write")),
              form: FormData = Depends(checked_form), db: Session = Depends(get_session)) -> Response:
    """A course provider adds an entry for a course it ran (levels per skill, one certificate)."""
    s = request.app.state
    errors: list[dict[str, str]] = []
    levels = {k: v for k in lv.SKILLS if (v := _one(form, f"level_{k}", 4))}
    certificates = []
    if _one(form, "cert_exam"):
        certificates.append({"exam": _one(form, "cert_exam", 20), "title": _one(form, "cert_title", 200) or "",
                             "level": _one(form, "cert_level", 4), "date": _day(form, "cert_date", errors),
                             "evidence_reference": _one(form, "cert_evidence", 200) or ""})
    doc = {"offer_id": _one(form, "offer_id", 40), "course_title": _one(form, "course_title", 200) or "",
           "language": _one(form, "language", 50) or "Deutsch", "from_date": _day(form, "from_date", errors),
           "to_date": _day(form, "to_date", errors), "hours": _one(form, "hours", 6), "levels": levels,
           "certificates": certificates}
    if not errors:
        try:
            body = EntryIn(**{k: v for k, v in doc.items() if v is not None})
            languagepass.add_entry(db, s.privacy, user.actor, person_id, body, s.clock())
            return redirect(f"{PREFIX}/personen/{person_id}", "sprachenpass")
        except ValidationError as exc:
            errors = german_errors(exc, ENTRY_TITLES)
        except Problem as exc:
            if exc.status in (404, 423):
                raise
            errors = german_errors(exc, ENTRY_TITLES)
    for e in errors:
        if e["field"] and not e["field"].startswith("sp-"):
            e["field"] = "sp-" + FORM_FIELDS.get(e["field"], e["field"])
    return person_page_with_errors(request, person_id, user, db, errors,
                                   sp_values={k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"})
