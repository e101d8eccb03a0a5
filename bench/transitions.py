"""Step-transition benchmark: service layer (1 and 4 worker processes), HTTP, and worker memory.

Run from the repository root::

    .venv/bin/python bench/transitions.py [--chains N] [--seconds S]
        [--memory-sizes 1000,100000] [--skip-http] [--skip-memory] [--smoke]

Chains of ``refugee_recognised`` are seeded (through ``start_chain``, or in bulk with exactly the
rows it writes), then moved step by step as the service runs: each step is acted on by the
organisation it is assigned to (the case management for its own steps), as the service role.
See bench/README.md for what each figure means. A script, not a test: it prints figures and one
PASS/FAIL line; it never changes application code.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing as mp
import pstats
import random
import resource
import statistics
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# This file's name would shadow the `transitions` library that casemgmt.chains.engine imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from sqlalchemy import event, func, insert, select, text  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from bench import harness as h  # noqa: E402
from casemgmt.chains import engine as chain_engine  # noqa: E402
from casemgmt.chains import service as chain_service  # noqa: E402
from casemgmt.chains.catalog import TemplateCatalog  # noqa: E402
from casemgmt.chains.engine import Actor, ChainLifecycle, StepState  # noqa: E402
from casemgmt.chains.models import Chain, ChainEvent, ChainStep  # noqa: E402
from casemgmt.chains.service import start_chain, transition_step  # noqa: E402
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER, ChainTemplate  # noqa: E402
from casemgmt.database import Base  # noqa: E402
from casemgmt.demo.world import TOWNS  # noqa: E402
from casemgmt.jurisdictions.models import Jurisdiction  # noqa: E402
from casemgmt.persons.models import Person  # noqa: E402
from casemgmt.privacy.audit import AuditEntry, append  # noqa: E402
from casemgmt.privacy.service import Privacy  # noqa: E402

TEMPLATE_KEY = "refugee_recognised"
CASE_MANAGEMENT_ORG = "ennetal_ki"  # the Kreis' Kommunales Integrationszentrum runs case management
PERSON_ATTRIBUTES = {"residence_status": "protection_granted", "bleibeperspektive": "good",
                     "benefit_regime": "asylblg"}  # typical for refugee_recognised
TARGET_TPS = 1_000
TARGET_RAW_RATIO = 0.4  # service layer / raw psycopg with 4 workers, measured in the same run
TARGET_HTTP_RPS = 400  # step actions through `casemgmt serve --workers 2`
SERVICE_SEED_MAX = 5_000  # above this, --seed auto inserts chains in bulk instead of start_chain
BULK_BATCH = 5_000  # chains per COPY transaction
WARMUP_TRANSITIONS = 25  # per worker / client, before the clock starts
# Chains each worker (or client) interleaves; a finished chain is replaced from its backlog. Every
# run then sees the action mix of whole chain lifecycles (half starts, half completes, with their
# cascades) however many transitions it does, so runs of different speed stay comparable.
WINDOW = 16
SMOKE = {"chains": 40, "seconds": 1.0, "workers": [1], "http_clients": 2, "memory_sizes": [60, 120],
         "memory_transitions": 20, "sql_transitions": 20}

persons_t = Person.__table__
chains_t = Chain.__table__
steps_t = ChainStep.__table__
events_t = ChainEvent.__table__
jur_t = Jurisdiction.__table__


# --------------------------------------------------------------------------------------------
# Chains as the load generator sees them, and which action comes next


@dataclass
class ChainState:
    id: uuid.UUID
    cm_org_id: int
    steps: dict[str, tuple[str, int | None]]  # step key -> (state, assigned organisation)


def next_move(template: ChainTemplate, chain: ChainState) -> tuple[str, int | None, str] | None:
    """(step key, acting organisation, action): start the first ready step, else complete the
    first started one, in template order; the step's assigned organisation acts (the case
    management on its own steps). None when nothing is left to do."""
    for spec in template.steps:
        state, assigned = chain.steps.get(spec.key, (None, None))
        if state in (StepState.ready.value, StepState.in_progress.value):
            org = chain.cm_org_id if spec.owner == CASE_MANAGEMENT_OWNER else assigned
            return spec.key, org, "start" if state == StepState.ready.value else "complete"
    return None


def load_chain_states(conn: Any, ids: Sequence[uuid.UUID] | None = None) -> list[ChainState]:
    """Open chains of the template (all, or those of ``ids``) with their steps."""
    where = [chains_t.c.lifecycle == ChainLifecycle.open.value, chains_t.c.template_key == TEMPLATE_KEY]
    if ids is not None:
        where.append(chains_t.c.id.in_(list(ids)))
    chains = {r.id: ChainState(r.id, r.case_management_organisation_id, {}) for r in conn.execute(
        select(chains_t.c.id, chains_t.c.case_management_organisation_id).where(*where)
        .order_by(chains_t.c.started_at, chains_t.c.id))}
    for r in conn.execute(select(steps_t.c.chain_id, steps_t.c.key, steps_t.c.state,
                                 steps_t.c.assigned_organisation_id)
                          .join(chains_t, chains_t.c.id == steps_t.c.chain_id).where(*where)):
        chains[r.chain_id].steps[r.key] = (r.state, r.assigned_organisation_id)
    return list(chains.values())


def open_chain_ids(conn: Any) -> list[uuid.UUID]:
    return list(conn.scalars(
        select(chains_t.c.id).where(chains_t.c.lifecycle == ChainLifecycle.open.value,
                                    chains_t.c.template_key == TEMPLATE_KEY)
        .order_by(chains_t.c.started_at, chains_t.c.id)))


class Rotation:
    """Round-robin over a window of chains, refilled from a backlog as chains finish."""

    def __init__(self, chains: Sequence[ChainState], window: int = WINDOW):
        chains = list(chains)
        self.ring: deque[ChainState] = deque(chains[:window])
        self.backlog: deque[ChainState] = deque(chains[window:])

    def next(self) -> ChainState | None:
        if not self.ring and self.backlog:
            self.ring.append(self.backlog.popleft())
        return self.ring.popleft() if self.ring else None

    def keep(self, chain: ChainState) -> None:
        self.ring.append(chain)

    def drop(self) -> None:
        """The chain just taken is finished: its place goes to the next one waiting."""
        if self.backlog:
            self.ring.append(self.backlog.popleft())


class Runner:
    """Applies one valid action at a time, round-robin over its own chains, through
    ``service.transition_step`` as the endpoint calls it (with the privacy layer), a fresh
    session per transition (as a request gets), as the step's assigned organisation."""

    def __init__(self, factory: sessionmaker[Session], catalog: TemplateCatalog, privacy: Privacy,
                 actors: dict[int, Actor], chains: Sequence[ChainState]):
        self.factory = factory
        self.catalog = catalog
        self.privacy = privacy
        self.template = catalog.current[TEMPLATE_KEY]
        self.actors = actors
        self.rot = Rotation(chains)
        self.ok = 0
        self.unassigned = 0  # ready steps nobody was assigned to: the chain cannot go on
        self.moves: Counter[str] = Counter()

    def one(self) -> bool:
        """One transition on the next chain with something to do; False when none is left. An
        error is raised after the chain was read again."""
        while (chain := self.rot.next()) is not None:
            move = next_move(self.template, chain)
            if move is None or move[1] is None:
                self.unassigned += move is not None
                self.rot.drop()
                continue
            key, org_id, action = move
            try:
                with h.session_cm(self.factory) as session:
                    out = transition_step(session, self.catalog, self.actors[org_id], chain.id, key, action,
                                          None, None, datetime.now(UTC), privacy=self.privacy)
            except Exception:
                self._reload(chain)
                raise
            self.ok += 1
            self.moves[action] += 1
            chain.steps = {s.key: (s.state.value, s.assigned_organisation_id) for s in out.steps}
            if out.status.value in ("active", "stalled"):
                self.rot.keep(chain)
            else:
                self.rot.drop()
            return True
        return False

    def _reload(self, chain: ChainState) -> None:
        with self.factory() as session:
            fresh = load_chain_states(session.connection(), [chain.id])
            session.rollback()
        if fresh:
            self.rot.keep(fresh[0])
        else:
            self.rot.drop()


