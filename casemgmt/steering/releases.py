"""Releases: what the Lenkungsgruppe reads, as statistical offices publish (DOMAIN.md section 9).

A report computed afresh at every request gives away in two requests what each hides: its
suppression pattern is chosen anew each time, so a cell hidden in one answer and its complement
in the next are both seen, and one newly added person shows up as +1. The steering group
therefore reads numbered, immutable **releases**:

* A release covers **one closed quarter** of one area (a Kreis or a kreisfreie Stadt). A quarter
  is due once ``releases.waiting_days`` (policy) have passed after its end, so that every goal
  clock started in it has run out and its figures cannot change any more.
* Its tables hold only what happened in that quarter (Fallkonferenzen held, steps fallen overdue,
  goal clocks started, handovers acknowledged in it; see :func:`report.build_report` with a
  period): no table of a release sums over the quarters of another, so comparing releases gives
  the attacker no equation between them.
* Its process-mining log holds the chains that **ended** in the quarter (completed or closed),
  each with its whole history, generalised by :mod:`casemgmt.steering.eventlog`. A chain ends
  once, so it is in exactly one release: exports of different releases share no chain and cannot
  be joined by content; ids are pseudonyms drawn for the release.
* The published document, the suppression pattern, the true value of every published cell and
  the anonymised log are stored in ``steering_releases``; the row is never changed (a trigger
  refuses UPDATE and DELETE on PostgreSQL) and the endpoints serve it as stored.
* A period is released once. A **re-release** (``--again``, e.g. after late entries) is chosen
  together with the earlier one: every cell the earlier release suppressed stays suppressed
  (``disclosure.protect(forced=...)``) and the disclosure check runs over the union of both
  releases' equations, cells whose true value did not change being the same unknown in both;
  cells are suppressed until the attacker pins none.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint, and_, func, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from casemgmt.chains.models import Chain, ChainEvent, ChainStep
from casemgmt.conferences.policy import SteeringPolicy
from casemgmt.database import Base, UTCDateTime
from casemgmt.jurisdictions.models import Jurisdiction, JurisdictionLevel
from casemgmt.problems import NotFound, PeriodNotClosed, ReleaseExists, ValidationFailed
from casemgmt.steering import disclosure, eventlog
from casemgmt.steering.goals import Goal, quarter_of
from casemgmt.steering.report import (
    TOTAL,
    Area,
    Period,
    Protection,
    build_report,
    quarter_title,
    resolve_area,
)

class SteeringRelease(Base):
    """One numbered, immutable release of the steering report for one area and quarter. On
    PostgreSQL a trigger refuses UPDATE and DELETE."""

    __tablename__ = "steering_releases"
    __table_args__ = (
        UniqueConstraint("area_jurisdiction_id", "period", "edition", name="uq_steering_releases_area_period_edition"),
        Index("ix_steering_releases_area_number", "area_jurisdiction_id", "number"),
    )

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    area_jurisdiction_id: Mapped[int] = mapped_column(ForeignKey("jurisdictions.id"))
    period: Mapped[str] = mapped_column(String(7))  # "2026-Q2"
    edition: Mapped[int] = mapped_column(Integer)  # 1, or higher for a re-release of the period
    revises: Mapped[int | None] = mapped_column(Integer)  # the number of the edition it replaces
    released_at: Mapped[datetime] = mapped_column(UTCDateTime)
    k: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]] = mapped_column(JSON)  # what is served
    # Never served: which cells are suppressed and why, and every cell's true value, kept so
    # that a re-release can be protected together with this one.
    pattern: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The anonymised log (eventlog.PublishedLog.as_dict): read only by the exports, and there in
    # two steps (log_head, stored_log), so loading a release for its report never reads it.
    event_log: Mapped[dict[str, Any]] = mapped_column(JSON, deferred=True)


# --- quarters --------------------------------------------------------------------------------------


def next_quarter(label: str) -> str:
    year, q = int(label[:4]), int(label[-1])
    return f"{year + (q == 4)}-Q{1 if q == 4 else q + 1}"


def due_quarters(first: str, now: datetime, waiting_days: int) -> list[str]:
    """Quarters from ``first`` on whose end lies at least ``waiting_days`` before ``now``."""
    out = []
    label = first
    while Period.of(label).end + timedelta(days=waiting_days) <= now:
        out.append(label)
        label = next_quarter(label)
    return out


def normalise_quarter(text: str) -> str:
    """'2026Q3', '2026-Q3' or '2026-q3' -> '2026-Q3'."""
    t = text.strip().upper().replace("-", "")
    if len(t) != 6 or not t[:4].isdigit() or t[4] != "Q" or t[5] not in "1234":
        raise ValidationFailed(f"quarter: {text!r} is not a quarter like 2026Q3",
                               errors=[{"field": "quarter", "message": "a quarter like 2026Q3", "type": "value_error"}])
    return f"{t[:4]}-Q{t[5]}"


# --- the chains' histories -------------------------------------------------------------------------


@dataclass(frozen=True)
class Histories:
    histories: list[eventlog.ChainHistory]
    paths: list[list[tuple[str, int]]]  # (activity, day since start) in time order, for the DFG


def activity_names(policy: SteeringPolicy) -> tuple[dict[tuple[str, str], str], dict[str, int]]:
    """(step key, action) -> activity name, and each activity's rank in the fixed order (the
    steps in template order; a step's start before its completion)."""
    names: dict[tuple[str, str], str] = {}
    for step, title in policy.step_titles.items():
        named = policy.activities.get(step, {})
        names[(step, "complete")] = named.get("completed") or f"{title} erledigt"
        if "started" in named:
            names[(step, "start")] = named["started"]
    rank: dict[str, int] = {eventlog.CHAIN_BEGUN: 0}
    for i, step in enumerate(policy.step_order):
        for action in ("start", "complete"):
            if (step, action) in names:
                rank.setdefault(names[(step, action)], 1 + 2 * i + (action == "complete"))
    end = len(rank) * 2 + 2
    for name in eventlog.CHAIN_ENDED.values():
        rank[name] = end
    return names, rank


