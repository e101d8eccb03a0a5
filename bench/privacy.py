"""Privacy benchmark: the audited read path, audit-trail verification, and concurrent appends.

Run from the repository root::

    .venv/bin/python bench/privacy.py [--persons N] [--reads N] [--audit-rows N]
        [--append-seconds S] [--workers 1,4] [--verify-procs N] [--profile] [--smoke]

Persons are registered as the demo registers them (``create_person`` with the demo's fields and
consents), each gets a chain (``start_chain``) and its Ausländerbehörde step is handed to the
Ausländerbehörde serving the person's town (``request_handover``), so both readers are involved:
the case manager runs the chain, the ABH is the receiver of a waiting handover. Then:

1. reading one person four ways, interleaved read by read (audited ``read_person``, a plain
   decrypting read of the same fields, the policy without the audit, and a diagnostic with
   ``synchronous_commit=off``), with round trips, a phase breakdown and the scope query's plan;
2. audit verification (``verify`` and ``verify_parallel``, and ``casemgmt audit verify``);
3. audit appends per second with 1 and 4 processes, against a control without head locks.

What each figure means is in bench/README.md ("Privacy benchmark"). A script, not a test: it
prints figures and a PASS/FAIL line per target. The phase breakdown wraps functions of
``casemgmt.privacy.service`` and ``casemgmt.privacy.audit`` inside this process only.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import io
import os
import pstats
import random
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/transitions.py would shadow the `transitions` library that casemgmt.chains.engine imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from sqlalchemy import MetaData, Table, bindparam, event, func, insert, select, text, update  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.engine.default import NO_CACHE_KEY  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

import casemgmt.privacy.service as svc  # noqa: E402
from bench import harness as h  # noqa: E402
from casemgmt.chains.engine import Actor  # noqa: E402
from casemgmt.chains.service import start_chain  # noqa: E402
from casemgmt.database import make_engine, make_sessionmaker  # noqa: E402
from casemgmt.demo.seed import CHAIN_MIX, _intake, _seed_agreements, _weighted  # noqa: E402
from casemgmt.handovers.schemas import HandoverIn  # noqa: E402
from casemgmt.handovers.service import request_handover  # noqa: E402
from casemgmt.persons.models import Person  # noqa: E402
from casemgmt.privacy import audit  # noqa: E402
from casemgmt.privacy.audit import HASHED_COLUMNS, AuditEntry, append, canonical, verify, verify_parallel  # noqa: E402
from casemgmt.privacy.crypto import KeyRing, decrypt_field  # noqa: E402
from casemgmt.privacy.models import PersonField, PersonKey  # noqa: E402
from casemgmt.privacy.schemas import PersonRecordOut  # noqa: E402
from casemgmt.privacy.service import PLAIN_FIELDS, Privacy, create_person, read_person  # noqa: E402

MANAGER_ORGS = (("cm.ennetal", "ennetal_ki"), ("cm.caritas", "ennetal_caritas"))  # as the demo
RESIDENCE_KIND = "auslaenderbehoerde"  # the reader on statute (abh_residence)
TARGET_RATIO = 1.5  # issue 14: a person read through the decision point and audit, against the bare read
TARGET_VERIFY_ROWS_S = 100_000
APPEND_BATCH = 1_000
APPEND_MEASURED_ROWS = 20_000  # of --audit-rows, appended (and timed) through audit.append
FILL_BATCH = 10_000  # the rest: the bench's copy of _append_rows' rows, per transaction
WARMUP_APPENDS = 20
READ_SAMPLE = 300  # persons the reads are drawn from (each read once in the warm-up)
VERIFY_SAMPLE = 100_000  # rows kept in memory for the per-row cost split
VERIFY_MIN_ROWS_PER_WORKER = 50_000  # verify_parallel's default: fewer rows, fewer processes
VARIANTS = ("audited", "plain", "policy, no audit", "audited, sync_commit=off")
# What verify reads per row: the 15 hashed columns in HASHED_COLUMNS order, prev_hash, hash, id
# (verify reads it stream by stream in seq order; here all streams in one query, same order).
N_HASHED = len(HASHED_COLUMNS)
VERIFY_SELECT = select(*(audit.audit_t.c[c] for c in (*HASHED_COLUMNS, "prev_hash", "hash", "id"))).order_by(
    audit.audit_t.c.stream, audit.audit_t.c.seq)

SMOKE = {"persons": 12, "reads": 10, "audit_rows": 300, "append_seconds": 1.0, "workers": [1],
         "verify_procs": 2}


@dataclass(frozen=True)
class Seeded:
    """A person as seeded: its id, its case management, and the ABH its handover waits at."""

    id: uuid.UUID
    cm: int
    abh: int


# --------------------------------------------------------------------------------------------
# SQL counting and phase timing


class Rec:
    """What one variant's instrumented reads added up to."""

    def __init__(self) -> None:
        self.wall: Counter[str] = Counter()  # exclusive time per phase
        self.sql: Counter[str] = Counter()  # time in round trips per phase
        self.stmts: Counter[str] = Counter()  # round trips per phase
        self.calls: Counter[str] = Counter()
        self.statements = 0  # before_cursor_execute
        self.commits = 0
        self.pings = 0
        self.kind_ms: Counter[str] = Counter()
        self.kind_calls: Counter[str] = Counter()
        self.kind_nokey: Counter[str] = Counter()  # executions SQLAlchemy could not cache
        self.compile: Counter[str] = Counter()  # SQL compilation time per phase (part of Python)


