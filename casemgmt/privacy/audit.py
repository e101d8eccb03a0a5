"""The tamper-evident audit trail.

Services stage audit entries on their session; a ``before_commit`` hook appends them, so an
access and its audit rows commit or roll back together and a chain head is locked only for the
last moments of a transaction.

The trail is split into STREAMS hash chains. An entry goes to the stream of its person (or of
its user, when it concerns no person), so one person's history is one ordered chain, and
transactions about different persons rarely wait for the same lock: a single global chain would
make every audited request in the installation queue behind one row lock (the benchmark showed
it capping the whole service at some 700 writes/s on two cores). Within a stream each row gets
the next ``seq`` and an HMAC over the previous row's hash and its own canonical encoding.

``verify`` walks every stream and names the first row that does not fit: a changed row fails
its HMAC, a deleted one leaves a gap in ``seq``, an inserted or reordered one breaks the link to
its neighbour, and rows cut off at the end disagree with the stream's head.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import bindparam, event, exists, insert, literal_column, select, union_all, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from casemgmt.privacy.models import AuditEvent, AuditHead

GENESIS = "0" * 64
STREAMS = 16  # the migration creates one head row per stream
audit_t = AuditEvent.__table__
head_t = AuditHead.__table__

_MOVE_HEAD = update(head_t).where(head_t.c.stream == bindparam("s")).values(
    last_seq=bindparam("last_seq"), last_hash=bindparam("last_hash")
)
_INSERT = insert(audit_t)
_NONE = "\x00"  # stands for NULL in the canonical encoding; stored text never holds NUL


@dataclass(frozen=True)
class AuditEntry:
    """What happened, by whom, to whose data, on which basis. No personal values."""

    agent_user: str
    agent_organisation_id: int | None
    action: str  # C R U D E
    subtype: str
    entity_type: str
    entity_id: str | None = None
    person_id: uuid.UUID | None = None
    fields: tuple[str, ...] = ()
    legal_bases: dict[str, str] = field(default_factory=dict)
    purpose: str | None = None
    outcome: str = "success"
    detail: str | None = None


# The columns a row's HMAC covers, in this order.
HASHED_COLUMNS = (
    "stream", "seq", "recorded_at", "agent_user", "agent_organisation_id", "action", "subtype",
    "entity_type", "entity_id", "person_id", "fields", "legal_bases", "purpose", "outcome",
    "detail",
)


def json_text(value: object) -> str:
    """The one JSON text form stored for the field list and the legal bases."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def canonical(values: Sequence) -> bytes:
    """The bytes a row's HMAC covers, from its stored values in HASHED_COLUMNS order: each value
    as text with its length in front, so no two different rows encode alike."""
    parts = [str(values[0]), str(values[1]), values[2].astimezone(UTC).isoformat(timespec="microseconds")]
    for value in values[3:]:
        parts.append(_NONE if value is None else str(value))
    return "\x1e".join(f"{len(p)}:{p}" for p in parts).encode()


def stream_of(entry: AuditEntry) -> int:
    """The stream of an entry: its person's, or its user's when it concerns no person."""
    if entry.person_id is not None:
        return entry.person_id.int % STREAMS
    return zlib.crc32(entry.agent_user.encode()) % STREAMS


class _Chain:
    """HMAC-SHA256 links; the keyed state is prepared once and copied per row."""

    def __init__(self, key: bytes):
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def link(self, prev_hash: str, body: bytes) -> str:
        h = self._base.copy()
        h.update(prev_hash.encode())
        h.update(body)
        return h.hexdigest()


def stage(session: Session, entries: Iterable[AuditEntry], now: datetime) -> None:
    """Queue entries on the session; they are appended when it commits (see _append_staged)."""
    session.info.setdefault("audit_staged", []).extend((e, now) for e in entries)


@event.listens_for(Session, "before_commit")
def _append_staged(session: Session) -> None:
    staged = session.info.pop("audit_staged", None)
    hints = session.info.pop(_HINTS, None)
    if not staged:
        return
    key = session.info.get("audit_key")
    if not key:
        raise RuntimeError("audit entries staged on a session without an audit key")
    _append_rows(session, key, staged, session.info.get("audit_key_id"), hints)


