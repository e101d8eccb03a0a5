"""Person use cases."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemgmt.chains.engine import Actor
from casemgmt.jurisdictions.models import Jurisdiction
from casemgmt.persons.models import Person
from casemgmt.persons.schemas import PersonCreate
from casemgmt.problems import NotFound, ValidationFailed, WrongOrganisation


def create_person(session: Session, actor: Actor, data: PersonCreate, now: datetime) -> Person:
    """Register a person living in a jurisdiction the actor's organisation serves."""
    try:
        jurisdiction_id = data.lead_jurisdiction_id
        if jurisdiction_id is None:
            jurisdiction_id = session.scalar(
                select(Jurisdiction.id).where(Jurisdiction.path == actor.jurisdiction_path)
            )
        jurisdiction = session.get(Jurisdiction, jurisdiction_id)
        if jurisdiction is None:
            raise ValidationFailed(
                f"lead_jurisdiction_id: no jurisdiction {jurisdiction_id}",
                errors=[{"field": "body.lead_jurisdiction_id", "message": "no such jurisdiction",
                         "type": "not_found"}],
            )
        if not jurisdiction.path.startswith(actor.jurisdiction_path):
            raise WrongOrganisation(
                f"your organisation does not serve {jurisdiction.name}",
                owner=f"an organisation serving {jurisdiction.name}",
            )
        person = Person(
            id=uuid.uuid4(),
            residence_status=data.residence_status.value,
            bleibeperspektive=data.bleibeperspektive.value,
            benefit_regime=data.benefit_regime.value,
            lead_jurisdiction_id=jurisdiction.id,
            created_by_organisation_id=actor.organisation_id,
            created_at=now,
        )
        session.add(person)
        session.commit()
        return person
    except BaseException:
        session.rollback()
        raise


def get_person(session: Session, person_id: uuid.UUID) -> Person:
    person = session.get(Person, person_id)
    if person is None:
        raise NotFound(f"no person {person_id}", resource="person", id=str(person_id))
    return person
