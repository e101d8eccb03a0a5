"""Signed checkpoints of the audit trail, kept outside the database.

The hash chains of the audit trail show any change *within* a stream, but someone with the
database owner's rights can cut off the newest rows and move the heads back: what remains is a
shorter trail that is intact in itself. A checkpoint records every stream's head (last ``seq``
and its hash) with the time and the database's identity, signed with an Ed25519 key that the
database never sees, and is appended to files in a directory outside the database (WORM storage
in production). ``verify_checkpoints`` then holds the database against every checkpoint: it must
not be behind one (fewer entries, or entries missing) nor hold another row where a checkpoint
saw one (another hash).

Files: ``YYYY-MM-DD.checkpoints`` (UTC day of writing), one checkpoint per line, JSON. A line is
written once with ``O_APPEND`` (a new file with ``O_EXCL``) and never rewritten. Checkpoints are
numbered (``n``) and each holds the SHA-256 of the line before it (``prev``), across files, so a
line removed from the middle of a file, or a file from the middle of the directory, breaks the
chain. Removing the newest lines is what WORM storage prevents; ``verify`` prints the latest
checkpoint's time, so a directory that stopped growing shows.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, text, tuple_
from sqlalchemy.engine import Connection, Engine

from casemgmt.privacy.audit import GENESIS, STREAMS
from casemgmt.privacy.models import AuditEvent, AuditHead

FORMAT = 1
FILE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}\.checkpoints$")
audit_t = AuditEvent.__table__
head_t = AuditHead.__table__


class CheckpointError(Exception):
    """Checkpoints cannot be written or read: a key or directory is missing or malformed."""


class CheckpointRefused(Exception):
    """The database is behind or diverges from the last checkpoint, or the directory's last
    checkpoint is not genuine: no new checkpoint is chained to it."""


# --- keys ------------------------------------------------------------------------------------


def generate_key_file(path: Path) -> Path:
    """A new Ed25519 private key (PEM, readable by its owner only) and its public key next to it
    (``.pub``). Refuses to overwrite either. Returns the public key's path."""
    public_path = public_key_path(path)
    for existing in (path, public_path):
        if existing.exists():
            raise CheckpointError(f"{existing} exists; refusing to overwrite a checkpoint key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_new(path, private_pem, 0o600)
    _write_new(public_path, public_pem, 0o644)
    return public_path


def public_key_path(private_path: Path) -> Path:
    return private_path.with_suffix(".pub") if private_path.suffix else private_path.with_name(private_path.name + ".pub")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc.strerror}"
                              + (" (create one with `casemgmt audit keygen`)" if "private" in what else "")) from exc


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path, "checkpoint private key"), password=None)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path}: not an Ed25519 key")
    return key


def load_public_key(public_path: Path | None, private_path: Path) -> Ed25519PublicKey:
    """The verifying key: from its own file if configured, else derived from the private key."""
    if public_path is None:
        return load_private_key(private_path).public_key()
    try:
        key = serialization.load_pem_public_key(_read(public_path, "checkpoint public key"))
    except ValueError as exc:
        raise CheckpointError(f"{public_path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{public_path}: not an Ed25519 key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# --- what a checkpoint holds -----------------------------------------------------------------------


def database_identity(conn: Connection) -> dict[str, str]:
    """Which database the heads are of: the backend, the database's name and, on PostgreSQL,
    the cluster's system identifier."""
    if conn.dialect.name == "postgresql":
        name, system = conn.execute(text(
            "SELECT current_database(), (SELECT system_identifier FROM pg_control_system())")).one()
        return {"backend": "postgresql", "database": name, "system_identifier": str(system)}
    database = conn.engine.url.database
    name = str(Path(database).resolve()) if database and database != ":memory:" else ":memory:"
    return {"backend": conn.dialect.name, "database": name}


def _same_database(a: dict, b: dict) -> bool:
    # The system identifier changes when a cluster is rebuilt from a dump; the hashes decide then.
    return (a.get("backend"), a.get("database")) == (b.get("backend"), b.get("database"))


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _line_digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


@dataclass
class Checkpoint:
    """One line of a checkpoint file, as read."""

    file: str
    line: int
    raw: bytes
    body: dict | None  # None: the line is not a checkpoint at all
    signed: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def n(self) -> int | None:
        return self.body.get("n") if self.body else None

    @property
    def label(self) -> str:
        at = f", {self.body.get('at')}" if self.body else ""
        return f"checkpoint n={self.n} ({self.where}{at})"

    def heads(self) -> dict[int, tuple[int, str]]:
        return {int(s): (int(q), str(h)) for s, q, h in self.body.get("streams", [])}


def _parse(file: str, number: int, raw: bytes, key: Ed25519PublicKey | None) -> Checkpoint:
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or not isinstance(body.get("sig"), str):
            raise ValueError
    except ValueError:
        return Checkpoint(file, number, raw, None)
    cp = Checkpoint(file, number, raw, body)
    if key is not None:
        unsigned = {k: v for k, v in body.items() if k != "sig"}
        try:
            key.verify(base64.b64decode(body["sig"], validate=True), _canonical(unsigned))
            cp.signed = True
        except (InvalidSignature, ValueError):
            pass
    return cp


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if FILE_PATTERN.match(p.name) and p.is_file())