@event.listens_for(Session, "after_soft_rollback")
def _drop_staged(session: Session, previous_transaction) -> None:
    # Entries of a rolled-back transaction describe something that did not happen.
    session.info.pop("audit_staged", None)
    session.info.pop(_HINTS, None)


# --- one round trip for the usual append ---------------------------------------------------------
#
# An append must link its rows to the stream's last hash, and the HMAC is computed here, not in
# the database (the key never leaves the service). So the head has to be read before the rows
# can be built: a locked SELECT, then the INSERT, two round trips at the end of every audited
# transaction. A statement the transaction runs anyway can bring the head along, unlocked (see
# head_hint_column). At commit the rows are built on that head and written by one statement
# that moves the head only if it is still exactly that head, and inserts only if it moved. If
# another transaction appended in between, nothing is written and the locked path runs as before:
# a stale hint costs a round trip, it can never fork a stream.
_HINTS = "audit_head_hints"


def stream_of_person(person_id: uuid.UUID) -> int:
    """The stream every entry about this person goes to (see stream_of)."""
    return person_id.int % STREAMS


def person_stream_sql(person_id_column: str):
    """:func:`stream_of_person` in SQL (PostgreSQL) for a person id column such as
    ``"chains.person_id"``: the low four bits of the UUID, its last hex digit."""
    assert STREAMS == 16, "the SQL form takes the last hex digit: 16 streams"
    return literal_column(f"('x' || right(({person_id_column})::text, 1))::bit(4)::int")


def head_hint_column(stream):
    """A column for any SELECT: the head of ``stream`` (a bind parameter or column) as
    ``"last_seq:last_hash"``, read without a lock. Give its value to :func:`remember_head`."""
    return (select(literal_column("audit_head.last_seq::text || ':' || audit_head.last_hash"))
            .where(head_t.c.stream == stream).scalar_subquery().label("audit_head_hint"))


def remember_head(session: Session, stream: int, hint: str | None) -> None:
    """Note a head read in this transaction (the value of head_hint_column) for its append."""
    if hint:
        seq, _, last_hash = hint.partition(":")
        session.info.setdefault(_HINTS, {})[stream] = (int(seq), last_hash)


def append(session: Session, key: bytes, entries: Iterable[AuditEntry], now: datetime,
           key_id: str | None = None) -> None:
    """Add entries at the end of their streams now, inside the caller's transaction."""
    _append_rows(session, key, [(e, now) for e in entries], key_id)


def build_rows(key: bytes, staged: list[tuple[AuditEntry, datetime]],
               heads: dict[int, tuple[int, str]], key_id: str | None = None) -> tuple[list[dict], list[dict]]:
    """The rows to insert for ``staged`` and each stream's new head (``s``, ``last_seq``,
    ``last_hash``): entries grouped by stream, numbered on from the stream's head and linked
    from its last hash. ``heads`` maps stream -> (last_seq, last_hash)."""
    by_stream: dict[int, list[tuple[AuditEntry, datetime]]] = defaultdict(list)
    for e, at in staged:
        by_stream[stream_of(e)].append((e, at))
    chain = _Chain(key)
    rows, moves = [], []
    for stream in sorted(by_stream):
        last_seq, last_hash = heads[stream]
        for e, at in by_stream[stream]:
            last_seq += 1
            row = {
                "stream": stream, "seq": last_seq,
                "recorded_at": at.astimezone(UTC),  # read back in UTC on every backend
                "agent_user": e.agent_user, "agent_organisation_id": e.agent_organisation_id,
                "action": e.action, "subtype": e.subtype, "entity_type": e.entity_type,
                "entity_id": e.entity_id,
                "person_id": str(e.person_id) if e.person_id is not None else None,
                "fields": json_text(list(e.fields)), "legal_bases": json_text(dict(e.legal_bases)),
                "purpose": e.purpose, "outcome": e.outcome, "detail": e.detail,
            }
            digest = chain.link(last_hash, canonical([row[c] for c in HASHED_COLUMNS]))
            row["prev_hash"], row["hash"], row["key_id"] = last_hash, digest, key_id
            rows.append(row)
            last_hash = digest
        moves.append({"s": stream, "last_seq": last_seq, "last_hash": last_hash})
    return rows, moves


