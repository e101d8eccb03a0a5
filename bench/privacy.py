"""Privacy benchmark: the audited read path, audit-trail verification, and concurrent appends.

Run from the repository root::

    .venv/bin/python bench/privacy.py [--persons N] [--reads N] [--audit-rows N]
        [--append-seconds S] [--workers 1,4] [--verify-procs N] [--profile] [--json FILE]

The script sets up its own data. It creates a throw-away PostgreSQL database
``casemgmt_bench_privacy_<random>`` on the server of ``CASEMGMT_BENCH_ADMIN_URL`` (default: the
tests' ``CASEMGMT_TEST_ADMIN_URL``, else ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
It migrates the database with Alembic (``casemgmt.migrations.upgrade``), builds the synthetic Kreis
and registers the chain templates. It records the demo's data-exchange agreement, then seeds
``--persons`` persons (default 500) through ``privacy.service.create_person``. Their encrypted
fields and consents are built exactly as the demo builds them (``casemgmt.demo.seed._intake``).
It starts a chain for each person through ``chains.service.start_chain``, so the clerks of the
owning organisations have the person in their record scope. After measuring, it drops the
database, also after an error, Ctrl-C or SIGTERM.

Written for the stream design of the audit trail (commit 1b0e4b6 and later; it was first
written for c1859c3's single chain numbered by ``id``).

How the audit trail works (``casemgmt.privacy.audit``): it is split into ``STREAMS`` (16) hash
chains. An entry goes to the stream of its person (or of its user, when it concerns no person;
``audit.stream_of``); within a stream each row gets the next ``seq`` and an HMAC over the
previous row's hash and its own canonical encoding; ``id`` is just an autoincrement. Services
*stage* their entries on the session (``audit.stage``, through ``service.write_audit``) and a
``before_commit`` hook appends them once per transaction (``audit._append_rows``): ``SELECT ...
FROM audit_head WHERE stream IN (...) ORDER BY stream FOR UPDATE`` (one head row per stream),
then, on PostgreSQL and when all entries fall into one stream, one statement that inserts the
rows (as a CTE) and moves that stream's head (else an executemany INSERT and a head UPDATE per
stream). ``fields``/``legal_bases`` are stored as canonical JSON text and ``person_id`` as text;
a row's HMAC covers ``canonical()`` of its 15 stored values (``HASHED_COLUMNS``: stream, seq,
recorded_at, ...), a length-prefixed text encoding. ``verify`` walks every stream in seq order
in one process; ``verify_parallel`` shares the streams out over processes and joins them;
``casemgmt audit verify`` uses ``verify_parallel``. On PostgreSQL ``audit_head`` only moves
forward and the evidence tables refuse UPDATE/DELETE/TRUNCATE; the bench only inserts and moves
heads forward.

What it measures, in one run:

1. Reading one person, as the Ausländerbehörde clerk (statutory basis) and as the person's case
   manager (consent basis). Each read uses a fresh session and pool checkout, as a request gets
   one. Four variants are timed, interleaved read by read so that machine noise hits all alike:

   * ``audited``: ``service.read_person``. It checks record scope, loads consents, agreements and
     data holders, decides every category, unwraps the key, decrypts the permitted fields,
     stages two audit entries, and commits; the commit appends them under the head lock.
   * ``plain``: the same read without the policy layer. It loads the person row, its
     ``person_fields`` and the wrapped key, unwraps it, decrypts the same fields the audited read
     returned for that person and actor, builds the same ``PersonRecordOut`` and commits. There
     are no decisions and no audit rows.
   * ``policy, no audit``: ``read_person`` with ``service.write_audit`` replaced by a no-op, in
     this process only (nothing is staged, so the commit appends nothing). It separates the cost
     of the policy filter from the cost of auditing.
   * ``audited, sync_commit=off``: ``read_person`` on a connection with
     ``synchronous_commit=off``. This is diagnostic only; it shows how much of the audited read is
     the WAL flush of its commit. It is not a recommendation, because the audit row would no
     longer be durable before the data leaves.

   For each variant it prints the median and p95 latency, reads/s (one connection, sequential)
   and the ratios to ``plain`` (target: audited/plain <= 1.3x). It counts the SQL round trips of
   each read: statements seen by a ``before_cursor_execute`` listener, plus the COMMIT. On the
   wire it counts every Query/Sync message sent, from a libpq trace, which includes the pool
   pre-ping and psycopg's implicit BEGIN. It breaks the audited read down by phase: record scope
   check, consent loading, agreement loading, data holders, decisions, data key, decryption,
   audit staging, the audit append inside the commit, and the commit itself. Each phase is split
   into SQL time and Python time, and each statement kind is timed. The phases are timed by
   wrapping functions of the service module (and ``audit._append_rows``) in this process, in a
   separate pass, not during the timed runs. It also runs EXPLAIN ANALYZE on the record-scope
   query (``service.scope_clause``, a correlated EXISTS) and times it as a round trip.

2. Audit verification. It grows the trail by ``--audit-rows`` rows (default 200,000), copies of
   the entries real reads wrote, cycled. The first 20,000 go through ``privacy.audit.append``,
   1,000 entries per call and transaction, and their rate is reported; the rest are built by this
   script exactly as ``audit._append_rows`` builds them (``build_rows``: grouped by stream, each
   chained from its stream's head), written with an executemany INSERT, and each stream's head is
   moved to its last seq and hash, because ``append`` compiles its multi-row INSERT anew
   on every call and would take most of the run. ``verify`` then checks every row with the
   application's own ``canonical`` and HMAC. It then times, side by side, ``audit.verify`` (one
   process) and ``audit.verify_parallel`` (``--verify-procs`` processes, streams shared out), each
   twice over the whole trail, best run, against the target of >= 100,000 rows/s. It splits
   one process's time into fetching (through SQLAlchemy, through a raw psycopg server-side
   cursor, and with every column cast to ``::text``), building the canonical encoding
   (``canonical``, with its ``isoformat`` part separate) and the HMAC. It also runs the real
   ``python -m casemgmt.cli audit verify`` in a subprocess (the ``verify_parallel`` code path)
   and reports the time that command prints and its wall time including start-up.

3. Audit appends per second with 1 and 4 worker processes (``--workers``). Each transaction
   stages the two entries a read writes and commits (so the ``before_commit`` hook appends them,
   as for a service), and each process has its own engine. Every worker times how long it waits
   for the ``audit_head`` row locks (of the streams it appends to) and how long it holds them. As a control, the same number of
   processes build the same rows exactly as ``audit._append_rows`` does (stream, seq, text
   columns, ``canonical`` over ``HASHED_COLUMNS``, the HMAC link; ``build_rows``, each worker
   numbering its own seq range per stream) and insert them with one statement into an unlocked
   copy of ``audit_events``, without reading or moving any head, to show what serialisation
   costs. Afterwards the chain is verified to check that concurrent appends kept it intact.

See the section "Privacy benchmark" in bench/README.md for the figures measured on this machine.

This is a script, not a test. It only prints figures, with a PASS/FAIL line for each target. It
uses the application's public service functions. The phase breakdown wraps functions of
``casemgmt.privacy.service`` and ``casemgmt.privacy.audit`` in this process only. The script
never changes application code.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import io
import json
import multiprocessing as mp
import os
import pstats
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, this file's directory comes first on sys.path, and bench/transitions.py would
# then shadow the `transitions` library that casemgmt.chains.engine imports: drop that entry.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:  # runnable from a clone that was not pip-installed
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Table, bindparam, create_engine, event, func, insert, select, text, update  # noqa: E402
from sqlalchemy.engine import Engine, make_url  # noqa: E402
from sqlalchemy.engine.default import NO_CACHE_KEY  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

import casemgmt.models  # noqa: E402,F401  (every table in Base.metadata)
import casemgmt.privacy.service as svc  # noqa: E402
from casemgmt.chains.catalog import register_templates  # noqa: E402
from casemgmt.chains.engine import Actor  # noqa: E402
from casemgmt.chains.service import start_chain  # noqa: E402
from casemgmt.database import make_engine, make_sessionmaker, session_scope  # noqa: E402
from casemgmt.demo.seed import CHAIN_MIX, _intake, _seed_agreements, _weighted, actor_of  # noqa: E402
from casemgmt.demo.world import build_world  # noqa: E402
from casemgmt.jurisdictions.models import Organisation  # noqa: E402
from casemgmt.migrations import upgrade  # noqa: E402
from casemgmt.persons.models import Person  # noqa: E402
from casemgmt.policy.loader import load_policies  # noqa: E402
from casemgmt.privacy import audit  # noqa: E402
from casemgmt.privacy.audit import (  # noqa: E402
    HASHED_COLUMNS,
    AuditEntry,
    append,
    canonical,
    verify,
    verify_parallel,
)
from casemgmt.privacy.crypto import KeyRing, decrypt_field  # noqa: E402
from casemgmt.privacy.models import PersonField, PersonKey  # noqa: E402
from casemgmt.privacy.schemas import PersonRecordOut  # noqa: E402
from casemgmt.privacy.service import PLAIN_FIELDS, Privacy, create_person, read_person  # noqa: E402
from bench.bench_common import Children, _get, _machine_cpu  # noqa: E402

ADMIN_URL = os.environ.get(
    "CASEMGMT_BENCH_ADMIN_URL",
    os.environ.get("CASEMGMT_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
POLICY_DIR = ROOT / "policies"
CLERK_ORG = "ennetal_abh"  # Ausländerbehörde of the Kreis: statutory basis for 4 categories
MANAGER_ORGS = (("cm.ennetal", "ennetal_ki"), ("cm.caritas", "ennetal_caritas"))  # as the demo
TARGET_RATIO = 1.3
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

session_cm = contextlib.contextmanager(session_scope)  # exactly what a request gets


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def statement_kind(sql: str) -> str:
    """A short label: verb and tables, e.g. ``SELECT audit_head FOR UPDATE``; the audit append's
    CTE statement shows as ``WITH INSERT audit_events, UPDATE audit_head``."""
    flat = " ".join(sql.split())
    verb = flat.split(" ", 1)[0].upper()
    if verb == "WITH":
        writes = re.findall(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", flat, re.I)
        return "WITH " + ", ".join(f"{v.split()[0].upper()} {t}" for v, t in writes)
    if verb == "SELECT":
        tables = re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", flat, re.I)
        label = "SELECT " + "+".join(dict.fromkeys(tables))
        return label + (" FOR UPDATE" if re.search(r"\bFOR UPDATE\b", flat, re.I) else "")
    m = re.match(r"(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", flat, re.I)
    return f"{verb} {m.group(1)}" if m else verb


# --------------------------------------------------------------------------------------------
# Throw-away database


def create_database() -> tuple[str, str]:
    name = f"casemgmt_bench_privacy_{uuid.uuid4().hex[:10]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return name, make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()




def _busy_cores(before: list[int] | None, after: list[int] | None) -> float | None:
    if not before or not after:
        return None
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d) or 1
    return (1 - (d[3] + d[4]) / total) * (os.cpu_count() or 1)


class OtherLoad:
    """CPU used by processes that are not this benchmark's, per phase of the run: a thread reads
    /proc once a second. This process and its descendants (workers, verify processes, the CLI)
    and the PostgreSQL backends of the benchmark database are ours; the server's background
    processes (WAL writer, checkpointer, ...) count as neither; everything else (another test
    run or benchmark, its backends) is "other"."""

    def __init__(self, db_name: str, interval: float = 1.0) -> None:
        self.db = db_name
        self.me = os.getpid()
        self.interval = interval
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.ticks = 0  # other processes' CPU ticks so far
        self.last: dict[int, int] | None = None
        self.kind: dict[int, str] = {}
        self.marks: list[tuple[str, float, int, int]] = []  # label, time, other ticks, steal ticks
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-other-load", daemon=True)

    def _classify(self, pid: int, parents: dict[int, int]) -> str:
        seen = 0
        p = pid
        while p > 1 and seen < 64:
            if p == self.me:
                return "ours"
            p = parents.get(p, 0)
            seen += 1
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return "gone"
        if cmd.startswith("postgres: ") or "/bin/postgres" in cmd:
            if self.db in cmd:
                return "ours"
            is_backend = "(" in cmd or "[local]" in cmd
            return "other" if is_backend else "server"
        return "other"

    def _scan(self) -> None:
        procs: dict[int, tuple[int, int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                st = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            rest = st[st.rindex(")") + 2:].split()
            procs[int(d)] = (int(rest[1]), int(rest[11]) + int(rest[12]))  # ppid, utime + stime
        parents = {pid: pp for pid, (pp, _) in procs.items()}
        now = {pid: t for pid, (_, t) in procs.items()}
        if self.last is not None:
            for pid, t in now.items():
                delta = t - self.last.get(pid, 0)
                if delta <= 0:
                    continue
                kind = self.kind.get(pid)
                if kind is None or (kind != "ours" and pid not in self.last):
                    kind = self.kind[pid] = self._classify(pid, parents)
                if kind == "other":
                    self.ticks += delta
        self.last = now

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self._scan()

    def start(self) -> None:
        with contextlib.suppress(Exception):
            self._scan()
        self._thread.start()

    def mark(self, label: str) -> None:
        """The phase called ``label`` starts now (and the one before it ends)."""
        cpu = _machine_cpu()
        self.marks.append((label, time.perf_counter(), self.ticks, cpu[7] if cpu else 0))

    def stop(self) -> dict[str, dict[str, float]]:
        """Per phase: other processes' average CPUs busy, and CPUs stolen by the hypervisor."""
        self.mark("end")
        self._stop.set()
        self._thread.join(5)
        out = {}
        for (label, t0, k0, s0), (_, t1, k1, s1) in zip(self.marks, self.marks[1:]):
            if t1 > t0:
                out[label] = {"other": (k1 - k0) / self.hz / (t1 - t0),
                              "steal": (s1 - s0) / self.hz / (t1 - t0)}
        return out


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
        self._kind = statement_kind(statement)
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
    "person_in_scope": "record scope check (person_in_scope)",
    "resolve_purpose": "resolve purpose",
    "consent_grants": "load consents (consent_grants)",
    "agreement_grants": "load agreements (agreement_grants)",
    "data_holders": "load data holders (data_holders)",
    "decide": "policy decisions (decide)",
    "_data_key": "data key: select + unwrap (_data_key)",
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


