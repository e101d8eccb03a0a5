"""Step-transition benchmark: service layer (1 and 4 worker processes), HTTP, and worker memory.

Run from the repository root::

    .venv/bin/python bench/transitions.py [--chains N] [--seconds S]
        [--memory-sizes 1000,100000] [--skip-http] [--skip-memory]

It creates a throw-away PostgreSQL database ``casemgmt_bench_<random>`` (and
``casemgmt_bench_<random>_mem`` for the memory runs) on the server of ``CASEMGMT_BENCH_ADMIN_URL``
(default: the tests' ``CASEMGMT_TEST_ADMIN_URL``, else
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), migrates it with Alembic, builds the
synthetic Kreis, registers the chain templates, seeds chains of ``refugee_recognised``, measures,
and drops the databases again, also after an error, Ctrl-C or SIGTERM. See bench/README.md for
what each figure means.

This is a script, not a test: it only prints figures (and a PASS/FAIL line for the throughput
target). It uses the application's public service functions and never changes application code.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import inspect
import io
import json
import multiprocessing as mp
import os
import pstats
import random
import re
import resource
import signal
import socket
import statistics
import sys
import tempfile
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
ROOT = HERE.parent
# Run as a script, this file's directory comes first on sys.path, and this file's name would then
# shadow the `transitions` library that casemgmt.chains.engine imports: drop that entry.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:  # runnable from a clone that was not pip-installed
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, func, insert, select, text  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from casemgmt.chains import engine as chain_engine  # noqa: E402
from casemgmt.chains.catalog import TemplateCatalog, register_templates  # noqa: E402
from casemgmt.chains.engine import Actor, ChainLifecycle, StepState  # noqa: E402
from casemgmt.chains.models import Chain, ChainEvent, ChainStep  # noqa: E402
from casemgmt.chains.service import start_chain, transition_step  # noqa: E402
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER, ChainTemplate  # noqa: E402
from casemgmt.database import Base, make_engine, make_sessionmaker, session_scope  # noqa: E402
from casemgmt.demo.world import KREIS, TOWNS, build_world  # noqa: E402
from casemgmt.jurisdictions.models import Jurisdiction, Organisation  # noqa: E402
import casemgmt.models  # noqa: E402,F401  (every table in Base.metadata)
from casemgmt.migrations import upgrade  # noqa: E402
from casemgmt.persons.models import Person  # noqa: E402
from casemgmt.policy.loader import load_policies  # noqa: E402
from bench.bench_common import Children, _get, _machine_cpu  # noqa: E402

ADMIN_URL = os.environ.get(
    "CASEMGMT_BENCH_ADMIN_URL",
    os.environ.get("CASEMGMT_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
POLICY_DIR = ROOT / "policies"
TEMPLATE_KEY = "refugee_recognised"
CASE_MANAGEMENT_ORG = "ennetal_ki"  # the Kreis' Kommunales Integrationszentrum runs case management
PERSON_ATTRIBUTES = ("protection_granted", "good", "asylblg")  # typical for refugee_recognised
TARGET_TPS = 1_000
SERVICE_SEED_MAX = 5_000  # above this, --seed auto inserts chains in bulk instead of start_chain
BULK_BATCH = 5_000  # chains per COPY transaction
WARMUP_TRANSITIONS = 25  # per worker / client, before the clock starts
# Chains each worker (or client) interleaves; a finished chain is replaced from its backlog. Every
# run then sees the action mix of whole chain lifecycles (half starts, half completes, with their
# cascades) however many transitions it does, so runs of different speed stay comparable.
WINDOW = 16

persons_t = Person.__table__
chains_t = Chain.__table__
steps_t = ChainStep.__table__
events_t = ChainEvent.__table__
jur_t = Jurisdiction.__table__
org_t = Organisation.__table__

session_cm = contextlib.contextmanager(session_scope)  # exactly what a request gets


# The application grows: where it has an audit trail, sessions that write need the audit key
# derived from the master key. The bench makes a random master key per run and hands it to every
# worker and to the API server, and works unchanged against versions without one.
def audit_key_for(master: bytes) -> bytes | None:
    try:
        from casemgmt.privacy.crypto import KeyRing
    except ImportError:
        return None
    return KeyRing.from_master(master).audit_key


def bench_sessionmaker(engine: Engine, master: bytes) -> sessionmaker[Session]:
    if "audit_key" in inspect.signature(make_sessionmaker).parameters:
        return make_sessionmaker(engine, audit_key=audit_key_for(master))
    return make_sessionmaker(engine)


def settings_kwargs(master: bytes) -> dict[str, Any]:
    from casemgmt.config import Settings

    if "master_key" in Settings.model_fields:
        return {"master_key": base64.b64encode(master).decode()}
    return {}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Throw-away database


RUN_ID = uuid.uuid4().hex[:10]
CREATED_DATABASES: list[str] = []  # dropped at the end whatever happens


def create_database(suffix: str = "") -> tuple[str, str]:
    name = f"casemgmt_bench_{RUN_ID}{suffix}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        CREATED_DATABASES.append(name)
    finally:
        admin.dispose()
    log(f"created database {name}")
    return name, make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def inspect_tables(conn: Any) -> list[str]:
    from sqlalchemy import inspect as sa_inspect

    return sa_inspect(conn).get_table_names()


# --------------------------------------------------------------------------------------------
# Who acts: one organisation per (jurisdiction, owner kind), resolved once up front


@dataclass(frozen=True)
class Org:
    id: int
    key: str
    kind: str
    path: str


def load_orgs(conn) -> list[Org]:
    rows = conn.execute(
        select(org_t.c.id, org_t.c.key, org_t.c.kind, jur_t.c.path)
        .join(jur_t, jur_t.c.id == org_t.c.jurisdiction_id)
        .order_by(org_t.c.key)
    )
    return [Org(r.id, r.key, r.kind, r.path) for r in rows]


class ActorBook:
    """The actor for a step of a chain: for ``case_management`` the chain's case-management
    organisation, otherwise the most local organisation of the owner kind that serves the chain's
    jurisdiction (same rule as ``engine.may_act``). Cached, so resolution is not measured."""

    def __init__(self, orgs: Sequence[Org]):
        self.orgs = list(orgs)
        self.by_id = {o.id: o for o in self.orgs}
        self._cache: dict[tuple[str, str], Actor] = {}
        self._cm: dict[int, Actor] = {}

    @staticmethod
    def roles_of(org: Org) -> list[str]:
        return ["case_manager"] if org.key == CASE_MANAGEMENT_ORG else ["clerk"]

    def _actor(self, org: Org) -> Actor:
        return Actor(user_id=f"bench-{org.key}", organisation_id=org.id, organisation_kind=org.kind,
                     jurisdiction_path=org.path, roles=frozenset(self.roles_of(org)))

    def org_for(self, chain_path: str, cm_org_id: int, owner: str) -> Org:
        if owner == CASE_MANAGEMENT_OWNER:
            return self.by_id[cm_org_id]
        serving = [o for o in self.orgs if o.kind == owner and chain_path.startswith(o.path)]
        if not serving:
            raise RuntimeError(f"no organisation of kind {owner} serves {chain_path}")
        return min(serving, key=lambda o: (-len(o.path), o.key))

    def actor_for(self, chain_path: str, cm_org_id: int, owner: str) -> Actor:
        if owner == CASE_MANAGEMENT_OWNER:
            actor = self._cm.get(cm_org_id)
            if actor is None:
                actor = self._cm[cm_org_id] = self._actor(self.by_id[cm_org_id])
            return actor
        ident = (chain_path, owner)
        actor = self._cache.get(ident)
        if actor is None:
            actor = self._cache[ident] = self._actor(self.org_for(chain_path, cm_org_id, owner))
        return actor


# --------------------------------------------------------------------------------------------
# Chains as the load generator sees them, and which action comes next


@dataclass
class ChainState:
    id: uuid.UUID
    path: str  # lead jurisdiction path
    cm_org_id: int
    states: dict[str, str]  # step key -> state


def next_move(template: ChainTemplate, chain: ChainState) -> tuple[str, str, str] | None:
    """(step key, owner, action): start the first ready step, else complete the first started
    one, in template order. None when nothing is left to do."""
    for spec in template.steps:
        state = chain.states.get(spec.key)
        if state == StepState.ready.value:
            return spec.key, spec.owner, "start"
        if state == StepState.in_progress.value:
            return spec.key, spec.owner, "complete"
    return None


def load_chain_states(conn, ids: Sequence[uuid.UUID] | None = None) -> list[ChainState]:
    """Open chains of the template (all, or those of ``ids``) with their step states."""
    stmt = (
        select(chains_t.c.id, chains_t.c.case_management_organisation_id, jur_t.c.path)
        .join(jur_t, jur_t.c.id == chains_t.c.lead_jurisdiction_id)
        .where(chains_t.c.lifecycle == ChainLifecycle.open.value,
               chains_t.c.template_key == TEMPLATE_KEY)
        .order_by(chains_t.c.started_at, chains_t.c.id)
    )
    step_stmt = select(steps_t.c.chain_id, steps_t.c.key, steps_t.c.state).join(
        chains_t, chains_t.c.id == steps_t.c.chain_id
    ).where(chains_t.c.lifecycle == ChainLifecycle.open.value,
            chains_t.c.template_key == TEMPLATE_KEY)
    if ids is not None:
        stmt = stmt.where(chains_t.c.id.in_(list(ids)))
        step_stmt = step_stmt.where(steps_t.c.chain_id.in_(list(ids)))
    chains = {r.id: ChainState(r.id, r.path, r.case_management_organisation_id, {})
              for r in conn.execute(stmt)}
    for r in conn.execute(step_stmt):
        if r.chain_id in chains:
            chains[r.chain_id].states[r.key] = r.state
    return list(chains.values())


def open_chain_ids(conn) -> list[uuid.UUID]:
    return list(conn.scalars(
        select(chains_t.c.id)
        .where(chains_t.c.lifecycle == ChainLifecycle.open.value,
               chains_t.c.template_key == TEMPLATE_KEY)
        .order_by(chains_t.c.started_at, chains_t.c.id)
    ))


def _state_value(state: Any) -> str:
    return state.value if hasattr(state, "value") else str(state)


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
    ``service.transition_step`` with a fresh session per transition (as a request gets)."""

    def __init__(self, factory: sessionmaker[Session], catalog: TemplateCatalog, book: ActorBook,
                 chains: Sequence[ChainState]):
        self.factory = factory
        self.catalog = catalog
        self.template = catalog.current[TEMPLATE_KEY]
        self.book = book
        self.rot = Rotation(chains)
        for chain in chains:  # resolve every acting organisation up front, not while timed
            for spec in self.template.steps:
                book.actor_for(chain.path, chain.cm_org_id, spec.owner)
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.moves: Counter[str] = Counter()
        self.latencies: list[float] = []

    def one(self, record: bool = True) -> bool:
        """One transition on the next chain with something to do; False when none is left."""
        while (chain := self.rot.next()) is not None:
            move = next_move(self.template, chain)
            if move is None:
                self.rot.drop()  # completed (or nothing startable)
                continue
            key, owner, action = move
            actor = self.book.actor_for(chain.path, chain.cm_org_id, owner)
            t0 = time.perf_counter()
            try:
                with session_cm(self.factory) as session:
                    out = transition_step(session, self.catalog, actor, chain.id, key, action,
                                          None, None, datetime.now(UTC))
            except Exception as exc:  # counted, the chain is re-read, the run goes on
                self.errors[type(exc).__name__] += 1
                if len(self.error_samples) < 5:
                    self.error_samples.append(f"{type(exc).__name__}: {exc} ({key}/{action})")
                self._reload(chain)
                return True
            if record:
                self.latencies.append(time.perf_counter() - t0)
                self.ok += 1
                self.moves[action] += 1
            chain.states = {s.key: _state_value(s.state) for s in out.steps}
            if _state_value(out.status) in ("active", "stalled"):
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


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


