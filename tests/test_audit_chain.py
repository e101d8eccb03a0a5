"""The tamper-evident audit trail on PostgreSQL: appends, verification, tampering by someone with
the table owner's rights (who can switch the append-only trigger off), concurrency, the
append-only triggers and the ``casemgmt audit verify`` command.

The trail is ``audit.STREAMS`` hash chains: an entry goes to the stream of its person (or of its
user), gets the next ``seq`` there, and its HMAC covers the previous row's hash and its own
canonical encoding (stream and seq included). ``id`` only orders rows for reading, so the tests
pick rows by (stream, seq) and look their ids up instead of assuming ids are contiguous."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import threading
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

import conftest
from casemgmt.privacy import audit
from casemgmt.privacy.audit import GENESIS, HASHED_COLUMNS, STREAMS, AuditEntry, canonical, stream_of, verify
from casemgmt.privacy.crypto import KeyRing

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PERSONS = [uuid.UUID(int=i + 1) for i in range(7)]
CHAIN_BATCHES = [1, 49, 100, 75, 50, 25]  # the ``chain`` fixture: 300 rows, six transactions


def entry(i: int) -> AuditEntry:
    """Entries that differ in every column the hash covers."""
    person = PERSONS[i % len(PERSONS)]
    return AuditEntry(
        agent_user=f"user-{i % 5}",
        agent_organisation_id=None if i % 11 == 0 else 100 + i % 3,
        action="CRUDE"[i % 5],
        subtype=("person.read", "person.update", "consent.record")[i % 3],
        entity_type="person",
        entity_id=str(person),
        person_id=None if i % 13 == 0 else person,
        fields=("family_name", "given_names", "health_notes")[: i % 4],
        legal_bases={"family_name": "statute:abh_residence", "given_names": f"consent:{person}"}
        if i % 2 else {},
        purpose=None if i % 7 == 0 else "case_management",
        outcome="denied" if i % 9 == 0 else "success",
        detail=None if i % 2 else f"Eintrag {i}: Prüfung ✓",
    )


def _layout(n: int) -> list[tuple[int, int]]:
    """(stream, seq) of entries 0..n-1 when appended in order to an empty trail."""
    seen: Counter[int] = Counter()
    out = []
    for i in range(n):
        s = stream_of(entry(i))
        seen[s] += 1
        out.append((s, seen[s]))
    return out


LAYOUT = _layout(sum(CHAIN_BATCHES))
STREAM_SIZES = Counter(s for s, _ in LAYOUT)
BIG = STREAM_SIZES.most_common(1)[0][0]  # a stream with many rows (some 40)
OTHER = STREAM_SIZES.most_common(2)[1][0]  # another one
EMPTY = min(set(range(STREAMS)) - set(STREAM_SIZES))  # a stream the chain leaves empty
TARGET = LAYOUT[153]  # entry 153: denied, with legal bases, inside a transaction's batch


def where(i: int) -> tuple[int, int]:
    """(stream, seq) of entry ``i`` of the ``chain`` fixture."""
    return LAYOUT[i]


def append_batches(session_factory, keys, batches: list[int], start: datetime = T0, first: int = 0) -> int:
    """Append ``sum(batches)`` entries, one committed transaction per batch."""
    n = first
    for t, size in enumerate(batches):
        with session_factory() as session:
            audit.append(session, keys.audit_key, [entry(n + j) for j in range(size)],
                         start + timedelta(minutes=t, microseconds=7 * t))
            session.commit()
        n += size
    return n - first


def check(db, keys) -> audit.VerifyResult:
    with db.connect() as conn:
        return verify(conn, keys.audit_key)


def owner_tamper(db, *statements: str, **params):
    """What someone with superuser rights can do (``db``: the ``owner_db`` engine): switch the
    protecting triggers off for one transaction (replica mode) and change the tables. Returns the last statement's result
    (a scalar, for INSERT ... RETURNING id)."""
    with db.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        result = None
        for sql in statements:
            result = conn.execute(text(sql), params)
        return result.scalar() if result is not None and result.returns_rows else None


def plain(db, *statements: str, **params):
    """The same without replica mode: what the grants and triggers let the service role (``db``)
    do, such as appending a forged row."""
    with db.begin() as conn:
        result = None
        for sql in statements:
            result = conn.execute(text(sql), params)
        return result.scalar() if result is not None and result.returns_rows else None


def id_at(db, stream: int, seq: int) -> int:
    with db.connect() as conn:
        return conn.execute(text("SELECT id FROM audit_events WHERE stream = :s AND seq = :q"),
                            {"s": stream, "q": seq}).scalar_one()


def row(db, row_id: int) -> dict:
    with db.connect() as conn:
        return dict(conn.execute(text("SELECT * FROM audit_events WHERE id = :id"), {"id": row_id}).mappings().one())


def row_at(db, stream: int, seq: int) -> dict:
    return row(db, id_at(db, stream, seq))


def length(db, stream: int) -> int:
    with db.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM audit_events WHERE stream = :s"), {"s": stream}).scalar()


def heads(db) -> dict[int, tuple[int, str]]:
    with db.connect() as conn:
        return {s: (n, h) for s, n, h in conn.execute(text("SELECT stream, last_seq, last_hash FROM audit_head"))}


def layout(db) -> dict[int, list[int]]:
    """The seqs of each stream, in id order."""
    out: dict[int, list[int]] = defaultdict(list)
    with db.connect() as conn:
        for s, q in conn.execute(text("SELECT stream, seq FROM audit_events ORDER BY id")):
            out[s].append(q)
    return dict(out)


def count(db) -> int:
    with db.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM audit_events")).scalar()


def intact_rows(db, stream: int, bad_seq: int) -> int:
    """The rows ``verify`` counts as intact when ``stream`` breaks at ``bad_seq`` and every other
    stream is intact: all rows of the other streams and those of ``stream`` before ``bad_seq``."""
    with db.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM audit_events WHERE stream BETWEEN 0 AND :top "
            "AND (stream <> :s OR seq < :q)"), {"top": STREAMS - 1, "s": stream, "q": bad_seq}).scalar()


def assert_streams_sound(db) -> dict[int, list[int]]:
    """Every stream: seq contiguous from 1 in id order, each row linked to the one before it,
    and its head at its last row; heads of empty streams untouched."""
    with db.connect() as conn:
        rows = conn.execute(text("SELECT stream, seq, prev_hash, hash FROM audit_events ORDER BY stream, seq")).all()
    by_stream: dict[int, list] = defaultdict(list)
    for r in rows:
        by_stream[r.stream].append(r)
    assert set(by_stream) <= set(range(STREAMS))
    hs = heads(db)
    assert set(hs) == set(range(STREAMS))
    seqs = layout(db)
    for s in range(STREAMS):
        rs = by_stream.get(s, [])
        assert [r.seq for r in rs] == list(range(1, len(rs) + 1)), f"stream {s}"
        assert seqs.get(s, []) == [r.seq for r in rs], f"stream {s}: ids do not follow seq"
        prev = GENESIS
        for r in rs:
            assert r.prev_hash == prev, f"stream {s} seq {r.seq}"
            prev = r.hash
        assert hs[s] == (len(rs), prev), f"head of stream {s}"
    return seqs


@pytest.fixture
def chain(db, session_factory, keys) -> int:
    """A trail of 300 rows in several streams, written in six transactions of different sizes."""
    n = append_batches(session_factory, keys, CHAIN_BATCHES)
    assert n == len(LAYOUT) == 300
    return n


# --- the intact trail ------------------------------------------------------------------------------


def test_the_chain_fixture_spreads_over_several_streams():
    """The scenarios below need a big stream, a second one, and an empty one."""
    assert len(STREAM_SIZES) >= 6
    assert STREAM_SIZES[BIG] >= 30 and STREAM_SIZES[OTHER] >= 30
    assert EMPTY not in STREAM_SIZES
    assert TARGET[0] == BIG or STREAM_SIZES[TARGET[0]] >= 30
    assert 1 < TARGET[1] < STREAM_SIZES[TARGET[0]]  # in the middle of its stream


def test_appends_in_several_transactions_verify(db, keys, chain):
    result = check(db, keys)
    assert result.ok, result
    assert result.rows == chain
    assert result.first_bad_id is None and result.problem is None
    assert count(db) == chain
    seqs = assert_streams_sound(db)
    assert {s: len(q) for s, q in seqs.items()} == dict(STREAM_SIZES)
    # every entry is where its stream and its place in the order of appends put it
    with db.connect() as conn:
        stored = conn.execute(text(
            f"SELECT {', '.join(HASHED_COLUMNS)} FROM audit_events ORDER BY stream, seq")).mappings().all()
    by_pos = {(r["stream"], r["seq"]): r for r in stored}
    for i, pos in enumerate(LAYOUT):
        e, r = entry(i), by_pos[pos]
        assert (r["agent_user"], r["action"], r["subtype"], r["detail"], r["outcome"]) == \
            (e.agent_user, e.action, e.subtype, e.detail, e.outcome), i
        assert r["person_id"] == (str(e.person_id) if e.person_id else None)
        assert r["fields"] == audit.json_text(list(e.fields))
        assert r["legal_bases"] == audit.json_text(e.legal_bases)


def test_empty_trail_verifies(db, keys):
    result = check(db, keys)
    assert result.ok and result.rows == 0
    assert heads(db) == {s: (0, GENESIS) for s in range(STREAMS)}


def _encode(values) -> bytes:
    """The canonical encoding written out independently: every hashed value as text (the time
    in UTC to the microsecond, NULL as NUL) with its length in front, separated by RS."""
    parts = []
    for column, value in zip(HASHED_COLUMNS, values, strict=True):
        if column == "recorded_at":
            value = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
        parts.append("\x00" if value is None else str(value))
    return "\x1e".join(f"{len(p)}:{p}" for p in parts).encode()


def test_hash_is_an_hmac_over_the_previous_hash_and_the_canonical_row(db, keys, chain):
    """Recomputed independently from the stored columns, for the first and last rows of streams
    and rows in the middle."""
    positions = [(BIG, 1), (BIG, 2), TARGET, (BIG, STREAM_SIZES[BIG]), (OTHER, 1),
                 (OTHER, STREAM_SIZES[OTHER]), where(0), where(299)]
    for stream, seq in positions:
        r = row_at(db, stream, seq)
        values = tuple(r[c] for c in HASHED_COLUMNS)
        assert values[:2] == (stream, seq)
        body = canonical(values)
        assert body == _encode(values)
        expected = hmac.new(keys.audit_key, r["prev_hash"].encode() + body, hashlib.sha256).hexdigest()
        assert r["hash"] == expected
        if seq == 1:
            assert r["prev_hash"] == GENESIS
        else:
            assert r["prev_hash"] == row_at(db, stream, seq - 1)["hash"]
    # the audit row holds no personal values, only names of fields
    assert json.loads(row_at(db, *where(3))["fields"]) == ["family_name", "given_names", "health_notes"]


def test_verify_with_another_key_fails_at_the_first_row(db, keys, chain):
    result = check(db, KeyRing.from_master(bytes(32)))
    assert not result.ok
    assert result.first_bad_id == min(row_id for row_id in [id_at(db, s, 1) for s in STREAM_SIZES])
    assert result.first_bad_id == id_at(db, *where(0))
    assert result.rows == 0
    assert "row changed" in result.problem


def test_verify_in_small_batches(db, keys, chain):
    with db.connect() as conn:
        result = verify(conn, keys.audit_key, batch=7)
    assert result.ok and result.rows == chain


# --- tampering ------------------------------------------------------------------------------------


COLUMN_CHANGES = [
    ("stream", f"{EMPTY}", "missing or inserted"),  # moved to another (empty) stream
    ("stream", "stream + 100", "no audit stream"),
    ("seq", "-seq", "missing or inserted"),
    ("agent_user", "'mallory'", "row changed"),
    ("agent_organisation_id", "agent_organisation_id + 1", "row changed"),
    ("action", "'X'", "row changed"),
    ("subtype", "'person.read.tampered'", "row changed"),
    ("entity_type", "'consent'", "row changed"),
    ("entity_id", "'0'", "row changed"),
    ("person_id", "'00000000-0000-0000-0000-00000000abcd'", "row changed"),
    ("fields", "'[\"given_names\"]'", "row changed"),
    ("legal_bases", "'{\"family_name\": \"statute:jobcenter_sgb2\", \"given_names\": \"consent:x\"}'", "row changed"),
    ("purpose", "'residence_procedure'", "row changed"),
    ("outcome", "'success'", "row changed"),
    ("detail", "'harmless'", "row changed"),
    ("recorded_at", "recorded_at + interval '1 microsecond'", "row changed"),
    ("recorded_at", "recorded_at - interval '1 day'", "row changed"),
]


def test_every_hashed_column_is_tampered_with_below():
    assert {c for c, _, _ in COLUMN_CHANGES} == set(HASHED_COLUMNS)


@pytest.mark.parametrize(("column", "new_value", "problem"), COLUMN_CHANGES)
def test_changing_one_column_of_one_row_is_detected(db, owner_db, keys, chain, column, new_value, problem):
    stream, seq = TARGET
    target = id_at(db, stream, seq)
    before = row(db, target)
    owner_tamper(owner_db, f"UPDATE audit_events SET {column} = {new_value} WHERE id = :id", id=target)
    after = row(db, target)
    assert after[column] != before[column], "the tamper step changed nothing"
    assert {c: v for c, v in after.items() if c != column} == {c: v for c, v in before.items() if c != column}
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id == target
    assert problem in result.problem
    if problem == "row changed":
        assert result.rows == intact_rows(db, stream, seq) == chain - (STREAM_SIZES[stream] - seq + 1)


def test_moving_a_row_to_the_end_of_its_stream_is_detected_at_the_gap(db, owner_db, keys, chain):
    stream, seq = TARGET
    owner_tamper(owner_db, "UPDATE audit_events SET seq = seq + 1000 WHERE stream = :s AND seq = :q", s=stream, q=seq)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, id_at(db, stream, seq + 1))
    assert f"expected entry {seq} but found entry {seq + 1}" in result.problem


def test_changing_the_hash_of_a_row_is_detected(db, owner_db, keys, chain):
    target = id_at(db, OTHER, 10)
    owner_tamper(owner_db, "UPDATE audit_events SET hash = repeat('a', 64) WHERE id = :id", id=target)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, target)
    assert "row changed" in result.problem


def test_changing_the_link_of_a_row_is_detected(db, owner_db, keys, chain):
    target = id_at(db, OTHER, 11)
    owner_tamper(owner_db, "UPDATE audit_events SET prev_hash = repeat('b', 64) WHERE id = :id", id=target)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, target)
    assert "link" in result.problem


def test_changing_the_first_or_the_last_row_of_a_stream_is_detected(db, owner_db, keys, chain):
    last, first = id_at(db, BIG, STREAM_SIZES[BIG]), id_at(db, BIG, 1)
    owner_tamper(owner_db, "UPDATE audit_events SET agent_user = 'x' WHERE id = :id", id=last)
    assert check(db, keys).first_bad_id == last
    owner_tamper(owner_db, "UPDATE audit_events SET agent_user = 'x' WHERE id = :id", id=first)
    result = check(db, keys)
    assert (result.first_bad_id, result.rows) == (first, chain - STREAM_SIZES[BIG])


def test_changes_in_two_streams_are_reported_at_the_earlier_row(db, owner_db, keys, chain):
    early, late = sorted([id_at(db, BIG, 30), id_at(db, OTHER, 5)])
    owner_tamper(owner_db, "UPDATE audit_events SET detail = 'x' WHERE id IN (:a, :b)", a=early, b=late)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, early)


def test_replacing_the_field_list_by_an_object_with_values_is_detected(db, owner_db, keys, chain):
    """``fields`` holds field names. Storing an object (which could carry personal values)
    whose keys are the same names is a changed row and must fail its HMAC."""
    target = id_at(db, *where(3))
    assert json.loads(row(db, target)["fields"]) == ["family_name", "given_names", "health_notes"]
    owner_tamper(
        owner_db,
        "UPDATE audit_events SET fields = "
        "'{\"family_name\": \"Öztürk\", \"given_names\": \"Ayşe\", \"health_notes\": \"HIV+\"}' "
        "WHERE id = :id",
        id=target,
    )
    assert json.loads(row(db, target)["fields"]) == {"family_name": "Öztürk", "given_names": "Ayşe", "health_notes": "HIV+"}
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id == target
    assert "row changed" in result.problem


def test_deleting_a_row_in_the_middle_is_detected(db, owner_db, keys, chain):
    owner_tamper(owner_db, "DELETE FROM audit_events WHERE stream = :s AND seq = 20", s=BIG)
    result = check(db, keys)
    assert not result.ok
    # the first row that does not fit is the one after the gap
    assert result.first_bad_id == id_at(db, BIG, 21)
    assert result.rows == intact_rows(db, BIG, 21) == chain - STREAM_SIZES[BIG] + 19
    assert f"stream {BIG}: expected entry 20 but found entry 21" in result.problem
    assert "missing" in result.problem


def test_deleting_several_rows_is_detected_at_the_first_gap(db, owner_db, keys, chain):
    owner_tamper(owner_db, "DELETE FROM audit_events WHERE (stream = :a AND seq BETWEEN 3 AND 6) "
                     "OR (stream = :b AND seq = 10) OR (stream = :a AND seq = 30)", a=BIG, b=OTHER)
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id == min(id_at(db, BIG, 7), id_at(db, OTHER, 11))
    # all rows of the other streams, entries 1-2 of the one and 1-9 of the other
    assert result.rows == chain - STREAM_SIZES[BIG] - STREAM_SIZES[OTHER] + 2 + 9


def test_deleting_the_first_row_of_a_stream_is_detected(db, owner_db, keys, chain):
    owner_tamper(owner_db, "DELETE FROM audit_events WHERE stream = :s AND seq = 1", s=BIG)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, id_at(db, BIG, 2))
    assert result.rows == chain - STREAM_SIZES[BIG]
    assert "expected entry 1 but found entry 2" in result.problem


@pytest.mark.parametrize("cut", [1, 5])
def test_deleting_the_last_rows_of_a_stream_is_detected_through_the_head(db, owner_db, keys, chain, cut):
    n = STREAM_SIZES[BIG]
    owner_tamper(owner_db, "DELETE FROM audit_events WHERE stream = :s AND seq > :q", s=BIG, q=n - cut)
    assert length(db, BIG) == n - cut
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id is None  # no row is wrong: some are missing after the last
    assert result.rows == chain - cut
    assert "cut off" in result.problem
    assert f"stream {BIG} ends at entry {n - cut}" in result.problem
    assert f"head says {n}" in result.problem


def test_deleting_a_whole_stream_is_detected_through_the_head(db, owner_db, keys, chain):
    owner_tamper(owner_db, "DELETE FROM audit_events WHERE stream = :s", s=OTHER)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, None, chain - STREAM_SIZES[OTHER])
    assert f"stream {OTHER} ends at entry 0" in result.problem and "cut off" in result.problem


def test_deleting_every_row_is_detected_through_the_heads(db, owner_db, keys, chain):
    owner_tamper(owner_db, "DELETE FROM audit_events")
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, None, 0)
    assert "cut off" in result.problem


def test_a_deleted_row_is_reported_before_a_cut_off_stream(db, owner_db, keys, chain):
    owner_tamper(owner_db, "DELETE FROM audit_events WHERE (stream = :a AND seq = :last) OR (stream = :b AND seq = 3)",
                 a=BIG, last=STREAM_SIZES[BIG], b=OTHER)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, id_at(db, OTHER, 4))


INSERT_COPY = (
    "INSERT INTO audit_events (stream, seq, recorded_at, agent_user, agent_organisation_id, action, "
    "subtype, entity_type, entity_id, person_id, fields, legal_bases, purpose, outcome, detail, "
    "prev_hash, hash) "
    "SELECT :stream, :seq, recorded_at, 'forger', agent_organisation_id, action, subtype, entity_type, "
    "entity_id, person_id, fields, legal_bases, purpose, outcome, detail, :prev, :hash "
    "FROM audit_events WHERE id = :src RETURNING id"
)


def test_forged_row_appended_with_a_copied_hash_is_detected(db, keys, chain):
    n = STREAM_SIZES[BIG]
    last = row_at(db, BIG, n)
    # inserting needs no trigger switched off: the table is append-only, not insert-proof
    forged = plain(db, INSERT_COPY, stream=BIG, seq=n + 1, src=last["id"], prev=last["hash"], hash=last["hash"])
    assert forged > max(id_at(db, s, STREAM_SIZES[s]) for s in STREAM_SIZES)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, forged, chain)
    assert "row changed" in result.problem


def test_forged_row_appended_with_a_made_up_hash_and_a_moved_head_is_detected(db, keys, chain):
    n = STREAM_SIZES[BIG]
    last = row_at(db, BIG, n)
    forged_hash = hashlib.sha256(b"looks like a hash").hexdigest()
    forged = plain(db, INSERT_COPY, stream=BIG, seq=n + 1, src=id_at(db, OTHER, 10),
                   prev=last["hash"], hash=forged_hash)
    # the head may move forward (that is how appends work), so the attacker moves it as well
    plain(db, "UPDATE audit_head SET last_seq = :n, last_hash = :h WHERE stream = :s", n=n + 1, h=forged_hash, s=BIG)
    assert heads(db)[BIG] == (n + 1, forged_hash)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, forged, chain)
    assert "row changed" in result.problem


def test_forged_row_inserted_in_the_middle_of_a_stream_is_detected(db, owner_db, keys, chain):
    """Renumber the rows after seq 20 to make room, then insert a copy of entry 20 as entry 21
    that links correctly to entry 20 but carries a copied hash; the head moves on by one."""
    n = STREAM_SIZES[BIG]
    r20 = row_at(db, BIG, 20)
    forged = owner_tamper(
        owner_db,
        "UPDATE audit_events SET seq = seq + 1000000 WHERE stream = :stream AND seq > 20",
        "UPDATE audit_events SET seq = seq - 1000000 + 1 WHERE stream = :stream AND seq > 1000000",
        INSERT_COPY,
        stream=BIG, seq=21, src=r20["id"], prev=r20["hash"], hash=r20["hash"],
    )
    plain(db, "UPDATE audit_head SET last_seq = last_seq + 1 WHERE stream = :s", s=BIG)
    assert sorted(layout(db)[BIG]) == list(range(1, n + 2))
    assert heads(db)[BIG][0] == n + 1
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, forged)
    assert result.rows == intact_rows(db, BIG, 21) == chain - n + 20
    assert "row changed" in result.problem


def test_forged_row_outside_every_stream_is_detected(db, keys, chain):
    """A copy of a genuine row, hash and all, put where no stream is walked."""
    r = row_at(db, *TARGET)
    forged = plain(db, INSERT_COPY, stream=99, seq=r["seq"], src=r["id"], prev=r["prev_hash"], hash=r["hash"])
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, forged, chain)
    assert "no audit stream" in result.problem


@pytest.mark.parametrize("shift", [False, True], ids=["seq_0", "renumbered"])
def test_forged_row_before_the_first_of_a_stream_is_detected(db, owner_db, keys, chain, shift):
    first = row_at(db, BIG, 1)
    statements = ["UPDATE audit_events SET seq = seq + 1000000 WHERE stream = :stream",
                  "UPDATE audit_events SET seq = seq - 1000000 + 1 WHERE stream = :stream AND seq > 1000000"] \
        if shift else []
    forged = owner_tamper(owner_db, *statements, INSERT_COPY, stream=BIG, seq=1 if shift else 0,
                          src=first["id"], prev=GENESIS, hash=first["hash"])
    if shift:
        plain(db, "UPDATE audit_head SET last_seq = last_seq + 1 WHERE stream = :s", s=BIG)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, forged, chain - STREAM_SIZES[BIG])
    assert ("row changed" if shift else "expected entry 1 but found entry 0") in result.problem


def _swap_seq(db, stream: int, a: int, b: int) -> None:
    owner_tamper(
        db,
        "UPDATE audit_events SET seq = -1 WHERE stream = :s AND seq = :a",
        "UPDATE audit_events SET seq = :a WHERE stream = :s AND seq = :b",
        "UPDATE audit_events SET seq = :b WHERE stream = :s AND seq = -1",
        s=stream, a=a, b=b,
    )


@pytest.mark.parametrize(("a", "b"), [(20, 21), (5, 30), (1, 2), (-1, 0)])
def test_reordering_two_rows_of_a_stream_is_detected(db, owner_db, keys, chain, a, b):
    n = STREAM_SIZES[BIG]
    if a < 0:  # the last two
        a, b = n + a, n + b
    id_a, id_b = id_at(db, BIG, a), id_at(db, BIG, b)
    _swap_seq(owner_db, BIG, a, b)
    assert (id_at(db, BIG, a), id_at(db, BIG, b)) == (id_b, id_a)
    result = check(db, keys)
    assert not result.ok
    # the row now standing at the earlier place does not link to the one before it
    assert result.first_bad_id == id_b
    assert result.rows == intact_rows(db, BIG, a)
    assert "does not link" in result.problem


def test_swapping_only_the_contents_of_two_rows_is_detected(db, owner_db, keys, chain):
    """Stream, seq, links and hashes stay in place; the payload of entries 20 and 21 of a stream
    is exchanged."""
    payload = [c for c in HASHED_COLUMNS if c not in ("stream", "seq")]
    sets = ", ".join(f"{c} = o.{c}" for c in payload)
    id20, id21 = id_at(db, BIG, 20), id_at(db, BIG, 21)
    r21 = row(db, id21)
    owner_tamper(
        owner_db,
        "CREATE TEMP TABLE swap_src ON COMMIT DROP AS SELECT * FROM audit_events WHERE id IN (:a, :b)",
        f"UPDATE audit_events e SET {sets} FROM swap_src o "
        "WHERE e.id IN (:a, :b) AND o.id IN (:a, :b) AND e.id <> o.id",
        a=id20, b=id21,
    )
    assert {c: row(db, id20)[c] for c in payload} == {c: r21[c] for c in payload}
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, id20)
    assert "row changed" in result.problem


def _rehash_from(db, stream: int, seq: int, key: bytes, change_sql: str) -> None:
    """Change entry ``seq`` of ``stream`` and re-link it and every later row of the stream with
    HMACs under ``key``, as an attacker would; the stream's head is moved too."""
    with db.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(change_sql), {"s": stream, "q": seq})
        prev = conn.execute(text("SELECT hash FROM audit_events WHERE stream = :s AND seq = :q"),
                            {"s": stream, "q": seq - 1}).scalar() or GENESIS
        cols = ", ".join(HASHED_COLUMNS)
        rows = conn.execute(text(f"SELECT id, {cols} FROM audit_events WHERE stream = :s AND seq >= :q ORDER BY seq"),
                            {"s": stream, "q": seq}).all()
        assert rows
        for r in rows:
            digest = hmac.new(key, prev.encode() + canonical(tuple(r[1:])), hashlib.sha256).hexdigest()
            conn.execute(text("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE id = :i"),
                         {"p": prev, "h": digest, "i": r[0]})
            prev = digest
        # the head keeps its seq and only changes its hash, which its trigger would refuse
        conn.execute(text("UPDATE audit_head SET last_seq = :n, last_hash = :h WHERE stream = :s"),
                     {"n": rows[-1].seq, "h": prev, "s": stream})


