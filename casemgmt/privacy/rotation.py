"""Master key rotation: every person's data key rewrapped under a new master key, online.

The operator makes the new master key current (``CASEMGMT_MASTER_KEY[_FILE]``) and names the old
one as retired (``CASEMGMT_RETIRED_MASTER_KEYS[_FILE]``), for the service and for ``casemgmt keys
rotate``. From then on the service wraps new keys under the new master key and unwraps old ones
by their key id, so it keeps serving while the rotation runs. ``rotate``:

1. archives the audit key of each retired master key in ``audit_keys``, wrapped under the new
   master key, so audit rows written before (and by services not yet restarted) still verify
   once the old master key is gone; the archived key that verifies the rows written before key
   ids existed is marked for them;
2. rewraps the person keys not yet under the current master key, a batch per transaction,
   claimed with ``FOR UPDATE SKIP LOCKED``, and recomputes in the same transaction what was
   keyed by the old master key (the blind index of name and birth date, the name-token digests).

Each batch commits on its own, so a crash loses at most the batch in flight; running the command
again continues with the keys still under an old master key (it is idempotent). ``status``
counts the keys under each master key: when none is left under a retired one, the retired key
can be removed from the configuration. The audit keys are written by the schema owner (the
service role may only read ``audit_keys``), so ``keys rotate`` runs as the owner
(``CASEMGMT_MIGRATION_DATABASE_URL``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from casemgmt.database import unit_of_work
from casemgmt.persons.models import Person
from casemgmt.privacy.audit import STREAMS, AuditEntry, AuditKeySet, HASHED_COLUMNS, _Chain, canonical
from casemgmt.privacy.crypto import KeyRing, decrypt_field
from casemgmt.privacy.models import AuditEvent, AuditKey, PersonField, PersonKey, PersonNameToken

audit_t = AuditEvent.__table__
keys_t = PersonKey.__table__
archive_t = AuditKey.__table__

SYSTEM_USER = "system:key-rotation"


def audit_keyset(conn: Connection, keys: KeyRing) -> AuditKeySet:
    """Every audit key the trail may use: those of the known master keys and the archived ones."""
    known = keys.audit_keys()
    unlabelled: list[bytes] = []
    for row in conn.execute(select(archive_t)):
        try:
            key = keys.unwrap_audit_key(row.key_id, row.wrapped_key, row.wrapped_under)
        except Exception:  # noqa: BLE001 - an archive row of a master key not configured here
            continue
        known.setdefault(row.key_id, key)
        if row.covers_unlabelled:
            unlabelled.append(key)
    return AuditKeySet(known, tuple(unlabelled) or tuple(dict.fromkeys(known.values())))


def _first_unlabelled_row(conn: Connection):
    cols = [audit_t.c[c] for c in HASHED_COLUMNS]
    return conn.execute(select(*cols, audit_t.c.prev_hash, audit_t.c.hash)
                        .where(audit_t.c.key_id.is_(None)).order_by(audit_t.c.id).limit(1)).first()


def archive_audit_keys(conn: Connection, keys: KeyRing, now: datetime) -> int:
    """Archive the audit keys of the retired master keys (and rewrap earlier archives) under the
    current master key. Returns the number of archive rows written or rewrapped."""
    changed = 0
    rows = {r.key_id: r for r in conn.execute(select(archive_t))}
    covered = any(r.covers_unlabelled for r in rows.values())
    first = None if covered else _first_unlabelled_row(conn)
    for ring in keys.retired:
        if ring.key_id in rows:
            continue
        covers = False
        if first is not None:
            covers = _Chain(ring.audit_key).link(first[15], canonical(first[:15])) == first[16]
            covered = covered or covers
        conn.execute(insert(archive_t).values(
            key_id=ring.key_id, wrapped_key=keys.wrap_audit_key(ring.key_id, ring.audit_key),
            wrapped_under=keys.key_id, covers_unlabelled=covers, created_at=now))
        changed += 1
    for row in rows.values():
        if row.wrapped_under == keys.key_id:
            continue
        key = keys.unwrap_audit_key(row.key_id, row.wrapped_key, row.wrapped_under)
        conn.execute(update(archive_t).where(archive_t.c.key_id == row.key_id).values(
            wrapped_key=keys.wrap_audit_key(row.key_id, key), wrapped_under=keys.key_id))
        changed += 1
    return changed


@dataclass
class RotationReport:
    archived_audit_keys: int = 0
    rewrapped: int = 0
    batches: int = 0
    remaining: int = 0

    def describe(self) -> str:
        return (f"rewrapped {self.rewrapped} person keys in {self.batches} batches "
                f"({self.archived_audit_keys} audit keys archived); {self.remaining} keys remain under "
                "another master key" + ("" if self.remaining else ": rotation complete"))


def _not_current(keys: KeyRing):
    return or_(keys_t.c.master_key_id.is_(None), keys_t.c.master_key_id != keys.key_id)


def _reindex(session: Session, keys: KeyRing, person_id: uuid.UUID, data_key: bytes) -> None:
    """The blind index and name-token digests of the person under the current master key."""
    from casemgmt.conferences.scrubber import name_tokens

    names = dict(session.execute(select(PersonField.field, PersonField.ciphertext).where(
        PersonField.person_id == person_id,
        PersonField.field.in_(("family_name", "given_names", "birth_date")))).all())
    values = {f: decrypt_field(data_key, person_id, f, blob) for f, blob in names.items()}
    if all(values.get(n) for n in ("family_name", "given_names", "birth_date")):
        session.execute(update(Person).where(Person.id == person_id).values(
            blind_index=keys.blind_index(values["family_name"], values["given_names"], values["birth_date"])))
    if "family_name" in values or "given_names" in values:
        session.execute(delete(PersonNameToken).where(PersonNameToken.person_id == person_id))
        digests = {keys.name_token(t) for n in ("family_name", "given_names")
                   for t in name_tokens(values.get(n) or "")}
        if digests:
            session.execute(insert(PersonNameToken), [{"person_id": person_id, "digest": d} for d in sorted(digests)])


def rotate_batch(session: Session, keys: KeyRing, now: datetime, batch: int = 500) -> int:
    """Rewrap one batch of person keys under the current master key; returns how many."""
    with unit_of_work(session):
        claim = (select(keys_t.c.person_id, keys_t.c.wrapped_key, keys_t.c.master_key_id)
                 .where(_not_current(keys)).order_by(keys_t.c.person_id).limit(batch))
        if session.get_bind().dialect.name == "postgresql":
            claim = claim.with_for_update(skip_locked=True)
        rows = session.execute(claim).all()
        for row in rows:
            data_key = keys.unwrap(row.person_id, row.wrapped_key, row.master_key_id)
            session.execute(update(keys_t).where(keys_t.c.person_id == row.person_id).values(
                wrapped_key=keys.wrap(row.person_id, data_key), master_key_id=keys.key_id))
            _reindex(session, keys, row.person_id, data_key)
        if rows:
            from casemgmt.privacy.service import write_audit

            write_audit(session, [AuditEntry(
                agent_user=SYSTEM_USER, agent_organisation_id=None, action="U", subtype="keys.rewrap",
                entity_type="master_key", entity_id=keys.key_id,
                detail=f"{len(rows)} person keys rewrapped under master key {keys.key_id}")], now)
    return len(rows)


def rotate(factory, keys: KeyRing, now: datetime, batch: int = 500,
           max_batches: int | None = None) -> RotationReport:
    """Archive the audit keys, then rewrap batch after batch until none is left (or
    ``max_batches`` ran: a test's stand-in for a crash)."""
    report = RotationReport()
    with factory() as session, unit_of_work(session):
        report.archived_audit_keys = archive_audit_keys(session.connection(), keys, now)
    with factory() as session:
        while max_batches is None or report.batches < max_batches:
            done = rotate_batch(session, keys, now, batch)
            if not done:
                break
            report.rewrapped += done
            report.batches += 1
        report.remaining = session.scalar(select(func.count()).select_from(keys_t).where(_not_current(keys))) or 0
        session.rollback()
    return report


@dataclass
class KeyStatus:
    current: str
    retired: list[str]
    person_keys: dict[str, int] = field(default_factory=dict)  # master key id (or "unlabelled") -> n
    audit_rows: dict[str, int] = field(default_factory=dict)  # audit key id (or "unlabelled") -> n
    archived_audit_keys: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"current master key: {self.current}",
                 f"retired master keys configured: {', '.join(self.retired) or 'none'}",
                 "person keys by master key:"]
        for key_id, n in sorted(self.person_keys.items()):
            mark = " (current)" if key_id == self.current else ""
            lines.append(f"  {key_id}{mark}: {n}")
        lines.append("audit rows by audit key:")
        for key_id, n in sorted(self.audit_rows.items()):
            lines.append(f"  {key_id}: {n}")
        lines.append(f"archived audit keys: {', '.join(self.archived_audit_keys) or 'none'}")
        left = sum(n for k, n in self.person_keys.items() if k != self.current)
        lines.append("rotation complete" if not left else f"{left} person keys still under another master key: "
                     "run `casemgmt keys rotate`")
        return "\n".join(lines)


def key_status(conn: Connection, keys: KeyRing) -> KeyStatus:
    status = KeyStatus(keys.key_id, [r.key_id for r in keys.retired])
    for key_id, n in conn.execute(select(keys_t.c.master_key_id, func.count()).group_by(keys_t.c.master_key_id)):
        status.person_keys[key_id or "unlabelled"] = n
    for key_id, n in conn.execute(select(audit_t.c.key_id, func.count()).group_by(audit_t.c.key_id)):
        status.audit_rows[key_id or "unlabelled"] = n
    status.archived_audit_keys = list(conn.execute(select(archive_t.c.key_id).order_by(archive_t.c.created_at)).scalars())
    return status


__all__ = ["STREAMS", "audit_keyset", "archive_audit_keys", "rotate", "rotate_batch", "key_status"]
