"""The goal system (Zielsystem) of the Lenkungsgruppe and the attainment of measurable goals.

Goals are operator policy (``policies/goals.yaml``) in three tiers (DOMAIN.md section 9):
Grundsatzziele set by the Lenkungsgruppe, Rahmenziele below them and Ergebnisziele below those,
worked out by the working groups. A goal that can be read off the chain events declares a
:class:`GoalMeasure`: which chains form the population, which event starts and which stops the
clock, how many days the clock may run, and the share of persons the goal aims at. Attainment is
computed from the events (:func:`goal_clocks`, :func:`attainment`), never typed in.

File format::

    goals:
      - key: integrationskurs_in_8_wochen   # snake_case, unique in the file
        tier: ergebnisziel                  # grundsatzziel | rahmenziel | ergebnisziel
        parent: kurszugang_ohne_wartezeit   # rahmenziel -> a grundsatzziel,
                                            #   ergebnisziel -> a rahmenziel,
                                            #   grundsatzziel -> none
        title: Jede berechtigte Person beginnt innerhalb von 8 Wochen einen Integrationskurs
        description: ...                    # optional, default ""
        measure:                            # optional; never on a grundsatzziel
          population: {templates: [refugee_recognised]}
          start: {step: integration_course_entitlement, on: completed}   # or {chain: started}
          stop: {step: integration_course, on: started}
          within_days: 56                   # 1..3650
          target_share: 0.8                 # (0, 1]

The loader is pure apart from reading the file; :func:`goal_clocks` is the one database read.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, cast
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import and_, case, func, literal, or_, select, true
from sqlalchemy.orm import Session

from casemgmt.chains.engine import StepState
from casemgmt.chains.models import Chain, ChainEvent
from casemgmt.chains.spec import AnchorEvent, ChainTemplate
from casemgmt.policy.source import LineDict, PolicyError, format_loc, line_of, load_yaml, validate

__all__ = [
    "AttainmentCell",
    "Goal",
    "GoalClock",
    "GoalMeasure",
    "GoalTier",
    "Outcome",
    "attainment",
    "children",
    "classify",
    "goal_clocks",
    "load_goals",
    "measurable",
    "quarter_of",
]

MAX_WITHIN_DAYS = 3650
REPORT_TIMEZONE = ZoneInfo("Europe/Berlin")

Outcome = Literal["attained", "missed", "pending"]


class GoalTier(str, enum.Enum):
    """The three tiers of the goal system, from the top."""

    grundsatzziel = "grundsatzziel"
    rahmenziel = "rahmenziel"
    ergebnisziel = "ergebnisziel"


# The tier a goal's parent must have; a Grundsatzziel is a root.
PARENT_TIER: Mapping[GoalTier, GoalTier | None] = {
    GoalTier.grundsatzziel: None,
    GoalTier.rahmenziel: GoalTier.grundsatzziel,
    GoalTier.ergebnisziel: GoalTier.rahmenziel,
}


@dataclass(frozen=True, slots=True)
class GoalMeasure:
    """How a goal is computed from chain events.

    The clock of a chain starts at the first ``start_on`` event of ``start_step`` (or when the
    chain was opened, if ``start_step`` is None) and stops at the first ``stop_on`` event of
    ``stop_step``. The goal is attained for a person whose clock stopped within ``within_days``.
    """

    templates: tuple[str, ...]
    start_step: str | None
    start_on: AnchorEvent  # always "started" for the chain start
    stop_step: str
    stop_on: AnchorEvent
    within_days: int
    target_share: float

    @property
    def starts_with_chain(self) -> bool:
        return self.start_step is None


@dataclass(frozen=True, slots=True)
class Goal:
    """One goal of the Zielsystem; ``measure`` is None for goals not read off chain events."""

    key: str
    tier: GoalTier
    title: str
    description: str
    parent: str | None
    measure: GoalMeasure | None


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

_Key = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
_Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_Text = Annotated[str, StringConstraints(strip_whitespace=True)]


class _Strict(BaseModel):
    # Strict, as for chain templates: a goal should say "56", not rely on "56.0" being coerced.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _PopulationDoc(_Strict):
    templates: list[_Key] = Field(min_length=1)


class _StartDoc(_Strict):
    step: _Key | None = None
    chain: Literal["started"] | None = None
    on: AnchorEvent | None = None


class _StopDoc(_Strict):
    step: _Key
    on: AnchorEvent


class _MeasureDoc(_Strict):
    population: _PopulationDoc
    start: _StartDoc
    stop: _StopDoc
    within_days: int = Field(ge=1, le=MAX_WITHIN_DAYS)
    target_share: float = Field(gt=0, le=1)  # NaN fails both bounds


class _GoalDoc(_Strict):
    key: _Key
    tier: Literal["grundsatzziel", "rahmenziel", "ergebnisziel"]
    title: _Title
    description: _Text = ""
    parent: _Key | None = None
    measure: _MeasureDoc | None = None


class _GoalsDoc(_Strict):
    goals: list[_GoalDoc] = Field(min_length=1)


class _Reporter:
    def __init__(self, raw: Any, path: Path) -> None:
        self.raw = raw
        self.path = path

    def fail(self, loc: Sequence[str | int], message: str) -> NoReturn:
        raise PolicyError(self.path, line_of(self.raw, loc), format_loc(loc), message)


def _restore_on_keys(raw: Any, report: _Reporter) -> None:
    """YAML 1.1 reads a bare ``on`` key as ``True``; give ``start.on`` / ``stop.on`` their name."""
    goals = raw.get("goals") if isinstance(raw, Mapping) else None
    if not isinstance(goals, list):
        return
    for i, goal in enumerate(goals):
        measure = goal.get("measure") if isinstance(goal, Mapping) else None
        if not isinstance(measure, Mapping):
            continue
        for point in ("start", "stop"):
            node = measure.get(point)
            if not isinstance(node, LineDict) or True not in node:
                continue
            if "on" in node:
                report.fail(["goals", i, "measure", point, "on"], "key 'on' is given twice")
            node["on"] = node.pop(True)
            node.key_lines["on"] = node.key_lines.pop(True)


def load_goals(path: Path, templates: Mapping[str, ChainTemplate]) -> dict[str, Goal]:
    """Read and check ``goals.yaml`` against the current chain templates, keyed by goal key.

    Every problem raises :class:`PolicyError` naming the file, the line and the field.
    """
    raw = load_yaml(path)
    report = _Reporter(raw, path)
    _restore_on_keys(raw, report)
    doc = cast(_GoalsDoc, validate(_GoalsDoc, raw, path))

    index_of: dict[str, int] = {}
    for i, goal in enumerate(doc.goals):
        if goal.key in index_of:
            report.fail(["goals", i, "key"],
                        f"duplicate goal key {goal.key!r} (already used by goals[{index_of[goal.key]}])")
        index_of[goal.key] = i

    goals: dict[str, Goal] = {}
    for i, goal in enumerate(doc.goals):
        tier = GoalTier(goal.tier)
        _check_parent(i, tier, goal, doc.goals, index_of, report)
        measure = None
        if goal.measure is not None:
            if tier is GoalTier.grundsatzziel:
                report.fail(["goals", i, "measure"],
                            "a grundsatzziel is not measured itself; declare the measure on an "
                            "ergebnisziel (or rahmenziel) below it")
            measure = _measure(i, goal.measure, templates, report)
        goals[goal.key] = Goal(goal.key, tier, goal.title, goal.description, goal.parent, measure)
    return goals


def _check_parent(i: int, tier: GoalTier, goal: _GoalDoc, docs: Sequence[_GoalDoc],
                  index_of: Mapping[str, int], report: _Reporter) -> None:
    wanted = PARENT_TIER[tier]
    loc: list[str | int] = ["goals", i, "parent"]
    if wanted is None:
        if goal.parent is not None:
            report.fail(loc, "a grundsatzziel is set by the Lenkungsgruppe and has no parent")
        return
    if goal.parent is None:
        report.fail(loc, f"a {tier.value} needs a parent (a {wanted.value})")
    if goal.parent not in index_of:
        report.fail(loc, f"unknown goal {goal.parent!r}")
    parent = docs[index_of[goal.parent]]
    if parent.tier != wanted.value:
        report.fail(loc, f"the parent of a {tier.value} must be a {wanted.value}; "
                         f"{goal.parent!r} is a {parent.tier}")


def _measure(i: int, doc: _MeasureDoc, templates: Mapping[str, ChainTemplate],
             report: _Reporter) -> GoalMeasure:
    base: list[str | int] = ["goals", i, "measure"]
    seen: set[str] = set()
    for k, key in enumerate(doc.population.templates):
        loc = [*base, "population", "templates", k]
        if key not in templates:
            known = ", ".join(sorted(templates)) or "(none)"
            report.fail(loc, f"unknown chain template {key!r}; known templates: {known}")
        if key in seen:
            report.fail(loc, f"template {key!r} is listed twice")
        seen.add(key)
    population = [templates[key] for key in doc.population.templates]

    start = doc.start
    if (start.step is None) == (start.chain is None):
        report.fail([*base, "start"], "name either a step ({step: ..., on: ...}) or "
                                      "the chain start ({chain: started})")
    if start.chain is not None and start.on is not None:
        report.fail([*base, "start", "on"], "'on' belongs to a step; the chain start is {chain: started}")
    if start.step is not None:
        if start.on is None:
            report.fail([*base, "start", "on"], "say whether the clock starts when the step is "
                                                "'started' or 'completed'")
        _check_step(start.step, [*base, "start", "step"], population, report)
    _check_step(doc.stop.step, [*base, "stop", "step"], population, report)
    start_on: AnchorEvent = start.on if start.on is not None else "started"
    if start.step == doc.stop.step and start_on == doc.stop.on:
        report.fail([*base, "stop"], "the clock would stop at the event that starts it")

    return GoalMeasure(
        templates=tuple(doc.population.templates),
        start_step=start.step,
        start_on=start_on,
        stop_step=doc.stop.step,
        stop_on=doc.stop.on,
        within_days=doc.within_days,
        target_share=doc.target_share,
    )


def _check_step(step: str, loc: Sequence[str | int], population: Iterable[ChainTemplate],
                report: _Reporter) -> None:
    lacking = [t.key for t in population if step not in t.step_keys()]
    if lacking:
        report.fail(loc, f"step {step!r} is not a step of template(s) {', '.join(lacking)}; "
                         "a measure's steps must exist in every template of its population")


# --------------------------------------------------------------------------------------------
# Clocks and attainment (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GoalClock:
    """The goal's clock on one chain: when it started and, if it did, when it stopped."""

    chain_id: uuid.UUID
    person_id: uuid.UUID
    jurisdiction_id: int
    started_at: datetime
    stopped_at: datetime | None


