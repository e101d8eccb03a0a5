"""The one check every route touching a person makes after its record-scope check: erased
persons answer 410 and restricted ones 423 to the organisations that may know them (everybody
else got 404 from the scope check before this is asked)."""

from __future__ import annotations

import uuid

from sqlalchemy import exists, select

from casemgmt.persons.models import Person
from casemgmt.problems import PersonErased, PersonRestricted

persons_t = Person.__table__
ACTIVE = "active"


def refuse_unless_active(processing: str | None, person_id: uuid.UUID | None, *,
                         allow_restricted: bool = False) -> None:
    """410 for an erased person, 423 for a restricted one (unless ``allow_restricted``).

    The 423 names the restriction (GDPR Art. 18) and nothing more: not the reason, not since when,
    not who asked. The organisations that get it are involved in the case and must know that
    they may not process the data (Art. 19 tells the controller to inform the recipients); the
    rest is for the data protection officer."""
    if processing == "erased":
        raise PersonErased("the person's data was erased; only the pseudonymous case history remains",
                           person_id=str(person_id) if person_id else None)
    if processing == "restricted" and not allow_restricted:
        raise PersonRestricted("processing of this person's data is restricted (GDPR Art. 18); ask "
                               "your data protection officer", restriction="GDPR Art. 18",
                               person_id=str(person_id) if person_id else None)


def processing_of(person_column):
    """The processing state of the person in ``person_column`` (a scalar subquery)."""
    return select(persons_t.c.processing).where(persons_t.c.id == person_column).scalar_subquery()


def active_person(person_column):
    """Rows whose person is processed as usual (for listings)."""
    return exists().where(persons_t.c.id == person_column, persons_t.c.processing == ACTIVE)
