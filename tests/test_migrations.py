"""The schema comes from Alembic, on PostgreSQL and on the SQLite demo default, and the models
do not drift from the migrations."""

from __future__ import annotations

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError

import casemgmt.models  # noqa: F401
from casemgmt.database import Base, make_engine
from casemgmt.migrations import DatabaseNotMigrated, ensure_at_head, upgrade

from conftest import create_database, drop_database, reset_case_data


def _drift(engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)


def test_upgrade_on_empty_postgresql_matches_models():
    name = f"casemgmt_mig_{uuid.uuid4().hex[:8]}"
    drop_database(name)
    url = create_database(name)
    engine = make_engine(url)
    try:
        with pytest.raises(DatabaseNotMigrated, match="casemgmt migrate"):
            ensure_at_head(engine)
        upgrade(engine)
        ensure_at_head(engine)
        assert _drift(engine) == []
        tables = set(inspect(engine).get_table_names())
        assert {"jurisdictions", "organisations", "persons", "chains", "chain_steps",
                "chain_events", "chain_template_versions"} <= tables
        upgrade(engine)  # a second run is a no-op
    finally:
        engine.dispose()
        drop_database(name)


def test_upgrade_on_empty_sqlite_matches_models(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    upgrade(engine)
    ensure_at_head(engine)
    assert _drift(engine) == []
    engine.dispose()


def test_evidence_tables_are_append_only_on_postgresql(db, owner_db, session_factory, world):
    """The triggers stop even the schema owner (the service role lacks the grants to try)."""
    db = owner_db
    with db.begin() as conn:
        conn.execute(text(
            "INSERT INTO chain_template_versions (key, version, title, digest, document, registered_at) "
            "VALUES ('t_append', 1, 't', 'x', '{}', now())"
        ))
        person = conn.execute(text(
            "INSERT INTO persons (id, residence_status, bleibeperspektive, benefit_regime, "
            "lead_jurisdiction_id, created_by_organisation_id, created_at) VALUES "
            "(gen_random_uuid(), 'tolerated', 'unclear', 'asylblg', :j, :o, now()) RETURNING id"
        ), {"j": world.jurisdictions["wittmar"], "o": world.organisations["ennetal_ki"]}).scalar_one()
        chain = conn.execute(text(
            "INSERT INTO chains (id, person_id, template_key, template_version, lead_jurisdiction_id, "
            "case_management_organisation_id, lifecycle, started_at, updated_at, version) VALUES "
            "(gen_random_uuid(), :p, 't_append', 1, :j, :o, 'open', now(), now(), 1) RETURNING id"
        ), {"p": person, "j": world.jurisdictions["wittmar"], "o": world.organisations["ennetal_ki"]}).scalar_one()
        conn.execute(text(
            "INSERT INTO chain_events (chain_id, kind, actor_user, occurred_at) "
            "VALUES (:c, 'chain_started', 'u', now())"
        ), {"c": chain})
    for statement in ("UPDATE chain_events SET reason = 'rewritten'", "DELETE FROM chain_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            with db.begin() as conn:
                conn.execute(text(statement))
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*), max(reason) FROM chain_events")).one() == (1, None)
    for statement in ("TRUNCATE chain_events", "TRUNCATE audit_events CASCADE",
                      "DELETE FROM audit_head", "UPDATE audit_head SET last_seq = -1"):
        with pytest.raises(DBAPIError, match="audit_head|append-only"):
            with db.begin() as conn:
                conn.execute(text(statement))
    reset_case_data(db)
    with db.begin() as conn:
        conn.execute(text("DELETE FROM chain_template_versions WHERE key = 't_append'"))
