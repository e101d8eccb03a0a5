"""Walking each shipped chain template to completion through the service layer (PostgreSQL):
events, owners, refusals, and the version a running chain keeps."""

from __future__ import annotations

import copy
import uuid
from collections import Counter

import pytest
from conftest import reset_case_data
from sqlalchemy import delete, func, select

from casemgmt.chains import service
from casemgmt.chains.catalog import TemplateCatalog, register_templates
from casemgmt.chains.engine import Actor
from casemgmt.chains.models import Chain, ChainEvent, ChainStep, ChainTemplateVersion
from casemgmt.chains.schemas import ChainOut
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER, ChainTemplate
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.persons.models import Person
from casemgmt.policy.source import PolicyError
from casemgmt.problems import (
    PROBLEM_BASE,
    ChainClosed,
    IllegalTransition,
    NotFound,
    WrongOrganisation,
)

TEMPLATE_KEYS = ["eu_newcomer", "refugee_recognised", "tolerated_family", "uma", "young_adult"]
TOWN = "wittmar"
CASE_MANAGER_ORG = "ennetal_ki"
SKIP_REASON = "Für diese Person nicht erforderlich"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def actor_for_org(session, org_id: int, user: str | None = None) -> Actor:
    org = session.get(Organisation, org_id)
    assert org is not None
    actor = Actor(
        user_id=user or f"test.{org.key}",
        organisation_id=org.id,
        organisation_kind=org.kind,
        jurisdiction_path=org.jurisdiction.path,
        roles=frozenset({"case_manager"}),
    )
    session.rollback()
    return actor


class Actors:
    """Organisations serving a chain in one town, by owner kind."""

    def __init__(self, session, world, town: str = TOWN) -> None:
        self.session = session
        town_path = session.scalar(select(Jurisdiction.path).where(Jurisdiction.id == world.jurisdictions[town]))
        self.town_path = town_path
        self.case_manager = actor_for_org(session, world.organisations[CASE_MANAGER_ORG])
        self.by_kind: dict[str, Actor] = {}
        self.strangers: dict[str, Actor] = {}
        rows = session.execute(
            select(Organisation.id, Organisation.key, Organisation.kind, Jurisdiction.path)
            .join(Jurisdiction, Jurisdiction.id == Organisation.jurisdiction_id)
            .order_by(Organisation.id)
        ).all()
        session.rollback()
        for row in rows:
            actor = Actor(f"test.{row.key}", row.id, row.kind, row.path, frozenset({"clerk"}))
            if town_path.startswith(row.path):
                # the most local serving organisation wins (town before Kreis before Land)
                current = self.by_kind.get(row.kind)
                if current is None or len(row.path) > len(current.jurisdiction_path):
                    self.by_kind[row.kind] = actor
            else:
                self.strangers.setdefault(row.kind, actor)

    def owner(self, owner_kind: str) -> Actor:
        if owner_kind == CASE_MANAGEMENT_OWNER:
            return self.case_manager
        assert owner_kind in self.by_kind, f"no organisation of kind {owner_kind} serves {TOWN}"
        return self.by_kind[owner_kind]

    def wrong_kind(self, owner_kind: str) -> Actor:
        """A serving organisation of another kind (and not the chain's case management)."""
        for kind, actor in sorted(self.by_kind.items()):
            if kind != owner_kind and actor.organisation_id != self.case_manager.organisation_id:
                return actor
        raise AssertionError("no other kind")


def new_person(session, world, clock, town: str = TOWN) -> uuid.UUID:
    person = Person(
        residence_status="protection_granted",
        bleibeperspektive="good",
        benefit_regime="asylblg",
        lead_jurisdiction_id=world.jurisdictions[town],
        created_by_organisation_id=world.organisations[CASE_MANAGER_ORG],
        created_at=clock.now,
    )
    session.add(person)
    session.commit()
    return person.id


def events_of(session, chain_id: uuid.UUID) -> list:
    """The chain's event rows, oldest first (read directly: the timeline endpoint is audited)."""
    events = session.execute(
        select(ChainEvent.kind, ChainEvent.step_key, ChainEvent.action, ChainEvent.from_state,
               ChainEvent.to_state, ChainEvent.reason)
        .where(ChainEvent.chain_id == chain_id)
        .order_by(ChainEvent.id)
    ).all()
    session.rollback()
    return events


def count_events(session, chain_id: uuid.UUID) -> int:
    n = session.scalar(select(func.count()).select_from(ChainEvent).where(ChainEvent.chain_id == chain_id))
    session.rollback()
    return n


def states(out: ChainOut) -> dict[str, str]:
    return {s.key: s.state.value for s in out.steps}


