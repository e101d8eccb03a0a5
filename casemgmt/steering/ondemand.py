"""On-demand figures for one town (or a whole area) between releases, perturbed by the Cell Key
Method (:mod:`casemgmt.steering.cellkey`). Nothing here is suppressed or left out: every count
is published with its noise, and the document says so."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from casemgmt.chains.engine import ChainLifecycle
from casemgmt.chains.models import Chain, ChainStep
from casemgmt.chains.service import overdue_step_clause
from casemgmt.conferences.models import Conference, ConferenceCase, Finding, FindingCase, FindingOrganisationKind
from casemgmt.conferences.policy import SteeringPolicy
from casemgmt.jurisdictions.models import Jurisdiction, JurisdictionLevel
from casemgmt.persons.models import Person
from casemgmt.problems import NotFound, ValidationFailed
from casemgmt.steering import cellkey
from casemgmt.steering.goals import Goal, classify, goal_clocks, measurable, quarter_of
from casemgmt.steering.report import (
    DIMENSION_TITLES,
    OUTCOME_TITLES,
    Period,
    _fell_overdue_in,
    quarter_title,
)

NOTE = ("Alle Zahlen sind nach dem Cell-Key-Verfahren zufällig leicht verändert (überlagert): dieselbe Zelle "
        "erhält bei jeder Abfrage und in jeder Tabelle dieselbe Veränderung. Kleine Zahlen erscheinen als 0 "
        "oder als mindestens k; Summen sind eigene Zellen und ergeben sich nicht aus den Teilen.")


def _scope(session: Session, jurisdiction_id: int) -> tuple[Jurisdiction, list[int]]:
    """The jurisdiction asked about and the towns whose persons count: a town itself, the towns
    of a Kreis, or a kreisfreie Stadt."""
    here = session.get(Jurisdiction, jurisdiction_id)
    if here is None:
        raise NotFound(f"no jurisdiction {jurisdiction_id}", resource="jurisdiction", id=str(jurisdiction_id))
    if here.level == JurisdictionLevel.kreis.value:
        towns = list(session.execute(select(Jurisdiction.id).where(Jurisdiction.parent_id == here.id)).scalars())
    elif here.level in (JurisdictionLevel.kreisfreie_stadt.value, JurisdictionLevel.gemeinde.value):
        towns = [here.id]
    else:
        raise ValidationFailed(
            f"jurisdiction_id: {here.name} is a {here.level}; ask about a town, a Kreis or a kreisfreie Stadt",
            errors=[{"field": "query.jurisdiction_id", "message": "a town, a Kreis or a kreisfreie Stadt",
                     "type": "value_error"}])
    return here, towns


def _cells(rows: Iterable[tuple[tuple, Any, float]]) -> dict[tuple, dict[Any, float]]:
    """{labels: {person: record key}} from (labels, person, record key) rows."""
    out: dict[tuple, dict[Any, float]] = defaultdict(dict)
    for labels, person, key in rows:
        out[labels][person] = key
    return out


def _table(key: str, title: str, dimensions: list[str], cells: Mapping[tuple, Mapping[Any, float]],
           titles: Mapping[str, Mapping[str, str]], ptable) -> dict[str, Any]:
    published = []
    for labels, persons in sorted(cells.items()):
        entry: dict[str, Any] = {}
        for d, label in zip(dimensions, labels):
            entry[d] = label
            entry[f"{d}_title"] = quarter_title(label) if d == "quarter" else titles.get(d, {}).get(label, label)
        entry["value"] = cellkey.perturbed(len(persons), persons.values(), ptable)
        entry["perturbed"] = True
        published.append(entry)
    return {"key": key, "title": title, "unit": "persons", "dimensions": dimensions,
            "dimension_titles": {d: DIMENSION_TITLES.get(d, d) for d in dimensions}, "cells": published}


def on_demand_figures(session: Session, policy: SteeringPolicy, goals: Mapping[str, Goal], jurisdiction_id: int,
                      now: datetime, quarter: str | None = None) -> dict[str, Any]:
    """Persons per barrier, overdue step, Fallkonferenz quarter and goal outcome for one
    jurisdiction (a quarter, or everything so far), every count perturbed."""
    here, towns = _scope(session, jurisdiction_id)
    period = Period.of(quarter) if quarter else None
    in_scope = Person.lead_jurisdiction_id.in_(towns)
    titles = {"barrier_category": policy.barrier_categories, "field_of_action": policy.fields_of_action,
              "organisation_kind": policy.kind_titles, "step_key": policy.step_titles, "outcome": OUTCOME_TITLES}

    stmt = (select(Finding.barrier_category, Finding.field_of_action, FindingOrganisationKind.organisation_kind,
                   Person.id, Person.record_key)
            .join(FindingOrganisationKind, FindingOrganisationKind.finding_id == Finding.id)
            .join(FindingCase, FindingCase.finding_id == Finding.id)
            .join(ConferenceCase, ConferenceCase.id == FindingCase.conference_case_id)
            .join(Person, Person.id == ConferenceCase.person_id).where(in_scope))
    if period is not None:
        stmt = stmt.join(Conference, Conference.id == ConferenceCase.conference_id).where(
            period.contains(Conference.scheduled_at))
    barriers = _cells(((b, f, k), p, key) for b, f, k, p, key in session.execute(stmt))

    overdue_clause = (and_(Chain.lifecycle == ChainLifecycle.open.value, overdue_step_clause(now))
                      if period is None else _fell_overdue_in(period))
    overdue = _cells(((step,), p, key) for step, p, key in session.execute(
        select(ChainStep.key, Person.id, Person.record_key).join(Chain, Chain.id == ChainStep.chain_id)
        .join(Person, Person.id == Chain.person_id).where(overdue_clause, in_scope)))

    conf = select(Conference.scheduled_at, Person.id, Person.record_key).join(
        ConferenceCase, ConferenceCase.conference_id == Conference.id).join(
        Person, Person.id == ConferenceCase.person_id).where(in_scope)
    if period is not None:
        conf = conf.where(period.contains(Conference.scheduled_at))
    discussed = _cells(((quarter_of(at),), p, key) for at, p, key in session.execute(conf))

    tables = [
        _table("barriers", "Personen je Barriere, Handlungsfeld und Organisationsart",
               ["barrier_category", "field_of_action", "organisation_kind"], barriers, titles, policy.ptable),
        _table("overdue_steps", "Personen mit überfälligem Schritt, je Schritt" if period is None
               else "Personen, deren Schritt im Quartal überfällig wurde, je Schritt",
               ["step_key"], overdue, titles, policy.ptable),
        _table("conference_persons", "In Fallkonferenzen besprochene Personen, je Quartal", ["quarter"],
               discussed, titles, policy.ptable),
    ]
    keys = dict(session.execute(select(Person.id, Person.record_key).where(in_scope)).all())
    for goal in measurable(goals):
        assert goal.measure is not None
        first: dict[Any, Any] = {}
        for clock in goal_clocks(session, goal):
            if clock.person_id not in keys:
                continue
            known = first.get(clock.person_id)
            if known is None or (clock.started_at, clock.chain_id) < (known.started_at, known.chain_id):
                first[clock.person_id] = clock
        cells: dict[tuple, dict[Any, float]] = defaultdict(dict)
        for person, clock in first.items():
            q = quarter_of(clock.started_at)
            if period is not None and q != period.label:
                continue
            outcome = classify(clock, goal.measure.within_days, now)
            if outcome != "pending":
                cells[(q, outcome)][person] = keys[person]
        tables.append(_table(f"goal:{goal.key}", goal.title, ["quarter", "outcome"], cells, titles, policy.ptable))
    return {
        "jurisdiction": {"id": here.id, "key": here.key, "title": here.name},
        "period": None if period is None else {"key": period.label, "title": period.title},
        "generated_at": now.isoformat(),
        "k": policy.k,
        "method": {"key": "cell_key", "title": "Cell-Key-Verfahren", "note": NOTE},
        "tables": tables,
    }
