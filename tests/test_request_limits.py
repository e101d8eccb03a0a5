"""Request size and shape, and request rates, as a client hammering the API meets them.

Bodies over 1 MiB are refused with 413 whether they announce their length or stream it; problem
bodies never echo megabytes of input; the expensive routes and all writes are rate-limited per
verified token subject and per client address with 429 and ``Retry-After``. Time for the limiter
is injected, never slept.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from http_helpers import ok, problem
from sqlalchemy import func, select
from test_api import new_person

from casemgmt.limits import MiB, Rate, RateLimiter, RequestLimits, TokenBuckets, route_class
from casemgmt.persons.models import Person

KI = ("ennetal_ki", "case_manager")
STEERING = ("ennetal_ki", "steering")


def persons_in_db(session_factory) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(Person))


def small_problem(resp, status: int, slug: str) -> dict[str, Any]:
    body = problem(resp, status, slug)
    assert len(resp.content) < 8 * 1024, f"{len(resp.content)} bytes of problem"
    return body


# --- body size -------------------------------------------------------------------------------


def big_person_body(size: int) -> bytes:
    return json.dumps({"fields": {"case_notes": "x" * size}}).encode()


def test_body_over_one_mib_is_refused_with_413(client, auth, session_factory):
    for size in (MiB + 1, 5 * MiB):
        resp = client.post("/persons", content=big_person_body(size),
                           headers={**auth(*KI), "content-type": "application/json"})
        body = small_problem(resp, 413, "payload-too-large")
        assert body["max_bytes"] == MiB
    assert persons_in_db(session_factory) == 0
    # Just under the limit the request reaches validation (and is refused there for other reasons).
    resp = client.post("/persons", content=big_person_body(MiB - 100),
                       headers={**auth(*KI), "content-type": "application/json"})
    assert resp.status_code != 413


def test_streamed_body_over_one_mib_is_refused(client, auth, session_factory):
    def chunks():
        yield b'{"fields": {"case_notes": "'
        for _ in range(40):
            yield b"y" * 64 * 1024
        yield b'"}}'

    resp = client.post("/persons", content=chunks(), headers={**auth(*KI), "content-type": "application/json"})
    small_problem(resp, 413, "payload-too-large")
    assert persons_in_db(session_factory) == 0


def _asgi_call(app, headers: list[tuple[bytes, bytes]], stream, method: str = "POST") -> tuple[list[dict], dict]:
    """Run an ASGI app with a body from ``stream``; returns what it sent and the stream stats."""
    sent: list[dict] = []
    stats = {"bytes_received": 0}

    async def receive():
        chunk = next(stream, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        stats["bytes_received"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/persons", "headers": headers,
             "query_string": b"", "client": ("10.0.0.1", 5000), "app": None}
    asyncio.run(app(scope, receive, send))
    return sent, stats


def test_an_endless_body_is_cut_off_just_after_the_limit():
    """The middleware never buffers more than the limit plus one chunk, and the app never runs,
    even when the client's Content-Length is a lie."""
    called = []

    async def app(scope, receive, send):
        called.append(scope)

    def endless():
        while True:
            yield b"z" * 65536

    for headers in ([], [(b"content-length", b"10")]):
        sent, stats = _asgi_call(RequestLimits(app), headers, endless())
        assert sent[0]["status"] == 413
        assert stats["bytes_received"] <= MiB + 65536
        assert json.loads(sent[1]["body"])["type"] == "/problems/payload-too-large"
    assert called == []


def test_declared_length_over_the_limit_is_refused_before_reading():
    def untouched():
        raise AssertionError("the body was read")
        yield b""  # pragma: no cover

    async def app(scope, receive, send):
        raise AssertionError("the app ran")

    sent, _ = _asgi_call(RequestLimits(app), [(b"content-length", str(50 * MiB).encode())], untouched())
    assert sent[0]["status"] == 413


# --- shape of bodies and of problems ---------------------------------------------------------


