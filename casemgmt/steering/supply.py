"""The Bestands- und Bedarfsanalyse of the steering report: persons waiting at a chain step that
an offer kind serves (ready, not yet enrolled) per offer kind and town, against the free places
and next start dates of the offers of that kind open to the town.

Demand is a count of distinct persons and is published as a table of the report, protected like
every other (k and complementary suppression, merged or dropped town breakdowns); the median
waiting days are shown only beside a published count of at least k persons. Supply (offers,
free places, next start) is what the public directory shows anyway, so it is not suppressed;
free places are summed per unit and say nothing about persons.

Live (no period): persons whose step is ready now, waiting since it became ready. For a release
of a quarter: persons whose step became ready in the quarter and who were still waiting (not
started, not ended, not enrolled) at its end, waiting until then. Supply is as of the moment the
report is built.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Collection, Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from casemgmt.chains.engine import ChainLifecycle
from casemgmt.chains.models import Chain, ChainEvent, ChainStep
from casemgmt.jurisdictions.models import Jurisdiction
from casemgmt.offers.models import Offer, OfferBooking
from casemgmt.persons.models import Person

TOTAL = "_total"
ENROLLED_EVENT = "offer_enrolled"


def _days(later: datetime, earlier: datetime | None) -> float | None:
    if earlier is None:
        return None
    return max(0.0, (later - earlier).total_seconds() / 86400)


def waiting(session: Session, town_ids: Mapping[int, str], steps_of_kind: Mapping[str, Collection[str]],
            now: datetime, period=None) -> tuple[dict[str, dict[str, int]], dict[tuple[str, str], dict]]:
    """(persons per kind and town, {(kind, town): {person: longest waiting days}})."""
    keys = sorted({s for steps in steps_of_kind.values() for s in steps})
    if not keys or not town_ids:
        return {}, {}
    if period is None:
        ready = (select(ChainEvent.chain_id, ChainEvent.step_key, func.max(ChainEvent.occurred_at).label("at"))
                 .where(ChainEvent.kind == "step", ChainEvent.to_state == "ready", ChainEvent.step_key.in_(keys))
                 .group_by(ChainEvent.chain_id, ChainEvent.step_key).subquery())
        enrolled = exists().where(OfferBooking.chain_id == ChainStep.chain_id, OfferBooking.step_key == ChainStep.key,
                                  OfferBooking.state == "enrolled")
        rows = session.execute(
            select(ChainStep.key, Chain.person_id, Person.lead_jurisdiction_id,
                   func.coalesce(ready.c.at, ChainStep.updated_at))
            .join(Chain, Chain.id == ChainStep.chain_id)
            .join(Person, Person.id == Chain.person_id)
            .outerjoin(ready, and_(ready.c.chain_id == ChainStep.chain_id, ready.c.step_key == ChainStep.key))
            .where(ChainStep.state == "ready", ChainStep.key.in_(keys), Chain.lifecycle == ChainLifecycle.open.value,
                   Person.lead_jurisdiction_id.in_(list(town_ids)), ~enrolled)).all()
        until = now
    else:
        later = aliased(ChainEvent)
        moved_on = exists().where(
            later.chain_id == ChainEvent.chain_id, later.step_key == ChainEvent.step_key,
            later.occurred_at > ChainEvent.occurred_at, later.occurred_at < period.end,
            or_(later.kind == ENROLLED_EVENT, and_(later.kind == "step", later.to_state != "ready")))
        rows = session.execute(
            select(ChainEvent.step_key, Chain.person_id, Person.lead_jurisdiction_id, ChainEvent.occurred_at)
            .join(Chain, Chain.id == ChainEvent.chain_id)
            .join(Person, Person.id == Chain.person_id)
            .where(ChainEvent.kind == "step", ChainEvent.to_state == "ready", ChainEvent.step_key.in_(keys),
                   period.contains(ChainEvent.occurred_at), Person.lead_jurisdiction_id.in_(list(town_ids)),
                   ~moved_on)).all()
        until = period.end
    kinds_of_step: dict[str, list[str]] = defaultdict(list)
    for kind, steps in steps_of_kind.items():
        for step in steps:
            kinds_of_step[step].append(kind)
    waits: dict[tuple[str, str], dict] = defaultdict(dict)
    for step, person, town, since in rows:
        days = _days(until, since) or 0.0
        for kind in kinds_of_step[step]:
            cell = waits[(kind, town_ids[town])]
            cell[person] = max(days, cell.get(person, 0.0))
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for (kind, town), persons in waits.items():
        counts[kind][town] = len(persons)
    return counts, waits


def supply(session: Session, town_ids: Mapping[int, str], kinds: Collection[str], day: date
           ) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (kind, town key): the offers of that kind valid on ``day`` open to the town."""
    paths = dict(session.execute(select(Jurisdiction.id, Jurisdiction.path).where(
        Jurisdiction.id.in_(list(town_ids)))).all())
    above = {town_ids[t]: {int(p) for p in path.strip("/").split("/") if p} for t, path in paths.items()}
    offers = session.scalars(select(Offer).where(
        Offer.kind.in_(list(kinds)), Offer.valid_from <= day,
        or_(Offer.valid_until.is_(None), Offer.valid_until >= day))).all()
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for offer in offers:
        for town, ids in above.items():
            if ids.intersection(offer.towns):
                out.setdefault((offer.kind, town), {"offers": []})["offers"].append(offer)
    return out


def summarise(offers: list[Offer], day: date) -> dict[str, Any]:
    """Offers, free places (None when one has no limit), unlimited offers, next start with a place."""
    unique = {o.id: o for o in offers}.values()
    limited = [o.free_places for o in unique if o.free_places is not None]
    unlimited = sum(1 for o in unique if o.free_places is None)
    starts = [o.starts_on for o in unique if o.starts_on is not None and o.starts_on >= day
              and (o.free_places is None or o.free_places > 0)]
    return {"offers": len(unique), "free_places": sum(limited), "unlimited_offers": unlimited,
            "next_start": min(starts).isoformat() if starts else None}


def rows(table_cells: list[dict[str, Any]], waits: Mapping[tuple[str, str], dict], offers: Mapping[tuple[str, str], dict],
         towns: list[str], k: int, day: date) -> list[dict[str, Any]]:
    """One row per published cell of the demand table: the cell's (protected) value, the median
    waiting days when the cell shows at least k persons, and the supply of its towns."""
    out = []
    for cell in table_cells:
        kind, unit = cell["offer_kind"], cell["town"]
        members = towns if unit == TOTAL else unit.split("+")
        persons: dict = {}
        found: list[Offer] = []
        for town in members:
            for person, days in waits.get((kind, town), {}).items():
                persons[person] = max(days, persons.get(person, 0.0))
            found += offers.get((kind, town), {}).get("offers", [])
        value = cell["value"]
        median = round(statistics.median(persons.values()), 1) if value is not None and value >= k and persons else None
        have = summarise(found, day)
        exceeds = None
        if value is not None and have["unlimited_offers"] == 0:
            exceeds = value > have["free_places"]
        out.append({"offer_kind": kind, "town": unit, "waiting_persons": value, "waiting_days_median": median,
                    **have, "demand_exceeds_supply": exceeds})
    return out
