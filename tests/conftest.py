"""Shared fixtures. Tests that touch the database run against a PostgreSQL database created for
this run (and dropped after it), migrated with Alembic, seeded with the synthetic Kreis. The app
and the services connect as a login role created for the run with only the service's grants
(``engine``); migrations, resets and tampering use the superuser (``owner_engine``).

Set CASEMGMT_TEST_ADMIN_URL to point at another server (default: the local PostgreSQL, database
``test``, as on every development and CI machine)."""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

from casemgmt.config import Settings
from casemgmt.database import make_engine, make_sessionmaker
from casemgmt.dbroles import grant_service_role
from casemgmt.demo.world import World, build_world
from casemgmt.migrations import upgrade
from casemgmt.policy.loader import Policies, load_policies

# Property tests draw the same examples on every run, so a red CI run can be reproduced and a green
# one is not luck; `HYPOTHESIS_PROFILE=explore` draws fresh ones when hunting for new failures.
# No deadline: on a busy 2-core CI machine one example may stall for a moment, and speed is what
# the benchmarks measure, not the property tests.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)
hypothesis_settings.register_profile("explore", derandomize=False, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ADMIN_URL = os.environ.get(
    "CASEMGMT_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ROOT = Path(__file__).resolve().parent.parent
# Tables holding per-test data; reference data (jurisdictions, organisations, templates) stays.
CASE_TABLES = (
    "chain_events", "chain_steps", "chains", "consent_withdrawals", "consents", "person_fields",
    "person_keys", "persons", "data_exchange_agreements", "audit_events", "notification_outbox",
    "handover_events", "handovers", "organisation_contacts", "person_name_tokens", "finding_votes",
    "finding_cases", "finding_organisation_kinds", "findings", "conference_agreements",
    "conference_cases", "conference_participants", "conferences", "proposal_events", "proposals",
    "working_groups", "person_restrictions", "legal_holds", "erasure_tombstones",
    "data_subject_requests", "audit_keys", "steering_releases", "interviews", "web_sessions",
    "language_pass_entries", "offer_bookings", "good_practices", "offer_versions", "offers",
)
MASTER_KEY = os.urandom(32)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def create_database(name: str) -> str:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def backend_gone(owner: Engine, pid: int, timeout: float) -> bool:
    """Whether the PostgreSQL backend ``pid`` ended within ``timeout`` seconds. Each look is its
    own transaction: pg_stat_activity is a snapshot taken at a transaction's first look and kept
    until it ends, so polling inside one transaction keeps seeing a backend that has gone."""
    deadline = time.monotonic() + timeout
    with owner.connect() as conn:
        while True:
            there = conn.execute(text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).first()
            conn.rollback()
            if not there:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"casemgmt_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture(scope="session")
def owner_engine(pg_url: str) -> Iterator[Engine]:
    """The schema owner's role (here the superuser): migrations, resetting case data, and tests
    that tamper with evidence as someone with the owner's rights could."""
    eng = make_engine(pg_url, pool_size=5, max_overflow=5)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def service_role(owner_engine: Engine) -> Iterator[str]:
    """A login role for this run with only the grants of ``casemgmt db grant``: the role the
    service runs as in production. Dropped at the end of the run."""
    name = f"casemgmt_app_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with owner_engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{name}" LOGIN'))
    try:
        grant_service_role(owner_engine, name)
        yield name
    finally:
        with owner_engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{name}"'))  # its grants in this database
            conn.execute(text(f'DROP ROLE "{name}"'))


@pytest.fixture(scope="session")
def service_url(pg_url: str, service_role: str) -> str:
    return make_url(pg_url).set(username=service_role).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def engine(service_url: str) -> Iterator[Engine]:
    """What the app and the services use: the restricted service role."""
    eng = make_engine(service_url, pool_size=25, max_overflow=10)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def policies() -> Policies:
    return load_policies(ROOT / "policies")


@pytest.fixture(scope="session")
def world(engine: Engine) -> World:
    with make_sessionmaker(engine)() as session:
        return build_world(session)


@pytest.fixture(scope="session")
def catalog(engine: Engine, policies: Policies, world: World):
    from casemgmt.chains.catalog import register_templates

    with make_sessionmaker(engine)() as session:
        return register_templates(session, policies.templates, datetime(2026, 1, 5, tzinfo=UTC))


@pytest.fixture
def db(engine: Engine, owner_engine: Engine, world: World, catalog) -> Iterator[Engine]:
    """The migrated PostgreSQL database as the service role, emptied of case data after each test."""
    yield engine
    reset_case_data(owner_engine)


@pytest.fixture
def owner_db(db: Engine, owner_engine: Engine) -> Engine:
    """The same database as the schema owner (superuser): for tests that tamper with evidence."""
    return owner_engine


def reset_case_data(engine: Engine) -> None:
    """Empty the case tables (``engine``: the owner's). The evidence tables refuse TRUNCATE and a
    backward-moving audit head; only a superuser session in replica mode (no ordinary triggers)
    may reset them."""
    try:
        _truncate_case_tables(engine, "5s")
    except OperationalError:
        # A session a test dropped without closing holds its table locks until the garbage
        # collector returns its connection to the pool; collect once, then wait longer. A session
        # still open after that is a real leak and fails the test loudly.
        gc.collect()
        _truncate_case_tables(engine, "30s")


def _truncate_case_tables(engine: Engine, lock_timeout: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f"TRUNCATE {', '.join(CASE_TABLES)} RESTART IDENTITY CASCADE"))
        conn.execute(text(f"UPDATE audit_head SET last_seq = 0, last_hash = '{'0' * 64}'"))


@pytest.fixture(scope="session")
def keys():
    from casemgmt.privacy.crypto import KeyRing

    return KeyRing.from_master(MASTER_KEY)


@pytest.fixture
def session_factory(db: Engine, keys):
    """Sessions as the service makes them: able to write the audit trail."""
    return make_sessionmaker(db, audit_key=keys.audit_key)


@pytest.fixture
def privacy(policies: Policies, keys):
    from casemgmt.privacy.service import Privacy

    return Privacy(policies.data, keys)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, pg_url: str, service_url: str) -> Settings:
    return Settings(
        database_url=service_url,
        migration_database_url=pg_url,
        policy_dir=ROOT / "policies",
        dev_key_dir=tmp_path_factory.mktemp("dev-keys"),
    )


