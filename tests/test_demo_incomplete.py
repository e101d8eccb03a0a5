"""A demo seeding that stops half-way (a crash, Ctrl-C) never leaves a partial world to serve.
The default SQLite demo is seeded in a file next to the database and renamed only when whole,
so nothing is left behind; a database the seed writes in place (PostgreSQL) keeps persons but
not the mark the seed writes last, and the next `casemgmt demo` says so and exits 2."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

import casemgmt.demo.seed as seed_module
from casemgmt.config import Settings
from casemgmt.demo.seed import SEEDED_SUBTYPE, SEEDING_SUFFIX, DemoIncomplete, seed_demo
from conftest import ROOT, create_database, drop_database

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)


def _crash(*args, **kwargs):
    raise KeyboardInterrupt  # as if stopped while the offers were written


def _settings(url: str, tmp_path) -> Settings:
    return Settings(database_url=url, policy_dir=ROOT / "policies", dev_key_dir=tmp_path,
                    master_key_file=tmp_path / "master.key")


def _demo_command(url: str, tmp_path) -> subprocess.CompletedProcess:
    env = {"CASEMGMT_DATABASE_URL": url, "CASEMGMT_DEV_KEY_DIR": str(tmp_path),
           "CASEMGMT_MASTER_KEY_FILE": str(tmp_path / "master.key"), "CASEMGMT_POLICY_DIR": str(ROOT / "policies"),
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "casemgmt.cli", "demo", "--no-serve", "--persons", "6"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_an_interrupted_sqlite_seeding_leaves_no_demo_database_and_the_next_start_seeds_whole(tmp_path, monkeypatch):
    db = tmp_path / "demo.db"
    settings = _settings(f"sqlite:///{db}", tmp_path)
    with monkeypatch.context() as m:
        m.setattr(seed_module, "seed_offers", _crash)
        with pytest.raises(KeyboardInterrupt):
            seed_demo(settings, persons=6, seed=3, now=NOW)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("demo.db")) == []
    # A seeding killed outright (no chance to clean up) leaves its side file; the next start
    # throws it away instead of trusting or failing on it.
    aside = tmp_path / ("demo.db" + SEEDING_SUFFIX)
    aside.write_bytes(b"not a database: what a killed seeding left")
    first = seed_demo(settings, persons=6, seed=3, now=NOW)
    assert not aside.exists() and db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM audit_events WHERE subtype = ?", (SEEDED_SUBTYPE,)).fetchone()[0] == 1
        # Renamed into place, the file is a normal demo database again: write-ahead log, as
        # every later start opens it.
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert first.created and first.persons == 11 and first.database == f"sqlite:///{db}"
    again = seed_demo(settings, persons=6, seed=3, now=NOW)
    assert not again.created and again.persons == first.persons
    assert _demo_command(f"sqlite:///{db}", tmp_path).returncode == 0


def test_a_seeding_in_place_that_stopped_half_way_is_named_on_the_next_start(tmp_path, monkeypatch):
    name = f"casemgmt_demo_half_{uuid.uuid4().hex[:8]}"
    url = create_database(name)
    try:
        settings = _settings(url, tmp_path)
        with monkeypatch.context() as m:
            m.setattr(seed_module, "seed_offers", _crash)
            with pytest.raises(KeyboardInterrupt):
                seed_demo(settings, persons=6, seed=3, now=NOW)
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM persons")) > 0
            assert conn.scalar(text("SELECT count(*) FROM audit_events WHERE subtype = :s"), {"s": SEEDED_SUBTYPE}) == 0
        engine.dispose()
        with pytest.raises(DemoIncomplete, match="did not finish"):
            seed_demo(settings, persons=6, seed=3, now=NOW)
        run = _demo_command(url, tmp_path)
        assert run.returncode == 2, run.stderr
        assert "did not finish" in run.stderr and name in run.stderr
    finally:
        drop_database(name)