def runner_for(app: h.App, chains: Sequence[ChainState]) -> Runner:
    return Runner(app.factory, app.catalog, app.privacy, {o.id: h.actor_for(o) for o in app.orgs.values()},
                  chains)


class TransitionWorker(h.PoolWorker):
    """A worker of the service-layer runs: its own engine and catalogue (as the app at
    start-up) and a disjoint share of the open chains."""

    def __init__(self, cfg: dict[str, Any], share: list[str]):
        self.app = h.App.from_cfg(cfg)
        self.backend_pids = self.app.backend_pids
        with self.app.engine.connect() as conn:
            chains = load_chain_states(conn, [uuid.UUID(c) for c in share])
        self.runner = runner_for(self.app, chains)

    def warm_up(self) -> None:
        self.warm_up_errors: Counter[str] = Counter()
        for _ in range(WARMUP_TRANSITIONS):
            try:
                self.runner.one()
            except Exception as exc:  # reported with the figures
                self.warm_up_errors[type(exc).__name__] += 1
        self.runner.moves.clear()

    def one(self) -> bool:
        return self.runner.one()

    def extra(self) -> dict[str, Any]:
        return {"moves": dict(self.runner.moves), "machines": len(chain_engine.machines),
                "unassigned": self.runner.unassigned, "warm_up_errors": dict(self.warm_up_errors)}

    def close(self) -> None:
        self.app.dispose()


class RawWorker(h.PoolWorker):
    """The baseline: the same writes of a transition through plain psycopg, no SQLAlchemy, no
    decision point, no audit: lock the chain row, update the acted step (and, on a completion,
    the dependants that become ready), insert one event per change, raise the chain's version,
    commit. Five to six statements and no reads besides the lock; its chains are its own share
    of the open ones, moved with the same action mix as the service runs."""

    _LOCK = "SELECT version FROM chains WHERE id = %s FOR UPDATE"
    _STEP = ("UPDATE chain_steps SET state = %s, started_at = COALESCE(started_at, %s), "
             "completed_at = %s, assigned_organisation_id = COALESCE(assigned_organisation_id, %s), "
             "updated_at = %s WHERE chain_id = %s AND key = %s")
    _EVENT = ("INSERT INTO chain_events (chain_id, kind, step_key, action, from_state, to_state, actor_user, "
              "actor_organisation_id, organisation_id, occurred_at) VALUES (%s, 'step', %s, %s, %s, %s, %s, %s, %s, %s)")
    _BUMP = "UPDATE chains SET version = version + 1, updated_at = %s WHERE id = %s"

    def __init__(self, cfg: dict[str, Any], share: list[str]):
        import psycopg

        self.app = h.App.from_cfg(cfg)
        with self.app.engine.connect() as conn:
            chains = load_chain_states(conn, [uuid.UUID(c) for c in share])
            path = conn.scalar(select(jur_t.c.path).where(jur_t.c.key == TOWNS[0][0]))
        self.template = self.app.catalog.current[TEMPLATE_KEY]
        kinds = {s.owner for s in self.template.steps} - {CASE_MANAGEMENT_OWNER}
        self.nearest = self.app.nearest(kinds, path)
        self.app.dispose()
        url = cfg["url"].replace("postgresql+psycopg://", "postgresql://")
        self.conn = psycopg.connect(url, autocommit=False, prepare_threshold=0)
        self.backend_pids = {self.conn.info.backend_pid}
        self.rot = Rotation(chains)
        self.moves: Counter[str] = Counter()

    def one(self) -> bool:
        while (chain := self.rot.next()) is not None:
            move = next_move(self.template, chain)
            if move is None or move[1] is None:
                self.rot.drop()
                continue
            key, org_id, action = move
            now = datetime.now(UTC)
            to_state = StepState.in_progress.value if action == "start" else StepState.completed.value
            changes = [(key, action, chain.steps[key][0], to_state, org_id)]
            if action == "complete":
                done = {k for k, (st, _) in chain.steps.items()
                        if st in (StepState.completed.value, StepState.skipped.value)} | {key}
                for spec in self.template.steps:
                    if (chain.steps.get(spec.key, ("", None))[0] == StepState.planned.value
                            and set(spec.requires) <= done):
                        org = chain.cm_org_id if spec.owner == CASE_MANAGEMENT_OWNER else self.nearest.get(spec.owner)
                        changes.append((spec.key, "make_ready", StepState.planned.value, StepState.ready.value, org))
            with self.conn.cursor() as cur:
                cur.execute(self._LOCK, (chain.id,))
                cur.executemany(self._STEP, [
                    (to, now, now if to == StepState.completed.value else None, org, now, chain.id, k)
                    for k, _, _, to, org in changes])
                cur.executemany(self._EVENT, [
                    (chain.id, k, a, frm, to, "bench.raw", org_id, org, now) for k, a, frm, to, org in changes])
                cur.execute(self._BUMP, (now, chain.id))
            self.conn.commit()
            for k, _, _, to, org in changes:
                chain.steps[k] = (to, chain.steps.get(k, (None, None))[1] or org)
            self.moves[action] += 1
            if next_move(self.template, chain) is None:
                self.rot.drop()
            else:
                self.rot.keep(chain)
            return True
        return False

    def extra(self) -> dict[str, Any]:
        return {"moves": dict(self.moves)}

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------------------------
# Seeding: through start_chain, or in bulk with exactly the rows it writes


