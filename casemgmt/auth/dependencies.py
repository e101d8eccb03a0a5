"""FastAPI dependencies that turn a bearer token into an :class:`Actor` and check permissions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from casemgmt.auth.tokens import TokenClaims, verify_once
from casemgmt.chains.engine import Actor
from casemgmt.database import session_scope
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.problems import Forbidden, NotAuthenticated, UnknownOrganisation

_bearer = HTTPBearer(auto_error=False, description="JWT from the municipal identity provider")


def get_session(request: Request) -> Iterator[Session]:
    for session in session_scope(request.app.state.sessionmaker):
        # Kept on the request so that a refusal answered inside the route (the web screens) can
        # end this transaction before its audit row is written in a transaction of its own.
        request.state.db_session = session
        yield session


def current_actor(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    session: Session = Depends(get_session),
) -> Actor:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("send a bearer token: Authorization: Bearer <token>")
    claims = verify_once(request.scope, request.app.state.verifier, credentials.credentials)
    return actor_for_claims(request, session, claims)


# Built once: every request with a token runs it, and building it anew cost more Python time than
# the database spends on it.
_ORGANISATION_OF_KEY = (
    select(Organisation.id, Organisation.kind, Jurisdiction.path)
    .join(Jurisdiction, Jurisdiction.id == Organisation.jurisdiction_id)
    .where(Organisation.key == bindparam("organisation_key"))
)


def actor_for_claims(request: Request, session: Session, claims: TokenClaims) -> Actor:
    """The :class:`Actor` of verified claims (an API token's, or those a web session was opened
    with), set on the request for the access log and the audit of refusals."""
    row = session.execute(_ORGANISATION_OF_KEY, {"organisation_key": claims.organisation_key}).one_or_none()
    # No rollback here: the request's service call continues this transaction (one BEGIN and
    # one COMMIT per request instead of two of each).
    if row is None:
        raise UnknownOrganisation(f"organisation '{claims.organisation_key}' is not known here")
    request.state.organisation_key = claims.organisation_key  # for the access log
    policy = request.app.state.policies.roles
    roles = policy.known(list(claims.roles))
    request.state.actor = Actor(
        user_id=claims.user_id,
        organisation_id=row.id,
        organisation_kind=row.kind,
        jurisdiction_path=row.path,
        roles=roles,
        installation_wide=policy.installation_wide(roles),
    )
    return request.state.actor


def require(permission: str) -> Callable[..., Awaitable[Actor]]:
    """Dependency: the caller, who must hold ``permission`` through one of their roles."""

    # A coroutine: it does no I/O, so it runs on the event loop instead of a worker thread.
    async def _check(request: Request, actor: Actor = Depends(current_actor)) -> Actor:
        if not request.app.state.policies.roles.allows(actor.roles, permission):
            raise Forbidden(
                f"your roles ({', '.join(sorted(actor.roles)) or 'none'}) do not allow {permission}",
                permission=permission,
            )
        return actor

    _check.__name__ = f"require_{permission.replace('.', '_')}"
    return _check
