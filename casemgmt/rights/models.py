"""The request register, restrictions, legal holds and erasure tombstones."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.database import Base, UTCDateTime, sql_in

REQUEST_KINDS = ("access", "rectification", "erasure", "restriction", "portability", "objection")
REQUEST_STATES = ("received", "in_progress", "extended", "answered", "refused")
TOMBSTONE_CAUSES = ("request", "retention")


class DataSubjectRequest(Base):
    """A request of a person under GDPR Art. 15-18, 20 or 21, from receipt to answer.

    ``due_date`` is the day the answer is due now (one month after receipt, Art. 12(3)), moved
    once by two months when the request is extended with a reason; ``original_due_date`` keeps
    the first. ``reminded_for_due`` is the due date the escalation job last reminded about."""

    __tablename__ = "data_subject_requests"
    __table_args__ = (
        CheckConstraint(sql_in("kind", REQUEST_KINDS), name="kind"),
        CheckConstraint(sql_in("state", REQUEST_STATES), name="state"),
        CheckConstraint("state <> 'refused' OR refusal_reason IS NOT NULL", name="refusal_reason"),
        Index("ix_data_subject_requests_state_due", "state", "due_date"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    identity_checked_by: Mapped[str] = mapped_column(String(200))
    identity_check_method: Mapped[str] = mapped_column(String(200))
    original_due_date: Mapped[date] = mapped_column(Date)
    due_date: Mapped[date] = mapped_column(Date)
    extension_reason: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(Text)
    refusal_reason: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    registered_by_user: Mapped[str] = mapped_column(String(200))
    registered_by_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    reminded_for_due: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)


class PersonRestriction(Base):
    """A restriction of processing (Art. 18): while ``lifted_at`` is empty the record is stored
    and nothing else. ``persons.processing`` mirrors it for the scope checks."""

    __tablename__ = "person_restrictions"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), index=True)
    request_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("data_subject_requests.id"))
    reason: Mapped[str] = mapped_column(Text)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)
    set_by_user: Mapped[str] = mapped_column(String(200))
    set_by_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lifted_by_user: Mapped[str | None] = mapped_column(String(200))
    lift_reason: Mapped[str | None] = mapped_column(Text)


class LegalHold(Base):
    """A legal hold (e.g. pending court proceedings): stops retention and erasure while set."""

    __tablename__ = "legal_holds"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    set_at: Mapped[datetime] = mapped_column(UTCDateTime)
    set_by_user: Mapped[str] = mapped_column(String(200))
    set_by_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    lifted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lifted_by_user: Mapped[str | None] = mapped_column(String(200))
    lift_reason: Mapped[str | None] = mapped_column(Text)


class ErasureTombstone(Base):
    """The record that a person's data key was destroyed. Append-only on PostgreSQL, and copied to
    a file beside the audit checkpoints, so ``casemgmt erasure replay`` can erase again what a
    restored backup brought back."""

    __tablename__ = "erasure_tombstones"
    __table_args__ = (CheckConstraint(sql_in("cause", TOMBSTONE_CAUSES), name="cause"),)

    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cause: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
