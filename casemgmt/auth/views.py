"""The caller's own session: ``GET /me``. Thin: the roles policy and the organisation row."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import current_actor, get_session
from casemgmt.auth.schemas import MeOut, MyOrganisationOut, RoleOut
from casemgmt.chains.engine import Actor
from casemgmt.jurisdictions.models import Organisation

router = APIRouter(tags=["session"])


@router.get("/me", response_model=MeOut)
def who_am_i(request: Request, actor: Actor = Depends(current_actor), session: Session = Depends(get_session)):
    """Who the token says you are: user, organisation, roles, the default purpose of your
    organisation kind and every permission your roles grant. Any authenticated user may ask."""
    policies = request.app.state.policies
    org = session.get(Organisation, actor.organisation_id)
    assert org is not None  # current_actor found it in this transaction
    kinds = policies.organisation_kinds
    out = MeOut(
        user_id=actor.user_id,
        organisation=MyOrganisationOut(
            id=org.id, key=org.key, name=org.name, kind=org.kind,
            kind_title=kinds[org.kind].title if org.kind in kinds else org.kind,
            jurisdiction_id=org.jurisdiction_id, jurisdiction_name=org.jurisdiction.name),
        roles=[RoleOut(key=r, title=policies.roles.titles.get(r, r)) for r in sorted(actor.roles)],
        installation_wide=actor.installation_wide,
        default_purpose=policies.data.default_purpose.get(actor.organisation_kind),
        permissions=sorted({p for r in actor.roles for p in policies.roles.grants.get(r, ())}),
    )
    session.rollback()
    return out
