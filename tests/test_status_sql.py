"""The SQL status and overdue filters of ``list_chains`` must agree with the pure engine
(``derive_status`` / ``is_overdue``) for every chain and every moment (PostgreSQL)."""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from casemgmt.chains import engine as eng
from casemgmt.chains import service
from casemgmt.chains.engine import Actor, ChainStatus, CloseReason, StepInstance
from casemgmt.chains.models import Chain, ChainStep
from casemgmt.chains.service import ChainFilters
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.persons.models import Person

TOWNS = ["wittmar", "hattenberg", "breckenfeld"]
REASON = "Wartet auf Unterlagen"
LIMIT = 1000


def serving_actors(session, world, town: str) -> dict[str, Actor]:
    """One organisation per kind that serves the town (the most local one)."""
    town_path = session.scalar(select(Jurisdiction.path).where(Jurisdiction.id == world.jurisdictions[town]))
    rows = session.execute(
        select(Organisation.id, Organisation.key, Organisation.kind, Jurisdiction.path)
        .join(Jurisdiction, Jurisdiction.id == Organisation.jurisdiction_id)
        .order_by(Organisation.id)
    ).all()
    session.rollback()
    out: dict[str, Actor] = {}
    for r in rows:
        if town_path.startswith(r.path):
            actor = Actor(f"test.{r.key}", r.id, r.kind, r.path, frozenset({"clerk"}))
            if r.key == "ennetal_ki":  # the Kreis's centre runs the case management everywhere
                out[CASE_MANAGEMENT_OWNER] = actor
            if r.kind not in out or len(r.path) > len(out[r.kind].jurisdiction_path):
                out[r.kind] = actor
    return out


def new_person(session, world, town: str, now: datetime) -> uuid.UUID:
    person = Person(
        residence_status="tolerated", bleibeperspektive="unclear", benefit_regime="asylblg",
        lead_jurisdiction_id=world.jurisdictions[town],
        created_by_organisation_id=world.organisations["ennetal_ki"], created_at=now,
    )
    session.add(person)
    session.commit()
    return person.id


def random_moves(session, catalog, actors, out, clock, rng: random.Random, count: int,
                 allow_block: bool, max_hours: int):
    """``count`` random legal actions by the owners, the clock moving between them."""
    for _ in range(count):
        if out.status.value in ("completed", "closed"):
            break
        options = [(s, a) for s in out.steps for a in possible(s) if allow_block or a != "block"]
        if not options:
            break
        step, action = rng.choice(options)
        clock.advance(hours=rng.randint(0, max_hours), microseconds=rng.randint(0, 999_999))
        reason = REASON if action in ("block", "skip") else None
        out = service.transition_step(session, catalog, actor_for(actors, step), out.id, step.key, action,
                                       reason, out.version, clock.now)
    return out


def actor_for(actors, step):
    """Who does the step: the organisation it is assigned to (the nearest of its kind); a planned
    optional step, which nobody has yet, the case management may skip."""
    if step.owner == CASE_MANAGEMENT_OWNER or step.assigned_organisation_id is None:
        return actors[CASE_MANAGEMENT_OWNER]
    actor = actors[step.owner]
    assert actor.organisation_id == step.assigned_organisation_id
    return actor


def possible(step) -> list[str]:
    """What the step's owner could do, read from the state (the API shows it per actor)."""
    state = step.state.value
    table = {
        "ready": ["start", "block"],
        "in_progress": ["complete", "block"],
        "blocked": ["resume"],
    }
    actions = list(table.get(state, []))
    if step.optional and state in ("planned", "ready", "in_progress", "blocked"):
        actions.append("skip")
    return actions


def build_chains(session, catalog, world, clock, rng: random.Random, n: int) -> list[uuid.UUID]:
    actors_by_town = {town: serving_actors(session, world, town) for town in TOWNS}
    keys = sorted(catalog.current)
    ids = []
    plans = ["fresh", "some", "some", "some", "blocked", "late", "complete", "close"]
    for i in range(n):
        town = rng.choice(TOWNS)
        actors = actors_by_town[town]
        clock.advance(hours=rng.randint(1, 96), microseconds=rng.randint(0, 999_999))
        person_id = new_person(session, world, town, clock.now)
        key = keys[i % len(keys)]
        out = service.start_chain(session, catalog, actors[CASE_MANAGEMENT_OWNER], person_id, key,
                                  clock.now)
        plan = plans[i % len(plans)] if i < len(plans) else rng.choice(plans)
        if plan == "some":
            out = random_moves(session, catalog, actors, out, clock, rng, rng.randint(1, 25),
                               allow_block=True, max_hours=240)
        elif plan == "blocked":
            out = random_moves(session, catalog, actors, out, clock, rng, rng.randint(0, 8),
                               allow_block=False, max_hours=48)
            open_steps = [s for s in out.steps if s.state.value in ("ready", "in_progress")]
            if open_steps:
                s = rng.choice(open_steps)
                out = service.transition_step(session, catalog, actor_for(actors, s), out.id, s.key,
                                              "block", REASON, None, clock.now)
        elif plan == "late":
            # start things quickly, then let the deadlines pass
            out = random_moves(session, catalog, actors, out, clock, rng, rng.randint(2, 12),
                               allow_block=False, max_hours=2)
        elif plan == "complete":
            out = random_moves(session, catalog, actors, out, clock, rng, 200, allow_block=False,
                               max_hours=100)
            assert out.status.value == "completed"
        elif plan == "close":
            out = random_moves(session, catalog, actors, out, clock, rng, rng.randint(0, 10),
                               allow_block=True, max_hours=200)
            out = service.close_chain(session, catalog, actors[CASE_MANAGEMENT_OWNER], out.id,
                                      rng.choice(list(CloseReason)).value, None, None, clock.now)
        ids.append(out.id)
    return ids


