"""What the operator sees: health probes, Prometheus metrics, JSON log lines with request ids, and
the contract defects a fuzzing run found (405 without Allow, non-UTF-8 bodies, authentication
after body errors, numbers taken for date-times, undocumented answers)."""

from __future__ import annotations

import json
import logging

import pytest
from http_helpers import ok, problem
from test_api import new_person, started
from test_handovers_api import ABH, KI, SOZ, handover, respond

from casemgmt.observability import JsonFormatter


def test_liveness_and_readiness(client):
    assert ok(client.get("/health/live")) == {"status": "ok"}
    assert ok(client.get("/health")) == {"status": "ok"}
    assert ok(client.get("/health/ready")) == {"status": "ready"}


def test_readiness_fails_on_a_database_behind_the_code(client, app, monkeypatch):
    monkeypatch.setattr(app.state, "migration_head", "9999")
    resp = client.get("/health/ready")
    body = problem(resp, 503, "not-ready")
    assert body["failing"] == ["migrations"]
    assert resp.headers["Retry-After"]
    # Nothing an attacker could use: no versions, URLs or error texts.
    assert "9999" not in resp.text and "postgresql" not in resp.text


def test_request_id_is_taken_or_made_and_returned(client, auth):
    resp = client.get("/templates", headers={**auth(*KI), "X-Request-ID": "lb-4711.a"})
    assert resp.headers["X-Request-ID"] == "lb-4711.a"
    made = client.get("/templates", headers=auth(*KI)).headers["X-Request-ID"]
    assert len(made) == 32
    # A value that could forge log lines is replaced, not echoed.
    forged = client.get("/persons/nope", headers={"X-Request-ID": 'x"\n{"level":"error"}'})
    body = problem(forged, 401, "not-authenticated")
    assert body["request_id"] == forged.headers["X-Request-ID"] != 'x"\n{"level":"error"}'


def test_metrics_count_requests_by_route_template_and_transitions(client, auth, world):
    ki, soz = auth(*KI), auth(*SOZ)
    chain = started(client, ki, new_person(client, ki, world.jurisdictions["wittmar"]))
    ok(client.post(f"/chains/{chain['id']}/steps/arrival_assignment/actions",
                   json={"action": "start"}, headers=soz))
    ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'casemgmt_http_requests_total{method="POST",route="/chains/{chain_id}/steps/{step_key}/actions",status="200"}' in text
    assert 'casemgmt_step_transitions_total{action="start",template="refugee_recognised"}' in text
    assert 'casemgmt_handovers_waiting{organisation_kind="auslaenderbehoerde"} 1.0' in text
    assert "casemgmt_audit_append_duration_seconds_count" in text
    assert "casemgmt_db_pool_connections_in_use" in text
    # No ids in labels: neither the chain's nor the person's id appears anywhere.
    assert chain["id"] not in text and chain["person_id"] not in text


def test_metrics_token(client, app):
    app.state.settings = app.state.settings.model_copy(update={"metrics_token": "scrape-me"})
    problem(client.get("/metrics"), 401, "not-authenticated")
    problem(client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401, "not-authenticated")
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured_logs():
    handler = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_logs_carry_request_facts_and_no_person_data(client, auth, world, captured_logs):
    ki, soz, abh = auth(*KI), auth(*SOZ), auth(*ABH)
    seeded = {"family_name": "Qarawani", "given_names": "Leyla", "birth_date": "1987-11-23"}
    person = new_person(client, ki, world.jurisdictions["wittmar"], **seeded)
    ok(client.get(f"/persons/{person['id']}", headers=ki))
    ok(client.post("/persons/search", json={"family_name": "Qarawani", "given_names": "Leyla",
                                            "birth_date": "1987-11-23"}, headers=ki))
    chain = started(client, ki, person)
    ok(client.post(f"/chains/{chain['id']}/steps/arrival_assignment/actions",
                   json={"action": "start"}, headers=soz))
    # A free text that is refused (it names the person) and one that is kept.
    client.post(f"/chains/{chain['id']}/steps/arrival_assignment/actions",
                json={"action": "block", "reason": "Leyla Qarawani wartet auf Termin"}, headers=soz)
    ok(client.post(f"/chains/{chain['id']}/steps/arrival_assignment/actions",
                   json={"action": "block", "reason": "Unterlagen fehlen noch"}, headers=soz))
    h = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    ok(client.get(f"/handovers/{h['id']}", headers=abh))
    ok(respond(client, abh, h["id"], "acknowledge"))
    client.patch(f"/persons/{person['id']}", json={"fields": {"given_names": "Leyla Mariam"}}, headers=ki)
    client.post("/persons", content=b'{"fields": {"family_name": "Qarawani"', headers={
        **ki, "content-type": "application/json"})

    # httpx (httpx2 where installed, as Authlib wants it) logs the test client's own requests (the
    # "browser"), not the service's.
    client_loggers = ("httpx", "httpcore", "httpx2", "httpcore2")
    captured_logs[:] = [line for line in captured_logs if json.loads(line)["logger"] not in client_loggers]
    lines = [json.loads(line) for line in captured_logs]
    access = [line for line in lines if line["logger"] == "casemgmt.access"]
    assert len(access) >= 10
    for line in access:
        assert {"time", "level", "request_id", "method", "route", "status", "duration_ms"} <= line.keys()
    read = next(line for line in access if line["route"] == "/persons/{person_id}" and line["method"] == "GET")
    assert read["user"] == "user-ennetal_ki" and read["organisation"] == "ennetal_ki" and read["status"] == 200
    secrets = [*seeded.values(), "Leyla Mariam", "Unterlagen fehlen", "wartet auf Termin", person["id"],
               ki["Authorization"].split()[1], "EW-TEST-1"]
    assert not [line for line in captured_logs if any(v in line for v in secrets)]