def classify(clock: GoalClock, within_days: int, now: datetime) -> Outcome:
    """Attained if the clock stopped at most ``within_days`` (exact elapsed time) after it
    started; missed if it stopped later, or is still running past that; pending otherwise.

    ``now`` is the moment of evaluation; stop events are taken as they are, so clocks should be
    read at or before ``now``.
    """
    limit = timedelta(days=within_days)
    if clock.stopped_at is not None:
        return "attained" if clock.stopped_at - clock.started_at <= limit else "missed"
    return "missed" if now - clock.started_at > limit else "pending"


def quarter_of(moment: datetime) -> str:
    """The calendar quarter of ``moment`` in German local time, e.g. ``"2026-Q1"``.

    Reports are read in local time, so an event shortly after midnight on 1 April belongs to the
    second quarter even though it is still 31 March in UTC.
    """
    if moment.tzinfo is None:
        raise ValueError("quarter_of needs an aware datetime")
    local = moment.astimezone(REPORT_TIMEZONE)
    return f"{local.year}-Q{(local.month - 1) // 3 + 1}"


@dataclass(frozen=True, slots=True)
class AttainmentCell:
    """Distinct persons in one (quarter, jurisdiction) cell of a goal, by outcome."""

    attained: int = 0
    missed: int = 0
    pending: int = 0

    @property
    def persons(self) -> int:
        return self.attained + self.missed + self.pending

    @property
    def share(self) -> float | None:
        """Attained among the decided clocks; pending ones are still open and do not count."""
        decided = self.attained + self.missed
        return self.attained / decided if decided else None