def chain_histories(session: Session, policy: SteeringPolicy, area: Area, period: Period) -> Histories:
    """The chains of the area's towns that ended (completed or closed) in the period, with
    their milestones. Two set-based queries."""
    ended = func.coalesce(Chain.completed_at, Chain.closed_at)
    chains = {r.id: r for r in session.execute(
        select(Chain.id, Chain.template_key, Chain.started_at)
        .where(Chain.lead_jurisdiction_id.in_(area.towns), period.contains(ended)))}
    if not chains:
        return Histories([], [])
    names, rank = activity_names(policy)
    owner = {(r.chain_id, r.key): r.owner_kind for r in session.execute(
        select(ChainStep.chain_id, ChainStep.key, ChainStep.owner_kind).where(ChainStep.chain_id.in_(chains)))}
    events: dict[Any, list] = defaultdict(list)
    for r in session.execute(
        select(ChainEvent.chain_id, ChainEvent.kind, ChainEvent.step_key, ChainEvent.action, ChainEvent.occurred_at,
               ChainEvent.id)
        .where(ChainEvent.chain_id.in_(chains),
               or_(and_(ChainEvent.kind == "step", ChainEvent.action.in_(("start", "complete"))),
                   ChainEvent.kind.in_(tuple(eventlog.CHAIN_ENDED))))
        .order_by(ChainEvent.chain_id, ChainEvent.occurred_at, ChainEvent.id)
    ):
        events[r.chain_id].append(r)
    histories, paths = [], []
    for chain_id, chain in chains.items():
        start_day = eventlog.day_of(chain.started_at)
        milestones = [eventlog.Milestone(eventlog.CHAIN_BEGUN, eventlog.CASE_MANAGEMENT_TITLE, 0, 0)]
        path = [(eventlog.CHAIN_BEGUN, 0)]
        for e in events.get(chain_id, ()):
            if e.kind == "step":
                name = names.get((e.step_key, e.action))
                if name is None:
                    continue
                kind = policy.kind_titles.get(owner.get((chain_id, e.step_key), ""), eventlog.CASE_MANAGEMENT_TITLE)
            else:
                name, kind = eventlog.CHAIN_ENDED[e.kind], eventlog.CASE_MANAGEMENT_TITLE
            day = (eventlog.day_of(e.occurred_at) - start_day).days
            milestones.append(eventlog.Milestone(name, kind, day, rank.get(name, 0)))
            path.append((name, day))
        histories.append(eventlog.ChainHistory(policy.template_titles.get(chain.template_key, chain.template_key),
                                               tuple(milestones)))
        paths.append(path)
    return Histories(histories, paths)


