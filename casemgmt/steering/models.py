"""Proposals to the Lenkungsgruppe, its decisions, working groups, and the full history."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.chains.models import BigId
from casemgmt.database import Base, UTCDateTime, sql_in
from casemgmt.steering.proposals import ProposalState



class WorkingGroup(Base):
    """An Arbeitsgruppe that implements accepted proposals."""

    __tablename__ = "working_groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    lead_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Proposal(Base):
    """Findings bundled by a moderator for the Lenkungsgruppe to decide."""

    __tablename__ = "proposals"
    __table_args__ = (
        CheckConstraint(sql_in("state", [s.value for s in ProposalState]), name="state"),
        Index("ix_proposals_state", "state"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(24))
    created_by_user: Mapped[str] = mapped_column(String(200))
    created_by_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    working_group_id: Mapped[int | None] = mapped_column(ForeignKey("working_groups.id"))
    due_date: Mapped[date | None] = mapped_column(Date)
    decision_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)


class ProposalEvent(Base):
    """Append-only history of a proposal. On PostgreSQL a trigger refuses UPDATE and DELETE."""

    __tablename__ = "proposal_events"
    __table_args__ = (Index("ix_proposal_events_proposal_id_id", "proposal_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    proposal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("proposals.id"))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(24))
    to_state: Mapped[str] = mapped_column(String(24))
    reason: Mapped[str | None] = mapped_column(Text)
    working_group_id: Mapped[int | None] = mapped_column(ForeignKey("working_groups.id"))
    due_date: Mapped[date | None] = mapped_column(Date)
    actor_user: Mapped[str] = mapped_column(String(200))
    actor_organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