def diff(before: dict[str, str], after: dict[str, str]) -> Counter:
    return Counter((k, before[k], after[k]) for k in after if before[k] != after[k])


# --------------------------------------------------------------------------------------------
# Walks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip_optional", [True, False], ids=["skip-optional", "complete-optional"])
@pytest.mark.parametrize("template_key", TEMPLATE_KEYS)
def test_walk_template_to_completion(session_factory, catalog, world, clock, template_key, skip_optional):
    session = session_factory()
    actors = Actors(session, world)
    template = catalog.current[template_key]
    person_id = new_person(session, world, clock)

    out = service.start_chain(session, catalog, actors.case_manager, person_id, template_key, clock.now)
    chain_id = out.id
    assert out.template_version == template.version
    assert out.status.value == "active"
    assert [s.key for s in out.steps] == list(template.step_keys())
    current = states(out)
    expected_changes: Counter = Counter(
        (k, "planned", v) for k, v in current.items() if v != "planned"
    )
    assert set(k for k, _, _ in expected_changes) == set(template.roots())
    version = out.version
    assert version == 1

    moves = 0
    while out.status.value != "completed":
        ready = [s for s in out.steps if s.state.value == "ready"]
        running = [s for s in out.steps if s.state.value == "in_progress"]
        assert ready or running, f"stuck: {current}"
        step = (running or ready)[0]
        actor = actors.owner(step.owner)
        clock.advance(hours=7)
        if step.state.value == "ready" and step.optional and skip_optional:
            action, reason = "skip", SKIP_REASON
        elif step.state.value == "ready":
            action, reason = "start", None
        else:
            action, reason = "complete", None
        # The owner sees exactly what it may do.
        seen = service.get_chain(session, catalog, actor, chain_id, clock.now)
        allowed = next(s for s in seen.steps if s.key == step.key).allowed_actions
        assert action in allowed, (step.key, action, allowed)
        out = service.transition_step(
            session, catalog, actor, chain_id, step.key, action, reason, version, clock.now
        )
        assert out.version == version + 1
        version = out.version
        after = states(out)
        changed = diff(current, after)
        assert (step.key, step.state.value, after[step.key]) in changed
        expected_changes.update(changed)
        current = after
        moves += 1
        assert moves <= 3 * len(template.steps)

    assert out.status.value == "completed"
    assert out.completed_at == clock.now
    assert all(s.state.value in ("completed", "skipped") for s in out.steps)
    for s in out.steps:
        assert s.allowed_actions == []
        if s.state.value == "completed":
            assert s.started_at is not None and s.completed_at is not None
            assert s.started_at <= s.completed_at
        else:
            assert s.optional and skip_optional and s.reason == SKIP_REASON
    if not skip_optional:
        assert all(s.state.value == "completed" for s in out.steps)

    chain = session.get(Chain, chain_id)
    assert chain.lifecycle == "completed" and chain.version == version
    session.rollback()

    events = events_of(session, chain_id)
    kinds = Counter(e.kind for e in events)
    step_events = [e for e in events if e.kind == "step"]
    assert kinds == {"chain_started": 1, "step": sum(expected_changes.values()), "chain_completed": 1}
    assert events[0].kind == "chain_started"
    assert events[-1].kind == "chain_completed"
    assert Counter((e.step_key, e.from_state, e.to_state) for e in step_events) == expected_changes
    for e in step_events:
        assert e.reason == (SKIP_REASON if e.action == "skip" else None), e
        assert e.action in ("make_ready", "start", "complete", "skip")
    # Every step went planned -> ready exactly once, then started+completed or was skipped.
    per_step = Counter(e.step_key for e in step_events)
    for s in out.steps:
        assert per_step[s.key] == (3 if s.state.value == "completed" else 2), s.key
    # The rows agree with the answer.
    rows = {
        r.key: r.state
        for r in session.scalars(select(ChainStep).where(ChainStep.chain_id == chain_id))
    }
    session.rollback()
    assert rows == states(out)

    # A completed chain does not move any more.
    n = count_events(session, chain_id)
    last = out.steps[-1]
    with pytest.raises(ChainClosed) as info:
        service.transition_step(
            session, catalog, actors.owner(last.owner), chain_id, last.key, "start", None, None, clock.now
        )
    assert PROBLEM_BASE + info.value.slug == "/problems/chain-not-active"
    assert info.value.status == 409
    assert count_events(session, chain_id) == n
    session.close()


