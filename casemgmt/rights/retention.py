"""Retention (GDPR Art. 5(1)(e)): each category is deleted when its period after its start event
has passed (``policies/data.yaml``); when every category has passed, the person is erased.

``run`` works in batches of persons, each batch one transaction, claimed in id order with
``FOR UPDATE SKIP LOCKED`` (as the escalation), so several runs never touch the same person and a
crashed run loses only its batch; what was deleted is not there the next time, so running again
changes nothing. Persons under a legal hold, restricted or erased are left alone. ``due`` tells
what will be deleted in the next days, per category, so nothing disappears by surprise.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from casemgmt.database import unit_of_work
from casemgmt.persons.models import Person
from casemgmt.privacy.service import Privacy
from casemgmt.rights import erasure, periods
from casemgmt.rights.models import LegalHold

SYSTEM_USER = "system:retention"
persons_t = Person.__table__
holds_t = LegalHold.__table__


def _candidates(after: uuid.UUID | None, batch: int):
    held = exists().where(holds_t.c.person_id == persons_t.c.id, holds_t.c.lifted_at.is_(None))
    stmt = select(persons_t.c.id).where(persons_t.c.processing == "active", ~held)
    if after is not None:
        stmt = stmt.where(persons_t.c.id > after)
    return stmt.order_by(persons_t.c.id).limit(batch)


@dataclass
class PersonPlan:
    person_id: uuid.UUID
    categories: set[str]  # due now and holding data
    erase: bool  # every category has passed


@dataclass
class RetentionReport:
    persons_checked: int = 0
    categories_deleted: Counter = field(default_factory=Counter)  # category -> persons
    fields_deleted: int = 0
    erased: list[uuid.UUID] = field(default_factory=list)
    batches: int = 0

    def describe(self, dry_run: bool = False) -> str:
        verb = "would delete" if dry_run else "deleted"
        cats = ", ".join(f"{c} {n}" for c, n in sorted(self.categories_deleted.items())) or "nothing"
        return (f"checked {self.persons_checked} persons in {self.batches} batches; {verb} per category "
                f"(persons): {cats}; {'would erase' if dry_run else 'erased'} {len(self.erased)} persons")


def plan_batch(session: Session, privacy: Privacy, conference_category: str, person_ids: list[uuid.UUID],
               now: datetime) -> list[PersonPlan]:
    """What is due for these persons now (categories that hold data and whose period passed)."""
    policy = privacy.policy
    clocks = erasure.clocks_of(session, person_ids)
    plans = []
    persons = {p.id: p for p in session.scalars(select(Person).where(Person.id.in_(person_ids)))}
    for pid in person_ids:
        due = erasure.due_categories(policy, clocks[pid], now)
        if not due:
            continue
        if due == set(policy.categories):
            plans.append(PersonPlan(pid, due, True))
            continue
        held = erasure.held_categories(session, policy, conference_category, persons[pid])
        if due & held:
            plans.append(PersonPlan(pid, due & held, False))
    return plans


def run(factory, privacy: Privacy, conference_category: str, now: datetime, *, dry_run: bool = False,
        batch: int = 500, on_erased=None) -> RetentionReport:
    """Delete what is due, batch by batch. ``on_erased`` receives the tombstones of each committed
    batch (to append them to the tombstone file)."""
    from casemgmt.rights.tombstones import Tombstone

    report = RetentionReport()
    after: uuid.UUID | None = None
    with factory() as session:
        while True:
            tombstones = []
            with unit_of_work(session):
                stmt = _candidates(after, batch)
                if session.get_bind().dialect.name == "postgresql":
                    stmt = stmt.with_for_update(of=persons_t, skip_locked=True)
                ids = list(session.scalars(stmt))
                if not ids:
                    break
                after = ids[-1]
                report.persons_checked += len(ids)
                report.batches += 1
                for plan in plan_batch(session, privacy, conference_category, ids, now):
                    for c in plan.categories:
                        report.categories_deleted[c] += 1
                    if plan.erase:
                        report.erased.append(plan.person_id)
                    if dry_run:
                        continue
                    person = session.get(Person, plan.person_id)
                    if plan.erase:
                        t = erasure.erase(session, privacy, person, now, cause="retention", request_id=None,
                                          agent_user=SYSTEM_USER, agent_organisation_id=None,
                                          detail="every category's retention period has passed")
                        tombstones.append(Tombstone(person.id, t.erased_at, t.cause, None))
                    else:
                        report.fields_deleted += len(erasure.delete_categories(
                            session, privacy, conference_category, person, plan.categories, now, SYSTEM_USER))
                if dry_run:
                    session.rollback()
            if tombstones and on_erased is not None:
                on_erased(tombstones)
            if len(ids) < batch:
                break
    return report


def upcoming(session: Session, privacy: Privacy, conference_category: str, now: datetime, days: int,
             person_clause=None) -> dict:
    """What will be deleted from today until ``days`` ahead, per category (persons and the day),
    and the persons it stops at (legal hold, restriction)."""
    policy = privacy.policy
    today = periods.local_date(now)
    until = today + timedelta(days=days)
    stmt = select(Person).where(Person.processing != "erased")
    if person_clause is not None:
        stmt = stmt.where(person_clause)
    persons = list(session.scalars(stmt.order_by(Person.id)))
    held_ids = set(session.scalars(select(holds_t.c.person_id).where(holds_t.c.lifted_at.is_(None))))
    per_category: Counter = Counter()
    entries = []
    for i in range(0, len(persons), 1000):
        chunk = persons[i:i + 1000]
        clocks = erasure.clocks_of(session, [p.id for p in chunk])
        for p in chunk:
            dues = erasure.due_dates(policy, clocks[p.id])
            soon = {c: d for c, d in dues.items() if d is not None and d <= until}
            if not soon:
                continue
            held = erasure.held_categories(session, policy, conference_category, p)
            everything = set(soon) == set(policy.categories)
            relevant = {c: d for c, d in soon.items() if c in held or everything}
            if not relevant:
                continue
            stopped = "legal_hold" if p.id in held_ids else ("restricted" if p.processing == "restricted" else None)
            for c, d in relevant.items():
                if stopped is None:
                    per_category[c] += 1
                entries.append({"person_id": str(p.id), "category": c, "due": d.isoformat(),
                                "overdue": d <= today, "erasure": everything, "stopped_by": stopped})
    return {
        "from": today.isoformat(), "until": until.isoformat(),
        "categories": [{"category": c, "title": policy.categories[c].title, "persons": per_category.get(c, 0),
                        "rule": policy.categories[c].retention.describe(),
                        "source": policy.categories[c].retention.source}
                       for c in policy.categories],
        "persons": sorted(entries, key=lambda e: (e["due"], e["person_id"], e["category"])),
    }


def date_of(value: str) -> date:
    return date.fromisoformat(value)
