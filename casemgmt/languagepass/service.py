"""Sprachenpass use cases. Each public function is one transaction.

An entry is personal data of the category ``language``: it is written only with a legal basis to
write that category (the decision point, as for every field), encrypted with the person's data
key, and read only with a basis to read it; a caller without one gets the entries withheld with
the reason, and the refusal is audited. Entries are written by the organisation that ran the
course (its own offer, or a course it names), while it is involved with the person or once it
has enrolled the person in one of its offers. Writing an entry derives the German level on the
person record (casemgmt.languagepass.levels) and raises it when the entries show more.
"""

from __future__ import annotations

import html
import json
import uuid
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemgmt.chains.engine import Actor
from casemgmt.database import unit_of_work
from casemgmt.involvement.scope import Access
from casemgmt.jurisdictions.models import Organisation
from casemgmt.languagepass import CATEGORY, ENTITY
from casemgmt.languagepass import levels as lv
from casemgmt.languagepass.models import LanguagePassEntry
from casemgmt.languagepass.schemas import CertificateOut, EntryIn, EntryOut, LanguagePassOut
from casemgmt.offers.models import Offer, OfferBooking
from casemgmt.persons.models import Person
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.crypto import decrypt_field, encrypt_field
from casemgmt.privacy.models import PersonField
from casemgmt.privacy.service import (
    Privacy,
    decide_category,
    deny_and_raise,
    person_access,
    person_data_key,
    person_data_key_for_writing,
    person_in_scope,
    resolve_purpose,
    write_audit,
    write_fields,
)
from casemgmt.problems import NoLegalBasis, NotFound, Problem, ValidationFailed, WrongOrganisation
from casemgmt.rights.gate import refuse_unless_active

def _aad(entry_id: uuid.UUID) -> str:
    return f"language-pass:{entry_id}"


def _audit(actor: Actor, person_id: uuid.UUID, action: str, subtype: str, *, entity_id: str | None = None,
           basis: str | None = None, purpose: str | None = None, outcome: str | None = None,
           detail: str | None = None) -> AuditEntry:
    extra = {"outcome": outcome} if outcome else {}
    return AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action=action,
                      subtype=subtype, entity_type=ENTITY, entity_id=entity_id or str(person_id), person_id=person_id,
                      fields=(ENTITY,), legal_bases={ENTITY: basis} if basis else {}, purpose=purpose,
                      detail=detail, **extra)


def _ran_course_for(session: Session, actor: Actor, person_id: uuid.UUID) -> bool:
    """The actor's organisation enrolled the person in one of its own offers."""
    return session.scalar(select(OfferBooking.id).join(Offer, Offer.id == OfferBooking.offer_id).where(
        OfferBooking.person_id == person_id, OfferBooking.state == "enrolled",
        Offer.provider_organisation_id == actor.organisation_id).limit(1)) is not None


def _writable_person(session: Session, actor: Actor, person_id: uuid.UUID) -> Person:
    """The person, for an organisation involved now or one that ran a course the person was
    enrolled in (a provider writes the entry when the course ended, after its step)."""
    try:
        return person_in_scope(session, actor, person_id)
    except Problem as exc:
        if exc.status not in (403, 404) or not _ran_course_for(session, actor, person_id):
            raise
    person = session.get(Person, person_id)
    if person is None:
        raise NotFound(f"no person {person_id}", resource="person", id=str(person_id))
    refuse_unless_active(person.processing, person.id)
    return person


def _entries(session: Session, privacy: Privacy, person_id: uuid.UUID,
             organisation_id: int | None = None) -> list[tuple[LanguagePassEntry, dict]]:
    stmt = select(LanguagePassEntry).where(LanguagePassEntry.person_id == person_id)
    if organisation_id is not None:
        stmt = stmt.where(LanguagePassEntry.organisation_id == organisation_id)
    rows = session.scalars(stmt.order_by(LanguagePassEntry.recorded_at, LanguagePassEntry.id)).all()
    if not rows:
        return []
    key = person_data_key(session, privacy, person_id)
    return [(r, json.loads(decrypt_field(key, person_id, _aad(r.id), r.ciphertext))) for r in rows]


def _shown(doc: dict) -> lv.Shown:
    return lv.Shown(doc["language"], doc.get("levels", {}), [c["level"] for c in doc.get("certificates", [])])


def _entry_out(row: LanguagePassEntry, doc: dict, provider: str) -> EntryOut:
    return EntryOut(
        id=row.id, organisation_id=row.organisation_id, provider=provider,
        offer_id=uuid.UUID(doc["offer_id"]) if doc.get("offer_id") else None, course_title=doc["course_title"],
        language=doc["language"], from_date=date.fromisoformat(doc["from_date"]),
        to_date=date.fromisoformat(doc["to_date"]) if doc.get("to_date") else None, hours=doc.get("hours"),
        levels=doc.get("levels", {}), certificates=[CertificateOut(**c) for c in doc.get("certificates", [])],
        recorded_at=row.recorded_at)


