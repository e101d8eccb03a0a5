"""The notification outbox."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.chains.models import BigId
from casemgmt.database import Base, UTCDateTime

OUTBOX_STATES = ("pending", "delivered", "failed")


class OutboxMessage(Base):
    """One notification to one address. ``pending`` until delivered; after the last retry
    ``failed`` (kept and listed, and re-queued by an operator), never deleted."""

    __tablename__ = "notification_outbox"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="state"),
        CheckConstraint("channel IN ('email', 'webhook')", name="channel"),
        # Running the escalation twice must not notify twice.
        UniqueConstraint("event", "handover_id", "channel", "address", name="uq_notification_outbox_event"),
        Index("ix_notification_outbox_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(48))
    handover_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("handovers.id"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(400))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