def attainment(clocks: Iterable[GoalClock], within_days: int,
               now: datetime) -> dict[tuple[str, int], AttainmentCell]:
    """Persons per (quarter of the clock start, jurisdiction) and outcome.

    A person with several chains in the population counts once, by the clock that started
    first (ties broken by chain id so the result does not depend on the order of ``clocks``).
    Later chains of the same person are usually re-openings after a move or an error, and
    counting them again would let one person weigh twice in a share.
    """
    first: dict[uuid.UUID, GoalClock] = {}
    for clock in clocks:
        known = first.get(clock.person_id)
        if known is None or (clock.started_at, clock.chain_id) < (known.started_at, known.chain_id):
            first[clock.person_id] = clock
    counts: dict[tuple[str, int], dict[str, int]] = {}
    # Berlin is a whole number of hours off UTC, so the quarter is fixed within each UTC hour;
    # converting time zones once per hour rather than per clock matters at 100k clocks.
    quarters: dict[int, str] = {}
    for clock in first.values():
        hour = int(clock.started_at.timestamp() // 3600)
        quarter = quarters.get(hour)
        if quarter is None:
            quarter = quarters[hour] = quarter_of(clock.started_at)
        cell = counts.setdefault((quarter, clock.jurisdiction_id),
                                 {"attained": 0, "missed": 0, "pending": 0})
        cell[classify(clock, within_days, now)] += 1
    return {key: AttainmentCell(**cell) for key, cell in sorted(counts.items())}


# --------------------------------------------------------------------------------------------
# Reading the clocks from the chain events
# --------------------------------------------------------------------------------------------

_chains = Chain.__table__
_events = ChainEvent.__table__

# Event kind of step state changes (casemgmt.chains.service.EVENT_STEP). Repeated rather than
# imported: the policy loader imports this module, and loading policies should not drag in the
# service layer with its handover and privacy dependencies.
_STEP_EVENT = "step"
# "started" is the first move into in_progress (a resume from blocked comes later and is ignored
# by taking the minimum); "completed" the move into completed.
_STATE_OF_EVENT: Mapping[str, str] = {
    "started": StepState.in_progress.value,
    "completed": StepState.completed.value,
}


def _is_event(step: str, on: str):
    return and_(_events.c.step_key == step, _events.c.to_state == _STATE_OF_EVENT[on])


def goal_clocks(session: Session, goal: Goal) -> list[GoalClock]:
    """The goal's clock on every chain of its population whose clock has started (see
    :func:`goal_clock_statement`)."""
    # The columns are in GoalClock's field order; positional rows are much cheaper than named
    # access when a goal clocked from the chain start returns the whole population.
    return [GoalClock(*row) for row in session.execute(goal_clock_statement(goal)).all()]


def attainment_in_sql(session: Session, goal: Goal, jurisdiction_ids, now: datetime
                      ) -> dict[tuple[str, int], AttainmentCell]:
    """:func:`attainment` computed by PostgreSQL: the same first clock per person (by start, then
    chain id), the same classification and the same local quarters, without shipping every clock
    to Python (the report's hot path; bench/report.py). Kept equal to the Python version by a test."""
    measure = goal.measure
    if measure is None:
        raise ValueError(f"goal {goal.key!r} has no measure")
    clocks = goal_clock_statement(goal).subquery("clocks")
    ranked = select(
        clocks, func.row_number().over(partition_by=clocks.c.person_id,
                                       order_by=(clocks.c.started_at, clocks.c.id)).label("rank"),
    ).where(clocks.c.lead_jurisdiction_id.in_(list(jurisdiction_ids))).subquery("ranked")
    limit = timedelta(days=measure.within_days)
    outcome = case(
        (and_(ranked.c.stopped_at.is_not(None), ranked.c.stopped_at - ranked.c.started_at <= limit), "attained"),
        (ranked.c.stopped_at.is_not(None), "missed"),
        (literal(now) - ranked.c.started_at > limit, "missed"),
        else_="pending",
    ).label("outcome")
    quarter = func.to_char(func.timezone(REPORT_TIMEZONE.key, ranked.c.started_at), 'YYYY-"Q"Q').label("quarter")
    rows = session.execute(
        select(quarter, ranked.c.lead_jurisdiction_id, outcome, func.count())
        .where(ranked.c.rank == 1).group_by(quarter, ranked.c.lead_jurisdiction_id, outcome)
    ).all()
    counts: dict[tuple[str, int], dict[str, int]] = {}
    for q, town, result, n in rows:
        counts.setdefault((q, town), {"attained": 0, "missed": 0, "pending": 0})[result] += n
    return {key: AttainmentCell(**cell) for key, cell in sorted(counts.items())}


def goal_clock_statement(goal: Goal):
    """The goal's clock on every chain of its population whose clock has started.

    One statement: the events that can start or stop the clock are aggregated per chain (first
    start, first stop) and joined to the population's chains; the jurisdiction is the chain's
    current lead jurisdiction. Aggregating before the join keeps the grouping to the chains that
    have such events, not the whole population, which matters for goals clocked from the chain
    start (every chain of the population is a row). Without an index on the event columns the
    events table is scanned once; ``chain_events (step_key, to_state) INCLUDE (chain_id,
    occurred_at) WHERE kind = 'step'`` turns that into an index-only read of the few events that
    matter (the index on ``chain_events (chain_id, id)`` cannot help: the query wants all chains).
    """
    measure = goal.measure
    if measure is None:
        raise ValueError(f"goal {goal.key!r} has no measure")
    stop = _is_event(measure.stop_step, measure.stop_on)
    columns = [_events.c.chain_id,
               func.min(_events.c.occurred_at).filter(stop).label("stopped_at")]
    relevant = stop
    if measure.start_step is not None:
        start = _is_event(measure.start_step, measure.start_on)
        columns.append(func.min(_events.c.occurred_at).filter(start).label("started_at"))
        relevant = or_(start, stop)
    firsts = (
        select(*columns)
        .where(_events.c.kind == _STEP_EVENT, relevant)
        .group_by(_events.c.chain_id)
        .subquery("firsts")
    )
    if measure.start_step is None:
        # Every chain's clock started when it was opened, stopped or not: keep chains without events.
        started_at = _chains.c.started_at
        source = _chains.outerjoin(firsts, firsts.c.chain_id == _chains.c.id)
        started = true()
    else:
        started_at = firsts.c.started_at
        source = _chains.join(firsts, firsts.c.chain_id == _chains.c.id)
        started = firsts.c.started_at.is_not(None)
    stmt = (
        select(_chains.c.id, _chains.c.person_id, _chains.c.lead_jurisdiction_id,
               started_at.label("started_at"), firsts.c.stopped_at)
        .select_from(source)
        .where(_chains.c.template_key.in_(measure.templates), started,
               # A chain closed before its clock stopped (moved away, opened in error, ...) left
               # the population: counting it as missed would blame the offices for a move.
               or_(_chains.c.lifecycle != "closed", firsts.c.stopped_at.is_not(None)))
    )
    return stmt


def measurable(goals: Mapping[str, Goal]) -> list[Goal]:
    """The goals with a measure, in file order."""
    return [g for g in goals.values() if g.measure is not None]


def children(goals: Mapping[str, Goal], key: str) -> list[Goal]:
    """The goals directly below ``key``, in file order."""
    return [g for g in goals.values() if g.parent == key]
