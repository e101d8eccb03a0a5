"""The answer to an acknowledgement, a rejection or a withdrawal is built in the transaction that
writes it, not read again after the commit: it must show exactly what opening the handover shows
right after, and acknowledging a step handover must still give the step to the receiver (with a
``step_assigned`` event and a new chain version). On PostgreSQL the writes go in one statement; on
SQLite, the README's demo database, one statement each: both are walked here."""

from __future__ import annotations

from typing import Any

from http_helpers import ok
from test_api import events, get_chain, new_person, started, step
from test_handovers_api import ABH, KI, handover, respond


def _as_read(client, headers, answer: dict[str, Any]) -> None:
    seen = ok(client.get(f"/handovers/{answer['id']}", headers=headers))
    # Opening it as the receiver also shows the package's values; an answer never does.
    seen["package"] |= {"values": None, "withheld_now": []}
    assert answer == seen


def _walk(client, auth, organisations: dict[str, int], wittmar: int, clock) -> None:
    ki, abh = auth(*KI), auth(*ABH)
    person = new_person(client, ki, wittmar)
    chain = started(client, ki, person)
    asked = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    clock.advance(days=1)

    done = ok(respond(client, abh, asked["id"], "acknowledge", expected_version=asked["version"]))
    assert (done["state"], done["version"], done["allowed_actions"]) == ("acknowledged", 2, [])
    assert [e["action"] for e in done["events"]] == ["request", "acknowledge"]
    _as_read(client, abh, done)
    after = get_chain(client, ki, chain["id"])
    assert step(after, "residence_permit")["assigned_organisation_id"] == organisations["ennetal_abh"]
    assert after["version"] == chain["version"] + 1
    assigned = [e for e in events(client, ki, chain["id"]) if e["kind"] == "step_assigned"]
    assert [(e["step_key"], e["organisation_id"]) for e in assigned] == [
        ("residence_permit", organisations["ennetal_abh"])]

    # A rejection and a withdrawal change nothing on the chain; their answers are what a read shows.
    rejected = ok(handover(client, ki, chain["id"], kind="step", step_key="registration"), 201)
    answer = ok(respond(client, auth(*rejected_by(rejected, organisations)), rejected["id"], "reject",
                        reason="nicht zuständig"))
    assert (answer["state"], answer["response_reason"], answer["waiting_calendar_days"]) == (
        "rejected", "nicht zuständig", None)
    _as_read(client, ki, answer)
    withdrawn = ok(handover(client, ki, chain["id"], kind="step", step_key="registration"), 201)
    answer = ok(respond(client, ki, withdrawn["id"], "withdraw"))
    assert [e["action"] for e in answer["events"]] == ["request", "withdraw"]
    _as_read(client, ki, answer)
    assert get_chain(client, ki, chain["id"])["version"] == after["version"]


def rejected_by(h: dict[str, Any], organisations: dict[str, int]) -> tuple[str, str]:
    key = next(k for k, v in organisations.items() if v == h["receiver"]["id"])
    return key, "clerk"


def test_answers_are_what_a_read_shows_on_postgresql(client, auth, world, clock):
    _walk(client, auth, world.organisations, world.jurisdictions["wittmar"], clock)


def test_answers_are_what_a_read_shows_on_sqlite(sqlite_app, auth):
    client, world, clock, _ = sqlite_app
    _walk(client, auth, world.organisations, world.jurisdictions["wittmar"], clock)


def test_an_acknowledgement_appends_its_audit_rows_without_locking_the_head_first(client, auth, world, clock):
    """The handover's lock brings the head of the person's audit stream along, so the commit
    appends in one statement (audit.head_hint_column); the trail still verifies."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    ki, abh = auth(*KI), auth(*ABH)
    chain = started(client, ki, new_person(client, ki, world.jurisdictions["wittmar"]))
    asked = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        ok(respond(client, abh, asked["id"], "acknowledge", expected_version=asked["version"]))
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    head_locks = [s for s in seen if s.lstrip().startswith("SELECT audit_head.stream")]  # audit._LOCK_HEADS
    appends = [s for s in seen if "INSERT INTO audit_events" in s]
    assert head_locks == [] and len(appends) == 1, (head_locks, appends)
