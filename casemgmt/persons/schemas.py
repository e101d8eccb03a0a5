"""API shapes of the person list."""

from __future__ import annotations

import enum

from pydantic import BaseModel, Field

from casemgmt.privacy.schemas import PersonRecordOut


class CaseStatus(str, enum.Enum):
    """Where a person's case stands: the status of a chain of theirs that the caller's
    organisation lists, or ``no_chain`` when no such chain exists yet."""

    active = "active"
    stalled = "stalled"
    completed = "completed"
    closed = "closed"
    no_chain = "no_chain"


class PersonPage(BaseModel):
    items: list[PersonRecordOut] = Field(
        description="Each person as `GET /persons/{id}` shows them to you: only the fields you may see.")
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null at the end.")
