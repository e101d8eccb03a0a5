"""Read endpoints for jurisdictions, organisations and organisation kinds."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.jurisdictions.models import Jurisdiction, JurisdictionLevel, Organisation
from casemgmt.jurisdictions.schemas import (
    JurisdictionOut,
    OrganisationKindOut,
    OrganisationOut,
)
from casemgmt.problems import NotFound
from casemgmt.validation import DbId, Key

router = APIRouter(tags=["reference"], dependencies=[Depends(require("reference.read"))])


@router.get("/jurisdictions", response_model=list[JurisdictionOut])
def list_jurisdictions(
    level: JurisdictionLevel | None = None,
    parent_id: DbId | None = None,
    session: Session = Depends(get_session),
):
    stmt = select(Jurisdiction).order_by(Jurisdiction.path)
    if level is not None:
        stmt = stmt.where(Jurisdiction.level == level.value)
    if parent_id is not None:
        stmt = stmt.where(Jurisdiction.parent_id == parent_id)
    return list(session.scalars(stmt))


@router.get("/jurisdictions/{jurisdiction_id}", response_model=JurisdictionOut)
def get_jurisdiction(jurisdiction_id: DbId, session: Session = Depends(get_session)):
    found = session.get(Jurisdiction, jurisdiction_id)
    if found is None:
        raise NotFound(f"no jurisdiction {jurisdiction_id}", resource="jurisdiction", id=str(jurisdiction_id))
    return found


def _org_out(request: Request, org: Organisation) -> OrganisationOut:
    kinds = request.app.state.policies.organisation_kinds
    return OrganisationOut(
        id=org.id, key=org.key, name=org.name, kind=org.kind,
        kind_title=kinds[org.kind].title if org.kind in kinds else org.kind,
        jurisdiction_id=org.jurisdiction_id, jurisdiction_name=org.jurisdiction.name,
    )


@router.get("/organisations", response_model=list[OrganisationOut])
def list_organisations(
    request: Request,
    kind: Key | None = None,
    jurisdiction_id: DbId | None = None,
    session: Session = Depends(get_session),
):
    stmt = select(Organisation).order_by(Organisation.name)
    if kind is not None:
        stmt = stmt.where(Organisation.kind == kind)
    if jurisdiction_id is not None:
        stmt = stmt.where(Organisation.jurisdiction_id == jurisdiction_id)
    return [_org_out(request, o) for o in session.scalars(stmt)]


@router.get("/organisations/{organisation_id}", response_model=OrganisationOut)
def get_organisation(request: Request, organisation_id: DbId, session: Session = Depends(get_session)):
    org = session.get(Organisation, organisation_id)
    if org is None:
        raise NotFound(f"no organisation {organisation_id}", resource="organisation", id=str(organisation_id))
    return _org_out(request, org)


@router.get("/organisation-kinds", response_model=list[OrganisationKindOut])
def list_organisation_kinds(request: Request):
    return [OrganisationKindOut(key=k.key, title=k.title, description=k.description)
            for k in request.app.state.policies.organisation_kinds.values()]
