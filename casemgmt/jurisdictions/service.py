"""Queries over the jurisdiction hierarchy."""

from __future__ import annotations

from sqlalchemy import String, bindparam, func, select
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


# Built once (it runs for every transition that makes a step ready).
_NEAREST = (
    select(Organisation.kind, Organisation.id)
    .join(Jurisdiction, Jurisdiction.id == Organisation.jurisdiction_id)
    .where(Organisation.kind.in_(bindparam("kinds", expanding=True)),
           bindparam("path", type_=String).startswith(Jurisdiction.path))
    .order_by(Organisation.kind, func.length(Jurisdiction.path).desc(), Organisation.id)
)


def nearest_serving_organisations(session: Session, kinds: set[str], jurisdiction_path: str) -> dict[str, int]:
    """For each kind, the organisation that serves the place nearest to it (an office of the town
    before the Kreis office; the lowest id among equals), in one query. Kinds nobody serves are
    missing from the result."""
    if not kinds:
        return {}
    rows = session.execute(_NEAREST, {"kinds": sorted(kinds), "path": jurisdiction_path}).all()
    nearest: dict[str, int] = {}
    for kind, organisation_id in rows:
        nearest.setdefault(kind, organisation_id)
    return nearest


def area_organisation_ids(jurisdiction_path: str):
    """Ids of the organisations in a jurisdiction and below it (an officer's area), as a select."""
    return (select(Organisation.id).join(Jurisdiction, Jurisdiction.id == Organisation.jurisdiction_id)
            .where(Jurisdiction.path.startswith(jurisdiction_path)))


def steering_area(session: Session, organisation_id: int) -> Jurisdiction:
    """The Kreis or kreisfreie Stadt an organisation belongs to: the area of the Lenkungsgruppe it
    works with. An organisation above every Kreis (a Land office) has its own jurisdiction."""
    org = session.get(Organisation, organisation_id)
    assert org is not None
    here = own = session.get(Jurisdiction, org.jurisdiction_id)
    while here is not None and here.level not in ("kreis", "kreisfreie_stadt"):
        here = session.get(Jurisdiction, here.parent_id) if here.parent_id else None
    return here if here is not None else own
