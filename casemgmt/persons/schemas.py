"""API shapes for persons."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.validation import DbId
from casemgmt.persons.models import BenefitRegime, Bleibeperspektive, ResidenceStatus


class PersonCreate(BaseModel):
    """Register a person. Only pseudonymous attributes for now; no names are stored."""

    model_config = ConfigDict(extra="forbid")

    residence_status: ResidenceStatus
    bleibeperspektive: Bleibeperspektive
    benefit_regime: BenefitRegime
    lead_jurisdiction_id: DbId | None = Field(
        default=None,
        description="Where the person lives; defaults to the jurisdiction of your organisation.",
    )


class PersonOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    residence_status: ResidenceStatus
    bleibeperspektive: Bleibeperspektive
    benefit_regime: BenefitRegime
    lead_jurisdiction_id: int
    created_by_organisation_id: int
    created_at: datetime
