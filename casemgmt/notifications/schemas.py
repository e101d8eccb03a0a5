"""API shapes for the notification outbox."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class OutboxMessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event: str
    handover_id: uuid.UUID | None
    organisation_id: int
    channel: str
    address: str
    subject: str
    body: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class OutboxPage(BaseModel):
    counts: dict[str, int]
    items: list[OutboxMessageOut]
