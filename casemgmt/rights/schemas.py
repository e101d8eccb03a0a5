"""API shapes of the request register, restrictions, legal holds and erasure."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from casemgmt.rights.lifecycle import RequestAction, RequestKind, RequestStatus
from casemgmt.validation import Text


class RequestIn(BaseModel):
    """A data subject request as received by the controller."""

    model_config = ConfigDict(extra="forbid")

    person_id: uuid.UUID
    kind: RequestKind
    received_at: AwareDatetime | None = Field(default=None, description="Default: now. Never in the future.")
    identity_checked_by: Text = Field(min_length=1, max_length=200,
                                      description="Who checked the requester's identity (office or user).")
    identity_check_method: Text = Field(min_length=1, max_length=200,
                                        description="How, e.g. 'Personalausweis vorgelegt'.")


class RequestActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: RequestAction
    reason: Text | None = Field(default=None, max_length=4000,
                                description="Why it is extended or refused; the outcome when answered.")
    expected_version: int | None = Field(default=None, ge=1)


class RequestOut(BaseModel):
    id: uuid.UUID
    person_id: uuid.UUID
    kind: RequestKind
    state: RequestStatus
    received_at: datetime
    identity_checked_by: str
    identity_check_method: str
    original_due_date: date
    due_date: date
    overdue: bool
    extension_reason: str | None
    outcome: str | None
    refusal_reason: str | None
    answered_at: datetime | None
    registered_by_organisation_id: int
    version: int
    allowed_actions: list[RequestAction]


class RequestCounts(BaseModel):
    received: int = 0
    in_progress: int = 0
    extended: int = 0
    answered: int = 0
    refused: int = 0
    overdue: int = 0


class RequestPage(BaseModel):
    items: list[RequestOut]
    counts: RequestCounts


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(min_length=1, max_length=4000)
    request_id: uuid.UUID | None = Field(default=None, description="The request it answers, if any.")


class LiftIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(min_length=1, max_length=4000)


class MeasureOut(BaseModel):
    """One restriction or legal hold."""

    id: int
    kind: Literal["restriction", "legal_hold"]
    person_id: uuid.UUID
    reason: str
    request_id: uuid.UUID | None = None
    set_at: datetime
    set_by_organisation_id: int
    lifted_at: datetime | None
    lift_reason: str | None


class MeasuresOut(BaseModel):
    active: MeasureOut | None
    history: list[MeasureOut]


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: uuid.UUID
    legal_assessment: Text = Field(min_length=1, max_length=4000,
                                   description="Why Art. 17 applies and no exception of Art. 17(3) stands against it.")


class ErasureOut(BaseModel):
    person_id: uuid.UUID
    erased_at: datetime
    cause: str
    request_id: uuid.UUID | None
    request_state: RequestStatus