def _append_rows(session: Session, key: bytes, staged: list[tuple[AuditEntry, datetime]],
                 key_id: str | None = None, hints: dict[int, tuple[int, str]] | None = None) -> None:
    if not staged:
        return
    from casemgmt.observability import AUDIT_APPEND

    with AUDIT_APPEND.time():
        if not (hints and _append_on_hint(session, key, staged, key_id, hints)):
            _lock_and_append(session, key, staged, key_id)


def _append_on_hint(session: Session, key: bytes, staged: list[tuple[AuditEntry, datetime]],
                    key_id: str | None, hints: dict[int, tuple[int, str]]) -> bool:
    """Append in one round trip on a head read earlier in the transaction; False (nothing
    written) when the stream's head has moved since, or the case is not the usual one."""
    streams = {stream_of(e) for e, _ in staged}
    if len(streams) != 1 or len(staged) > _MAX_CTE_ROWS or session.get_bind().dialect.name != "postgresql":
        return False
    stream = streams.pop()
    head = hints.get(stream)
    if head is None:
        return False
    rows, moves = build_rows(key, staged, {stream: head}, key_id)
    params = {f"{name}_{i}": value for i, row in enumerate(rows) for name, value in row.items()}
    params |= moves[0] | {"expected_seq": head[0], "expected_hash": head[1]}
    return len(session.execute(_conditional_append_statement(len(rows)), params).all()) == len(rows)


_LOCK_HEADS = (
    select(head_t.c.stream, head_t.c.last_seq, head_t.c.last_hash)
    .where(head_t.c.stream.in_(bindparam("streams", expanding=True)))
    .order_by(head_t.c.stream)
    .with_for_update()
)


def _lock_and_append(session: Session, key: bytes, staged: list[tuple[AuditEntry, datetime]],
                     key_id: str | None) -> None:
    streams = sorted({stream_of(e) for e, _ in staged})
    # Heads are locked in stream order, so two transactions never wait for each other crosswise.
    heads = {
        row.stream: (row.last_seq, row.last_hash)
        for row in session.execute(_LOCK_HEADS, {"streams": streams})
    }
    rows, moves = build_rows(key, staged, heads, key_id)
    if session.get_bind().dialect.name == "postgresql" and len(moves) == 1 and len(rows) <= _MAX_CTE_ROWS:
        # The usual case, one stream: rows and head in one round trip (the insert as a CTE).
        params = {f"{name}_{i}": value for i, row in enumerate(rows) for name, value in row.items()}
        session.execute(_append_statement(len(rows)), params | moves[0])
    else:
        session.execute(_INSERT, rows)
        session.execute(_MOVE_HEAD, moves)


_MAX_CTE_ROWS = 8
_APPEND_STATEMENTS: dict[int, object] = {}
_ROW_COLUMNS = (*HASHED_COLUMNS, "prev_hash", "hash", "key_id")


def _append_statement(n: int):
    """INSERT of n rows as a CTE of the head's UPDATE, built once per n: building and compiling
    it anew for every request cost more than running it."""
    stmt = _APPEND_STATEMENTS.get(n)
    if stmt is None:
        # A multi-row VALUES list has no SQL cache key (it would be compiled on every call), so
        # one row is a plain VALUES and several rows are a UNION ALL of parameter rows.
        params = [[bindparam(f"{c}_{i}", type_=audit_t.c[c].type) for c in _ROW_COLUMNS] for i in range(n)]
        if n == 1:
            rows = insert(audit_t).values(dict(zip(_ROW_COLUMNS, params[0], strict=True)))
        else:
            rows = insert(audit_t).from_select(list(_ROW_COLUMNS), union_all(*(select(*p) for p in params)))
        stmt = _MOVE_HEAD.add_cte(rows.cte("appended"))
        _APPEND_STATEMENTS[n] = stmt
    return stmt