# --------------------------------------------------------------------------------------------
# Seeding


def _copy_field(value: Any) -> str:
    """One value in PostgreSQL's COPY text format."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    text_ = str(value)
    if any(c in text_ for c in "\\\t\n\r"):
        text_ = (text_.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                 .replace("\r", "\\r"))
    return text_


def _copy_line(values: Sequence[Any]) -> str:
    return "\t".join(_copy_field(v) for v in values) + "\n"


@dataclass
class Seeder:
    engine: Engine
    factory: sessionmaker[Session]
    catalog: TemplateCatalog
    cm_actor: Actor
    towns: list[tuple[int, int]]  # (jurisdiction id, inhabitants) of the Kreis' towns
    audit_key: bytes | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(20260302))
    write_audit: bool = False  # set by check_bulk_matches_service if start_chain audits

    def _audit_rows(self, conn: Any, chain_ids: Sequence[uuid.UUID], persons: Sequence[dict],
                    template: ChainTemplate, at: datetime) -> None:
        """The audit entries start_chain appends (one 'chain.start' per chain), through the
        audit trail's own append so that its hash chain stays intact."""
        from casemgmt.privacy.audit import AuditEntry, append

        actor = self.cm_actor
        entries = [AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id,
                              action="C", subtype="chain.start", entity_type="chain",
                              entity_id=str(cid), person_id=p["id"],
                              detail=f"{template.key} v{template.version}")
                   for cid, p in zip(chain_ids, persons, strict=True)]
        with Session(bind=conn) as session:
            append(session, self.audit_key, entries, at)
            session.flush()

    def _person_rows(self, n: int, now: datetime, town: int | None = None) -> list[dict[str, Any]]:
        ids = [t[0] for t in self.towns]
        weights = [t[1] for t in self.towns]
        places = [town] * n if town is not None else self.rng.choices(ids, weights, k=n)
        status, prospect, regime = PERSON_ATTRIBUTES
        return [
            {"id": uuid.uuid4(), "residence_status": status, "bleibeperspektive": prospect,
             "benefit_regime": regime, "lead_jurisdiction_id": place,
             "created_by_organisation_id": self.cm_actor.organisation_id, "created_at": now}
            for place in places
        ]

    def with_service(self, n: int) -> list[uuid.UUID]:
        """Persons with one Core executemany, then each chain through ``start_chain``."""
        now = datetime.now(UTC)
        persons = self._person_rows(n, now)
        with self.engine.begin() as conn:
            for i in range(0, n, BULK_BATCH):
                conn.execute(insert(persons_t), persons[i:i + BULK_BATCH])
        ids = []
        for p in persons:
            with session_cm(self.factory) as session:
                out = start_chain(session, self.catalog, self.cm_actor, p["id"], TEMPLATE_KEY, now)
            ids.append(out.id)
        return ids

    def bulk(self, n: int, now: datetime | None = None, town: int | None = None,
             progress: bool = False) -> list[uuid.UUID]:
        """The rows ``start_chain`` writes (person, chain, the steps from
        ``engine.new_chain_steps``, the chain_started and make_ready events), loaded with COPY in
        transactions of BULK_BATCH chains. Rows are rendered as COPY text by hand: going through
        ``write_row`` costs more Python time than PostgreSQL spends storing them."""
        template = self.catalog.current[TEMPLATE_KEY]
        machine = chain_engine.machines.for_template(template)
        actor = self.cm_actor
        ids: list[uuid.UUID] = []
        t0 = time.perf_counter()
        for start in range(0, n, BULK_BATCH):
            k = min(BULK_BATCH, n - start)
            at = now or datetime.now(UTC)
            steps, changes = chain_engine.new_chain_steps(template, machine, at)
            step_tails = [_copy_line((s.key, s.owner_kind, s.optional, s.state, s.reason,
                                      s.started_at, s.completed_at, s.due_at, s.due_for, at))
                          for s in steps.values()]
            events = [("chain_started", None, None, None, ChainLifecycle.open.value,
                       f"{template.key} v{template.version}", actor.user_id,
                       actor.organisation_id, at)]
            events += [("step", c.step_key, c.action, c.from_state, c.to_state, c.reason,
                        actor.user_id, actor.organisation_id, at) for c in changes]
            event_tails = [_copy_line(e) for e in events]
            persons = self._person_rows(k, at, town)
            chain_ids = [uuid.uuid4() for _ in range(k)]
            person_text = "".join(_copy_line((
                p["id"], p["residence_status"], p["bleibeperspektive"], p["benefit_regime"],
                p["lead_jurisdiction_id"], p["created_by_organisation_id"], p["created_at"],
            )) for p in persons)
            chain_text = "".join(f"{cid}\t" + _copy_line((
                p["id"], template.key, template.version, p["lead_jurisdiction_id"],
                actor.organisation_id, ChainLifecycle.open.value, None, at, None, None, at, 1,
            )) for cid, p in zip(chain_ids, persons, strict=True))
            with self.engine.begin() as conn:
                pg = conn.connection.driver_connection
                with pg.cursor() as cur:
                    cur.execute("SET LOCAL synchronous_commit = off")  # this transaction only
                    with cur.copy("COPY persons (id, residence_status, bleibeperspektive, "
                                  "benefit_regime, lead_jurisdiction_id, created_by_organisation_id, "
                                  "created_at) FROM STDIN") as cp:
                        cp.write(person_text)
                    with cur.copy("COPY chains (id, person_id, template_key, template_version, "
                                  "lead_jurisdiction_id, case_management_organisation_id, lifecycle, "
                                  "closed_reason, started_at, completed_at, closed_at, updated_at, "
                                  "version) FROM STDIN") as cp:
                        cp.write(chain_text)
                    for table, columns, tails in (
                        ("chain_steps", "chain_id, key, owner_kind, optional, state, reason, "
                         "started_at, completed_at, due_at, due_for, updated_at", step_tails),
                        ("chain_events", "chain_id, kind, step_key, action, from_state, to_state, "
                         "reason, actor_user, actor_organisation_id, occurred_at", event_tails),
                    ):
                        with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as cp:
                            for i in range(0, k, 500):
                                cp.write("".join(f"{cid}\t{tail}" for cid in chain_ids[i:i + 500]
                                                 for tail in tails))
                if self.write_audit:
                    self._audit_rows(conn, chain_ids, persons, template, at)
            ids.extend(chain_ids)
            if progress and (start // BULK_BATCH) % 5 == 4:
                log(f"  ... {start + k:,} chains ({(start + k) / (time.perf_counter() - t0):,.0f}/s)")
        return ids

    def _table_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            present = set(inspect_tables(conn))
            return {t.name: conn.scalar(select(func.count()).select_from(t))
                    for t in Base.metadata.sorted_tables if t.name in present}

    def check_bulk_matches_service(self) -> list[str]:
        """One chain through start_chain and one in bulk, at the same instant: their chain, step
        and event rows must be equal but for ids (else this raises), and they must add rows to the
        same tables (else a warning is returned). Also decides whether bulk seeding appends to the
        audit trail: it does exactly when start_chain does."""
        now = datetime.now(UTC)
        town = self.towns[0][0]
        person = self._person_rows(1, now, town)[0]
        with self.engine.begin() as conn:
            conn.execute(insert(persons_t), [person])
        counts0 = self._table_counts()
        with session_cm(self.factory) as session:
            by_service = start_chain(session, self.catalog, self.cm_actor, person["id"],
                                     TEMPLATE_KEY, now).id
        counts1 = self._table_counts()
        service_delta = {t: counts1[t] - counts0.get(t, 0) for t in counts1
                         if counts1[t] != counts0.get(t, 0)}
        self.write_audit = "audit_events" in service_delta and self.audit_key is not None
        by_bulk = self.bulk(1, now=now, town=town)[0]
        counts2 = self._table_counts()
        bulk_delta = {t: counts2[t] - counts1.get(t, 0) for t in counts2
                      if counts2[t] != counts1.get(t, 0)}
        bulk_delta["persons"] = bulk_delta.get("persons", 1) - 1  # start_chain's person came first
        bulk_delta = {t: n for t, n in bulk_delta.items() if n}
        warnings = []
        if bulk_delta != service_delta:
            warnings.append(f"start_chain adds rows {service_delta}, bulk seeding adds {bulk_delta}: "
                            "the bulk rows are not complete (transitions do not read the others)")

        def snapshot(chain_id: uuid.UUID) -> dict[str, Any]:
            with self.engine.connect() as conn:
                chain = conn.execute(select(chains_t).where(chains_t.c.id == chain_id)).one()._asdict()
                steps = [r._asdict() for r in conn.execute(
                    select(steps_t).where(steps_t.c.chain_id == chain_id).order_by(steps_t.c.id))]
                events = [r._asdict() for r in conn.execute(
                    select(events_t).where(events_t.c.chain_id == chain_id).order_by(events_t.c.id))]
            for r in [chain, *steps, *events]:
                for col in ("id", "chain_id", "person_id"):
                    r.pop(col, None)
            return {"chain": chain, "steps": steps, "events": events}

        a, b = snapshot(by_service), snapshot(by_bulk)
        if a != b:
            for part in a:
                if a[part] != b[part]:
                    raise RuntimeError(f"bulk seeding differs from start_chain in {part}:\n"
                                       f"  start_chain: {a[part]}\n  bulk:        {b[part]}")
        return warnings


# --------------------------------------------------------------------------------------------
# Worker processes (spawned: their own interpreter, their own engine)


def _server_is_local(url: str) -> bool:
    return make_url(url).host in (None, "", "localhost", "127.0.0.1", "::1")


def _cpu_seconds_of(pid: int) -> float | None:
    """utime + stime of a local process (a PostgreSQL backend), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_cpu(pids: set[int]) -> float | None:
    values = [_cpu_seconds_of(p) for p in pids]
    return None if not values or None in values else sum(v for v in values if v is not None)


def _worker_setup(cfg: dict[str, Any]) -> tuple[Engine, sessionmaker[Session], TemplateCatalog,
                                                ActorBook, set[int]]:
    engine = make_engine(cfg["url"])  # as the app makes it (pool_pre_ping and all)
    backend_pids: set[int] = set()

    @event.listens_for(engine, "connect")
    def _remember_backend(dbapi_conn: Any, _record: Any) -> None:
        backend_pids.add(dbapi_conn.info.backend_pid)

    factory = bench_sessionmaker(engine, base64.b64decode(cfg["master_key"]))
    policies = load_policies(POLICY_DIR)
    with factory() as session:  # as the app does at start-up
        catalog = register_templates(session, policies.templates, datetime.now(UTC))
    book = ActorBook([Org(*o) for o in cfg["orgs"]])
    return engine, factory, catalog, book, backend_pids


def throughput_worker(cfg: dict[str, Any], chain_ids: list[str], ready: Any, go: Any,
                      results: Any) -> None:
    """Warm up, say ready, wait for the common start, transition for cfg['seconds']."""
    try:
        engine, factory, catalog, book, pids = _worker_setup(cfg)
        with engine.connect() as conn:
            chains = load_chain_states(conn, [uuid.UUID(c) for c in chain_ids])
        runner = Runner(factory, catalog, book, chains)
        for _ in range(WARMUP_TRANSITIONS):
            runner.one(record=False)
        local = _server_is_local(cfg["url"])
        ready.put(os.getpid())
        go.wait()
        cpu0, srv0 = time.process_time(), _backend_cpu(pids) if local else None
        t0 = time.perf_counter()
        deadline = t0 + cfg["seconds"]
        exhausted = False
        while time.perf_counter() < deadline:
            if not runner.one():
                exhausted = True
                break
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        srv1 = _backend_cpu(pids) if local else None
        server_cpu = srv1 - srv0 if srv0 is not None and srv1 is not None else None
        engine.dispose()
        results.put({
            "pid": os.getpid(), "ok": runner.ok, "elapsed": elapsed, "exhausted": exhausted,
            "cpu": cpu, "server_cpu": server_cpu, "connections": len(pids),
            "errors": dict(runner.errors), "error_samples": runner.error_samples,
            "moves": dict(runner.moves), "latencies": runner.latencies,
            "machines": len(chain_engine.machines),
        })
    except KeyboardInterrupt:
        pass
    except Exception:
        results.put({"pid": os.getpid(), "crash": traceback.format_exc()})
        ready.put(os.getpid())


def _vm_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_worker(cfg: dict[str, Any], sample: list[str], transitions: int, results: Any) -> None:
    """Transitions, each on a chain drawn at random (with replacement) from a random sample of the
    whole chains table, reading that chain's state just before; then reports this process' peak
    RSS. A second, shorter pass under tracemalloc gives the peak of Python allocations (kept
    apart so that tracemalloc's own bookkeeping does not inflate ru_maxrss)."""
    import gc
    import tracemalloc

    try:
        engine, factory, catalog, book, _ = _worker_setup(cfg)
        template = catalog.current[TEMPLATE_KEY]
        rng = random.Random(7)
        pool = [uuid.UUID(c) for c in sample]
        runner = Runner(factory, catalog, book, [])

        def one_random() -> bool:
            for _ in range(50):  # bounded: skip chains that have nothing left to do
                if not pool:
                    return False
                chain_id = rng.choice(pool)
                with engine.connect() as conn:
                    found = load_chain_states(conn, [chain_id])
                if not found or next_move(template, found[0]) is None:
                    pool.remove(chain_id)
                    continue
                runner.rot.keep(found[0])
                runner.one()
                runner.rot.ring.clear()
                return True
            return False

        for _ in range(WARMUP_TRANSITIONS):
            one_random()
        gc.collect()
        runner.ok = 0
        rss_before = _vm_kb("VmRSS")
        t0 = time.perf_counter()
        done = 0
        while done < transitions and one_random():
            done += 1
        elapsed = time.perf_counter() - t0
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        hwm = _vm_kb("VmHWM")
        rss_after = _vm_kb("VmRSS")
        ok = runner.ok

        traced = max(1, transitions // 4)
        gc.collect()
        tracemalloc.start()
        for _ in range(traced):
            if not one_random():
                break
        gc.collect()
        traced_now, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        engine.dispose()
        results.put({
            "ok": ok, "attempted": done, "elapsed": elapsed, "errors": dict(runner.errors),
            "error_samples": runner.error_samples, "maxrss_kb": maxrss, "vmhwm_kb": hwm,
            "rss_before_kb": rss_before, "rss_after_kb": rss_after,
            "traced_transitions": traced, "tracemalloc_peak": traced_peak,
            "tracemalloc_end": traced_now, "machines": len(chain_engine.machines),
            "sample": len(sample),
        })
    except KeyboardInterrupt:
        pass
    except Exception:
        results.put({"crash": traceback.format_exc()})


def server_main(url: str, key_dir: str, port: int, master_b64: str) -> None:
    """The API in its own process, as deployed: uvicorn serving create_app(Settings(...))."""
    import uvicorn

    from casemgmt.app import create_app
    from casemgmt.config import Settings

    # The benchmark database belongs to the superuser that made it; no separate service role here.
    app = create_app(Settings(database_url=url, dev_key_dir=Path(key_dir), allow_privileged_db_role=True,
                              **settings_kwargs(base64.b64decode(master_b64))))
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------------------------
# Measurements




def _machine_busy(before: list[int] | None, after: list[int] | None) -> dict[str, float] | None:
    if not before or not after:
        return None
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d) or 1
    idle = d[3] + d[4]
    return {"busy": 1 - idle / total, "steal": d[7] / total, "system": (d[2] + d[5] + d[6]) / total}


class WaitSampler:
    """Samples what the bench database's client backends are doing every 20 ms (state and wait
    event from pg_stat_activity), to show where a transaction's time goes under load."""

    SQL = text(
        "SELECT state, coalesce(wait_event_type || ':' || wait_event, 'on CPU') AS wait, "
        "left(query, 60) AS query FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle'"
    )

    def __init__(self, url: str):
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")
        self.samples = 0
        self.seen: Counter[str] = Counter()
        self.locks: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-waits")

    def _run(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.wait(0.02):
                self.samples += 1
                for state, wait, query in conn.execute(self.SQL):
                    what = "waiting for the client" if wait == "Client:ClientRead" else wait
                    self.seen[f"{state}: {what}"] += 1
                    if wait.startswith("Lock:"):
                        self.locks[" ".join(query.split())[:60]] += 1

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self.engine.dispose()

    def summary(self, top: int = 6) -> dict[str, Any]:
        total = sum(self.seen.values()) or 1
        return {"samples": self.samples,
                "busy_backends": total / max(self.samples, 1),
                "top": [(k, v / total) for k, v in self.seen.most_common(top)],
                "lock_waits_in": [k for k, _ in self.locks.most_common(3)]}



def measure_service(ctx: Any, children: Children, cfg: dict[str, Any], workers: int,
                    chain_ids: list[uuid.UUID]) -> dict[str, Any]:
    parts = [[str(c) for c in chain_ids[i::workers]] for i in range(workers)]
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [children.add(ctx.Process(target=throughput_worker, args=(cfg, part, ready, go, results),
                                      name=f"bench-worker-{i}"))
             for i, part in enumerate(parts)]
    for proc in procs:
        proc.start()
    for _ in procs:
        _get(ready, 120, "workers to warm up")
    cpu_before = _machine_cpu()
    t_go = time.perf_counter()
    with WaitSampler(cfg["url"]) as waits:
        go.set()
        outs = [_get(results, cfg["seconds"] + 120, "worker results") for _ in procs]
    machine = _machine_busy(cpu_before, _machine_cpu())
    window = time.perf_counter() - t_go
    for proc in procs:
        proc.join(30)
    children.stop_all()
    crashed = [o["crash"] for o in outs if "crash" in o]
    if crashed:
        raise RuntimeError("a worker crashed:\n" + crashed[0])
    ok = sum(o["ok"] for o in outs)
    if machine is not None and all(o.get("server_cpu") is not None for o in outs):
        # Cores busy with something other than these workers and their PostgreSQL backends.
        ours = sum(o["cpu"] + o["server_cpu"] for o in outs) / window
        machine["others_cores"] = max(0.0, machine["busy"] * (os.cpu_count() or 1) - ours)
    lat = [x for o in outs for x in o["latencies"]]
    errors: Counter[str] = Counter()
    for o in outs:
        errors.update(o["errors"])
    moves: Counter[str] = Counter()
    for o in outs:
        moves.update(o["moves"])
    return {
        "workers": workers, "chains": len(chain_ids), "ok": ok,
        "tps": sum(o["ok"] / o["elapsed"] for o in outs if o["elapsed"] > 0),
        "per_worker": [round(o["ok"] / o["elapsed"], 1) for o in outs],
        "p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000,
        "errors": dict(errors), "error_samples": [s for o in outs for s in o["error_samples"]][:5],
        "exhausted": any(o["exhausted"] for o in outs), "moves": dict(moves),
        "machines": max(o["machines"] for o in outs),
        "machine": machine,
        "waits": waits.summary(),
        "client_cpu_ms": sum(o["cpu"] for o in outs) / max(ok, 1) * 1000,
        "server_cpu_ms": (sum(o["server_cpu"] for o in outs) / max(ok, 1) * 1000
                          if all(o["server_cpu"] is not None for o in outs) else None),
    }


def statement_kind(sql: str) -> str:
    """A short label: verb and tables, e.g. ``SELECT chains+jurisdictions FOR UPDATE``."""
    flat = " ".join(sql.split())
    verb = flat.split(" ", 1)[0].upper()
    if verb == "SELECT":
        tables = re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", flat, re.I)
        label = "SELECT " + "+".join(dict.fromkeys(tables))
        return label + (" FOR UPDATE" if re.search(r"\bFOR UPDATE\b", flat, re.I) else "")
    if verb == "WITH":  # data-modifying CTEs: name every write, in order
        writes = re.findall(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", flat, re.I)
        return "WITH " + " + ".join(f"{w.split()[0].upper()} {t}" for w, t in writes) if writes else verb
    m = re.match(r"(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", flat, re.I)
    return f"{verb} {m.group(1)}" if m else verb


def measure_sql(url: str, master: bytes, catalog: TemplateCatalog, book: ActorBook,
                transitions: int, profile: bool) -> dict[str, Any]:
    """In-process, on one connection: statements per transition (before_cursor_execute + the
    commit), the time each kind of statement takes, and the round trips on the wire (libpq trace:
    every Query or Sync message the client sends is one round trip)."""
    import psycopg

    engine = make_engine(url, pool_size=1, max_overflow=0)
    factory = bench_sessionmaker(engine, master)
    try:
        with engine.connect() as conn:
            ids = open_chain_ids(conn)[:max(transitions, 50)]
            chains = load_chain_states(conn, ids)
        runner = Runner(factory, catalog, book, chains)
        for _ in range(WARMUP_TRANSITIONS):  # psycopg prepares statements after 5 uses
            runner.one(record=False)

        # 1. Statements and their time, seen by SQLAlchemy.
        per_kind: dict[str, list[float]] = {}
        per_kind_rows: Counter[str] = Counter()
        counts: list[int] = []
        current: list[Any] = []

        def before(conn, cursor, statement, parameters, context, executemany):
            current.append((statement_kind(statement), time.perf_counter(),
                            len(parameters) if executemany else 1))

        def after(conn, cursor, statement, parameters, context, executemany):
            kind, t0, rows = current[-1]
            per_kind.setdefault(kind, []).append(time.perf_counter() - t0)
            per_kind_rows[kind] += rows
            current[-1] = None

        def on_commit(conn):
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
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        event.listen(engine, "commit", on_commit)
        runner.ok = 0
        runner.latencies.clear()
        t_start = time.perf_counter()
        for _ in range(transitions):
            current.clear()
            if not runner.one():
                break
            counts.append(len(current))  # statements + the commit
        wall = time.perf_counter() - t_start
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
        event.remove(engine, "commit", on_commit)
        dialect.do_commit, dialect.do_ping = orig_commit, orig_ping
        measured = runner.ok
        n = max(measured, 1)

        # 2. Round trips on the wire, one traced transition of each action.
        wire: dict[str, int] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for action in ("start", "complete"):
                ring = runner.rot.ring
                chain = next((c for c in [*ring, *runner.rot.backlog]
                              if (m := next_move(runner.template, c)) and m[2] == action), None)
                if chain is None:
                    continue
                if chain in ring:
                    ring.remove(chain)
                else:
                    runner.rot.backlog.remove(chain)
                ring.appendleft(chain)
                raw = engine.raw_connection()  # the pool's only connection
                pgconn = raw.driver_connection.pgconn
                raw.close()
                path = Path(tmp) / f"trace-{action}.txt"
                with open(path, "w") as fh:
                    pgconn.trace(fh.fileno())
                    pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
                    runner.one(record=False)
                    pgconn.untrace()
                sent = [ln.split("\t")[2] for ln in path.read_text().splitlines()
                        if ln.startswith("F\t") and ln.count("\t") >= 2]
                wire[action] = sum(1 for m in sent if m in ("Query", "Sync"))

        prof_text = None
        if profile:
            prof = cProfile.Profile()
            runner.ok = 0
            prof.enable()
            for _ in range(1000):
                if not runner.one():
                    break
            prof.disable()
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf).sort_stats("tottime")
            stats.print_stats(25)
            buf.write("\n")
            stats.sort_stats("cumulative").print_stats(40)
            prof_text = f"cProfile of {runner.ok} transitions (in-process):\n{buf.getvalue()}"

        sql_time = sum(sum(v) for v in per_kind.values())
        return {
            "transitions": measured,
            "statements_per_transition": statistics.mean(counts) - 1 if counts else float("nan"),
            "statements_min_max": (min(counts) - 1, max(counts) - 1) if counts else (0, 0),
            "wire_round_trips": wire,
            "wall_ms": wall / n * 1000,
            "sql_ms": sql_time / n * 1000,
            "kinds": {k: {"calls": len(v) / n, "ms": sum(v) / n * 1000, "rows": per_kind_rows[k] / n}
                      for k, v in sorted(per_kind.items(), key=lambda kv: -sum(kv[1]))},
            "errors": dict(runner.errors),
            "profile": prof_text,
        }
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_http(ctx: Any, children: Children, url: str, master: bytes, engine: Engine,
                 book: ActorBook, template: ChainTemplate, seconds: float,
                 clients: int) -> dict[str, Any]:
    import httpx

    from casemgmt.auth.tokens import mint_dev_token
    from casemgmt.config import Settings

    with tempfile.TemporaryDirectory(prefix="casemgmt-bench-keys-") as key_dir:
        settings = Settings(database_url=url, dev_key_dir=Path(key_dir), **settings_kwargs(master))
        with engine.connect() as conn:
            chains = load_chain_states(conn)
        tokens: dict[str, str] = {}
        for chain in chains:  # one token per organisation that will act
            for spec in template.steps:
                org = book.org_for(chain.path, chain.cm_org_id, spec.owner)
                if org.key not in tokens:
                    tokens[org.key] = mint_dev_token(settings, f"bench-{org.key}", org.key,
                                                     ActorBook.roles_of(org))
        port = _free_port()
        server = children.add(ctx.Process(
            target=server_main, args=(url, key_dir, port, base64.b64encode(master).decode()),
            name="bench-uvicorn"))
        server.start()
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if not server.is_alive():
                    raise RuntimeError(f"the API server exited with code {server.exitcode}")
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the API server did not come up within 60 s")
                time.sleep(0.2)

            parts = [chains[i::clients] for i in range(clients)]
            barrier = threading.Barrier(clients + 1)
            stop_at = [0.0]
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
                        if move is None:
                            rot.drop()
                            continue
                        key, owner, action = move
                        org = book.org_for(chain.path, chain.cm_org_id, owner)
                        t0 = time.perf_counter()
                        resp = http.post(f"/chains/{chain.id}/steps/{key}/actions",
                                         json={"action": action},
                                         headers={"Authorization": f"Bearer {tokens[org.key]}"})
                        took = time.perf_counter() - t0
                        if resp.status_code == 200:
                            body = resp.json()
                            chain.states = {s["key"]: s["state"] for s in body["steps"]}
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
                            with engine.connect() as conn:
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

            threads = [threading.Thread(target=client, args=(i,), daemon=True,
                                        name=f"bench-http-{i}") for i in range(clients)]
            for t in threads:
                t.start()
            local = _server_is_local(url)

            def server_backends() -> set[int]:
                with engine.connect() as conn:
                    return set(conn.scalars(text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")))

            cpu0: dict[str, Any] = {}
            try:
                stop_at[0] = float("inf")
                barrier.wait(timeout=120)
                stop_at[0] = time.perf_counter() + seconds
                t_start = time.perf_counter()
                cpu0 = {"client": time.process_time(), "server": _cpu_seconds_of(server.pid),
                        "machine": _machine_cpu()}
                if local:
                    pids0 = server_backends()
                    cpu0["pg"] = {p: _cpu_seconds_of(p) for p in pids0}
            except threading.BrokenBarrierError:
                pass
            for t in threads:
                t.join(seconds + 60)
            cpu: dict[str, float | None] = {}
            machine_others = None
            if cpu0:
                window = time.perf_counter() - t_start
                cpu["client"] = time.process_time() - cpu0["client"]
                srv = _cpu_seconds_of(server.pid)
                cpu["server"] = srv - cpu0["server"] if srv is not None and cpu0["server"] is not None else None
                if local:
                    total = 0.0
                    for pid in server_backends() | set(cpu0["pg"]):
                        now_cpu = _cpu_seconds_of(pid) or 0.0
                        total += now_cpu - (cpu0["pg"].get(pid) or 0.0)
                    cpu["pg"] = total
                cpu["window"] = window
                busy = _machine_busy(cpu0["machine"], _machine_cpu())
                if busy is not None and None not in (cpu.get("server"), cpu.get("pg")):
                    ours = (cpu["client"] + cpu["server"] + cpu["pg"]) / window  # type: ignore[operator]
                    machine_others = max(0.0, busy["busy"] * (os.cpu_count() or 1) - ours)
            crashed = [o["crash"] for o in outs if "crash" in o or not o]
            if crashed:
                raise RuntimeError("an HTTP client failed:\n" + str(crashed[0]))
        finally:
            if server.is_alive():
                server.terminate()  # SIGTERM: uvicorn shuts down gracefully
            server.join(15)
            if server.is_alive():
                server.kill()
                server.join(5)
    lat = [x for o in outs for x in o["lat"]]
    errors: Counter[int] = Counter()
    for o in outs:
        errors.update(o["errors"])
    ok = sum(o["ok"] for o in outs)
    per_request = {k: (v / max(ok, 1) * 1000 if v is not None else None)
                   for k, v in cpu.items() if k != "window"}
    return {
        "cpu_ms": per_request,
        "others_cores": machine_others,
        "clients": clients, "ok": ok,
        "rps": sum(o["ok"] / o["elapsed"] for o in outs if o["elapsed"] > 0),
        "p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000,
        "errors": {str(k): v for k, v in errors.items()},
        "error_samples": [s for o in outs for s in o["samples"]][:3],
        "exhausted": any(o["exhausted"] for o in outs),
    }


def measure_memory(children: Children, cfg: dict[str, Any], engine: Engine, seeder: Seeder,
                   sizes: list[int], transitions: int, out: list[dict[str, Any]]) -> None:
    # Not "spawn": a spawned child is forked (vfork) from this process and exec'ed, and Linux
    # carries the parent's peak RSS over exec into the child's ru_maxrss, so every figure would
    # be at least this driver's peak (which grows with the bulk seeding). A child of a fork server
    # that imported nothing starts from a small process: its ru_maxrss is its own.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([])
    for size in sorted(sizes):
        with engine.connect() as conn:
            have = conn.scalar(select(func.count()).select_from(chains_t))
        if size > have:
            log(f"memory: bulk-seeding {size - have:,} chains (COPY) to reach {size:,}")
            t0 = time.perf_counter()
            seeder.bulk(size - have, progress=True)
            took = time.perf_counter() - t0
            log(f"memory: seeded {size - have:,} chains in {took:.1f} s "
                f"({(size - have) / took:,.0f} chains/s)")
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
            total = conn.scalar(select(func.count()).select_from(chains_t))
            steps = conn.scalar(select(func.count()).select_from(steps_t))
            sample = [str(r) for r in conn.scalars(
                select(chains_t.c.id).where(chains_t.c.lifecycle == ChainLifecycle.open.value)
                .order_by(func.random()).limit(transitions))]
        results = ctx.Queue()
        proc = children.add(ctx.Process(target=memory_worker,
                                        args=(cfg, sample, transitions, results),
                                        name="bench-memory"))
        proc.start()
        res = _get(results, 600, "the memory worker")
        proc.join(30)
        children.stop_all()
        if "crash" in res:
            raise RuntimeError("the memory worker crashed:\n" + res["crash"])
        res.update(size=size, chains_in_db=total, steps_in_db=steps)
        log(f"memory: {total:,} chains ({steps:,} step rows): ru_maxrss "
            f"{res['maxrss_kb'] / 1024:.1f} MiB (VmHWM {res['vmhwm_kb'] / 1024:.1f} MiB), "
            f"tracemalloc peak "
            f"{res['tracemalloc_peak'] / 2**20:.2f} MiB, {res['ok']} transitions in "
            f"{res['elapsed']:.1f} s, machines={res['machines']}, errors {fmt_errors(res['errors'])}")
        for sample_error in res["error_samples"]:
            log(f"  error: {sample_error}")
        out.append(res)


# --------------------------------------------------------------------------------------------
# Report


def fmt_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in errors.items()) if errors else "none"


def report(results: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = []
    seed = results.get("seed")
    if seed:
        rows.append(("seeded chains for throughput",
                     f"{seed['chains']:,} via {seed['how']} in {seed['seconds']:.1f} s "
                     f"({seed['chains'] / seed['seconds']:,.0f}/s; {seed['in_db']:,} chains in the "
                     "database)"))
    sql = results.get("sql")
    if sql:
        lo, hi = sql["statements_min_max"]
        rows.append(("SQL statements per transition (listener)",
                     f"{sql['statements_per_transition']:.2f} (min {lo}, max {hi}) + 1 COMMIT "
                     f"= {sql['statements_per_transition'] + 1:.2f}"))
        wire = ", ".join(f"{k} {v}" for k, v in sql["wire_round_trips"].items())
        rows.append(("round trips on the wire per transition", f"{wire} (libpq trace)"))
        rows.append(("in-process time per transition",
                     f"{sql['wall_ms']:.2f} ms, of which SQL {sql['sql_ms']:.2f} ms "
                     f"({sql['sql_ms'] / sql['wall_ms']:.0%})"))
    svc = results.get("service", {})
    one, four = svc.get(1), svc.get(4)
    for w, r in sorted(svc.items()):
        rows.append((f"service layer, {w} worker{'s' if w > 1 else ''}",
                     f"{r['tps']:,.0f} transitions/s (p50 {r['p50_ms']:.2f} ms, "
                     f"p95 {r['p95_ms']:.2f} ms; errors: {fmt_errors(r['errors'])})"))
    if one and four:
        rows.append(("scaling 4 workers / 1 worker", f"{four['tps'] / one['tps']:.2f}x"))
    for w, r in sorted(svc.items()):
        if r.get("waits") and r["waits"]["top"]:
            rows.append((f"PostgreSQL backends, {w} worker{'s' if w > 1 else ''}",
                         ", ".join(f"{k} {v:.0%}" for k, v in r["waits"]["top"][:4])))
    for w, r in sorted(svc.items()):
        if r.get("server_cpu_ms") is not None:
            total = r["client_cpu_ms"] + r["server_cpu_ms"]
            rows.append((f"CPU per transition, {w} worker{'s' if w > 1 else ''}",
                         f"worker {r['client_cpu_ms']:.2f} ms + PostgreSQL backend "
                         f"{r['server_cpu_ms']:.2f} ms = {total:.2f} ms -> at most "
                         f"~{(os.cpu_count() or 1) * 1000 / total:,.0f}/s on {os.cpu_count()} CPUs"
                         + (f" (other processes used ~{r['machine']['others_cores']:.2f} CPUs)"
                            if r.get("machine") and "others_cores" in r["machine"] else "")))
    http = results.get("http")
    if http:
        rows.append((f"HTTP, {http['clients']} client threads",
                     f"{http['rps']:,.0f} requests/s (p50 {http['p50_ms']:.1f} ms, "
                     f"p95 {http['p95_ms']:.1f} ms; errors: {fmt_errors(http['errors'])})"))
        c = http.get("cpu_ms") or {}
        if c.get("server") is not None:
            rows.append(("CPU per HTTP request",
                         f"uvicorn process {c['server']:.2f} ms"
                         + (f" + PostgreSQL backends {c['pg']:.2f} ms" if c.get("pg") is not None
                            else "")
                         + f" (+ client threads {c['client']:.2f} ms)"
                         + (f" (other processes used ~{http['others_cores']:.2f} CPUs)"
                            if http.get("others_cores") is not None else "")))
    mem = results.get("memory") or []
    for m in mem:
        rows.append((f"worker memory, {m['chains_in_db']:,} chains in DB",
                     f"ru_maxrss {m['maxrss_kb'] / 1024:.1f} MiB (RSS {m['rss_before_kb'] / 1024:.1f}"
                     f" -> {m['rss_after_kb'] / 1024:.1f} MiB over {m['ok']} transitions), "
                     f"tracemalloc peak {m['tracemalloc_peak'] / 2**20:.2f} MiB "
                     f"({m['traced_transitions']} transitions), machines: {m['machines']}"
                     + (f"; ERRORS: {fmt_errors(m['errors'])}" if m["errors"] else "")))
    if any(m["errors"] or not m["ok"] for m in mem):
        rows.append(("memory ratio", "not valid: a memory run had failed transitions (see the log)"))
    elif len(mem) >= 2:
        a, b = mem[0], mem[-1]
        rows.append((f"memory ratio {b['chains_in_db']:,} / {a['chains_in_db']:,} chains",
                     f"ru_maxrss {b['maxrss_kb'] / a['maxrss_kb']:.3f}x, tracemalloc peak "
                     f"{b['tracemalloc_peak'] / a['tracemalloc_peak']:.3f}x "
                     f"(chains {b['chains_in_db'] / a['chains_in_db']:.0f}x)"))
    width = max(len(r[0]) for r in rows) if rows else 10
    print()
    print("=" * 100)
    print(f"casemgmt step transitions - {TEMPLATE_KEY}, {os.cpu_count()} CPUs, "
          f"{results.get('server_version', 'PostgreSQL')}")
    if results.get("code"):
        print(f"code under test: {results['code']}")
    if results.get("load_before") is not None:
        print(f"CPUs busy before the run (other processes): {results['load_before']:.2f}"
              + ("  <-- not a quiet machine: figures are low and noisy"
                 if results["load_before"] > 0.25 else ""))
    print("=" * 100)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    if sql:
        print()
        print("Where one transition's time goes (in-process, one connection, "
              f"{sql['transitions']} transitions):")
        py_label = "Python (service, engine, ChainOut)"
        kw = max([len(py_label), *map(len, sql["kinds"])])
        print(f"  {'statement':<{kw}} {'calls':>6} {'rows':>6} {'ms':>7} {'share':>6}")
        for kind, k in sql["kinds"].items():
            print(f"  {kind:<{kw}} {k['calls']:>6.2f} {k['rows']:>6.2f} {k['ms']:>7.3f} "
                  f"{k['ms'] / sql['wall_ms']:>6.0%}")
        py = sql["wall_ms"] - sql["sql_ms"]
        print(f"  {py_label:<{kw}} {'':>6} {'':>6} {py:>7.3f} {py / sql['wall_ms']:>6.0%}")
        print("  (psycopg sends BEGIN just before the first statement, so the first SELECT's time "
              "includes that round trip)")
    print()
    if four:
        verdict = "PASS" if four["tps"] >= TARGET_TPS else "FAIL"
        print(f"target: service-layer transitions/s with 4 workers >= {TARGET_TPS:,}: {verdict} "
              f"({four['tps']:,.0f}/s)")
    else:
        print(f"target: service-layer transitions/s with 4 workers >= {TARGET_TPS:,}: not measured "
              "(run with --workers including 4)")
    print("=" * 100)


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chains", type=int, default=2_000,
                   help="chains seeded for the throughput runs (default 2000)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="length of each timed run (default 10)")
    p.add_argument("--workers", default="1,4",
                   help="worker process counts for the service-layer runs (default 1,4)")
    p.add_argument("--http-clients", type=int, default=4, help="HTTP client threads (default 4)")
    p.add_argument("--memory-sizes", default="1000,100000",
                   help="chains in the database for the memory runs (default 1000,100000)")
    p.add_argument("--memory-transitions", type=int, default=2_000,
                   help="transitions per memory run (default 2000)")
    p.add_argument("--sql-transitions", type=int, default=300,
                   help="transitions of the in-process SQL breakdown (default 300)")
    p.add_argument("--seed", choices=("auto", "service", "bulk"), default="auto",
                   help=f"how to seed the throughput chains; auto: start_chain up to "
                        f"{SERVICE_SEED_MAX:,}, bulk COPY above")
    p.add_argument("--skip-http", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--profile", action="store_true",
                   help="also print a cProfile of 1000 in-process transitions")
    p.add_argument("--json", type=Path, help="also write all figures to this JSON file")
    args = p.parse_args(argv)
    if args.chains < 1 or args.seconds <= 0:
        p.error("--chains and --seconds must be positive")
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
        args.memory_sizes = [int(s) for s in args.memory_sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--workers and --memory-sizes take comma-separated integers")
    if any(w < 1 for w in args.workers) or any(s < 1 for s in args.memory_sizes):
        p.error("worker counts and memory sizes must be positive")
    return args


def code_under_test() -> str | None:
    """Commit and locally changed application files (read-only git commands), if in a clone."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "casemgmt"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    if not changed:
        return head
    shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    return f"{head} + uncommitted changes in {shown}"


@dataclass
class Prepared:
    """A migrated database with the synthetic Kreis and the templates registered."""

    url: str
    engine: Engine
    factory: sessionmaker[Session]
    catalog: TemplateCatalog
    orgs: list[Org]
    book: ActorBook
    cm_actor: Actor
    towns: list[tuple[int, int]]
    town_path: str
    seeder: Seeder
    cfg: dict[str, Any]  # what a worker process needs to reach it

    def dispose(self) -> None:
        self.engine.dispose()


def prepare(url: str, master: bytes, seconds: float) -> Prepared:
    """Migrate (casemgmt.migrations.upgrade), build the world, register the templates."""
    engine = make_engine(url)
    try:
        upgrade(engine)
        factory = bench_sessionmaker(engine, master)
        with factory() as session:
            world = build_world(session)
        policies = load_policies(POLICY_DIR)
        with factory() as session:
            catalog = register_templates(session, policies.templates, datetime.now(UTC))
        with engine.connect() as conn:
            orgs = load_orgs(conn)
            kreis_path = conn.scalar(select(jur_t.c.path).where(jur_t.c.key == KREIS[0]))
            town_path = conn.scalar(select(jur_t.c.path).where(jur_t.c.key == TOWNS[0][0]))
    except BaseException:
        engine.dispose()
        raise
    towns = [(world.jurisdictions[key], people) for key, _, people in TOWNS]
    book = ActorBook(orgs)
    cm_org = next(o for o in orgs if o.key == CASE_MANAGEMENT_ORG)
    assert cm_org.path == kreis_path, "the case-management organisation must serve the Kreis"
    cm_actor = book.actor_for(cm_org.path, cm_org.id, CASE_MANAGEMENT_OWNER)
    seeder = Seeder(engine, factory, catalog, cm_actor, towns, audit_key=audit_key_for(master))
    cfg = {"url": url, "seconds": seconds, "orgs": [tuple(vars(o).values()) for o in orgs],
           "master_key": base64.b64encode(master).decode()}
    return Prepared(url, engine, factory, catalog, orgs, book, cm_actor, towns, town_path, seeder,
                    cfg)


def run(args: argparse.Namespace, children: Children, results: dict[str, Any]) -> None:
    """Every phase; figures go into ``results`` as they are measured, so that an interrupted run
    still reports what it has."""
    ctx = mp.get_context("spawn")
    results["code"] = code_under_test()
    master = os.urandom(32)  # this run's master key (audit trail, personal data)
    t0 = time.perf_counter()
    _, url = create_database()
    db = prepare(url, master, args.seconds)
    try:
        engine, catalog, book, seeder, cfg = db.engine, db.catalog, db.book, db.seeder, db.cfg
        with engine.connect() as conn:
            results["server_version"] = "PostgreSQL " + conn.execute(
                text("SHOW server_version")).scalar_one().split()[0]
        log(f"database migrated, world built, {len(catalog.current)} templates registered "
            f"({time.perf_counter() - t0:.1f} s)")
        template = catalog.current[TEMPLATE_KEY]
        owners = sorted({s.owner for s in template.steps})
        log(f"acting organisations for a chain in {TOWNS[0][1]}: " + ", ".join(
            f"{o}={book.org_for(db.town_path, db.cm_actor.organisation_id, o).key}"
            for o in owners))
        for warning in seeder.check_bulk_matches_service():
            log(f"WARNING: {warning}")
        log("bulk seeding writes the same chain, step and event rows as start_chain (checked on one "
            "chain each way; those 2 chains stay)"
            + (", and appends the same audit entries" if seeder.write_audit else ""))

        need_throughput = bool(args.workers) or not args.skip_http or args.profile
        if need_throughput:
            how = args.seed
            if how == "auto":
                how = "service" if args.chains <= SERVICE_SEED_MAX else "bulk"
            log(f"seeding {args.chains:,} chains via {'start_chain' if how == 'service' else 'COPY'}")
            t0 = time.perf_counter()
            if how == "service":
                seeder.with_service(args.chains)
            else:
                seeder.bulk(args.chains, progress=True)
            took = time.perf_counter() - t0
            with engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
                in_db = conn.scalar(select(func.count()).select_from(chains_t))
            results["seed"] = {"chains": args.chains, "how": "start_chain" if how == "service"
                               else "COPY", "seconds": took, "in_db": in_db}
            log(f"seeded {args.chains:,} chains in {took:.1f} s")

            log(f"SQL breakdown: {args.sql_transitions} transitions in-process")
            sql = measure_sql(url, master, catalog, book, args.sql_transitions, args.profile)
            results["sql"] = sql
            log(f"SQL: {sql['statements_per_transition'] + 1:.2f} statements incl. COMMIT per "
                f"transition; wire round trips {sql['wire_round_trips']}; "
                f"{sql['wall_ms']:.2f} ms per transition in-process")
            if sql["profile"]:
                print(sql["profile"])

        results["service"] = {}
        for w in args.workers:
            with engine.connect() as conn:
                ids = open_chain_ids(conn)
            log(f"service layer: {w} worker process(es), {len(ids):,} open chains, "
                f"{args.seconds:g} s")
            r = measure_service(ctx, children, cfg, w, ids)
            results["service"][w] = r
            log(f"service layer, {w} worker(s): {r['tps']:,.0f} transitions/s "
                f"(per worker {r['per_worker']}), p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms, "
                f"moves {r['moves']}, errors {fmt_errors(r['errors'])}, CPU/transition "
                f"worker {r['client_cpu_ms']:.2f} ms, PostgreSQL {r['server_cpu_ms'] or 0:.2f} ms"
                + (f"; machine {r['machine']['busy']:.0%} busy (steal {r['machine']['steal']:.0%}"
                   f", other processes ~{r['machine'].get('others_cores', 0):.2f} cores)"
                   if r["machine"] else "")
                + (" - RAN OUT OF CHAINS, raise --chains" if r["exhausted"] else ""))
            for s in r["error_samples"]:
                log(f"  error: {s}")
            log("  PostgreSQL backends (non-idle samples): " + ", ".join(
                f"{k} {v:.0%}" for k, v in r["waits"]["top"])
                + (f"; lock waits in: {' | '.join(r['waits']['lock_waits_in'])}"
                   if r["waits"]["lock_waits_in"] else ""))

        if not args.skip_http:
            log(f"HTTP: uvicorn in a subprocess, {args.http_clients} client threads, "
                f"{args.seconds:g} s")
            r = measure_http(ctx, children, url, master, engine, book, template, args.seconds,
                             args.http_clients)
            results["http"] = r
            log(f"HTTP: {r['rps']:,.0f} requests/s, p50 {r['p50_ms']:.1f} ms, "
                f"p95 {r['p95_ms']:.1f} ms, errors {fmt_errors(r['errors'])}, CPU/request "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in r["cpu_ms"].items() if v is not None)
                + (" - RAN OUT OF CHAINS, raise --chains" if r["exhausted"] else ""))
            for s in r["error_samples"]:
                log(f"  error: {s}")

        if not args.skip_memory and args.memory_sizes:
            # A database of its own, so that each size is exact (the evidence tables refuse
            # TRUNCATE and DELETE, rightly) and the throughput runs above are not affected.
            _, mem_url = create_database("_mem")
            mem = prepare(mem_url, master, args.seconds)
            mem.seeder.write_audit = seeder.write_audit
            try:
                results["memory"] = []
                measure_memory(children, mem.cfg, mem.engine, mem.seeder, args.memory_sizes,
                               args.memory_transitions, results["memory"])
            finally:
                mem.dispose()
    finally:
        db.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    before = _machine_cpu()
    time.sleep(1.0)
    idle_check = _machine_busy(before, _machine_cpu())
    if idle_check is not None:
        busy_cores = idle_check["busy"] * (os.cpu_count() or 1)
        log(f"machine load before starting: {busy_cores:.2f} of {os.cpu_count()} CPUs busy"
            + ("  <-- WARNING: other processes are using the CPUs; figures will be low and noisy"
               if busy_cores > 0.25 else ""))
    children = Children()
    status = 0
    results: dict[str, Any] = {}
    if idle_check is not None:
        results["load_before"] = idle_check["busy"] * (os.cpu_count() or 1)
    try:
        run(args, children, results)
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    except Exception:
        traceback.print_exc()
        status = 1
    finally:
        children.stop_all()
        for name in CREATED_DATABASES:
            try:
                drop_database(name)
                log(f"dropped database {name}")
            except Exception as exc:  # reported, never hidden
                log(f"could not drop database {name}: {exc}")
                status = status or 1
    if any(results.get(k) for k in ("sql", "service", "http", "memory")):
        if status:
            print("\n(partial figures: the run did not finish)")
        report(results)
        if args.json:
            for r in results.get("service", {}).values():
                r.pop("latencies", None)
            args.json.write_text(json.dumps(results, indent=2, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
