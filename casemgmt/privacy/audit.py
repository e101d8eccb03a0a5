"""The tamper-evident audit trail.

Rows are appended in the caller's transaction, so an access and its audit row commit or roll
back together. Appends are serialised by a row lock on ``audit_head`` (taken as late as possible
in the transaction); each row gets the next id and an HMAC over the previous hash and its own
canonical encoding. ``verify`` walks the chain and names the first row that does not fit:
a changed row fails its own HMAC, a deleted one leaves a gap, an inserted or reordered one breaks
the link to its neighbour.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import bindparam, insert, select, update
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


def canonical(values: tuple) -> bytes:
    """The bytes a row's HMAC covers, from its values in HASHED_COLUMNS order. Deterministic
    across backends: times in UTC with microseconds, ids as text, mappings with sorted keys."""
    (row_id, recorded_at, user, org, action, subtype, etype, eid, person, fields, bases,
     purpose, outcome, detail) = values
    # Hash what is stored, and only the shapes the service writes: anything else (say, a mapping
    # of field names to values slipped into `fields`) is a changed row, not something to coerce.
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise ValueError("fields is not a list of field names")
    if not isinstance(bases, dict) or not all(isinstance(v, str) for v in bases.values()):
        raise ValueError("legal_bases is not a mapping of field names to bases")
    return json.dumps(
        [row_id, recorded_at.astimezone(UTC).isoformat(timespec="microseconds"), user, org,
         action, subtype, etype, eid, str(person) if person is not None else None, fields,
         bases, purpose, outcome, detail],
        ensure_ascii=False, separators=(",", ":"), sort_keys=True,
    ).encode()


def _entry_values(row_id: int, recorded_at: datetime, e: AuditEntry) -> tuple:
    return (row_id, recorded_at, e.agent_user, e.agent_organisation_id, e.action, e.subtype,
            e.entity_type, e.entity_id, e.person_id, list(e.fields), dict(e.legal_bases),
            e.purpose, e.outcome, e.detail)


class _Chain:
    """HMAC-SHA256 links; the keyed state is prepared once and copied per row."""

    def __init__(self, key: bytes):
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def link(self, prev_hash: str, body: bytes) -> str:
        h = self._base.copy()
        h.update(prev_hash.encode())
        h.update(body)
        return h.hexdigest()


def append(session: Session, key: bytes, entries: Iterable[AuditEntry], now: datetime) -> None:
    """Add entries at the end of the chain, inside the caller's transaction."""
    entries = list(entries)
    if not entries:
        return
    now = now.astimezone(UTC)  # read back in UTC on every backend, so hash it in UTC
    last_id, last_hash = session.execute(_LOCK_HEAD).one()
    chain = _Chain(key)
    rows = []
    for e in entries:
        last_id += 1
        digest = chain.link(last_hash, canonical(_entry_values(last_id, now, e)))
        rows.append({
            "id": last_id, "recorded_at": now, "agent_user": e.agent_user,
            "agent_organisation_id": e.agent_organisation_id, "action": e.action,
            "subtype": e.subtype, "entity_type": e.entity_type, "entity_id": e.entity_id,
            "person_id": e.person_id, "fields": list(e.fields), "legal_bases": dict(e.legal_bases),
            "purpose": e.purpose, "outcome": e.outcome, "detail": e.detail,
            "prev_hash": last_hash, "hash": digest,
        })
        last_hash = digest
    session.execute(_INSERT, rows)
    session.execute(_MOVE_HEAD, {"last_id": last_id, "last_hash": last_hash})


@dataclass
class VerifyResult:
    rows: int
    ok: bool
    first_bad_id: int | None = None
    problem: str | None = None


_VERIFY_SELECT = select(
    *(audit_t.c[name] for name in HASHED_COLUMNS), audit_t.c.prev_hash, audit_t.c.hash
).order_by(audit_t.c.id)


def verify(conn: Connection, key: bytes, batch: int = 10_000) -> VerifyResult:
    """Walk the whole chain in id order; stop at the first row that does not fit."""
    chain = _Chain(key)
    expected_prev, expected_id, count = GENESIS, 1, 0
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(_VERIFY_SELECT)
    for row in result:
        row_id, prev_hash, digest = row[0], row[14], row[15]
        if row_id != expected_id:
            return VerifyResult(count, False, row_id,
                                f"expected row {expected_id} but found row {row_id}: rows missing or inserted")
        if prev_hash != expected_prev:
            return VerifyResult(count, False, row_id, "does not link to the row before it")
        try:
            intact = chain.link(expected_prev, canonical(tuple(row[:14]))) == digest
        except (ValueError, TypeError, AttributeError):
            intact = False
        if not intact:
            return VerifyResult(count, False, row_id, "content does not match its hash (row changed)")
        expected_prev, expected_id = digest, expected_id + 1
        count += 1
    head = conn.execute(select(head_t.c.last_id, head_t.c.last_hash).where(head_t.c.id == 1)).one_or_none()
    if head is not None and (head.last_id != expected_id - 1 or head.last_hash != expected_prev):
        return VerifyResult(count, False, expected_id,
                            f"the chain ends at row {expected_id - 1} but its head says {head.last_id}: rows cut off")
    return VerifyResult(count, True)