def test_patch_with_more_fields_than_the_catalogue_is_one_short_422(client, auth, session_factory):
    ki = auth(*KI)
    person = new_person(client, ki)
    fields = {f"feld_{i:05d}": "x" for i in range(5000)}
    body = small_problem(client.patch(f"/persons/{person['id']}", json={"fields": fields}, headers=ki),
                         422, "validation-error")
    assert body["errors"][0]["field"] == "body.fields"
    assert "feld_0" not in json.dumps(body)
    # The same for a new person.
    small_problem(client.post("/persons", json={"fields": fields}, headers=ki), 422, "validation-error")
    assert persons_in_db(session_factory) == 1


def test_validation_errors_are_capped_with_a_count(client, auth):
    fields = {f"Feld-{i}": i for i in range(500)}  # not keys: one error each
    body = small_problem(client.post("/persons", json={"fields": fields}, headers=auth(*KI)),
                         422, "validation-error")
    assert len(body["errors"]) == 20
    assert body["errors_omitted"] == 480


@pytest.mark.parametrize("payload", [
    {"fields": {"a" * 200_000: 1}},                      # a key that is far too long
    {"x" * 300_000: 1},                                   # an unknown member
    {"family_name": "N" * 300_000, "given_names": "x", "birth_date": "1990-01-01"},
    {"family_name": ["N" * 1000] * 300, "given_names": "x", "birth_date": "1990-01-01"},
])
def test_long_input_is_not_echoed(client, auth, payload):
    url = "/persons/search" if "family_name" in payload else "/persons"
    body = small_problem(client.post(url, json=payload, headers=auth(*KI)), 422, "validation-error")
    assert "a" * 400 not in json.dumps(body) and "x" * 400 not in json.dumps(body)


# --- rate limits -----------------------------------------------------------------------------


class Monotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def limited(app, settings):
    """The app with a limiter on a clock the test moves, and small figures: 5 expensive requests
    per user, 8 per address, 4 writes per user, 6 per address, per 60 s."""
    figures = {"rate_limit_window_seconds": 60, "rate_limit_expensive_per_subject": 5,
               "rate_limit_expensive_per_address": 8, "rate_limit_writes_per_subject": 4,
               "rate_limit_writes_per_address": 6}
    clock = Monotonic()

    def install() -> Monotonic:
        app.state.rate_limiter = RateLimiter.from_settings(settings.model_copy(update=figures), clock)
        return clock

    return install


def from_address(app, address: str) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, client=(address, 40000))


def limited_429(resp) -> int:
    body = problem(resp, 429, "rate-limited")
    retry = resp.headers["retry-after"]
    assert retry.isdigit() and int(retry) >= 1
    assert body["retry_after"] == int(retry)
    return int(retry)


def test_hammering_a_report_is_stopped_with_the_default_figures(app, client, auth, settings, release):
    """100 report requests within a minute (here: within one instant of the limiter's clock)."""
    release("2025-Q1", datetime(2026, 1, 5, tzinfo=UTC))  # something for the steering group to read
    app.state.rate_limiter = RateLimiter.from_settings(settings, Monotonic())
    steering = auth(*STEERING)
    codes = [client.get("/reports/steering", headers=steering).status_code for _ in range(100)]
    assert codes.count(200) == 30 and codes[:30] == [200] * 30
    assert set(codes[30:]) == {429}
    limited_429(client.get("/exports/ocel", headers=steering))  # the same allowance, other route


def test_n_plus_first_request_is_refused_until_the_window_has_passed(app, client, auth, limited, release):
    release("2025-Q1", datetime(2026, 1, 5, tzinfo=UTC))  # something for the steering group to read
    clock = limited()
    steering = auth(*STEERING, user="anna")
    for _ in range(5):
        ok(client.get("/reports/steering", headers=steering))
    retry = limited_429(client.get("/reports/steering", headers=steering))
    assert retry == 12  # one request per 60 s / 5
    # Another user of the same organisation (another token subject) is not affected ...
    assert client.get("/reports/steering.csv", headers=auth(*STEERING, user="bert")).status_code == 200
    # ... nor is a colleague at another address.
    with from_address(app, "10.20.30.40") as other:
        assert other.get("/exports/ocel", headers=auth(*STEERING, user="carla")).status_code == 200
    # Waiting Retry-After seconds gives one more request, not more.
    clock.t += retry
    ok(client.get("/reports/steering", headers=steering))
    limited_429(client.get("/reports/steering", headers=steering))
    # After a whole window of quiet the full allowance is back.
    clock.t += 60
    for _ in range(5):
        ok(client.get("/reports/steering", headers=steering))
    limited_429(client.get("/reports/steering", headers=steering))