def test_a_row_rehashed_with_the_wrong_key_is_detected(db, owner_db, keys, chain):
    wrong = KeyRing.from_master(b"\x01" * 32).audit_key
    stream, seq = TARGET
    _rehash_from(owner_db, stream, seq, wrong,
                 "UPDATE audit_events SET outcome = 'success', detail = 'nothing to see' "
                 "WHERE stream = :s AND seq = :q")
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id == id_at(db, stream, seq)
    assert result.rows == intact_rows(db, stream, seq) == chain - (STREAM_SIZES[stream] - seq + 1)
    assert "row changed" in result.problem


def test_a_single_row_rehashed_with_the_wrong_key_is_detected(db, owner_db, keys, chain):
    wrong = hashlib.sha256(b"guessed").digest()
    r = row_at(db, OTHER, 8)
    body = canonical(tuple({**r, "agent_user": "mallory"}[c] for c in HASHED_COLUMNS))
    forged = hmac.new(wrong, r["prev_hash"].encode() + body, hashlib.sha256).hexdigest()
    owner_tamper(owner_db, "UPDATE audit_events SET agent_user = 'mallory', hash = :h WHERE id = :id", h=forged, id=r["id"])
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, r["id"])


def test_rehashing_with_the_right_key_is_what_the_key_protects(db, owner_db, keys, chain):
    """Control for the wrong-key test: the same procedure with the real key goes unnoticed, so
    that test fails only because of the key (and the secrecy of the key is what matters)."""
    stream, seq = TARGET
    _rehash_from(owner_db, stream, seq, keys.audit_key,
                 "UPDATE audit_events SET outcome = 'success', detail = 'nothing to see' "
                 "WHERE stream = :s AND seq = :q")
    assert row_at(db, stream, seq)["detail"] == "nothing to see"
    result = check(db, keys)
    assert result.ok and result.rows == chain