@pytest.fixture
def app(settings: Settings, db: Engine, policies: Policies, clock: FakeClock):
    from casemgmt.app import create_app

    return create_app(settings, engine=db, policies=policies, clock=clock, master_key=MASTER_KEY)


@pytest.fixture
def client(app) -> Iterator:
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def sqlite_app(tmp_path: Path, settings: Settings, policies: Policies) -> Iterator:
    """The app on a SQLite file (the README's demo database) with the Kreis and the templates:
    ``(client, world, clock, engine)``."""
    from fastapi.testclient import TestClient

    from casemgmt.app import create_app
    from casemgmt.chains.catalog import register_templates

    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with make_sessionmaker(engine)() as session:
        world = build_world(session)
        register_templates(session, policies.templates, datetime(2026, 1, 5, tzinfo=UTC))
    clock = FakeClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
    app = create_app(settings.model_copy(update={"database_url": url, "demo_login": True}), engine=engine,
                     policies=policies, clock=clock, master_key=MASTER_KEY)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, world, clock, engine
    engine.dispose()


@pytest.fixture
def auth(settings: Settings, clock: FakeClock):
    """``auth("ennetal_ki", "case_manager")`` -> request headers with a fresh dev token."""
    from casemgmt.auth.tokens import mint_dev_token

    def headers(org: str, *roles: str, user: str | None = None) -> dict[str, str]:
        token = mint_dev_token(settings, user or f"user-{org}", org, list(roles))
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture
def release(session_factory, policies: Policies, world: World):
    """``release("2026-Q1", now)`` -> the steering releases made for that quarter (every Kreis and
    kreisfreie Stadt), as `casemgmt report release --quarter` makes them."""
    from casemgmt.steering.releases import run_releases

    def make(quarter: str, now: datetime, *, area: str | None = None, again: bool = False):
        with session_factory() as session:
            made = run_releases(session, policies.steering, policies.goals, now, quarter=quarter, again=again,
                                area_id=None if area is None else world.jurisdictions[area])
            return [(r.number, r.area_jurisdiction_id) for r in made]

    return make
