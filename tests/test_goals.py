"""The goal system (policies/goals.yaml): loading and its errors, the pure clock rules, and the
attainment computed from hand-built chains on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from casemgmt.chains import service
from casemgmt.chains.engine import Actor, CloseReason
from casemgmt.chains.models import Chain
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER, load_templates
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.persons.models import Person
from casemgmt.policy.loader import load_organisation_kinds
from casemgmt.policy.source import PolicyError
from casemgmt.steering.goals import (
    AttainmentCell,
    Goal,
    GoalClock,
    GoalTier,
    attainment,
    attainment_in_sql,
    classify,
    goal_clocks,
    load_goals,
    quarter_of,
)

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"


@pytest.fixture(scope="module")
def templates():
    kinds = load_organisation_kinds(POLICIES / "organisation_kinds.yaml")
    return load_templates(POLICIES / "chains", kinds.keys())


# --------------------------------------------------------------------------------------------
# Loading and policy errors
# --------------------------------------------------------------------------------------------

BASE = """\
goals:
  - key: gz_start
    tier: grundsatzziel
    title: Verlässlicher Start
  - key: gz_sprache
    tier: grundsatzziel
    title: Sprache
  - key: rz_kurse
    tier: rahmenziel
    parent: gz_sprache
    title: Kurse ohne Wartezeit
  - key: rz_fall
    tier: rahmenziel
    parent: gz_start
    title: Frühe Fallklärung
  - key: ez_kurs
    tier: ergebnisziel
    parent: rz_kurse
    title: Integrationskurs in 8 Wochen
    measure:
      population: {templates: [refugee_recognised]}
      start: {step: integration_course_entitlement, on: completed}
      stop: {step: integration_course, on: started}
      within_days: 56
      target_share: 0.8
  - key: ez_erstgespraech
    tier: ergebnisziel
    parent: rz_fall
    title: Erstgespräch in 28 Tagen
    measure:
      population:
        templates: [eu_newcomer, refugee_recognised]
      start:
        chain: started
      stop:
        step: first_interview
        on: completed
      within_days: 28
      target_share: 1
"""


def line_of_text(text: str, needle: str) -> int:
    """1-based line of the only line containing ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def broken(tmp_path: Path, old: str, new: str) -> tuple[Path, str]:
    assert BASE.count(old) == 1, old
    text = BASE.replace(old, new)
    path = tmp_path / "goals.yaml"
    path.write_text(text, encoding="utf-8")
    return path, text


def test_base_document_loads(tmp_path, templates):
    path, _ = broken(tmp_path, "title: Sprache", "title: Sprache")
    goals = load_goals(path, templates)
    assert list(goals) == ["gz_start", "gz_sprache", "rz_kurse", "rz_fall", "ez_kurs",
                           "ez_erstgespraech"]
    m = goals["ez_erstgespraech"].measure
    assert m is not None and m.starts_with_chain and m.start_on == "started"
    assert m.stop_on == "completed" and m.target_share == 1.0  # an integer 1 is a share too
    assert goals["ez_kurs"].measure.start_on == "completed"  # flow-style "on" survives YAML 1.1


