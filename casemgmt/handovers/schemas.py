"""API shapes for handovers and inboxes."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.handovers.lifecycle import HandoverAction, HandoverKind, HandoverState
from casemgmt.privacy.schemas import Redaction
from casemgmt.validation import DbId, Key, Text


class HandoverIn(BaseModel):
    """Start a handover. Which members are needed depends on ``kind``:

    - ``step``: ``step_key`` (the step to pass on); the receiver defaults to the nearest
      organisation of the step's owner kind serving the chain's jurisdiction.
    - ``rechtskreiswechsel``: ``step_key`` (your step in progress, completed on acknowledgement),
      ``to_step_key`` (the receiver's step) and ``benefit_regime`` (the new Rechtskreis).
    - ``relocation``: ``to_jurisdiction_id`` (the town or kreisfreie Stadt the person moves to);
      the receiver defaults to the nearest case management there.
    """

    model_config = ConfigDict(extra="forbid")

    kind: HandoverKind
    step_key: Key | None = None
    to_step_key: Key | None = None
    benefit_regime: Key | None = None
    to_jurisdiction_id: DbId | None = None
    receiver_organisation_id: DbId | None = None
    purpose: Key | None = Field(
        default=None, description="Purpose the data package is decided for; defaults to the receiver's.")


class HandoverActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: HandoverAction
    reason: Text | None = Field(default=None, max_length=2000, description="Required to reject.")
    expected_version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class OrganisationRef(BaseModel):
    id: int
    name: str
    kind: str
    jurisdiction_id: int


class HandoverSummary(BaseModel):
    """A handover as an inbox lists it: no personal data."""

    id: uuid.UUID
    kind: HandoverKind
    state: HandoverState
    overdue: bool
    chain_id: uuid.UUID
    person_id: uuid.UUID
    step_key: str | None
    to_step_key: str | None
    sender: OrganisationRef
    receiver: OrganisationRef
    requested_at: datetime
    working_days: int
    due_date: date = Field(description="Last working day to acknowledge (local date).")
    due_at: datetime = Field(description="When the handover becomes overdue (end of the due date).")
    escalated_at: datetime | None
    responded_at: datetime | None
    version: int
    allowed_actions: list[str]


class HandoverEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    action: str
    from_state: str | None
    to_state: str
    reason: str | None
    actor_user: str
    actor_organisation_id: int | None
    occurred_at: datetime


class DataPackage(BaseModel):
    """What the receiver may see, frozen when the handover was requested. ``values`` only for
    the receiving organisation, and only what it may still see now."""

    purpose: str
    fields: list[str]
    legal_bases: dict[str, str]
    redacted: list[Redaction]
    values: dict[str, Any] | None = None
    withheld_now: list[Redaction] = Field(
        default_factory=list,
        description="Fields of the frozen package the receiver may no longer see (e.g. consent withdrawn).")


class ConsentReviewOut(BaseModel):
    """On relocation: does a consent in force still cover the case management at the new place?"""

    consent_id: uuid.UUID
    purpose: str
    categories: list[str]
    covers_receiver: bool
    covered_sender: bool


class HandoverOut(HandoverSummary):
    case_management_organisation_id: int
    from_jurisdiction_id: int
    to_jurisdiction_id: int | None
    benefit_regime_from: str | None
    benefit_regime_to: str | None
    sender_user: str
    responded_by_user: str | None
    response_reason: str | None
    waiting_calendar_days: int | None
    waiting_working_days: int | None
    package: DataPackage
    consent_review: list[ConsentReviewOut] | None
    events: list[HandoverEventOut]


class InboxCounts(BaseModel):
    """Waiting handovers by state, how many of them are overdue, and the decisions of the last
    ``decided_window_days`` days."""

    requested: int
    escalated: int
    overdue: int
    acknowledged: int
    rejected: int
    withdrawn: int
    decided_window_days: int


class HandoverPage(BaseModel):
    items: list[HandoverSummary]
    next_cursor: str | None
    counts: InboxCounts


class Box(str, enum.Enum):
    incoming = "incoming"
    outgoing = "outgoing"


class StateFilter(str, enum.Enum):
    pending = "pending"
    requested = "requested"
    escalated = "escalated"
    acknowledged = "acknowledged"
    rejected = "rejected"
    withdrawn = "withdrawn"


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str = Field(pattern="^(lead|inbox|dpo)$")
    channel: str = Field(pattern="^(email|webhook)$")
    address: Text = Field(min_length=3, max_length=400)


class ContactOut(ContactIn):
    id: int
    organisation_id: int
