"""The tamper-evident audit trail.

Services stage audit entries on their session; the entries are written just before the
session commits (``before_commit``), so an access and its audit rows commit or roll back
together and the chain's head is locked only for the last moments of the transaction. Appends
are serialised by a row lock on ``audit_head``; each row gets the next id and an HMAC over the
previous row's hash and its own canonical encoding. ``verify`` walks the chain and names the
first row that does not fit: a changed row fails its own HMAC, a deleted one leaves a gap, an
inserted or reordered one breaks the link to its neighbour.

The canonical encoding is built from the stored text of each column (the field list and the
legal bases are stored as canonical JSON text), so verifying does not parse and re-encode JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import bindparam, event, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from casemgmt.privacy.models import AuditEvent, AuditHead

GENESIS = "0" * 64
audit_t = AuditEvent.__table__
head_t = AuditHead.__table__

_LOCK_HEAD = select(head_t.c.last_id, head_t.c.last_hash).where(head_t.c.id == 1).with_for_update()
_MOVE_HEAD = update(head_t).where(head_t.c.id == 1).values(
    last_id=bindparam("last_id"), last_hash=bindparam("last_hash")
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
    "id", "recorded_at", "agent_user", "agent_organisation_id", "action", "subtype",
    "entity_type", "entity_id", "person_id", "fields", "legal_bases", "purpose", "outcome",
    "detail",
)


def json_text(value: object) -> str:
    """The one JSON text form stored for the field list and the legal bases."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def canonical(values: Sequence) -> bytes:
    """The bytes a row's HMAC covers, from its stored values in HASHED_COLUMNS order: each value
    as text with its length in front, so no two different rows encode alike."""
    row_id, recorded_at = values[0], values[1]
    parts = [str(row_id), recorded_at.astimezone(UTC).isoformat(timespec="microseconds")]
    for value in values[2:]:
        parts.append(_NONE if value is None else str(value))
    return "\x1e".join(f"{len(p)}:{p}" for p in parts).encode()


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
    if not staged:
        return
    key = session.info.get("audit_key")
    if not key:
        raise RuntimeError("audit entries staged on a session without an audit key")
    _append_rows(session, key, staged)


@event.listens_for(Session, "after_soft_rollback")
def _drop_staged(session: Session, previous_transaction) -> None:
    # Entries of a rolled-back transaction describe something that did not happen.
    session.info.pop("audit_staged", None)


def append(session: Session, key: bytes, entries: Iterable[AuditEntry], now: datetime) -> None:
    """Add entries at the end of the chain now, inside the caller's transaction."""
    _append_rows(session, key, [(e, now) for e in entries])


def _append_rows(session: Session, key: bytes, staged: list[tuple[AuditEntry, datetime]]) -> None:
    if not staged:
        return
    last_id, last_hash = session.execute(_LOCK_HEAD).one()
    chain = _Chain(key)
    rows = []
    for e, at in staged:
        last_id += 1
        at = at.astimezone(UTC)  # read back in UTC on every backend, so hash it in UTC
        row = {
            "id": last_id, "recorded_at": at, "agent_user": e.agent_user,
            "agent_organisation_id": e.agent_organisation_id, "action": e.action,
            "subtype": e.subtype, "entity_type": e.entity_type, "entity_id": e.entity_id,
            "person_id": str(e.person_id) if e.person_id is not None else None,
            "fields": json_text(list(e.fields)), "legal_bases": json_text(dict(e.legal_bases)),
            "purpose": e.purpose, "outcome": e.outcome, "detail": e.detail,
        }
        digest = chain.link(last_hash, canonical([row[c] for c in HASHED_COLUMNS]))
        row["prev_hash"], row["hash"] = last_hash, digest
        rows.append(row)
        last_hash = digest
    if session.get_bind().dialect.name == "postgresql":
        # One round trip while the head is locked: the insert rides along as a CTE.
        session.execute(
            update(head_t).where(head_t.c.id == 1)
            .values(last_id=last_id, last_hash=last_hash)
            .add_cte(insert(audit_t).values(rows).cte("appended"))
        )
    else:
        session.execute(_INSERT, rows)
        session.execute(_MOVE_HEAD, {"last_id": last_id, "last_hash": last_hash})


@dataclass
class VerifyResult:
    rows: int
    ok: bool
    first_bad_id: int | None = None
    problem: str | None = None


_VERIFY_COLUMNS = (*(audit_t.c[name] for name in HASHED_COLUMNS), audit_t.c.prev_hash, audit_t.c.hash)


