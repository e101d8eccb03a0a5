"""The tamper-evident audit trail on PostgreSQL: appends, verification, tampering by someone with
the table owner's rights (who can switch the append-only trigger off), concurrency, the
append-only triggers and the ``casemgmt audit verify`` command."""

from __future__ import annotations

import base64
import hashlib
import json
import hmac
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

import conftest
from casemgmt.privacy import audit
from casemgmt.privacy.audit import GENESIS, HASHED_COLUMNS, AuditEntry, canonical, verify
from casemgmt.privacy.crypto import KeyRing

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PERSONS = [uuid.UUID(int=i + 1) for i in range(7)]


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


def append_batches(session_factory, keys, batches: list[int], start: datetime = T0) -> int:
    """Append ``sum(batches)`` entries, one committed transaction per batch."""
    n = 0
    for t, size in enumerate(batches):
        with session_factory() as session:
            audit.append(session, keys.audit_key, [entry(n + j) for j in range(size)],
                         start + timedelta(minutes=t, microseconds=7 * t))
            session.commit()
        n += size
    return n


def check(db, keys) -> audit.VerifyResult:
    with db.connect() as conn:
        return verify(conn, keys.audit_key)


def owner_tamper(db, *statements: str, **params) -> None:
    """What someone with superuser rights can do: switch the protecting triggers off for one
    transaction (replica mode) and change the tables."""
    with db.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for sql in statements:
            conn.execute(text(sql), params)


def row(db, row_id: int) -> dict:
    with db.connect() as conn:
        return dict(conn.execute(text("SELECT * FROM audit_events WHERE id = :id"), {"id": row_id}).mappings().one())


def head(db) -> tuple[int, str]:
    with db.connect() as conn:
        return tuple(conn.execute(text("SELECT last_id, last_hash FROM audit_head WHERE id = 1")).one())


def ids(db) -> list[int]:
    with db.connect() as conn:
        return list(conn.scalars(text("SELECT id FROM audit_events ORDER BY id")))


@pytest.fixture
def chain(db, session_factory, keys) -> int:
    """A chain of 300 rows written in six transactions of different sizes."""
    n = append_batches(session_factory, keys, [1, 49, 100, 75, 50, 25])
    assert n == 300
    return n


# --- the intact chain ---------------------------------------------------------------------------


def test_appends_in_several_transactions_verify(db, keys, chain):
    result = check(db, keys)
    assert result.ok, result
    assert result.rows == chain
    assert result.first_bad_id is None and result.problem is None
    assert ids(db) == list(range(1, chain + 1))
    assert head(db) == (chain, row(db, chain)["hash"])
    first = row(db, 1)
    assert first["prev_hash"] == GENESIS
    # each row links to the one before it
    for i in (2, 50, 51, 151, 300):
        assert row(db, i)["prev_hash"] == row(db, i - 1)["hash"]


def test_empty_chain_verifies(db, keys):
    result = check(db, keys)
    assert result.ok and result.rows == 0


def test_hash_is_an_hmac_over_the_previous_hash_and_the_canonical_row(db, keys, chain):
    """Recomputed independently from the stored columns."""
    for i in (1, 2, 150, 300):
        r = row(db, i)
        body = canonical(tuple(r[c] for c in HASHED_COLUMNS))
        expected = hmac.new(keys.audit_key, r["prev_hash"].encode() + body, hashlib.sha256).hexdigest()
        assert r["hash"] == expected
    # the audit row holds no personal values, only names of fields
    assert json.loads(row(db, 4)["fields"]) == ["family_name", "given_names", "health_notes"]


def test_verify_with_another_key_fails_at_the_first_row(db, keys, chain):
    result = check(db, KeyRing.from_master(bytes(32)))
    assert not result.ok
    assert result.first_bad_id == 1
    assert result.rows == 0


def test_verify_in_small_batches(db, keys, chain):
    with db.connect() as conn:
        result = verify(conn, keys.audit_key, batch=7)
    assert result.ok and result.rows == chain


