"""API shapes for proposals, decisions and working groups."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.conferences.schemas import FindingOut
from casemgmt.steering.proposals import ProposalAction, ProposalState
from casemgmt.validation import DbId, FilledText, IsoDate, Text


class ProposalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: FilledText = Field(min_length=1, max_length=200)
    summary: FilledText = Field(min_length=1, max_length=4000)
    finding_ids: list[uuid.UUID] = Field(min_length=1, max_length=100)


class ProposalActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: ProposalAction
    reason: Text | None = Field(default=None, max_length=2000, description="Required to reject or defer.")
    working_group_name: Text | None = Field(default=None, max_length=200, description="accept: the new group.")
    lead_organisation_id: DbId | None = Field(default=None, description="accept: who leads the new group.")
    working_group_id: DbId | None = Field(default=None, description="delegate: an existing group.")
    due_date: IsoDate | None = None
    expected_version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class WorkingGroupOut(BaseModel):
    id: int
    name: str
    lead_organisation_id: int
    created_at: datetime


class ProposalEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    action: str
    from_state: str | None
    to_state: str
    reason: str | None
    working_group_id: int | None
    due_date: date | None
    actor_user: str
    actor_organisation_id: int | None
    occurred_at: datetime


class ProposalOut(BaseModel):
    id: uuid.UUID
    title: str
    summary: str
    state: ProposalState
    working_group: WorkingGroupOut | None
    due_date: date | None
    decision_reason: str | None
    created_at: datetime
    updated_at: datetime
    version: int
    allowed_actions: list[str]
    findings: list[FindingOut]
    events: list[ProposalEventOut]


class ReleaseOut(BaseModel):
    """One release of the steering report (what it covers; the document is at ``links``)."""

    number: int
    period: str
    period_title: str
    edition: int
    revises: int | None
    released_at: datetime
    links: dict[str, str]
