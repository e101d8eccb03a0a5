"""A demo seeding that stops half-way (a crash, Ctrl-C) leaves persons but not the mark the seed
writes last; the next `casemgmt demo` says so and exits 2 instead of serving a partial world."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime

import pytest

import casemgmt.demo.seed as seed_module
from casemgmt.config import Settings
from casemgmt.demo.seed import SEEDED_SUBTYPE, DemoIncomplete, seed_demo
from conftest import ROOT


def test_a_seeding_that_stopped_half_way_is_named_on_the_next_start(tmp_path, monkeypatch):
    db = tmp_path / "demo.db"
    settings = Settings(database_url=f"sqlite:///{db}", policy_dir=ROOT / "policies", dev_key_dir=tmp_path,
                        master_key_file=tmp_path / "master.key")
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if stopped while the offers were written

    with monkeypatch.context() as m:
        m.setattr(seed_module, "seed_offers", crash)
        with pytest.raises(KeyboardInterrupt):
            seed_demo(settings, persons=6, seed=3, now=now)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM persons").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM audit_events WHERE subtype = ?", (SEEDED_SUBTYPE,)).fetchone()[0] == 0
    with pytest.raises(DemoIncomplete, match="did not finish"):
        seed_demo(settings, persons=6, seed=3, now=now)
    env = {"CASEMGMT_DATABASE_URL": f"sqlite:///{db}", "CASEMGMT_DEV_KEY_DIR": str(tmp_path),
           "CASEMGMT_MASTER_KEY_FILE": str(tmp_path / "master.key"), "CASEMGMT_POLICY_DIR": str(ROOT / "policies"),
           "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "casemgmt.cli", "demo", "--no-serve", "--persons", "6"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "did not finish" in run.stderr and str(db) in run.stderr
    # A fresh database seeds whole, with the mark, and a second start serves it as it is.
    db.unlink()
    first = seed_demo(settings, persons=6, seed=3, now=now)
    again = seed_demo(settings, persons=6, seed=3, now=now)
    assert first.created and not again.created and again.persons == first.persons
