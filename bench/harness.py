"""The benchmarks' shared harness, so that a new benchmark is a page, not a copy.

A benchmark script in ``bench/`` writes a ``run(bench, args)`` that measures and puts its figures
into ``bench.results``, a ``report(results, args)`` that prints them, and ends with
``sys.exit(harness.main("name", parse_args, run, report))``. The harness gives it:

* throw-away databases on the server of ``CASEMGMT_BENCH_ADMIN_URL`` (default: the tests'
  ``CASEMGMT_TEST_ADMIN_URL``, else the local PostgreSQL), migrated as their owner, and one
  restricted login role per run with exactly the grants of ``casemgmt db grant``: the service
  runs as that role, as in production. What needs the owner (bulk loads with DDL, replica mode,
  VACUUM) uses ``Database.owner_url`` and says so. Databases and role are dropped at the end,
  also after an error, Ctrl-C or SIGTERM;
* the application as the API process holds it (``App``: engine, sessions that can write the
  audit trail, privacy, catalogue, policies, organisations by key);
* pools of worker processes that warm up, start together and run for a fixed time
  (``PoolWorker``, ``run_pool``), with latencies, errors, CPU per operation of the workers and
  of their PostgreSQL backends, and what the backends waited for;
* the load of the machine: before the run, and per phase the CPUs other processes used;
* printing: a banner, headings, aligned figures, ratios and PASS/FAIL lines;
* ``--smoke`` (tiny sizes, about a second per measurement, for CI) and ``--json``.

Imported as ``bench.harness``: a script takes its own directory off ``sys.path`` first
(``bench/transitions.py`` would shadow the ``transitions`` library) and puts the repository
root on it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import multiprocessing as mp
import os
import re
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

import casemgmt.models  # noqa: F401  (every table in Base.metadata)
from casemgmt.chains.catalog import TemplateCatalog, register_templates
from casemgmt.chains.engine import Actor
from casemgmt.database import make_engine, make_sessionmaker, session_scope
from casemgmt.dbroles import grant_service_role
from casemgmt.demo.world import TOWNS, World, build_world
from casemgmt.jurisdictions.service import nearest_serving_organisations
from casemgmt.migrations import upgrade
from casemgmt.policy.loader import Policies, load_policies
from casemgmt.privacy.crypto import KeyRing
from casemgmt.privacy.service import Privacy

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "policies"
ADMIN_URL = os.environ.get(
    "CASEMGMT_BENCH_ADMIN_URL",
    os.environ.get("CASEMGMT_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
CPUS = os.cpu_count() or 1
NOISY_CPUS = 0.25  # other processes using more than this make figures low and noisy
CASE_MANAGER_KINDS = ("kommunales_integrationszentrum", "wohlfahrtsverband")

session_cm = contextlib.contextmanager(session_scope)  # exactly what a request gets


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else float("nan")


# --------------------------------------------------------------------------------------------
# The machine: CPU counters, other processes, PostgreSQL backends


def machine_cpu() -> list[int] | None:
    """The machine's CPU counters from /proc/stat (user .. steal), or None off Linux."""
    try:
        line = Path("/proc/stat").read_text().splitlines()[0]
    except OSError:
        return None
    return [int(x) for x in line.split()[1:9]]


def busy_cores(before: list[int] | None, after: list[int] | None) -> float | None:
    """CPUs busy between two readings of machine_cpu (0 .. CPUS)."""
    if not before or not after:
        return None
    d = [b - a for a, b in zip(before, after, strict=True)]
    return (1 - (d[3] + d[4]) / (sum(d) or 1)) * CPUS


def cpu_seconds_of(pid: int) -> float | None:
    """utime + stime of a local process (a PostgreSQL backend, a child), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_cpu(pids: set[int]) -> float | None:
    values = [cpu_seconds_of(p) for p in pids]
    return None if not values or None in values else sum(v for v in values if v is not None)


def is_local(url: str) -> bool:
    """The server runs on this machine, so its backends' CPU can be read from /proc."""
    return make_url(url).host in (None, "", "localhost", "127.0.0.1", "::1")


