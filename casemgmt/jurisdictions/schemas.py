"""API shapes for jurisdictions and organisations."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class JurisdictionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    key: str
    name: str
    level: str
    parent_id: int | None


class OrganisationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    key: str
    name: str
    kind: str
    kind_title: str
    jurisdiction_id: int
    jurisdiction_name: str


class OrganisationKindOut(BaseModel):
    key: str
    title: str
    description: str