# --- streams ----------------------------------------------------------------------------------------


def test_a_persons_history_is_one_stream_in_order_and_persons_spread_over_streams(db, session_factory, keys):
    persons = [uuid.uuid5(uuid.NAMESPACE_URL, f"urn:person:{k}") for k in range(40)]
    users = [f"clerk-{k}" for k in range(6)]
    step = 0
    for t in range(12):  # twelve transactions, each about several persons and some about none
        batch = []
        for j in range(10):
            p = None if (t + j) % 7 == 0 else persons[(3 * t + 7 * j) % len(persons)]
            batch.append(AuditEntry(agent_user=users[(t + j) % len(users)], agent_organisation_id=100,
                                    action="R", subtype="person.read", entity_type="person",
                                    entity_id=str(p) if p else None, person_id=p, detail=f"step {step:04d}"))
            step += 1
        with session_factory() as session:
            audit.append(session, keys.audit_key, batch, T0 + timedelta(minutes=t))
            session.commit()
    assert check(db, keys).ok
    assert_streams_sound(db)
    with db.connect() as conn:
        rows = conn.execute(text(
            "SELECT stream, seq, person_id, agent_user, detail FROM audit_events ORDER BY stream, seq")).all()
    assert len(rows) == step
    history: dict[str, list] = defaultdict(list)
    for r in rows:
        owner = r.person_id or f"user:{r.agent_user}"
        history[owner].append(r)
    for owner, hist in history.items():
        # one stream per person (or per user for entries about no person) ...
        assert len({r.stream for r in hist}) == 1, owner
        person = uuid.UUID(owner) if not owner.startswith("user:") else None
        expected = person.int % STREAMS if person else stream_of(
            AuditEntry(agent_user=owner[5:], agent_organisation_id=None, action="R", subtype="x", entity_type="x"))
        assert hist[0].stream == expected, owner
        # ... in the order the entries were appended
        assert [r.seq for r in hist] == sorted(r.seq for r in hist)
        assert [r.detail for r in hist] == sorted(r.detail for r in hist), owner
    # different persons spread over the streams
    person_streams = {r.stream for r in rows if r.person_id}
    assert len(person_streams) >= STREAMS // 2, person_streams
    per_stream = Counter(r.stream for r in rows)
    assert max(per_stream.values()) < len(rows) // 3, per_stream