# --- tampering ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("column", "new_value"), [
    ("agent_user", "'mallory'"),
    ("agent_organisation_id", "agent_organisation_id + 1"),
    ("action", "'X'"),
    ("subtype", "'person.read.tampered'"),
    ("entity_type", "'consent'"),
    ("entity_id", "'0'"),
    ("person_id", "'00000000-0000-0000-0000-00000000abcd'"),
    ("fields", "'[\"given_names\"]'"),
    ("legal_bases", "'{\"family_name\": \"statute:jobcenter_sgb2\", \"given_names\": \"consent:x\"}'"),
    ("purpose", "'residence_procedure'"),
    ("outcome", "'success'"),
    ("detail", "'harmless'"),
    ("recorded_at", "recorded_at + interval '1 microsecond'"),
    ("recorded_at", "recorded_at - interval '1 day'"),
])
def test_changing_one_column_of_one_row_is_detected(db, keys, chain, column, new_value):
    target = 154  # holds entry 153: denied, with legal bases, inside a transaction's batch
    before = row(db, target)
    owner_tamper(db, f"UPDATE audit_events SET {column} = {new_value} WHERE id = :id", id=target)
    after = row(db, target)
    assert after[column] != before[column], "the tamper step changed nothing"
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id == target
    assert result.rows == target - 1
    assert "row changed" in result.problem


def test_changing_the_hash_or_the_link_of_a_row_is_detected(db, keys, chain):
    owner_tamper(db, "UPDATE audit_events SET hash = repeat('a', 64) WHERE id = 40")
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, 40)


def test_changing_the_link_of_a_row_is_detected(db, keys, chain):
    owner_tamper(db, "UPDATE audit_events SET prev_hash = repeat('b', 64) WHERE id = 41")
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, 41)
    assert "link" in result.problem


def test_changing_the_first_or_the_last_row_is_detected(db, keys, chain):
    owner_tamper(db, "UPDATE audit_events SET agent_user = 'x' WHERE id = :id", id=chain)
    assert check(db, keys).first_bad_id == chain
    owner_tamper(db, "UPDATE audit_events SET agent_user = 'x' WHERE id = 1")
    assert check(db, keys).first_bad_id == 1


def test_replacing_the_field_list_by_an_object_with_values_is_detected(db, keys, chain):
    """``fields`` holds field names. Storing an object (which could carry personal values)
    whose keys are the same names is a changed row and must fail its HMAC."""
    target = 4
    assert json.loads(row(db, target)["fields"]) == ["family_name", "given_names", "health_notes"]
    owner_tamper(
        db,
        "UPDATE audit_events SET fields = "
        "'{\"family_name\": \"Öztürk\", \"given_names\": \"Ayşe\", \"health_notes\": \"HIV+\"}' "
        "WHERE id = :id",
        id=target,
    )
    assert json.loads(row(db, target)["fields"]) == {"family_name": "Öztürk", "given_names": "Ayşe", "health_notes": "HIV+"}
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id == target


def test_deleting_a_row_in_the_middle_is_detected(db, keys, chain):
    owner_tamper(db, "DELETE FROM audit_events WHERE id = 150")
    result = check(db, keys)
    assert not result.ok
    # the first row that does not fit is the one after the gap
    assert result.first_bad_id == 151
    assert result.rows == 149
    assert "expected row 150" in result.problem


def test_deleting_several_rows_is_detected_at_the_first_gap(db, keys, chain):
    owner_tamper(db, "DELETE FROM audit_events WHERE id BETWEEN 20 AND 30 OR id = 200")
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, 31, 19)


def test_deleting_the_first_row_is_detected(db, keys, chain):
    owner_tamper(db, "DELETE FROM audit_events WHERE id = 1")
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, 2, 0)


