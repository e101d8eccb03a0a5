"""Retention and master key rotation at scale: persons per second through `casemgmt retention
run` (with the fields it deletes per second) and person keys per second through `casemgmt keys
rotate`, over 100k persons.

    python bench/retention.py                 # 100k persons (a few minutes on 2 cores)
    python bench/retention.py --persons 20000
    python bench/retention.py --smoke         # 500 persons, seconds: that it runs at all

Each person has six encrypted fields (identity, contact, housing, case notes) last written four
years ago and no chain, so contact, housing and case notes are due and identity is not: every
person gets three fields deleted. As the commands do, the retention run works as the service
role and the rotation as the schema owner; the bulk fill is the owner's."""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/transitions.py would shadow the `transitions` library that casemgmt.chains.engine imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from sqlalchemy import insert  # noqa: E402

from bench import harness as h  # noqa: E402
from casemgmt.database import make_engine, make_sessionmaker  # noqa: E402
from casemgmt.demo.world import build_world  # noqa: E402
from casemgmt.persons.models import Person  # noqa: E402
from casemgmt.policy.loader import load_policies  # noqa: E402
from casemgmt.privacy.crypto import KeyRing, encrypt_field  # noqa: E402
from casemgmt.privacy.models import PersonField, PersonKey  # noqa: E402
from casemgmt.privacy.rotation import rotate  # noqa: E402
from casemgmt.privacy.service import Privacy  # noqa: E402
from casemgmt.rights.retention import run as retention_run  # noqa: E402

FIELDS = {"family_name": "Beispiel", "given_names": "Nora", "birth_date": "1990-04-01",
          "phone": "+49 2331 000000", "housing_need": "2 Zimmer", "case_notes": "Kurs am Vormittag"}
DUE_PER_PERSON = 3  # phone, housing_need, case_notes


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


def _timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def run(bench: h.Bench, args: argparse.Namespace) -> None:
    r = bench.results
    r["persons"], r["batch"] = args.persons, args.batch
    db = bench.database("main")
    bench.server_facts(db.owner_url)
    owner, service = make_engine(db.owner_url), make_engine(db.service_url)
    try:
        policies = load_policies(h.POLICY_DIR)
        keys = KeyRing.from_master(bench.master)
        now = datetime.now(UTC)
        bench.phase("populate")
        _, r["populate_s"] = _timed(lambda: populate(owner, keys, args.persons, now - timedelta(days=4 * 365 + 2)))
        h.log(f"populated {args.persons} persons with {args.persons * len(FIELDS)} fields in {r['populate_s']:.1f} s")
        factory = make_sessionmaker(service, audit_key=keys.audit_key, audit_key_id=keys.key_id)
        privacy = Privacy(policies.data, keys)
        category = policies.steering.conference_category
        bench.phase("retention run")
        first, seconds = _timed(lambda: retention_run(factory, privacy, category, now, batch=args.batch))
        r["retention"] = {"persons": first.persons_checked, "fields_deleted": first.fields_deleted, "seconds": seconds}
        bench.phase("retention run again")
        again, seconds = _timed(lambda: retention_run(factory, privacy, category, now, batch=args.batch))
        r["retention_again"] = {"persons": again.persons_checked, "fields_deleted": again.fields_deleted,
                                "seconds": seconds}
        # The old key as retired, the new one current: what an operator configures for a rotation.
        fresh = KeyRing.from_master(os.urandom(32))
        rotating = KeyRing(**{**fresh.__dict__, "retired": (keys,)})
        as_owner = make_sessionmaker(owner, audit_key=rotating.audit_key, audit_key_id=rotating.key_id)
        bench.phase("keys rotate")
        rot, seconds = _timed(lambda: rotate(as_owner, rotating, now, batch=args.batch))
        r["rotation"] = {"rewrapped": rot.rewrapped, "remaining": rot.remaining, "seconds": seconds}
    finally:
        owner.dispose()
        service.dispose()
    if first.fields_deleted != DUE_PER_PERSON * args.persons or again.fields_deleted or rot.remaining:
        raise RuntimeError(f"unexpected counts: {first.fields_deleted} fields deleted (expected "
                           f"{DUE_PER_PERSON * args.persons}), {again.fields_deleted} again, {rot.remaining} keys left")


def _per_second(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "-"


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    h.banner(f"casemgmt retention benchmark - {r.get('persons', 0):,} persons", r)
    if "retention" in r:
        first, again = r["retention"], r.get("retention_again", {})
        h.heading("Retention run")
        h.rows([
            ("persons checked, first run", f"{first['persons']:,} in {first['seconds']:.1f} s = "
                                           f"{_per_second(first['persons'], first['seconds'])}"),
            ("fields deleted", f"{first['fields_deleted']:,} = {_per_second(first['fields_deleted'], first['seconds'])} "
                               f"(batch {r['batch']})"),
            ("again, nothing due", f"{_per_second(again.get('persons', 0), again.get('seconds', 0))}, "
                                   f"{again.get('fields_deleted', 0)} fields deleted"),
        ], "  ")
    if "rotation" in r:
        rot = r["rotation"]
        h.heading("Master key rotation")
        h.rows([("person keys rewrapped and reindexed",
                 f"{rot['rewrapped']:,} in {rot['seconds']:.1f} s = {_per_second(rot['rewrapped'], rot['seconds'])}; "
                 f"{rot['remaining']} left")], "  ")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--persons", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=500)
    h.common_args(p)
    return h.smoke_sizes(p.parse_args(), {"persons": 500})


if __name__ == "__main__":
    sys.exit(h.main("retention", parse_args(), run, report))
