"""A recorded Erstgespräch. The answers themselves are fields of the person record (written and
read through casemgmt.privacy.service); this row keeps how the interview was held and what it
suggested."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.database import Base, UTCDateTime


class Interview(Base):
    """An Erstgespräch held by the case management, by the Gesprächsleitfaden of
    ``policies/interview.yaml`` in version ``guide_version``."""

    __tablename__ = "interviews"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    held_by_user: Mapped[str] = mapped_column(String(200))
    held_on: Mapped[date] = mapped_column(Date)
    # Evidence of how the answers were obtained, as for a consent form.
    language: Mapped[str] = mapped_column(String(50))
    interpreter_used: Mapped[bool] = mapped_column(Boolean)
    guide_version: Mapped[int] = mapped_column(Integer)
    # Names of the person fields the answers were written to (the values are in person_fields).
    answered_fields: Mapped[list[str]] = mapped_column(JSON)
    # What the guide's rules suggested (template, optional steps, the rules that fired). It is
    # worked out from the answers, so it is encrypted with the person's data key like them.
    suggestion_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    # The chain whose first_interview step this interview completed.
    chain_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("chains.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