def test_stream_of_is_the_persons_or_else_the_users(db):
    p = uuid.UUID(int=16 * 12345 + 5)
    e = AuditEntry(agent_user="a", agent_organisation_id=1, action="R", subtype="s", entity_type="person", person_id=p)
    assert stream_of(e) == 5
    assert stream_of(dataclasses.replace(e, agent_user="someone else")) == 5
    no_person = dataclasses.replace(e, person_id=None)
    assert stream_of(no_person) == stream_of(dataclasses.replace(no_person, agent_organisation_id=2))
    assert {stream_of(dataclasses.replace(no_person, agent_user=f"u{k}")) for k in range(200)} == set(range(STREAMS))


# --- transactions and concurrency ----------------------------------------------------------------


def test_a_rolled_back_append_leaves_no_row_and_no_gap(db, session_factory, keys):
    append_batches(session_factory, keys, [5])
    before = heads(db)
    with session_factory() as session:
        audit.append(session, keys.audit_key, [entry(i) for i in range(5, 15)], T0 + timedelta(hours=1))
        session.flush()
        session.rollback()
    assert heads(db) == before
    assert count(db) == 5
    assert check(db, keys).ok
    # an exception inside the transaction rolls the audit rows back with it
    with pytest.raises(RuntimeError), session_factory() as session, session.begin():
        audit.append(session, keys.audit_key, [entry(99)], T0 + timedelta(hours=2))
        raise RuntimeError("the access itself failed")
    assert heads(db) == before
    # the next appends continue each stream without a gap (ids may have gaps: they are not hashed)
    append_batches(session_factory, keys, [3], start=T0 + timedelta(hours=3), first=5)
    assert count(db) == 8
    seqs = assert_streams_sound(db)
    assert {s: len(q) for s, q in seqs.items()} == dict(Counter(s for s, _ in LAYOUT[:8]))
    result = check(db, keys)
    assert result.ok and result.rows == 8