class PhaseTimer:
    """Exclusive wall time, SQL time and round trips per named phase (phases may nest), into
    the Rec of the variant selected with ``use`` - so that variants can be interleaved."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = []  # [name, t0, child time]
        self.recs: dict[str, Rec] = defaultdict(Rec)
        self.rec = self.recs["default"]

    def use(self, key: str) -> None:
        self.rec = self.recs[key]

    def add_sql(self, dt: float) -> None:
        name = self.stack[-1][0] if self.stack else "other"
        self.rec.sql[name] += dt
        self.rec.stmts[name] += 1

    def add_compile(self, dt: float) -> None:
        self.rec.compile[self.stack[-1][0] if self.stack else "other"] += dt

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        frame = [name, time.perf_counter(), 0.0]
        self.stack.append(frame)
        try:
            yield
        finally:
            self.stack.pop()
            dt = time.perf_counter() - frame[1]
            self.rec.wall[name] += dt - frame[2]
            self.rec.calls[name] += 1
            if self.stack:
                self.stack[-1][2] += dt

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)
        return wrapper


class SqlTap:
    """Statements (before/after_cursor_execute), COMMITs and pool pre-pings of one engine, each
    timed and attributed to the innermost running phase of the PhaseTimer (or 'other'). Also
    times SQLAlchemy's compilation of statements (a statement with a cache key is compiled once
    per engine; one without, e.g. an INSERT with multi-row VALUES, on every execution)."""

    def __init__(self, engine: Engine, phases: PhaseTimer):
        self.engine = engine
        self.phases = phases
        self._t0 = 0.0
        self._kind = ""

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self._kind = h.statement_kind(statement)
        self._t0 = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        dt = time.perf_counter() - self._t0
        rec = self.phases.rec
        rec.statements += 1
        rec.kind_ms[self._kind] += dt
        rec.kind_calls[self._kind] += 1
        if getattr(context, "cache_hit", None) is NO_CACHE_KEY:
            rec.kind_nokey[self._kind] += 1
        self.phases.add_sql(dt)

    def _timed(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                rec = self.phases.rec
                rec.kind_ms[kind] += dt
                rec.kind_calls[kind] += 1
                if kind == "COMMIT":
                    rec.commits += 1
                else:
                    rec.pings += 1
                self.phases.add_sql(dt)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if kind != "COMMIT":
                # The checkout happens inside whatever runs the first statement: shown apart.
                with self.phases.phase("pool checkout: pre-ping"):
                    return timed(*args, **kwargs)
            return timed(*args, **kwargs)
        return wrapper

    @contextlib.contextmanager
    def attached(self) -> Iterator[SqlTap]:
        dialect = self.engine.dialect
        orig_commit, orig_ping = dialect.do_commit, dialect.do_ping
        orig_compiler = dialect.statement_compiler
        phases = self.phases

        class TimedCompiler(orig_compiler):  # type: ignore[misc,valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                t0 = time.perf_counter()
                super().__init__(*args, **kwargs)
                phases.add_compile(time.perf_counter() - t0)

        dialect.statement_compiler = TimedCompiler  # this engine's dialect only
        dialect.do_commit = self._timed("COMMIT", orig_commit)  # this engine's dialect only
        dialect.do_ping = self._timed("pool pre-ping", orig_ping)
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        try:
            yield self
        finally:
            event.remove(self.engine, "before_cursor_execute", self._before)
            event.remove(self.engine, "after_cursor_execute", self._after)
            dialect.do_commit, dialect.do_ping = orig_commit, orig_ping
            dialect.statement_compiler = orig_compiler


# The service functions the audited read goes through, and the phase each one is shown as.
SERVICE_PHASES = {
    "_person_access": "record scope check with the data holders (_person_access)",
    "resolve_purpose": "resolve purpose",
    "consent_grants": "load consents (consent_grants)",
    "agreement_grants": "load agreements (agreement_grants)",
    "data_holders": "load data holders (data_holders; only when not brought by the scope check)",
    "decide": "policy decisions (decide)",
    "_unwrapped": "data key: unwrap (its row comes with the stored fields)",
    "decrypt_field": "decrypt fields (decrypt_field)",
    "write_audit": "audit stage (write_audit)",
}
# Called from the before_commit hook (audit._append_staged), so it nests inside "commit".
AUDIT_APPEND_PHASE = "audit append at commit (_append_rows)"


@contextlib.contextmanager
def service_wrapped(phases: PhaseTimer) -> Iterator[None]:
    saved = {n: getattr(svc, n) for n in SERVICE_PHASES}
    saved_append = audit._append_rows
    try:
        for n, label in SERVICE_PHASES.items():
            setattr(svc, n, phases.wrap(label, saved[n]))
        audit._append_rows = phases.wrap(AUDIT_APPEND_PHASE, saved_append)  # looked up at call time
        yield
    finally:
        for n, fn in saved.items():
            setattr(svc, n, fn)
        audit._append_rows = saved_append


@contextlib.contextmanager
def audit_disabled() -> Iterator[None]:
    saved = svc.write_audit
    svc.write_audit = lambda session, entries, now: None
    try:
        yield
    finally:
        svc.write_audit = saved


@contextlib.contextmanager
def capture_audit(sink: list[AuditEntry]) -> Iterator[None]:
    saved = svc.write_audit

    def capturing(session: Session, entries: Any, now: datetime) -> None:
        entries = list(entries)
        sink.extend(entries)
        saved(session, entries, now)

    svc.write_audit = capturing
    try:
        yield
    finally:
        svc.write_audit = saved



# --------------------------------------------------------------------------------------------
# Seeding


def seed_persons(app: h.App, n: int, now: datetime) -> tuple[list[Seeded], dict[str, Any]]:
    """Persons as the demo registers them (names, residence data, consents of every kind),
    through create_person; one chain each through start_chain; its Ausländerbehörde step handed
    to the ABH serving the person's town through request_handover. Also counts what one
    create_person costs: statements, audit appends and how long the audit head stays locked."""
    engine, factory, privacy, catalog, world = app.engine, app.factory, app.privacy, app.catalog, app.world
    rng = random.Random(2017)
    with h.session_cm(factory) as session:
        _seed_agreements(session, privacy, world, now)
    managers = [app.actor(key, user, ["case_manager"]) for user, key in MANAGER_ORGS]
    abh_step = {key: next(s.key for s in t.steps if s.owner == RESIDENCE_KIND) for key, t in catalog.current.items()}
    towns = list(world.town_population)
    weights = [world.town_population[t] for t in towns]
    kinds = list(CHAIN_MIX)
    shares = [CHAIN_MIX[k][0] for k in kinds]

    stats = {"statements": 0, "locks": 0, "tx_ms": 0.0, "held_ms": 0.0, "n": 0}
    lock_at: list[float] = []

    def after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        stats["statements"] += 1
        if "FOR UPDATE" in statement and "audit_head" in statement:
            stats["locks"] += 1
            if not lock_at:
                lock_at.append(time.perf_counter())

    persons: list[Seeded] = []
    measured = min(n, 100)
    t_start = time.perf_counter()
    for i in range(n):
        template_key = rng.choices(kinds, weights=shares)[0]
        attributes = _weighted(rng, CHAIN_MIX[template_key][1])
        town = rng.choices(towns, weights=weights)[0]
        started = now - timedelta(days=rng.uniform(3, 540))
        manager = managers[0] if rng.random() < 0.7 else managers[1]
        body = _intake(rng, world, manager, town, started, template_key, attributes)
        if i < measured:
            event.listen(engine, "after_cursor_execute", after)
            lock_at.clear()
            t0 = time.perf_counter()
        with h.session_cm(factory) as session:
            out = create_person(session, privacy, manager, body, started)
        if i < measured:
            t1 = time.perf_counter()
            event.remove(engine, "after_cursor_execute", after)
            stats["tx_ms"] += (t1 - t0) * 1000
            stats["held_ms"] += (t1 - lock_at[0]) * 1000 if lock_at else 0.0
            stats["n"] += 1
        with h.session_cm(factory) as session:
            chain = start_chain(session, catalog, manager, out.id, template_key, started + timedelta(minutes=10))
        with h.session_cm(factory) as session:
            handover = request_handover(session, catalog, privacy, app.policies.handovers, manager, chain.id,
                                        HandoverIn(kind="step", step_key=abh_step[template_key]),
                                        started + timedelta(minutes=20))
        persons.append(Seeded(out.id, manager.organisation_id, handover.receiver.id))
        if (i + 1) % 250 == 0:
            h.log(f"  ... {i + 1:,} persons ({(i + 1) / (time.perf_counter() - t_start):,.0f}/s)")
    k = max(stats["n"], 1)
    return persons, {
        "seconds": time.perf_counter() - t_start,
        "create_person_statements": stats["statements"] / k,
        "create_person_head_locks": stats["locks"] / k,
        "create_person_ms": stats["tx_ms"] / k,
        "create_person_head_held_ms": stats["held_ms"] / k,
    }


# --------------------------------------------------------------------------------------------
# 1. Reads


def plain_read(session: Session, keys: KeyRing, person_id: uuid.UUID, wanted: Sequence[str],
               purpose: str, phases: PhaseTimer | None = None) -> PersonRecordOut:
    """The same read without the policy layer: no scope check, no grants, no decisions, no
    audit. Person row, its fields and key, decryption of ``wanted``, the same output, commit."""
    ph = phases.phase if phases is not None else (lambda name: contextlib.nullcontext())
    try:
        with ph("load person row"):
            person = session.scalar(select(Person).where(Person.id == person_id))
        if person is None:
            raise LookupError(person_id)
        with ph("load person_fields"):
            stored = {
                row.field: row.ciphertext
                for row in session.execute(
                    select(PersonField.field, PersonField.ciphertext)
                    .where(PersonField.person_id == person_id))
            }
        data_key = None
        values: dict[str, Any] = {}
        for name in wanted:
            if name in PLAIN_FIELDS:
                if getattr(person, name) is not None:
                    values[name] = getattr(person, name)
            elif name in stored:
                if data_key is None:
                    with ph("data key: select + unwrap"):
                        wrapped = session.scalar(select(PersonKey.wrapped_key)
                                                 .where(PersonKey.person_id == person_id))
                        data_key = keys.unwrap(person_id, wrapped)
                with ph("decrypt fields"):
                    values[name] = decrypt_field(data_key, person_id, name, stored[name])
        with ph("build PersonRecordOut"):
            out = PersonRecordOut(
                id=person.id, lead_jurisdiction_id=person.lead_jurisdiction_id,
                created_at=person.created_at, purpose=purpose, fields=values, legal_bases={},
                redacted=[],
            )
        with ph("commit"):
            session.commit()
        return out
    except BaseException:
        session.rollback()
        raise


class Reader:
    """The read variants for one engine pair (normal, and synchronous_commit=off)."""

    def __init__(self, factory: sessionmaker[Session], factory_async: sessionmaker[Session],
                 privacy: Privacy):
        self.factory = factory
        self.factory_async = factory_async
        self.privacy = privacy

    def audited(self, actor: Actor, pid: uuid.UUID, phases: PhaseTimer | None = None) -> PersonRecordOut:
        with h.session_cm(self.factory) as session:
            if phases is not None:
                session.commit = phases.wrap("commit", session.commit)  # this session only
            return read_person(session, self.privacy, actor, pid, None, datetime.now(UTC))

    def plain(self, actor: Actor, pid: uuid.UUID, wanted: Sequence[str],
              phases: PhaseTimer | None = None) -> PersonRecordOut:
        purpose = self.privacy.policy.default_purpose[actor.organisation_kind]
        with h.session_cm(self.factory) as session:
            return plain_read(session, self.privacy.keys, pid, wanted, purpose, phases)

    def no_audit(self, actor: Actor, pid: uuid.UUID) -> PersonRecordOut:
        with audit_disabled(), h.session_cm(self.factory) as session:
            return read_person(session, self.privacy, actor, pid, None, datetime.now(UTC))

    def audited_async(self, actor: Actor, pid: uuid.UUID) -> PersonRecordOut:
        with h.session_cm(self.factory_async) as session:
            return read_person(session, self.privacy, actor, pid, None, datetime.now(UTC))


def measure_reads(url: str, privacy: Privacy, persons: list[Seeded],
                  actors: dict[str, Callable[[Seeded], Actor]], reads: int,
                  captured: list[AuditEntry]) -> dict[str, Any]:
    engine = make_engine(url, pool_size=1, max_overflow=0)  # as the app (pool_pre_ping) - one conn
    engine_async = make_engine(url, pool_size=1, max_overflow=0,
                               connect_args={"options": "-c synchronous_commit=off"})
    factory = make_sessionmaker(engine, audit_key=privacy.keys.audit_key)
    reader = Reader(factory, make_sessionmaker(engine_async, audit_key=privacy.keys.audit_key), privacy)
    rng = random.Random(42)
    persons = persons[:READ_SAMPLE]  # every read picks one of these (all warmed up)
    out: dict[str, Any] = {}
    try:
        for role, actor_for in actors.items():
            # Warm-up, and what each audited read returns: the plain read decrypts those fields.
            wanted: dict[uuid.UUID, list[str]] = {}
            redacted: list[int] = []
            t0 = time.perf_counter()
            with capture_audit(captured):
                for p in persons:
                    rec = reader.audited(actor_for(p), p.id)
                    wanted[p.id] = list(rec.fields)
                    redacted.append(len(rec.redacted))
            for p in persons[:50]:
                reader.plain(actor_for(p), p.id, wanted[p.id])
                reader.no_audit(actor_for(p), p.id)
                reader.audited_async(actor_for(p), p.id)
            h.log(f"  {role}: warm-up ({len(persons)} audited reads, {time.perf_counter() - t0:.1f} s); "
                  f"{statistics.mean(len(w) for w in wanted.values()):.1f} fields shown, "
                  f"{statistics.mean(redacted):.1f} redacted per read")

            lat: dict[str, list[float]] = {v: [] for v in VARIANTS}
            calls: dict[str, Callable[[Actor, uuid.UUID], Any]] = {
                "audited": reader.audited,
                "plain": lambda a, pid: reader.plain(a, pid, wanted[pid]),
                "policy, no audit": reader.no_audit,
                "audited, sync_commit=off": reader.audited_async,
            }
            order = list(VARIANTS)
            t0 = time.perf_counter()
            for i in range(reads):
                p = persons[rng.randrange(len(persons))]
                pid, actor = p.id, actor_for(p)
                rng.shuffle(order)  # interleaved, in random order, so noise hits all variants alike
                for v in order:
                    s = time.perf_counter()
                    calls[v](actor, pid)
                    lat[v].append(time.perf_counter() - s)
            timed_s = time.perf_counter() - t0
            res: dict[str, Any] = {"reads": reads, "seconds": timed_s,
                                   "fields_shown": statistics.mean(len(w) for w in wanted.values()),
                                   "redacted": statistics.mean(redacted), "variants": {}}
            for v in VARIANTS:
                xs = lat[v]
                res["variants"][v] = {"p50_ms": h.percentile(xs, 50) * 1000,
                                      "p95_ms": h.percentile(xs, 95) * 1000,
                                      "mean_ms": statistics.mean(xs) * 1000,
                                      "reads_s": len(xs) / sum(xs)}

            # Statements, commits and pings per read, and the phase breakdown: a separate pass
            # (instrumented), the two variants again interleaved read by read.
            k = min(reads, 300)
            sample = [persons[rng.randrange(len(persons))] for _ in range(k)]
            phases = PhaseTimer()
            tap = SqlTap(engine, phases)
            walls: Counter[str] = Counter()
            with tap.attached(), service_wrapped(phases):
                for p in sample:
                    for v in rng.sample(["audited", "plain"], 2):
                        phases.use(v)
                        s = time.perf_counter()
                        if v == "audited":
                            reader.audited(actor_for(p), p.id, phases)
                        else:
                            reader.plain(actor_for(p), p.id, wanted[p.id], phases)
                        walls[v] += time.perf_counter() - s
            breakdown: dict[str, Any] = {}
            for v in ("audited", "plain"):
                rec, wall = phases.recs[v], walls[v]
                first = sample[0]
                fn = ((lambda: reader.audited(actor_for(first), first.id)) if v == "audited"
                      else (lambda: reader.plain(actor_for(first), first.id, wanted[first.id])))
                breakdown[v] = {
                    "reads": k, "wall_ms": wall / k * 1000,
                    "statements": rec.statements / k, "commits": rec.commits / k,
                    "pings": rec.pings / k, "wire_round_trips": h.wire_round_trips(engine, fn),
                    "phases": {name: {"calls": rec.calls[name] / k,
                                      "stmts": rec.stmts[name] / k,
                                      "sql_ms": rec.sql[name] / k * 1000,
                                      "compile_ms": rec.compile[name] / k * 1000,
                                      "total_ms": rec.wall[name] / k * 1000}
                               for name in rec.wall},
                    "other_ms": (wall - sum(rec.wall.values())) / k * 1000,
                    "other_sql_ms": rec.sql["other"] / k * 1000,
                    "other_compile_ms": rec.compile["other"] / k * 1000,
                    "other_stmts": rec.stmts["other"] / k,
                    "kinds": {kind: {"calls": rec.kind_calls[kind] / k, "ms": ms / k * 1000,
                                     "no_cache_key": rec.kind_nokey[kind] / k}
                              for kind, ms in rec.kind_ms.most_common()},
                }
            res["breakdown"] = breakdown
            out[role] = res
            a, p = res["variants"]["audited"], res["variants"]["plain"]
            h.log(f"  {role}: audited p50 {a['p50_ms']:.2f} ms vs plain {p['p50_ms']:.2f} ms "
                  f"({a['p50_ms'] / p['p50_ms']:.2f}x); statements {breakdown['audited']['statements']:.1f}"
                  f"+COMMIT vs {breakdown['plain']['statements']:.1f}+COMMIT")
        out["scope"] = explain_scope(engine, persons, actors)
        return out
    finally:
        engine.dispose()
        engine_async.dispose()


def explain_scope(engine: Engine, persons: list[Seeded],
                  actors: dict[str, Callable[[Seeded], Actor]]) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the record-scope query (service.scope_clause, a correlated EXISTS on
    the person), and its time as a round trip through SQLAlchemy."""
    out: dict[str, Any] = {}
    rng = random.Random(5)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
        for role, actor_for in actors.items():
            stmt = select(Person.id).where(Person.id == persons[0].id, svc.scope_clause(actor_for(persons[0])))
            sql = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
            sql = sql.replace("%%", "%")  # pyformat escaping; sent without parameters below
            with conn.connection.driver_connection.cursor() as cur:  # params None: no placeholders
                plan, _ = h.explain_analyze(cur, sql)
            sample = [persons[rng.randrange(len(persons))] for _ in range(300)]
            for p in sample[:20]:
                conn.execute(select(Person.id).where(Person.id == p.id, svc.scope_clause(actor_for(p)))).all()
            t0 = time.perf_counter()
            found = 0
            for p in sample:
                found += len(conn.execute(
                    select(Person.id).where(Person.id == p.id, svc.scope_clause(actor_for(p)))).all())
            conn.rollback()
            out[role] = {"plan": plan, "ms": (time.perf_counter() - t0) / len(sample) * 1000,
                         "found": found, "n": len(sample)}
    return out