def test_deleting_the_last_row_is_detected_through_the_head(db, keys, chain):
    owner_tamper(db, "DELETE FROM audit_events WHERE id = :id", id=chain)
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id == chain
    assert result.rows == chain - 1
    assert "cut off" in result.problem
    assert str(chain) in result.problem


def test_deleting_the_last_rows_is_detected_through_the_head(db, keys, chain):
    owner_tamper(db, "DELETE FROM audit_events WHERE id > 250")
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, 251, 250)


def test_deleting_every_row_is_detected_through_the_head(db, keys, chain):
    owner_tamper(db, "DELETE FROM audit_events")
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, 1, 0)


INSERT_COPY = (
    "INSERT INTO audit_events (id, recorded_at, agent_user, agent_organisation_id, action, subtype, "
    "entity_type, entity_id, person_id, fields, legal_bases, purpose, outcome, detail, prev_hash, hash) "
    "SELECT :new_id, recorded_at, 'forger', agent_organisation_id, action, subtype, entity_type, "
    "entity_id, person_id, fields, legal_bases, purpose, outcome, detail, {prev}, {hash} "
    "FROM audit_events WHERE id = :src"
)


def test_forged_row_appended_with_a_copied_hash_is_detected(db, keys, chain):
    last = row(db, chain)
    owner_tamper(db, INSERT_COPY.format(prev=":prev", hash=":hash"), new_id=chain + 1, src=chain,
                 prev=last["hash"], hash=last["hash"])
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id == chain + 1
    assert result.rows == chain


def test_forged_row_appended_with_a_made_up_hash_and_a_moved_head_is_detected(db, keys, chain):
    last = row(db, chain)
    forged_hash = hashlib.sha256(b"looks like a hash").hexdigest()
    owner_tamper(db, INSERT_COPY.format(prev=":prev", hash=":hash"), new_id=chain + 1, src=10,
                 prev=last["hash"], hash=forged_hash)
    with db.begin() as conn:  # audit_head is not append-only: the attacker moves it as well
        conn.execute(text("UPDATE audit_head SET last_id = :i, last_hash = :h"), {"i": chain + 1, "h": forged_hash})
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, chain + 1)
    assert "row changed" in result.problem


def test_forged_row_inserted_in_the_middle_is_detected(db, keys, chain):
    """Renumber the rows after 100 to make room, then insert a copy of row 100 as row 101 that
    links correctly to row 100 but carries a copied hash."""
    r100 = row(db, 100)
    owner_tamper(
        db,
        "UPDATE audit_events SET id = id + 1000000 WHERE id > 100",
        "UPDATE audit_events SET id = id - 1000000 + 1 WHERE id > 1000000",
        INSERT_COPY.format(prev=":prev", hash=":hash"),
        new_id=101, src=100, prev=r100["hash"], hash=r100["hash"],
    )
    with db.begin() as conn:
        conn.execute(text("UPDATE audit_head SET last_id = last_id + 1"))
    assert ids(db) == list(range(1, chain + 2))
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, 101, 100)


def test_forged_row_before_the_first_is_detected(db, keys, chain):
    owner_tamper(db, INSERT_COPY.format(prev=":prev", hash=":hash"), new_id=0, src=1,
                 prev=GENESIS, hash=row(db, 1)["hash"])
    result = check(db, keys)
    assert (result.ok, result.first_bad_id, result.rows) == (False, 0, 0)


def _swap(db, a: int, b: int) -> None:
    owner_tamper(
        db,
        "UPDATE audit_events SET id = -1 WHERE id = :a",
        "UPDATE audit_events SET id = :a WHERE id = :b",
        "UPDATE audit_events SET id = :b WHERE id = -1",
        a=a, b=b,
    )


@pytest.mark.parametrize(("a", "b"), [(120, 121), (60, 240), (1, 2), (299, 300)])
def test_reordering_two_rows_is_detected(db, keys, chain, a, b):
    _swap(db, a, b)
    assert ids(db) == list(range(1, chain + 1))
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id == min(a, b)
    assert result.rows == min(a, b) - 1


