"""API shapes of the caller's own session: who am I, for which organisation, allowed to do what."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RoleOut(BaseModel):
    key: str
    title: str


class MyOrganisationOut(BaseModel):
    id: int
    key: str
    name: str
    kind: str
    kind_title: str
    jurisdiction_id: int
    jurisdiction_name: str


class MeOut(BaseModel):
    """The authenticated user as the service sees them: what a client needs to show only the
    screens and buttons the user's roles allow."""

    user_id: str
    organisation: MyOrganisationOut
    roles: list[RoleOut] = Field(description="Roles of the token this installation knows; others are ignored.")
    installation_wide: bool = Field(
        description="A role covers the whole installation in officer and administration views, "
                    "not only the organisation's jurisdiction and below.")
    default_purpose: str | None = Field(
        description="Purpose person data is read for when a request names none (by organisation kind).")
    permissions: list[str] = Field(description="Every permission the roles grant, sorted.")