ERRORS = [
    # (id, old, new, needle of the reported line, field, part of the message). New lines carry
    # a "#!" comment where the error is expected, so the expected line is found by searching.
    ("unknown-tier", "tier: rahmenziel\n    parent: gz_sprache",
     "tier: zwischenziel  #!\n    parent: gz_sprache", "#!", "goals[2].tier", "'grundsatzziel'"),
    ("unknown-parent", "parent: gz_sprache", "parent: gz_gibt_es_nicht  #!", "#!",
     "goals[2].parent", "unknown goal 'gz_gibt_es_nicht'"),
    ("ergebnisziel-under-grundsatzziel", "parent: rz_kurse", "parent: gz_sprache  #!", "#!",
     "goals[4].parent", "must be a rahmenziel; 'gz_sprache' is a grundsatzziel"),
    ("rahmenziel-under-rahmenziel", "parent: gz_start", "parent: rz_kurse  #!", "#!",
     "goals[3].parent", "must be a grundsatzziel; 'rz_kurse' is a rahmenziel"),
    ("grundsatzziel-with-parent", "    title: Sprache\n", "    parent: gz_start  #!\n    title: Sprache\n",
     "#!", "goals[1].parent", "has no parent"),
    ("rahmenziel-without-parent", "    parent: gz_start\n", "", "key: rz_fall", "goals[3].parent",
     "needs a parent (a grundsatzziel)"),
    ("unknown-template", "templates: [eu_newcomer, refugee_recognised]",
     "templates: [eu_newcomer, refugee_unknown]  #!", "#!",
     "goals[5].measure.population.templates[1]", "unknown chain template 'refugee_unknown'"),
    ("template-twice", "templates: [eu_newcomer, refugee_recognised]",
     "templates: [eu_newcomer, eu_newcomer]  #!", "#!",
     "goals[5].measure.population.templates[1]", "listed twice"),
    ("start-step-not-in-every-template", "population: {templates: [refugee_recognised]}",
     "population: {templates: [refugee_recognised, eu_newcomer]}", "{step: integration_course_ent",
     "goals[4].measure.start.step", "not a step of template(s) eu_newcomer"),
    ("stop-step-not-in-template", "step: first_interview", "step: integration_course  #!", "#!",
     "goals[5].measure.stop.step", "'integration_course' is not a step of template(s) eu_newcomer"),
    ("start-equals-stop", "stop: {step: integration_course, on: started}",
     "stop: {step: integration_course_entitlement, on: completed}  #!", "#!",
     "goals[4].measure.stop", "stop at the event that starts it"),
    ("within-days-zero", "within_days: 56", "within_days: 0  #!", "#!",
     "goals[4].measure.within_days", "greater than or equal to 1"),
    ("within-days-float", "within_days: 56", "within_days: 56.0  #!", "#!",
     "goals[4].measure.within_days", "integer"),
    ("share-zero", "target_share: 0.8", "target_share: 0  #!", "#!",
     "goals[4].measure.target_share", "greater than 0"),
    ("share-negative", "target_share: 0.8", "target_share: -0.5  #!", "#!",
     "goals[4].measure.target_share", "greater than 0"),
    ("share-above-one", "target_share: 0.8", "target_share: 1.01  #!", "#!",
     "goals[4].measure.target_share", "less than or equal to 1"),
    ("share-nan", "target_share: 0.8", "target_share: .nan  #!", "#!",
     "goals[4].measure.target_share", "less than or equal to 1"),
    ("measure-on-grundsatzziel", "    title: Sprache\n",
     "    title: Sprache\n    measure:  #!\n      population: {templates: [refugee_recognised]}\n"
     "      start: {chain: started}\n      stop: {step: first_interview, on: completed}\n"
     "      within_days: 28\n      target_share: 0.9\n",
     "#!", "goals[1].measure", "grundsatzziel is not measured"),
    ("duplicate-key", "key: rz_fall", "key: rz_kurse  #!", "#!",
     "goals[3].key", "duplicate goal key 'rz_kurse' (already used by goals[2])"),
    ("chain-start-with-on", "chain: started", "chain: started\n        on: completed  #!", "#!",
     "goals[5].measure.start.on", "belongs to a step"),
    ("step-and-chain", "start: {step: integration_course_entitlement, on: completed}",
     "start: {step: integration_course_entitlement, on: completed, chain: started}  #!", "#!",
     "goals[4].measure.start", "either a step"),
    ("neither-step-nor-chain", "start: {step: integration_course_entitlement, on: completed}",
     "start: {on: completed}  #!", "#!", "goals[4].measure.start", "either a step"),
    ("step-without-on", "start: {step: integration_course_entitlement, on: completed}",
     "start: {step: integration_course_entitlement}  #!", "#!", "goals[4].measure.start.on",
     "'started' or 'completed'"),
    ("stop-at-chain", "stop: {step: integration_course, on: started}", "stop: {chain: started}  #!",
     "#!", "goals[4].measure.stop.step", "Field required"),
    ("on-twice", "start: {step: integration_course_entitlement, on: completed}",
     "start: {step: integration_course_entitlement, on: completed, 'on': started}  #!", "#!",
     "goals[4].measure.start.on", "given twice"),
    ("unknown-field", "within_days: 56", "within_days: 56\n      within_weeks: 8  #!", "#!",
     "goals[4].measure.within_weeks", "Extra inputs"),
]


