"""The Angebotsdatenbank: integration offers of the Kreis's towns, their history, good-practice
entries, and the bookings of chain steps onto offers. Offers hold no person data: contact
persons are staff named as public contact data; who is booked is in ``offer_bookings``, which is
case data and never leaves through the public directory."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.database import Base, UTCDateTime

BOOKING_STATES = ("referred", "enrolled")


class Offer(Base):
    """One offer of the directory (a course, a counselling service, a sports group, ...)."""

    __tablename__ = "offers"
    __table_args__ = (
        CheckConstraint("capacity IS NULL OR capacity >= 0", name="capacity"),
        CheckConstraint("free_places IS NULL OR (free_places >= 0 AND (capacity IS NULL OR free_places <= capacity))",
                        name="free_places"),
        CheckConstraint("age_min IS NULL OR age_max IS NULL OR age_min <= age_max", name="age_range"),
        Index("ix_offers_kind_valid", "kind", "valid_from"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    provider_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    # Jurisdiction ids of the towns (or a Kreis: all its towns) the offer is open to.
    towns: Mapped[list[int]] = mapped_column(JSON)
    address: Mapped[str] = mapped_column(String(400), default="")
    languages: Mapped[list[str]] = mapped_column(JSON)
    # Residence statuses the offer is open to (empty: everybody) and the age range.
    target_residence_statuses: Mapped[list[str]] = mapped_column(JSON)
    age_min: Mapped[int | None] = mapped_column(Integer)
    age_max: Mapped[int | None] = mapped_column(Integer)
    accessibility: Mapped[str] = mapped_column(String(400), default="")
    cost: Mapped[str] = mapped_column(String(200), default="")
    # The next start (a running course with rolling entry keeps its first day) and the schedule.
    starts_on: Mapped[date | None] = mapped_column(Date)
    evening: Mapped[bool] = mapped_column(Boolean, default=False)
    part_time: Mapped[bool] = mapped_column(Boolean, default=False)
    schedule: Mapped[str] = mapped_column(String(400), default="")
    # None: no limit (an open counselling hour); free places fall with each enrolment.
    capacity: Mapped[int | None] = mapped_column(Integer)
    free_places: Mapped[int | None] = mapped_column(Integer)
    contacts: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    links: Mapped[list[str]] = mapped_column(JSON)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OfferVersion(Base):
    """The history of an offer: the whole entry as it was after each change, by whom.
    On PostgreSQL a trigger refuses UPDATE and DELETE."""

    __tablename__ = "offer_versions"
    __table_args__ = (UniqueConstraint("offer_id", "version", name="uq_offer_versions_offer_id_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    offer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("offers.id"))
    version: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(32))  # created | updated | enrolment
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    changed_by_user: Mapped[str] = mapped_column(String(200))
    changed_by_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class GoodPractice(Base):
    """A good-practice example, linked to an offer and/or a working group of the Lenkungsgruppe."""

    __tablename__ = "good_practices"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    offer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("offers.id"), index=True)
    working_group_id: Mapped[int | None] = mapped_column(ForeignKey("working_groups.id"))
    title: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OfferBooking(Base):
    """A chain step given an offer: referred, then enrolled (a place taken). Case data: read only
    through the chain."""

    __tablename__ = "offer_bookings"
    __table_args__ = (
        UniqueConstraint("chain_id", "step_key", "offer_id", name="uq_offer_bookings_chain_step_offer"),
        CheckConstraint("state IN ('referred', 'enrolled')", name="state"),
        Index("ix_offer_bookings_offer_state", "offer_id", "state"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    offer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("offers.id"))
    chain_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("chains.id"), index=True)
    step_key: Mapped[str] = mapped_column(String(64))
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    referred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
