"""The person followed through a chain. For now only the pseudonymous id and the three residence
attributes of DOMAIN.md section 4; the encrypted personal record comes with data protection."""

from __future__ import annotations

import enum
import secrets
import uuid
from datetime import datetime

from typing import Any

from sqlalchemy import JSON, CheckConstraint, Float, ForeignKey, String, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.database import Base, UTCDateTime, sql_in


class ResidenceStatus(str, enum.Enum):
    """Aufenthaltsstatus: the legal basis of the stay."""

    asylum_pending = "asylum_pending"  # Aufenthaltsgestattung
    protection_granted = "protection_granted"  # Schutzstatus / Aufenthaltserlaubnis
    tolerated = "tolerated"  # Duldung
    eu_free_movement = "eu_free_movement"  # Freizügigkeit
    third_country_permit = "third_country_permit"  # e.g. for work
    spaetaussiedler = "spaetaussiedler"
    naturalised = "naturalised"  # eingebürgert


class Bleibeperspektive(str, enum.Enum):
    """Prospect of staying; integration course access depends on it."""

    good = "good"
    unclear = "unclear"  # individually good but unclear
    safe_country_of_origin = "safe_country_of_origin"
    unknown = "unknown"


class BenefitRegime(str, enum.Enum):
    """Rechtskreis of subsistence."""

    asylblg = "asylblg"
    sgb_ii = "sgb_ii"
    sgb_iii = "sgb_iii"
    sgb_xii = "sgb_xii"
    none = "none"



# ``active``: processed as usual; ``restricted``: stored only (GDPR Art. 18); ``erased``: the data
# key is destroyed, only the pseudonymous case history remains.
PROCESSING_STATES = ("active", "restricted", "erased")


class Person(Base):
    """A newcomer. ``id`` is a random, stable pseudonym: it carries no personal data.

    The residence attributes are plain columns because reports group by them; who may read them
    is decided per category like every other field. All other personal fields are encrypted in
    ``person_fields``; ``blind_index`` is a keyed digest of name and birth date for look-ups."""

    __tablename__ = "persons"
    __table_args__ = (
        CheckConstraint(sql_in("residence_status", ResidenceStatus), name="residence_status"),
        CheckConstraint(sql_in("bleibeperspektive", Bleibeperspektive), name="bleibeperspektive"),
        CheckConstraint(sql_in("benefit_regime", BenefitRegime), name="benefit_regime"),
        CheckConstraint(sql_in("processing", PROCESSING_STATES), name="processing"),
        # NULL passes a CHECK, so the attributes may be unknown (or withheld) at registration.
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    residence_status: Mapped[str | None] = mapped_column(String(32))
    bleibeperspektive: Mapped[str | None] = mapped_column(String(32))
    benefit_regime: Mapped[str | None] = mapped_column(String(16))
    blind_index: Mapped[str | None] = mapped_column(String(64), index=True)
    lead_jurisdiction_id: Mapped[int] = mapped_column(ForeignKey("jurisdictions.id"), index=True)
    created_by_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Which organisation wrote each residence attribute last ({field: organisation id}), as
    # person_fields records it for the encrypted fields: a former organisation reads back only
    # what it wrote itself.
    plain_field_writers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default=text("'{}'"))
    # Mirrors the person's open restriction or erasure tombstone, so every scope check reads it
    # with the row it already loads (casemgmt.rights.gate).
    processing: Mapped[str] = mapped_column(String(16), default="active", server_default=text("'active'"))
    # The Cell Key Method's record key, uniform in [0, 1), drawn once (casemgmt.steering.cellkey).
    # A random number, not personal data; still never shown, since knowing the keys would let
    # one undo the perturbation.
    # PostgreSQL's random() covers rows inserted by hand (SQL scripts, tests).
    record_key: Mapped[float] = mapped_column(Float, default=lambda: secrets.randbelow(2**53) / 2**53,
                                              server_default=text("random()"))