@pytest.mark.parametrize(("old", "new", "needle", "field", "message"),
                         [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_policy_error_names_file_line_and_field(tmp_path, templates, old, new, needle, field, message):
    path, text = broken(tmp_path, old, new)
    with pytest.raises(PolicyError) as info:
        load_goals(path, templates)
    err = info.value
    assert err.path == str(path)
    assert (err.line, err.field) == (line_of_text(text, needle), field), str(err)
    assert message in err.message
    assert str(err).startswith(f"{path}:{err.line}: {field}: ")


def test_shipped_goals_load(templates, policies):
    goals = load_goals(POLICIES / "goals.yaml", templates)
    assert policies.goals == goals  # the policy loader reads the same file
    tiers = {tier: [g for g in goals.values() if g.tier is tier] for tier in GoalTier}
    assert 1 <= len(tiers[GoalTier.grundsatzziel]) <= 2
    assert 2 <= len(tiers[GoalTier.rahmenziel]) <= 3
    measured = [g for g in tiers[GoalTier.ergebnisziel] if g.measure is not None]
    assert len(measured) >= 3
    for goal in goals.values():
        if goal.parent is not None:
            assert goals[goal.parent].tier is not goal.tier
    course = goals["integrationskurs_in_8_wochen"].measure
    assert course is not None
    assert (course.start_step, course.start_on, course.stop_step, course.stop_on) == (
        "integration_course_entitlement", "completed", "integration_course", "started")
    assert (course.within_days, course.target_share) == (56, 0.8)
    assert "refugee_recognised" in course.templates
    interview = goals["erstgespraech_in_28_tagen"].measure
    assert interview is not None and interview.starts_with_chain
    assert set(interview.templates) == {k for k, t in templates.items() if "first_interview" in t.step_keys()}


# --------------------------------------------------------------------------------------------
# Pure rules: classify, quarter_of, attainment
# --------------------------------------------------------------------------------------------

T0 = datetime(2026, 2, 10, 9, 30, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


def clock_(started: datetime, stopped: datetime | None, person: uuid.UUID | None = None,
           jurisdiction: int = 1, chain: uuid.UUID | None = None) -> GoalClock:
    return GoalClock(chain or uuid.uuid4(), person or uuid.uuid4(), jurisdiction, started, stopped)


def test_classify_at_the_boundary():
    far = T0 + 1000 * DAY
    assert classify(clock_(T0, T0 + 56 * DAY), 56, far) == "attained"
    assert classify(clock_(T0, T0 + 56 * DAY + SECOND), 56, far) == "missed"
    assert classify(clock_(T0, T0 + 56 * DAY + timedelta(microseconds=1)), 56, far) == "missed"
    assert classify(clock_(T0, T0), 56, far) == "attained"
    # Still running: pending up to and including the last moment, missed after it.
    running = clock_(T0, None)
    assert classify(running, 56, T0) == "pending"
    assert classify(running, 56, T0 + 56 * DAY) == "pending"
    assert classify(running, 56, T0 + 56 * DAY + SECOND) == "missed"
    assert classify(running, 56, T0 + 10 * DAY) == "pending"
    assert classify(running, 56, T0 + 100 * DAY) == "missed"
    # A stop decides, however early "now" is.
    assert classify(clock_(T0, T0 + 30 * DAY), 56, T0 + 40 * DAY) == "attained"


def test_classify_counts_exact_elapsed_time_across_dst():
    # 29 March 2026 has 23 hours in Berlin; 56 days are 56 * 24 h all the same.
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert classify(clock_(start, start + timedelta(hours=56 * 24)), 56, start) == "attained"
    assert classify(clock_(start, start + timedelta(hours=56 * 24, seconds=1)), 56, start) == "missed"


def test_quarter_of_in_berlin_time():
    assert quarter_of(datetime(2026, 1, 1, 0, 0, tzinfo=UTC)) == "2026-Q1"
    assert quarter_of(datetime(2025, 12, 31, 23, 0, tzinfo=UTC)) == "2026-Q1"  # 00:00 CET
    assert quarter_of(datetime(2025, 12, 31, 22, 59, 59, tzinfo=UTC)) == "2025-Q4"
    assert quarter_of(datetime(2026, 3, 31, 21, 59, 59, tzinfo=UTC)) == "2026-Q1"
    assert quarter_of(datetime(2026, 3, 31, 22, 0, tzinfo=UTC)) == "2026-Q2"  # 00:00 CEST
    assert quarter_of(datetime(2026, 9, 30, 22, 0, tzinfo=UTC)) == "2026-Q4"
    with pytest.raises(ValueError):
        quarter_of(datetime(2026, 1, 1))


def test_attainment_counts_a_person_once_by_the_earliest_clock():
    person = uuid.uuid4()
    now = T0 + 365 * DAY
    early_missed = clock_(T0, None, person, jurisdiction=1)
    later_attained = clock_(T0 + 100 * DAY, T0 + 101 * DAY, person, jurisdiction=2)
    other = clock_(T0 + DAY, T0 + 2 * DAY, jurisdiction=1)
    cells = attainment([later_attained, early_missed, other], 56, now)
    assert cells == {("2026-Q1", 1): AttainmentCell(attained=1, missed=1, pending=0)}
    assert cells[("2026-Q1", 1)].share == 0.5
    assert AttainmentCell(pending=3).share is None


MOMENTS = st.integers(min_value=0, max_value=400 * 86_400 * 1_000).map(
    lambda ms: T0 + timedelta(milliseconds=ms))
PERSONS = [uuid.UUID(int=n) for n in range(1, 7)]


@st.composite
def clocks(draw) -> GoalClock:
    started = draw(MOMENTS)
    stopped = draw(st.none() | st.integers(0, 120 * 86_400).map(lambda s: started + timedelta(seconds=s)))
    return GoalClock(uuid.UUID(int=draw(st.integers(1, 10**9))), draw(st.sampled_from(PERSONS)),
                     draw(st.sampled_from([1, 2, 3])), started, stopped)


@given(clock=clocks(), within=st.integers(1, 100), now=MOMENTS, later=st.integers(0, 10**9))
def test_classify_properties(clock, within, now, later):
    outcome = classify(clock, within, now)
    limit = timedelta(days=within)
    if clock.stopped_at is not None:
        assert outcome == ("attained" if clock.stopped_at - clock.started_at <= limit else "missed")
    else:
        assert outcome != "attained"
        assert (outcome == "pending") == (now - clock.started_at <= limit)
    # Time only moves a clock from pending to decided, never back or between decisions.
    after = classify(clock, within, now + timedelta(milliseconds=later))
    assert after == outcome or outcome == "pending"


@settings(max_examples=150)
@given(data=st.lists(clocks(), max_size=25, unique_by=lambda c: c.chain_id), within=st.integers(1, 100), now=MOMENTS,
       seed=st.randoms(use_true_random=False))
def test_attainment_properties(data, within, now, seed):
    cells = attainment(data, within, now)
    persons = {c.person_id for c in data}
    # Every person is counted exactly once over all cells.
    assert sum(cell.persons for cell in cells.values()) == len(persons)
    assert all(cell.persons > 0 for cell in cells.values())
    # ...in the cell and with the outcome of the clock that started first.
    expected: dict[tuple[str, int], dict[str, int]] = {}
    for person in persons:
        first = min((c for c in data if c.person_id == person), key=lambda c: (c.started_at, c.chain_id))
        cell = expected.setdefault((quarter_of(first.started_at), first.jurisdiction_id),
                                   {"attained": 0, "missed": 0, "pending": 0})
        cell[classify(first, within, now)] += 1
    assert cells == {k: AttainmentCell(**v) for k, v in expected.items()}
    # The order of the clocks does not matter.
    shuffled = list(data)
    seed.shuffle(shuffled)
    assert attainment(shuffled, within, now) == cells
    # A later chain of someone already counted changes nothing.
    if data:
        last = max(c.started_at for c in data)
        extra = GoalClock(uuid.uuid4(), data[0].person_id, 3, last + SECOND, None)
        assert attainment([*data, extra], within, now) == cells


# --------------------------------------------------------------------------------------------
# Goal clocks from hand-built chains (PostgreSQL)
# --------------------------------------------------------------------------------------------

NOW = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)  # evaluated in 2026-Q3
CASE_MANAGER_ORG = "ennetal_ki"


def serving_actors(session, world, town: str) -> dict[str, Actor]:
    """The most local organisation of each kind serving the town; the Kreis's centre runs the
    case management."""
    town_path = session.scalar(select(Jurisdiction.path).where(Jurisdiction.id == world.jurisdictions[town]))
    rows = session.execute(
        select(Organisation.id, Organisation.key, Organisation.kind, Jurisdiction.path)
        .join(Jurisdiction, Jurisdiction.id == Organisation.jurisdiction_id)
        .order_by(Organisation.id)
    ).all()
    session.rollback()
    out: dict[str, Actor] = {}
    for r in rows:
        if not town_path.startswith(r.path):
            continue
        actor = Actor(f"test.{r.key}", r.id, r.kind, r.path, frozenset({"clerk"}))
        if r.key == CASE_MANAGER_ORG:
            out[CASE_MANAGEMENT_OWNER] = actor
        if r.kind not in out or len(r.path) > len(out[r.kind].jurisdiction_path):
            out[r.kind] = actor
    return out


class Walker:
    """Moves the steps of refugee_recognised chains at chosen moments, as their owners."""

    # The steps on the way to the course entitlement, in an order their prerequisites allow.
    TO_ENTITLEMENT = ["arrival_assignment", "accommodation", "registration", "asylum_decision",
                      "residence_permit", "integration_course_entitlement"]

    def __init__(self, session, catalog, world):
        self.session, self.catalog, self.world = session, catalog, world
        self.actors = {town: serving_actors(session, world, town) for town in ("wittmar", "hattenberg")}
        self.template = catalog.current["refugee_recognised"]

    def person(self, town: str, at: datetime) -> uuid.UUID:
        person = Person(
            residence_status="protection_granted", bleibeperspektive="good", benefit_regime="asylblg",
            lead_jurisdiction_id=self.world.jurisdictions[town],
            created_by_organisation_id=self.world.organisations[CASE_MANAGER_ORG], created_at=at,
        )
        self.session.add(person)
        self.session.commit()
        return person.id

    def start(self, town: str, person_id: uuid.UUID, at: datetime, template: str = "refugee_recognised"):
        return service.start_chain(self.session, self.catalog, self.actors[town][CASE_MANAGEMENT_OWNER],
                                   person_id, template, at)

    def act(self, town: str, chain_id: uuid.UUID, step: str, action: str, at: datetime,
            reason: str | None = None):
        owner = self.template.step(step).owner
        return service.transition_step(self.session, self.catalog, self.actors[town][owner], chain_id,
                                       step, action, reason, None, at)

    def to_entitlement(self, town: str, chain_id: uuid.UUID, entitled_at: datetime,
                       interview_day: int | None = None) -> None:
        """Walk to the entitlement, completed exactly at ``entitled_at``; the chain was opened
        three days before. Optionally the Erstgespräch is completed ``interview_day`` days after
        the chain start (after the rest, so the event order stays realistic)."""
        at = entitled_at - timedelta(days=2)
        for step in self.TO_ENTITLEMENT:
            self.act(town, chain_id, step, "start", at)
            at += timedelta(minutes=30)
            if step != "integration_course_entitlement":
                self.act(town, chain_id, step, "complete", at)
                at += timedelta(minutes=30)
        self.act(town, chain_id, "integration_course_entitlement", "complete", entitled_at)
        if interview_day is not None:
            chain_started = entitled_at - timedelta(days=3)
            self.act(town, chain_id, "first_interview", "start", entitled_at)
            self.act(town, chain_id, "first_interview", "complete", chain_started + interview_day * DAY)

    def chain(self, town: str, entitled_at: datetime | None, course_after: timedelta | None,
              person_id: uuid.UUID | None = None, interview_day: int | None = None) -> uuid.UUID:
        opened = (entitled_at or NOW - 30 * DAY) - timedelta(days=3)
        person_id = person_id or self.person(town, opened)
        chain_id = self.start(town, person_id, opened).id
        if entitled_at is None:  # only the arrival: the course clock never starts
            self.act(town, chain_id, "arrival_assignment", "start", opened + DAY)
            return chain_id
        self.to_entitlement(town, chain_id, entitled_at, interview_day)
        if course_after is not None:
            self.act(town, chain_id, "integration_course", "start", entitled_at + course_after)
        return chain_id


def test_goal_clocks_and_attainment_from_hand_built_chains(session_factory, catalog, world, policies):
    session = session_factory()
    w = Walker(session, catalog, world)
    wit, hat = world.jurisdictions["wittmar"], world.jurisdictions["hattenberg"]
    q1 = datetime(2026, 2, 10, 10, 0, tzinfo=UTC)
    chains: dict[str, uuid.UUID] = {}

    # Wittmar, clocks started in 2026-Q1
    chains["q1_day30"] = w.chain("wittmar", q1, 30 * DAY, interview_day=20)
    chains["q1_day30_blocked"] = w.chain("wittmar", q1 + 2 * DAY, 30 * DAY)
    # The course was started on day 30, then held up and resumed on day 80: the first start counts.
    w.act("wittmar", chains["q1_day30_blocked"], "integration_course", "block", q1 + 40 * DAY, "Kurs pausiert")
    w.act("wittmar", chains["q1_day30_blocked"], "integration_course", "resume", q1 + 82 * DAY)
    chains["q1_day70"] = w.chain("wittmar", q1 + 5 * DAY, 70 * DAY, interview_day=40)
    chains["q1_never_100d"] = w.chain("wittmar", NOW - 100 * DAY, None)  # 2026-03-23: missed
    # One person, two chains: the first (missed, Q1) counts, not the re-opened one (attained, Q2).
    # It was closed after its clock stopped, so it stays in the population.
    twice = w.person("wittmar", q1 - 30 * DAY)
    chains["twice_first"] = w.chain("wittmar", q1 - 20 * DAY, 70 * DAY, person_id=twice)
    service.close_chain(session, catalog, w.actors["wittmar"][CASE_MANAGEMENT_OWNER],
                        chains["twice_first"], CloseReason.opened_in_error.value, None, None,
                        q1 + 60 * DAY)
    chains["twice_second"] = w.chain("wittmar", datetime(2026, 4, 15, 9, 0, tzinfo=UTC), 20 * DAY,
                                     person_id=twice)
    # Wittmar, clocks started in 2026-Q2
    # 22:30 UTC on 31 March is 00:30 on 1 April in Berlin: second quarter.
    chains["q2_boundary"] = w.chain("wittmar", datetime(2026, 3, 31, 22, 30, tzinfo=UTC), 30 * DAY)
    q2 = datetime(2026, 4, 10, 7, 15, 30, tzinfo=UTC)
    chains["q2_exactly_56"] = w.chain("wittmar", q2, 56 * DAY)
    chains["q2_56_and_a_second"] = w.chain("wittmar", q2 + DAY, 56 * DAY + SECOND)
    chains["q2_never_10d"] = w.chain("wittmar", NOW - 10 * DAY, None)  # clock still running
    # Hattenberg
    chains["hat_q1_day70"] = w.chain("hattenberg", q1 + 10 * DAY, 70 * DAY)
    chains["hat_q2_never_10d"] = w.chain("hattenberg", NOW - 10 * DAY, None)
    # Walked in Wittmar, then the person moved: the chain's current jurisdiction counts.
    chains["moved_q2_day30"] = w.chain("wittmar", datetime(2026, 5, 1, 12, 0, tzinfo=UTC), 30 * DAY)
    session.execute(update(Chain).where(Chain.id == chains["moved_q2_day30"]).values(lead_jurisdiction_id=hat))
    session.commit()
    # Not in the population: the clock never started, or another template.
    chains["no_entitlement"] = w.chain("wittmar", None, None)
    eu_person = w.person("wittmar", NOW - 50 * DAY)
    chains["eu_newcomer"] = w.start("wittmar", eu_person, NOW - 50 * DAY, "eu_newcomer").id

    goal = policies.goals["integrationskurs_in_8_wochen"]
    clocks = goal_clocks(session, goal)
    session.rollback()
    by_chain = {c.chain_id: c for c in clocks}
    name_of = {v: k for k, v in chains.items()}
    assert {name_of[c] for c in by_chain} == set(chains) - {"no_entitlement", "eu_newcomer"}
    exact = by_chain[chains["q2_exactly_56"]]
    assert (exact.started_at, exact.stopped_at) == (q2, q2 + 56 * DAY)
    assert by_chain[chains["q1_day30_blocked"]].stopped_at == q1 + 32 * DAY
    assert by_chain[chains["q1_never_100d"]].stopped_at is None
    assert by_chain[chains["twice_first"]].person_id == by_chain[chains["twice_second"]].person_id == twice
    assert by_chain[chains["moved_q2_day30"]].jurisdiction_id == hat
    assert all(c.started_at.tzinfo is not None for c in clocks)

    # The report computes the same in SQL; both must agree on every cell.
    expected_cells = attainment(clocks, goal.measure.within_days, NOW)
    assert attainment_in_sql(session, goal, [wit, hat], NOW) == expected_cells
    session.rollback()
    assert expected_cells == {
        ("2026-Q1", wit): AttainmentCell(attained=2, missed=3, pending=0),
        ("2026-Q2", wit): AttainmentCell(attained=2, missed=1, pending=1),
        ("2026-Q1", hat): AttainmentCell(attained=0, missed=1, pending=0),
        ("2026-Q2", hat): AttainmentCell(attained=1, missed=0, pending=1),
    }

    # A goal clocked from the chain start keeps chains that never reached the stop event.
    interview: Goal = policies.goals["erstgespraech_in_28_tagen"]
    iclocks = {c.chain_id: c for c in goal_clocks(session, interview)}
    session.rollback()
    # Every refugee_recognised and eu_newcomer chain, except the one closed before its interview:
    # a chain closed before its clock stopped left the population.
    assert set(iclocks) == set(chains.values()) - {chains["twice_first"]}
    opened = iclocks[chains["q1_day30"]].started_at
    assert opened == q1 - 3 * DAY
    assert iclocks[chains["q1_day30"]].stopped_at == opened + 20 * DAY
    assert iclocks[chains["q1_day70"]].stopped_at == q1 + 5 * DAY - 3 * DAY + 40 * DAY
    stopped = {name_of[c] for c, clock in iclocks.items() if clock.stopped_at is not None}
    assert stopped == {"q1_day30", "q1_day70"}
    assert iclocks[chains["eu_newcomer"]].started_at == NOW - 50 * DAY
    assert attainment_in_sql(session, interview, [wit, hat], NOW) == attainment(iclocks.values(), 28, NOW)
    session.rollback()
    outcomes = {name_of[c]: classify(clock, 28, NOW) for c, clock in iclocks.items()}
    assert outcomes["q1_day30"] == "attained" and outcomes["q1_day70"] == "missed"
    assert outcomes["q2_never_10d"] == "pending" and outcomes["eu_newcomer"] == "missed"
    session.close()


def test_goal_without_measure_has_no_clocks(session_factory, policies):
    with session_factory() as session, pytest.raises(ValueError, match="no measure"):
        goal_clocks(session, policies.goals["kursangebot_transparent"])
