"""The demo's shortcuts write what the plain walk writes: a small seed with the daily escalation
run skipped on days when no handover is overdue, against the same seed with the run on every
day, gives the same rows in every table (random ids, and the audit streams and hash chains that
follow from them, masked); and the audit trail of the seed verifies."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from casemgmt.config import Settings
from casemgmt.database import make_engine
from casemgmt.demo import seed as demo_seed
from casemgmt.demo import seed_demo
from casemgmt.privacy.audit import verify
from casemgmt.privacy.crypto import generate_master_key_file, keyring_from_settings
from casemgmt.privacy.rotation import audit_keyset
from conftest import ROOT

UUID_TEXT = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
# Columns whose values follow from random ids or random numbers drawn per row: the audit stream
# is chosen from the entity's id, so its position and hashes differ from run to run; outbox
# rows of one escalation batch are ordered by the handovers' random ids.
RANDOM_COLUMNS = {
    "audit_events": {"id", "stream", "seq", "prev_hash", "hash"},
    "audit_head": {"stream", "last_seq", "last_hash"},
    "notification_outbox": {"id"},
    "persons": {"record_key"},
}


def _rows(path: Path) -> dict[str, Counter]:
    """Every table's rows as a multiset, with ids and encrypted bytes masked."""
    def mask(value):
        if isinstance(value, bytes):
            return f"<{len(value)} bytes>"
        if isinstance(value, str):
            return UUID_TEXT.sub("<id>", value)
        return value

    conn = sqlite3.connect(path)
    try:
        out = {}
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [c[1] for c in conn.execute(f"PRAGMA table_info('{table}')")]
            kept = [c for c in columns if c not in RANDOM_COLUMNS.get(table, set())]
            select = ", ".join(f'"{c}"' for c in kept) or "NULL"  # all masked: count the rows
            out[table] = Counter(tuple(mask(v) for v in row) for row in conn.execute(f'SELECT {select} FROM "{table}"'))
        return out
    finally:
        conn.close()


def _seed(tmp_path: Path, name: str, key_file: Path, monkeypatch, every_day: bool) -> tuple[Path, Settings]:
    database = tmp_path / f"{name}.db"
    settings = Settings(database_url=f"sqlite:///{database}", policy_dir=ROOT / "policies",
                        dev_key_dir=tmp_path / f"{name}-keys", master_key_file=key_file)
    with monkeypatch.context() as m:
        if every_day:
            m.setattr(demo_seed, "_escalation_timer", partial(demo_seed._escalation_timer, every_day=True))
        seed_demo(settings, persons=8, seed=11, now=datetime(2026, 11, 1, 12, tzinfo=UTC))
    return database, settings


def test_skipping_quiet_escalation_days_writes_what_the_daily_run_writes(tmp_path, monkeypatch):
    key_file = tmp_path / "master.key"
    generate_master_key_file(key_file)
    daily, _ = _seed(tmp_path, "daily", key_file, monkeypatch, every_day=True)
    quick, settings = _seed(tmp_path, "quick", key_file, monkeypatch, every_day=False)
    a, b = _rows(daily), _rows(quick)
    assert a.keys() == b.keys()
    # The daily runs escalated some handovers (else the comparison would show nothing).
    assert any("handover.escalated" in str(row) for row in a["notification_outbox"])
    for table in sorted(a):
        assert a[table] == b[table], (table, list((a[table] - b[table]).items())[:2],
                                      list((b[table] - a[table]).items())[:2])
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            result = verify(conn, audit_keyset(conn, keyring_from_settings(settings)))
    finally:
        engine.dispose()
    assert result.ok and result.rows == sum(b["audit_events"].values()), result