def read_checkpoints(directory: Path, key: Ed25519PublicKey) -> tuple[list[Checkpoint], list[str]]:
    """Every line of every checkpoint file, in order, with its signature checked; and lines cut
    off by an interrupted write (no newline at the end of a file)."""
    checkpoints, torn = [], []
    for path in _files(directory):
        data = path.read_bytes()
        lines = data.split(b"\n")
        if lines[-1]:
            torn.append(f"{path.name}:{len(lines)}")
        for number, raw in enumerate(lines[:-1], start=1):
            checkpoints.append(_parse(path.name, number, raw, key))
    return checkpoints, torn


def _last_checkpoint(directory: Path, key: Ed25519PublicKey) -> Checkpoint | None:
    """The directory's last line, for the next one to chain to."""
    for path in reversed(_files(directory)):
        data = path.read_bytes()
        if not data:
            continue
        if not data.endswith(b"\n"):
            raise CheckpointRefused(f"{path} ends in an incomplete line (an interrupted write); "
                                    "verify the directory and start a new one")
        lines = data.split(b"\n")[:-1]
        return _parse(path.name, len(lines), lines[-1], key)
    return None


# --- writing ---------------------------------------------------------------------------------------


@dataclass
class Written:
    n: int
    path: Path
    line: int
    entries: int

    def describe(self) -> str:
        return f"audit checkpoint n={self.n} written to {self.path}:{self.line} ({self.entries} entries in {STREAMS} streams)"


def _heads(conn: Connection) -> dict[int, tuple[int, str]]:
    rows = conn.execute(select(head_t.c.stream, head_t.c.last_seq, head_t.c.last_hash).order_by(head_t.c.stream))
    return {r.stream: (r.last_seq, r.last_hash) for r in rows}


def _hashes_at(conn: Connection, places: set[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The stored hash at each (stream, seq) that exists."""
    found: dict[tuple[int, int], str] = {}
    ordered = sorted(places)
    for i in range(0, len(ordered), 500):
        chunk = ordered[i:i + 500]
        rows = conn.execute(select(audit_t.c.stream, audit_t.c.seq, audit_t.c.hash)
                            .where(tuple_(audit_t.c.stream, audit_t.c.seq).in_(chunk)))
        found.update({(r.stream, r.seq): r.hash for r in rows})
    return found


def _compare(cp: Checkpoint, heads: dict[int, tuple[int, str]],
             stored: dict[tuple[int, int], str]) -> dict[int, str]:
    """What is wrong with the database against one checkpoint, per stream."""
    problems = {}
    for stream, (seq, digest) in sorted(cp.heads().items()):
        if seq <= 0:
            continue
        head = heads.get(stream, (0, GENESIS))[0]
        at = stored.get((stream, seq))
        if head < seq:
            problems[stream] = (f"stream {stream} is behind it: the database's head is at entry {head}, "
                                f"the checkpoint saw entry {seq} (entries cut off)")
        elif at is None:
            problems[stream] = f"stream {stream}: entry {seq}, which the checkpoint saw, is missing"
        elif at != digest:
            problems[stream] = (f"stream {stream} diverges from it: entry {seq} has another hash "
                                "than the checkpoint saw (entries rewritten)")
    return problems


def write_checkpoint(engine: Engine, directory: Path, key: Ed25519PrivateKey,
                     now: datetime | None = None) -> Written:
    """Append a signed checkpoint of every stream's head to ``directory``. Refuses (nothing is
    written) when the database is behind or diverges from the directory's last checkpoint, or that
    checkpoint's signature does not verify: a new checkpoint must never bless a shortened trail."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    public = key.public_key()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        raise CheckpointError(f"cannot open checkpoint directory {directory}: {exc.strerror}") from exc
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)  # one writer at a time on this host
        last = _last_checkpoint(directory, public)
        with engine.connect() as conn, conn.begin():
            identity = database_identity(conn)
            heads = _heads(conn)
            if last is not None:
                if not last.signed:
                    raise CheckpointRefused(f"the last {last.label} does not verify with this key "
                                            f"(key id {key_id(public)}): not chaining to it")
                if not _same_database(last.body.get("database", {}), identity):
                    raise CheckpointRefused(f"{directory} holds checkpoints of database "
                                            f"{last.body.get('database')}, not of {identity}")
                stored = _hashes_at(conn, {(s, q) for s, (q, _) in last.heads().items() if q > 0})
                problems = _compare(last, heads, stored)
                if problems:
                    raise CheckpointRefused(f"against the last {last.label}: " + "; ".join(problems.values()))
        body = {
            "v": FORMAT,
            "n": (last.n + 1) if last is not None else 1,
            "prev": _line_digest(last.raw) if last is not None else GENESIS,
            "at": now.isoformat(timespec="microseconds"),
            "database": identity,
            "streams": [[s, q, h] for s, (q, h) in sorted(heads.items())],
            "key": key_id(public),
        }
        body["sig"] = base64.b64encode(key.sign(_canonical(body))).decode()
        line = _canonical(body) + b"\n"
        # Never write into a file that sorts before the last one (a clock set back a day).
        name = max(f"{now:%Y-%m-%d}.checkpoints", last.file if last is not None else "")
        path = directory / name
        try:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
                created = True
            except FileExistsError:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                created = False
            try:
                if os.write(fd, line) != len(line):
                    raise CheckpointError(f"short write to {path}")
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                os.fsync(dir_fd)
        except OSError as exc:
            raise CheckpointError(f"cannot append to {path}: {exc.strerror}") from exc
        line_number = last.line + 1 if last is not None and last.file == name else 1
        return Written(body["n"], path, line_number, sum(q for q, _ in heads.values()))
    finally:
        os.close(dir_fd)