def test_appending_nothing_writes_nothing(db, session_factory, keys):
    with session_factory() as session:
        audit.append(session, keys.audit_key, [], T0)
        session.commit()
    assert count(db) == 0
    assert heads(db) == {s: (0, GENESIS) for s in range(STREAMS)}


def test_times_in_other_zones_are_hashed_in_utc(db, session_factory, keys):
    from zoneinfo import ZoneInfo

    berlin = datetime(2026, 7, 1, 14, 30, 15, 123456, tzinfo=ZoneInfo("Europe/Berlin"))
    with session_factory() as session:
        audit.append(session, keys.audit_key, [entry(1), entry(2)], berlin)
        session.commit()
    assert row_at(db, stream_of(entry(1)), 1)["recorded_at"] == berlin
    assert check(db, keys).ok


def _run_threads(worker, threads: int) -> None:
    """``worker(t)`` for t in 0..threads-1, each in a thread, all finished within a minute."""
    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not any(w.is_alive() for w in workers)


@pytest.mark.parametrize("same_person", [False, True], ids=["many_persons", "one_person"])
def test_concurrent_appends_from_eight_threads_form_valid_streams(db, session_factory, keys, same_person):
    threads, rounds, per_round = 8, 5, 4
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []
    one = uuid.UUID(int=16 * 1000 + 9)

    def person(t: int, r: int, j: int) -> uuid.UUID:
        # many persons: every transaction touches several streams, which other threads share
        return one if same_person else uuid.UUID(int=1 + (t * rounds + r) * per_round + j * 5)

    def worker(t: int) -> None:
        try:
            session = session_factory()
            try:
                barrier.wait(timeout=30)
                for r in range(rounds):
                    # some work in the transaction before the audit row, as in the service
                    session.execute(select(1))
                    batch = []
                    for j in range(per_round):
                        p = person(t, r, j)
                        batch.append(dataclasses.replace(entry(1000 * t + 10 * r + j), person_id=p,
                                                         entity_id=str(p), detail=f"t{t} r{r} j{j}"))
                    audit.append(session, keys.audit_key, batch, T0 + timedelta(seconds=t, milliseconds=r))
                    session.commit()
            finally:
                session.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    _run_threads(worker, threads)
    assert not errors, errors
    total = threads * rounds * per_round
    assert count(db) == total
    seqs = assert_streams_sound(db)  # contiguous seq, links and heads in every stream
    if same_person:
        assert list(seqs) == [one.int % STREAMS] and len(seqs[one.int % STREAMS]) == total
    else:
        assert len(seqs) == STREAMS
    result = check(db, keys)
    assert result.ok, result
    assert result.rows == total
    # each thread's entries stand in its order of appends within their stream
    with db.connect() as conn:
        rows = conn.execute(text("SELECT stream, seq, detail, person_id FROM audit_events ORDER BY stream, seq")).all()
    for r in rows:
        assert r.stream == uuid.UUID(r.person_id).int % STREAMS
    by_thread: dict[tuple[int, str], list[str]] = defaultdict(list)
    for r in rows:
        by_thread[(r.stream, r.detail.split()[0])].append(r.detail)
    for details in by_thread.values():
        assert details == sorted(details, key=lambda d: tuple(int(x[1:]) for x in d.split()[1:]))


