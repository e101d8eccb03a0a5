"""API shapes for Fallkonferenzen."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from casemgmt.validation import DbId, FilledText, IsoDate, Key

Phase = Literal["planned", "case_phase", "structural_phase", "closed"]
Level = Literal["staff", "organisation", "intermunicipal"]
Weather = Literal["sonne", "wolke", "gewitter", "wind"]


class ConferenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: FilledText = Field(min_length=1, max_length=200)
    scheduled_at: datetime
    jurisdiction_id: DbId
    participant_organisation_ids: list[DbId] = Field(default_factory=list, max_length=50,
                                                     description="Besides the moderator's organisation.")


class ParticipantsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    organisation_ids: list[DbId] = Field(min_length=1, max_length=50)


class PhaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phase: Phase
    expected_version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class CaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chain_id: uuid.UUID


class AgreedStepIn(BaseModel):
    """A step the conference adds to the case's chain (not to its template)."""

    model_config = ConfigDict(extra="forbid")

    title: FilledText = Field(min_length=1, max_length=200, description=(
        "What is to be done, as the chain shows it. Kept in the chain's history for good, so it "
        "must not name the person or carry other personal data (checked)."))
    requires: Key | None = Field(default=None, description=(
        "A step of the chain that must have ended (completed or skipped) before this one is ready; "
        "without it the step is ready at once."))


class AgreementIn(BaseModel):
    """An action item for one case; with ``step_key`` the step is handed over to the owner, with
    ``add_step`` a new step owned by the owner and due on ``due_date`` is added to the chain."""

    model_config = ConfigDict(extra="forbid")

    conference_case_id: DbId
    text: FilledText = Field(min_length=1, max_length=2000)
    owner_organisation_id: DbId
    due_date: IsoDate
    step_key: Key | None = Field(default=None, description="Hand this step of the case's chain to the owner.")
    add_step: AgreedStepIn | None = Field(default=None, description=(
        "Add a step to the case's chain: the owner organisation does it (it is assigned to it "
        "when ready), due at the end of `due_date`."))

    @model_validator(mode="after")
    def _one_kind_of_step(self) -> AgreementIn:
        if self.step_key is not None and self.add_step is not None:
            raise ValueError("an agreement hands over an existing step (step_key) or adds one (add_step), not both")
        return self


class FindingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    barrier_category: Key
    field_of_action: Key
    organisation_kinds: list[Key] = Field(min_length=1, max_length=20)
    level: Level
    weather: Weather
    text: FilledText = Field(min_length=1, max_length=2000)
    conference_case_ids: list[DbId] = Field(min_length=1, max_length=200)


class VoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dots: int = Field(ge=0, le=20, description="0 takes the dots back.")


class ParticipantOut(BaseModel):
    organisation_id: int
    name: str
    kind: str


class CaseOut(BaseModel):
    id: int
    chain_id: uuid.UUID
    person_id: uuid.UUID
    legal_bases: dict[str, str]
    added_at: datetime


class AgreementOut(BaseModel):
    id: uuid.UUID
    conference_case_id: int
    text: str | None = Field(description="Shown to participants when they read the conference (audited); "
                                         "not echoed by changes.")
    owner_organisation_id: int
    due_date: IsoDate
    step_key: str | None
    handover_id: uuid.UUID | None
    added_step_key: str | None = Field(default=None, description="The step this agreement added to the chain.")
    state: str


class FindingOut(BaseModel):
    """A finding as it may leave the conference: no links to cases, only their number."""

    id: uuid.UUID
    conference_id: uuid.UUID
    barrier_category: str
    field_of_action: str
    organisation_kinds: list[str]
    level: Level
    weather: Weather
    text: str
    case_count: int | None = Field(description="Cases behind the finding; outside the conference "
                                               "null when fewer than k (the report's threshold).")
    dots: int
    proposal_id: uuid.UUID | None
    created_at: datetime


class ConferenceOut(BaseModel):
    id: uuid.UUID
    title: str
    scheduled_at: datetime
    jurisdiction_id: int
    moderator_organisation_id: int
    moderator_user: str
    phase: Phase
    version: int
    participants: list[ParticipantOut]
    cases: list[CaseOut]
    agreements: list[AgreementOut]
    findings: list[FindingOut]
    my_dots_left: int


class ConferenceSummary(BaseModel):
    id: uuid.UUID
    title: str
    scheduled_at: datetime
    jurisdiction_id: int
    phase: Phase
    case_count: int
    finding_count: int