def test_one_address_with_many_tokens_is_limited_per_address(app, client, auth, limited, release):
    release("2025-Q1", datetime(2026, 1, 5, tzinfo=UTC))  # something for the steering group to read
    limited()
    codes = [client.get("/exports/ocel", headers=auth(*STEERING, user=f"u{i}")).status_code for i in range(10)]
    assert codes == [200] * 8 + [429] * 2
    with from_address(app, "192.0.2.77") as other:
        assert other.get("/exports/ocel", headers=auth(*STEERING, user="u0")).status_code == 200


def test_writes_and_searches_are_limited(app, client, auth, limited, world):
    limited()
    url = f"/organisations/{world.organisations['ennetal_abh']}/contacts/999999"
    admin = auth("ennetal_ki", "admin", user="admin-1")
    codes = [client.delete(url, headers=admin).status_code for _ in range(5)]
    assert codes == [404] * 4 + [429]
    search = {"family_name": "Muster", "given_names": "Max", "birth_date": "1990-01-01"}
    ki = auth(*KI, user="writer")
    with from_address(app, "10.0.0.2") as c:
        codes = [c.post("/persons/search", json=search, headers=ki).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
    dpo = auth("ennetal_ki", "dpo", user="dpo-1")
    with from_address(app, "10.0.0.3") as c:
        codes = [c.get("/audit", headers=dpo).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]
    # Reading is not limited.
    assert {client.get("/organisations", headers=ki).status_code for _ in range(50)} == {200}


def test_forged_tokens_do_not_use_up_someone_elses_allowance(app, client, auth, limited, settings, release):
    """The subject counted is that of a verified token: an attacker who writes the victim's
    ``sub`` into an unsigned token from another address does not lock the victim out."""
    release("2025-Q1", datetime(2026, 1, 5, tzinfo=UTC))  # something for the steering group to read
    limited()
    victim = auth(*STEERING, user="victim")
    header, payload, _sig = victim["Authorization"].removeprefix("Bearer ").split(".")
    forged = {"Authorization": f"Bearer {header}.{payload}.AAAA"}
    with from_address(app, "198.51.100.9") as attacker:
        for _ in range(20):
            assert attacker.get("/reports/steering", headers=forged).status_code in (401, 429)
    for _ in range(5):
        ok(client.get("/reports/steering", headers=victim))


def test_route_classes():
    assert route_class("GET", "/exports/ocel") == "expensive"
    assert route_class("GET", "/reports/steering.html") == "expensive"
    for path in ("/exports/xes", "/exports/releases/3/ocel", "/reports/steering/releases/3.xlsx",
                 "/reports/on-demand", "/reports/steering/releases"):
        assert route_class("GET", path) == "expensive", path
    assert route_class("POST", "/persons/search") == "expensive"
    assert route_class("GET", "/audit") == "expensive"
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        assert route_class(method, "/persons/x") == "write"
    assert route_class("GET", "/persons/x") is None


def test_limiter_memory_is_bounded_and_o1():
    clock = Monotonic()
    limiter = RateLimiter({("write", "address"): Rate(3, 60)}, clock, max_keys=100)
    for i in range(10_000):
        assert limiter.hit("write", {"address": f"10.0.{i // 256}.{i % 256}"}) == 0
    assert limiter.keys_held() <= 100
    # The most recent keys are still counted.
    key = {"address": "10.0.39.15"}
    limiter.hit("write", key)
    limiter.hit("write", key)
    assert limiter.hit("write", key) > 0
    # A limit of 0 is off.
    off = TokenBuckets(Rate(0, 60), clock)
    assert off.wait("k", clock()) == 0