# --- append-only triggers -------------------------------------------------------------------------


@pytest.fixture
def consent_rows(db, session_factory, privacy, world, keys, clock):
    """A person with two consents, one of them withdrawn, written through the service."""
    from casemgmt.demo.seed import actor_of
    from casemgmt.jurisdictions.models import Organisation
    from casemgmt.privacy.schemas import ConsentIn, PersonCreateIn, RecipientIn
    from casemgmt.privacy.service import create_person, withdraw_consent

    with session_factory() as session:
        ki = session.get(Organisation, world.organisations["ennetal_ki"])
        actor = actor_of(ki, "cm-test", frozenset({"case_manager"}))
        jc = world.organisations["ennetal_jobcenter"]
        body = PersonCreateIn(
            fields={"family_name": "Testperson", "given_names": "Audit", "birth_date": "1990-01-01"},
            consents=[
                ConsentIn(recipients=[RecipientIn(organisation_id=jc)], categories=["benefits", "housing"],
                          purpose="case_management", consequences_explained=True,
                          evidence_reference="Formular 1", language="de"),
                ConsentIn(recipients=[RecipientIn(organisation_id=jc)], categories=["education"],
                          purpose="case_management", consequences_explained=True,
                          evidence_reference="Formular 2", language="de"),
            ],
        )
        person = create_person(session, privacy, actor, body, clock())
        consent_ids = session.scalars(
            text("SELECT id FROM consents WHERE person_id = :p ORDER BY evidence_reference"), {"p": person.id}
        ).all()
    with session_factory() as session:
        withdraw_consent(session, privacy, actor, consent_ids[0], "test", clock.advance(days=1))
    assert check(db, keys).ok
    return consent_ids


@pytest.mark.parametrize(("table", "sql"), [
    ("audit_events", "UPDATE audit_events SET agent_user = 'mallory' WHERE id = (SELECT min(id) FROM audit_events)"),
    ("audit_events", "UPDATE audit_events SET hash = hash"),
    ("audit_events", "UPDATE audit_events SET seq = seq + 1000"),
    ("audit_events", "DELETE FROM audit_events WHERE id = (SELECT max(id) FROM audit_events)"),
    ("audit_events", "DELETE FROM audit_events"),
    ("consents", "UPDATE consents SET valid_until = now()"),
    ("consents", "UPDATE consents SET categories = '[\"health\"]', explicit_special = true"),
    ("consents", "DELETE FROM consents WHERE id NOT IN (SELECT consent_id FROM consent_withdrawals)"),
    ("consent_withdrawals", "UPDATE consent_withdrawals SET withdrawn_at = withdrawn_at + interval '1 year'"),
    ("consent_withdrawals", "DELETE FROM consent_withdrawals"),
])
def test_update_and_delete_are_refused_by_postgresql(db, owner_db, keys, consent_rows, table, sql):
    """The triggers, second line behind the service role's grants: they stop even the owner."""
    with db.connect() as conn:
        before = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
    assert before > 0
    with pytest.raises(DBAPIError) as exc, owner_db.begin() as conn:
        conn.execute(text(sql))
    assert "append-only" in str(exc.value)
    assert table in str(exc.value)
    assert getattr(exc.value.orig, "sqlstate", None) == "42501"  # insufficient_privilege
    with db.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == before
    assert check(db, keys).ok