def test_405_names_the_allowed_methods(client):
    resp = client.delete("/templates")
    problem(resp, 405, "method-not-allowed")
    assert resp.headers["Allow"] == "GET"
    # Two routes on one path: both methods are named.
    resp = client.delete("/persons/3f1e0000-0000-4000-8000-000000000000")
    problem(resp, 405, "method-not-allowed")
    assert resp.headers["Allow"] == "GET, PATCH"


def test_a_body_that_is_not_utf8_is_a_documented_422_after_authentication(client, auth):
    bad = b'{"family_name": "\xff\xfe"}'
    headers = {"content-type": "application/json"}
    problem(client.post("/persons", content=bad, headers=headers), 401, "not-authenticated")
    body = problem(client.post("/persons", content=bad, headers={**headers, **auth(*KI)}), 422, "validation-error")
    assert body["errors"][0]["type"] == "json_invalid"


def test_invalid_json_without_a_token_is_401(client, auth):
    headers = {"content-type": "application/json"}
    problem(client.post("/persons", content=b"{nope", headers=headers), 401, "not-authenticated")
    problem(client.post("/persons", content=b"{nope", headers={**headers, **auth(*KI)}), 422, "validation-error")


def test_date_times_are_rfc3339_text_only(client, auth):
    dpo = auth("ennetal_ki", "dpo")
    problem(client.get("/audit", params={"to": "0.5"}, headers=dpo), 422, "validation-error")
    problem(client.get("/audit", params={"from": "1700000000"}, headers=dpo), 422, "validation-error")
    ok(client.get("/audit", params={"from": "2026-03-01T00:00:00Z"}, headers=dpo))


def test_policy_values_are_enums_in_the_contract():
    from casemgmt.app import openapi_document

    schemas = openapi_document()["components"]["schemas"]
    consent = schemas["ConsentIn"]["properties"]
    assert "case_management" in consent["purpose"]["enum"]
    assert "health" in consent["categories"]["items"]["enum"]
    assert "refugee_recognised" in schemas["ChainStart"]["properties"]["template_key"]["enum"]
    doc = openapi_document()["paths"]["/problems/{slug}"]["get"]["responses"]
    assert "404" in doc


def test_an_unexpected_error_is_a_500_problem_with_the_request_id(client, auth, app, monkeypatch, captured_logs):
    def broken(*_args, **_kwargs):
        raise RuntimeError("Qarawani 1987-11-23")  # a message that quotes a value

    monkeypatch.setattr("casemgmt.chains.views._template_out", broken)
    resp = client.get("/templates/refugee_recognised", headers=auth(*KI))
    body = problem(resp, 500, "internal-error")
    assert body["request_id"] == resp.headers["X-Request-ID"]
    logged = [json.loads(line) for line in captured_logs if "RuntimeError" in line]
    assert logged and logged[0]["request_id"] == body["request_id"]
    assert not [line for line in captured_logs if "Qarawani" in line]
