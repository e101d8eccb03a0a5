"""Retention and master key rotation at scale: persons per second through `casemgmt retention
run` (with the fields it deletes per second) and person keys per second through `casemgmt keys
rotate`, over 100k persons in a scratch PostgreSQL database.

    python bench/retention.py                 # 100k persons (a few minutes on 2 cores)
    python bench/retention.py --persons 20000
    python bench/retention.py --smoke         # 500 persons, seconds: that it runs at all

Each person has six encrypted fields (identity, contact, housing, case notes) last written four
years ago and no chain, so contact, housing and case notes are due and identity is not: every
person gets three fields deleted. The database is created and dropped here
(CASEMGMT_BENCH_ADMIN_URL, default the local PostgreSQL with trust auth)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

# The repository, not bench/ (bench/transitions.py would shadow the transitions package).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from sqlalchemy import create_engine, insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from casemgmt.database import make_engine, make_sessionmaker  # noqa: E402
from casemgmt.demo.world import build_world  # noqa: E402
from casemgmt.migrations import upgrade  # noqa: E402
from casemgmt.persons.models import Person  # noqa: E402
from casemgmt.policy.loader import load_policies  # noqa: E402
from casemgmt.privacy.crypto import KeyRing, encrypt_field  # noqa: E402
from casemgmt.privacy.models import PersonField, PersonKey  # noqa: E402
from casemgmt.privacy.rotation import rotate  # noqa: E402
from casemgmt.privacy.service import Privacy  # noqa: E402
from casemgmt.rights.retention import run  # noqa: E402

ADMIN_URL = os.environ.get("CASEMGMT_BENCH_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent
FIELDS = {"family_name": "Beispiel", "given_names": "Nora", "birth_date": "1990-04-01",
          "phone": "+49 2331 000000", "housing_need": "2 Zimmer", "case_notes": "Kurs am Vormittag"}


def populate(engine, keys: KeyRing, persons: int, written: datetime) -> None:
    with make_sessionmaker(engine)() as session:
        world = build_world(session)
    town, org = world.jurisdictions["wittmar"], world.organisations["ennetal_ki"]
    chunk = 2000
    with engine.begin() as conn:
        for start in range(0, persons, chunk):
            ids = [uuid.uuid4() for _ in range(min(chunk, persons - start))]
            conn.execute(insert(Person.__table__), [
                {"id": i, "lead_jurisdiction_id": town, "created_by_organisation_id": org, "created_at": written,
                 "plain_field_writers": {}, "processing": "active"} for i in ids])
            key_rows, field_rows = [], []
            for i in ids:
                data_key = keys.new_data_key()
                key_rows.append({"person_id": i, "wrapped_key": keys.wrap(i, data_key), "created_at": written,
                                 "master_key_id": keys.key_id})
                field_rows += [{"person_id": i, "field": f, "ciphertext": encrypt_field(data_key, i, f, v),
                                "updated_at": written, "updated_by_organisation_id": org} for f, v in FIELDS.items()]
            conn.execute(insert(PersonKey.__table__), key_rows)
            conn.execute(insert(PersonField.__table__), field_rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--smoke", action="store_true", help="500 persons: seconds, for CI and a quick check")
    args = parser.parse_args()
    persons = 500 if args.smoke else args.persons
    name = f"casemgmt_bench_retention_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        upgrade(engine)
        policies = load_policies(ROOT / "policies")
        keys = KeyRing.from_master(os.urandom(32))
        now = datetime.now(UTC)
        started = time.perf_counter()
        populate(engine, keys, persons, now - timedelta(days=4 * 365 + 2))
        print(f"populated {persons} persons with {persons * len(FIELDS)} fields in {time.perf_counter() - started:.1f} s")
        factory = make_sessionmaker(engine, audit_key=keys.audit_key, audit_key_id=keys.key_id)
        privacy = Privacy(policies.data, keys)
        started = time.perf_counter()
        report = run(factory, privacy, policies.steering.conference_category, now, batch=args.batch)
        seconds = time.perf_counter() - started
        print(f"retention run: {report.persons_checked} persons in {seconds:.1f} s = "
              f"{report.persons_checked / seconds:,.0f} persons/s; {report.fields_deleted} fields deleted = "
              f"{report.fields_deleted / seconds:,.0f} rows/s (batch {args.batch})")
        started = time.perf_counter()
        again = run(factory, privacy, policies.steering.conference_category, now, batch=args.batch)
        seconds = time.perf_counter() - started
        print(f"retention run again (nothing due): {again.persons_checked / seconds:,.0f} persons/s, "
              f"{again.fields_deleted} fields deleted")
        # The old key as retired, the new one current: what an operator configures for a rotation.
        fresh = KeyRing.from_master(os.urandom(32))
        rotating = KeyRing(**{**fresh.__dict__, "retired": (keys,)})
        owner = make_sessionmaker(engine, audit_key=rotating.audit_key, audit_key_id=rotating.key_id)
        started = time.perf_counter()
        rot = rotate(owner, rotating, now, batch=args.batch)
        seconds = time.perf_counter() - started
        print(f"keys rotate: {rot.rewrapped} keys in {seconds:.1f} s = {rot.rewrapped / seconds:,.0f} keys/s "
              f"(rewrap and reindex; batch {args.batch}); {rot.remaining} left")
        return 0 if rot.remaining == 0 and report.fields_deleted == 3 * persons else 1
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
