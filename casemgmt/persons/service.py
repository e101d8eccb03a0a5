"""The list of persons in the caller's record scope. One call, one transaction; every person on
the page leaves through the exit point (casemgmt.privacy.service.disclose), which audits it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import Session

from casemgmt.chains import engine as eng
from casemgmt.chains import service as chains
from casemgmt.chains.engine import Actor
from casemgmt.database import unit_of_work
from casemgmt.involvement.scope import listed_chain_ids
from casemgmt.jurisdictions.models import Jurisdiction
from casemgmt.persons.models import Person
from casemgmt.persons.schemas import CaseStatus, PersonPage
from casemgmt.privacy.service import Privacy, disclose, resolve_purpose, scope_clause
from casemgmt.problems import NotFound
from casemgmt.rights.gate import ACTIVE

persons_t = Person.__table__


@dataclass(frozen=True)
class PersonFilters:
    jurisdiction_id: int | None = None  # the town (or any jurisdiction) and those below it
    status: CaseStatus | None = None
    # Only these persons (e.g. those of the chains on a screen's page); the scope still applies.
    person_ids: frozenset[uuid.UUID] | None = None


def _status_clause(actor: Actor, status: CaseStatus, now: datetime):
    """The person has a chain in the status among the chains the actor's organisation lists;
    ``no_chain``: none of those. Chains the organisation does not list say nothing here."""
    theirs = and_(chains.chains_t.c.person_id == persons_t.c.id,
                  chains.chains_t.c.id.in_(listed_chain_ids(actor.organisation_id)))
    if status is CaseStatus.no_chain:
        return ~exists().where(theirs)
    return exists().where(theirs, chains.status_clause(eng.ChainStatus(status.value), now))


def list_persons(session: Session, privacy: Privacy, actor: Actor, filters: PersonFilters, limit: int,
                 cursor: str | None, purpose: str | None, now: datetime,
                 only: tuple[str, ...] | None = None) -> PersonPage:
    """Persons the actor's organisation is involved with now, newest registration first,
    keyset-paginated. A restricted or erased person is stored, not listed (casemgmt.rights).
    ``only``: decide, show and audit just these fields (a screen that shows only the names)."""
    with unit_of_work(session):
        purpose = resolve_purpose(privacy, actor, purpose)
        conds = [scope_clause(actor), persons_t.c.processing == ACTIVE]
        if filters.jurisdiction_id is not None:
            area = session.get(Jurisdiction, filters.jurisdiction_id)
            if area is None:
                raise NotFound(f"no jurisdiction {filters.jurisdiction_id}", resource="jurisdiction",
                               id=str(filters.jurisdiction_id))
            inside = select(Jurisdiction.id).where(Jurisdiction.path.startswith(area.path))
            conds.append(persons_t.c.lead_jurisdiction_id.in_(inside))
        if filters.person_ids is not None:
            conds.append(persons_t.c.id.in_(filters.person_ids))
        if filters.status is not None:
            conds.append(_status_clause(actor, filters.status, now))
        if cursor:
            at, last_id = chains.decode_cursor(cursor)
            conds.append(or_(persons_t.c.created_at < at,
                             and_(persons_t.c.created_at == at, persons_t.c.id < last_id)))
        page = list(session.scalars(
            select(Person).where(*conds).order_by(Person.created_at.desc(), Person.id.desc()).limit(limit + 1)))
        more = len(page) > limit
        page = page[:limit]
        items = [disclose(session, privacy, actor, p, purpose, now, subtype="person.list", only=only) for p in page]
        next_cursor = chains.encode_cursor(page[-1].created_at, page[-1].id) if more else None
    return PersonPage(items=items, next_cursor=next_cursor)

