"""Running chains: the instance side of the spec/instance split.

A template version is stored once (``chain_template_versions``) when it is first loaded from
policies/, so a chain keeps the definition it started with even after the file changes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.chains.engine import ChainLifecycle, CloseReason, StepState
from casemgmt.database import Base, UTCDateTime, sql_in

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")



class ChainTemplateVersion(Base):
    """One version of a chain template as it was loaded (the process *spec*)."""

    __tablename__ = "chain_template_versions"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Chain(Base):
    """One person's Integrationskette, a running instance of a template version."""

    __tablename__ = "chains"
    __table_args__ = (
        ForeignKeyConstraint(
            ["template_key", "template_version"],
            ["chain_template_versions.key", "chain_template_versions.version"],
            name="fk_chains_template_chain_template_versions",
        ),
        CheckConstraint(sql_in("lifecycle", ChainLifecycle), name="lifecycle"),
        CheckConstraint(
            f"closed_reason IS NULL OR {sql_in('closed_reason', CloseReason)}", name="closed_reason"
        ),
        # A person has at most one open chain per template.
        Index(
            "uq_chains_open_per_person_template",
            "person_id",
            "template_key",
            unique=True,
            postgresql_where=text("lifecycle = 'open'"),
            sqlite_where=text("lifecycle = 'open'"),
        ),
        Index("ix_chains_started_at_id", "started_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), index=True)
    template_key: Mapped[str] = mapped_column(String(64), index=True)
    template_version: Mapped[int] = mapped_column(Integer)
    lead_jurisdiction_id: Mapped[int] = mapped_column(ForeignKey("jurisdictions.id"), index=True)
    case_management_organisation_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id"), index=True
    )
    lifecycle: Mapped[str] = mapped_column(String(16), default=ChainLifecycle.open.value)
    closed_reason: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Bumped on every change; clients send it back as expected_version to avoid lost updates.
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Steps a Fallkonferenz added to this chain (casemgmt.chains.agreed): their definitions,
    # since the template stays the spec. None for the many chains without any.
    agreed_steps: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class ChainStep(Base):
    """The state of one step of a running chain. Structure (prerequisites, due rule) comes
    from the template version; ``owner_kind`` and ``due_*`` are copied for querying."""

    __tablename__ = "chain_steps"
    __table_args__ = (
        UniqueConstraint("chain_id", "key", name="uq_chain_steps_chain_id_key"),
        CheckConstraint(sql_in("state", StepState), name="state"),
        CheckConstraint("due_for IS NULL OR due_for IN ('start', 'completion')", name="due_for"),
        Index("ix_chain_steps_owner_kind_state", "owner_kind", "state"),
        Index("ix_chain_steps_state_due_at", "state", "due_at"),
        # Record scope: the steps an organisation does (see casemgmt.involvement).
        Index("ix_chain_steps_assigned_state", "assigned_organisation_id", "state",
              postgresql_include=["chain_id"]),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    chain_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chains.id"))
    key: Mapped[str] = mapped_column(String(64))
    owner_kind: Mapped[str] = mapped_column(String(64))
    optional: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_for: Mapped[str | None] = mapped_column(String(16))
    # Who does the step: set when it becomes ready, changed by a handover or the case management.
    assigned_organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    # Set for a step a Fallkonferenz agreed (its definition is in chains.agreed_steps); None for
    # the template's steps.
    agreement_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("conference_agreements.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChainEvent(Base):
    """Append-only history of a chain: every state change, with actor and reason.

    On PostgreSQL a trigger refuses UPDATE and DELETE on this table (see the migration)."""

    __tablename__ = "chain_events"
    __table_args__ = (
        Index("ix_chain_events_chain_id_id", "chain_id", "id"),
        # Goal clocks look up the few events of two steps among millions (steering/goals.py).
        Index("ix_chain_events_step_state", "step_key", "to_state",
              postgresql_include=["chain_id", "occurred_at"], postgresql_where=text("kind = 'step'"),
              sqlite_where=text("kind = 'step'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    chain_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chains.id"))
    kind: Mapped[str] = mapped_column(String(32))
    step_key: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str | None] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    actor_user: Mapped[str] = mapped_column(String(200))
    actor_organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    # Whose involvement the event concerns: ``organisation_id`` is the organisation the step is
    # assigned to after it (for ``lead_moved`` the new case management); ``previous_organisation_id``
    # the one whose part it ended (a step given to another office, the case management that
    # handed over). Former organisations read the history up to their last such event.
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    previous_organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    # A migration to a new template version that gave the step another key: its key before, so
    # the earlier events (kept under that key) can be read as the same step's.
    previous_step_key: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