def _copy_field(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        value = json.dumps(value)
    s = str(value)
    if any(c in s for c in "\\\t\n\r"):
        s = s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return s


def _copy_line(values: Sequence[Any]) -> str:
    return "\t".join(_copy_field(v) for v in values) + "\n"


@dataclass
class Seeder:
    app: h.App
    cm_actor: Actor
    rng: random.Random = field(default_factory=lambda: random.Random(20260302))
    write_audit: bool = False  # set by check_bulk_matches_service when start_chain audits
    _paths: dict[int, str] = field(default_factory=dict)

    def _person_rows(self, n: int, now: datetime, town: int | None = None) -> list[dict[str, Any]]:
        """Persons registered by the case management, with the residence attributes it wrote
        (as create_person records who wrote each plain field)."""
        towns = self.app.towns()
        places = [town] * n if town is not None else self.rng.choices(
            [t for t, _ in towns], [p for _, p in towns], k=n)
        writers = {name: self.cm_actor.organisation_id for name in PERSON_ATTRIBUTES}
        return [{"id": uuid.uuid4(), **PERSON_ATTRIBUTES, "lead_jurisdiction_id": place,
                 "created_by_organisation_id": self.cm_actor.organisation_id, "created_at": now,
                 "plain_field_writers": writers} for place in places]

    def with_service(self, n: int) -> list[uuid.UUID]:
        """Persons with one Core executemany, then each chain through ``start_chain``."""
        now = datetime.now(UTC)
        persons = self._person_rows(n, now)
        with self.app.engine.begin() as conn:
            for i in range(0, n, BULK_BATCH):
                conn.execute(insert(persons_t), persons[i:i + BULK_BATCH])
        ids = []
        for p in persons:
            with h.session_cm(self.app.factory) as session:
                ids.append(start_chain(session, self.app.catalog, self.cm_actor, p["id"], TEMPLATE_KEY, now).id)
        return ids

    def _path(self, town: int) -> str:
        if town not in self._paths:
            with self.app.engine.connect() as conn:
                self._paths[town] = conn.scalar(select(jur_t.c.path).where(jur_t.c.id == town))
        return self._paths[town]

    def start_rows(self, town: int, at: datetime) -> tuple[dict[str, Any], list[dict], list[dict]]:
        """The chain, step and event rows ``start_chain`` writes for a chain of the template in
        ``town`` at ``at`` (ids left out), made with the service's own functions: the engine's
        new steps, the assignment of the ready ones, the event rows."""
        template = self.app.catalog.current[TEMPLATE_KEY]
        steps, changes = chain_engine.new_chain_steps(template, chain_engine.machines.for_template(template), at)
        row = {"id": None, "person_id": None, "template_key": template.key,
               "template_version": template.version, "lead_jurisdiction_id": town,
               "case_management_organisation_id": self.cm_actor.organisation_id,
               "lifecycle": ChainLifecycle.open.value, "closed_reason": None, "started_at": at,
               "completed_at": None, "closed_at": None, "updated_at": at, "version": 1}
        with self.app.factory() as session:
            chain_service.assign_ready_steps(session, chain_service.LoadedChain(
                chain_service.ChainRow(**row), self._path(town), template, steps, {}))
            session.rollback()
        step_rows = [{"chain_id": None, "key": s.key, "owner_kind": s.owner_kind, "optional": s.optional,
                      "state": s.state, "reason": s.reason, "started_at": None, "completed_at": None,
                      "due_at": s.due_at, "due_for": s.due_for,
                      "assigned_organisation_id": s.assigned_organisation_id, "updated_at": at}
                     for s in steps.values()]
        events = [chain_service.chain_event_row(None, chain_service.EVENT_CHAIN_STARTED, self.cm_actor, at,
                                                reason=f"{template.key} v{template.version}",
                                                to_state=ChainLifecycle.open.value,
                                                organisation_id=self.cm_actor.organisation_id)]
        events += chain_service.step_event_rows(None, changes, self.cm_actor, at, steps)
        return row, step_rows, events

    def _audit_rows(self, session: Session, chain_ids: Sequence[uuid.UUID], persons: Sequence[dict],
                    at: datetime) -> None:
        """The audit entry start_chain appends (one 'chain.start' per chain), through the audit
        trail's own append so that its hash chains stay intact."""
        template = self.app.catalog.current[TEMPLATE_KEY]
        actor = self.cm_actor
        append(session, self.app.keys.audit_key, [
            AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="C",
                       subtype="chain.start", entity_type="chain", entity_id=str(cid), person_id=p["id"],
                       detail=f"{template.key} v{template.version}")
            for cid, p in zip(chain_ids, persons, strict=True)], at)
        session.flush()

    def bulk(self, n: int, now: datetime | None = None, town: int | None = None,
             progress: bool = False) -> list[uuid.UUID]:
        """The rows ``start_chain`` writes (person, chain, steps, events, and the audit entry
        where it appends one), loaded with COPY as the service role in transactions of
        BULK_BATCH chains. Rows are rendered as COPY text by hand: going through ``write_row``
        costs more Python time than PostgreSQL spends storing them."""
        ids: list[uuid.UUID] = []
        t0 = time.perf_counter()
        for start in range(0, n, BULK_BATCH):
            k = min(BULK_BATCH, n - start)
            at = now or datetime.now(UTC)
            persons = self._person_rows(k, at, town)
            chain_ids = [uuid.uuid4() for _ in range(k)]
            by_town: dict[int, list[int]] = {}
            for i, p in enumerate(persons):
                by_town.setdefault(p["lead_jurisdiction_id"], []).append(i)
            text_of: dict[str, list[str]] = {"persons": [], "chains": [], "chain_steps": [], "chain_events": []}
            columns: dict[str, list[str]] = {"persons": list(persons[0])}
            text_of["persons"] = [_copy_line(p.values()) for p in persons]
            for place, members in by_town.items():
                row, step_rows, event_rows = self.start_rows(place, at)
                for table, rows in (("chains", [row]), ("chain_steps", step_rows), ("chain_events", event_rows)):
                    columns[table] = list(rows[0])
                chain_tail = _copy_line(list(row.values())[2:])  # after id and person_id
                step_tails = [_copy_line(list(r.values())[1:]) for r in step_rows]  # after chain_id
                event_tails = [_copy_line(list(r.values())[1:]) for r in event_rows]
                for i in members:
                    cid = chain_ids[i]
                    text_of["chains"].append(f"{cid}\t{persons[i]['id']}\t{chain_tail}")
                    text_of["chain_steps"].extend(f"{cid}\t{t}" for t in step_tails)
                    text_of["chain_events"].extend(f"{cid}\t{t}" for t in event_tails)
            with h.session_cm(self.app.factory) as session:
                pg = session.connection().connection.driver_connection
                with pg.cursor() as cur:
                    cur.execute("SET LOCAL synchronous_commit = off")  # this transaction only
                    for table in ("persons", "chains", "chain_steps", "chain_events"):
                        with cur.copy(f"COPY {table} ({', '.join(columns[table])}) FROM STDIN") as cp:
                            for i in range(0, len(text_of[table]), 2000):
                                cp.write("".join(text_of[table][i:i + 2000]))
                if self.write_audit:
                    self._audit_rows(session, chain_ids, persons, at)
                session.commit()
            ids.extend(chain_ids)
            if progress and (start // BULK_BATCH) % 5 == 4:
                h.log(f"  ... {start + k:,} chains ({(start + k) / (time.perf_counter() - t0):,.0f}/s)")
        return ids

    def _table_counts(self) -> dict[str, int]:
        with self.app.engine.connect() as conn:
            return {t.name: conn.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}

    def _snapshot(self, chain_id: uuid.UUID) -> dict[str, Any]:
        """The chain's rows in every table start_chain writes, without ids."""
        audit_t = Base.metadata.tables["audit_events"]
        with self.app.engine.connect() as conn:
            chain = conn.execute(select(chains_t).where(chains_t.c.id == chain_id)).one()._asdict()
            steps = [r._asdict() for r in conn.execute(
                select(steps_t).where(steps_t.c.chain_id == chain_id).order_by(steps_t.c.id))]
            events = [r._asdict() for r in conn.execute(
                select(events_t).where(events_t.c.chain_id == chain_id).order_by(events_t.c.id))]
            audits = [r._asdict() for r in conn.execute(
                select(audit_t).where(audit_t.c.entity_id == str(chain_id)).order_by(audit_t.c.id))]
        for r in [chain, *steps, *events, *audits]:
            for col in ("id", "chain_id", "person_id", "entity_id", "stream", "seq", "prev_hash", "hash"):
                r.pop(col, None)
        return {"chain": chain, "steps": steps, "events": events, "audit": audits}

    def check_bulk_matches_service(self) -> list[str]:
        """One chain through start_chain and one in bulk, at the same instant and place: their
        chain, step, event and audit rows must be equal but for ids and hash links (else this
        raises), and they must add rows to the same tables (else a warning is returned). Also
        decides whether bulk seeding appends to the audit trail: exactly when start_chain does."""
        now = datetime.now(UTC)
        town = self.app.towns()[0][0]
        person = self._person_rows(1, now, town)[0]
        with self.app.engine.begin() as conn:
            conn.execute(insert(persons_t), [person])
        counts0 = self._table_counts()
        with h.session_cm(self.app.factory) as session:
            by_service = start_chain(session, self.app.catalog, self.cm_actor, person["id"], TEMPLATE_KEY, now).id
        counts1 = self._table_counts()
        service_delta = {t: counts1[t] - counts0[t] for t in counts1 if counts1[t] != counts0[t]}
        self.write_audit = "audit_events" in service_delta
        by_bulk = self.bulk(1, now=now, town=town)[0]
        counts2 = self._table_counts()
        bulk_delta = {t: counts2[t] - counts1[t] for t in counts2 if counts2[t] != counts1[t]}
        bulk_delta["persons"] = bulk_delta.get("persons", 1) - 1  # start_chain's person came first
        bulk_delta = {t: n for t, n in bulk_delta.items() if n}
        warnings = []
        if bulk_delta != service_delta:
            warnings.append(f"start_chain adds rows {service_delta}, bulk seeding adds {bulk_delta}: "
                            "the bulk rows are not complete (transitions do not read the others)")
        a, b = self._snapshot(by_service), self._snapshot(by_bulk)
        for part in a:
            if a[part] != b[part]:
                raise RuntimeError(f"bulk seeding differs from start_chain in {part}:\n"
                                   f"  start_chain: {a[part]}\n  bulk:        {b[part]}")
        return warnings


# --------------------------------------------------------------------------------------------
# SQL per transition, in-process on one connection


def measure_sql(app: h.App, transitions: int, profile: bool) -> dict[str, Any]:
    """Statements per transition (before_cursor_execute + the commit), the time each kind of
    statement takes, and the round trips on the wire (libpq trace)."""
    one = h.App.open(app.url, app.master, pool_size=1, max_overflow=0)
    engine = one.engine
    try:
        with engine.connect() as conn:
            chains = load_chain_states(conn, open_chain_ids(conn)[:max(transitions, 50)])
        runner = runner_for(one, chains)
        errors: Counter[str] = Counter()

        def step() -> bool:
            try:
                return runner.one()
            except Exception as exc:  # counted, shown with the figures
                errors[type(exc).__name__] += 1
                return True

        for _ in range(WARMUP_TRANSITIONS):  # psycopg prepares statements after 5 uses
            step()

        per_kind: dict[str, list[float]] = {}
        per_kind_rows: Counter[str] = Counter()
        counts: list[int] = []
        current: list[Any] = []

        def before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            current.append((h.statement_kind(statement), time.perf_counter(),
                            len(parameters) if executemany else 1))

        def after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            kind, t0, rows = current[-1]
            per_kind.setdefault(kind, []).append(time.perf_counter() - t0)
            per_kind_rows[kind] += rows

        def on_commit(conn):  # noqa: ANN001
            current.append(("COMMIT", 0.0, 1))

        dialect = engine.dialect
        orig_commit, orig_ping = dialect.do_commit, dialect.do_ping

        def timed(kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    per_kind.setdefault(kind, []).append(time.perf_counter() - t0)
                    per_kind_rows[kind] += 1
            return wrapper

        dialect.do_commit = timed("COMMIT", orig_commit)  # this engine's dialect only
        dialect.do_ping = timed("pool pre-ping (';')", orig_ping)
        for name, fn in (("before_cursor_execute", before), ("after_cursor_execute", after), ("commit", on_commit)):
            event.listen(engine, name, fn)
        runner.ok = 0
        t_start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(transitions):
            current.clear()
            if not step():
                break
            counts.append(len(current))  # statements + the commit
        wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
        measured = runner.ok
        for name, fn in (("before_cursor_execute", before), ("after_cursor_execute", after), ("commit", on_commit)):
            event.remove(engine, name, fn)
        dialect.do_commit, dialect.do_ping = orig_commit, orig_ping
        n = max(measured, 1)

        wire: dict[str, int] = {}
        for action in ("start", "complete"):  # one traced transition of each
            ring = runner.rot.ring
            chain = next((c for c in [*ring, *runner.rot.backlog]
                          if (m := next_move(runner.template, c)) and m[2] == action and m[1]), None)
            if chain is None:
                continue
            (ring.remove if chain in ring else runner.rot.backlog.remove)(chain)
            ring.appendleft(chain)
            wire[action] = h.wire_round_trips(engine, step)

        prof_text = None
        if profile:
            # CPU time, not wall time: on a busy machine waits would swamp what Python costs.
            prof = cProfile.Profile(time.process_time)
            runner.ok = 0
            prof.enable()
            for _ in range(1000):
                if not step():
                    break
            prof.disable()
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf).sort_stats("tottime")
            stats.print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)
            prof_text = f"cProfile (CPU time) of {runner.ok} transitions (in-process):\n{buf.getvalue()}"

        sql_time = sum(sum(v) for v in per_kind.values())
        return {
            "transitions": measured,
            "statements": statistics.mean(counts) - 1 if counts else float("nan"),
            "statements_min_max": (min(counts) - 1, max(counts) - 1) if counts else (0, 0),
            "wire_round_trips": wire, "wall_ms": wall / n * 1000, "sql_ms": sql_time / n * 1000,
            "cpu_ms": cpu / n * 1000,
            "kinds": {k: {"calls": len(v) / n, "ms": sum(v) / n * 1000, "rows": per_kind_rows[k] / n}
                      for k, v in sorted(per_kind.items(), key=lambda kv: -sum(kv[1]))},
            "errors": dict(errors), "profile": prof_text,
        }
    finally:
        one.dispose()