_CONDITIONAL_STATEMENTS: dict[int, object] = {}


def _conditional_append_statement(n: int):
    """INSERT of n rows that happens only if the head's UPDATE, a CTE conditioned on the head
    being the expected one, moved it. Under READ COMMITTED an UPDATE that waited for another
    appender re-checks its condition on the new head, so it then moves nothing."""
    stmt = _CONDITIONAL_STATEMENTS.get(n)
    if stmt is None:
        moved = (update(head_t)
                 .where(head_t.c.stream == bindparam("s"), head_t.c.last_seq == bindparam("expected_seq"),
                        head_t.c.last_hash == bindparam("expected_hash"))
                 .values(last_seq=bindparam("last_seq"), last_hash=bindparam("last_hash"))
                 .returning(head_t.c.stream).cte("moved"))
        moved_it = exists(select(moved.c.stream))
        params = [[bindparam(f"{c}_{i}", type_=audit_t.c[c].type) for c in _ROW_COLUMNS] for i in range(n)]
        selects = [select(*p).where(moved_it) for p in params]
        rows = selects[0] if n == 1 else union_all(*selects)
        stmt = insert(audit_t).from_select(list(_ROW_COLUMNS), rows).add_cte(moved).returning(audit_t.c.seq)
        _CONDITIONAL_STATEMENTS[n] = stmt
    return stmt


@dataclass
class VerifyResult:
    rows: int
    ok: bool
    first_bad_id: int | None = None
    problem: str | None = None


_VERIFY_COLUMNS = (*(audit_t.c[name] for name in HASHED_COLUMNS), audit_t.c.prev_hash,
                   audit_t.c.hash, audit_t.c.id, audit_t.c.key_id)


@dataclass(frozen=True)
class AuditKeySet:
    """The audit keys a trail may have been written with, by key id: the current master key's,
    those of retired master keys configured for a rotation, and those archived in ``audit_keys``
    by earlier rotations. Rows written before key ids verify with ``unlabelled`` (the archived key
    marked for them, or else any known key)."""

    keys: dict[str, bytes]
    unlabelled: tuple[bytes, ...]

    @classmethod
    def single(cls, key: bytes) -> AuditKeySet:
        return cls({}, (key,))


class _Linker:
    """Picks the chain of each row's key id; a bytes key verifies every row (tests, tools)."""

    def __init__(self, keys: bytes | AuditKeySet):
        self.keys = AuditKeySet.single(keys) if isinstance(keys, bytes | bytearray) else keys
        self.single = isinstance(keys, bytes | bytearray)
        self._chains: dict[bytes, _Chain] = {}

    def _chain(self, key: bytes) -> _Chain:
        if key not in self._chains:
            self._chains[key] = _Chain(key)
        return self._chains[key]

    def matches(self, key_id: str | None, prev_hash: str, body: bytes, digest: str) -> bool | None:
        """True/False whether the row's HMAC matches; None when its key is unknown."""
        if self.single or key_id is None:
            candidates = self.keys.unlabelled
        elif key_id in self.keys.keys:
            candidates = (self.keys.keys[key_id],)
        else:
            return None
        return any(self._chain(k).link(prev_hash, body) == digest for k in candidates)


@dataclass
class _StreamResult:
    rows: int
    bad_id: int | None = None
    problem: str | None = None