def test_swapping_only_the_contents_of_two_rows_is_detected(db, keys, chain):
    """Ids, links and hashes stay in place; the payload of rows 70 and 71 is exchanged."""
    payload = [c for c in HASHED_COLUMNS if c not in ("id",)]
    sets = ", ".join(f"{c} = o.{c}" for c in payload)
    owner_tamper(
        db,
        "CREATE TEMP TABLE swap_src ON COMMIT DROP AS SELECT * FROM audit_events WHERE id IN (70, 71)",
        f"UPDATE audit_events e SET {sets} FROM swap_src o WHERE e.id + o.id = 141 AND e.id <> o.id",
    )
    # row k held entry k-1; row 70 now carries row 71's payload
    assert row(db, 70)["agent_user"] == entry(70).agent_user != entry(69).agent_user
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, 70)


def _rehash_from(db, start: int, key: bytes, change_sql: str) -> None:
    """Change row ``start`` and re-link it and every later row with HMACs under ``key``, as an
    attacker would; the head is moved too."""
    owner_tamper(db, change_sql, id=start)
    with db.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        prev = conn.execute(text("SELECT hash FROM audit_events WHERE id = :i"), {"i": start - 1}).scalar() or GENESIS
        cols = ", ".join(HASHED_COLUMNS)
        rows = conn.execute(text(f"SELECT {cols} FROM audit_events WHERE id >= :i ORDER BY id"), {"i": start}).all()
        last_id = start - 1
        for r in rows:
            digest = hmac.new(key, prev.encode() + canonical(tuple(r)), hashlib.sha256).hexdigest()
            conn.execute(text("UPDATE audit_events SET prev_hash = :p, hash = :h WHERE id = :i"),
                         {"p": prev, "h": digest, "i": r[0]})
            prev, last_id = digest, r[0]
        conn.execute(text("UPDATE audit_head SET last_id = :i, last_hash = :h"), {"i": last_id, "h": prev})


def test_a_row_rehashed_with_the_wrong_key_is_detected(db, keys, chain):
    wrong = KeyRing.from_master(b"\x01" * 32).audit_key
    _rehash_from(db, 222, wrong, "UPDATE audit_events SET outcome = 'success', detail = 'nothing to see' WHERE id = :id")
    result = check(db, keys)
    assert not result.ok
    assert result.first_bad_id == 222
    assert result.rows == 221
    assert "row changed" in result.problem


def test_a_single_row_rehashed_with_the_wrong_key_is_detected(db, keys, chain):
    wrong = hashlib.sha256(b"guessed").digest()
    r = row(db, 80)
    body = canonical(tuple({**r, "agent_user": "mallory"}[c] for c in HASHED_COLUMNS))
    forged = hmac.new(wrong, r["prev_hash"].encode() + body, hashlib.sha256).hexdigest()
    owner_tamper(db, "UPDATE audit_events SET agent_user = 'mallory', hash = :h WHERE id = :id", h=forged, id=80)
    result = check(db, keys)
    assert (result.ok, result.first_bad_id) == (False, 80)


def test_rehashing_with_the_right_key_is_what_the_key_protects(db, keys, chain):
    """Control for the test above: the same procedure with the real key goes unnoticed, so the
    wrong-key test fails only because of the key (and the secrecy of the key is what matters)."""
    _rehash_from(db, 222, keys.audit_key, "UPDATE audit_events SET detail = 'rewritten' WHERE id = :id")
    result = check(db, keys)
    assert result.ok and result.rows == chain


# --- transactions and concurrency ----------------------------------------------------------------


