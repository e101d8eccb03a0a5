"""API shapes for Fallkonferenzen."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class AgreementIn(BaseModel):
    """An action item for one case; with ``step_key`` the step is handed over to the owner."""

    model_config = ConfigDict(extra="forbid")

    conference_case_id: DbId
    text: FilledText = Field(min_length=1, max_length=2000)
    owner_organisation_id: DbId
    due_date: IsoDate
    step_key: Key | None = Field(default=None, description="Hand this step of the case's chain to the owner.")


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