# --- verifying -------------------------------------------------------------------------------------


@dataclass
class CheckpointReport:
    checkpoints: int = 0
    latest: Checkpoint | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_checkpoints(conn: Connection, directory: Path, key: Ed25519PublicKey) -> CheckpointReport:
    """Every checkpoint in ``directory``: its signature, its place in the chain, its database,
    and the database against it (not behind, no other row at a checkpointed place). A live
    trail that has grown since passes."""
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint directory {directory}")
    report = CheckpointReport()
    checkpoints, torn = read_checkpoints(directory, key)
    report.checkpoints = len(checkpoints)
    report.problems += [f"{where}: incomplete line (an interrupted write, or cut)" for where in torn]
    if not checkpoints:
        report.problems.append(f"no checkpoints in {directory}")
        return report
    with conn.begin() if not conn.in_transaction() else nullcontext():
        identity = database_identity(conn)
    previous: Checkpoint | None = None  # the line before, whatever it holds
    numbered: Checkpoint | None = None  # the last line with a number
    genuine: list[Checkpoint] = []
    for cp in checkpoints:
        if cp.body is None:
            report.problems.append(f"{cp.where}: not a checkpoint (unreadable line)")
        elif not cp.signed:
            signer = cp.body.get("key")
            hint = f" (signed with key id {signer}, verifying with {key_id(key)})" if signer != key_id(key) else ""
            report.problems.append(f"{cp.label}: signature does not verify: forged or altered{hint}")
        if cp.body is not None and isinstance(cp.n, int):
            expected_n = numbered.n + 1 if numbered is not None else 1
            if cp.n != expected_n:
                after = f"after {numbered.label}" if numbered is not None else "at the start"
                gap = f"n={expected_n}..{cp.n - 1} removed" if cp.n > expected_n else "out of order"
                report.problems.append(f"{cp.label} is not the next checkpoint {after}: {gap}")
            elif cp.body.get("prev") != (_line_digest(previous.raw) if previous is not None else GENESIS):
                report.problems.append(f"{cp.label} does not chain to the line before it: that line "
                                       "was altered or replaced")
            numbered = cp
        if cp.signed:
            if not _same_database(cp.body.get("database", {}), identity):
                report.problems.append(f"{cp.label} is of database {cp.body.get('database')}, "
                                       f"not of this one {identity}")
            else:
                genuine.append(cp)
        previous = cp
    if genuine:
        report.latest = genuine[-1]
        system = identity.get("system_identifier")
        if system and report.latest.body["database"].get("system_identifier") != system:
            report.notes.append(f"the latest checkpoint was written on server "
                                f"{report.latest.body['database'].get('system_identifier')}, this is {system} "
                                "(moved or restored?)")
    report.problems += _check_database(conn, genuine)
    return report


def _check_database(conn: Connection, checkpoints: list[Checkpoint]) -> list[str]:
    with conn.begin() if not conn.in_transaction() else nullcontext():
        heads = _heads(conn)
        places: dict[tuple[int, int], dict[str, list[Checkpoint]]] = defaultdict(lambda: defaultdict(list))
        for cp in checkpoints:
            for stream, (seq, digest) in cp.heads().items():
                if seq > 0:
                    places[(stream, seq)][digest].append(cp)
        stored = _hashes_at(conn, set(places))
    problems = []
    for (stream, seq), seen in sorted(places.items()):
        if len(seen) > 1:
            a, b = (cps[0] for cps in list(seen.values())[:2])
            problems.append(f"{a.label} and {b.label} disagree on entry {seq} of stream {stream}: "
                            "the trail was rewritten between them")
    failing: dict[int, list[tuple[Checkpoint, str]]] = defaultdict(list)
    for cp in checkpoints:
        for stream, problem in _compare(cp, heads, stored).items():
            failing[stream].append((cp, problem))
    for stream, found in sorted(failing.items()):
        cp, problem = found[0]
        later = f" (and {len(found) - 1} later)" if len(found) > 1 else ""
        problems.append(f"{cp.label}{later}: {problem}")
    return problems