def load_all(session) -> tuple[dict[uuid.UUID, str], dict[uuid.UUID, list[StepInstance]]]:
    lifecycles = {c.id: c.lifecycle for c in session.scalars(select(Chain))}
    steps: dict[uuid.UUID, list[StepInstance]] = defaultdict(list)
    for s in session.scalars(select(ChainStep)):
        steps[s.chain_id].append(StepInstance(
            key=s.key, owner_kind=s.owner_kind, optional=s.optional, state=s.state, reason=s.reason,
            started_at=s.started_at, completed_at=s.completed_at, due_at=s.due_at, due_for=s.due_for,
        ))
    session.rollback()
    return lifecycles, steps


def ids_of(session, filters: ChainFilters, now: datetime) -> set[uuid.UUID]:
    page = service.list_chains(session, filters, LIMIT, None, now)
    assert page.next_cursor is None
    return {item.id for item in page.items}


def moments(steps: dict[uuid.UUID, list[StepInstance]], start: datetime, end: datetime,
            rng: random.Random) -> list[datetime]:
    dues = sorted({s.due_at for ss in steps.values() for s in ss if s.due_at is not None})
    picked = rng.sample(dues, min(4, len(dues)))
    out = {start, end, end + timedelta(days=30), end + timedelta(days=400), start + (end - start) / 2}
    for d in picked:
        out.update({d, d - timedelta(microseconds=1), d + timedelta(microseconds=1)})
    return sorted(out)


@pytest.mark.parametrize("seed", [11, 2026])
def test_sql_filters_agree_with_engine(session_factory, catalog, world, clock, seed):
    rng = random.Random(seed)
    session = session_factory()
    start = clock.now
    ids = build_chains(session, catalog, world, clock, rng, 24)
    lifecycles, steps = load_all(session)
    assert set(lifecycles) == set(ids)

    seen_status: Counter = Counter()
    seen_overdue = 0
    for now in moments(steps, start, clock.now, rng):
        expected_status = {cid: eng.derive_status(lifecycles[cid], steps[cid], now) for cid in ids}
        expected_overdue = {cid for cid in ids if any(eng.is_overdue(s, now) for s in steps[cid])}
        for status in ChainStatus:
            got = ids_of(session, ChainFilters(status=status), now)
            want = {cid for cid, st in expected_status.items() if st is status}
            assert got == want, (
                f"status={status.value} at {now.isoformat()}: only SQL {sorted(map(str, got - want))}, "
                f"only engine {sorted(map(str, want - got))}"
            )
        assert ids_of(session, ChainFilters(overdue=True), now) == expected_overdue, now
        assert ids_of(session, ChainFilters(overdue=False), now) == set(ids) - expected_overdue, now
        # The summaries (a third rendering of the same rules) agree as well.
        page = service.list_chains(session, ChainFilters(), LIMIT, None, now)
        for item in page.items:
            assert item.status is expected_status[item.id], (item.id, now)
            assert item.steps_overdue == sum(eng.is_overdue(s, now) for s in steps[item.id])
            assert item.steps_blocked == sum(s.state == "blocked" for s in steps[item.id])
            assert item.steps_total == len(steps[item.id])
        seen_status.update(expected_status.values())
        seen_overdue += len(expected_overdue)

    # The generated data really covered every status and overdue chains.
    assert set(seen_status) == set(ChainStatus), seen_status
    assert seen_overdue > 0
    session.close()


def test_get_chain_status_agrees_with_list(session_factory, catalog, world, clock):
    rng = random.Random(7)
    session = session_factory()
    ids = build_chains(session, catalog, world, clock, rng, 10)
    actor = serving_actors(session, world, "wittmar")[CASE_MANAGEMENT_OWNER]
    for now in (clock.now, clock.now + timedelta(days=60)):
        listed = {i.id: i.status for i in service.list_chains(session, ChainFilters(), LIMIT, None, now).items}
        for cid in ids:
            out = service.get_chain(session, catalog, actor, cid, now)
            assert out.status is listed[cid]
            assert any(s.overdue for s in out.steps) == (
                cid in ids_of(session, ChainFilters(overdue=True), now)
            )
    session.close()


def test_pagination_covers_every_chain_once(session_factory, catalog, world, clock):
    rng = random.Random(3)
    session = session_factory()
    ids = build_chains(session, catalog, world, clock, rng, 9)
    now = clock.now + timedelta(days=45)
    for status in (None, *ChainStatus):
        filters = ChainFilters(status=status)
        everything = [i.id for i in service.list_chains(session, filters, LIMIT, None, now).items]
        paged, cursor = [], None
        while True:
            page = service.list_chains(session, filters, 2, cursor, now)
            paged.extend(i.id for i in page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert paged == everything
        assert len(set(paged)) == len(paged)
    assert len(everything_all := [i.id for i in service.list_chains(
        session, ChainFilters(), LIMIT, None, now).items]) == len(ids)
    assert set(everything_all) == set(ids)
    session.close()