@pytest.mark.parametrize("template_key", TEMPLATE_KEYS)
def test_illegal_moves_are_refused_without_events(session_factory, catalog, world, clock, template_key):
    session = session_factory()
    actors = Actors(session, world)
    template = catalog.current[template_key]
    person_id = new_person(session, world, clock)
    out = service.start_chain(session, catalog, actors.case_manager, person_id, template_key, clock.now)
    chain_id = out.id
    n = count_events(session, chain_id)
    assert n == 1 + len(template.roots())

    planned = next(s for s in out.steps if s.state.value == "planned")
    ready = next(s for s in out.steps if s.state.value == "ready")

    def refused(problem, actor, step_key, action, reason=None):
        with pytest.raises(problem) as info:
            service.transition_step(session, catalog, actor, chain_id, step_key, action, reason, None,
                                    clock.now)
        assert count_events(session, chain_id) == n
        again = service.get_chain(session, catalog, actors.case_manager, chain_id, clock.now)
        assert states(again) == states(out)
        assert again.version == out.version
        return info.value

    # A planned step cannot be started, by anyone involved; its owner kind is not involved yet.
    problem = refused(IllegalTransition, actors.case_manager, planned.key, "start")
    assert problem.extra["state"] == "planned"
    if planned.owner != CASE_MANAGEMENT_OWNER and not any(
            s.assigned_organisation_id == actors.owner(planned.owner).organisation_id for s in out.steps):
        refused(NotFound, actors.owner(planned.owner), planned.key, "start")
    problem = refused(IllegalTransition, actors.owner(ready.owner), ready.key, "complete")
    assert problem.extra["state"] == "ready"
    assert set(problem.extra["allowed_actions"]) >= {"start", "block"}
    assigned = {s.assigned_organisation_id for s in out.steps}
    other = actors.wrong_kind(ready.owner)
    # another kind: not involved (404), or involved through a step of its own (403)
    refused(WrongOrganisation if other.organisation_id in assigned else NotFound, other, ready.key, "start")
    if ready.owner != CASE_MANAGEMENT_OWNER and ready.owner in actors.strangers:
        # right kind, but from the kreisfreie Stadt next door: not involved
        refused(NotFound, actors.strangers[ready.owner], ready.key, "start")
    if ready.owner != CASE_MANAGEMENT_OWNER:
        # the case management may not do another organisation's work
        refused(WrongOrganisation, actors.case_manager, ready.key, "start")
    refused(NotFound, actors.owner(ready.owner), "no_such_step", "start")
    refused(IllegalTransition, actors.owner(ready.owner), ready.key, "make_ready")

    # A legal move still works afterwards and writes its events.
    out = service.transition_step(session, catalog, actors.owner(ready.owner), chain_id, ready.key,
                                  "start", None, None, clock.now)
    assert states(out)[ready.key] == "in_progress"
    assert count_events(session, chain_id) == n + 1
    session.close()


def test_closed_chain_refuses_actions(session_factory, catalog, world, clock):
    session = session_factory()
    actors = Actors(session, world)
    person_id = new_person(session, world, clock)
    out = service.start_chain(session, catalog, actors.case_manager, person_id, "uma", clock.now)
    closed = service.close_chain(session, catalog, actors.case_manager, out.id, "moved_away", "nach Hagenau",
                                 None, clock.advance(days=1))
    assert closed.status.value == "closed"
    assert all(s.state.value in ("cancelled",) for s in closed.steps)
    n = count_events(session, out.id)
    assert n == 1 + len(out.steps) + 1 + 1  # started, make_ready, one cancel per step, closed
    step = closed.steps[0]
    with pytest.raises(ChainClosed):
        service.transition_step(session, catalog, actors.owner(step.owner), out.id, step.key, "start",
                                None, None, clock.now)
    assert count_events(session, out.id) == n
    session.close()


# --------------------------------------------------------------------------------------------
# Template versions
# --------------------------------------------------------------------------------------------

PROBE_KEY = "young_adult_version_probe"


@pytest.fixture
def probe_cleanup(session_factory, owner_engine):
    """Registered versions stay in the shared database: remove the probe's afterwards."""
    yield
    reset_case_data(owner_engine)
    with session_factory() as session:
        session.execute(delete(ChainTemplateVersion).where(ChainTemplateVersion.key == PROBE_KEY))
        session.commit()


def probe_documents(catalog) -> tuple[dict, dict]:
    v1 = copy.deepcopy(catalog.current["young_adult"].to_document())
    v1["key"] = PROBE_KEY
    v2 = copy.deepcopy(v1)
    v2["version"] = 2
    v2["title"] = "Junge Erwachsene (18-25), überarbeitet"
    # v2 drops the optional skills assessment and adds a mentoring step after the interview.
    v2["steps"] = [s for s in v2["steps"] if s["key"] != "skills_assessment"]
    v2["steps"].insert(1, {
        "key": "mentoring", "title": "Patenschaft", "owner": "wohlfahrtsverband",
        "requires": ["first_interview"], "optional": False, "description": "", "due": None,
    })
    for s in v2["steps"]:
        if s["key"] == "case_closure":
            s["requires"] = [*s["requires"], "mentoring"]
    return v1, v2