# --------------------------------------------------------------------------------------------
# HTTP: uvicorn in a subprocess, client threads


def measure_http(bench: h.Bench, app: h.App, seconds: float, clients: int, workers: int) -> dict[str, Any]:
    import httpx

    template = app.catalog.current[TEMPLATE_KEY]
    with h.Server(app.url, app.master, workers, h.NO_RATE_LIMITS) as server:
        with app.engine.connect() as conn:
            chains = load_chain_states(conn)
        tokens = {o.id: server.token(o.key, sorted(h.actor_for(o).roles), f"bench.{o.key}")["Authorization"]
                  for o in app.orgs.values()}
        base = server.base
        parts = [chains[i::clients] for i in range(clients)]
        barrier = threading.Barrier(clients + 1)
        stop_at = [float("inf")]
        outs: list[dict[str, Any]] = [{} for _ in range(clients)]

        def client(i: int) -> None:
            rot = Rotation(parts[i])
            lat: list[float] = []
            statuses: Counter[int] = Counter()
            samples: list[str] = []
            ok = 0

            def request(http: httpx.Client, record: bool) -> bool:
                nonlocal ok
                while (chain := rot.next()) is not None:
                    move = next_move(template, chain)
                    if move is None or move[1] is None:
                        rot.drop()
                        continue
                    key, org_id, action = move
                    t0 = time.perf_counter()
                    resp = http.post(f"/chains/{chain.id}/steps/{key}/actions", json={"action": action},
                                     headers={"Authorization": tokens[org_id]})
                    took = time.perf_counter() - t0
                    if resp.status_code == 200:
                        body = resp.json()
                        chain.steps = {s["key"]: (s["state"], s["assigned_organisation_id"]) for s in body["steps"]}
                        if body["status"] in ("active", "stalled"):
                            rot.keep(chain)
                        else:
                            rot.drop()
                        if record:
                            ok += 1
                            lat.append(took)
                    else:
                        if record:
                            statuses[resp.status_code] += 1
                        if len(samples) < 3:
                            samples.append(f"{resp.status_code} {resp.text[:300]}")
                        with app.engine.connect() as conn:
                            fresh = load_chain_states(conn, [chain.id])
                        if fresh:
                            rot.keep(fresh[0])
                        else:
                            rot.drop()
                    return True
                return False

            exhausted = False
            try:
                with httpx.Client(base_url=base, timeout=30) as http:
                    for _ in range(WARMUP_TRANSITIONS):
                        request(http, record=False)
                    barrier.wait()
                    t0 = time.perf_counter()
                    while time.perf_counter() < stop_at[0]:
                        if not request(http, record=True):
                            exhausted = True
                            break
                    elapsed = time.perf_counter() - t0
                outs[i] = {"ok": ok, "elapsed": elapsed, "lat": lat, "errors": dict(statuses),
                           "samples": samples, "exhausted": exhausted}
            except threading.BrokenBarrierError:
                outs[i] = {"crash": "barrier broken"}
            except Exception:
                outs[i] = {"crash": traceback.format_exc()}
                barrier.abort()

        threads = [threading.Thread(target=client, args=(i,), daemon=True, name=f"bench-http-{i}")
                   for i in range(clients)]
        for t in threads:
            t.start()
        local = h.is_local(app.url)

        def server_backends() -> set[int]:
            with app.engine.connect() as conn:
                return set(conn.scalars(text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")))

        cpu0: dict[str, Any] = {}
        try:
            barrier.wait(timeout=120)
            stop_at[0] = time.perf_counter() + seconds
            t_start = time.perf_counter()
            server_pids = server.pids()
            cpu0 = {"client": time.process_time(), "server": h.backend_cpu(server_pids),
                    "machine": h.machine_cpu()}
            if local:
                cpu0["pg"] = {p: h.cpu_seconds_of(p) for p in server_backends()}
        except threading.BrokenBarrierError:
            pass
        for t in threads:
            t.join(seconds + 60)
        cpu: dict[str, float | None] = {}
        others = None
        if cpu0:
            window = time.perf_counter() - t_start
            cpu["client"] = time.process_time() - cpu0["client"]
            srv = h.backend_cpu(server_pids)
            cpu["server"] = srv - cpu0["server"] if srv is not None and cpu0["server"] is not None else None
            if local:
                cpu["pg"] = sum((h.cpu_seconds_of(p) or 0.0) - (cpu0["pg"].get(p) or 0.0)
                                for p in server_backends() | set(cpu0["pg"]))
            busy = h.busy_cores(cpu0["machine"], h.machine_cpu())
            if busy is not None and None not in (cpu.get("server"), cpu.get("pg")):
                others = max(0.0, busy - (cpu["client"] + cpu["server"] + cpu["pg"]) / window)  # type: ignore[operator]
        crashed = [o.get("crash", "no result") for o in outs if "crash" in o or not o]
        if crashed:
            raise RuntimeError("an HTTP client failed:\n" + str(crashed[0]))
    lat = [x for o in outs for x in o["lat"]]
    errors: Counter[str] = Counter()
    for o in outs:
        errors.update({str(k): v for k, v in o["errors"].items()})
    ok = sum(o["ok"] for o in outs)
    return {
        "cpu_ms": {k: (v / max(ok, 1) * 1000 if v is not None else None) for k, v in cpu.items()},
        "others_cores": others, "clients": clients, "workers": workers, "ok": ok,
        "rps": sum(o["ok"] / o["elapsed"] for o in outs if o["elapsed"] > 0),
        "p50_ms": h.percentile(lat, 50) * 1000, "p95_ms": h.percentile(lat, 95) * 1000,
        "errors": dict(errors), "error_samples": [s for o in outs for s in o["samples"]][:3],
        "exhausted": any(o["exhausted"] for o in outs),
    }


# --------------------------------------------------------------------------------------------
# Memory of a transition worker against the number of chains in the database


def memory_worker(cfg: dict[str, Any], sample: list[str], transitions: int) -> dict[str, Any]:
    """Transitions, each on a chain drawn at random (with replacement) from a random sample of the
    whole chains table, reading that chain's state just before; then this process' peak RSS. A
    second, shorter pass under tracemalloc gives the peak of Python allocations (kept apart so
    that tracemalloc's own bookkeeping does not inflate ru_maxrss)."""
    import gc
    import tracemalloc

    app = h.App.from_cfg(cfg)
    rng = random.Random(7)
    pool = [uuid.UUID(c) for c in sample]
    runner = runner_for(app, [])
    errors: Counter[str] = Counter()
    samples: list[str] = []

    def one_random() -> bool:
        for _ in range(50):  # bounded: skip chains that have nothing left to do
            if not pool:
                return False
            chain_id = rng.choice(pool)
            with app.engine.connect() as conn:
                found = load_chain_states(conn, [chain_id])
            if not found or next_move(runner.template, found[0]) is None:
                pool.remove(chain_id)
                continue
            runner.rot.keep(found[0])
            try:
                runner.one()
            except Exception as exc:
                errors[type(exc).__name__] += 1
                if len(samples) < 3:
                    samples.append(f"{type(exc).__name__}: {exc}"[:300])
            runner.rot.ring.clear()
            return True
        return False

    for _ in range(WARMUP_TRANSITIONS):
        one_random()
    gc.collect()
    runner.ok = 0
    errors.clear()
    rss_before = h.vm_kb("VmRSS")
    t0 = time.perf_counter()
    done = 0
    while done < transitions and one_random():
        done += 1
    elapsed = time.perf_counter() - t0
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm, rss_after, ok = h.vm_kb("VmHWM"), h.vm_kb("VmRSS"), runner.ok
    traced = max(1, transitions // 4)
    gc.collect()
    tracemalloc.start()
    for _ in range(traced):
        if not one_random():
            break
    gc.collect()
    traced_now, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    app.dispose()
    return {"ok": ok, "attempted": done, "elapsed": elapsed, "errors": dict(errors),
            "error_samples": samples, "maxrss_kb": maxrss, "vmhwm_kb": hwm,
            "rss_before_kb": rss_before, "rss_after_kb": rss_after, "traced_transitions": traced,
            "tracemalloc_peak": traced_peak, "tracemalloc_end": traced_now,
            "machines": len(chain_engine.machines), "sample": len(sample)}


def measure_memory(bench: h.Bench, app: h.App, seeder: Seeder, sizes: list[int], transitions: int) -> None:
    # Not "spawn": a spawned child is forked (vfork) from this process and exec'ed, and Linux
    # carries the parent's peak RSS over exec into the child's ru_maxrss, so every figure would
    # be at least this driver's peak (which grows with the bulk seeding). A child of a fork server
    # that imported nothing starts from a small process: its ru_maxrss is its own.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([])
    out = bench.results["memory"] = []
    for size in sorted(sizes):
        with app.engine.connect() as conn:
            have = conn.scalar(select(func.count()).select_from(chains_t))
        if size > have:
            h.log(f"memory: bulk-seeding {size - have:,} chains (COPY) to reach {size:,}")
            t0 = time.perf_counter()
            seeder.bulk(size - have, progress=True)
            took = time.perf_counter() - t0
            h.log(f"memory: seeded {size - have:,} chains in {took:.1f} s ({(size - have) / took:,.0f} chains/s)")
        with app.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
            total = conn.scalar(select(func.count()).select_from(chains_t))
            steps = conn.scalar(select(func.count()).select_from(steps_t))
            sample = [str(r) for r in conn.scalars(
                select(chains_t.c.id).where(chains_t.c.lifecycle == ChainLifecycle.open.value)
                .order_by(func.random()).limit(transitions))]
        res = h.in_processes(bench, memory_worker, [(app.cfg(), sample, transitions)], 600, "memory", ctx)[0]
        res.update(size=size, chains_in_db=total, steps_in_db=steps)
        h.log(f"memory: {total:,} chains ({steps:,} step rows): ru_maxrss {res['maxrss_kb'] / 1024:.1f} MiB, "
              f"tracemalloc peak {res['tracemalloc_peak'] / 2**20:.2f} MiB, {res['ok']} transitions in "
              f"{res['elapsed']:.1f} s, machines={res['machines']}, errors {h.fmt_errors(res['errors'])}")
        for s in res["error_samples"]:
            h.log(f"  error: {s}")
        out.append(res)


# --------------------------------------------------------------------------------------------
# Report


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    h.banner(f"casemgmt step transitions - {TEMPLATE_KEY}", results)
    seed = results.get("seed")
    if seed:
        h.rows([("seeded chains for throughput",
                 f"{seed['chains']:,} via {seed['how']} in {seed['seconds']:.1f} s "
                 f"({seed['chains'] / seed['seconds']:,.0f}/s; {seed['in_db']:,} chains in the database)")])
    sql = results.get("sql")
    if sql:
        h.heading("SQL per transition (in-process, one connection)")
        lo, hi = sql["statements_min_max"]
        h.rows([
            ("statements (listener)", f"{sql['statements']:.2f} (min {lo}, max {hi}) + 1 COMMIT "
                                      f"= {sql['statements'] + 1:.2f}"),
            ("round trips on the wire", ", ".join(f"{k} {v}" for k, v in sql["wire_round_trips"].items())
             + " (libpq trace)"),
            ("time per transition", f"{sql['wall_ms']:.2f} ms, of which SQL {sql['sql_ms']:.2f} ms "
                                    f"({h.ratio(sql['sql_ms'], sql['wall_ms']):.0%})"),
            ("Python CPU per transition", f"{sql['cpu_ms']:.2f} ms (this process' CPU time over the loop: "
                                          "service, SQLAlchemy, psycopg)"),
        ] + ([("errors", h.fmt_errors(sql["errors"]))] if sql["errors"] else []))
        py_label = "Python (service, engine, ChainOut)"
        kw = max([len(py_label), *map(len, sql["kinds"])])
        print(f"  {'statement':<{kw}} {'calls':>6} {'rows':>6} {'ms':>7} {'share':>6}")
        for kind, k in sql["kinds"].items():
            print(f"  {kind:<{kw}} {k['calls']:>6.2f} {k['rows']:>6.2f} {k['ms']:>7.3f} "
                  f"{h.ratio(k['ms'], sql['wall_ms']):>6.0%}")
        py = sql["wall_ms"] - sql["sql_ms"]
        print(f"  {py_label:<{kw}} {'':>6} {'':>6} {py:>7.3f} {h.ratio(py, sql['wall_ms']):>6.0%}")
        print("  (psycopg sends BEGIN just before the first statement, so the first SELECT's time includes it)")
        if sql.get("profile"):
            print(sql["profile"])
    svc = results.get("service", {})
    if svc:
        h.heading("Service layer: worker processes, transitions/s")
        items = []
        for w, r in sorted(svc.items()):
            items.append((f"{w} worker{'s' if w > 1 else ''}", h.pool_text(r, "transition")))
            items.append(("  PostgreSQL backends", h.waits_text(r["waits"])))
            if r["server_cpu_ms"] is not None:
                total = r["cpu_ms"] + r["server_cpu_ms"]
                items.append(("  most this machine can do", f"~{h.CPUS * 1000 / total:,.0f}/s "
                                                            f"({total:.2f} ms CPU per transition)"))
            for s in r["error_samples"]:
                items.append(("  error", s))
            if r["warm_up_errors"] or r["unassigned"]:
                items.append(("  also", f"errors in the warm-up {h.fmt_errors(r['warm_up_errors'])}; chains "
                                        f"left with a ready step nobody was assigned to: {r['unassigned']}"))
        if 1 in svc and 4 in svc:
            items.append(("scaling 4 workers / 1 worker", f"{h.ratio(svc[4]['per_s'], svc[1]['per_s']):.2f}x"))
        h.rows(items)
    raw = results.get("raw", {})
    if raw:
        h.heading("Raw psycopg baseline: lock, step update(s), events, version, commit (no audit)")
        items = []
        for w, r in sorted(raw.items()):
            items.append((f"{w} worker{'s' if w > 1 else ''}", h.pool_text(r, "transition")))
            if w in svc and r["per_s"]:
                by_cpu = ""
                if r["server_cpu_ms"] is not None and svc[w]["server_cpu_ms"] is not None:
                    # Less sensitive to other load than the rates: what each transition costs.
                    by_cpu = (f"; by CPU per transition (worker + PostgreSQL) "
                              f"{h.ratio(r['cpu_ms'] + r['server_cpu_ms'], svc[w]['cpu_ms'] + svc[w]['server_cpu_ms']):.2f}x")
                items.append((f"  service / raw, {w} worker{'s' if w > 1 else ''}",
                              f"{h.ratio(svc[w]['per_s'], r['per_s']):.2f}x (target >= {TARGET_RAW_RATIO}x){by_cpu}"))
        h.rows(items)
    http = results.get("http")
    if http:
        h.heading(f"HTTP: casemgmt serve --workers {http.get('workers', 1)}, {http['clients']} client threads")
        c = http["cpu_ms"]
        h.rows([
            ("requests/s", f"{http['rps']:,.0f} (p50 {http['p50_ms']:.1f} ms, p95 {http['p95_ms']:.1f} ms; "
                           f"errors: {h.fmt_errors(http['errors'])})"
             + ("  (RAN OUT OF CHAINS)" if http["exhausted"] else "")),
            ("CPU per request", (f"server {c['server']:.2f} ms" if c.get("server") is not None else "server ?")
             + (f" + PostgreSQL {c['pg']:.2f} ms" if c.get("pg") is not None else "")
             + (f" (+ client threads {c['client']:.2f} ms)" if c.get("client") is not None else "")
             + (f"; other processes ~{http['others_cores']:.2f} CPUs" if http["others_cores"] is not None else "")),
        ] + [("error", s) for s in http["error_samples"]])
    mem = results.get("memory") or []
    if mem:
        h.heading("Worker memory against chains in the database")
        items = [(f"{m['chains_in_db']:,} chains ({m['steps_in_db']:,} steps)",
                  f"ru_maxrss {m['maxrss_kb'] / 1024:.1f} MiB (RSS {m['rss_before_kb'] / 1024:.1f} -> "
                  f"{m['rss_after_kb'] / 1024:.1f} MiB over {m['ok']} transitions), tracemalloc peak "
                  f"{m['tracemalloc_peak'] / 2**20:.2f} MiB, machines {m['machines']}"
                  + (f"; ERRORS {h.fmt_errors(m['errors'])}" if m["errors"] else "")) for m in mem]
        if any(m["errors"] or not m["ok"] for m in mem):
            items.append(("ratio", "not valid: a memory run had failed transitions"))
        elif len(mem) >= 2:
            a, b = mem[0], mem[-1]
            items.append((f"ratio {b['chains_in_db']:,} / {a['chains_in_db']:,} chains",
                          f"ru_maxrss {b['maxrss_kb'] / a['maxrss_kb']:.3f}x, tracemalloc peak "
                          f"{h.ratio(b['tracemalloc_peak'], a['tracemalloc_peak']):.3f}x"))
        h.rows(items)
    h.heading("Target")
    four = svc.get(4)
    if four and raw.get(4) and raw[4]["per_s"]:
        h.target("service layer / raw psycopg, 4 workers", h.ratio(four["per_s"], raw[4]["per_s"]),
                 TARGET_RAW_RATIO, False, f"{h.ratio(four['per_s'], raw[4]['per_s']):.2f}x")
    if http:
        h.target(f"step actions through HTTP, serve --workers {http.get('workers', 1)}", http["rps"],
                 TARGET_HTTP_RPS, False, f"{http['rps']:,.0f} requests/s")
        c = http["cpu_ms"]
        if c.get("server") is not None and c.get("pg") is not None:
            # What the rate would be if the server and PostgreSQL had both CPUs to themselves.
            print(f"  by CPU: server + PostgreSQL {c['server'] + c['pg']:.2f} ms per request -> at most "
                  f"~{h.CPUS * 1000 / (c['server'] + c['pg']):,.0f} requests/s on {h.CPUS} CPUs with no client")
    if four:
        h.target("service-layer transitions/s with 4 workers", four["per_s"], TARGET_TPS, False,
                 f"{four['per_s']:,.0f}/s")
    else:
        print(f"target: service-layer transitions/s with 4 workers >= {TARGET_TPS:,}: not measured "
              "(run with --workers including 4)")
    print(h.LINE)


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chains", type=int, default=2_000, help="chains seeded for the throughput runs (2000)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each timed run (10)")
    p.add_argument("--workers", type=h.int_list, default=[1, 4],
                   help="worker process counts for the service-layer runs (1,4)")
    p.add_argument("--http-clients", type=int, default=4, help="HTTP client threads (4)")
    p.add_argument("--serve-workers", type=int, default=2, help="`casemgmt serve --workers N` for the HTTP run (2)")
    p.add_argument("--memory-sizes", type=h.int_list, default=[1_000, 100_000],
                   help="chains in the database for the memory runs (1000,100000)")
    p.add_argument("--memory-transitions", type=int, default=2_000, help="transitions per memory run (2000)")
    p.add_argument("--sql-transitions", type=int, default=300, help="transitions of the SQL breakdown (300)")
    p.add_argument("--seed", choices=("auto", "service", "bulk"), default="auto",
                   help=f"how to seed the throughput chains; auto: start_chain up to {SERVICE_SEED_MAX:,}, "
                        "bulk COPY above")
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of 1000 in-process transitions")
    h.common_args(p)
    args = p.parse_args(argv)
    if args.chains < 1 or args.seconds <= 0:
        p.error("--chains and --seconds must be positive")
    return h.smoke_sizes(args, SMOKE)


def prepare(bench: h.Bench, suffix: str) -> tuple[h.App, Seeder]:
    """A migrated database as the service role: the Kreis, the templates, a seeder."""
    db = bench.database(suffix)
    app = h.App.open(db.service_url, bench.master)
    cm = app.orgs[CASE_MANAGEMENT_ORG]
    return app, Seeder(app, h.actor_for(cm, roles=["case_manager"]))


def run(bench: h.Bench, args: argparse.Namespace) -> None:
    results = bench.results
    t0 = time.perf_counter()
    app, seeder = prepare(bench, "main")
    try:
        bench.server_facts(app.url)
        h.log(f"database migrated, world built, {len(app.catalog.current)} templates registered "
              f"({time.perf_counter() - t0:.1f} s)")
        template = app.catalog.current[TEMPLATE_KEY]
        town_key, town_name, _ = TOWNS[0]
        with app.engine.connect() as conn:
            path = conn.scalar(select(jur_t.c.path).where(jur_t.c.key == town_key))
        kinds = {s.owner for s in template.steps} - {CASE_MANAGEMENT_OWNER}
        nearest = app.nearest(kinds, path)
        h.log(f"steps of a chain in {town_name} are assigned to: " + ", ".join(
              f"{k}={app.by_id[o].key}" for k, o in sorted(nearest.items())) + f", case_management={CASE_MANAGEMENT_ORG}")
        for warning in seeder.check_bulk_matches_service():
            h.log(f"WARNING: {warning}")
        h.log("bulk seeding writes the same chain, step, event and audit rows as start_chain (checked on one "
              "chain each way; those 2 chains stay)")

        if args.workers or not args.skip_http or args.profile:
            bench.phase("seeding")
            how = args.seed if args.seed != "auto" else ("service" if args.chains <= SERVICE_SEED_MAX else "bulk")
            h.log(f"seeding {args.chains:,} chains via {'start_chain' if how == 'service' else 'COPY'}")
            t0 = time.perf_counter()
            if how == "service":
                seeder.with_service(args.chains)
            else:
                seeder.bulk(args.chains, progress=True)
            took = time.perf_counter() - t0
            with app.engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
                in_db = conn.scalar(select(func.count()).select_from(chains_t))
            results["seed"] = {"chains": args.chains, "how": "start_chain" if how == "service" else "COPY",
                               "seconds": took, "in_db": in_db}
            bench.phase("SQL breakdown")
            h.log(f"SQL breakdown: {args.sql_transitions} transitions in-process")
            sql = results["sql"] = measure_sql(app, args.sql_transitions, args.profile)
            h.log(f"SQL: {sql['statements'] + 1:.2f} statements incl. COMMIT per transition; wire round trips "
                  f"{sql['wire_round_trips']}; {sql['wall_ms']:.2f} ms per transition in-process")

        results["service"] = {}
        for w in args.workers:
            bench.phase(f"service x{w}")
            with app.engine.connect() as conn:
                ids = [str(c) for c in open_chain_ids(conn)]
            h.log(f"service layer: {w} worker process(es), {len(ids):,} open chains, {args.seconds:g} s")
            r = results["service"][w] = h.run_pool(bench, TransitionWorker, app.cfg(), [ids[i::w] for i in range(w)],
                                                   args.seconds, "transition")
            r["moves"] = sum((Counter(e["moves"]) for e in r["extras"]), Counter())
            r["warm_up_errors"] = dict(sum((Counter(e["warm_up_errors"]) for e in r["extras"]), Counter()))
            r["unassigned"] = sum(e["unassigned"] for e in r["extras"])
            h.log(f"service layer, {w} worker(s): {h.pool_text(r, 'transition')}; moves {dict(r['moves'])}")
            h.log(f"  PostgreSQL backends: {h.waits_text(r['waits'])}")

        results["raw"] = {}
        for w in args.workers:
            # After the service runs: the baseline moves chains its own way (no audit rows).
            bench.phase(f"raw psycopg x{w}")
            with app.engine.connect() as conn:
                ids = [str(c) for c in open_chain_ids(conn)]
            h.log(f"raw psycopg baseline: {w} worker process(es), {len(ids):,} open chains, {args.seconds:g} s")
            r = results["raw"][w] = h.run_pool(bench, RawWorker, app.cfg(), [ids[i::w] for i in range(w)],
                                               args.seconds, "transition")
            h.log(f"raw psycopg, {w} worker(s): {h.pool_text(r, 'transition')}")

        if not args.skip_http:
            bench.phase("HTTP")
            h.log(f"HTTP: casemgmt serve --workers {args.serve_workers}, {args.http_clients} client threads, "
                  f"{args.seconds:g} s")
            r = results["http"] = measure_http(bench, app, args.seconds, args.http_clients, args.serve_workers)
            h.log(f"HTTP: {r['rps']:,.0f} requests/s, p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
                  f"errors {h.fmt_errors(r['errors'])}")
    finally:
        app.dispose()

    if not args.skip_memory and args.memory_sizes:
        # A database of its own, so that each size is exact (the evidence tables refuse TRUNCATE
        # and DELETE, rightly) and the throughput runs above are not affected.
        bench.phase("memory")
        mem, mem_seeder = prepare(bench, "mem")
        mem_seeder.write_audit = seeder.write_audit
        try:
            measure_memory(bench, mem, mem_seeder, args.memory_sizes, args.memory_transitions)
        finally:
            mem.dispose()


if __name__ == "__main__":
    sys.exit(h.main("transitions", parse_args(), run, report))