# --------------------------------------------------------------------------------------------
# 2. Audit verification


def bulk_append(factory: sessionmaker[Session], key: bytes, pool: list[AuditEntry],
                rows: int) -> dict[str, Any]:
    """Grow the trail to ``rows`` more rows. The first APPEND_MEASURED_ROWS go through
    audit.append, APPEND_BATCH entries per call and transaction, and are timed. The rest are
    built by audit.build_rows (the rows append writes, grouped by stream and chained from each
    stream's head), written with an executemany INSERT, and each stream's head is moved to its
    last seq and hash, FILL_BATCH rows per transaction; verify then checks every one of them
    with the application's own canonical() and HMAC."""
    now = datetime.now(UTC)
    measured = min(rows, APPEND_MEASURED_ROWS)
    done = i = 0
    t0 = time.perf_counter()
    while done < measured:
        k = min(APPEND_BATCH, measured - done)
        batch = [pool[(i + j) % len(pool)] for j in range(k)]
        i += k
        with h.session_cm(factory) as session:
            append(session, key, batch, now)
            session.commit()
        done += k
    took = time.perf_counter() - t0
    head = audit.head_t
    move_head = (update(head).where(head.c.stream == bindparam("s"))
                 .values(last_seq=bindparam("last_seq"), last_hash=bindparam("last_hash")))
    t1 = time.perf_counter()
    while done < rows:
        k = min(FILL_BATCH, rows - done)
        staged = [(pool[(i + j) % len(pool)], now) for j in range(k)]
        i += k
        with h.session_cm(factory) as session:
            # Every head, locked in stream order as _append_rows locks them.
            heads = {r.stream: (r.last_seq, r.last_hash) for r in session.execute(
                select(head.c.stream, head.c.last_seq, head.c.last_hash)
                .order_by(head.c.stream).with_for_update())}
            built, moves = audit.build_rows(key, staged, heads)
            session.execute(insert(audit.audit_t), built)
            session.execute(move_head, moves)
            session.commit()
        done += k
        if (done // FILL_BATCH) % 5 == 0:
            h.log(f"  ... {done:,} audit rows")
    return {"rows": rows, "append_rows": measured, "append_seconds": took,
            "append_rows_s": measured / took if measured else float("nan"),
            "fill_rows": rows - measured, "fill_seconds": time.perf_counter() - t1}


def _fetch_raw(engine: Engine, sql: str, cursor_name: str) -> tuple[int, float]:
    """Stream ``sql`` through a raw psycopg server-side cursor: rows, seconds."""
    raw = engine.raw_connection()
    try:
        t0 = time.perf_counter()
        with raw.driver_connection.cursor(name=cursor_name) as cur:
            cur.itersize = 10_000
            cur.execute(sql)
            n = sum(1 for _ in cur)
        took = time.perf_counter() - t0
        raw.driver_connection.rollback()
    finally:
        raw.close()
    return n, took


def measure_verify(engine: Engine, url: str, master: bytes, key: bytes, procs: int,
                   profile: bool) -> dict[str, Any]:
    res: dict[str, Any] = {"target_rows_s": TARGET_VERIFY_ROWS_S}
    with engine.connect() as conn:
        res["total_rows"] = int(conn.scalar(select(func.coalesce(func.sum(audit.head_t.c.last_seq), 0))))
        res["table_mb"] = conn.scalar(text("SELECT pg_total_relation_size('audit_events')")) / 2**20

    # verify (one process) and verify_parallel (streams shared out over processes), alternated so that
    # machine noise hits both alike; each twice, best run counts.
    top = res["total_rows"]
    procs_used = max(1, min(procs, top // VERIFY_MIN_ROWS_PER_WORKER, audit.STREAMS))
    runs: dict[str, list[float]] = {"single": [], "parallel": []}
    rows: dict[str, int] = {}
    for _ in range(2):
        with engine.connect() as conn:
            t0 = time.perf_counter()
            r = verify(conn, key)
            runs["single"].append(time.perf_counter() - t0)
        if not r.ok:
            raise RuntimeError(f"audit verify failed at row {r.first_bad_id}: {r.problem}")
        rows["single"] = r.rows
        t0 = time.perf_counter()
        r = verify_parallel(url, key, workers=procs, min_rows_per_worker=VERIFY_MIN_ROWS_PER_WORKER)
        runs["parallel"].append(time.perf_counter() - t0)
        if not r.ok:
            raise RuntimeError(f"audit verify_parallel failed at row {r.first_bad_id}: {r.problem}")
        rows["parallel"] = r.rows
    for name in ("single", "parallel"):
        best = min(runs[name])
        res[name] = {"rows": rows[name], "seconds": runs[name], "rows_s": rows[name] / best,
                     "vs_target": rows[name] / best / TARGET_VERIFY_ROWS_S}
    res["parallel"]["procs_asked"] = procs
    res["parallel"]["procs"] = procs_used
    res["parallel"]["min_rows_per_worker"] = VERIFY_MIN_ROWS_PER_WORKER
    res["parallel"]["speedup"] = res["parallel"]["rows_s"] / res["single"]["rows_s"]

    # Where one process's time goes: fetching (SQLAlchemy, raw psycopg, every column as ::text)
    # over every row, then encoding and HMAC per row on a sample of the rows kept in memory,
    # extrapolated to the trail.
    m, res["fetch_raw_s"] = _fetch_raw(engine, str(VERIFY_SELECT.compile(dialect=engine.dialect)),
                                       "bench_verify_fetch")
    with engine.connect() as conn:
        t0 = time.perf_counter()
        n = 0
        result = conn.execution_options(stream_results=True, yield_per=10_000).execute(VERIFY_SELECT)
        for _row in result:
            n += 1
        res["fetch_sa_s"] = time.perf_counter() - t0
    assert m == n, (m, n)
    # For comparison: the server formats every column as text and psycopg parses nothing (the
    # stored columns are text already but for id, recorded_at and the organisation id).
    as_text = ("SELECT " + ", ".join(f"{c}::text" for c in (*HASHED_COLUMNS, "prev_hash", "hash", "id"))
               + " FROM audit_events ORDER BY stream, seq")
    _, res["fetch_text_s"] = _fetch_raw(engine, as_text, "bench_verify_text")
    res["rows_fetched"] = n
    with engine.connect() as conn:  # the sample, kept apart: held rows would slow the fetches (GC)
        sample_rows = conn.execute(VERIFY_SELECT.limit(VERIFY_SAMPLE)).all()
    k = len(sample_rows)
    res["sample"] = k
    per_row: dict[str, float] = {}
    t0 = time.perf_counter()
    for row in sample_rows:
        row[:N_HASHED]
    per_row["slice"] = (time.perf_counter() - t0) / k
    values = [row[:N_HASHED] for row in sample_rows]
    t0 = time.perf_counter()
    bodies = [canonical(v) for v in values]
    per_row["canonical"] = (time.perf_counter() - t0) / k
    t0 = time.perf_counter()
    for v in values:
        v[2].astimezone(UTC).isoformat(timespec="microseconds")  # recorded_at
    per_row["isoformat"] = (time.perf_counter() - t0) / k
    chain = audit._Chain(key)
    t0 = time.perf_counter()
    for row, body in zip(sample_rows, bodies, strict=True):
        chain.link(row[N_HASHED], body)  # prev_hash
    per_row["hmac"] = (time.perf_counter() - t0) / k
    res["per_row"] = per_row
    del sample_rows, values, bodies

    if profile:
        prof = cProfile.Profile()
        with engine.connect() as conn:
            prof.enable()
            verify(conn, key)
            prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
        res["profile"] = buf.getvalue()

    # The `casemgmt audit verify` command itself (verify_parallel, one process per core).
    env = dict(os.environ, CASEMGMT_DATABASE_URL=url,
               CASEMGMT_MASTER_KEY=base64.b64encode(master).decode())
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "casemgmt.cli", "audit", "verify"], env=env,
                          cwd=h.ROOT, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    m2 = re.search(r"(\d+) rows verified in ([\d.]+) s", proc.stdout)
    res["cli"] = {"exit": proc.returncode, "wall_s": wall,
                  "rows": int(m2.group(1)) if m2 else None,
                  "reported_s": float(m2.group(2)) if m2 else None,
                  "output": (proc.stdout + proc.stderr).strip()[-500:]}
    return res


# --------------------------------------------------------------------------------------------
# 3. Concurrent appends


NOLOCK_TABLE = "bench_audit_nolock"
_RUNS = iter(range(1, 1_000_000))


class AppendWorker(h.PoolWorker):
    """Stages the entries of one read and commits, one transaction per append (mode 'chain':
    the before_commit hook appends them under their streams' head locks, as for a service); or
    builds the same rows as audit._append_rows (build_rows, from this worker's own seq range per
    stream) and inserts them with one statement into an unlocked copy of the table, reading and
    moving no head (mode 'nolock'). Times how long it waits for the head locks and holds them."""

    def __init__(self, cfg: dict[str, Any], share: tuple[int, list[dict[str, Any]]]):
        index, entries = share
        self.mode = cfg["mode"]
        self.engine = make_engine(cfg["url"], pool_size=1, max_overflow=0)
        self.backend_pids = h.remember_backends(self.engine)
        self.key = base64.b64decode(cfg["audit_key"])
        self.factory = make_sessionmaker(self.engine, audit_key=self.key)
        self.batch = [AuditEntry(**{**e, "person_id": uuid.UUID(e["person_id"]) if e["person_id"] else None,
                                    "fields": tuple(e["fields"])}) for e in entries]
        self.nolock = Table(NOLOCK_TABLE, MetaData(), autoload_with=self.engine)
        # The control's own numbering: ids and, per stream, a seq range unique per run and worker
        # (the copy keeps the unique index on stream, seq); no head is read or moved.
        base = (cfg["run"] * 100 + index) * 10**10
        self.next_id = base
        self.fake_heads = {s: (base, audit.GENESIS) for s in range(audit.STREAMS)}
        self.lock_t = self.lock_wait = self.held = 0.0
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if "FOR UPDATE" in statement:
            self.lock_t = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        if "FOR UPDATE" in statement:
            now = time.perf_counter()
            self.lock_wait += now - self.lock_t
            self.lock_t = now  # from here the lock is held

    def _append(self) -> None:
        now = datetime.now(UTC)
        with h.session_cm(self.factory) as session:
            if self.mode == "chain":
                audit.stage(session, self.batch, now)  # appended by the before_commit hook
            else:
                # As _append_rows on PostgreSQL: one statement (multi-row VALUES).
                rows, moves = audit.build_rows(self.key, [(e, now) for e in self.batch], self.fake_heads)
                for m in moves:
                    self.fake_heads[m["s"]] = (m["last_seq"], m["last_hash"])
                for row in rows:
                    self.next_id += 1
                    row["id"] = self.next_id
                session.execute(insert(self.nolock).values(rows))
            session.commit()
        if self.mode == "chain":
            self.held += time.perf_counter() - self.lock_t

    def warm_up(self) -> None:
        for _ in range(WARMUP_APPENDS):
            self._append()
        self.lock_wait = self.held = 0.0

    def one(self) -> bool:
        self._append()
        return True

    def extra(self) -> dict[str, Any]:
        return {"lock_wait": self.lock_wait, "held": self.held}

    def close(self) -> None:
        self.engine.dispose()


def measure_appends(bench: h.Bench, cfg: dict[str, Any], workers: int, mode: str,
                    entries: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    r = h.run_pool(bench, AppendWorker, {**cfg, "mode": mode, "run": next(_RUNS)},
                   [(i + 1, entries) for i in range(workers)], seconds, f"append-{mode}", sample_waits=False)
    n = max(r["ok"], 1)
    return {"workers": workers, "mode": mode, "appends": r["ok"], "appends_s": r["per_s"],
            "rows_s": r["per_s"] * len(entries), "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"],
            "lock_wait_ms": sum(e["lock_wait"] for e in r["extras"]) / n * 1000,
            "held_ms": sum(e["held"] for e in r["extras"]) / n * 1000,
            "cpu_ms": r["cpu_ms"], "busy_cores": r["busy_cores"], "errors": r["errors"]}


# --------------------------------------------------------------------------------------------
# Report


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    h.banner(f"casemgmt privacy benchmark - {r.get('persons')} persons", r)
    line = h.LINE
    st = r.get("settings", {})
    print("server settings: " + ", ".join(f"{k}={v}" for k, v in st.items()))
    s = r.get("seed")
    if s:
        print(f"seeding: {r['persons']} persons + chains + handovers to the ABH in {s['seconds']:.1f} s; one "
              f"create_person = {s['create_person_ms']:.1f} ms, {s['create_person_statements']:.1f} statements + "
              f"COMMIT, audit head locked {s['create_person_head_locks']:.1f}x and held for "
              f"{s['create_person_head_held_ms']:.1f} ms of it")
    if "reads" in r:
        report_reads(r)
    if "verify" in r:
        report_verify(r)
    if "appends" in r:
        report_appends(r)
    print(line)


def report_reads(r: dict[str, Any]) -> None:
    h.heading("1. Reading one person (one connection, sequential, a fresh session per read)")
    verdicts = []
    for role, res in r["reads"].items():
        if role == "scope":
            continue
        v = res["variants"]
        p = v["plain"]
        print(f"\n  as {role} ({res['reads']} reads per variant, interleaved; "
              f"{res['fields_shown']:.1f} fields shown, {res['redacted']:.1f} redacted per read)")
        print(f"    {'variant':<26} {'p50 ms':>8} {'p95 ms':>8} {'reads/s':>9} {'p50 ratio':>10} "
              f"{'p95 ratio':>10} {'reads/s ratio':>14}")
        for name in VARIANTS:
            x = v[name]
            print(f"    {name:<26} {x['p50_ms']:>8.3f} {x['p95_ms']:>8.3f} {x['reads_s']:>9,.0f} "
                  f"{x['p50_ms'] / p['p50_ms']:>9.2f}x {x['p95_ms'] / p['p95_ms']:>9.2f}x "
                  f"{p['reads_s'] / x['reads_s']:>13.2f}x")
        b = res["breakdown"]
        for name in ("audited", "plain"):
            x = b[name]
            print(f"    round trips, {name:<8}: {x['statements']:.2f} statements + {x['commits']:.2f} "
                  f"COMMIT = {x['statements'] + x['commits']:.2f} (SQLAlchemy listener); "
                  f"on the wire {x['wire_round_trips']} (adds pool pre-ping "
                  f"{x['pings']:.0f} and psycopg's BEGIN)")
        ratio = v["audited"]["p50_ms"] / p["p50_ms"]
        verdicts.append(f"{role}: {ratio:.2f}x {'PASS' if ratio <= TARGET_RATIO else 'FAIL'}")
        for name in ("audited", "plain"):
            x = b[name]
            print(f"\n    where the {name} read's time goes ({x['reads']} instrumented reads, "
                  f"{x['wall_ms']:.3f} ms each incl. instrumentation):")
            print(f"      {'phase':<42} {'calls':>6} {'trips':>6} {'SQL ms':>8} {'compile':>8} "
                  f"{'other Py':>8} {'total ms':>9} {'share':>6}")
            rows = sorted(x["phases"].items(), key=lambda kv: -kv[1]["total_ms"])
            for ph, d in rows:
                print(f"      {ph:<42} {d['calls']:>6.2f} {d['stmts']:>6.2f} {d['sql_ms']:>8.3f} "
                      f"{d['compile_ms']:>8.3f} {d['total_ms'] - d['sql_ms'] - d['compile_ms']:>8.3f} "
                      f"{d['total_ms']:>9.3f} {d['total_ms'] / x['wall_ms']:>6.0%}")
            print(f"      {'rest (see below)':<42} {'':>6} "
                  f"{x['other_stmts']:>6.2f} {x['other_sql_ms']:>8.3f} {x['other_compile_ms']:>8.3f} "
                  f"{x['other_ms'] - x['other_sql_ms'] - x['other_compile_ms']:>8.3f} "
                  f"{x['other_ms']:>9.3f} {x['other_ms'] / x['wall_ms']:>6.0%}")
            if name == "audited":
                print("      rest = disclose's inline SELECT person_fields (joined to person_keys), read_person/disclose "
                      "bookkeeping, AuditEntry and pydantic output, session open/close; the audit "
                      "append runs inside the commit and is shown apart from it")
            print("      (SQL ms: statement on the wire and in the driver; compile: SQLAlchemy compiling "
                  "a statement it has no cached form of; other Py: the rest of the phase's Python)")
            print("      statements: " + "; ".join(
                f"{k} {d['calls']:.2f}x {d['ms']:.3f} ms"
                + (" [no cache key: compiled every time]" if d["no_cache_key"] else "")
                for k, d in x["kinds"].items()))
    scope = r["reads"].get("scope", {})
    if scope:
        print("\n  record scope check (service.scope_clause: EXISTS correlated on the person), "
              "EXPLAIN ANALYZE:")

        def exec_ms(plan: list[str]) -> str:
            return next((ln.split(":", 1)[1].strip() for ln in plan if ln.startswith("Execution Time")), "?")

        def cost(plan: list[str]) -> str:
            m = re.search(r"cost=[\d.]+\.\.([\d.]+)", plan[0]) if plan else None
            return m.group(1) if m else "?"

        def jit(plan: list[str]) -> str:
            m = next((re.search(r"Total ([\d.]+) ms", ln) for ln in plan if "Timing: Generation" in ln), None)
            return f"JIT compile {m.group(1)} ms" if m else "no JIT"

        for role, d in scope.items():
            print(f"    {role}: server execution {exec_ms(d['plan'])} (planner cost {cost(d['plan'])}, "
                  f"{jit(d['plan'])}); round trip incl. SQLAlchemy {d['ms']:.3f} ms "
                  f"({d['found']}/{d['n']} persons in scope)")
        print(f"    (jit_above_cost is {r.get('settings', {}).get('jit_above_cost')})")
        first = next(iter(scope))
        print(f"    EXPLAIN ANALYZE as {first}:")
        for ln in scope[first]["plan"]:
            print(f"      {ln}")
    print(f"\n  target: audited read / plain read (p50) <= {TARGET_RATIO}x: " + "; ".join(verdicts))



def report_verify(r: dict[str, Any]) -> None:
    v = r["verify"]
    a = r["bulk_append"]
    h.heading(f"2. Audit verification ({v['total_rows']:,} rows in the trail, audit_events "
              f"{v['table_mb']:.0f} MiB)")
    print(f"  trail grown by {a['rows']:,} rows: {a['append_rows']:,} through audit.append "
          f"({APPEND_BATCH} entries per call and transaction) at {a['append_rows_s']:,.0f} rows/s; "
          f"{a['fill_rows']:,} built by the bench as _append_rows builds them, in "
          f"{a['fill_seconds']:.1f} s")
    sv, pv = v["single"], v["parallel"]
    target = v["target_rows_s"]
    print(f"  {'':<44} {'rows':>9} {'runs':>15} {'rows/s (best)':>14} {'of target':>10}")
    for label, x in (("verify(), one process", sv),
                     (f"verify_parallel(), {pv['procs']} process(es)", pv)):
        took = " / ".join(f"{t:.2f} s" for t in x["seconds"])
        print(f"  {label:<44} {x['rows']:>9,} {took:>15} {x['rows_s']:>14,.0f} {x['vs_target']:>9.2f}x")
    print(f"  verify_parallel / verify: {pv['speedup']:.2f}x (asked for {pv['procs_asked']} processes, "
          f"min_rows_per_worker {pv['min_rows_per_worker']:,}; its time includes starting the "
          f"processes and their connections)")
    best = min(sv["seconds"])
    rows = sv["rows"]
    pr = v["per_row"]
    print(f"  where verify()'s time goes, one process (fetch timed over all {v['rows_fetched']:,} rows; "
          f"encoding and HMAC per row on {v['sample']:,} rows, extrapolated):")
    parts = [
        ("fetch through SQLAlchemy (stream, yield_per 10k)", v["fetch_sa_s"] / v["rows_fetched"]),
        ("  of which driver + server (raw psycopg named cursor)", v["fetch_raw_s"] / v["rows_fetched"]),
        ("  (comparison: same rows, every column cast to ::text)", v["fetch_text_s"] / v["rows_fetched"]),
        (f"canonical(): length-prefixed text of the {N_HASHED} columns", pr["canonical"]),
        ("  of which astimezone + isoformat of recorded_at", pr["isoformat"]),
        ("HMAC-SHA256 link (copy, update, hexdigest)", pr["hmac"]),
        (f"row[:{N_HASHED}] slicing", pr["slice"]),
    ]
    for label, sec in parts:
        print(f"    {label:<56} {sec * 1e6:>6.2f} us/row  ~{sec * rows:>5.2f} s  "
              f"{sec * rows / best:>5.0%} of verify")
    c = v["cli"]
    print(f"  `casemgmt audit verify` (python -m casemgmt.cli, verify_parallel, subprocess): exit "
          f"{c['exit']}, reports {c['rows']} rows in {c['reported_s']} s"
          + (f" = {c['rows'] / c['reported_s']:,.0f} rows/s" if c["rows"] and c["reported_s"] else "")
          + f"; {c['wall_s']:.2f} s wall incl. interpreter start-up and imports")
    if c["exit"] != 0:
        print(f"    output: {c['output']}")
    for label, x in (("verify()", sv), ("verify_parallel()", pv)):
        verdict = "PASS" if x["rows_s"] >= target else "FAIL"
        print(f"  target: {label} >= {target:,} rows/s: {verdict} ({x['rows_s']:,.0f} rows/s, "
              f"{x['vs_target']:.2f}x the target)")
    if v.get("profile"):
        print("  cProfile of verify():")
        print("\n".join("    " + ln for ln in v["profile"].splitlines()))



def report_appends(r: dict[str, Any]) -> None:
    h.heading(f"3. Audit appends, one read's two entries per transaction, worker processes "
          f"({os.cpu_count()} CPUs)")
    print(f"  {'mode':<36} {'workers':>7} {'appends/s':>10} {'rows/s':>8} {'p50 ms':>7} {'p95 ms':>7} "
          f"{'lock wait':>10} {'lock held':>10} {'CPUs busy':>9}")
    for x in r["appends"]:
        label = "audit chain (head lock)" if x["mode"] == "chain" else "control: no head lock, no chain"
        lw = f"{x['lock_wait_ms']:.2f} ms" if x["mode"] == "chain" else "-"
        lh = f"{x['held_ms']:.2f} ms" if x["mode"] == "chain" else "-"
        print(f"  {label:<36} {x['workers']:>7} {x['appends_s']:>10,.0f} {x['rows_s']:>8,.0f} "
              f"{x['p50_ms']:>7.2f} {x['p95_ms']:>7.2f} {lw:>10} {lh:>10} "
              f"{(x['busy_cores'] or 0):>9.2f}")
    by = {(x["mode"], x["workers"]): x for x in r["appends"]}
    ws = sorted({x["workers"] for x in r["appends"]})
    if len(ws) >= 2:
        lo, hi = ws[0], ws[-1]
        for mode in ("chain", "nolock"):
            if (mode, lo) in by and (mode, hi) in by:
                print(f"  scaling {hi}/{lo} workers, {mode}: "
                      f"{by[(mode, hi)]['appends_s'] / by[(mode, lo)]['appends_s']:.2f}x")
    print(f"  chain intact after the concurrent appends: {r.get('chain_ok_after_concurrency')}")


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--persons", type=int, default=500, help="persons seeded (default 500)")
    p.add_argument("--reads", type=int, default=500, help="timed reads per variant and reader (default 500)")
    p.add_argument("--audit-rows", type=int, default=200_000,
                   help="audit rows appended before timing verify (default 200000)")
    p.add_argument("--append-seconds", type=float, default=5.0,
                   help="length of each concurrent-append run (default 5)")
    p.add_argument("--workers", type=h.int_list, default=[1, 4], help="worker process counts for appends (1,4)")
    p.add_argument("--verify-procs", type=int, default=max(2, h.CPUS),
                   help="workers for audit.verify_parallel (default: CPUs, at least 2; it uses "
                        f"fewer when the trail has under {VERIFY_MIN_ROWS_PER_WORKER:,} rows each)")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of verify()")
    h.common_args(p)
    args = p.parse_args(argv)
    if args.persons < 1 or args.reads < 1 or args.audit_rows < 0 or args.append_seconds <= 0 \
            or args.verify_procs < 1:
        p.error("--persons, --reads, --append-seconds and --verify-procs must be positive, "
                "--audit-rows not negative")
    return h.smoke_sizes(args, SMOKE)


def run(bench: h.Bench, args: argparse.Namespace) -> None:
    results = bench.results
    results["persons"] = args.persons
    t0 = time.perf_counter()
    db = bench.database("main")
    now = datetime.now(UTC)
    app = h.App.open(db.service_url, bench.master, templates_at=now - timedelta(days=600))
    try:
        bench.server_facts(db.service_url, ("fsync", "synchronous_commit", "jit_above_cost"))
        h.log(f"database migrated, world built, {len(app.catalog.current)} templates ({time.perf_counter() - t0:.1f} s)")

        bench.phase("seeding")
        h.log(f"seeding {args.persons:,} persons through create_person, start_chain and request_handover")
        persons, results["seed"] = seed_persons(app, args.persons, now)
        with app.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
        h.log(f"seeded in {results['seed']['seconds']:.1f} s ({results['seed']['create_person_ms']:.1f} ms per "
              "create_person)")
        by_id = app.by_id
        actors: dict[str, Callable[[Seeded], Actor]] = {
            "ABH clerk (a step handover to it waits)": lambda p: h.actor_for(by_id[p.abh], f"abh.{by_id[p.abh].key}"),
            "case manager": lambda p: h.actor_for(by_id[p.cm], f"cm.{by_id[p.cm].key}", ["case_manager"]),
        }

        bench.phase("1. reads")
        h.log(f"1. reads: {args.reads} per variant and reader, variants {', '.join(VARIANTS)}")
        captured: list[AuditEntry] = []
        results["reads"] = measure_reads(db.service_url, app.privacy, persons, actors, args.reads, captured)

        # Entries as real reads wrote them, for the append and verify measurements.
        pool = captured or [AuditEntry(agent_user="bench", agent_organisation_id=None, action="R",
                                       subtype="person.read", entity_type="person")]
        entries_cfg = [{**e.__dict__, "person_id": str(e.person_id) if e.person_id else None,
                        "fields": list(e.fields), "legal_bases": dict(e.legal_bases)}
                       for e in (captured[:2] or pool[:1])]
        # The control's unlocked copy of the trail: a table of the benchmark's own, so the owner
        # makes it (the service role may not create tables) and lets the service role add rows.
        with make_engine(db.owner_url).begin() as conn:
            conn.execute(text(f"CREATE TABLE {NOLOCK_TABLE} (LIKE audit_events INCLUDING DEFAULTS INCLUDING INDEXES)"))
        bench.dbs.grant(db, NOLOCK_TABLE, "SELECT, INSERT")
        cfg = {"url": db.service_url, "audit_key": base64.b64encode(app.keys.audit_key).decode()}
        results["appends"] = []
        bench.phase("3. appends")
        for mode in ("chain", "nolock"):
            for w in args.workers:
                what = "audit chain" if mode == "chain" else "control without head lock"
                h.log(f"3. appends: {w} worker process(es), {what}, {args.append_seconds:g} s")
                x = measure_appends(bench, cfg, w, mode, entries_cfg, args.append_seconds)
                results["appends"].append(x)
                h.log(f"   {x['appends_s']:,.0f} appends/s, p50 {x['p50_ms']:.2f} ms, lock wait "
                      f"{x['lock_wait_ms']:.2f} ms, held {x['held_ms']:.2f} ms per append"
                      + (f", errors {h.fmt_errors(x['errors'])}" if x["errors"] else ""))
        with app.engine.connect() as conn:
            r = verify(conn, app.keys.audit_key)
        results["chain_ok_after_concurrency"] = f"{r.ok} ({r.rows:,} rows)" + (
            "" if r.ok else f", first bad row {r.first_bad_id}: {r.problem}")

        bench.phase("2. growing the trail")
        h.log(f"2. growing the audit trail by {args.audit_rows:,} rows (the first "
              f"{min(args.audit_rows, APPEND_MEASURED_ROWS):,} through audit.append, {APPEND_BATCH} per call)")
        results["bulk_append"] = bulk_append(app.factory, app.keys.audit_key, pool, args.audit_rows)
        with app.engine.connect() as conn:
            conn.execute(text("ANALYZE audit_events"))
            conn.commit()
        bench.phase("2. verify")
        h.log(f"2. verifying the audit trail: verify() and verify_parallel(workers={args.verify_procs}), "
              "alternated, twice each")
        results["verify"] = v = measure_verify(app.engine, db.service_url, bench.master, app.keys.audit_key,
                                               args.verify_procs, args.profile)
        h.log(f"   verify: {v['single']['rows_s']:,.0f} rows/s; verify_parallel "
              f"({v['parallel']['procs']} processes): {v['parallel']['rows_s']:,.0f} rows/s")
    finally:
        app.dispose()


if __name__ == "__main__":
    sys.exit(h.main("privacy", parse_args(), run, report))