def process_section(histories: Histories, log: eventlog.PublishedLog, k: int, activity_rank: Mapping[str, int]
                    ) -> dict[str, Any]:
    edges = eventlog.directly_follows(histories.paths, k)
    activities = sorted({a for p in histories.paths for a, _ in p}, key=lambda a: (activity_rank.get(a, 0), a))
    return {"chains": len(histories.histories), "activities": activities,
            "follows": [{"source": e.source, "target": e.target, "chains": e.chains, "median_days": e.median_days}
                        for e in edges],
            "log": log.stats.as_dict()}


# --- protection across releases --------------------------------------------------------------------


def relations_of(document: Mapping[str, Any], prefix: Any = None
                 ) -> tuple[dict[tuple, int | None], list[disclosure.Relation]]:
    """Cells and additive relations as an outsider reads them off a published document: for
    every dimension named in a table's ``totals`` and every combination of the other labels,
    the ``_total`` cell is the sum of the cells with the other members of that dimension.
    Cell ids are ``(prefix, table key, labels)`` (or without prefix when None)."""
    published: dict[tuple, int | None] = {}
    relations: list[disclosure.Relation] = []

    def cid(table_key: str, labels: tuple) -> tuple:
        return (table_key, labels) if prefix is None else (prefix, table_key, labels)

    for table in document["tables"]:
        dims = table["dimensions"]
        cells = {tuple(c[d] for d in dims): c["value"] for c in table["cells"]}
        for labels, value in cells.items():
            published[cid(table["key"], labels)] = value
        for i, d in enumerate(dims):
            if d not in table["totals"]:
                continue
            lines: dict[tuple, list[tuple]] = defaultdict(list)
            for labels in cells:
                if labels[i] != TOTAL:
                    lines[labels[:i] + labels[i + 1:]].append(labels)
            for labels in cells:
                rest = labels[:i] + labels[i + 1:]
                if labels[i] == TOTAL and lines.get(rest):
                    relations.append(disclosure.Relation(
                        cid(table["key"], labels), tuple(cid(table["key"], p) for p in lines[rest]),
                        name=f"{prefix}: {table['key']}: {d} at {labels}"))
    return published, relations


def _cell_key(cell: tuple) -> str:
    table, labels = cell
    return "\x1f".join((table, *labels))


def _cell_of(text: str) -> tuple:
    table, *labels = text.split("\x1f")
    return (table, tuple(labels))


def union_disclosures(earlier: Mapping[str, Any], later: Mapping[str, Any]) -> dict[tuple, disclosure.Bounds]:
    """Cells an attacker holding both releases of a period pins exactly: both documents'
    published values and relations, and for every cell whose true value is the same in both,
    the equation that makes them one unknown. ``earlier`` and ``later`` are
    ``{"document", "truth"}`` with truth keyed by cell id."""
    pub_a, rel_a = relations_of(earlier["document"], "a")
    pub_b, rel_b = relations_of(later["document"], "b")
    published = {**pub_a, **pub_b}
    relations = [*rel_a, *rel_b]
    truth = {("a", *c): v for c, v in earlier["truth"].items()} | {("b", *c): v for c, v in later["truth"].items()}
    for cell, value in later["truth"].items():
        if earlier["truth"].get(cell) == value and ("a", *cell) in published and ("b", *cell) in published:
            relations.append(disclosure.Relation(("b", *cell), (("a", *cell),), name=f"unchanged {cell}"))
    primary = [c for c, v in published.items() if v is None and 0 < truth.get(c, 0) < earlier["k"]]
    witness = {c: truth[c] for c in published if c in truth}
    bounds = disclosure.attack(published, relations, earlier["k"], primary=primary, witness=witness)
    return {c: b for c, b in bounds.items() if b.exact}