def wire_round_trips(engine: Engine, fn: Callable[[], Any]) -> int:
    """Messages that make the client wait for the server (Query, Sync), from a libpq trace of
    ``fn`` on the pool's only connection: the pre-ping, BEGIN, each statement and COMMIT."""
    import psycopg

    raw = engine.raw_connection()
    pgconn = raw.driver_connection.pgconn
    raw.close()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.txt"
        with open(path, "w") as fh:
            pgconn.trace(fh.fileno())
            pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                fn()
            finally:
                pgconn.untrace()
        sent = [ln.split("\t")[2] for ln in path.read_text().splitlines()
                if ln.startswith("F\t") and ln.count("\t") >= 2]
    return sum(1 for m in sent if m in ("Query", "Sync"))


# --------------------------------------------------------------------------------------------
# Seeding


def seed_persons(engine: Engine, factory: sessionmaker[Session], privacy: Privacy, catalog: Any,
                 world: Any, n: int, now: datetime) -> tuple[list[tuple[uuid.UUID, int]], dict[str, Any]]:
    """Persons as the demo registers them (names, residence data, consents of every kind),
    through create_person, and one chain each through start_chain. Also counts what one
    create_person costs: statements, audit appends and how long the audit head stays locked."""
    rng = random.Random(2017)
    with session_cm(factory) as session:
        _seed_agreements(session, privacy, world, now)
        managers = [actor_of(session.get(Organisation, world.organisations[key]), user,
                             frozenset({"case_manager"})) for user, key in MANAGER_ORGS]
    towns = list(world.town_population)
    weights = [world.town_population[t] for t in towns]
    kinds = list(CHAIN_MIX)
    shares = [CHAIN_MIX[k][0] for k in kinds]

    stats = {"statements": 0, "locks": 0, "tx_ms": 0.0, "held_ms": 0.0, "n": 0}
    lock_at: list[float] = []

    def after(conn, cursor, statement, parameters, context, executemany):
        stats["statements"] += 1
        if "FOR UPDATE" in statement and "audit_head" in statement:
            stats["locks"] += 1
            if not lock_at:
                lock_at.append(time.perf_counter())

    persons: list[tuple[uuid.UUID, int]] = []
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
        with session_cm(factory) as session:
            out = create_person(session, privacy, manager, body, started)
        if i < measured:
            t1 = time.perf_counter()
            event.remove(engine, "after_cursor_execute", after)
            stats["tx_ms"] += (t1 - t0) * 1000
            stats["held_ms"] += (t1 - lock_at[0]) * 1000 if lock_at else 0.0
            stats["n"] += 1
        with session_cm(factory) as session:
            start_chain(session, catalog, manager, out.id, template_key,
                        started + timedelta(minutes=10))
        persons.append((out.id, manager.organisation_id))
        if (i + 1) % 250 == 0:
            log(f"  ... {i + 1:,} persons ({(i + 1) / (time.perf_counter() - t_start):,.0f}/s)")
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
        with session_cm(self.factory) as session:
            if phases is not None:
                session.commit = phases.wrap("commit", session.commit)  # this session only
            return read_person(session, self.privacy, actor, pid, None, datetime.now(UTC))

    def plain(self, actor: Actor, pid: uuid.UUID, wanted: Sequence[str],
              phases: PhaseTimer | None = None) -> PersonRecordOut:
        purpose = self.privacy.policy.default_purpose[actor.organisation_kind]
        with session_cm(self.factory) as session:
            return plain_read(session, self.privacy.keys, pid, wanted, purpose, phases)

    def no_audit(self, actor: Actor, pid: uuid.UUID) -> PersonRecordOut:
        with audit_disabled(), session_cm(self.factory) as session:
            return read_person(session, self.privacy, actor, pid, None, datetime.now(UTC))

    def audited_async(self, actor: Actor, pid: uuid.UUID) -> PersonRecordOut:
        with session_cm(self.factory_async) as session:
            return read_person(session, self.privacy, actor, pid, None, datetime.now(UTC))


