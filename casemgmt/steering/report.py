"""The steering report for the Lenkungsgruppe: anonymised aggregates only.

Every count is of distinct persons. The report is built in three steps:

1. a few set-based queries produce the raw counts (no per-person or per-chain round trips);
2. the counts are arranged in tables whose only declared relations are exact sums: a person
   lives in exactly one town, so a Kreis cell is the sum of its towns; a person is counted once
   per goal, so goal tables are additive over quarter, town and outcome. Breakdowns in which one
   person can appear in several categories (several barriers, several overdue steps) publish
   no total across those categories, because such a total is not a sum and would give an
   attacker inequalities to work with;
3. :func:`casemgmt.steering.disclosure.protect` suppresses every cell with 0 < n < k and as many
   further cells as needed so that no suppressed cell can be worked out from the published ones
   and the declared relations. A breakdown that cannot be protected at all (say four towns with
   one person each) is dropped and only its suppressed total is kept.

The published form lists every table with its dimensions, which dimension carries a total
("_total" = sum of the other members), and each cell's value or None (rendered "."). That is all
an attacker gets, and the attacker test in tests/ works from exactly this document.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, distinct, func, not_, or_, select
from sqlalchemy.orm import Session

from casemgmt.chains.engine import ChainLifecycle
from casemgmt.chains.models import Chain, ChainStep
from casemgmt.chains.service import overdue_step_clause
from casemgmt.conferences.models import (
    Conference,
    ConferenceCase,
    Finding,
    FindingCase,
    FindingOrganisationKind,
)
from casemgmt.conferences.policy import SteeringPolicy
from casemgmt.handovers.lifecycle import HandoverState
from casemgmt.handovers.models import Handover
from casemgmt.jurisdictions.models import Jurisdiction, JurisdictionLevel
from casemgmt.persons.models import Person
from casemgmt.problems import NotFound, ValidationFailed
from casemgmt.steering import disclosure, supply
from casemgmt.steering.goals import (
    REPORT_TIMEZONE,
    Goal,
    attainment,
    attainment_in_sql,
    goal_clocks,
    measurable,
    quarter_of,
)

TOTAL = "_total"
OUTCOMES = ("attained", "missed")
OUTCOME_TITLES = {"attained": "erreicht", "missed": "verfehlt", TOTAL: "entschieden"}
DIMENSION_TITLES = {
    "barrier_category": "Barriere", "field_of_action": "Handlungsfeld", "organisation_kind": "Organisationsart",
    "step_key": "Schritt", "quarter": "Quartal", "town": "Gemeinde", "outcome": "Ergebnis",
    "sender_kind": "Abgebende Stelle", "receiver_kind": "Aufnehmende Stelle", "offer_kind": "Angebotsart",
}


@dataclass(frozen=True)
class Period:
    """A calendar quarter in German local time, as UTC instants: [start, end)."""

    label: str  # "2026-Q2"
    start: datetime
    end: datetime

    @classmethod
    def of(cls, label: str) -> Period:
        year, q = int(label[:4]), int(label[-1])
        start = datetime(year, 3 * q - 2, 1, tzinfo=REPORT_TIMEZONE)
        end = datetime(year + (q == 4), 1 if q == 4 else 3 * q + 1, 1, tzinfo=REPORT_TIMEZONE)
        return cls(label, start.astimezone(UTC), end.astimezone(UTC))

    @property
    def title(self) -> str:
        return quarter_title(self.label)

    def contains(self, column):
        return and_(column >= self.start, column < self.end)


def quarter_title(label: str) -> str:
    """'2026-Q2' -> '2. Quartal 2026'."""
    if label == TOTAL:
        return "alle Quartale"
    return f"{label[-1]}. Quartal {label[:4]}"


@dataclass
class Table:
    """One published table. ``totals`` names the dimensions that have a ``_total`` member equal to
    the sum over the other members of that dimension (the others fixed)."""

    key: str
    title: str
    dimensions: list[str]
    totals: list[str]
    cells: list[dict[str, Any]] = field(default_factory=list)  # {dim: label, ..., "value": int|None}
    dropped: list[dict[str, Any]] = field(default_factory=list)  # breakdowns not publishable
    merged: list[dict[str, Any]] = field(default_factory=list)  # breakdowns with towns merged

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "unit": "persons", "dimensions": self.dimensions,
                "dimension_titles": {d: DIMENSION_TITLES.get(d, d) for d in self.dimensions},
                "totals": self.totals, "cells": self.cells, "dropped_breakdowns": self.dropped,
                "merged_breakdowns": self.merged}


@dataclass
class Area:
    """The Kreis (or kreisfreie Stadt) the report covers, and the towns in it."""

    id: int
    name: str
    towns: dict[int, str]  # jurisdiction id -> key
    town_titles: dict[str, str] = field(default_factory=dict)  # key -> name


def resolve_area(session: Session, jurisdiction_id: int) -> Area:
    area = session.get(Jurisdiction, jurisdiction_id)
    if area is None:
        raise NotFound(f"no jurisdiction {jurisdiction_id}", resource="jurisdiction", id=str(jurisdiction_id))
    if area.level == JurisdictionLevel.kreis.value:
        rows = session.execute(select(Jurisdiction.id, Jurisdiction.key, Jurisdiction.name)
                               .where(Jurisdiction.parent_id == area.id).order_by(Jurisdiction.key)).all()
        towns = {r.id: r.key for r in rows}
        titles = {r.key: r.name for r in rows}
    elif area.level == JurisdictionLevel.kreisfreie_stadt.value:
        towns = {area.id: area.key}
        titles = {area.key: area.name}
    else:
        raise ValidationFailed(
            f"jurisdiction_id: {area.name} is a {area.level}; reports cover a Kreis or a kreisfreie Stadt",
            errors=[{"field": "query.jurisdiction_id", "message": "a Kreis or a kreisfreie Stadt",
                     "type": "value_error"}])
    return Area(area.id, area.name, towns, titles)


# --- raw counts -----------------------------------------------------------------------------------


def barrier_counts(session: Session, area: Area, period: Period | None = None
                   ) -> dict[tuple[str, str, str], dict[str, int]]:
    """Distinct persons per (barrier, field of action, organisation kind) and town; with a
    period, from the Fallkonferenzen held in it."""
    stmt = (
        select(Finding.barrier_category, Finding.field_of_action, FindingOrganisationKind.organisation_kind,
               Person.lead_jurisdiction_id, func.count(distinct(ConferenceCase.person_id)))
        .join(FindingOrganisationKind, FindingOrganisationKind.finding_id == Finding.id)
        .join(FindingCase, FindingCase.finding_id == Finding.id)
        .join(ConferenceCase, ConferenceCase.id == FindingCase.conference_case_id)
        .join(Person, Person.id == ConferenceCase.person_id)
        .where(Person.lead_jurisdiction_id.in_(area.towns))
    )
    if period is not None:
        stmt = stmt.join(Conference, Conference.id == ConferenceCase.conference_id).where(
            period.contains(Conference.scheduled_at))
    rows = session.execute(
        stmt.group_by(Finding.barrier_category, Finding.field_of_action, FindingOrganisationKind.organisation_kind,
                  Person.lead_jurisdiction_id)
    ).all()
    out: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for barrier, field_, kind, town, n in rows:
        out[(barrier, field_, kind)][area.towns[town]] = n
    return out


def _fell_overdue_in(period: Period):
    """The step's deadline fell in the period and the step had not reached its mark by then
    (started, or completed, as the deadline is for): a fact that does not change afterwards."""
    return and_(
        ChainStep.due_at.is_not(None), period.contains(ChainStep.due_at),
        not_(ChainStep.state.in_(("skipped", "cancelled"))),
        or_(and_(ChainStep.due_for == "start",
                 or_(ChainStep.started_at.is_(None), ChainStep.started_at > ChainStep.due_at)),
            and_(ChainStep.due_for != "start",
                 or_(ChainStep.completed_at.is_(None), ChainStep.completed_at > ChainStep.due_at))),
    )


def overdue_counts(session: Session, area: Area, now: datetime, period: Period | None = None
                   ) -> dict[str, dict[str, int]]:
    """Distinct persons with an overdue step, per step key and town: overdue now, or with a
    period, whose step fell overdue in it."""
    overdue = (and_(Chain.lifecycle == ChainLifecycle.open.value, overdue_step_clause(now))
               if period is None else _fell_overdue_in(period))
    rows = session.execute(
        select(ChainStep.key, Person.lead_jurisdiction_id, func.count(distinct(Chain.person_id)))
        .join(Chain, Chain.id == ChainStep.chain_id)
        .join(Person, Person.id == Chain.person_id)
        .where(overdue, Person.lead_jurisdiction_id.in_(area.towns))
        .group_by(ChainStep.key, Person.lead_jurisdiction_id)
    ).all()
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for step, town, n in rows:
        out[step][area.towns[town]] = n
    return out


def _on_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _quarter(column):
    """SQL twin of :func:`quarter_of` (PostgreSQL): the local quarter, e.g. '2026-Q1'."""
    return func.to_char(func.timezone("Europe/Berlin", column), 'YYYY-"Q"Q')


def conference_counts(session: Session, area: Area, period: Period | None = None) -> dict[str, dict[str, int]]:
    """Distinct persons discussed in a Fallkonferenz, per quarter and town."""
    counts = _conference_counts(session, area)
    return counts if period is None else {q: t for q, t in counts.items() if q == period.label}


def _conference_counts(session: Session, area: Area) -> dict[str, dict[str, int]]:
    if _on_postgresql(session):
        quarter = _quarter(Conference.scheduled_at)
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for q, town, n in session.execute(
            select(quarter, Person.lead_jurisdiction_id, func.count(distinct(ConferenceCase.person_id)))
            .join(Conference, Conference.id == ConferenceCase.conference_id)
            .join(Person, Person.id == ConferenceCase.person_id)
            .where(Person.lead_jurisdiction_id.in_(area.towns))
            .group_by(quarter, Person.lead_jurisdiction_id)
        ).all():
            out[q][area.towns[town]] = n
        return out
    rows = session.execute(
        select(ConferenceCase.person_id, Conference.scheduled_at, Person.lead_jurisdiction_id)
        .join(Conference, Conference.id == ConferenceCase.conference_id)
        .join(Person, Person.id == ConferenceCase.person_id)
        .where(Person.lead_jurisdiction_id.in_(area.towns))
    ).all()
    seen: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for person, at, town in rows:
        seen[quarter_of(at)][area.towns[town]].add(person)
    return {q: {t: len(p) for t, p in towns.items()} for q, towns in seen.items()}


@dataclass
class WaitingGroup:
    persons: set = field(default_factory=set)
    working: list[int] = field(default_factory=list)
    calendar: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class WaitingFigures:
    """Percentiles computed by the database (PostgreSQL's percentile_cont interpolates like
    disclosure.percentile_or_none); ``persons`` decides whether they may be shown."""

    persons: int
    working_median: float | None
    working_p90: float | None
    calendar_median: float | None
    calendar_p90: float | None


def waiting_figures(session: Session, area: Area, period: Period | None = None
                    ) -> tuple[dict[tuple[str, str], WaitingFigures],
                                                             dict[str, WaitingFigures]]:
    """:func:`waiting_times` aggregated in PostgreSQL, so no row per handover reaches Python."""
    h = Handover
    figures = (
        func.count(distinct(h.person_id)),
        func.percentile_cont(0.5).within_group(h.waiting_working_days),
        func.percentile_cont(0.9).within_group(h.waiting_working_days),
        func.percentile_cont(0.5).within_group(h.waiting_calendar_days),
        func.percentile_cont(0.9).within_group(h.waiting_calendar_days),
    )
    acknowledged = (h.state == HandoverState.acknowledged.value, h.from_jurisdiction_id.in_(area.towns))
    if period is not None:
        acknowledged = (*acknowledged, period.contains(h.responded_at))
    pairs = {
        (r[0], r[1]): WaitingFigures(*r[2:])
        for r in session.execute(select(h.sender_organisation_kind, h.receiver_organisation_kind, *figures)
                                 .where(*acknowledged)
                                 .group_by(h.sender_organisation_kind, h.receiver_organisation_kind)).all()
    }
    quarter = _quarter(h.responded_at)
    quarters = {r[0]: WaitingFigures(*r[1:]) for r in session.execute(
        select(quarter, *figures).where(*acknowledged).group_by(quarter)).all()}
    return pairs, quarters


def _figures_of(group: WaitingGroup) -> WaitingFigures:
    def pct(values, q):
        return disclosure.percentile_or_none(values, q, 1) if values else None

    return WaitingFigures(len(group.persons), pct(group.working, 50), pct(group.working, 90),
                          pct(group.calendar, 50), pct(group.calendar, 90))


def waiting_times(session: Session, area: Area, period: Period | None = None
                  ) -> tuple[dict[tuple[str, str], WaitingGroup], dict[str, WaitingGroup]]:
    """Acknowledged handovers of the area's chains: waiting days per pair of organisation kinds,
    and per quarter of acknowledgement (all pairs)."""
    stmt = (select(Handover.sender_organisation_kind, Handover.receiver_organisation_kind, Handover.person_id,
                   Handover.responded_at, Handover.waiting_working_days, Handover.waiting_calendar_days)
            .where(Handover.state == HandoverState.acknowledged.value, Handover.from_jurisdiction_id.in_(area.towns)))
    if period is not None:
        stmt = stmt.where(period.contains(Handover.responded_at))
    rows = session.execute(stmt).all()
    pairs: dict[tuple[str, str], WaitingGroup] = defaultdict(WaitingGroup)
    quarters: dict[str, WaitingGroup] = defaultdict(WaitingGroup)
    for sender, receiver, person, at, working, calendar in rows:
        for group in (pairs[(sender, receiver)], quarters[quarter_of(at)]):
            group.persons.add(person)
            group.working.append(working)
            group.calendar.append(calendar)
    return pairs, quarters


# --- protection -----------------------------------------------------------------------------------


class Protection:
    """How the report's tables are protected: k, which towns merge with which neighbour when a
    breakdown cannot be protected, and cells that must stay suppressed because an earlier
    release of the same period suppressed them (a re-release, see casemgmt.steering.releases).
    It records the true value of every published cell and the reason of every suppression,
    which a release stores (never serves) to protect a later re-release together with it."""

    def __init__(self, k: int, merge_towns: Mapping[str, str] | None = None,
                 forced: Iterable[tuple] = ()):
        self.k = k
        self.merge_towns = dict(merge_towns or {})
        self.forced = set(forced)
        self.truth: dict[tuple, int] = {}
        self.pattern: dict[tuple, str] = {}

    def protect(self, grid: disclosure.Grid, cell_id) -> disclosure.Protected:
        """Protect ``grid``; ``cell_id`` maps a grid key to the published cell's id
        ``(table key, labels)``."""
        forced = [key for key in grid.cells if cell_id(key) in self.forced]
        protected = disclosure.protect(grid, self.k, on_unprotectable="flag", forced=forced)
        if not protected.unprotectable:
            for key, value in grid.cells.items():
                self.truth[cell_id(key)] = value
            for key, why in protected.suppressions.items():
                self.pattern[cell_id(key)] = why.reason
        return protected

    def merged(self, towns: Sequence[str]) -> dict[str, list[str]] | None:
        """Units of towns after merging each small town with its neighbour (as policy names
        them, following chains of merges), or None if nothing merges here."""
        unit: dict[str, str] = {}
        for town in towns:
            target, seen = town, {town}
            while target in self.merge_towns and self.merge_towns[target] in towns \
                    and self.merge_towns[target] not in seen:
                target = self.merge_towns[target]
                seen.add(target)
            unit[town] = target
        if all(t == u for t, u in unit.items()):
            return None
        groups: dict[str, list[str]] = {}
        for town in towns:
            groups.setdefault(unit[town], []).append(town)
        return {"+".join(sorted(members, key=lambda t: (t != head, t))): members for head, members in groups.items()}


def _publish_single(total: int, k: int) -> int | None:
    return total if total == 0 or total >= k else None


def _town_table(grid_key: tuple, towns: Sequence[str], counts: Mapping[str, int], protection: Protection,
                table_key: str, labels: tuple) -> tuple[dict[str, int | None], str | None]:
    """Protect one breakdown over towns with its Kreis total: (published values, what was done:
    None, "merged" or "dropped")."""
    k = protection.k
    if len(towns) == 1:
        # A kreisfreie Stadt: the town is the area, the breakdown says nothing more.
        total = counts.get(towns[0], 0)
        protection.truth[(table_key, (*labels, TOTAL))] = total
        if 0 < total < k:
            protection.pattern[(table_key, (*labels, TOTAL))] = disclosure.PRIMARY
        return {TOTAL: _publish_single(total, k)}, None

    def attempt(units: Mapping[str, list[str]]) -> dict[str, int | None] | None:
        members = list(units)
        unit_counts = {u: sum(counts.get(t, 0) for t in ts) for u, ts in units.items()}
        grid = disclosure.Grid()
        grid.add_table(grid_key, [members], {(u,): n for u, n in unit_counts.items() if n})

        def cell_id(key: tuple) -> tuple:
            town = TOTAL if key[-1] == disclosure.TOTAL else key[-1]
            return (table_key, (*labels, town))

        protected = protection.protect(grid, cell_id)
        if protected.unprotectable:
            return None
        values = {u: protected.value((grid_key, u)) for u in members}
        values[TOTAL] = protected.value((grid_key, disclosure.TOTAL))
        return values

    values = attempt({t: [t] for t in towns})
    if values is not None:
        return values, None
    units = protection.merged(towns)
    if units is not None:
        values = attempt(units)
        if values is not None:
            return values, "merged"
    total = sum(counts.values())
    protection.truth[(table_key, (*labels, TOTAL))] = total
    if 0 < total < k:
        protection.pattern[(table_key, (*labels, TOTAL))] = disclosure.PRIMARY
    return {TOTAL: _publish_single(total, k)}, "dropped"


def _add_town_rows(table: Table, labels: dict[str, str], towns: Sequence[str], counts: Mapping[str, int],
                   protection: Protection) -> None:
    values, done = _town_table((table.key, *labels.values()), towns, counts, protection, table.key,
                               tuple(labels.values()))
    if done == "dropped":
        table.dropped.append(dict(labels))
    elif done == "merged":
        table.merged.append(dict(labels))
    for town, value in values.items():
        table.cells.append({**labels, "town": town, "value": value})


def build_report(session: Session, policy: SteeringPolicy, goals: Mapping[str, Goal], area: Area,
                 now: datetime, *, period: Period | str | None = None,
                 protection: Protection | None = None) -> dict[str, Any]:
    """The whole report as a JSON-ready document: over all data (``period`` None), or for one
    closed quarter as a release publishes it (see casemgmt.steering.releases). Every key in it
    has its German title beside it (``title``, or ``<dimension>_title`` in cells)."""
    if isinstance(period, str):
        period = Period.of(period)
    if protection is None:
        protection = Protection(policy.k, policy.merge_towns)
    k = protection.k
    towns = list(area.towns.values())
    tables: list[Table] = []

    barriers = Table("barriers", "Personen je Barriere, Handlungsfeld und Organisationsart",
                     ["barrier_category", "field_of_action", "organisation_kind", "town"], ["town"])
    for (barrier, field_, kind), counts in sorted(barrier_counts(session, area, period).items()):
        _add_town_rows(barriers, {"barrier_category": barrier, "field_of_action": field_,
                                  "organisation_kind": kind}, towns, counts, protection)
    tables.append(barriers)

    overdue = Table("overdue_steps", "Personen mit überfälligem Schritt, je Schritt" if period is None
                    else "Personen, deren Schritt im Quartal überfällig wurde, je Schritt",
                    ["step_key", "town"], ["town"])
    for step, counts in sorted(overdue_counts(session, area, now, period).items()):
        _add_town_rows(overdue, {"step_key": step}, towns, counts, protection)
    tables.append(overdue)

    discussed = Table("conference_persons", "In Fallkonferenzen besprochene Personen, je Quartal",
                      ["quarter", "town"], ["town"])
    for quarter, counts in sorted(conference_counts(session, area, period).items()):
        _add_town_rows(discussed, {"quarter": quarter}, towns, counts, protection)
    tables.append(discussed)

    goal_tables = [_goal_table(session, goal, area, towns, protection, now, period) for goal in measurable(goals)]
    tables.extend(goal_tables)

    # The Bestands- und Bedarfsanalyse (casemgmt.steering.supply): a person may wait for several
    # kinds (a step several kinds serve), so there is no total over kinds, only over towns.
    demand = Table("offer_demand", "Wartende Personen je Angebotsart (Schritt bereit, noch nicht angemeldet)"
                   if period is None else "Personen, deren Schritt im Quartal bereit wurde und die am Quartalsende "
                                          "noch auf ein Angebot warteten, je Angebotsart", ["offer_kind", "town"], ["town"])
    demand_counts, waits = supply.waiting(session, area.towns, policy.offer_steps, now, period)
    for kind, counts in sorted(demand_counts.items()):
        _add_town_rows(demand, {"offer_kind": kind}, towns, counts, protection)
    tables.append(demand)
    supply_day = now.astimezone(REPORT_TIMEZONE).date()
    offers = supply.supply(session, area.towns, list(policy.offer_steps), supply_day)
    supply_rows = supply.rows(demand.cells, waits, offers, towns, k, supply_day)

    if _on_postgresql(session):
        pairs, quarters = waiting_figures(session, area, period)
    else:
        raw_pairs, raw_quarters = waiting_times(session, area, period)
        pairs = {key: _figures_of(g) for key, g in raw_pairs.items()}
        quarters = {key: _figures_of(g) for key, g in raw_quarters.items()}
    titles = Titles(policy, area)
    document = {
        "area": {"id": area.id, "name": area.name, "towns": towns, "town_titles": dict(area.town_titles)},
        "period": None if period is None else {"key": period.label, "title": period.title,
                                               "start": period.start.isoformat(), "end": period.end.isoformat()},
        "generated_at": now.isoformat(),
        "k": k,
        "suppressed": disclosure.SUPPRESSED,
        "tables": [t.as_dict() for t in tables],
        "handover_waiting_times": [_waiting_row({"sender_kind": s, "receiver_kind": r}, g, k)
                                   for (s, r), g in sorted(pairs.items())],
        # The trend counts the persons of all pairs together, a total over categories one person
        # can share: its count would pin a suppressed pair, so only the percentiles are shown.
        "handover_waiting_trend": [_waiting_row({"quarter": q}, g, k, with_count=False)
                                   for q, g in sorted(quarters.items())],
        "goals": [_goal_summary(goals, goal, table) for goal, table in zip(measurable(goals), goal_tables)],
        # Demand beside supply: waiting persons as published in the offer_demand table (None where
        # suppressed), supply of the offers as of generated_at.
        "offer_supply_demand": supply_rows,
        "taxonomy": {"barrier_categories": policy.barrier_categories,
                     "fields_of_action": policy.fields_of_action},
    }
    titles.annotate(document)
    return document


class Titles:
    """German titles for every key the report shows: organisation kinds, towns (and merged
    towns), steps, barriers, fields of action, quarters, outcomes, dimensions."""

    def __init__(self, policy: SteeringPolicy, area: Area):
        self.area = area
        self.by_dimension: dict[str, Mapping[str, str]] = {
            "barrier_category": policy.barrier_categories, "field_of_action": policy.fields_of_action,
            "organisation_kind": policy.kind_titles, "sender_kind": policy.kind_titles,
            "receiver_kind": policy.kind_titles, "step_key": policy.step_titles, "outcome": OUTCOME_TITLES,
            "offer_kind": policy.offer_kind_titles,
        }

    def town(self, key: str) -> str:
        if key == TOTAL:
            return self.area.name
        return " mit ".join(self.area.town_titles.get(t, t) for t in key.split("+"))

    def title(self, dimension: str, key: str) -> str:
        if dimension == "town":
            return self.town(key)
        if dimension == "quarter":
            return quarter_title(key)
        if key == TOTAL:
            return "insgesamt"
        return self.by_dimension.get(dimension, {}).get(key, key)

    def annotate(self, document: dict[str, Any]) -> None:
        for table in document["tables"]:
            for cell in table["cells"]:
                for d in table["dimensions"]:
                    cell[f"{d}_title"] = self.title(d, cell[d])
            for entry in (*table["dropped_breakdowns"], *table["merged_breakdowns"]):
                for d in list(entry):
                    if d in DIMENSION_TITLES:
                        entry[f"{d}_title"] = self.title(d, entry[d])
        for row in document["handover_waiting_times"]:
            for d in ("sender_kind", "receiver_kind"):
                row[f"{d}_title"] = self.title(d, row[d])
        for row in document["handover_waiting_trend"]:
            row["quarter_title"] = quarter_title(row["quarter"])
        for row in document.get("offer_supply_demand", ()):
            row["offer_kind_title"] = self.title("offer_kind", row["offer_kind"])
            row["town_title"] = self.town(row["town"])


def _waiting_row(labels: dict[str, str], figures: WaitingFigures, k: int,
                 with_count: bool = True) -> dict[str, Any]:
    """Percentiles only from at least k persons; the count itself like any other cell."""
    persons = figures.persons
    enough = persons >= k
    row: dict[str, Any] = dict(labels)
    if with_count:
        row["persons"] = persons if persons == 0 or enough else None
    for name, median, p90 in (("working_days", figures.working_median, figures.working_p90),
                              ("calendar_days", figures.calendar_median, figures.calendar_p90)):
        row[f"{name}_median"] = float(median) if enough and median is not None else None
        row[f"{name}_p90"] = float(p90) if enough and p90 is not None else None
    return row


def _goal_table(session: Session, goal: Goal, area: Area, towns: list[str], protection: Protection,
                now: datetime, period: Period | None = None) -> Table:
    """Attained and missed persons per quarter and town, with all sums (a person counts once per
    goal, so the table is additive in every direction). With a period, only clocks started in
    it. A town breakdown that cannot be protected is tried with merged towns, then dropped."""
    assert goal.measure is not None
    if _on_postgresql(session):
        cells = attainment_in_sql(session, goal, area.towns, now)
    else:
        cells = attainment((c for c in goal_clocks(session, goal) if c.jurisdiction_id in area.towns),
                           goal.measure.within_days, now)
    if period is not None:
        cells = {key: cell for key, cell in cells.items() if key[0] == period.label}
    quarters = sorted({q for q, _ in cells})
    table = Table(f"goal:{goal.key}", goal.title, ["quarter", "town", "outcome"], ["quarter", "town", "outcome"])
    if not quarters:
        return table
    counts: dict[tuple, int] = {}
    for (quarter, town_id), cell in cells.items():
        for outcome in OUTCOMES:
            n = getattr(cell, outcome)
            if n:
                counts[(quarter, area.towns[town_id], outcome)] = n

    def cell_id(key: tuple) -> tuple:
        return (table.key, tuple(TOTAL if part == disclosure.TOTAL else part for part in key[1:]))

    def by_town(units: Mapping[str, list[str]]):
        unit_of = {t: u for u, ts in units.items() for t in ts}
        unit_counts: dict[tuple, int] = defaultdict(int)
        for (quarter, town, outcome), n in counts.items():
            unit_counts[(quarter, unit_of[town], outcome)] += n
        grid = disclosure.Grid()
        grid.add_table(table.key, [quarters, list(units), list(OUTCOMES)], dict(unit_counts))
        return protection.protect(grid, cell_id)

    protected = by_town({t: [t] for t in towns})
    if protected.unprotectable:
        units = protection.merged(towns)
        if units is not None:
            protected = by_town(units)
            if not protected.unprotectable:
                table.merged.append({"breakdown": "town"})
    if protected.unprotectable:
        # Fall back to the Kreis level: quarter x outcome without towns.
        table.dropped.append({"breakdown": "town"})
        table.dimensions = ["quarter", "outcome"]
        table.totals = ["quarter", "outcome"]
        kreis: dict[tuple, int] = defaultdict(int)
        for (quarter, _town, outcome), n in counts.items():
            kreis[(quarter, outcome)] += n
        grid = disclosure.Grid()
        grid.add_table(table.key, [quarters, list(OUTCOMES)], dict(kreis))
        protected = protection.protect(grid, cell_id)
        if protected.unprotectable:
            table.dropped.append({"breakdown": "quarter"})
            return table
    for key, value in protected.published.items():
        labels = [TOTAL if part == disclosure.TOTAL else part for part in key[1:]]
        table.cells.append({**dict(zip(table.dimensions, labels)), "value": value})
    return table


def _goal_summary(goals: Mapping[str, Goal], goal: Goal, table: Table) -> dict[str, Any]:
    assert goal.measure is not None
    total = {c["outcome"]: c["value"] for c in table.cells
             if all(c[d] == TOTAL for d in table.dimensions if d != "outcome")}
    attained, missed = total.get("attained"), total.get("missed")
    share = None
    if attained is not None and missed is not None and attained + missed > 0:
        share = attained / (attained + missed)
    chain = []
    parent = goal.parent
    while parent is not None:
        chain.append({"key": parent, "tier": goals[parent].tier.value, "title": goals[parent].title})
        parent = goals[parent].parent
    return {"key": goal.key, "title": goal.title, "tier": goal.tier.value, "parents": chain,
            "within_days": goal.measure.within_days, "target_share": goal.measure.target_share,
            "attained": attained, "missed": missed, "share": share,
            "target_met": None if share is None else share >= goal.measure.target_share}


def cells_of(report: Mapping[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for table in report["tables"]:
        for cell in table["cells"]:
            yield table["key"], cell