# --- making releases -------------------------------------------------------------------------------


def _next_number(session: Session) -> int:
    return (session.execute(select(func.max(SteeringRelease.number))).scalar() or 0) + 1


def latest_edition(session: Session, area_id: int, period: str) -> SteeringRelease | None:
    return session.execute(
        select(SteeringRelease).where(SteeringRelease.area_jurisdiction_id == area_id,
                                      SteeringRelease.period == period)
        .order_by(SteeringRelease.edition.desc()).limit(1)).scalar_one_or_none()


def make_release(session: Session, policy: SteeringPolicy, goals: Mapping[str, Goal], area: Area, quarter: str,
                 now: datetime, *, again: bool = False, rng_token=secrets.token_hex) -> SteeringRelease:
    """Compute, protect and store the release of ``quarter`` for ``area`` (the caller commits).
    Refuses a quarter that is not yet due (409 ``period-not-closed``) and one already released
    unless ``again`` (409 ``release-exists``)."""
    period = Period.of(quarter)
    if period.end + timedelta(days=policy.release_waiting_days) > now:
        raise PeriodNotClosed(f"{quarter} can be released from "
                              f"{(period.end + timedelta(days=policy.release_waiting_days)).date().isoformat()} on")
    earlier = latest_edition(session, area.id, quarter)
    if earlier is not None and not again:
        raise ReleaseExists(f"{quarter} is already released for {area.name} (release {earlier.number})",
                            number=earlier.number)

    forced: set[tuple] = set()
    if earlier is not None:
        forced = {_cell_of(c) for c, why in earlier.pattern["suppressed"].items()}
    for _ in range(100):
        protection = Protection(policy.k, policy.merge_towns, forced)
        document = build_report(session, policy, goals, area, now, period=period, protection=protection)
        truth = dict(protection.truth)
        if earlier is None:
            break
        exposed = union_disclosures(
            {"document": earlier.document, "truth": {_cell_of(c): v for c, v in earlier.pattern["truth"].items()},
             "k": earlier.k},
            {"document": document, "truth": truth, "k": policy.k})
        # Suppress the later release's counterpart of every exposed cell, and try again.
        more = {(c[1], c[2]) for c in exposed if c[0] == "b"} | {(c[1], c[2]) for c in exposed if c[0] == "a"}
        more = {c for c in more if truth.get(c)} - forced
        if not exposed:
            break
        if not more:
            raise RuntimeError(f"re-release of {quarter}: cells exposed that no suppression can protect: {exposed}")
        forced |= more
    else:  # pragma: no cover - each round suppresses more, so this needs more rounds than cells
        raise RuntimeError("re-release protection did not settle")

    names, rank = activity_names(policy)
    histories = chain_histories(session, policy, area, period)
    log = eventlog.generalise(histories.histories, policy.min_variant_chains,
                              new_id=lambda: f"kette-{rng_token(8)}")
    number = _next_number(session)
    document["process"] = process_section(histories, log, policy.min_variant_chains, rank)
    document["release"] = {"number": number, "period": quarter, "edition": 1 if earlier is None else earlier.edition + 1,
                           "revises": None if earlier is None else earlier.number,
                           "released_at": now.astimezone(UTC).isoformat()}
    row = SteeringRelease(
        number=number, area_jurisdiction_id=area.id, period=quarter,
        edition=document["release"]["edition"], revises=document["release"]["revises"], released_at=now,
        k=policy.k, document=document,
        pattern={"suppressed": {_cell_key(c): why for c, why in protection.pattern.items()},
                 "truth": {_cell_key(c): v for c, v in truth.items()}},
        event_log=log.as_dict(),
    )
    session.add(row)
    session.flush()
    return row


def latest_release(session: Session, area_id: int) -> SteeringRelease | None:
    return session.execute(select(SteeringRelease).where(SteeringRelease.area_jurisdiction_id == area_id)
                           .order_by(SteeringRelease.number.desc()).limit(1)).scalar_one_or_none()


