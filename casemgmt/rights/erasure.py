"""Erasure by key destruction, and deleting single categories when their retention ends.

``erase`` destroys the person's data key in the same transaction as it writes the tombstone:
every field, handover package and conference agreement of the person was encrypted with that key,
so they are unreadable from that moment, and are deleted in the same transaction; the blind index
and the name-token digests go too, and so do the residence attributes kept in plain columns.
What remains is pseudonymous and holds no personal value: the person's random id and town (the
steering report groups by it), chain and step states, events, handover states and waiting times,
conference cases and findings, consents as evidence of what was lawful (they name categories and
organisations, no values), and the audit trail, which never held a personal value.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from casemgmt.chains.engine import ChainLifecycle
from casemgmt.chains.models import Chain
from casemgmt.conferences.models import ConferenceAgreement, ConferenceCase
from casemgmt.handovers.models import Handover
from casemgmt.persons.models import Person
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.crypto import decrypt_field, encrypt_field
from casemgmt.languagepass import CATEGORY as LANGUAGE_PASS_CATEGORY
from casemgmt.languagepass import ENTITY as LANGUAGE_PASS
from casemgmt.languagepass.models import LanguagePassEntry
from casemgmt.privacy.models import Consent, PersonField, PersonKey, PersonNameToken
from casemgmt.privacy.policy import DataPolicy
from casemgmt.privacy.service import PLAIN_FIELDS, Privacy, person_data_key, write_audit
from casemgmt.rights import periods
from casemgmt.rights.models import ErasureTombstone, LegalHold, PersonRestriction

persons_t = Person.__table__
chains_t = Chain.__table__
handovers_t = Handover.__table__
fields_t = PersonField.__table__
agreements_t = ConferenceAgreement.__table__
cases_t = ConferenceCase.__table__
consents_t = Consent.__table__


@dataclass(frozen=True)
class Clocks:
    """When each start event of a person's retention happened; None while a chain is open (no
    clock runs while the case runs)."""

    case_closed: datetime | None
    last_contact: datetime | None


def clocks_of(session: Session, person_ids: list[uuid.UUID]) -> dict[uuid.UUID, Clocks]:
    """The retention clocks of these persons, in a few grouped queries. A person who never had a
    chain counts as closed at the last contact."""
    if not person_ids:
        return {}
    created = dict(session.execute(select(persons_t.c.id, persons_t.c.created_at)
                                   .where(persons_t.c.id.in_(person_ids))).all())
    chains: dict[uuid.UUID, tuple[int, datetime | None, datetime | None]] = {
        r.person_id: (r.open, r.ended, r.touched) for r in session.execute(
            select(chains_t.c.person_id,
                   func.count().filter(chains_t.c.lifecycle == ChainLifecycle.open.value).label("open"),
                   func.max(func.coalesce(chains_t.c.completed_at, chains_t.c.closed_at)).label("ended"),
                   func.max(chains_t.c.updated_at).label("touched"))
            .where(chains_t.c.person_id.in_(person_ids)).group_by(chains_t.c.person_id))}
    touched: dict[uuid.UUID, list[datetime]] = {p: [t] for p, t in created.items()}
    for table, column in ((fields_t, fields_t.c.updated_at), (handovers_t, handovers_t.c.updated_at),
                          (consents_t, consents_t.c.recorded_at)):
        for pid, at in session.execute(select(table.c.person_id, func.max(column))
                                       .where(table.c.person_id.in_(person_ids)).group_by(table.c.person_id)):
            if at is not None:
                touched[pid].append(at)
    out = {}
    for pid in created:
        open_chains, ended, chain_touched = chains.get(pid, (0, None, None))
        if chain_touched is not None:
            touched[pid].append(chain_touched)
        if open_chains:
            out[pid] = Clocks(None, None)
            continue
        last = max(touched[pid])
        out[pid] = Clocks(ended if ended is not None else last, last)
    return out


def due_dates(policy: DataPolicy, clocks: Clocks) -> dict[str, date | None]:
    """The first day each category is due for deletion (None: its clock has not started)."""
    out: dict[str, date | None] = {}
    for key, category in policy.categories.items():
        rule = category.retention
        assert rule is not None
        start = getattr(clocks, rule.after)
        out[key] = None if start is None else periods.deletion_due(start, rule.years)
    return out


def due_categories(policy: DataPolicy, clocks: Clocks, now: datetime) -> set[str]:
    """Categories whose retention period has passed at ``now``."""
    today = periods.local_date(now)
    return {c for c, day in due_dates(policy, clocks).items() if day is not None and day <= today}


def held_categories(session: Session, policy: DataPolicy, conference_category: str,
                    person: Person) -> set[str]:
    """Categories of which the service holds a value of the person (fields, residence
    attributes, handover packages, conference agreements)."""
    held = {policy.fields[f].category for f in session.scalars(
        select(fields_t.c.field).where(fields_t.c.person_id == person.id)) if f in policy.fields}
    held |= {policy.fields[f].category for f in PLAIN_FIELDS if getattr(person, f) is not None}
    if session.scalar(select(LanguagePassEntry.id).where(LanguagePassEntry.person_id == person.id).limit(1)):
        held.add(LANGUAGE_PASS_CATEGORY)
    for package in session.scalars(select(handovers_t.c.package_fields).where(
            handovers_t.c.person_id == person.id, handovers_t.c.package_ciphertext.is_not(None))):
        held |= {policy.fields[f].category for f in package if f in policy.fields}
    if session.scalar(select(agreements_t.c.id).join(cases_t, cases_t.c.id == agreements_t.c.conference_case_id)
                      .where(cases_t.c.person_id == person.id, agreements_t.c.text_ciphertext.is_not(None))
                      .limit(1)) is not None:
        held.add(conference_category)
    return held


def active_hold(session: Session, person_id: uuid.UUID) -> LegalHold | None:
    return session.scalar(select(LegalHold).where(LegalHold.person_id == person_id, LegalHold.lifted_at.is_(None)))


def erasure_obstacles(session: Session, privacy: Privacy, conference_category: str, person: Person,
                      now: datetime) -> list[dict[str, Any]]:
    """Why the person cannot be erased now (empty: nothing stands against it)."""
    obstacles: list[dict[str, Any]] = []
    hold = active_hold(session, person.id)
    if hold is not None:
        obstacles.append({"kind": "legal_hold", "since": hold.set_at.isoformat(),
                          "message": "a legal hold is set (the data protection officer lifts it)"})
    if session.scalar(select(chains_t.c.id).where(chains_t.c.person_id == person.id,
                                                  chains_t.c.lifecycle == ChainLifecycle.open.value).limit(1)):
        obstacles.append({"kind": "open_chain",
                          "message": "a chain of the person is open: the case management closes it first "
                                     "(reason ended_by_person)"})
    policy = privacy.policy
    clocks = clocks_of(session, [person.id])[person.id]
    dues = due_dates(policy, clocks)
    today = periods.local_date(now)
    for category in sorted(held_categories(session, policy, conference_category, person)):
        rule = policy.categories[category].retention
        if rule is None or not rule.obligation:
            continue
        due = dues[category]
        if due is None or due > today:
            obstacles.append({
                "kind": "retention_obligation", "category": category, "source": rule.source,
                "kept_until": None if due is None else (due - timedelta(days=1)).isoformat(),
                "message": f"{category} must be kept ({rule.describe()}; {rule.source})",
            })
    return obstacles


def erase(session: Session, privacy: Privacy, person: Person, now: datetime, *, cause: str,
          request_id: uuid.UUID | None, agent_user: str, agent_organisation_id: int | None,
          detail: str | None = None) -> ErasureTombstone:
    """Destroy the person's data key and delete what it protected, in the caller's transaction,
    with the tombstone that records it."""
    tombstone = session.get(ErasureTombstone, person.id)
    if tombstone is None:
        tombstone = ErasureTombstone(person_id=person.id, erased_at=now, cause=cause, request_id=request_id)
        session.add(tombstone)
    session.flush()
    destroy(session, person.id, now)
    session.refresh(person)
    write_audit(session, [AuditEntry(
        agent_user=agent_user, agent_organisation_id=agent_organisation_id, action="D",
        subtype="person.erase", entity_type="person", entity_id=str(person.id), person_id=person.id,
        detail=(f"{cause}" + (f", request {request_id}" if request_id else "") + (f": {detail}" if detail else ""))[:2000],
    )], now)
    return tombstone


def destroy(session: Session, person_id: uuid.UUID, now: datetime) -> None:
    """The key destruction itself (also what ``casemgmt erasure replay`` does again)."""
    session.execute(delete(PersonKey).where(PersonKey.person_id == person_id))
    session.execute(delete(fields_t).where(fields_t.c.person_id == person_id))
    session.execute(delete(PersonNameToken).where(PersonNameToken.person_id == person_id))
    session.execute(delete(LanguagePassEntry).where(LanguagePassEntry.person_id == person_id))
    session.execute(update(persons_t).where(persons_t.c.id == person_id).values(
        blind_index=None, residence_status=None, bleibeperspektive=None, benefit_regime=None,
        plain_field_writers={}, processing="erased"))
    session.execute(update(handovers_t).where(handovers_t.c.person_id == person_id).values(
        package_ciphertext=None, benefit_regime_from=None, benefit_regime_to=None))
    case_ids = select(cases_t.c.id).where(cases_t.c.person_id == person_id)
    session.execute(update(agreements_t).where(agreements_t.c.conference_case_id.in_(case_ids))
                    .values(text_ciphertext=None))
    session.execute(update(PersonRestriction).where(PersonRestriction.person_id == person_id,
                                                    PersonRestriction.lifted_at.is_(None))
                    .values(lifted_at=now, lifted_by_user="system:erasure", lift_reason="erased"))


def delete_categories(session: Session, privacy: Privacy, conference_category: str, person: Person,
                      categories: set[str], now: datetime, agent_user: str) -> list[str]:
    """Delete the person's values of ``categories`` (their retention ended); returns the fields
    deleted. Handover packages lose those fields (re-encrypted without them)."""
    policy = privacy.policy
    fields = [f for f, spec in policy.fields.items() if spec.category in categories]
    deleted = list(session.scalars(select(fields_t.c.field).where(fields_t.c.person_id == person.id,
                                                                  fields_t.c.field.in_(fields))))
    session.execute(delete(fields_t).where(fields_t.c.person_id == person.id, fields_t.c.field.in_(fields)))
    plain = {f: None for f in PLAIN_FIELDS if f in fields and getattr(person, f) is not None}
    if plain:
        writers = {k: v for k, v in (person.plain_field_writers or {}).items() if k not in plain}
        session.execute(update(persons_t).where(persons_t.c.id == person.id).values(**plain, plain_field_writers=writers))
        deleted += list(plain)
    if LANGUAGE_PASS_CATEGORY in categories:
        if session.execute(delete(LanguagePassEntry).where(LanguagePassEntry.person_id == person.id)).rowcount:
            deleted.append(LANGUAGE_PASS)
    if "identity" in categories:
        session.execute(update(persons_t).where(persons_t.c.id == person.id).values(blind_index=None))
        session.execute(delete(PersonNameToken).where(PersonNameToken.person_id == person.id))
    packages = session.execute(select(handovers_t.c.id, handovers_t.c.package_fields, handovers_t.c.package_ciphertext)
                               .where(handovers_t.c.person_id == person.id,
                                      handovers_t.c.package_ciphertext.is_not(None))).all()
    key = None
    for h in packages:
        if not set(h.package_fields) & set(fields):
            continue
        key = key or person_data_key(session, privacy, person.id)
        aad = f"handover:{h.id}"
        frozen = decrypt_field(key, person.id, aad, h.package_ciphertext)
        kept = {f: v for f, v in frozen.items() if f not in fields}
        session.execute(update(handovers_t).where(handovers_t.c.id == h.id).values(
            package_fields=sorted(kept), package_ciphertext=encrypt_field(key, person.id, aad, kept) if kept else None))
        deleted += [f for f in frozen if f in fields and f not in deleted]
    if "benefits" in categories:
        session.execute(update(handovers_t).where(handovers_t.c.person_id == person.id)
                        .values(benefit_regime_from=None, benefit_regime_to=None))
    if conference_category in categories:
        case_ids = select(cases_t.c.id).where(cases_t.c.person_id == person.id)
        result = session.execute(update(agreements_t).where(agreements_t.c.conference_case_id.in_(case_ids),
                                                            agreements_t.c.text_ciphertext.is_not(None))
                                 .values(text_ciphertext=None))
        if result.rowcount:
            deleted.append("conference_agreements")
    if deleted:
        write_audit(session, [AuditEntry(
            agent_user=agent_user, agent_organisation_id=None, action="D", subtype="person.retention.delete",
            entity_type="person", entity_id=str(person.id), person_id=person.id,
            fields=tuple(sorted(set(deleted))), detail="retention ended: " + ", ".join(sorted(categories)),
        )], now)
    return deleted


def has_tombstone(session: Session, person_id: uuid.UUID) -> bool:
    return session.scalar(select(func.count()).select_from(ErasureTombstone)
                          .where(ErasureTombstone.person_id == person_id)) > 0


__all__ = ["Clocks", "clocks_of", "due_dates", "due_categories", "held_categories", "erasure_obstacles",
           "erase", "destroy", "delete_categories", "active_hold", "insert"]
