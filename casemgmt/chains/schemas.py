"""API shapes for templates, chains, steps and events."""

from __future__ import annotations

import uuid
from datetime import datetime

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.chains.engine import Action, ChainStatus, CloseReason, StepState
from casemgmt.validation import DbId, Key, Text

REASON_FIELD = Field(default=None, max_length=2000, description="Why; required for block and skip.")


class DueRuleOut(BaseModel):
    after: str
    on: str
    days: int
    deadline_for: str


class TemplateStepOut(BaseModel):
    key: str
    title: str
    description: str
    owner: str
    requires: list[str]
    optional: bool
    due: DueRuleOut | None


class TemplateSummary(BaseModel):
    key: str
    version: int
    title: str
    description: str
    step_count: int
    versions: list[int]


class TemplateOut(BaseModel):
    key: str
    version: int
    title: str
    description: str
    steps: list[TemplateStepOut]


class TemplateVersionOut(BaseModel):
    """One version of a template the installation knows (the file's, or stored for running chains)."""

    version: int
    title: str
    step_count: int
    digest: str = Field(description="SHA-256 of the version's canonical content.")
    registered_at: datetime | None = Field(description="When this installation first loaded it.")
    current: bool = Field(description="New chains start from this version.")
    migration_plan_from_previous: bool = Field(
        description="policies/chains/<key>.migrations.yaml has a plan from the previous version to this one.")


class ValueChange(BaseModel):
    before: Any
    after: Any


class StepDiffOut(BaseModel):
    key: str = Field(description="The step's key in the later version.")
    previous_key: str | None = Field(default=None, description="Its key in the earlier version, if renamed.")
    changes: dict[str, ValueChange] = Field(
        description="What changed: `owner`, `due` (the due rule), `requires`, `optional`, `title`.")


class TemplateDiffOut(BaseModel):
    template_key: str
    from_version: int
    to_version: int
    added: list[TemplateStepOut]
    removed: list[TemplateStepOut]
    renamed: dict[str, str] = Field(description="Old key -> new key, as the migration plans say.")
    changed: list[StepDiffOut]


class ChainStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    person_id: uuid.UUID
    template_key: Key


class StepActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Action
    reason: Text | None = REASON_FIELD
    expected_version: int | None = Field(
        default=None,
        ge=1,
        description="The chain version you decided on; a different current version gives 409.",
    )


class ChainCloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: CloseReason
    note: Text | None = Field(default=None, max_length=2000)
    expected_version: int | None = Field(default=None, ge=1)


class AgreedInOut(BaseModel):
    """Where a step that is not in the template comes from: a Fallkonferenz agreement."""

    conference_id: str
    conference_title: str
    conference_scheduled_at: datetime
    agreement_id: str


class StepOut(BaseModel):
    key: str
    title: str
    owner: str
    requires: list[str]
    optional: bool
    state: StepState
    reason: str | None
    started_at: datetime | None
    completed_at: datetime | None
    due_at: datetime | None
    due_for: str | None
    overdue: bool
    assigned_organisation_id: int | None = Field(
        description="The organisation that does the step: set when it becomes ready (the nearest "
                    "organisation of the owner kind serving the chain's place, or the case "
                    "management for its own steps), changed by a handover or by the case management.")
    allowed_actions: list[Action] = Field(description="What you may do to this step now.")
    agreed_in: AgreedInOut | None = Field(
        default=None, description="Set for a step a Fallkonferenz added to this chain (not part of "
                                  "the template): the conference and agreement it comes from.")


class ChainOut(BaseModel):
    id: uuid.UUID
    person_id: uuid.UUID
    template_key: str
    template_version: int
    template_title: str
    lead_jurisdiction_id: int
    case_management_organisation_id: int
    status: ChainStatus
    closed_reason: CloseReason | None
    started_at: datetime
    completed_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime
    version: int
    steps: list[StepOut]
    access: Literal["current", "former"] = Field(
        default="current",
        description="`former`: your organisation's part in the chain has ended; this is the chain "
                    "as it stood then (`history_until`), read-only.")
    history_until: datetime | None = None


class StepAssignmentIn(BaseModel):
    """The case management gives a step to another organisation of the step's owner kind."""

    model_config = ConfigDict(extra="forbid")

    organisation_id: DbId
    expected_version: int | None = Field(default=None, ge=1, le=2**31 - 1)


class ChainSummary(BaseModel):
    id: uuid.UUID
    person_id: uuid.UUID
    template_key: str
    template_version: int
    lead_jurisdiction_id: int
    case_management_organisation_id: int
    status: ChainStatus
    started_at: datetime
    updated_at: datetime
    version: int
    steps_total: int
    steps_ended: int
    steps_blocked: int
    steps_overdue: int
    next_due_at: datetime | None


class ChainPage(BaseModel):
    items: list[ChainSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null at the end.")


class ChainEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    step_key: str | None
    action: str | None
    from_state: str | None
    to_state: str | None
    reason: str | None
    actor_user: str
    actor_organisation_id: int | None
    organisation_id: int | None = Field(
        default=None, description="The organisation the event concerns: for a step event the one "
                                  "the step is assigned to afterwards; for `lead_moved` the new case "
                                  "management.")
    previous_organisation_id: int | None = Field(
        default=None, description="The organisation whose part the event ended (a step given to "
                                  "another office, the case management that handed the chain on).")
    previous_step_key: str | None = Field(
        default=None, description="For a step renamed by a migration to a new template version "
                                  "(`step_migrated`, action `renamed`): its key before; the earlier "
                                  "events of the step carry that key.")
    occurred_at: datetime