def get_release(session: Session, number: int) -> SteeringRelease:
    row = session.get(SteeringRelease, number)
    if row is None:
        raise NotFound(f"no release {number}", resource="release", id=str(number))
    return row


def log_head(session: Session, number: int) -> dict[str, Any]:
    """What the head of an export needs of a release's stored log (activities, kinds,
    statistics), without reading its chains."""
    log = SteeringRelease.event_log
    row = session.execute(select(log["activities"], log["kinds"], log["stats"])
                          .where(SteeringRelease.number == number)).one()
    return {"activities": row[0], "kinds": row[1], "stats": row[2]}


def stored_log(session: Session, number: int) -> dict[str, Any]:
    """A release's stored log, whole. A release never changes (on PostgreSQL a trigger refuses
    it), so this may be read in a later transaction than the release was found and audited in."""
    return session.execute(select(SteeringRelease.event_log).where(SteeringRelease.number == number)).scalar_one()


def list_releases(session: Session, area_id: int) -> list[dict[str, Any]]:
    rows = session.execute(select(SteeringRelease.number, SteeringRelease.period, SteeringRelease.edition,
                                  SteeringRelease.revises, SteeringRelease.released_at)
                           .where(SteeringRelease.area_jurisdiction_id == area_id)
                           .order_by(SteeringRelease.number.desc())).all()
    base = "/reports/steering/releases"
    return [{"number": r.number, "period": r.period, "period_title": quarter_title(r.period), "edition": r.edition,
             "revises": r.revises, "released_at": r.released_at,
             "links": {"json": f"{base}/{r.number}", "csv": f"{base}/{r.number}.csv",
                       "xlsx": f"{base}/{r.number}.xlsx", "html": f"{base}/{r.number}.html",
                       "ocel": f"/exports/releases/{r.number}/ocel", "xes": f"/exports/releases/{r.number}/xes"}}
            for r in rows]


def release_areas(session: Session) -> list[int]:
    """Every Kreis and kreisfreie Stadt."""
    return list(session.execute(
        select(Jurisdiction.id).where(Jurisdiction.level.in_((JurisdictionLevel.kreis.value,
                                                              JurisdictionLevel.kreisfreie_stadt.value)))
        .order_by(Jurisdiction.id)).scalars())


def release_due(session: Session, policy: SteeringPolicy, goals: Mapping[str, Goal], now: datetime,
                areas: Iterable[int] | None = None, quarters: Sequence[str] | None = None) -> list[SteeringRelease]:
    """Release every due quarter (from ``releases.first_quarter``) not yet released, for every
    area; idempotent. The caller commits."""
    made = []
    for area_id in (areas if areas is not None else release_areas(session)):
        area = resolve_area(session, area_id)
        done = set(session.execute(select(SteeringRelease.period)
                                   .where(SteeringRelease.area_jurisdiction_id == area_id)).scalars())
        for quarter in (quarters if quarters is not None
                        else due_quarters(policy.release_first_quarter, now, policy.release_waiting_days)):
            if quarter not in done:
                made.append(make_release(session, policy, goals, area, quarter, now))
    return made


__all__ = ["SteeringRelease", "due_quarters", "make_release", "release_due", "relations_of", "union_disclosures",
           "quarter_of"]


def run_releases(session: Session, policy: SteeringPolicy, goals: Mapping[str, Goal], now: datetime, *,
                 area_id: int | None = None, quarter: str | None = None, again: bool = False) -> list[SteeringRelease]:
    """One transaction: release the given quarter (or every due one) for the given area (or
    every Kreis and kreisfreie Stadt). A refusal (not due, already released) changes nothing."""
    from casemgmt.database import unit_of_work

    with unit_of_work(session):
        areas = [area_id] if area_id is not None else release_areas(session)
        if quarter is None:
            made = release_due(session, policy, goals, now, areas)
        else:
            label = normalise_quarter(quarter)
            made = [make_release(session, policy, goals, resolve_area(session, a), label, now, again=again)
                    for a in areas]
    return made
