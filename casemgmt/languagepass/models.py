"""Sprachenpass entries: one per course taken or certificate gained. The content (course,
provider, dates, hours, levels per skill, certificates) is personal data of the category
``language``, encrypted with the person's data key; the row keeps only who wrote it and when."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.database import Base, UTCDateTime


class LanguagePassEntry(Base):
    """One entry of a person's Sprachenpass, written by the organisation that ran the course."""

    __tablename__ = "language_pass_entries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    recorded_by_user: Mapped[str] = mapped_column(String(200))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
