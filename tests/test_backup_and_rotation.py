"""After a restore of a backup taken before an erasure, ``casemgmt erasure replay`` makes the
person unreadable again (the tombstone file outlives the restore). Master key rotation
interrupted half-way, then resumed, leaves every person readable, and the audit trail written
under both master keys verifies."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from http_helpers import ok, problem
from sqlalchemy import text
from sqlalchemy.engine import make_url
from test_api import started
from test_rights_api import NAMES, new_person, register

from casemgmt.database import make_engine, make_sessionmaker
from casemgmt.privacy.audit import verify
from casemgmt.privacy.crypto import KeyRing
from casemgmt.privacy.rotation import audit_keyset, key_status, rotate
from casemgmt.privacy.service import Privacy, find_persons, read_person
from casemgmt.rights.tombstones import replay
from conftest import MASTER_KEY, create_database, drop_database


def _pg(url: str) -> list[str]:
    u = make_url(url)
    return ["-h", u.host or "127.0.0.1", "-p", str(u.port or 5432), "-U", u.username or "postgres"]


def test_replay_erases_again_after_restoring_a_dump_taken_before_the_erasure(
        client, auth, world, clock, pg_url, tmp_path, app, settings, keys, owner_db):
    cm, dpo = auth("ennetal_ki", "case_manager"), auth("ennetal_ki", "dpo")
    app.state.settings = settings.model_copy(update={"erasure_tombstone_dir": tmp_path})
    p = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    chain = started(client, cm, p)
    ok(client.post(f"/chains/{chain['id']}/close", json={"reason": "ended_by_person"}, headers=cm))
    r = register(client, dpo, p["id"], "erasure")
    dump = tmp_path / "before.dump"
    subprocess.run(["pg_dump", *_pg(pg_url), "-Fc", "-f", str(dump), make_url(pg_url).database], check=True)
    ok(client.post(f"/persons/{p['id']}/erasure", headers=dpo,
                   json={"request_id": r["id"], "legal_assessment": "keine Aufbewahrungspflicht"}))
    restored = f"casemgmt_restore_{uuid.uuid4().hex[:8]}"
    drop_database(restored)
    url = create_database(restored)
    try:
        subprocess.run(["pg_restore", *_pg(url), "--no-owner", "-d", restored, str(dump)], check=True,
                       capture_output=True)
        engine = make_engine(url)
        factory = make_sessionmaker(engine, audit_key=keys.audit_key, audit_key_id=keys.key_id)
        privacy = Privacy(app.state.policies.data, keys)
        from casemgmt.demo.seed import actor_of
        from casemgmt.jurisdictions.models import Organisation

        def read():
            with factory() as s:
                ki = actor_of(s.get(Organisation, world.organisations["ennetal_ki"]), "cm", frozenset({"case_manager"}))
                return read_person(s, privacy, ki, uuid.UUID(p["id"]), None, clock.now)

        assert read().fields["family_name"] == "Haddad"  # the backup brought the key back
        report = replay(factory, tmp_path, clock.now)
        assert report.erased_again == [uuid.UUID(p["id"])]
        from casemgmt.problems import PersonErased

        with pytest.raises(PersonErased):
            read()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM person_keys WHERE person_id = :p"), {"p": p["id"]}).scalar() == 0
            assert verify(conn, audit_keyset(conn, keys)).ok
        assert replay(factory, tmp_path, clock.now).erased_again == []  # idempotent
        engine.dispose()
    finally:
        drop_database(restored)


def test_rotation_interrupted_then_resumed_leaves_every_person_readable(client, auth, world, clock, owner_db,
                                                                       engine, policies, keys):
    cm = auth("ennetal_ki", "case_manager")
    people = [new_person(client, cm, world.jurisdictions["wittmar"], **(NAMES | {"given_names": f"Rana{chr(97 + i)}"}))
              for i in range(5)]
    new_master = os.urandom(32)
    rotating = KeyRing.from_master(new_master, [MASTER_KEY])
    owner = make_sessionmaker(owner_db, audit_key=rotating.audit_key, audit_key_id=rotating.key_id)
    half = rotate(owner, rotating, clock.now, batch=2, max_batches=1)  # "crashes" after one batch
    assert half.rewrapped == 2 and half.remaining == 3 and half.archived_audit_keys == 1
    service = make_sessionmaker(engine, audit_key=rotating.audit_key, audit_key_id=rotating.key_id)
    privacy = Privacy(policies.data, rotating)
    from casemgmt.demo.seed import actor_of
    from casemgmt.jurisdictions.models import Organisation

    def readable() -> None:
        for person in people:
            with service() as s:
                ki = actor_of(s.get(Organisation, world.organisations["ennetal_ki"]), "cm", frozenset({"case_manager"}))
                out = read_person(s, privacy, ki, uuid.UUID(person["id"]), None, clock.now)
                assert out.fields["family_name"] == "Haddad"
                found = find_persons(s, privacy, ki, "Haddad", out.fields["given_names"], "1991-02-03", None, clock.now)
                assert [f.id for f in found] == [out.id]

    readable()  # online: both keys known by key id
    done = rotate(owner, rotating, clock.now, batch=2)
    assert done.remaining == 0 and done.rewrapped == 3
    with owner_db.connect() as conn:
        status = key_status(conn, rotating)
    assert status.person_keys == {rotating.key_id: 5}
    # The old master key is gone: everything still reads, and the whole trail verifies.
    current_only = KeyRing.from_master(new_master)
    privacy = Privacy(policies.data, current_only)
    readable()
    with owner_db.connect() as conn:
        result = verify(conn, audit_keyset(conn, current_only))
        assert result.ok, result.problem
        assert conn.execute(text("SELECT count(*) FROM audit_events WHERE key_id = :k"),
                            {"k": keys.key_id}).scalar() > 0  # rows of the old key are among them
    with owner_db.connect() as conn:
        broken = verify(conn, current_only.audit_key)  # without the archive, old rows do not verify
    assert not broken.ok