def test_triggers_are_enabled_after_the_owner_tamper_helper(db, owner_db, keys, chain):
    owner_tamper(owner_db, "UPDATE audit_events SET detail = 'x' WHERE id = :id", id=id_at(db, BIG, 5))
    with pytest.raises(DBAPIError, match="append-only"), owner_db.begin() as conn:
        conn.execute(text("UPDATE audit_events SET detail = 'y' WHERE id = :id"), {"id": id_at(db, BIG, 6)})
    with pytest.raises(DBAPIError, match="only moves forward"), owner_db.begin() as conn:
        conn.execute(text("UPDATE audit_head SET last_seq = last_seq - 1 WHERE stream = :s"), {"s": BIG})
    with db.connect() as conn:
        enabled = dict(conn.execute(text(
            "SELECT tgname, tgenabled FROM pg_trigger "
            "WHERE tgname IN ('audit_events_append_only', 'audit_head_forward')")).all())
    assert enabled == {"audit_events_append_only": "O", "audit_head_forward": "O"}


# --- the command line ------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, service_url, keys):
    from casemgmt.config import get_settings

    assert KeyRing.from_master(conftest.MASTER_KEY) == keys, "conftest imported twice"
    monkeypatch.setenv("CASEMGMT_DATABASE_URL", service_url)
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(conftest.MASTER_KEY).decode())
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_audit_verify_intact_then_broken(db, owner_db, keys, chain, cli_env, capsys):
    from casemgmt.cli import main

    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr()
    assert f"audit trail intact: {chain} rows verified" in out.out
    assert out.err == ""

    stream, seq = TARGET
    target = id_at(db, stream, seq)
    owner_tamper(owner_db, "UPDATE audit_events SET purpose = 'naturalisation' WHERE id = :id", id=target)
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr()
    assert f"BROKEN at row {target}" in out.err
    assert "row changed" in out.err
    assert f"({intact_rows(db, stream, seq)} rows verified intact)" in out.err
    assert out.out == ""


def test_cli_audit_verify_names_the_gap(db, owner_db, keys, chain, cli_env, capsys):
    from casemgmt.cli import main

    owner_tamper(owner_db, "DELETE FROM audit_events WHERE stream = :s AND seq = 20", s=OTHER)
    assert main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert f"BROKEN at row {id_at(db, OTHER, 21)}" in err
    assert "expected entry 20 but found entry 21" in err


def test_cli_audit_verify_names_a_cut_off_stream(db, owner_db, keys, chain, cli_env, capsys):
    from casemgmt.cli import main

    owner_tamper(owner_db, "DELETE FROM audit_events WHERE stream = :s AND seq = :q", s=OTHER, q=STREAM_SIZES[OTHER])
    assert main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert "BROKEN" in err and "at row" not in err
    assert f"stream {OTHER}" in err and "cut off" in err
    assert f"({chain - 1} rows verified intact)" in err


def test_cli_audit_verify_with_another_master_key_fails(db, keys, chain, cli_env, capsys, monkeypatch):
    from casemgmt.cli import main
    from casemgmt.config import get_settings

    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(bytes(32)).decode())
    get_settings.cache_clear()
    assert main(["audit", "verify"]) == 1
    assert f"BROKEN at row {id_at(db, *where(0))}" in capsys.readouterr().err


def test_cli_audit_verify_with_a_malformed_master_key_exits_2(db, cli_env, capsys, monkeypatch):
    from casemgmt.cli import main
    from casemgmt.config import get_settings

    monkeypatch.setenv("CASEMGMT_MASTER_KEY", "not base64!")
    get_settings.cache_clear()
    assert main(["audit", "verify"]) == 2
    assert "not base64" in capsys.readouterr().err


# --- verifying in parallel ----------------------------------------------------------------------------


def _parallel(pg_url, keys, key: bytes | None = None):
    from casemgmt.privacy.audit import verify_parallel

    return verify_parallel(pg_url, key or keys.audit_key, workers=3, min_rows_per_worker=1)


def test_parallel_verification_agrees_on_an_intact_trail(db, pg_url, keys, chain):
    result = _parallel(pg_url, keys)
    assert result == check(db, keys)
    assert (result.ok, result.rows) == (True, chain)


def _changed(db, stream, seq):
    owner_tamper(db, "UPDATE audit_events SET detail = 'rewritten' WHERE stream = :s AND seq = :q", s=stream, q=seq)


def _deleted(db, stream, seq):
    owner_tamper(db, "DELETE FROM audit_events WHERE stream = :s AND seq = :q", s=stream, q=seq)


PARALLEL_TAMPERING = {
    "changed_middle": lambda db: _changed(db, *TARGET),
    "changed_first": lambda db: _changed(db, OTHER, 1),
    "changed_last": lambda db: _changed(db, BIG, STREAM_SIZES[BIG]),
    "changed_in_two_streams": lambda db: (_changed(db, BIG, 25), _changed(db, OTHER, 3)),
    "deleted_middle": lambda db: _deleted(db, *TARGET),
    "deleted_first": lambda db: _deleted(db, BIG, 1),
    "deleted_last": lambda db: _deleted(db, OTHER, STREAM_SIZES[OTHER]),
    "deleted_stream": lambda db: owner_tamper(db, "DELETE FROM audit_events WHERE stream = :s", s=BIG),
    "reordered": lambda db: _swap_seq(db, OTHER, 7, 8),
    "stray": lambda db: plain(db, INSERT_COPY, stream=99, seq=1, src=id_at(db, BIG, 1), prev=GENESIS,
                              hash=row_at(db, BIG, 1)["hash"]),
}


@pytest.mark.parametrize("tamper", list(PARALLEL_TAMPERING))
def test_parallel_verification_finds_what_the_single_walk_finds(db, owner_db, pg_url, keys, chain, tamper):
    PARALLEL_TAMPERING[tamper](owner_db)
    single, parallel = check(db, keys), _parallel(pg_url, keys)
    assert not single.ok
    assert parallel == single


def test_parallel_verification_with_another_key_agrees(db, pg_url, keys, chain):
    other = KeyRing.from_master(bytes(32)).audit_key
    with db.connect() as conn:
        single = verify(conn, other)
    parallel = _parallel(pg_url, keys, other)
    assert not parallel.ok
    assert parallel == single
    assert parallel.first_bad_id == id_at(db, *where(0))