def _provider_names(session: Session, ids) -> dict[int, str]:
    wanted = set(ids)
    if not wanted:
        return {}
    return dict(session.execute(select(Organisation.id, Organisation.name).where(Organisation.id.in_(wanted))).all())


def person_entries(session: Session, privacy: Privacy, person_id: uuid.UUID) -> list[EntryOut]:
    """All entries of the person, decrypted with the person's key, for the data protection
    officer's reports to the person (access report, portable copy). The caller has decided the
    basis (the person's own request) and audits the read."""
    entries = _entries(session, privacy, person_id)
    names = _provider_names(session, (r.organisation_id for r, _ in entries))
    return [_entry_out(r, d, names.get(r.organisation_id, "")) for r, d in entries]


def _current_level(session: Session, privacy: Privacy, person_id: uuid.UUID) -> str | None:
    blob = session.scalar(select(PersonField.ciphertext).where(PersonField.person_id == person_id,
                                                                PersonField.field == "german_level"))
    if blob is None:
        return None
    return decrypt_field(person_data_key(session, privacy, person_id), person_id, "german_level", blob)


def add_entry(session: Session, privacy: Privacy, actor: Actor, person_id: uuid.UUID, body: EntryIn,
              now: datetime) -> LanguagePassOut:
    """Write one entry (decided like a field of the category ``language``), derive the German
    level, and answer with the Sprachenpass as the writer may read it."""
    with unit_of_work(session):
        person = _writable_person(session, actor, person_id)
        purpose = resolve_purpose(privacy, actor, body.purpose)
        decision = decide_category(session, privacy, actor, person, purpose, CATEGORY, "write", now)
        if not decision.permit:
            deny_and_raise(session, _audit(actor, person.id, "C", "language_pass.write", purpose=purpose,
                                           outcome="denied", detail="write refused: no legal basis"), now,
                           NoLegalBasis(f"no legal basis to write the Sprachenpass ({CATEGORY})",
                                        fields=[{"field": ENTITY, "category": CATEGORY, "reason": decision.reason}]))
        title = body.course_title.strip()
        if body.offer_id is not None:
            offer = session.get(Offer, body.offer_id)
            if offer is None:
                raise ValidationFailed(f"offer_id: no offer {body.offer_id}", errors=[
                    {"field": "offer_id", "message": f"no offer {body.offer_id}", "type": "value_error"}])
            if offer.provider_organisation_id != actor.organisation_id:
                raise WrongOrganisation("providers write entries for the courses they ran; this offer is "
                                        "another organisation's", owner="provider")
            title = title or offer.title
        doc = {"offer_id": str(body.offer_id) if body.offer_id else None, "course_title": title,
               "language": body.language, "from_date": body.from_date.isoformat(),
               "to_date": body.to_date.isoformat() if body.to_date else None, "hours": body.hours,
               "levels": dict(body.levels),
               "certificates": [c.model_dump(mode="json") for c in body.certificates]}
        entry_id = uuid.uuid4()
        key = person_data_key_for_writing(session, privacy, person.id, now)
        session.add(LanguagePassEntry(id=entry_id, person_id=person.id, organisation_id=actor.organisation_id,
                                      recorded_by_user=actor.user_id, recorded_at=now,
                                      ciphertext=encrypt_field(key, person.id, _aad(entry_id), json.dumps(doc))))
        session.flush()
        write_audit(session, [_audit(actor, person.id, "C", "language_pass.write", entity_id=str(entry_id),
                                     basis=decision.basis, purpose=purpose)], now)
        all_entries = _entries(session, privacy, person.id)
        derived = lv.derived_german_level(_shown(d) for _, d in all_entries)
        current = _current_level(session, privacy, person.id)
        if derived is not None and (current in (None, "none") or lv.rank_of(derived) > lv.rank_of(current)):
            write_fields(session, privacy, actor, person, {"german_level": derived}, purpose, now,
                         "language_pass.derived")
        out = _pass_out(session, privacy, actor, person, purpose, Access.current, now)
    return out