def vm_kb(name: str, pid: int | str = "self") -> int | None:
    """A line of /proc/<pid>/status in KiB (VmRSS, VmHWM); this process's by default."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def remember_backends(engine: Engine) -> set[int]:
    """The PostgreSQL backend pid of every connection the engine opens from now on."""
    pids: set[int] = set()

    @event.listens_for(engine, "connect")
    def _remember(dbapi_conn: Any, _record: Any) -> None:
        pids.add(dbapi_conn.info.backend_pid)

    return pids


class OtherLoad:
    """CPU used by processes that are not this benchmark's, per phase of the run: a thread reads
    /proc once a second. This process and its descendants, and the PostgreSQL backends of the
    benchmark's databases (their names start with ``db_prefix``) are ours; the server's
    background processes count as neither; everything else (another test run, its backends) is
    other."""

    def __init__(self, db_prefix: str, interval: float = 1.0) -> None:
        self.db_prefix = db_prefix
        self.me = os.getpid()
        self.interval = interval
        self.hz = os.sysconf("SC_CLK_TCK")
        self.ticks = 0
        self.backend_ticks = 0  # the benchmark's own backends (sampled: a short-lived one is missed)
        self.last: dict[int, int] | None = None
        self.kind: dict[int, str] = {}
        self.marks: list[tuple[str, float, int, int]] = []  # label, time, other ticks, steal
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-other-load", daemon=True)

    def _classify(self, pid: int, parents: dict[int, int]) -> str:
        p, seen = pid, 0
        while p > 1 and seen < 64:
            if p == self.me:
                return "ours"
            p, seen = parents.get(p, 0), seen + 1
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return "gone"
        if cmd.startswith("postgres: ") or "/bin/postgres" in cmd:
            if self.db_prefix in cmd:
                return "backend"
            return "other" if ("(" in cmd or "[local]" in cmd) else "server"
        return "other"

    def _scan(self) -> None:
        procs: dict[int, tuple[int, int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    st = Path(f"/proc/{d}/stat").read_text()
                except OSError:
                    continue
                rest = st[st.rindex(")") + 2:].split()
                procs[int(d)] = (int(rest[1]), int(rest[11]) + int(rest[12]))  # ppid, CPU ticks
        parents = {pid: pp for pid, (pp, _) in procs.items()}
        now = {pid: t for pid, (_, t) in procs.items()}
        if self.last is not None:
            for pid, t in now.items():
                delta = t - self.last.get(pid, 0)
                if delta <= 0:
                    continue
                kind = self.kind.get(pid)
                if kind is None or (kind not in ("ours", "backend") and pid not in self.last):
                    kind = self.kind[pid] = self._classify(pid, parents)
                if kind == "other":
                    self.ticks += delta
                elif kind == "backend":
                    self.backend_ticks += delta
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
        cpu = machine_cpu()
        self.marks.append((label, time.perf_counter(), self.ticks, cpu[7] if cpu else 0))

    def stop(self) -> dict[str, dict[str, float]]:
        """Per phase: CPUs other processes used on average, and CPUs stolen by the hypervisor."""
        self.mark("end")
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        out = {}
        for (label, t0, k0, s0), (_, t1, k1, s1) in zip(self.marks, self.marks[1:]):
            if t1 > t0 + 0.5:
                out[label] = {"other": (k1 - k0) / self.hz / (t1 - t0),
                              "steal": (s1 - s0) / self.hz / (t1 - t0)}
        return out


class WaitSampler:
    """Samples what the database's client backends are doing every 20 ms (state and wait event
    from pg_stat_activity): where a transaction's time goes under load."""

    SQL = text(
        "SELECT state, coalesce(wait_event_type || ':' || wait_event, 'on CPU') AS wait, "
        "left(query, 60) AS query FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND state <> 'idle'"
    )

    def __init__(self, url: str):
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
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
        return {"samples": self.samples, "busy_backends": total / max(self.samples, 1),
                "top": [(k, v / total) for k, v in self.seen.most_common(top)],
                "lock_waits_in": [k for k, _ in self.locks.most_common(3)]}