def _verify_stream(conn: Connection, key: bytes | AuditKeySet, stream: int, head: tuple[int, str] | None,
                   batch: int = 10_000) -> _StreamResult:
    """One stream in seq order: contiguous seq from 1, links, each row's HMAC (with the audit key
    its key id names), and its end where the head says."""
    linker = _Linker(key)
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(
        select(*_VERIFY_COLUMNS).where(audit_t.c.stream == stream).order_by(audit_t.c.seq)
    )
    expected_seq, expected_prev, rows = 1, GENESIS, 0
    for row in result:
        seq, prev_hash, digest, row_id, key_id = row[1], row[15], row[16], row[17], row[18]
        if seq != expected_seq:
            return _StreamResult(rows, row_id, f"stream {stream}: expected entry {expected_seq} but "
                                               f"found entry {seq}: entries missing or inserted")
        if prev_hash != expected_prev:
            return _StreamResult(rows, row_id, f"stream {stream}: does not link to the entry before it")
        matches = linker.matches(key_id, prev_hash, canonical(row[:15]), digest)
        if matches is None:
            return _StreamResult(rows, row_id, f"stream {stream}: written with audit key {key_id}, which is "
                                               "not known here (configure its master key as retired, or "
                                               "run `casemgmt keys rotate`)")
        if not matches:
            return _StreamResult(rows, row_id, f"stream {stream}: content does not match its hash (row changed)")
        expected_seq, expected_prev, rows = seq + 1, digest, rows + 1
    last_seq, last_hash = head if head is not None else (0, GENESIS)
    if last_seq != expected_seq - 1 or last_hash != expected_prev:
        return _StreamResult(rows, None, f"stream {stream} ends at entry {expected_seq - 1} but its "
                                         f"head says {last_seq}: entries cut off")
    return _StreamResult(rows)


def _heads(conn: Connection) -> dict[int, tuple[int, str]]:
    return {r.stream: (r.last_seq, r.last_hash)
            for r in conn.execute(select(head_t.c.stream, head_t.c.last_seq, head_t.c.last_hash))}


def _strays(conn: Connection) -> int | None:
    """A row outside every stream could only have been put there by hand."""
    return conn.execute(
        select(audit_t.c.id).where(~audit_t.c.stream.in_(range(STREAMS))).order_by(audit_t.c.id).limit(1)
    ).scalar()


def _combine(parts: list[_StreamResult], stray: int | None) -> VerifyResult:
    """All streams intact, or the earliest bad row (by id) with what is wrong with it."""
    rows = sum(p.rows for p in parts)
    bad = [p for p in parts if p.problem is not None]
    if stray is not None:
        bad.append(_StreamResult(0, stray, "row belongs to no audit stream (inserted)"))
    if not bad:
        return VerifyResult(rows, True)
    first = min(bad, key=lambda p: (p.bad_id is None, p.bad_id or 0))
    return VerifyResult(rows, False, first.bad_id, first.problem)


@contextmanager
def _one_snapshot(conn: Connection) -> Iterator[Connection]:
    """Read heads and rows in one snapshot: the service keeps appending while verify runs, and
    a head read before (or after) its rows would make a live trail look cut off (or extended)."""
    if conn.in_transaction():
        yield conn
        return
    if conn.dialect.name == "postgresql":
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    with conn.begin():
        yield conn


def verify(conn: Connection, key: bytes | AuditKeySet, batch: int = 10_000) -> VerifyResult:
    """Check every stream in this process."""
    with _one_snapshot(conn) as snap:
        heads = _heads(snap)
        parts = [_verify_stream(snap, key, s, heads.get(s), batch) for s in range(STREAMS)]
        return _combine(parts, _strays(snap))


def _verify_worker(args: tuple[str, bytes | AuditKeySet, list[int]]) -> list[_StreamResult]:
    from casemgmt.database import make_engine

    url, key, streams = args
    engine = make_engine(url)
    try:
        with engine.connect() as conn, _one_snapshot(conn) as snap:
            heads = _heads(snap)
            return [_verify_stream(snap, key, s, heads.get(s)) for s in streams]
    finally:
        engine.dispose()


def verify_parallel(url: str, key: bytes | AuditKeySet, workers: int | None = None,
                    min_rows_per_worker: int = 50_000) -> VerifyResult:
    """The same check with the streams shared out over processes (for large trails)."""
    from sqlalchemy import func

    from casemgmt.database import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(audit_t)).scalar() or 0
            stray = _strays(conn)
        workers = max(1, min(workers or os.cpu_count() or 1, total // max(min_rows_per_worker, 1), STREAMS))
        if workers == 1:
            with engine.connect() as conn:
                return verify(conn, key)
    finally:
        engine.dispose()
    shares = [list(range(STREAMS))[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        parts = [p for chunk in pool.map(_verify_worker, [(url, key, share) for share in shares]) for p in chunk]
    return _combine(parts, stray)
