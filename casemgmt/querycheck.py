"""Unknown query parameters are an error, on every endpoint.

FastAPI ignores query parameters an endpoint does not declare, so a misspelt filter silently
widens a search: ``GET /audit?person=<id>`` (instead of ``person_id``) returns every person's rows.
:func:`reject_unknown_query` is installed once as an application-wide dependency and compares the
request's query keys with the query parameters the matched route declares, its dependencies'
included, so a new endpoint cannot forget it. The answer is 422 ``validation-error`` naming each
unknown parameter.

A route that needs a token still answers 401 first: the token is verified before the unknown
parameter is reported. The documentation routes (``/docs``, ``/redoc``, ``/openapi.json``) are
not API routes and are not checked.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel

from casemgmt.auth.dependencies import current_actor
from casemgmt.auth.tokens import verify_once
from casemgmt.problems import NotAuthenticated, ValidationFailed

# id(dependant) -> (dependant, declared query names, needs a token); the dependant is kept so a
# recycled id of a collected one never matches.
_CACHE: dict[int, tuple[Any, frozenset[str], bool]] = {}


def _route_dependant(request: Request) -> Any:
    """The matched route's dependant, with the dependencies of the routers it was included by.
    Newer FastAPI keeps those in the effective route context; older ones merge them into the
    route itself."""
    context = request.scope.get("fastapi")
    effective = context.get("effective_route_context") if isinstance(context, dict) else None
    dependant = getattr(effective, "dependant", None)
    return dependant if dependant is not None else getattr(request.scope.get("route"), "dependant", None)


def _declared(dependant: Any) -> tuple[frozenset[str], bool]:
    cached = _CACHE.get(id(dependant))
    if cached is not None and cached[0] is dependant:
        return cached[1], cached[2]
    names: set[str] = set()
    needs_token = False
    stack = [dependant]
    while stack:
        d = stack.pop()
        needs_token = needs_token or d.call is current_actor
        for field in d.query_params:
            names.add(field.alias)
            annotation = getattr(field.field_info, "annotation", None)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):  # a query model
                names |= {f.alias or n for n, f in annotation.model_fields.items()}
        stack.extend(d.dependencies)
    _CACHE[id(dependant)] = (dependant, frozenset(names), needs_token)
    return frozenset(names), needs_token


def reject_unknown_query(request: Request) -> None:
    """Application-wide dependency: 422 for a query parameter the endpoint does not take."""
    if not request.query_params:
        return
    dependant = _route_dependant(request)
    if dependant is None:
        return
    declared, needs_token = _declared(dependant)
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in declared]
    if not unknown:
        return
    if needs_token:
        _authenticate(request)
    takes = ", ".join(sorted(declared)) or "none"
    errors = [{"field": f"query.{name}", "message": f"unknown query parameter (this endpoint takes: {takes})",
               "type": "extra_forbidden"} for name in unknown]
    raise ValidationFailed(f"query.{unknown[0]}: unknown query parameter", errors=errors)


def authenticate_if_needed(request: Request) -> None:
    """401 (``NotAuthenticated``) when the matched route needs a token and the request has no
    valid one; nothing otherwise. Used where FastAPI would report the body before the token."""
    dependant = _route_dependant(request)
    if dependant is not None and _declared(dependant)[1]:
        _authenticate(request)


def _authenticate(request: Request) -> None:
    """What the route's own authentication would say first: 401 without a valid token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticated("send a bearer token: Authorization: Bearer <token>")
    verify_once(request.scope, request.app.state.verifier, token.strip())
