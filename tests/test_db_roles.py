"""The service's database role, as an attacker holding it would find it: rows of the audit trail
and of the append-only evidence can be added, never changed, removed or hidden, and no trigger
can be switched off. ``casemgmt db grant`` derives those grants from the live schema (tables
added by later migrations are covered when it runs again) and revokes anything more;
``casemgmt serve`` refuses to run as a role that could shorten the trail.

Every other test file runs the service as this restricted role too (``conftest.engine``), which
shows that the service needs nothing more."""

from __future__ import annotations

import base64
import os
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

import conftest
from casemgmt.dbroles import (
    APPEND_ONLY_TABLES,
    DatabaseRoleError,
    demo_service_url,
    grant_service_role,
    privilege_problems,
)
from casemgmt.privacy.audit import verify
from conftest import ADMIN_URL, drop_database
from http_helpers import ok

READ_WRITE = {"SELECT", "INSERT", "UPDATE", "DELETE"}
ALL_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def refused(engine, sql: str) -> str:
    """Run ``sql`` in its own transaction; it must fail. Returns the database's message."""
    with pytest.raises(DBAPIError) as exc, engine.begin() as conn:
        conn.execute(text(sql))
    return str(exc.value.orig)


def privileges(conn, role: str) -> dict[str, set[str]]:
    """Each table's privileges held by ``role``, as PostgreSQL decides them."""
    held: dict[str, set[str]] = {}
    for table, privilege in conn.execute(text(
            "SELECT c.relname, p FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " CROSS JOIN unnest(CAST(:ps AS text[])) AS p"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
            " AND has_table_privilege(:r, c.oid, p)"), {"r": role, "ps": list(ALL_PRIVILEGES)}):
        held.setdefault(table, set()).add(privilege)
    tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
    return {t: held.get(t, set()) for t in tables}


def acl_snapshot(conn) -> list[tuple]:
    return conn.execute(text(
        "SELECT c.relname, c.relacl::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' UNION ALL SELECT '(schema)', nspacl::text FROM pg_namespace"
        " WHERE nspname = 'public' ORDER BY 1")).all()


@pytest.fixture
def evidence(client, auth, world, db) -> dict[str, Any]:
    """Case work done through the API as the service role: a person with a consent (withdrawn
    later), a chain with a started step; audit rows in several streams."""
    cm = auth("ennetal_ki", "case_manager")
    person = ok(client.post("/persons", headers=cm, json={
        "lead_jurisdiction_id": world.jurisdictions["wittmar"],
        "fields": {"residence_status": "protection_granted", "bleibeperspektive": "good",
                   "benefit_regime": "asylblg"},
        "consents": [{"recipients": [{"organisation_kind": "kommunales_integrationszentrum",
                                      "jurisdiction_id": world.jurisdictions["wittmar"]}],
                      "categories": ["residence", "benefits"], "purpose": "case_management",
                      "consequences_explained": True, "evidence_reference": "EW-ROLE-1", "language": "de"}],
    }), 201)
    chain = ok(client.post("/chains", headers=cm, json={"person_id": person["id"],
                                                         "template_key": "refugee_recognised"}), 201)
    soz = auth("wittmar_sozialamt", "clerk")
    ok(client.post(f"/chains/{chain['id']}/steps/arrival_assignment/actions", headers=soz,
                   json={"action": "start", "expected_version": chain["version"]}))
    consent = ok(client.get(f"/persons/{person['id']}/consents", headers=cm))[0]
    ok(client.post(f"/consents/{consent['id']}/withdraw", headers=cm, json={"note": "per Telefon"}))
    return {"person": person, "chain": chain}


def counts(engine) -> dict[str, Any]:
    with engine.connect() as conn:
        out = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
               for t in ("audit_events", "chain_events", "consents", "consent_withdrawals", "handover_events")}
        out["heads"] = conn.execute(text("SELECT stream, last_seq, last_hash FROM audit_head ORDER BY stream")).all()
    return out


