"""Jurisdictions (Land > Kreis > Gemeinde; kreisfreie Stadt under the Land) and organisations."""

from __future__ import annotations

import enum

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from casemgmt.database import Base


class JurisdictionLevel(str, enum.Enum):
    """Level of a territorial authority in NRW."""

    land = "land"
    kreis = "kreis"
    gemeinde = "gemeinde"  # kreisangehörige Stadt/Gemeinde, under a Kreis
    kreisfreie_stadt = "kreisfreie_stadt"  # district-free city, directly under the Land


# Which level may sit under which: the hierarchy of DOMAIN.md section 3.
ALLOWED_PARENT: dict[JurisdictionLevel, JurisdictionLevel | None] = {
    JurisdictionLevel.land: None,
    JurisdictionLevel.kreis: JurisdictionLevel.land,
    JurisdictionLevel.kreisfreie_stadt: JurisdictionLevel.land,
    JurisdictionLevel.gemeinde: JurisdictionLevel.kreis,
}


class Jurisdiction(Base):
    """A territorial authority. ``path`` lists the ids from the Land down (``/1/4/9/``) so that
    "this jurisdiction or one above it" is a prefix test in SQL."""

    __tablename__ = "jurisdictions"
    __table_args__ = (
        CheckConstraint(
            "level IN ('land', 'kreis', 'gemeinde', 'kreisfreie_stadt')", name="level"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(20))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jurisdictions.id"), index=True)
    path: Mapped[str] = mapped_column(String(200), index=True)

    parent: Mapped[Jurisdiction | None] = relationship(remote_side=[id])


class Organisation(Base):
    """An authority or provider taking part in chains. Its ``kind`` is a key of
    ``policies/organisation_kinds.yaml``; it belongs to exactly one jurisdiction."""

    __tablename__ = "organisations"
    __table_args__ = (Index("ix_organisations_kind_jurisdiction", "kind", "jurisdiction_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    jurisdiction_id: Mapped[int] = mapped_column(ForeignKey("jurisdictions.id"))

    jurisdiction: Mapped[Jurisdiction] = relationship(lazy="joined")