def test_running_chain_keeps_its_template_version(session_factory, catalog, world, clock, probe_cleanup):
    session = session_factory()
    actors = Actors(session, world)
    doc1, doc2 = probe_documents(catalog)
    t1 = ChainTemplate.from_document(doc1, source="test-v1")
    t2 = ChainTemplate.from_document(doc2, source="test-v2")
    assert t1.digest() != t2.digest()

    cat1 = register_templates(session, {PROBE_KEY: t1}, clock.now)
    assert isinstance(cat1, TemplateCatalog) and cat1 is not catalog
    assert catalog.get(PROBE_KEY, 1) is None, "the shared catalog must stay untouched"
    old_person = new_person(session, world, clock)
    old = service.start_chain(session, cat1, actors.case_manager, old_person, PROBE_KEY, clock.now)
    assert old.template_version == 1
    assert [s.key for s in old.steps] == list(t1.step_keys())

    clock.advance(days=3)
    cat2 = register_templates(session, {PROBE_KEY: t2}, clock.now)
    assert [t.version for t in cat2.versions_of(PROBE_KEY)] == [1, 2]
    assert cat2.current[PROBE_KEY].version == 2
    assert cat2.get(PROBE_KEY, 1).digest() == t1.digest()

    # The old chain still reads and moves with the v1 steps.
    seen = service.get_chain(session, cat2, actors.case_manager, old.id, clock.now)
    assert seen.template_version == 1
    assert seen.template_title == t1.title
    assert [s.key for s in seen.steps] == list(t1.step_keys())
    out = service.transition_step(session, cat2, actors.case_manager, old.id, "first_interview", "start",
                                  None, None, clock.now)
    out = service.transition_step(session, cat2, actors.case_manager, old.id, "first_interview",
                                  "complete", None, None, clock.advance(hours=2))
    assert out.template_version == 1
    got = states(out)
    assert "mentoring" not in got
    assert got["skills_assessment"] == "ready"
    with pytest.raises(NotFound):
        service.transition_step(session, cat2, actors.owner("wohlfahrtsverband"), old.id, "mentoring",
                                "start", None, None, clock.now)

    # A new chain starts at v2.
    new_person_id = new_person(session, world, clock)
    new = service.start_chain(session, cat2, actors.case_manager, new_person_id, PROBE_KEY, clock.now)
    assert new.template_version == 2
    assert new.template_title == t2.title
    assert [s.key for s in new.steps] == list(t2.step_keys())
    out = service.transition_step(session, cat2, actors.case_manager, new.id, "first_interview", "start",
                                  None, None, clock.now)
    out = service.transition_step(session, cat2, actors.case_manager, new.id, "first_interview",
                                  "complete", None, None, clock.advance(hours=1))
    assert states(out)["mentoring"] == "ready"
    assert "skills_assessment" not in states(out)
    row = session.get(Chain, new.id)
    assert (row.template_key, row.template_version) == (PROBE_KEY, 2)
    session.rollback()

    # The stored v1 is still exactly the document that was registered.
    stored = session.get(ChainTemplateVersion, (PROBE_KEY, 1))
    assert stored.digest == t1.digest() and stored.document == t1.to_document()
    session.rollback()

    # Re-registering v1 unchanged (say, by an older node still reading the v1 file) is fine.
    register_templates(session, {PROBE_KEY: t1}, clock.now)  # v1 stored with the same content
    session.close()


def test_changed_document_under_stored_version_is_refused(session_factory, catalog, clock):
    session = session_factory()
    for key in TEMPLATE_KEYS:
        doc = copy.deepcopy(catalog.current[key].to_document())
        doc["steps"][0]["title"] = doc["steps"][0]["title"] + " (geändert)"
        changed = ChainTemplate.from_document(doc, source=f"policies/chains/{key}.yaml")
        assert changed.version == catalog.current[key].version
        with pytest.raises(PolicyError) as info:
            register_templates(session, {key: changed}, clock.now)
        assert "already in use with different content" in str(info.value)
        session.rollback()
    # Nothing was stored and the original versions still register cleanly.
    stored = {
        (r.key, r.version): r.digest for r in session.scalars(select(ChainTemplateVersion))
    }
    session.rollback()
    for key in TEMPLATE_KEYS:
        assert stored[(key, catalog.current[key].version)] == catalog.current[key].digest()
    again = register_templates(session, {k: catalog.current[k] for k in TEMPLATE_KEYS}, clock.now)
    assert set(again.current) == set(TEMPLATE_KEYS)
    session.close()
