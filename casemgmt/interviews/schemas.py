"""API shapes of the Erstgespräch."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.privacy.schemas import ConsentIn, PersonRecordOut
from casemgmt.validation import Key, Text


class InterviewIn(BaseModel):
    """An Erstgespräch held by the case management, by the Gesprächsleitfaden."""

    model_config = ConfigDict(extra="forbid")

    held_on: date = Field(description="The day of the interview (today or earlier).")
    language: Text = Field(min_length=2, max_length=50, description="The language it was held in.")
    interpreter_used: bool = False
    answers: dict[Key, Any] = Field(
        max_length=200, description="Answers by question key of policies/interview.yaml; each is written to "
                                    "the person field the question names, with that field's legal basis.")
    consents: list[ConsentIn] = Field(
        default_factory=list, max_length=10,
        description="Consents the person signed in the interview, recorded first (by the usual rules: the "
                    "case management of the person's chain, or the organisation that registered the person "
                    "while no chain runs).")
    purpose: Key | None = Field(default=None, description="Defaults to your organisation kind's.")


class SuggestedOut(BaseModel):
    key: str = Field(description="A template key, or a step key.")
    title: str
    reasons: list[str] = Field(description="Why, as the guide's rules say.")


class InterviewOut(BaseModel):
    id: uuid.UUID
    person_id: uuid.UUID
    organisation_id: int
    held_by_user: str
    held_on: date
    language: str
    interpreter_used: bool
    guide_version: int
    answered_fields: list[str] = Field(description="The person fields the answers were written to.")
    suggested_template: SuggestedOut | None = Field(description="The chain the answers suggest.")
    alternative_templates: list[SuggestedOut]
    suggested_steps: list[SuggestedOut] = Field(
        description="Optional steps of the suggested template the answers call for.")
    chain_id: uuid.UUID | None = Field(description="The chain whose first_interview step this interview completed.")
    recorded_at: datetime
    record: PersonRecordOut | None = Field(
        default=None, description="The answered fields as you may read them back (through the exit point).")


class StartFromInterviewIn(BaseModel):
    """Take the interview into a chain: the suggested template (or another), with the
    first_interview step completed in the same request."""

    model_config = ConfigDict(extra="forbid")

    template_key: Key | None = Field(default=None, description="Defaults to the suggested template.")
    skip_unsuggested_optional_steps: bool = Field(
        default=False, description="Skip the template's optional steps the interview did not suggest "
                                   "(those nobody has started), with the interview as the reason.")