# What someone holding the service role's password tries, and what PostgreSQL answers.
ATTEMPTS = [
    ("UPDATE audit_events SET agent_user = 'mallory'", "permission denied for table audit_events"),
    ("DELETE FROM audit_events WHERE seq > 1", "permission denied for table audit_events"),
    ("TRUNCATE audit_events CASCADE", "permission denied for table audit_events"),
    ("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only", "must be owner of"),
    ("ALTER TABLE audit_events DISABLE TRIGGER ALL", "must be owner of"),
    ("DROP TRIGGER audit_events_append_only ON audit_events", "must be owner of"),
    ("DROP TABLE audit_events CASCADE", "must be owner of"),
    ("ALTER TABLE audit_head DISABLE TRIGGER audit_head_forward", "must be owner of"),
    ("SET session_replication_role = replica", "permission denied to set parameter"),
    ("UPDATE audit_head SET last_seq = last_seq - 1 WHERE last_seq > 0", "audit_head only moves forward"),
    ("UPDATE audit_head SET last_seq = 0, last_hash = repeat('0', 64)", "audit_head only moves forward"),
    ("DELETE FROM audit_head", "permission denied for table audit_head"),
    ("INSERT INTO audit_head (stream, last_seq, last_hash) VALUES (99, 0, 'x')", "permission denied for table audit_head"),
    ("DELETE FROM chain_events", "permission denied for table chain_events"),
    ("UPDATE chain_events SET reason = 'rewritten'", "permission denied for table chain_events"),
    ("TRUNCATE chain_events CASCADE", "permission denied for table chain_events"),
    ("ALTER TABLE chain_events DISABLE TRIGGER chain_events_append_only", "must be owner of"),
    ("DELETE FROM consents", "permission denied for table consents"),
    ("UPDATE consent_withdrawals SET withdrawn_at = withdrawn_at + interval '1 year'",
     "permission denied for table consent_withdrawals"),
    ("DELETE FROM consent_withdrawals", "permission denied for table consent_withdrawals"),
    ("DELETE FROM handover_events", "permission denied for table handover_events"),
    ("DELETE FROM proposal_events", "permission denied for table proposal_events"),
    ("TRUNCATE persons CASCADE", "permission denied for table persons"),
    ("UPDATE alembic_version SET version_num = '0001'", "permission denied for table alembic_version"),
    ("SELECT setval('audit_events_id_seq', 1)", "permission denied for sequence audit_events_id_seq"),
    ("CREATE TABLE mallory (id int)", "permission denied for schema public"),
    ("CREATE OR REPLACE FUNCTION casemgmt_refuse_change() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ "
     "LANGUAGE plpgsql", "permission denied for schema public"),
    ("ALTER TABLE audit_events OWNER TO CURRENT_USER", "must be owner of"),
]


@pytest.mark.parametrize(("sql", "answer"), ATTEMPTS, ids=[a[0][:48] for a in ATTEMPTS])
def test_the_service_role_cannot_change_remove_or_hide_evidence(engine, evidence, keys, sql, answer):
    before = counts(engine)
    assert before["audit_events"] > 0 and before["chain_events"] > 0 and before["consent_withdrawals"] == 1
    assert refused(engine, sql).startswith(answer)
    assert counts(engine) == before
    with engine.connect() as conn:
        assert verify(conn, keys.audit_key).ok


def test_a_grant_to_itself_gives_the_service_role_nothing(engine, evidence, service_role):
    with engine.begin() as conn:  # PostgreSQL only warns: the role holds no grant option
        conn.execute(text(f'GRANT UPDATE, DELETE ON audit_events TO "{service_role}"'))
    assert refused(engine, "DELETE FROM audit_events").startswith("permission denied for table audit_events")