def code_under_test() -> str | None:
    """Commit and locally changed application files (read-only git commands), if in a clone;
    else ``BENCH_CODE_LABEL`` (e.g. for a ``git archive`` copy: say which commit)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "casemgmt"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("BENCH_CODE_LABEL")
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    if not changed:
        return head
    shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    return f"{head} + uncommitted changes in {shown}"


# --------------------------------------------------------------------------------------------
# Child processes


class Children:
    """Every process the benchmark started, so that they are stopped whatever happens."""

    def __init__(self) -> None:
        self.procs: list[mp.process.BaseProcess] = []

    def start(self, proc: mp.process.BaseProcess) -> mp.process.BaseProcess:
        self.procs.append(proc)
        proc.start()
        return proc

    def stop_all(self, timeout: float = 10.0) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        self.procs.clear()


def get(q: Any, timeout: float, what: str) -> Any:
    try:
        return q.get(timeout=timeout)
    except Exception:
        raise RuntimeError(f"timed out waiting for {what}") from None


# --------------------------------------------------------------------------------------------
# Throw-away databases and the service role


@dataclass(frozen=True)
class Database:
    """A benchmark database: ``owner_url`` for migrations and bulk loads (the role that created
    it), ``service_url`` for everything measured (the restricted service role)."""

    name: str
    owner_url: str
    service_url: str


def _admin() -> Engine:
    return create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)


class Databases:
    """The databases of one run, ``casemgmt_bench_<label>_<random>_<suffix>``, and its service
    role ``casemgmt_bench_<random>`` (LOGIN, a random password, the grants of ``casemgmt db
    grant`` in each database). ``drop_all`` removes them; ``keep`` leaves them for a later run."""

    def __init__(self, label: str):
        run_id = uuid.uuid4().hex[:10]
        self.prefix = f"casemgmt_bench_{label}_{run_id}"
        self.role = f"casemgmt_bench_{run_id}"
        self._password = secrets.token_hex(16)
        self._role_made = False
        self.created: list[str] = []
        self.adopted: list[str] = []
        self.keep = False

    def _ensure_role(self) -> None:
        if not self._role_made:
            admin = _admin()
            try:
                with admin.connect() as conn:
                    conn.execute(text(f"CREATE ROLE \"{self.role}\" LOGIN PASSWORD '{self._password}'"))
            finally:
                admin.dispose()
            self._role_made = True

    def _database(self, name: str) -> Database:
        owner = make_url(ADMIN_URL).set(database=name)
        service = owner.set(username=self.role, password=self._password)
        return Database(name, owner.render_as_string(hide_password=False),
                        service.render_as_string(hide_password=False))

    def create(self, suffix: str) -> Database:
        """A new empty database; migrate it with ``migrate``."""
        self._ensure_role()
        name = f"{self.prefix}_{suffix}"
        admin = _admin()
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            self.created.append(name)
        finally:
            admin.dispose()
        log(f"created database {name}")
        return self._database(name)

    def adopt(self, name: str) -> Database:
        """An existing database (filled by an earlier run): grants for this run's role only."""
        self._ensure_role()
        self.adopted.append(name)
        db = self._database(name)
        owner = make_engine(db.owner_url)
        try:
            grant_service_role(owner, self.role)
        finally:
            owner.dispose()
        return db

    def migrate(self, db: Database) -> None:
        """Alembic to the latest revision and the service role's grants, as the owner
        (``casemgmt migrate`` and ``casemgmt db grant``)."""
        owner = make_engine(db.owner_url)
        try:
            upgrade(owner)
            grant_service_role(owner, self.role)
        finally:
            owner.dispose()

    def grant(self, db: Database, table: str, privileges: str) -> None:
        """Extra privileges on a table the benchmark made itself (said where it is called)."""
        owner = create_engine(db.owner_url, poolclass=NullPool)
        try:
            with owner.begin() as conn:
                conn.execute(text(f'GRANT {privileges} ON TABLE "{table}" TO "{self.role}"'))
        finally:
            owner.dispose()

    def drop_all(self) -> list[str]:
        """Drop every database this run created and its role; the problems, if any."""
        problems = []
        if self.keep:
            log(f"kept databases {', '.join(self.created)} and role {self.role} (--keep-db)")
            return problems
        admin = _admin()
        try:
            for name in self.created:
                try:
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    log(f"dropped database {name}")
                except Exception as exc:  # reported, never hidden
                    problems.append(f"could not drop database {name}: {exc}")
            for name in self.adopted:
                try:
                    owner = create_engine(self._database(name).owner_url, poolclass=NullPool)
                    with owner.begin() as conn:
                        conn.execute(text(f'DROP OWNED BY "{self.role}"'))
                    owner.dispose()
                except Exception as exc:
                    problems.append(f"could not revoke role {self.role} in {name}: {exc}")
            if self._role_made:
                try:
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP ROLE IF EXISTS "{self.role}"'))
                except Exception as exc:
                    problems.append(f"could not drop role {self.role}: {exc}")
        finally:
            admin.dispose()
        return problems


# --------------------------------------------------------------------------------------------
# The application as the API process holds it


@dataclass(frozen=True)
class Org:
    id: int
    key: str
    kind: str
    jurisdiction_id: int
    path: str


def actor_for(org: Org, user: str | None = None, roles: Sequence[str] | None = None) -> Actor:
    """A user of the organisation: a case manager at a case-management kind, else a clerk."""
    if roles is None:
        roles = ("case_manager",) if org.kind in CASE_MANAGER_KINDS else ("clerk",)
    return Actor(user_id=user or f"bench.{org.key}", organisation_id=org.id, organisation_kind=org.kind,
                 jurisdiction_path=org.path, roles=frozenset(roles))