def test_a_rolled_back_append_leaves_no_row_and_no_gap(db, session_factory, keys):
    append_batches(session_factory, keys, [5])
    before = head(db)
    with session_factory() as session:
        audit.append(session, keys.audit_key, [entry(i) for i in range(10)], T0 + timedelta(hours=1))
        session.flush()
        session.rollback()
    assert head(db) == before
    assert ids(db) == [1, 2, 3, 4, 5]
    assert check(db, keys).ok
    # an exception inside the transaction rolls the audit rows back with it
    with pytest.raises(RuntimeError), session_factory() as session, session.begin():
        audit.append(session, keys.audit_key, [entry(99)], T0 + timedelta(hours=2))
        raise RuntimeError("the access itself failed")
    append_batches(session_factory, keys, [3], start=T0 + timedelta(hours=3))
    assert ids(db) == list(range(1, 9))
    result = check(db, keys)
    assert result.ok and result.rows == 8


def test_appending_nothing_writes_nothing(db, session_factory, keys):
    with session_factory() as session:
        audit.append(session, keys.audit_key, [], T0)
        session.commit()
    assert ids(db) == []
    assert head(db) == (0, GENESIS)


def test_times_in_other_zones_are_hashed_in_utc(db, session_factory, keys):
    from zoneinfo import ZoneInfo

    berlin = datetime(2026, 7, 1, 14, 30, 15, 123456, tzinfo=ZoneInfo("Europe/Berlin"))
    with session_factory() as session:
        audit.append(session, keys.audit_key, [entry(1), entry(2)], berlin)
        session.commit()
    assert row(db, 1)["recorded_at"] == berlin
    assert check(db, keys).ok


def test_concurrent_appends_from_eight_threads_form_one_valid_chain(db, session_factory, keys):
    threads, rounds, per_round = 8, 5, 4
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            session = session_factory()
            try:
                barrier.wait(timeout=30)
                for r in range(rounds):
                    # some work in the transaction before the audit row, as in the service
                    session.execute(select(1))
                    audit.append(session, keys.audit_key,
                                 [entry(1000 * t + 10 * r + j) for j in range(per_round)],
                                 T0 + timedelta(seconds=t, milliseconds=r))
                    session.commit()
            finally:
                session.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not errors, errors
    total = threads * rounds * per_round
    assert ids(db) == list(range(1, total + 1))
    assert head(db)[0] == total
    result = check(db, keys)
    assert result.ok, result
    assert result.rows == total
    with db.connect() as conn:
        users = conn.execute(text("SELECT agent_user, count(*) FROM audit_events GROUP BY 1")).all()
    assert sum(n for _, n in users) == total


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
        withdraw_consent(session, actor, consent_ids[0], "test", clock.advance(days=1))
    assert check(db, keys).ok
    return consent_ids


@pytest.mark.parametrize(("table", "sql"), [
    ("audit_events", "UPDATE audit_events SET agent_user = 'mallory' WHERE id = (SELECT min(id) FROM audit_events)"),
    ("audit_events", "UPDATE audit_events SET hash = hash"),
    ("audit_events", "DELETE FROM audit_events WHERE id = (SELECT max(id) FROM audit_events)"),
    ("audit_events", "DELETE FROM audit_events"),
    ("consents", "UPDATE consents SET valid_until = now()"),
    ("consents", "UPDATE consents SET categories = '[\"health\"]', explicit_special = true"),
    ("consents", "DELETE FROM consents WHERE id NOT IN (SELECT consent_id FROM consent_withdrawals)"),
    ("consent_withdrawals", "UPDATE consent_withdrawals SET withdrawn_at = withdrawn_at + interval '1 year'"),
    ("consent_withdrawals", "DELETE FROM consent_withdrawals"),
])
def test_update_and_delete_are_refused_by_postgresql(db, keys, consent_rows, table, sql):
    with db.connect() as conn:
        before = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
    assert before > 0
    with pytest.raises(DBAPIError) as exc, db.begin() as conn:
        conn.execute(text(sql))
    assert "append-only" in str(exc.value)
    assert table in str(exc.value)
    assert getattr(exc.value.orig, "sqlstate", None) == "42501"  # insufficient_privilege
    with db.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == before
    assert check(db, keys).ok


