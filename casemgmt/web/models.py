"""The sessions of the web interface: one row per signed-in browser, found by the hash of the
cookie's random id (the id itself is never stored, so a copy of the table logs nobody in)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.database import Base, UTCDateTime


class WebSession(Base):
    """A signed-in browser: the claims of the identity provider's token it was opened with (the
    same ``sub``, organisation and roles an API token carries) and its CSRF token."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200))
    organisation_key: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list] = mapped_column(JSON)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
