"""Engine, sessions and the declarative base shared by every domain package."""

from __future__ import annotations

import enum
import os
import time

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Stable constraint names so that Alembic migrations are identical on PostgreSQL and SQLite.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend.

    SQLite has no time zones; without this a value read back would be naive and could not be
    compared with ``now`` in the service layer.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; casemgmt stores only aware UTC times")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str, durable: bool = True, **kwargs) -> Engine:
    """Create an engine; SQLite gets foreign keys switched on (off by default there).

    ``durable=False`` (SQLite only) is for a file that is thrown away unless everything written
    to it succeeds, such as the demo's seeding file: no journal on disk and no syncs, so a crash
    may leave the file corrupt, but commits cost a fraction."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=5000")
            if durable:
                cur.execute("PRAGMA journal_mode=WAL")
                # The SQLite file is the demo default: WAL with NORMAL sync cannot corrupt the
                # file, it only risks the last commits on power loss, and makes commits far cheaper.
                cur.execute("PRAGMA synchronous=NORMAL")
            else:
                cur.execute("PRAGMA journal_mode=MEMORY")
                cur.execute("PRAGMA synchronous=OFF")
            cur.close()
            # Let SQLAlchemy, not the driver, open transactions (see _begin_immediate).
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn):
            # SQLite has no row locks: taking the write lock at BEGIN serialises transactions,
            # which is what the chain lock and the audit chain need in the demo.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if not durable:
        raise ValueError("durable=False is for SQLite files only")
    # A connection that was in use a moment ago is alive: pinging it at every checkout cost a
    # round trip per transaction (see bench/README.md, transitions). Only a connection that sat in
    # the pool for a while is pinged (see _ping_if_idle); a dead one is replaced before use.
    ping_idle = not kwargs.pop("pool_pre_ping", False)
    # Statement parameters are personal data (encrypted, but still): never in an error message
    # that could reach a log.
    kwargs.setdefault("hide_parameters", True)
    connect_args = kwargs.setdefault("connect_args", {})
    # Without a timeout a connection attempt to an unreachable server waits for the kernel's
    # TCP timeout (minutes); requests should get their 503 in seconds.
    connect_args.setdefault("connect_timeout", 5)
    engine = create_engine(url, pool_pre_ping=not ping_idle, **kwargs)

    @event.listens_for(engine, "do_connect")
    def _name_the_process(_dialect, _conn_rec, _cargs, cparams):
        # pg_stat_activity then shows which process (which worker) holds a connection.
        cparams.setdefault("application_name", f"casemgmt pid {os.getpid()}")

    if ping_idle:
        _ping_idle_connections(engine)
    return engine


# A pooled connection that was checked in longer ago than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Pre-ping only connections that sat idle in the pool: a server restart, a failover or an
    idle timeout breaks those; a connection returned a moment ago under load is alive (and if it
    broke in that moment, the statement fails as a disconnect, the pool is invalidated and the
    request gets its 503 like any other database outage)."""
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn, record):
        if record is not None:
            record.info["casemgmt_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy):
        since = record.info.get("casemgmt_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # just connected, or in use a moment ago
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool drops this connection and checks out (or opens) another one.
            raise DisconnectionError("idle connection failed its ping") from exc


def make_sessionmaker(engine: Engine, audit_key: bytes | None = None,
                      audit_key_id: str | None = None) -> sessionmaker[Session]:
    """Sessions for the service. Those that write personal data or state need ``audit_key``: the
    audit trail refuses to append without it (see casemgmt.privacy.service.audit_key). Rows are
    labelled with ``audit_key_id`` (the master key's id), so they verify after a rotation."""
    return sessionmaker(bind=engine, expire_on_commit=False,
                        info={"audit_key": audit_key, "audit_key_id": audit_key_id})


def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session per request; whatever a service did not commit is rolled back."""
    session = factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


@contextmanager
def unit_of_work(session: Session) -> Iterator[Session]:
    """One service call, one transaction: commit when the block ends, roll back on any error."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


def sql_in(column: str, values) -> str:
    """``column IN ('a', 'b')`` for a CHECK constraint, from strings or str-valued enum members."""
    texts = [v.value if isinstance(v, enum.Enum) else v for v in values]
    return f"{column} IN ({', '.join(repr(t) for t in texts)})"