def test_the_service_role_has_exactly_the_service_grants(owner_engine, service_role):
    with owner_engine.connect() as conn:
        held = privileges(conn, service_role)
        problems = privilege_problems(conn, service_role)
        sequences = conn.execute(text(
            "SELECT c.relname, has_sequence_privilege(:r, c.oid, 'USAGE'), has_sequence_privilege(:r, c.oid, 'UPDATE')"
            " FROM pg_class c WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace"),
            {"r": service_role}).all()
        owned = conn.execute(text("SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles"
                                  " WHERE rolname = :r)"), {"r": service_role}).scalar()
    assert problems == [] and owned == 0
    assert held.pop("audit_events") == {"SELECT", "INSERT"}
    assert held.pop("audit_head") == {"SELECT", "UPDATE"}
    for table in APPEND_ONLY_TABLES:
        assert held.pop(table) == {"SELECT", "INSERT"}, table
    assert held.pop("alembic_version") == {"SELECT"}
    # Archived audit keys are written by `keys rotate` as the owner; tombstones by trigger append-only.
    assert held.pop("audit_keys") == {"SELECT"}
    assert held.pop("erasure_tombstones") == {"SELECT", "INSERT"}
    assert len(held) >= 20
    assert {t: p for t, p in held.items() if p != READ_WRITE} == {}
    assert sequences and all(usage and not update for _, usage, update in sequences)