# --- verifying a trail that is in use ---------------------------------------------------------------


def test_an_append_committed_while_verify_runs_is_no_tampering(db, pg_url, session_factory, keys, chain, monkeypatch):
    """``casemgmt audit verify`` runs against the live database. An entry appended (and
    committed) by the service while the streams are being walked is a genuine, correctly
    linked row: the trail is intact at every moment, so verify must not call it broken.

    ``verify`` reads all heads first and then walks the streams one statement after another,
    each in its own snapshot (READ COMMITTED); a stream that grew in between ends after the
    head it was compared with and is reported as "entries cut off"."""
    from casemgmt.privacy.audit import verify_parallel

    walk = audit._verify_stream
    appended = []

    def walk_while_the_service_appends(conn, key, stream, head, *args, **kwargs):
        if stream == OTHER and not appended:
            e = next(entry(i) for i in range(300, 400) if stream_of(entry(i)) == OTHER)
            with session_factory() as session:  # another connection: the service
                audit.append(session, keys.audit_key, [e], T0 + timedelta(days=1))
                session.commit()
            appended.append(e)
        return walk(conn, key, stream, head, *args, **kwargs)

    monkeypatch.setattr(audit, "_verify_stream", walk_while_the_service_appends)
    # what the command does for a trail of this size (one process)
    result = verify_parallel(pg_url, keys.audit_key)
    assert appended
    monkeypatch.undo()
    assert check(db, keys).ok  # the trail is intact, with the new row
    assert result.ok, result


# --- the append on a head read earlier in the transaction (one round trip) ------------------------


def _statements(connection) -> list[str]:
    """The statements sent on this connection from now on (the listener is the connection's, so
    it ends with it)."""
    seen: list[str] = []
    from sqlalchemy import event as sa_event

    sa_event.listen(connection, "before_cursor_execute",
                    lambda conn, cursor, statement, *a: seen.append(statement))
    return seen


def _stage_on_hint(session, keys, entries, at, person):
    """As a service does: a statement of the transaction brings the head along, the entries are
    staged, the commit appends them."""
    stream = audit.stream_of_person(person)
    hint = session.execute(select(audit.head_hint_column(stream))).scalar()
    audit.remember_head(session, stream, hint)
    session.info["audit_key"] = keys.audit_key
    audit.stage(session, entries, at)


def test_an_append_on_a_fresh_head_is_one_statement_and_verifies(db, session_factory, keys):
    person = PERSONS[2]
    append_batches(session_factory, keys, [20])
    before = heads(db)[person.int % STREAMS]
    batch = [dataclasses.replace(entry(100 + j), person_id=person) for j in range(3)]
    with session_factory() as session:
        _stage_on_hint(session, keys, batch, T0 + timedelta(hours=1), person)
        seen = _statements(session.connection())
        session.commit()
    audit_statements = [s for s in seen if "audit_" in s]
    assert len(audit_statements) == 1, audit_statements  # no locked SELECT of the head before it
    assert "FOR UPDATE" not in audit_statements[0]
    after = heads(db)[person.int % STREAMS]
    assert after[0] == before[0] + 3
    assert_streams_sound(db)
    assert check(db, keys).ok and count(db) == 23


def test_a_head_that_moved_after_it_was_read_is_locked_and_read_again(db, session_factory, keys):
    person = PERSONS[4]
    append_batches(session_factory, keys, [10])
    stream = person.int % STREAMS
    mine = dataclasses.replace(entry(200), person_id=person, detail="mine")
    with session_factory() as session:
        _stage_on_hint(session, keys, [mine], T0 + timedelta(hours=2), person)
        # another transaction appends to the same stream after the head was read
        with session_factory() as other:
            audit.append(other, keys.audit_key,
                         [dataclasses.replace(entry(201), person_id=person, detail="theirs")], T0 + timedelta(hours=2))
            other.commit()
        seen = _statements(session.connection())
        session.commit()
    assert any("FOR UPDATE" in s for s in seen if "audit_head" in s)  # the fallback ran
    seqs = assert_streams_sound(db)
    with db.connect() as conn:
        details = conn.execute(text("SELECT detail FROM audit_events WHERE stream = :s ORDER BY seq"),
                               {"s": stream}).scalars().all()
    assert details[-2:] == ["theirs", "mine"]  # both kept, one stream, no fork
    assert len(seqs[stream]) == len(details)
    assert check(db, keys).ok and count(db) == 12


def test_a_hint_does_not_outlive_its_transaction(db, session_factory, keys):
    person = PERSONS[1]
    with session_factory() as session:
        _stage_on_hint(session, keys, [dataclasses.replace(entry(300), person_id=person)], T0, person)
        session.rollback()
        assert "audit_head_hints" not in session.info
        _stage_on_hint(session, keys, [dataclasses.replace(entry(301), person_id=person)], T0, person)
        session.commit()
        assert "audit_head_hints" not in session.info
    assert count(db) == 1 and check(db, keys).ok


def test_hinted_appends_from_eight_threads_to_one_stream_stay_one_chain(db, session_factory, keys):
    threads, rounds = 8, 6
    person = uuid.UUID(int=16 * 77 + 3)
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            with session_factory() as session:
                barrier.wait(timeout=30)
                for r in range(rounds):
                    batch = [dataclasses.replace(entry(10 * t + r), person_id=person, detail=f"t{t} r{r} {j}")
                             for j in range(1 + r % 2)]
                    _stage_on_hint(session, keys, batch, T0 + timedelta(seconds=t, milliseconds=r), person)
                    session.execute(select(1))  # the rest of the transaction's work
                    session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    _run_threads(worker, threads)
    assert not errors, errors
    total = threads * sum(1 + r % 2 for r in range(rounds))
    seqs = assert_streams_sound(db)
    assert list(seqs) == [person.int % STREAMS] and len(seqs[person.int % STREAMS]) == total
    result = check(db, keys)
    assert result.ok and result.rows == total


def test_the_sql_form_of_a_persons_stream_is_the_stream_python_computes(db):
    persons = [uuid.uuid4() for _ in range(200)] + [uuid.UUID(int=16 * k + k % 16) for k in range(40)]
    expr = audit.person_stream_sql("p.id")
    with db.connect() as conn:
        rows = conn.execute(select(text("p.id"), expr).select_from(
            text("unnest(CAST(:ids AS uuid[])) AS p(id)")), {"ids": [str(p) for p in persons]}).all()
    assert {uuid.UUID(str(r[0])): r[1] for r in rows} == {p: audit.stream_of_person(p) for p in persons}