def test_triggers_are_enabled_after_the_owner_tamper_helper(db, keys, chain):
    owner_tamper(db, "UPDATE audit_events SET detail = 'x' WHERE id = 5")
    with pytest.raises(DBAPIError, match="append-only"), db.begin() as conn:
        conn.execute(text("UPDATE audit_events SET detail = 'y' WHERE id = 6"))
    with db.connect() as conn:
        enabled = conn.execute(text(
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_events_append_only'")).scalar()
    assert enabled == "O"


# --- the command line ------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, pg_url, keys):
    from casemgmt.config import get_settings

    assert KeyRing.from_master(conftest.MASTER_KEY) == keys, "conftest imported twice"
    monkeypatch.setenv("CASEMGMT_DATABASE_URL", pg_url)
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(conftest.MASTER_KEY).decode())
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_audit_verify_intact_then_broken(db, keys, chain, cli_env, capsys):
    from casemgmt.cli import main

    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr()
    assert f"audit trail intact: {chain} rows verified" in out.out
    assert out.err == ""

    owner_tamper(db, "UPDATE audit_events SET purpose = 'naturalisation' WHERE id = 123")
    assert main(["audit", "verify"]) == 1
    out = capsys.readouterr()
    assert "BROKEN at row 123" in out.err
    assert "122 rows before it are intact" in out.err


def test_cli_audit_verify_names_the_gap(db, keys, chain, cli_env, capsys):
    from casemgmt.cli import main

    owner_tamper(db, "DELETE FROM audit_events WHERE id = :id", id=chain)
    assert main(["audit", "verify"]) == 1
    assert f"BROKEN at row {chain}" in capsys.readouterr().err


def test_cli_audit_verify_with_another_master_key_fails(db, keys, chain, cli_env, capsys, monkeypatch):
    from casemgmt.cli import main
    from casemgmt.config import get_settings

    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(bytes(32)).decode())
    get_settings.cache_clear()
    assert main(["audit", "verify"]) == 1
    assert "BROKEN at row 1" in capsys.readouterr().err


def test_cli_audit_verify_with_a_malformed_master_key_exits_2(db, cli_env, capsys, monkeypatch):
    from casemgmt.cli import main
    from casemgmt.config import get_settings

    monkeypatch.setenv("CASEMGMT_MASTER_KEY", "not base64!")
    get_settings.cache_clear()
    assert main(["audit", "verify"]) == 2
    assert "not base64" in capsys.readouterr().err


# --- verifying in parallel ranges ----------------------------------------------------------------


def _parallel(pg_url, keys):
    from casemgmt.privacy.audit import verify_parallel

    return verify_parallel(pg_url, keys.audit_key, workers=3, min_rows_per_worker=50)


def test_parallel_verification_agrees_on_an_intact_chain(db, pg_url, keys, chain):
    result = _parallel(pg_url, keys)
    assert (result.ok, result.rows) == (True, chain)


@pytest.mark.parametrize("victim", [1, 99, 100, 101, 200, 201, 300])
def test_parallel_verification_finds_a_deleted_row_on_and_off_range_seams(db, pg_url, keys, chain, victim):
    owner_tamper(db, "DELETE FROM audit_events WHERE id = :id", id=victim)
    single, parallel = check(db, keys), _parallel(pg_url, keys)
    assert not parallel.ok
    assert (parallel.first_bad_id, parallel.rows) == (single.first_bad_id, single.rows)


@pytest.mark.parametrize("victim", [2, 100, 101, 201, 300])
def test_parallel_verification_finds_a_changed_row_like_the_single_walk(db, pg_url, keys, chain, victim):
    owner_tamper(db, "UPDATE audit_events SET detail = 'rewritten' WHERE id = :id", id=victim)
    single, parallel = check(db, keys), _parallel(pg_url, keys)
    assert (parallel.ok, parallel.first_bad_id) == (False, victim)
    assert parallel.first_bad_id == single.first_bad_id
