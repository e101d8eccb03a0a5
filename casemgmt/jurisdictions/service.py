"""Queries over the jurisdiction hierarchy."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casemgmt.jurisdictions.models import Jurisdiction, Organisation


def serving_organisations(session: Session, kind: str, jurisdiction_id: int) -> list[Organisation]:
    """Organisations of ``kind`` that serve a jurisdiction: those in it first, then those of the
    jurisdictions above it (the Kreis over a town, the Land over a Kreis)."""
    target = session.get(Jurisdiction, jurisdiction_id)
    if target is None:
        return []
    stmt = (
        select(Organisation)
        .join(Jurisdiction, Jurisdiction.id == Organisation.jurisdiction_id)
        .where(Organisation.kind == kind)
        .order_by(func.length(Jurisdiction.path).desc(), Organisation.id)
    )
    return [
        org for org in session.scalars(stmt)
        if target.path.startswith(org.jurisdiction.path)
    ]
