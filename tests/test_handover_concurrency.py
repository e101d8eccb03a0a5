"""Concurrent responses to one handover, with real PostgreSQL connections: twenty clerks of the
receiving office acknowledge at once and exactly one succeeds, the others get a clear 409; an
acknowledgement racing the sender's withdrawal has exactly one winner; a Rechtskreiswechsel
acknowledged twenty times completes the sending step once.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from http_helpers import PROBLEM_JSON, ok, problem
from sqlalchemy import func, select
from test_api import acted, new_person, started
from test_handovers_api import ABH, JC, KI, SOZ, handover, respond, walk_to

from casemgmt.chains.models import ChainEvent, ChainStep
from casemgmt.demo.seed import actor_of
from casemgmt.handovers import service
from casemgmt.handovers.models import Handover, HandoverEvent
from casemgmt.handovers.schemas import HandoverOut
from casemgmt.jurisdictions.models import Organisation
from casemgmt.privacy.models import AuditEvent
from casemgmt.problems import HandoverNotPending, Problem

CLERKS = 20


def _actor(session_factory, world, key: str, user: str, roles=("clerk",)):
    with session_factory() as s:
        return actor_of(s.get(Organisation, world.organisations[key]), user, frozenset(roles))


def _race(session_factory, attempts: list) -> list[Any]:
    """Run each ``attempt(session)`` in its own thread and connection, released together."""
    barrier = threading.Barrier(len(attempts))

    def run(attempt):
        with session_factory() as s:
            # Check the connection out before the barrier, so all start from an open connection.
            s.connection()
            s.rollback()
            barrier.wait()
            try:
                return attempt(s)
            except Problem as exc:
                return exc

    with ThreadPoolExecutor(len(attempts)) as pool:
        return list(pool.map(run, attempts))


def _step_handover(client, auth, world) -> dict[str, Any]:
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    chain = started(client, ki, person)
    return ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)


def _respond(catalog, privacy, policies, clock, actor, handover_id, action, reason=None):
    def attempt(s):
        return service.respond(s, catalog, privacy, policies.handovers, actor, uuid.UUID(handover_id),
                               action, reason, None, clock())
    return attempt


def _handover_row(session_factory, handover_id):
    with session_factory() as s:
        return s.get(Handover, uuid.UUID(handover_id))


def _handover_events(session_factory, handover_id) -> list[str]:
    with session_factory() as s:
        return list(s.scalars(select(HandoverEvent.action).where(
            HandoverEvent.handover_id == uuid.UUID(handover_id)).order_by(HandoverEvent.id)))


def _audit_count(session_factory, handover_id, subtype) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.entity_type == "handover", AuditEvent.entity_id == handover_id,
            AuditEvent.subtype == subtype))


def _split(results):
    winners = [r for r in results if isinstance(r, HandoverOut)]
    losers = [r for r in results if not isinstance(r, HandoverOut)]
    return winners, losers


def test_twenty_clerks_acknowledging_one_handover_give_one_success(
        client, auth, world, catalog, privacy, policies, session_factory, clock):
    h = _step_handover(client, auth, world)
    clock.advance(days=1)
    clerks = [_actor(session_factory, world, "ennetal_abh", f"abh-clerk-{i}") for i in range(CLERKS)]
    results = _race(session_factory, [
        _respond(catalog, privacy, policies, clock, a, h["id"], "acknowledge") for a in clerks])

    winners, losers = _split(results)
    assert len(winners) == 1, results
    assert len(losers) == CLERKS - 1
    assert all(isinstance(r, HandoverNotPending) for r in losers), losers
    assert {r.status for r in losers} == {409}
    assert {r.extra["state"] for r in losers} == {"acknowledged"}
    assert winners[0].state.value == "acknowledged" and winners[0].version == 2

    row = _handover_row(session_factory, h["id"])
    assert row.state == "acknowledged"
    assert row.version == 2
    assert row.responded_by_user == winners[0].events[-1].actor_user
    assert row.responded_at == clock()
    assert _handover_events(session_factory, h["id"]) == ["request", "acknowledge"]
    assert _audit_count(session_factory, h["id"], "handover.acknowledge") == 1
    # Nothing is left waiting in the receiver's inbox.
    inbox = ok(client.get("/handovers/incoming", headers=auth(*ABH)))
    assert inbox["items"] == [] and inbox["counts"]["acknowledged"] == 1


def test_acknowledge_racing_withdraw_has_exactly_one_winner(
        client, auth, world, catalog, privacy, policies, session_factory, clock):
    abh = _actor(session_factory, world, "ennetal_abh", "abh-clerk")
    ki = _actor(session_factory, world, "ennetal_ki", "ki-cm", ("case_manager",))
    outcomes = set()
    for _ in range(3):
        h = _step_handover(client, auth, world)
        results = _race(session_factory, [
            _respond(catalog, privacy, policies, clock, abh, h["id"], "acknowledge"),
            _respond(catalog, privacy, policies, clock, ki, h["id"], "withdraw"),
        ])
        winners, losers = _split(results)
        assert len(winners) == 1 and len(losers) == 1, results
        final = winners[0].state.value
        assert final in ("acknowledged", "withdrawn")
        assert isinstance(losers[0], HandoverNotPending) and losers[0].extra["state"] == final
        outcomes.add(final)

        row = _handover_row(session_factory, h["id"])
        assert row.state == final and row.version == 2
        actions = _handover_events(session_factory, h["id"])
        assert actions == ["request", "acknowledge" if final == "acknowledged" else "withdraw"]
    assert outcomes  # at least one race ran to the end (which side wins is up to the scheduler)


def test_twenty_acknowledgements_of_a_rechtskreiswechsel_complete_the_step_once(
        client, auth, world, catalog, privacy, policies, session_factory, clock):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    chain = started(client, ki, person)
    walk_to(client, auth, chain["id"], [("wittmar_sozialamt", "arrival_assignment")])
    soz = auth(*SOZ)
    acted(client, soz, chain["id"], "asylblg_subsistence", "start")
    h = ok(handover(client, soz, chain["id"], kind="rechtskreiswechsel", step_key="asylblg_subsistence",
                    to_step_key="sgb2_application", benefit_regime="sgb_ii"), 201)
    chain_before = ok(client.get(f"/chains/{chain['id']}", headers=ki))
    clock.advance(days=3)

    clerks = [_actor(session_factory, world, "ennetal_jobcenter", f"jc-clerk-{i}") for i in range(CLERKS)]
    results = _race(session_factory, [
        _respond(catalog, privacy, policies, clock, a, h["id"], "acknowledge") for a in clerks])
    winners, losers = _split(results)
    assert len(winners) == 1, results
    assert len(losers) == CLERKS - 1
    assert all(isinstance(r, HandoverNotPending) and r.extra["state"] == "acknowledged" for r in losers), losers

    chain_id = uuid.UUID(chain["id"])
    with session_factory() as s:
        completes = s.scalar(select(func.count()).select_from(ChainEvent).where(
            ChainEvent.chain_id == chain_id, ChainEvent.step_key == "asylblg_subsistence",
            ChainEvent.action == "complete"))
        step_state = s.scalar(select(ChainStep.state).where(
            ChainStep.chain_id == chain_id, ChainStep.key == "asylblg_subsistence"))
    assert completes == 1
    assert step_state == "completed"
    assert _handover_events(session_factory, h["id"]) == ["request", "acknowledge"]
    assert _audit_count(session_factory, h["id"], "handover.acknowledge") == 1

    after = ok(client.get(f"/chains/{chain['id']}", headers=ki))
    # One acknowledgement changed the chain once (one version bump for the step change).
    assert after["version"] == chain_before["version"] + 1
    person_now = ok(client.get(f"/persons/{person['id']}", headers=auth(*JC)))
    assert person_now["fields"]["benefit_regime"] == "sgb_ii"


def test_concurrent_http_acknowledgements_one_200_the_rest_problem_409(client, auth, world, session_factory):
    h = _step_handover(client, auth, world)
    n = 8
    headers = [auth("ennetal_abh", "clerk", user=f"abh-http-{i}") for i in range(n)]
    barrier = threading.Barrier(n)

    def post(i):
        barrier.wait()
        return respond(client, headers[i], h["id"], "acknowledge")

    with ThreadPoolExecutor(n) as pool:
        responses = list(pool.map(post, range(n)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * (n - 1), [r.text for r in responses]
    winner = next(r for r in responses if r.status_code == 200)
    assert ok(winner)["state"] == "acknowledged"
    for r in responses:
        if r.status_code == 409:
            assert r.headers["content-type"].startswith(PROBLEM_JSON)
            body = problem(r, 409, "handover-not-pending")
            assert body["state"] == "acknowledged"
            assert body["instance"] == f"/handovers/{h['id']}/actions"
    assert _handover_events(session_factory, h["id"]) == ["request", "acknowledge"]
    # And sequentially, once more: still the same problem, the handover unchanged.
    late = respond(client, auth(*ABH), h["id"], "reject", reason="zu spät")
    assert problem(late, 409, "handover-not-pending")["state"] == "acknowledged"
    assert _handover_row(session_factory, h["id"]).version == 2