def measure_reads(url: str, privacy: Privacy, persons: list[tuple[uuid.UUID, int]],
                  actors: dict[str, Callable[[int], Actor]], reads: int,
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
                for pid, cm_org in persons:
                    rec = reader.audited(actor_for(cm_org), pid)
                    wanted[pid] = list(rec.fields)
                    redacted.append(len(rec.redacted))
            for pid, cm_org in persons[:50]:
                reader.plain(actor_for(cm_org), pid, wanted[pid])
                reader.no_audit(actor_for(cm_org), pid)
                reader.audited_async(actor_for(cm_org), pid)
            log(f"  {role}: warm-up ({len(persons)} audited reads, {time.perf_counter() - t0:.1f} s); "
                f"{statistics.mean(len(w) for w in wanted.values()):.1f} fields shown, "
                f"{statistics.mean(redacted):.1f} redacted per read")

            lat: dict[str, list[float]] = {v: [] for v in VARIANTS}
            calls: dict[str, Callable[[Actor, uuid.UUID], Any]] = {
                "audited": reader.audited,
                "plain": lambda a, p: reader.plain(a, p, wanted[p]),
                "policy, no audit": reader.no_audit,
                "audited, sync_commit=off": reader.audited_async,
            }
            order = list(VARIANTS)
            t0 = time.perf_counter()
            for i in range(reads):
                pid, cm_org = persons[rng.randrange(len(persons))]
                actor = actor_for(cm_org)
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
                res["variants"][v] = {"p50_ms": percentile(xs, 50) * 1000,
                                      "p95_ms": percentile(xs, 95) * 1000,
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
                for pid, cm_org in sample:
                    for v in rng.sample(["audited", "plain"], 2):
                        phases.use(v)
                        s = time.perf_counter()
                        if v == "audited":
                            reader.audited(actor_for(cm_org), pid, phases)
                        else:
                            reader.plain(actor_for(cm_org), pid, wanted[pid], phases)
                        walls[v] += time.perf_counter() - s
            breakdown: dict[str, Any] = {}
            for v in ("audited", "plain"):
                rec, wall = phases.recs[v], walls[v]
                pid, cm_org = sample[0]
                fn = ((lambda: reader.audited(actor_for(cm_org), pid)) if v == "audited"
                      else (lambda: reader.plain(actor_for(cm_org), pid, wanted[pid])))
                breakdown[v] = {
                    "reads": k, "wall_ms": wall / k * 1000,
                    "statements": rec.statements / k, "commits": rec.commits / k,
                    "pings": rec.pings / k, "wire_round_trips": wire_round_trips(engine, fn),
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
            log(f"  {role}: audited p50 {a['p50_ms']:.2f} ms vs plain {p['p50_ms']:.2f} ms "
                f"({a['p50_ms'] / p['p50_ms']:.2f}x); statements {breakdown['audited']['statements']:.1f}"
                f"+COMMIT vs {breakdown['plain']['statements']:.1f}+COMMIT")
        out["scope"] = explain_scope(engine, persons, actors)
        return out
    finally:
        engine.dispose()
        engine_async.dispose()


def explain_scope(engine: Engine, persons: list[tuple[uuid.UUID, int]],
                  actors: dict[str, Callable[[int], Actor]]) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the record-scope query (service.scope_clause, a correlated EXISTS on
    the person), and its time as a round trip through SQLAlchemy."""
    out: dict[str, Any] = {}
    rng = random.Random(5)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
        for role, actor_for in actors.items():
            pid, cm_org = persons[0]
            stmt = select(Person.id).where(Person.id == pid, svc.scope_clause(actor_for(cm_org)))
            sql = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
            sql = sql.replace("%%", "%")  # pyformat escaping; sent without parameters below
            with conn.connection.driver_connection.cursor() as cur:  # params None: no placeholders
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                plan = [r[0] for r in cur.fetchall()]
            sample = [persons[rng.randrange(len(persons))] for _ in range(300)]
            for pid2, cm2 in sample[:20]:
                conn.execute(select(Person.id).where(Person.id == pid2, svc.scope_clause(actor_for(cm2)))).all()
            t0 = time.perf_counter()
            found = 0
            for pid2, cm2 in sample:
                found += len(conn.execute(
                    select(Person.id).where(Person.id == pid2, svc.scope_clause(actor_for(cm2)))).all())
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
        with session_cm(factory) as session:
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
        with session_cm(factory) as session:
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
            log(f"  ... {done:,} audit rows")
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
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    m2 = re.search(r"(\d+) rows verified in ([\d.]+) s", proc.stdout)
    res["cli"] = {"exit": proc.returncode, "wall_s": wall,
                  "rows": int(m2.group(1)) if m2 else None,
                  "reported_s": float(m2.group(2)) if m2 else None,
                  "output": (proc.stdout + proc.stderr).strip()[-500:]}
    return res


# --------------------------------------------------------------------------------------------
# 3. Concurrent appends (spawned processes)


NOLOCK_TABLE = "bench_audit_nolock"
_RUNS = iter(range(1, 1_000_000))


def append_worker(cfg: dict[str, Any], index: int, mode: str, entries: list[dict[str, Any]],
                  ready: Any, go: Any, results: Any) -> None:
    """Stage the entries of one read and commit, per transaction, for cfg['seconds'] (mode
    'chain': the before_commit hook appends them under their streams' head locks, as for a
    service), or build the same rows as audit._append_rows (build_rows, from this worker's own
    seq range per stream) and insert them with one statement into an unlocked copy of the table,
    reading and moving no head (mode 'nolock')."""
    try:
        from sqlalchemy import MetaData

        engine = make_engine(cfg["url"], pool_size=1, max_overflow=0)
        key = base64.b64decode(cfg["audit_key"])
        factory = make_sessionmaker(engine, audit_key=key)
        batch = [AuditEntry(**{**e, "person_id": uuid.UUID(e["person_id"]) if e["person_id"] else None,
                               "fields": tuple(e["fields"])}) for e in entries]
        nolock = Table(NOLOCK_TABLE, MetaData(), autoload_with=engine)
        # The control's own numbering: ids and, per stream, a seq range unique per run and
        # worker (the copy keeps the unique index on stream, seq); no head is read or moved.
        base = (cfg["run"] * 100 + index) * 10**10
        next_id = [base]
        fake_heads = {s: (base, audit.GENESIS) for s in range(audit.STREAMS)}
        lock = {"t": 0.0, "wait": 0.0}

        def before(conn, cursor, statement, parameters, context, executemany):
            if "FOR UPDATE" in statement:
                lock["t"] = time.perf_counter()

        def after(conn, cursor, statement, parameters, context, executemany):
            if "FOR UPDATE" in statement:
                now_ = time.perf_counter()
                lock["wait"] += now_ - lock["t"]
                lock["t"] = now_  # from here the lock is held

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)

        def one() -> None:
            now = datetime.now(UTC)
            with session_cm(factory) as session:
                if mode == "chain":
                    audit.stage(session, batch, now)  # appended by the before_commit hook
                else:
                    # As _append_rows on PostgreSQL: one statement (multi-row VALUES).
                    rows, moves = audit.build_rows(key, [(e, now) for e in batch], fake_heads)
                    for m in moves:
                        fake_heads[m["s"]] = (m["last_seq"], m["last_hash"])
                    for row in rows:
                        next_id[0] += 1
                        row["id"] = next_id[0]
                    session.execute(insert(nolock).values(rows))
                session.commit()

        for _ in range(WARMUP_APPENDS):
            one()
        ready.put(os.getpid())
        go.wait()
        lock["wait"] = 0.0
        held = 0.0
        lat: list[float] = []
        t0 = time.perf_counter()
        deadline = t0 + cfg["seconds"]
        cpu0 = time.process_time()
        while time.perf_counter() < deadline:
            s = time.perf_counter()
            one()
            e = time.perf_counter()
            lat.append(e - s)
            if mode == "chain":
                held += e - lock["t"]
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        engine.dispose()
        results.put({"index": index, "n": len(lat), "elapsed": elapsed, "latencies": lat,
                     "lock_wait": lock["wait"], "held": held, "cpu": cpu,
                     "rows": len(lat) * len(batch)})
    except KeyboardInterrupt:
        pass
    except Exception:
        results.put({"index": index, "crash": traceback.format_exc()})
        ready.put(os.getpid())



def measure_appends(ctx: Any, children: Children, cfg: dict[str, Any], workers: int, mode: str,
                    entries: list[dict[str, Any]]) -> dict[str, Any]:
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    cfg = {**cfg, "run": next(_RUNS)}
    procs = [children.add(ctx.Process(target=append_worker,
                                      args=(cfg, i + 1, mode, entries, ready, go, results),
                                      name=f"bench-append-{mode}-{i}"))
             for i in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        _get(ready, 120, "append workers to warm up")
    cpu_before = _machine_cpu()
    go.set()
    outs = [_get(results, cfg["seconds"] + 120, "append worker results") for _ in procs]
    busy = _busy_cores(cpu_before, _machine_cpu())
    for p in procs:
        p.join(30)
    children.stop_all()
    crashed = [o["crash"] for o in outs if "crash" in o]
    if crashed:
        raise RuntimeError("an append worker crashed:\n" + crashed[0])
    n = sum(o["n"] for o in outs)
    lat = [x for o in outs for x in o["latencies"]]
    return {
        "workers": workers, "mode": mode, "appends": n,
        "appends_s": sum(o["n"] / o["elapsed"] for o in outs),
        "rows_s": sum(o["rows"] / o["elapsed"] for o in outs),
        "p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000,
        "lock_wait_ms": sum(o["lock_wait"] for o in outs) / max(n, 1) * 1000,
        "held_ms": sum(o["held"] for o in outs) / max(n, 1) * 1000,
        "cpu_ms": sum(o["cpu"] for o in outs) / max(n, 1) * 1000,
        "busy_cores": busy,
    }


# --------------------------------------------------------------------------------------------
# Report


def report(r: dict[str, Any]) -> None:
    line = "=" * 100
    print()
    print(line)
    print(f"casemgmt privacy benchmark - {os.cpu_count()} CPUs, {r.get('server_version')}, "
          f"{r['persons']} persons, fsync={r.get('fsync')}, synchronous_commit="
          f"{r.get('synchronous_commit')}")
    print(f"code measured: the casemgmt package under {r.get('code')}")
    other = r.get("other_load") or {}
    if other:
        noisy = [k for k, x in other.items() if x["other"] > 0.25 or x["steal"] > 0.25]
        print("CPUs used per phase by other processes (not this benchmark, not its database's backends) "
              "/ stolen by the hypervisor: "
              + ", ".join(f"{k} {x['other']:.2f}/{x['steal']:.2f}" for k, x in other.items())
              + (f"  <-- WARNING: noisy ({', '.join(noisy)})" if noisy else "  (quiet)"))
    if r.get("busy_before") is not None:
        print(f"machine load before start: {r['busy_before']:.2f} CPUs busy; after the end: "
              f"{r.get('busy_after') or 0:.2f} CPUs busy (other processes; > 0.25 means noisy figures)")
    s = r["seed"]
    print(f"seeding: {r['persons']} persons + chains in {s['seconds']:.1f} s; one create_person = "
          f"{s['create_person_ms']:.1f} ms, {s['create_person_statements']:.1f} statements + COMMIT, "
          f"audit head locked {s['create_person_head_locks']:.1f}x and held for "
          f"{s['create_person_head_held_ms']:.1f} ms of it")
    print(line)

    print("1. Reading one person (one connection, sequential, a fresh session per read)")
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
                print("      rest = disclose's inline SELECT person_fields, read_person/disclose "
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
        print(f"    (jit_above_cost is {r.get('jit_above_cost')})")
        first = next(iter(scope))
        print(f"    EXPLAIN ANALYZE as {first}:")
        for ln in scope[first]["plan"]:
            print(f"      {ln}")
    print(f"\n  target: audited read / plain read (p50) <= {TARGET_RATIO}x: " + "; ".join(verdicts))

    print(line)
    v = r["verify"]
    a = r["bulk_append"]
    print(f"2. Audit verification ({v['total_rows']:,} rows in the trail, audit_events "
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

    print(line)
    print(f"3. Audit appends, one read's two entries per transaction, worker processes "
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
    print(line)


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--persons", type=int, default=500, help="persons seeded (default 500)")
    p.add_argument("--reads", type=int, default=500,
                   help="timed reads per variant and reader (default 500)")
    p.add_argument("--audit-rows", type=int, default=200_000,
                   help="audit rows appended before timing verify (default 200000)")
    p.add_argument("--append-seconds", type=float, default=5.0,
                   help="length of each concurrent-append run (default 5)")
    p.add_argument("--workers", default="1,4", help="worker process counts for appends (default 1,4)")
    p.add_argument("--verify-procs", type=int, default=max(2, os.cpu_count() or 1),
                   help="workers for audit.verify_parallel (default: CPUs, at least 2; it uses "
                        f"fewer when the trail has under {VERIFY_MIN_ROWS_PER_WORKER:,} rows each)")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of verify()")
    p.add_argument("--json", type=Path, help="also write all figures to this JSON file")
    args = p.parse_args(argv)
    if args.persons < 1 or args.reads < 1 or args.audit_rows < 0 or args.append_seconds <= 0 \
            or args.verify_procs < 1:
        p.error("--persons, --reads, --append-seconds and --verify-procs must be positive, "
                "--audit-rows not negative")
    try:
        args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        p.error("--workers takes comma-separated integers")
    return args


def run(args: argparse.Namespace, url: str, children: Children, load: OtherLoad) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    results: dict[str, Any] = {"persons": args.persons,
                               "code": str(Path(audit.__file__).resolve().parents[2])}
    engine = make_engine(url)
    try:
        t0 = time.perf_counter()
        upgrade(engine)
        master = os.urandom(32)  # this run's master key
        keys = KeyRing.from_master(master)
        policies = load_policies(POLICY_DIR)
        privacy = Privacy(policies.data, keys)
        factory = make_sessionmaker(engine, audit_key=keys.audit_key)
        now = datetime.now(UTC)
        with factory() as session:
            world = build_world(session)
            catalog = register_templates(session, policies.templates, now - timedelta(days=600))
        with engine.connect() as conn:
            results["server_version"] = "PostgreSQL " + conn.execute(
                text("SHOW server_version")).scalar_one().split()[0]
            results["fsync"] = conn.execute(text("SHOW fsync")).scalar_one()
            results["synchronous_commit"] = conn.execute(text("SHOW synchronous_commit")).scalar_one()
            results["jit_above_cost"] = conn.execute(text("SHOW jit_above_cost")).scalar_one()
        log(f"database migrated, world built, {len(catalog.current)} templates "
            f"({time.perf_counter() - t0:.1f} s)")

        load.mark("seeding")
        log(f"seeding {args.persons:,} persons through create_person + start_chain")
        persons, results["seed"] = seed_persons(engine, factory, privacy, catalog, world,
                                                args.persons, now)
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
        log(f"seeded in {results['seed']['seconds']:.1f} s "
            f"({results['seed']['create_person_ms']:.1f} ms per create_person)")

        with factory() as session:
            clerk = actor_of(session.get(Organisation, world.organisations[CLERK_ORG]), "abh.ennetal")
            managers = {o.id: actor_of(o, user, frozenset({"case_manager"}))
                        for user, key in MANAGER_ORGS
                        for o in [session.get(Organisation, world.organisations[key])]}
        actors: dict[str, Callable[[int], Actor]] = {
            "ABH clerk": lambda cm_org: clerk,
            "case manager": lambda cm_org: managers[cm_org],
        }

        load.mark("1. reads")
        log(f"1. reads: {args.reads} per variant and reader, variants {', '.join(VARIANTS)}")
        captured: list[AuditEntry] = []
        results["reads"] = measure_reads(url, privacy, persons, actors, args.reads, captured)

        # Entries as real reads wrote them, for the append and verify measurements.
        pool = captured or [AuditEntry(agent_user="bench", agent_organisation_id=None, action="R",
                                       subtype="person.read", entity_type="person")]
        one_read = [e for e in captured[:2]] or pool[:1]
        entries_cfg = [{**e.__dict__, "person_id": str(e.person_id) if e.person_id else None,
                        "fields": list(e.fields), "legal_bases": dict(e.legal_bases)}
                       for e in one_read]
        with engine.begin() as conn:
            conn.execute(text(f"CREATE TABLE {NOLOCK_TABLE} "
                              "(LIKE audit_events INCLUDING DEFAULTS INCLUDING INDEXES)"))
        cfg = {"url": url, "seconds": args.append_seconds,
               "audit_key": base64.b64encode(keys.audit_key).decode()}
        results["appends"] = []
        load.mark("3. appends")
        for mode in ("chain", "nolock"):
            for w in args.workers:
                what = "audit chain" if mode == "chain" else "control without head lock"
                log(f"3. appends: {w} worker process(es), {what}, {args.append_seconds:g} s")
                x = measure_appends(ctx, children, cfg, w, mode, entries_cfg)
                results["appends"].append(x)
                log(f"   {x['appends_s']:,.0f} appends/s, p50 {x['p50_ms']:.2f} ms, "
                    f"lock wait {x['lock_wait_ms']:.2f} ms, held {x['held_ms']:.2f} ms per append")
        with engine.connect() as conn:
            r = verify(conn, keys.audit_key)
        results["chain_ok_after_concurrency"] = f"{r.ok} ({r.rows:,} rows)" + (
            "" if r.ok else f", first bad row {r.first_bad_id}: {r.problem}")

        load.mark("2. growing the trail")
        log(f"2. growing the audit trail by {args.audit_rows:,} rows (the first "
            f"{min(args.audit_rows, APPEND_MEASURED_ROWS):,} through audit.append, {APPEND_BATCH} per call)")
        results["bulk_append"] = bulk_append(factory, keys.audit_key, pool, args.audit_rows)
        with engine.connect() as conn:
            conn.execute(text("ANALYZE audit_events"))
            conn.commit()
        load.mark("2. verify")
        log(f"2. verifying the audit trail: verify() and verify_parallel(workers={args.verify_procs}), "
            "alternated, twice each")
        results["verify"] = v = measure_verify(engine, url, master, keys.audit_key,
                                               args.verify_procs, args.profile)
        log(f"   verify: {v['single']['rows_s']:,.0f} rows/s; verify_parallel "
            f"({v['parallel']['procs']} processes): {v['parallel']['rows_s']:,.0f} rows/s")
        return results
    finally:
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    before = _machine_cpu()
    time.sleep(1.0)
    busy = _busy_cores(before, _machine_cpu())
    if busy is not None:
        log(f"machine load before starting: {busy:.2f} of {os.cpu_count()} CPUs busy"
            + ("  <-- WARNING: other processes are using the CPUs; figures will be noisy"
               if busy > 0.25 else ""))
    children = Children()
    t_start = time.perf_counter()
    name, url = create_database()
    log(f"created database {name}")
    load = OtherLoad(name)
    load.start()
    load.mark("setup")
    status = 0
    results: dict[str, Any] = {}
    try:
        results = run(args, url, children, load)
        results["busy_before"] = busy
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    except Exception:
        traceback.print_exc()
        status = 1
    finally:
        other = load.stop()
        if results:
            results["other_load"] = other
        children.stop_all()
        try:
            drop_database(name)
            log(f"dropped database {name}")
        except Exception as exc:  # reported, never hidden
            log(f"could not drop database {name}: {exc}")
            status = status or 1
    if results and status == 0:
        before = _machine_cpu()
        time.sleep(1.0)
        results["busy_after"] = _busy_cores(before, _machine_cpu())
        report(results)
        log(f"total run time {time.perf_counter() - t_start:.0f} s")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