@dataclass
class App:
    """What the API process holds for one database, connected as the service role: engine
    (``make_engine``, pre-ping and all), sessions that write the audit trail, the privacy
    layer, the chain catalogue, the policies, and the synthetic Kreis's organisations."""

    url: str
    master: bytes
    engine: Engine
    factory: sessionmaker[Session]
    keys: KeyRing
    privacy: Privacy
    policies: Policies
    catalog: TemplateCatalog
    world: World
    orgs: dict[str, Org]
    backend_pids: set[int]

    @classmethod
    def open(cls, url: str, master: bytes, templates_at: datetime | None = None,
             **engine_kw: Any) -> App:
        """As at start-up: build the Kreis if it is missing (idempotent) and register the
        templates (``templates_at``: when versions not yet stored count as registered)."""
        engine = make_engine(url, **engine_kw)
        try:
            keys = KeyRing.from_master(master)
            policies = load_policies(POLICY_DIR)
            factory = make_sessionmaker(engine, audit_key=keys.audit_key)
            with factory() as session:
                world = build_world(session)
                catalog = register_templates(session, policies.templates, templates_at or datetime.now(UTC))
                session.commit()
            with engine.connect() as conn:
                orgs = {r.key: Org(r.id, r.key, r.kind, r.jurisdiction_id, r.path) for r in conn.execute(text(
                    "SELECT o.id, o.key, o.kind, o.jurisdiction_id, j.path FROM organisations o "
                    "JOIN jurisdictions j ON j.id = o.jurisdiction_id ORDER BY o.id"))}
            engine.dispose()  # the set-up's connections are gone; those from now on are recorded
            pids = remember_backends(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(url, master, engine, factory, keys, Privacy(policies.data, keys), policies, catalog,
                   world, orgs, pids)

    @classmethod
    def from_cfg(cls, cfg: dict[str, Any], **engine_kw: Any) -> App:
        """In a worker process, from ``cfg()``."""
        return cls.open(cfg["url"], base64.b64decode(cfg["master_key"]), **engine_kw)

    def cfg(self, **extra: Any) -> dict[str, Any]:
        """What a worker process needs to open the same application (picklable)."""
        return {"url": self.url, "master_key": base64.b64encode(self.master).decode(), **extra}

    @property
    def by_id(self) -> dict[int, Org]:
        return {o.id: o for o in self.orgs.values()}

    def actor(self, key: str, user: str | None = None, roles: Sequence[str] | None = None) -> Actor:
        return actor_for(self.orgs[key], user, roles)

    def towns(self) -> list[tuple[int, int]]:
        """(jurisdiction id, inhabitants) of the Kreis's towns."""
        return [(self.world.jurisdictions[key], people) for key, _, people in TOWNS]

    def nearest(self, kinds: set[str], jurisdiction_path: str) -> dict[str, int]:
        """The organisation of each kind the service assigns for the place (its own rule)."""
        with self.factory() as session:
            return nearest_serving_organisations(session, kinds, jurisdiction_path)

    def dispose(self) -> None:
        self.engine.dispose()


# --------------------------------------------------------------------------------------------
# The API as deployed: `casemgmt serve --workers N`


def process_tree(root: int) -> set[int]:
    """``root`` and all its descendants (uvicorn's master and workers), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(parents.get(pid, []))
    return tree


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# For `Server(env=...)`: the write and expensive-request limits switched off (0). Every simulated
# client comes from 127.0.0.1, and a simulated user acts far faster than a person (one alone does
# about 15 step actions a second), so the limiter would be what is measured: one user for 45 s
# against `--workers 1` got 150 refusals (429) of 674 step actions (see README: Request limits).
NO_RATE_LIMITS = {f"CASEMGMT_RATE_LIMIT_{kind}_PER_{who}": "0"
                  for kind in ("WRITES", "EXPENSIVE") for who in ("SUBJECT", "ADDRESS")}


class Server:
    """``casemgmt serve --workers N`` on a free loopback port, in its own process group, as the
    service role (``url``), with development tokens from its own key directory. The package is
    the one this script imports (its repository is the working directory), so a ``git archive``
    copy measures its own code. ``env`` adds settings (rate limits, say); use as a context
    manager: the server is stopped (SIGTERM, then the group killed) on leaving."""

    def __init__(self, url: str, master: bytes, workers: int = 2, env: dict[str, str] | None = None,
                 ready_timeout: float = 90.0):
        import casemgmt

        self.root = Path(casemgmt.__file__).resolve().parent.parent
        self._tmp = tempfile.TemporaryDirectory(prefix="casemgmt-bench-serve-")
        self.key_dir = Path(self._tmp.name) / "keys"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self._env = {**os.environ, "CASEMGMT_DATABASE_URL": url,
                     "CASEMGMT_MASTER_KEY": base64.b64encode(master).decode(),
                     "CASEMGMT_DEV_KEY_DIR": str(self.key_dir), "CASEMGMT_LOG_LEVEL": "WARNING",
                     "PYTHONPATH": str(self.root), **(env or {})}
        self._env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self._ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        import httpx

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "casemgmt.cli", "serve", "--workers", str(self.workers), "--host", "127.0.0.1",
             "--port", str(self.port)],
            env=self._env, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API server exited with code {self.proc.returncode}: "
                                   f"{self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ''}")
            try:
                if httpx.get(self.base + "/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise RuntimeError(f"the API server did not come up within {self._ready_timeout:.0f} s")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # uvicorn's master stops its workers gracefully
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own process group, started above
                self.proc.wait(10)
        self._tmp.cleanup()

    def pids(self) -> set[int]:
        """The master and its workers (for their CPU time)."""
        return process_tree(self.proc.pid) if self.proc is not None else set()

    def token(self, org: str, roles: str | Sequence[str], user: str) -> dict[str, str]:
        """Headers with a development token the server accepts (one role or several)."""
        from casemgmt.auth.tokens import mint_dev_token
        from casemgmt.config import Settings

        roles = [roles] if isinstance(roles, str) else list(roles)
        return {"Authorization": f"Bearer {mint_dev_token(Settings(dev_key_dir=self.key_dir), user, org, roles)}"}


# --------------------------------------------------------------------------------------------
# Worker pools: processes that warm up, start together and run for a fixed time


class PoolWorker:
    """One worker process of a timed pool, built in the child from ``(cfg, share)``. ``one``
    does one operation: True when done (timed), False when there is nothing left to do; an
    exception is counted by its type and the run goes on. ``backend_pids`` are the worker's
    PostgreSQL backends (their CPU is read when the server is local); ``extra`` adds figures."""

    backend_pids: set[int] = set()

    def __init__(self, cfg: dict[str, Any], share: Any) -> None:
        self.cfg = cfg

    def warm_up(self) -> None:
        """Before the common start: a few operations, so that the connection exists (its
        backend's CPU is read from the start) and the statements are prepared."""
        for _ in range(5):
            self.one()

    def one(self) -> bool:
        raise NotImplementedError

    def extra(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def _pool_main(cls: type[PoolWorker], cfg: dict[str, Any], share: Any, ready: Any, go: Any,
               results: Any) -> None:
    try:
        worker = cls(cfg, share)
        worker.warm_up()
        local = is_local(cfg["url"])
        ready.put(os.getpid())
        go.wait()
        cpu0, srv0 = time.process_time(), backend_cpu(worker.backend_pids) if local else None
        t0 = time.perf_counter()
        deadline = t0 + cfg["seconds"]
        lat: list[float] = []
        errors: Counter[str] = Counter()
        samples: list[str] = []
        exhausted = False
        while time.perf_counter() < deadline:
            s = time.perf_counter()
            try:
                if not worker.one():
                    exhausted = True
                    break
            except Exception as exc:  # counted and shown, never hidden
                errors[type(exc).__name__] += 1
                if len(samples) < 3:
                    samples.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            lat.append(time.perf_counter() - s)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        srv1 = backend_cpu(worker.backend_pids) if local else None
        extra = worker.extra()
        worker.close()
        results.put({"pid": os.getpid(), "ok": len(lat), "elapsed": elapsed, "latencies": lat,
                     "exhausted": exhausted, "cpu": cpu, "errors": dict(errors), "error_samples": samples,
                     "server_cpu": srv1 - srv0 if srv0 is not None and srv1 is not None else None,
                     "extra": extra})
    except KeyboardInterrupt:
        pass
    except Exception:
        results.put({"pid": os.getpid(), "crash": traceback.format_exc()})
        ready.put(os.getpid())


def run_pool(bench: Bench, cls: type[PoolWorker], cfg: dict[str, Any], shares: Sequence[Any],
             seconds: float, what: str, sample_waits: bool = True) -> dict[str, Any]:
    """``len(shares)`` spawned processes, each ``cls(cfg, share)``, started together and run for
    ``seconds``. Per operation: the rate (sum over workers of done / elapsed), p50 and p95
    latency, CPU of the workers and of their PostgreSQL backends; the CPUs the machine was busy
    and how many of them other processes used; what the backends waited for."""
    cfg = {**cfg, "seconds": seconds}
    ready, results, go = bench.ctx.Queue(), bench.ctx.Queue(), bench.ctx.Event()
    procs = [bench.children.start(bench.ctx.Process(
        target=_pool_main, args=(cls, cfg, share, ready, go, results), name=f"bench-{what}-{i}", daemon=True))
        for i, share in enumerate(shares)]
    for _ in procs:
        get(ready, 300, f"the {what} workers to warm up")
    cpu0 = machine_cpu()
    t_go = time.perf_counter()
    waits = WaitSampler(cfg["url"]) if sample_waits else contextlib.nullcontext()
    with waits:
        go.set()
        outs = [get(results, seconds + 300, f"the {what} workers") for _ in procs]
    busy = busy_cores(cpu0, machine_cpu())
    window = time.perf_counter() - t_go
    _finish(bench, procs, outs, what)
    ok = sum(o["ok"] for o in outs)
    lat = [x for o in outs for x in o["latencies"]]
    errors: Counter[str] = Counter()
    for o in outs:
        errors.update(o["errors"])
    server = [o["server_cpu"] for o in outs]
    others = None
    if busy is not None and None not in server:
        ours = sum(o["cpu"] + o["server_cpu"] for o in outs) / window
        others = max(0.0, busy - ours)
    return {
        "workers": len(shares), "ok": ok, "elapsed": max(o["elapsed"] for o in outs),
        "per_s": sum(o["ok"] / o["elapsed"] for o in outs if o["elapsed"] > 0),
        "per_worker": [round(o["ok"] / o["elapsed"], 1) if o["elapsed"] else 0 for o in outs],
        "p50_ms": percentile(lat, 50) * 1000, "p95_ms": percentile(lat, 95) * 1000,
        "errors": dict(errors), "error_samples": [s for o in outs for s in o["error_samples"]][:5],
        "exhausted": any(o["exhausted"] for o in outs),
        "cpu_ms": sum(o["cpu"] for o in outs) / max(ok, 1) * 1000,
        "server_cpu_ms": sum(server) / max(ok, 1) * 1000 if None not in server else None,
        "busy_cores": busy, "others_cores": others,
        "waits": waits.summary() if sample_waits else None,
        "extras": [o["extra"] for o in outs],
    }


def _map_main(fn: Callable[..., Any], args: tuple[Any, ...], results: Any) -> None:
    try:
        results.put(fn(*args))
    except KeyboardInterrupt:
        pass
    except Exception:
        results.put({"crash": traceback.format_exc()})


def in_processes(bench: Bench, fn: Callable[..., dict[str, Any]], arg_list: Sequence[tuple[Any, ...]],
                 timeout: float, what: str, ctx: Any = None) -> list[dict[str, Any]]:
    """``fn(*args)`` for each args in its own process (module-level ``fn``, picklable args), in
    parallel, untimed: the results, in the order they came. A failure in any stops the run."""
    ctx = ctx or bench.ctx
    q = ctx.Queue()
    procs = [bench.children.start(ctx.Process(target=_map_main, args=(fn, args, q), name=f"bench-{what}-{i}",
                                              daemon=True)) for i, args in enumerate(arg_list)]
    outs = [get(q, timeout, what) for _ in procs]
    _finish(bench, procs, outs, what)
    return outs


def _finish(bench: Bench, procs: Sequence[mp.process.BaseProcess], outs: Sequence[dict[str, Any]],
            what: str) -> None:
    """Every process has reported: let them end, and stop the run if one of them failed."""
    for proc in procs:
        proc.join(30)
    bench.children.stop_all()
    crashed = [o["crash"] for o in outs if "crash" in o]
    if crashed:
        raise RuntimeError(f"a {what} process failed:\n" + crashed[0])


def pool_text(r: dict[str, Any], unit: str) -> str:
    """One line for a pool's figures."""
    cpu = f"CPU per {unit}: worker {r['cpu_ms']:.2f} ms" + (
        f" + PostgreSQL {r['server_cpu_ms']:.2f} ms" if r["server_cpu_ms"] is not None else "")
    return (f"{r['per_s']:,.1f} {unit}s/s (per worker {r['per_worker']}), p50 {r['p50_ms']:.2f} ms, "
            f"p95 {r['p95_ms']:.2f} ms; {cpu}"
            + (f"; machine {r['busy_cores']:.2f} CPUs busy" if r["busy_cores"] is not None else "")
            + (f", other processes ~{r['others_cores']:.2f}" if r["others_cores"] is not None else "")
            + (f"; errors {fmt_errors(r['errors'])}" if r["errors"] else "")
            + ("  (RAN OUT OF WORK: raise the sizes)" if r["exhausted"] else ""))


def waits_text(w: dict[str, Any] | None) -> str:
    if not w or not w["top"]:
        return "no samples"
    return (f"busy {w['busy_backends']:.2f} on average; " + ", ".join(f"{k} {v:.0%}" for k, v in w["top"])
            + (f"; lock waits in: {' | '.join(w['lock_waits_in'])}" if w["lock_waits_in"] else ""))


# --------------------------------------------------------------------------------------------
# SQL: statement kinds, round trips on the wire, plans, deferred indexes


def columns(table: str) -> str:
    """Every column of the table, in the model's order: a bulk ``INSERT ... SELECT`` names them
    all, so a column added later fails the load instead of being left empty unnoticed."""
    from casemgmt.database import Base

    return ", ".join(c.name for c in Base.metadata.tables[table].columns)


def statement_kind(sql: str) -> str:
    """A short label: verb and tables, e.g. ``SELECT chains+jurisdictions FOR UPDATE``; a
    statement with data-modifying CTEs names every write, e.g. ``WITH INSERT audit_events +
    UPDATE audit_head``."""
    flat = " ".join(sql.split())
    verb = flat.split(" ", 1)[0].upper()
    if verb == "SELECT":
        tables = re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", flat, re.I)
        label = "SELECT " + "+".join(dict.fromkeys(tables))
        return label + (" FOR UPDATE" if re.search(r"\bFOR UPDATE\b", flat, re.I) else "")
    if verb == "WITH":
        writes = re.findall(r"\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", flat, re.I)
        return "WITH " + " + ".join(f"{w.split()[0].upper()} {t}" for w, t in writes) if writes else verb
    m = re.match(r"(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+(\w+)", flat, re.I)
    return f"{verb} {m.group(1)}" if m else verb


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


def explain_analyze(cur: Any, sql: str, params: Any = None, runs: int = 1) -> tuple[list[str], float | None]:
    """EXPLAIN (ANALYZE, BUFFERS) on a raw psycopg cursor: the plan of the last of ``runs``
    (later runs are warm) and its execution time in ms."""
    plan: list[str] = []
    for _ in range(runs):
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        plan = [r[0] for r in cur.fetchall()]
    ms = next((float(m.group(1)) for line in plan if (m := re.search(r"Execution Time: ([\d.]+) ms", line))),
              None)
    return plan, ms


_PLAIN_INDEXES = text("""
SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i
WHERE i.indrelid = CAST(:table AS regclass)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
ORDER BY 1
""")


@contextlib.contextmanager
def indexes_deferred(conn: Any, tables: Sequence[str]) -> Iterator[list[tuple[str, str]]]:
    """For a bulk load as the owner: the plain (non-constraint) indexes of ``tables`` are dropped
    and, after the block, created again from the models' Index objects (the DDL the migrations
    emitted; ``pg_get_indexdef`` of a partial index's predicate parses back to a different
    expression) or their own definition; checked to be the same afterwards."""
    from casemgmt.database import Base

    found = [tuple(r) for t in tables for r in conn.execute(_PLAIN_INDEXES, {"table": t})]
    for name, _ in found:
        conn.execute(text(f"DROP INDEX {name}"))
    conn.commit()
    yield found
    conn.execute(text("SET maintenance_work_mem = '256MB'"))
    model = {ix.name: ix for t in tables for ix in Base.metadata.tables[t].indexes}
    for name, definition in found:
        if name in model:
            model[name].create(conn)
        else:
            conn.execute(text(definition))
    conn.commit()
    again = [tuple(r) for t in tables for r in conn.execute(_PLAIN_INDEXES, {"table": t})]
    if sorted(again) != sorted(found):
        raise RuntimeError(f"indexes differ after the bulk load: {sorted(set(again) ^ set(found))}")


# --------------------------------------------------------------------------------------------
# Printing figures


LINE = "=" * 100


def heading(title: str) -> None:
    """A section of the figures; the smoke test looks for these lines."""
    print(f"\n## {title}", flush=True)


def rows(items: Sequence[tuple[str, str]], indent: str = "") -> None:
    """Aligned ``name  value`` lines."""
    if not items:
        return
    width = max(len(name) for name, _ in items)
    for name, value in items:
        print(f"{indent}{name:<{width}}  {value}")


def target(label: str, value: float, limit: float, at_most: bool, shown: str) -> str:
    """A PASS/FAIL line: ``value`` against ``limit`` (at most, or at least)."""
    ok = value <= limit if at_most else value >= limit
    line = f"target: {label} {'<=' if at_most else '>='} {limit:,g}: {'PASS' if ok else 'FAIL'} ({shown})"
    print(line)
    return line


def fmt_errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in errors.items()) if errors else "none"


def banner(title: str, results: dict[str, Any]) -> None:
    """Title, machine, server, code under test, and how busy the machine was."""
    print()
    print(LINE)
    print(f"{title} - {CPUS} CPUs, {results.get('server', 'PostgreSQL')}")
    if results.get("code"):
        print(f"code under test: {results['code']}")
    if results.get("package"):
        print(f"package imported from {results['package']}")
    if results.get("smoke"):
        print("SMOKE RUN: tiny sizes, the figures mean nothing")
    lb = results.get("load_before")
    if lb is not None:
        print(f"CPUs busy before the run: {lb:.2f}" + ("  <-- not a quiet machine: figures are low and "
                                                      "noisy" if lb > NOISY_CPUS else ""))
    other = results.get("other_load") or {}
    if other:
        noisy = [k for k, x in other.items() if x["other"] > NOISY_CPUS]
        print("CPUs used by other processes per phase (not this benchmark, not its backends): "
              + ", ".join(f"{k} {x['other']:.2f}" + (f" (steal {x['steal']:.2f})" if x["steal"] > 0.01 else "")
                          for k, x in other.items())
              + (f"  <-- noisy: {', '.join(noisy)}" if noisy else "  (quiet)"))
    print(LINE)


# --------------------------------------------------------------------------------------------
# Running a benchmark


class Bench:
    """One run: its databases, child processes, figures, phases of load, and master key (for
    the audit trail and the personal data)."""

    def __init__(self, label: str, smoke: bool):
        self.dbs = Databases(label)
        self.children = Children()
        self.results: dict[str, Any] = {"smoke": smoke}
        self.load = OtherLoad(self.dbs.prefix)
        self.ctx = mp.get_context("spawn")
        self.master = os.urandom(32)
        self.smoke = smoke

    def phase(self, name: str) -> None:
        """A new phase: other processes' CPU is reported per phase."""
        self.load.mark(name)

    def database(self, suffix: str) -> Database:
        """A new database, migrated and granted (the owner's part, done once)."""
        db = self.dbs.create(suffix)
        self.dbs.migrate(db)
        return db

    def server_facts(self, url: str, settings: Sequence[str] = ()) -> None:
        with create_engine(url, poolclass=NullPool).connect() as conn:
            self.results["server"] = "PostgreSQL " + conn.execute(text("SHOW server_version")).scalar_one().split()[0]
            if settings:
                self.results["settings"] = {k: conn.execute(text(f"SHOW {k}")).scalar_one() for k in settings}


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes and about a second per measurement, to see that everything runs "
                        "(CI); the figures mean nothing")
    p.add_argument("--json", type=Path, help="also write every figure to this JSON file")


def int_list(text: str) -> list[int]:
    """An option of comma-separated positive integers (``--workers 1,4``)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, not {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"positive integers, not {text!r}")
    return values


def smoke_sizes(args: argparse.Namespace, sizes: dict[str, Any]) -> argparse.Namespace:
    """With --smoke, the given option values replace the defaults."""
    if args.smoke:
        for name, value in sizes.items():
            setattr(args, name, value)
    return args


RUN_FACTS = {"smoke", "load_before", "code", "package", "other_load", "server", "settings", "cpu_used"}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(label: str, args: argparse.Namespace, run: Callable[[Bench, argparse.Namespace], None],
         report: Callable[[dict[str, Any], argparse.Namespace], None]) -> int:
    """Check the machine's load, run, stop every child, drop the databases and the role, print
    the figures (also those of an interrupted run), write the JSON. The exit status: 0, 1 after
    an error, 130 when interrupted."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    t_start = time.perf_counter()
    bench = Bench(label, args.smoke)
    results = bench.results
    before = machine_cpu()
    time.sleep(0.2 if args.smoke else 1.0)
    busy = busy_cores(before, machine_cpu())
    if busy is not None:
        results["load_before"] = busy
        log(f"machine load before starting: {busy:.2f} of {CPUS} CPUs busy"
            + ("  <-- WARNING: other processes are using the CPUs; figures will be low and noisy"
               if busy > NOISY_CPUS else ""))
    results["code"] = code_under_test()
    results["package"] = str(Path(casemgmt.models.__file__).resolve().parents[1])
    bench.load.start()
    bench.phase("setup")
    status = 0
    try:
        run(bench, args)
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    except Exception:
        traceback.print_exc()
        status = 1
    finally:
        bench.children.stop_all()
        results["other_load"] = bench.load.stop()
        for problem in bench.dbs.drop_all():
            log(problem)
            status = status or 1
        own = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        results["cpu_used"] = {"processes_s": sum(r.ru_utime + r.ru_stime for r in own),
                               "backends_s": bench.load.backend_ticks / bench.load.hz}
    if set(results) - RUN_FACTS:  # figures to show, not only the facts of the run
        if status:
            print("\n(partial figures: the run did not finish)")
        report(results, args)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    used = results.get("cpu_used", {})
    log(f"total run time {time.perf_counter() - t_start:.1f} s; CPU used: {used.get('processes_s', 0):.1f} s by "
        f"the benchmark's processes, about {used.get('backends_s', 0):.1f} s by its PostgreSQL backends")
    return status
