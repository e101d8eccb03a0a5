"""Handovers, their append-only history, and organisations' contact points for notifications."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.chains.models import BigId
from casemgmt.database import Base, UTCDateTime, sql_in
from casemgmt.handovers.lifecycle import PENDING_VALUES, HandoverKind, HandoverState



_PENDING_SQL = text(sql_in("state", PENDING_VALUES))


class Handover(Base):
    """One handover from a sending to a receiving organisation, with the situation as it was when
    it was requested (organisations, jurisdictions, the frozen data package)."""

    __tablename__ = "handovers"
    __table_args__ = (
        CheckConstraint(sql_in("kind", [k.value for k in HandoverKind]), name="kind"),
        CheckConstraint(sql_in("state", [s.value for s in HandoverState]), name="state"),
        CheckConstraint("state <> 'rejected' OR response_reason IS NOT NULL", name="rejected_reason"),
        # At most one waiting handover per step (or per chain lead, for a relocation).
        Index("uq_handovers_pending_subject", "chain_id", "subject", unique=True,
              postgresql_where=_PENDING_SQL, sqlite_where=_PENDING_SQL),
        # Inboxes: waiting handovers per organisation in due order, overdue ones first by nature.
        # ``state`` (and the sender) included so the inbox counts are index-only scans.
        Index("ix_handovers_receiver_pending", "receiver_organisation_id", "due_at", "id",
              postgresql_include=["state"], postgresql_where=_PENDING_SQL, sqlite_where=_PENDING_SQL),
        Index("ix_handovers_sender_pending", "sender_organisation_id", "due_at", "id",
              postgresql_include=["state"], postgresql_where=_PENDING_SQL, sqlite_where=_PENDING_SQL),
        Index("ix_handovers_case_management_pending", "case_management_organisation_id", "due_at", "id",
              postgresql_include=["state", "sender_organisation_id"], postgresql_where=_PENDING_SQL,
              sqlite_where=_PENDING_SQL),
        # Recently decided handovers per organisation (counts and "done" views).
        Index("ix_handovers_receiver_decided", "receiver_organisation_id", "state", "responded_at"),
        Index("ix_handovers_sender_decided", "sender_organisation_id", "state", "responded_at"),
        Index("ix_handovers_case_management_decided", "case_management_organisation_id", "state",
              "responded_at", postgresql_include=["sender_organisation_id"]),
        # What the escalation run looks for.
        Index("ix_handovers_to_escalate", "due_at", postgresql_where=text("state = 'requested'"),
              sqlite_where=text("state = 'requested'")),
        Index("ix_handovers_chain_id", "chain_id"),
        Index("ix_handovers_person_id", "person_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(24))
    state: Mapped[str] = mapped_column(String(16))
    chain_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chains.id"))
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"))
    # "step:<key>" or "chain_lead": what is being handed over, for the one-pending rule.
    subject: Mapped[str] = mapped_column(String(80))
    step_key: Mapped[str | None] = mapped_column(String(64))
    to_step_key: Mapped[str | None] = mapped_column(String(64))
    benefit_regime_from: Mapped[str | None] = mapped_column(String(32))
    benefit_regime_to: Mapped[str | None] = mapped_column(String(32))
    # The situation when it was requested.
    sender_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    sender_organisation_kind: Mapped[str] = mapped_column(String(64))
    sender_jurisdiction_id: Mapped[int] = mapped_column(ForeignKey("jurisdictions.id"))
    sender_user: Mapped[str] = mapped_column(String(200))
    receiver_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    receiver_organisation_kind: Mapped[str] = mapped_column(String(64))
    receiver_jurisdiction_id: Mapped[int] = mapped_column(ForeignKey("jurisdictions.id"))
    case_management_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    from_jurisdiction_id: Mapped[int] = mapped_column(ForeignKey("jurisdictions.id"))
    to_jurisdiction_id: Mapped[int | None] = mapped_column(ForeignKey("jurisdictions.id"))
    # The data package: which fields, on which basis, which were withheld; values encrypted
    # with the person's data key, so erasing the person erases the package too.
    purpose: Mapped[str] = mapped_column(String(64))
    package_fields: Mapped[list[str]] = mapped_column(JSON)
    package_bases: Mapped[dict[str, str]] = mapped_column(JSON)
    package_redacted: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    package_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    consent_review: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # Deadline in working days.
    working_days: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_date: Mapped[date] = mapped_column(Date)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    responded_by_user: Mapped[str | None] = mapped_column(String(200))
    response_reason: Mapped[str | None] = mapped_column(Text)
    # Recorded at acknowledgement for the steering reports.
    waiting_calendar_days: Mapped[int | None] = mapped_column(Integer)
    waiting_working_days: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class HandoverEvent(Base):
    """Append-only history of a handover. On PostgreSQL a trigger refuses UPDATE and DELETE."""

    __tablename__ = "handover_events"
    __table_args__ = (Index("ix_handover_events_handover_id_id", "handover_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    handover_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("handovers.id"))
    action: Mapped[str] = mapped_column(String(24))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    actor_user: Mapped[str] = mapped_column(String(200))
    actor_organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OrganisationContact(Base):
    """Where an organisation wants notifications: its lead (escalations), its team inbox, or its
    data protection officer (reminders of overdue data subject requests)."""

    __tablename__ = "organisation_contacts"
    __table_args__ = (
        CheckConstraint("role IN ('lead', 'inbox', 'dpo')", name="role"),
        CheckConstraint("channel IN ('email', 'webhook')", name="channel"),
        UniqueConstraint("organisation_id", "role", "channel", "address",
                         name="uq_organisation_contacts_address"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(400))
