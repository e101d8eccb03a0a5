"""Concurrent clerks on one chain, with real PostgreSQL connections: never two successes for one
decision, never a lost update, always a clear 409 for the loser."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from casemgmt.chains import service
from casemgmt.chains.models import ChainEvent
from casemgmt.demo.seed import actor_of
from casemgmt.jurisdictions.models import Organisation
from casemgmt.persons.models import Person
from casemgmt.problems import IllegalTransition, Problem, VersionConflict


def _actor(session, world, key, roles=("clerk",)):
    return actor_of(session.get(Organisation, world.organisations[key]), f"u-{key}", frozenset(roles))


def _chain(session_factory, catalog, world, clock):
    with session_factory() as s:
        cm = _actor(s, world, "ennetal_ki", ("case_manager",))
        person = Person(id=uuid.uuid4(), residence_status="protection_granted",
                        bleibeperspektive="good", benefit_regime="asylblg",
                        lead_jurisdiction_id=world.jurisdictions["wittmar"],
                        created_by_organisation_id=cm.organisation_id, created_at=clock())
        s.add(person)
        s.commit()
        chain = service.start_chain(s, catalog, cm, person.id, "refugee_recognised", clock())
        soz = _actor(s, world, "wittmar_sozialamt")
        chain = service.transition_step(s, catalog, soz, chain.id, "arrival_assignment", "start",
                                        None, None, clock())
        return chain, soz


def _race(session_factory, n, attempt):
    """Run ``attempt(session)`` in n threads released at the same moment."""
    barrier = threading.Barrier(n)

    def run(i):
        with session_factory() as s:
            barrier.wait()
            try:
                return attempt(s, i)
            except Problem as exc:
                return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def _events(session_factory, chain_id, step_key, action):
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(ChainEvent).where(
            ChainEvent.chain_id == chain_id, ChainEvent.step_key == step_key,
            ChainEvent.action == action))


def test_twenty_clerks_completing_one_step_give_one_success(session_factory, catalog, world, clock):
    chain, soz = _chain(session_factory, catalog, world, clock)

    def complete(s, i):
        return service.transition_step(s, catalog, soz, chain.id, "arrival_assignment",
                                       "complete", None, None, clock())

    results = _race(session_factory, 20, complete)
    winners = [r for r in results if not isinstance(r, Problem)]
    losers = [r for r in results if isinstance(r, Problem)]
    assert len(winners) == 1
    assert len(losers) == 19
    assert all(isinstance(r, IllegalTransition) and r.status == 409 for r in losers)
    assert all(r.extra["state"] == "completed" for r in losers)
    assert _events(session_factory, chain.id, "arrival_assignment", "complete") == 1
    # The dependants were made ready exactly once, too.
    assert _events(session_factory, chain.id, "accommodation", "make_ready") == 1


def test_two_decisions_on_the_same_chain_version_give_one_conflict(session_factory, catalog, world, clock):
    chain, soz = _chain(session_factory, catalog, world, clock)
    chain = _race(session_factory, 1, lambda s, i: service.transition_step(
        s, catalog, soz, chain.id, "arrival_assignment", "complete", None, None, clock()))[0]
    seen_version = chain.version
    # Two different steps, both ready, both decided on the same version of the chain.
    steps = ["accommodation", "asylblg_subsistence"]

    def start(s, i):
        return service.transition_step(s, catalog, soz, chain.id, steps[i], "start", None,
                                       seen_version, clock())

    results = _race(session_factory, 2, start)
    winners = [r for r in results if not isinstance(r, Problem)]
    losers = [r for r in results if isinstance(r, Problem)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], VersionConflict) and losers[0].status == 409
    assert losers[0].extra["current_version"] == seen_version + 1
    started = sum(_events(session_factory, chain.id, k, "start") for k in steps)
    assert started == 1


def test_concurrent_different_steps_without_expected_version_both_apply(session_factory, catalog, world, clock):
    """Without a version the two changes are serialised by the row lock: neither is lost."""
    chain, soz = _chain(session_factory, catalog, world, clock)
    _race(session_factory, 1, lambda s, i: service.transition_step(
        s, catalog, soz, chain.id, "arrival_assignment", "complete", None, None, clock()))
    steps = ["accommodation", "asylblg_subsistence"]
    results = _race(session_factory, 2, lambda s, i: service.transition_step(
        s, catalog, soz, chain.id, steps[i], "start", None, None, clock()))
    assert not any(isinstance(r, Problem) for r in results)
    with session_factory() as s:
        final = service.get_chain(s, catalog, soz, chain.id, clock())
    states = {st.key: st.state.value for st in final.steps}
    assert states["accommodation"] == "in_progress"
    assert states["asylblg_subsistence"] == "in_progress"
    assert final.version == max(r.version for r in results)
