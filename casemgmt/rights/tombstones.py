"""Erasure tombstones outside the database, and replaying them after a restore.

A backup restored after an erasure brings the person's wrapped data key back, and with it every
ciphertext. So each erasure is also appended as one line of JSON to ``erasures.tombstones`` in
the tombstone directory (``CASEMGMT_ERASURE_TOMBSTONE_DIR``, by default the audit checkpoint
directory, on WORM storage), which a restore of the database does not touch. ``replay`` applies
every tombstone of the file and of the table again: a person whose key is back is erased again,
and tombstones of the table missing from the file are added to it. Lines hold only the person's
pseudonymous id, the time, the cause and the request's id.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemgmt.database import unit_of_work
from casemgmt.persons.models import Person
from casemgmt.privacy.models import PersonField, PersonKey
from casemgmt.rights.models import ErasureTombstone

FILE_NAME = "erasures.tombstones"


@dataclass(frozen=True)
class Tombstone:
    person_id: uuid.UUID
    erased_at: datetime
    cause: str
    request_id: uuid.UUID | None

    def line(self) -> bytes:
        return (json.dumps({"person_id": str(self.person_id), "erased_at": self.erased_at.isoformat(),
                            "cause": self.cause, "request_id": str(self.request_id) if self.request_id else None},
                           sort_keys=True, separators=(",", ":")) + "\n").encode()

    @classmethod
    def of(cls, row: ErasureTombstone) -> Tombstone:
        return cls(row.person_id, row.erased_at, row.cause, row.request_id)


def read(directory: Path) -> list[Tombstone]:
    path = directory / FILE_NAME
    if not path.exists():
        return []
    out = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            body = json.loads(raw)
            out.append(Tombstone(uuid.UUID(body["person_id"]), datetime.fromisoformat(body["erased_at"]),
                                 body["cause"], uuid.UUID(body["request_id"]) if body.get("request_id") else None))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{path}:{number}: not a tombstone line") from None
    return out


def append(directory: Path, tombstones: list[Tombstone]) -> None:
    """Append lines (``O_APPEND``, one writer at a time on this host), synced to disk."""
    if not tombstones:
        return
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / FILE_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = b"".join(t.line() for t in tombstones)
        if os.write(fd, data) != len(data):
            raise OSError(f"short write to {directory / FILE_NAME}")
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ReplayReport:
    tombstones: int = 0
    erased_again: list[uuid.UUID] = field(default_factory=list)
    not_in_database: int = 0
    added_to_file: int = 0

    def describe(self) -> str:
        return (f"{self.tombstones} tombstones: {len(self.erased_again)} persons erased again, "
                f"{self.not_in_database} not in this database, {self.added_to_file} added to the file")


def replay(factory, directory: Path | None, now: datetime, dry_run: bool = False) -> ReplayReport:
    """Erase again every person a tombstone names whose key or data is back (after a restore)."""
    from casemgmt.rights.erasure import destroy

    report = ReplayReport()
    in_file = read(directory) if directory is not None else []
    with factory() as session:
        in_table = [Tombstone.of(r) for r in session.scalars(select(ErasureTombstone))]
        session.rollback()
    merged: dict[uuid.UUID, Tombstone] = {}
    for t in [*in_file, *in_table]:
        merged.setdefault(t.person_id, t)
    report.tombstones = len(merged)
    for t in merged.values():
        with factory() as session, unit_of_work(session):
            person = session.get(Person, t.person_id, with_for_update=True)
            if person is None:
                report.not_in_database += 1
                continue
            back = (person.processing != "erased"
                    or session.scalar(select(PersonKey.person_id).where(PersonKey.person_id == t.person_id)) is not None
                    or session.scalar(select(PersonField.person_id).where(PersonField.person_id == t.person_id).limit(1)) is not None)
            if not back and session.get(ErasureTombstone, t.person_id) is not None:
                continue
            report.erased_again.append(t.person_id)
            if dry_run:
                session.rollback()
                continue
            if session.get(ErasureTombstone, t.person_id) is None:
                session.add(ErasureTombstone(person_id=t.person_id, erased_at=t.erased_at, cause=t.cause,
                                             request_id=t.request_id))
                session.flush()
            destroy(session, t.person_id, now)
            from casemgmt.privacy.audit import AuditEntry
            from casemgmt.privacy.service import write_audit

            write_audit(session, [AuditEntry(
                agent_user="system:erasure-replay", agent_organisation_id=None, action="D",
                subtype="person.erase.replay", entity_type="person", entity_id=str(t.person_id),
                person_id=t.person_id, detail=f"tombstone of {t.erased_at.isoformat()} applied again")], now)
    if directory is not None and not dry_run:
        known = {t.person_id for t in in_file}
        missing = [t for t in in_table if t.person_id not in known]
        append(directory, missing)
        report.added_to_file = len(missing)
    return report
