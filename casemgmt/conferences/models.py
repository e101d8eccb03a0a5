"""Fallkonferenzen: participants, cases on the agenda, agreements (case phase), findings and
dot votes (structural phase). Links from findings to cases never leave the conference."""

from __future__ import annotations

import uuid
from datetime import date, datetime

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
)
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.database import Base, UTCDateTime, sql_in

CONFERENCE_PHASES = ("planned", "case_phase", "structural_phase", "closed")
FINDING_LEVELS = ("staff", "organisation", "intermunicipal")
WEATHER = ("sonne", "wolke", "gewitter", "wind")



class Conference(Base):
    """One Fallkonferenz, moderated by a user of one organisation."""

    __tablename__ = "conferences"
    __table_args__ = (CheckConstraint(sql_in("phase", CONFERENCE_PHASES), name="phase"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(200))
    scheduled_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    jurisdiction_id: Mapped[int] = mapped_column(ForeignKey("jurisdictions.id"))
    moderator_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    moderator_user: Mapped[str] = mapped_column(String(200))
    phase: Mapped[str] = mapped_column(String(20), default="planned")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(Integer, default=1)


class ConferenceParticipant(Base):
    """An organisation at the table (and who represents it)."""

    __tablename__ = "conference_participants"
    __table_args__ = (UniqueConstraint("conference_id", "organisation_id",
                                       name="uq_conference_participants_organisation"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conference_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conferences.id"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))


class ConferenceCase(Base):
    """A case on the agenda, with the legal basis that allowed putting it there."""

    __tablename__ = "conference_cases"
    __table_args__ = (UniqueConstraint("conference_id", "chain_id", name="uq_conference_cases_chain"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conference_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conferences.id"), index=True)
    chain_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chains.id"))
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), index=True)
    # organisation id -> basis ("consent:<uuid>" / "statute:<id>") at the time it was added
    legal_bases: Mapped[dict[str, str]] = mapped_column(JSON)
    added_by_user: Mapped[str] = mapped_column(String(200))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConferenceAgreement(Base):
    """Case phase: an action item for one case, owned by an organisation, due on a date. Its text
    concerns the person, so it is encrypted with the person's data key."""

    __tablename__ = "conference_agreements"
    __table_args__ = (CheckConstraint("state IN ('open', 'done', 'dropped')", name="state"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    conference_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conferences.id"), index=True)
    conference_case_id: Mapped[int] = mapped_column(ForeignKey("conference_cases.id"))
    # Empty once the person's data was erased (or the category's retention ran out).
    text_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    owner_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    due_date: Mapped[date] = mapped_column(Date)
    step_key: Mapped[str | None] = mapped_column(String(64))
    handover_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("handovers.id"))
    state: Mapped[str] = mapped_column(String(16), default="open")
    created_by_user: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Finding(Base):
    """Structural phase: a need for change in the system. No personal data (checked by the
    scrubber); the cases behind it are counted, their links stay in the conference."""

    __tablename__ = "findings"
    __table_args__ = (
        CheckConstraint(sql_in("level", FINDING_LEVELS), name="level"),
        CheckConstraint(sql_in("weather", WEATHER), name="weather"),
        Index("ix_findings_barrier_field", "barrier_category", "field_of_action"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    conference_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conferences.id"), index=True)
    barrier_category: Mapped[str] = mapped_column(String(64))
    field_of_action: Mapped[str] = mapped_column(String(64))
    organisation_kinds: Mapped[list[str]] = mapped_column(JSON)
    level: Mapped[str] = mapped_column(String(20))
    weather: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    case_count: Mapped[int] = mapped_column(Integer)
    proposal_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("proposals.id"), index=True)
    created_by_user: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FindingCase(Base):
    """Which cases of the conference stand behind a finding (never shown outside it)."""

    __tablename__ = "finding_cases"

    finding_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("findings.id"), primary_key=True)
    conference_case_id: Mapped[int] = mapped_column(ForeignKey("conference_cases.id"), primary_key=True)


class FindingOrganisationKind(Base):
    """One row per (finding, organisation kind) so reports can group by kind in SQL."""

    __tablename__ = "finding_organisation_kinds"

    finding_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("findings.id"), primary_key=True)
    organisation_kind: Mapped[str] = mapped_column(String(64), primary_key=True)


class FindingVote(Base):
    """Dots a participant put on a finding (Punktabfrage)."""

    __tablename__ = "finding_votes"
    __table_args__ = (
        UniqueConstraint("finding_id", "voter_user", name="uq_finding_votes_voter"),
        CheckConstraint("dots >= 1", name="dots"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conference_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conferences.id"), index=True)
    finding_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("findings.id"), index=True)
    voter_user: Mapped[str] = mapped_column(String(200))
    voter_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    dots: Mapped[int] = mapped_column(Integer)