def test_concurrent_withdrawals_of_one_consent_still_give_one_success(session_factory, evidence, privacy,
                                                                        world, clock):
    """Consents are append-only, so the service may not lock their rows; withdrawals queue
    behind the person's row instead."""
    from casemgmt.demo.seed import actor_of
    from casemgmt.jurisdictions.models import Organisation
    from casemgmt.privacy.schemas import ConsentIn, RecipientIn
    from casemgmt.privacy.service import record_consent, withdraw_consent
    from casemgmt.problems import Problem

    person = uuid.UUID(evidence["person"]["id"])
    with session_factory() as session:
        actor = actor_of(session.get(Organisation, world.organisations["ennetal_ki"]), "cm", frozenset({"case_manager"}))
        consent = record_consent(session, privacy, actor, person, ConsentIn(
            recipients=[RecipientIn(organisation_id=world.organisations["ennetal_jobcenter"])],
            categories=["benefits"], purpose="case_management", consequences_explained=True,
            evidence_reference="EW-ROLE-2", language="de"), clock())
    barrier, results = threading.Barrier(8), []

    def withdraw() -> None:
        with session_factory() as session:
            barrier.wait(timeout=30)
            try:
                results.append(withdraw_consent(session, privacy, actor, consent.id, None, clock()).status)
            except Problem as exc:
                results.append(exc.slug)
            except Exception as exc:  # noqa: BLE001 - the assertion below shows it
                results.append(repr(exc))

    threads = [threading.Thread(target=withdraw) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(map(str, results)) == sorted(["withdrawn"] + ["consent-already-withdrawn"] * 7), results


# --- the commands, in a database set up as the README says ----------------------------------------


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A database owned by a (non-superuser) owner role, and a service role, as in the README;
    CASEMGMT_MIGRATION_DATABASE_URL for the owner, CASEMGMT_DATABASE_URL for the service."""
    from casemgmt.config import get_settings

    tag = uuid.uuid4().hex[:8]
    owner, app, name = f"cm_owner_{tag}", f"cm_app_{tag}", f"casemgmt_roles_{tag}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{owner}" LOGIN'))
        conn.execute(text(f'CREATE ROLE "{app}" LOGIN'))
        conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{owner}"'))
    base = make_url(ADMIN_URL).set(database=name)
    urls = {who: base.set(username=role).render_as_string(hide_password=False)
            for who, role in (("owner", owner), ("app", app), ("superuser", base.username))}
    monkeypatch.setenv("CASEMGMT_MIGRATION_DATABASE_URL", urls["owner"])
    monkeypatch.setenv("CASEMGMT_DATABASE_URL", urls["app"])
    monkeypatch.setenv("CASEMGMT_POLICY_DIR", str(conftest.ROOT / "policies"))
    monkeypatch.setenv("CASEMGMT_DEV_KEY_DIR", str(tmp_path / "dev-keys"))
    # serve checks the master key before it starts (as everything else it needs).
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(conftest.MASTER_KEY).decode())
    monkeypatch.delenv("CASEMGMT_ALLOW_PRIVILEGED_DB_ROLE", raising=False)
    get_settings.cache_clear()
    owner_engine = create_engine(urls["owner"])
    try:
        yield {"owner": owner, "app": app, "urls": urls, "owner_engine": owner_engine}
    finally:
        owner_engine.dispose()
        get_settings.cache_clear()
        drop_database(name)
        with admin.connect() as conn:
            conn.execute(text(f'DROP ROLE IF EXISTS "{app}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{owner}"'))
        admin.dispose()


def run(monkeypatch, capsys, *argv: str, **env: str) -> tuple[int, str, str]:
    from casemgmt.cli import main
    from casemgmt.config import get_settings

    before = {name: os.environ.get(name) for name in env}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    code = main(list(argv))
    out = capsys.readouterr()
    for name, value in before.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return code, out.out, out.err


@pytest.fixture
def served(monkeypatch) -> list:
    """``casemgmt serve`` up to the point where it would listen."""
    import casemgmt.cli

    calls: list = []
    monkeypatch.setattr(casemgmt.cli, "_serve", lambda app, *_args: calls.append(app))
    return calls


def test_migrate_then_grant_as_the_owner_and_serve_as_the_service_role(fresh, monkeypatch, capsys, served):
    code, out, err = run(monkeypatch, capsys, "migrate")
    assert code == 0, err
    assert fresh["owner"] in out  # migrate used the owner's URL
    code, out, err = run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["app"])
    assert code == 0, err
    assert "SELECT, INSERT: audit_events, chain_events, consent_withdrawals, consents, erasure_tombstones, " \
           "handover_events, offer_versions, proposal_events" in out
    assert "SELECT, UPDATE: audit_head" in out
    with fresh["owner_engine"].connect() as conn:
        first = acl_snapshot(conn)
        assert privilege_problems(conn, fresh["app"]) == []
        assert privileges(conn, fresh["app"])["audit_events"] == {"SELECT", "INSERT"}
    # idempotent
    assert run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["app"])[0] == 0
    with fresh["owner_engine"].connect() as conn:
        assert acl_snapshot(conn) == first
    assert run(monkeypatch, capsys, "serve")[0] == 0
    assert len(served) == 1


def test_migrate_and_grant_as_a_role_without_ownership_fail_clearly(fresh, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "migrate", CASEMGMT_MIGRATION_DATABASE_URL=fresh["urls"]["app"])
    assert code == 2
    assert f"{fresh['app']}@" in err and "may not change the schema" in err
    assert "run migrate as the schema owner, with CASEMGMT_MIGRATION_DATABASE_URL" in err
    with fresh["owner_engine"].connect() as conn:  # nothing half-created
        assert conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar() == 0
    assert run(monkeypatch, capsys, "migrate")[0] == 0
    code, _, err = run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["owner"],
                       CASEMGMT_MIGRATION_DATABASE_URL=fresh["urls"]["app"])
    assert code == 2
    assert f"{fresh['app']}@" in err and "run `casemgmt db grant` as the schema owner" in err
    # once it may read the schema version, its own check says why (PostgreSQL would only warn)
    assert run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["app"])[0] == 0
    code, _, err = run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["owner"],
                       CASEMGMT_MIGRATION_DATABASE_URL=fresh["urls"]["app"])
    assert code == 2 and f"{fresh['app']} does not own alembic_version, audit_events" in err


def test_serve_refuses_the_owner_and_the_superuser_unless_allowed(fresh, monkeypatch, capsys, served):
    assert run(monkeypatch, capsys, "migrate")[0] == 0
    assert run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["app"])[0] == 0
    urls = fresh["urls"]
    code, out, err = run(monkeypatch, capsys, "serve", CASEMGMT_DATABASE_URL=urls["owner"])
    assert code == 2 and not served
    assert f"the database role {fresh['owner']}" in err and "could change or shorten the audit trail" in err
    assert "it owns database" in err and "CASEMGMT_ALLOW_PRIVILEGED_DB_ROLE=1" in err
    code, out, err = run(monkeypatch, capsys, "serve", CASEMGMT_DATABASE_URL=urls["superuser"])
    assert code == 2 and not served
    assert "it is a superuser" in err
    # the periodic jobs are part of the service too
    code, out, err = run(monkeypatch, capsys, "escalate", CASEMGMT_DATABASE_URL=urls["owner"])
    assert code == 2 and "could change or shorten the audit trail" in err
    code, out, err = run(monkeypatch, capsys, "serve", CASEMGMT_DATABASE_URL=urls["owner"],
                         CASEMGMT_ALLOW_PRIVILEGED_DB_ROLE="1")
    assert code == 0 and len(served) == 1


def test_serve_refuses_a_member_of_the_owner_role_and_grant_cannot_fix_it(fresh, monkeypatch, capsys, served):
    assert run(monkeypatch, capsys, "migrate")[0] == 0
    assert run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["app"])[0] == 0
    admin = create_engine(fresh["urls"]["superuser"], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'GRANT "{fresh["owner"]}" TO "{fresh["app"]}"'))
            before = acl_snapshot(conn)
        code, out, err = run(monkeypatch, capsys, "serve")
        assert code == 2 and not served
        assert f"(as member of {fresh['owner']}, pg_database_owner)" in err
        code, out, err = run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["app"])
        assert code == 2
        assert f"grants alone cannot restrict role {fresh['app']}" in err and "Nothing was changed" in err
        with admin.connect() as conn:
            assert acl_snapshot(conn) == before  # all or nothing
            conn.execute(text(f'REVOKE "{fresh["owner"]}" FROM "{fresh["app"]}"'))
        assert run(monkeypatch, capsys, "serve")[0] == 0
    finally:
        admin.dispose()


def test_grant_covers_tables_of_later_migrations_and_revokes_drift(fresh, monkeypatch, capsys, served):
    """A later migration adds tables (one append-only through the usual trigger) and a column;
    someone grants the service role too much. Serve refuses; grant, run again, fixes both."""
    assert run(monkeypatch, capsys, "migrate")[0] == 0
    assert run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["app"])[0] == 0
    with fresh["owner_engine"].begin() as conn:
        conn.execute(text("CREATE TABLE step_notes (id serial PRIMARY KEY, note text)"))
        conn.execute(text("CREATE TABLE step_evidence (id bigserial PRIMARY KEY, kind text)"))
        conn.execute(text("CREATE TRIGGER step_evidence_append_only BEFORE UPDATE OR DELETE ON step_evidence "
                          "FOR EACH ROW EXECUTE FUNCTION casemgmt_refuse_change()"))
        conn.execute(text("ALTER TABLE persons ADD COLUMN nickname text"))
    code, out, err = run(monkeypatch, capsys, "serve")
    assert code == 2 and not served
    assert f"may not read step_evidence, step_notes: run `casemgmt db grant --service-role {fresh['app']}`" in err

    assert run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["app"])[0] == 0
    with fresh["owner_engine"].connect() as conn:
        held = privileges(conn, fresh["app"])
    assert held["step_notes"] == READ_WRITE
    assert held["step_evidence"] == {"SELECT", "INSERT"}
    assert held["persons"] == READ_WRITE
    assert run(monkeypatch, capsys, "serve")[0] == 0
    app = create_engine(fresh["urls"]["app"])
    try:
        with app.begin() as conn:
            conn.execute(text("INSERT INTO step_evidence (kind) VALUES ('x')"))  # sequence usage
        assert refused(app, "DELETE FROM step_evidence").startswith("permission denied for table step_evidence")
    finally:
        app.dispose()

    with fresh["owner_engine"].begin() as conn:
        conn.execute(text(f'GRANT ALL ON audit_events, chain_events TO "{fresh["app"]}"'))
        conn.execute(text(f'GRANT CREATE ON SCHEMA public TO "{fresh["app"]}"'))
    code, out, err = run(monkeypatch, capsys, "serve")
    assert code == 2 and len(served) == 1
    assert "it may create objects in the schema" in err
    assert "UPDATE/DELETE/TRUNCATE/REFERENCES/TRIGGER audit_events" in err
    assert "UPDATE/DELETE/TRUNCATE/REFERENCES/TRIGGER chain_events" in err
    assert run(monkeypatch, capsys, "db", "grant", "--service-role", fresh["app"])[0] == 0
    with fresh["owner_engine"].connect() as conn:
        assert privileges(conn, fresh["app"])["audit_events"] == {"SELECT", "INSERT"}
        assert privilege_problems(conn, fresh["app"]) == []
    assert run(monkeypatch, capsys, "serve")[0] == 0


def test_grant_refuses_what_it_cannot_do_and_changes_nothing(owner_engine, service_role, monkeypatch, capsys,
                                                            pg_url, tmp_path):
    env = {"CASEMGMT_MIGRATION_DATABASE_URL": pg_url}
    with owner_engine.connect() as conn:
        before = acl_snapshot(conn)
    code, _, err = run(monkeypatch, capsys, "db", "grant", "--service-role", "no_such_role_x", **env)
    assert code == 2 and "role no_such_role_x does not exist" in err
    me = make_url(pg_url).username
    code, _, err = run(monkeypatch, capsys, "db", "grant", "--service-role", me, **env)
    assert code == 2 and "must not be the role that runs migrations" in err
    boss = f"cm_super_{uuid.uuid4().hex[:8]}"
    with owner_engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{boss}" SUPERUSER'))
    try:
        code, _, err = run(monkeypatch, capsys, "db", "grant", "--service-role", boss, **env)
        assert code == 2 and "it is a superuser" in err and "Nothing was changed" in err
    finally:
        with owner_engine.begin() as conn:
            conn.execute(text(f'DROP ROLE "{boss}"'))
    with owner_engine.connect() as conn:
        assert acl_snapshot(conn) == before
    sqlite = f"sqlite:///{tmp_path / 'demo.db'}"
    code, _, err = run(monkeypatch, capsys, "migrate", CASEMGMT_DATABASE_URL=sqlite)
    assert code == 0
    code, _, err = run(monkeypatch, capsys, "db", "grant", "--service-role", "x", CASEMGMT_DATABASE_URL=sqlite)
    assert code == 2 and "only on PostgreSQL" in err


def test_the_app_refuses_a_privileged_engine_at_start_up(settings, owner_engine, policies, clock):
    from fastapi.testclient import TestClient

    from casemgmt.app import create_app

    app = create_app(settings, engine=owner_engine, policies=policies, clock=clock, master_key=conftest.MASTER_KEY)
    with pytest.raises(DatabaseRoleError, match="it is a superuser"):
        with TestClient(app):
            pass
    allowed = settings.model_copy(update={"allow_privileged_db_role": True})
    app = create_app(allowed, engine=owner_engine, policies=policies, clock=clock, master_key=conftest.MASTER_KEY)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200


def test_the_sqlite_demo_is_not_checked(tmp_path):
    from casemgmt.database import make_engine
    from casemgmt.dbroles import ensure_service_role
    from casemgmt.migrations import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    upgrade(engine)
    ensure_service_role(engine)  # no roles in SQLite: nothing to refuse
    with pytest.raises(DatabaseRoleError, match="only on PostgreSQL"):
        grant_service_role(engine, "anyone")
    engine.dispose()


def test_the_demo_on_postgresql_serves_as_a_restricted_role_it_creates(owner_engine, pg_url):
    """`casemgmt demo` seeds as the schema owner and then serves as a login role that owns
    nothing and has exactly the service's grants, as production does; run again, it refreshes
    the role's password and grants instead of failing."""
    role = f"casemgmt_demo_test_{uuid.uuid4().hex[:8]}"
    try:
        first = demo_service_url(pg_url, role)
        again = demo_service_url(pg_url, role)
        assert first is not None and again is not None
        assert make_url(first).username == role and make_url(first).password != make_url(again).password
        with owner_engine.connect() as conn:
            assert privilege_problems(conn, role) == []
            assert conn.scalar(text("SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles "
                                    "WHERE rolname = :r"), {"r": role}) is False
        served = create_engine(again)
        try:
            with served.connect() as conn:
                assert conn.scalar(text("SELECT current_user")) == role
                with pytest.raises(DBAPIError):
                    conn.execute(text("DELETE FROM audit_events"))
        finally:
            served.dispose()
    finally:
        with owner_engine.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))


def test_the_demo_falls_back_to_its_own_role_where_it_may_not_create_roles(service_url):
    # The restricted service role may not create roles: the demo then serves as the seeding role.
    assert demo_service_url(service_url, f"casemgmt_demo_test_{uuid.uuid4().hex[:8]}") is None

