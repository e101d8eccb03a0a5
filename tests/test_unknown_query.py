"""A query parameter the endpoint does not take is a 422 naming it, on every endpoint, instead of
being ignored (``GET /audit?person=…`` used to return every person's rows)."""

from __future__ import annotations

import uuid

import pytest
from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.testclient import TestClient
from http_helpers import ok, problem
from test_api import new_person

from casemgmt.app import openapi_document
from casemgmt.problems import install_handlers
from casemgmt.querycheck import reject_unknown_query

DPO = ("ennetal_ki", "dpo")
KI = ("ennetal_ki", "case_manager")


def operations() -> list[tuple[str, str, dict]]:
    """Every operation of the API, from the document the app serves."""
    doc = openapi_document()
    return [(method.upper(), path, op) for path, ops in doc["paths"].items() for method, op in ops.items()]


def concrete(path: str, op: dict) -> str:
    """``path`` with plausible values for its parameters (they are checked after the query)."""
    for param in op.get("parameters", []):
        if param["in"] != "path":
            continue
        schema = param.get("schema", {})
        value = "1" if schema.get("type") == "integer" else (
            str(uuid.uuid4()) if schema.get("format") == "uuid" else "validation-error")
        path = path.replace("{" + param["name"] + "}", value)
    return path


OPERATIONS = operations()


@pytest.mark.parametrize("method, path, op", OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_endpoint_refuses_an_unknown_query_parameter(client, auth, method, path, op):
    url = concrete(path, op) + "?limit=5&persn=1"
    secured = "security" in op
    if secured:
        # Without a token the answer is 401 first, with or without the misspelt parameter.
        problem(client.request(method, url), 401, "not-authenticated")
    resp = client.request(method, url, headers=auth("ennetal_ki", "admin"))
    body = problem(resp, 422, "validation-error")
    fields = [e["field"] for e in body["errors"]]
    assert "query.persn" in fields
    known = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
    assert ("query.limit" in fields) == ("limit" not in known)


def test_misspelt_audit_filter_no_longer_returns_everything(client, auth):
    assert len(OPERATIONS) >= 50 and ("GET", "/audit") in {(m, p) for m, p, _ in OPERATIONS}
    ki = auth(*KI)
    p = new_person(client, ki)
    new_person(client, ki)
    dpo = auth(*DPO)
    body = problem(client.get(f"/audit?person={p['id']}", headers=dpo), 422, "validation-error")
    assert body["errors"][0]["field"] == "query.person"
    assert "person_id" in body["errors"][0]["message"]  # says what the endpoint takes
    rows = ok(client.get(f"/audit?person_id={p['id']}", headers=dpo))
    assert rows["items"] and all(r["person_id"] == p["id"] for r in rows["items"])


def test_declared_parameters_and_aliases_still_work(client, auth):
    ok(client.get("/audit?from=2026-01-01T00:00:00Z&limit=5", headers=auth(*DPO)))
    ok(client.get("/handovers/incoming?state=pending&limit=10", headers=auth(*KI)))
    problem(client.get("/handovers/incoming?State=pending", headers=auth(*KI)), 422, "validation-error")
    # The documentation pages are not API routes and take what they like.
    for url in ("/docs?x=1", "/redoc?x=1", "/openapi.json?x=1"):
        assert client.get(url).status_code == 200, url


def test_parameters_of_dependencies_and_router_dependencies_count():
    """The check is generic: a query parameter declared by a dependency, or by a dependency of
    the router the endpoint was included with, is known; anything else is not."""

    def paging(page: int = Query(default=1)) -> int:
        return page

    def tenant(tenant: str = Query(default="a")) -> str:
        return tenant

    router = APIRouter(dependencies=[Depends(tenant)])

    @router.get("/things")
    def things(q: str | None = None, page: int = Depends(paging)) -> dict:
        return {"page": page}

    app = FastAPI(dependencies=[Depends(reject_unknown_query)])
    install_handlers(app)
    app.include_router(router, prefix="/v1")
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/v1/things?q=x&page=2&tenant=b").status_code == 200
        body = problem(c.get("/v1/things?q=x&pgae=2"), 422, "validation-error")
        assert [e["field"] for e in body["errors"]] == ["query.pgae"]