@dataclass
class _RangeResult:
    first_id: int | None
    first_prev: str | None
    last_id: int | None
    last_hash: str | None
    rows: int
    bad_id: int | None = None
    problem: str | None = None


def _verify_range(conn: Connection, key: bytes, lo: int, hi: int | None, batch: int) -> _RangeResult:
    """Check rows lo..hi: contiguous ids, links between them, each row's HMAC."""
    chain = _Chain(key)
    stmt = select(*_VERIFY_COLUMNS)
    if lo > 1:  # the first range also catches rows forged below id 1
        stmt = stmt.where(audit_t.c.id >= lo)
    if hi is not None:
        stmt = stmt.where(audit_t.c.id <= hi)
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt.order_by(audit_t.c.id))
    out = _RangeResult(None, None, None, None, 0)
    expected_id, expected_prev = lo, None
    for row in result:
        row_id, prev_hash, digest = row[0], row[14], row[15]
        if row_id != expected_id:
            out.bad_id = row_id
            out.problem = f"expected row {expected_id} but found row {row_id}: rows missing or inserted"
            if out.first_id is None:
                out.first_id, out.first_prev = expected_id, None
            return out
        if out.first_id is None:
            out.first_id, out.first_prev = row_id, prev_hash
        elif prev_hash != expected_prev:
            out.bad_id, out.problem = row_id, "does not link to the row before it"
            return out
        if chain.link(prev_hash, canonical(row[:14])) != digest:
            out.bad_id, out.problem = row_id, "content does not match its hash (row changed)"
            return out
        out.last_id, out.last_hash, out.rows = row_id, digest, out.rows + 1
        expected_id, expected_prev = row_id + 1, digest
    return out


def _combine(parts: list[_RangeResult], head: tuple[int, str] | None) -> VerifyResult:
    """Join range results in id order: each range must start where the one before it ended."""
    rows, expected_id, expected_prev = 0, 1, GENESIS
    for part in parts:
        if part.first_id is not None:
            if part.first_id != expected_id:
                return VerifyResult(rows, False, part.first_id,
                                    f"expected row {expected_id} but found row {part.first_id}: rows missing or inserted")
            if part.first_prev is not None and part.first_prev != expected_prev:
                return VerifyResult(rows, False, part.first_id, "does not link to the row before it")
        if part.bad_id is not None:
            return VerifyResult(rows + part.rows, False, part.bad_id, part.problem)
        if part.last_id is not None:
            rows += part.rows
            expected_id, expected_prev = part.last_id + 1, part.last_hash
    if head is not None and (head[0] != expected_id - 1 or head[1] != expected_prev):
        return VerifyResult(rows, False, expected_id,
                            f"the chain ends at row {expected_id - 1} but its head says {head[0]}: rows cut off")
    return VerifyResult(rows, True)


def _head(conn: Connection) -> tuple[int, str] | None:
    row = conn.execute(select(head_t.c.last_id, head_t.c.last_hash).where(head_t.c.id == 1)).one_or_none()
    return (row.last_id, row.last_hash) if row is not None else None


def verify(conn: Connection, key: bytes, batch: int = 10_000) -> VerifyResult:
    """Walk the whole chain in id order in this process; stop at the first row that does not fit."""
    return _combine([_verify_range(conn, key, 1, None, batch)], _head(conn))


def _verify_worker(args: tuple[str, bytes, int, int]) -> _RangeResult:
    from casemgmt.database import make_engine

    url, key, lo, hi = args
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return _verify_range(conn, key, lo, hi, 10_000)
    finally:
        engine.dispose()


def verify_parallel(url: str, key: bytes, workers: int | None = None,
                    min_rows_per_worker: int = 50_000) -> VerifyResult:
    """The same check split into id ranges, one process each (the links between ranges are
    checked when the ranges are joined). Falls back to one process for small trails."""
    from casemgmt.database import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            head = _head(conn)
            top = conn.execute(select(func.max(audit_t.c.id))).scalar() or 0
            workers = max(1, min(workers or os.cpu_count() or 1, top // min_rows_per_worker))
            if workers == 1:
                return _combine([_verify_range(conn, key, 1, None, 10_000)], head)
    finally:
        engine.dispose()
    step = -(-top // workers)
    bounds = [(1 + i * step, top if i == workers - 1 else (i + 1) * step) for i in range(workers)]
    # The last range is open-ended so rows beyond max(id) at the time of reading are caught too.
    bounds[-1] = (bounds[-1][0], None)  # type: ignore[assignment]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_verify_worker, [(url, key, lo, hi) for lo, hi in bounds]))
    return _combine(parts, head)