def _pass_out(session: Session, privacy: Privacy, actor: Actor, person: Person, purpose: str, access: Access,
              now: datetime) -> LanguagePassOut:
    decision = decide_category(session, privacy, actor, person, purpose, CATEGORY, "read", now)
    if not decision.permit:
        write_audit(session, [_audit(actor, person.id, "R", "language_pass.read", purpose=purpose, outcome="denied",
                                     detail="withheld: no legal basis")], now)
        return LanguagePassOut(person_id=person.id, german_level=None, entries=[], legal_basis=None,
                               redacted=decision.reason)
    own = actor.organisation_id if access is Access.former else None
    entries = _entries(session, privacy, person.id, own)
    names = _provider_names(session, (r.organisation_id for r, _ in entries))
    write_audit(session, [_audit(actor, person.id, "R", "language_pass.read", basis=decision.basis, purpose=purpose,
                                 detail=f"{len(entries)} entries")], now)
    return LanguagePassOut(
        person_id=person.id, german_level=lv.derived_german_level(_shown(d) for _, d in entries),
        entries=[_entry_out(r, d, names.get(r.organisation_id, "")) for r, d in entries],
        legal_basis=decision.basis,
        redacted=None if access is Access.current else "your organisation's part in this case has ended: "
                                                       "only the entries it wrote itself")


def read_pass(session: Session, privacy: Privacy, actor: Actor, person_id: uuid.UUID, purpose: str | None,
              now: datetime) -> LanguagePassOut:
    with unit_of_work(session):
        person, access = person_access(session, actor, person_id)
        out = _pass_out(session, privacy, actor, person, resolve_purpose(privacy, actor, purpose), access, now)
    return out


SKILL_ORDER = lv.SKILLS


PRINT_STYLE = """body { font-family: sans-serif; margin: 2em; color: #111; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #888; padding: .4em; text-align: left; vertical-align: top; }
th { background: #eee; }
.hinweis { font-size: .9em; color: #444; }
@media print { body { margin: 1cm; } }
"""


def render_html(record: LanguagePassOut, today: date, stylesheet: str | None = None) -> str:
    """The printable Sprachenpass in German (the person's copy). Names no other person and no
    staff member; the person's name is not printed either (the case manager hands it over).
    ``stylesheet``: link this address for the styles instead of inlining them (the web pages'
    Content-Security-Policy allows no inline style)."""
    e = html.escape
    style = (f'<link rel="stylesheet" href="{e(stylesheet)}">' if stylesheet
             else f"<style>\n{PRINT_STYLE}</style>")
    rows = []
    for entry in record.entries:
        skills = ", ".join(f"{lv.SKILL_TITLES[s]} {entry.levels[s]}" for s in SKILL_ORDER if s in entry.levels) or "–"
        certs = "<br>".join(
            f"{e(c.title or c.exam)} ({e(c.level)}), {c.date.strftime('%d.%m.%Y')}" for c in entry.certificates) or "–"
        period = entry.from_date.strftime("%d.%m.%Y") + (
            f" – {entry.to_date.strftime('%d.%m.%Y')}" if entry.to_date else " – laufend")
        hours = f"{entry.hours} UE" if entry.hours is not None else "–"
        rows.append(f"<tr><td>{e(entry.course_title)}<br><small>{e(entry.language)}</small></td>"
                    f"<td>{e(entry.provider)}</td><td>{period}</td><td>{hours}</td><td>{e(skills)}</td>"
                    f"<td>{certs}</td></tr>")
    body = "\n".join(rows) if rows else '<tr><td colspan="6">Noch keine Einträge.</td></tr>'
    level = record.german_level or "noch nicht festgestellt"
    withheld = ("<p class=\"hinweis\">Dieser Ausdruck zeigt nur die Einträge, die die ausdruckende Stelle sehen "
                "darf. Eine vollständige Auskunft über alle Ihre Daten erhalten Sie bei der oder dem "
                "Datenschutzbeauftragten (Art. 15 DSGVO).</p>" if record.redacted else "")
    return f"""<!DOCTYPE html>
<html lang="de"><head><meta charset="utf-8"><title>Sprachenpass</title>
{style}</head>
<body>
<h1>Sprachenpass</h1>
<p>Ihre Sprachkurse, erreichten Niveaus und Zertifikate, wie sie bei uns eingetragen sind.
Sie haben das Recht auf diese Kopie (Art. 15 DSGVO). Zeigen Sie den Pass bei der nächsten
Stelle vor, damit dort niemand wieder bei null anfängt.</p>
<p><strong>Deutschniveau nach dem Gemeinsamen Europäischen Referenzrahmen (GER): {e(level)}</strong></p>
{withheld}
<table>
<thead><tr><th>Kurs</th><th>Träger</th><th>Zeitraum</th><th>Umfang</th><th>Erreichte Niveaus</th><th>Zertifikate</th></tr></thead>
<tbody>
{body}
</tbody>
</table>
<p class="hinweis">Stand: {today.strftime('%d.%m.%Y')}. Niveaus: A1/A2 elementare, B1/B2 selbständige,
C1/C2 kompetente Sprachverwendung. UE = Unterrichtseinheiten.</p>
</body></html>
"""
