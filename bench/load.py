"""Load: a bounded, realistic mix against `casemgmt serve --workers 2` on PostgreSQL.

    python bench/load.py              # 50 simulated users for 60 s
    python bench/load.py --smoke      # 5 users for 5 s (seconds in all, for CI and a quick look)

Self-contained: creates a database on the local PostgreSQL (CASEMGMT_TEST_ADMIN_URL, default the
superuser on 127.0.0.1, database test), migrates it, creates a restricted service role, seeds the
synthetic Kreis, starts `casemgmt serve --workers 2` on a free loopback port and drives it over
HTTP; everything is removed at the end. Traffic goes to 127.0.0.1 only.

The mix, per simulated user and weighted: inbox reads (a clerk's incoming handovers), person
reads, chain reads and chain lists (the case manager's "Meine Fälle", 50 a page), step actions
(a clerk blocks and resumes a step of the user's own chain, with the version it read), handover acknowledgements (the receiving clerk, each handover
once) and steering report reads. Each user has its own token subject, chains and handovers, so
a 409 would be a defect, not contention the mix made up. The per-address rate limits are off
(every simulated user comes from 127.0.0.1); the per-user ones stay on.

Prints the throughput, p50/p95/p99 per request kind and the error count (any status other than
the expected one, or a transport error). Zero errors is the bar.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ holds a transitions.py that would shadow the `transitions` library the service imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

ADMIN_URL = os.environ.get("CASEMGMT_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
READS = ("inbox", "person", "chain", "chains", "report")
READ_P95_TARGET_MS = 300
WEIGHTS = {"inbox": 25, "person": 25, "chain": 12, "chains": 8, "step": 13, "ack": 9, "report": 8}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in WEIGHTS})
    errors: dict[str, int] = field(default_factory=lambda: {k: 0 for k in WEIGHTS})
    samples: list[str] = field(default_factory=list)

    def record(self, kind: str, seconds: float, ok: bool, why: str = "") -> None:
        self.latencies[kind].append(seconds)
        if not ok:
            self.errors[kind] += 1
            if len(self.samples) < 5:
                self.samples.append(f"{kind}: {why}"[:300])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


class Installation:
    """A migrated, granted, seeded database and a running `serve --workers 2`."""

    def __init__(self, workers: int) -> None:
        from casemgmt.database import make_engine, make_sessionmaker
        from casemgmt.dbroles import grant_service_role
        from casemgmt.demo.world import build_world
        from casemgmt.clock import utcnow
        from casemgmt.migrations import upgrade
        from casemgmt.policy.loader import load_policies
        from casemgmt.steering.releases import due_quarters, run_releases

        self.name = f"casemgmt_load_{uuid.uuid4().hex[:8]}"
        self.role = f"casemgmt_load_app_{uuid.uuid4().hex[:8]}"
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
            conn.execute(text(f'CREATE ROLE "{self.role}" LOGIN'))
        admin.dispose()
        self.owner_url = make_url(ADMIN_URL).set(database=self.name).render_as_string(hide_password=False)
        owner = make_engine(self.owner_url)
        upgrade(owner)
        grant_service_role(owner, self.role)
        service_url = make_url(self.owner_url).set(username=self.role).render_as_string(hide_password=False)
        service = make_engine(service_url)
        with make_sessionmaker(service)() as session:
            self.world = build_world(session)
            # The Lenkungsgruppe reads released quarters (GET /reports/steering serves the latest).
            policies = load_policies(ROOT / "policies")
            now = utcnow()
            quarter = due_quarters(policies.steering.release_first_quarter, now,
                                   policies.steering.release_waiting_days)[-1]
            run_releases(session, policies.steering, policies.goals, now, quarter=quarter)
        service.dispose()
        owner.dispose()
        self.tmp = tempfile.TemporaryDirectory(prefix="casemgmt-load-")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "CASEMGMT_DATABASE_URL": service_url,
                    "CASEMGMT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
                    "CASEMGMT_DEV_KEY_DIR": str(Path(self.tmp.name) / "keys"),
                    "CASEMGMT_LOG_LEVEL": "WARNING",
                    "CASEMGMT_RATE_LIMIT_EXPENSIVE_PER_ADDRESS": "0", "CASEMGMT_RATE_LIMIT_WRITES_PER_ADDRESS": "0",
                    "CASEMGMT_RATE_LIMIT_EXPENSIVE_PER_SUBJECT": "0"}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.server = subprocess.Popen(
            [sys.executable, "-m", "casemgmt.cli", "serve", "--workers", str(workers), "--port", str(self.port)],
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise SystemExit(f"serve exited: {self.server.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.base + "/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit("serve did not become ready")

    def token(self, org: str, role: str, user: str) -> dict[str, str]:
        from casemgmt.auth.tokens import mint_dev_token
        from casemgmt.config import Settings

        settings = Settings(dev_key_dir=Path(self.env["CASEMGMT_DEV_KEY_DIR"]))
        return {"Authorization": f"Bearer {mint_dev_token(settings, user, org, [role])}"}

    def close(self) -> None:
        if self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                self.server.kill()
        admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{self.role}"'))
        admin.dispose()
        self.tmp.cleanup()


def seed(inst: Installation, users: int, handovers_per_user: int) -> list[dict]:
    """Per simulated user: a person with a chain whose first step the Sozialamt has started,
    and handovers to the ABH waiting for that user's acknowledgement."""
    wittmar = inst.world.jurisdictions["wittmar"]
    plans = []
    with httpx.Client(base_url=inst.base, timeout=60) as http:
        for i in range(users):
            ki = inst.token("ennetal_ki", "case_manager", f"cm-{i}")
            soz = inst.token("wittmar_sozialamt", "clerk", f"soz-{i}")
            abh = inst.token("ennetal_abh", "clerk", f"abh-{i}")
            persons, handovers, chains = [], [], []
            chain = None
            for j in range(handovers_per_user + 1):
                person = http.post("/persons", headers=ki, json={
                    "lead_jurisdiction_id": wittmar,
                    "fields": {"family_name": f"Last{i}x{j}", "given_names": "Probe", "birth_date": "1990-01-01",
                               "residence_status": "protection_granted", "bleibeperspektive": "good",
                               "benefit_regime": "asylblg"},
                    "consents": [{"recipients": [{"organisation_kind": "kommunales_integrationszentrum",
                                                  "jurisdiction_id": wittmar}],
                                  "categories": ["residence", "benefits"], "purpose": "case_management",
                                  "consequences_explained": True, "evidence_reference": f"EW-LOAD-{i}-{j}",
                                  "language": "Deutsch"}]})
                person.raise_for_status()
                persons.append(person.json()["id"])
                c = http.post("/chains", headers=ki, json={"person_id": persons[-1], "template_key": "refugee_recognised"})
                c.raise_for_status()
                chains.append(c.json()["id"])
                if j == 0:
                    chain = c.json()
                    started = http.post(f"/chains/{chain['id']}/steps/arrival_assignment/actions", headers=soz,
                                        json={"action": "start", "expected_version": chain["version"]})
                    started.raise_for_status()
                    chain = started.json()
                else:
                    h = http.post(f"/chains/{c.json()['id']}/handovers", headers=ki,
                                  json={"kind": "step", "step_key": "residence_permit"})
                    h.raise_for_status()
                    handovers.append(h.json()["id"])
            plans.append({"ki": ki, "soz": soz, "abh": abh, "persons": persons, "chains": chains, "chain": chain["id"],
                          "version": chain["version"], "blocked": False, "handovers": handovers,
                          "steering": inst.token("ennetal_ki", "steering", f"lg-{i}")})
    return plans


async def user(http: httpx.AsyncClient, plan: dict, stats: Stats, until: float, rng: random.Random) -> None:
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    while time.monotonic() < until:
        kind = rng.choices(kinds, weights)[0]
        if kind == "ack" and not plan["handovers"]:
            kind = "inbox"
        started = time.perf_counter()
        try:
            if kind == "inbox":
                r = await http.get("/handovers/incoming", headers=plan["abh"])
                expected = 200
            elif kind == "person":
                r = await http.get(f"/persons/{rng.choice(plan['persons'])}", headers=plan["ki"])
                expected = 200
            elif kind == "chain":
                r = await http.get(f"/chains/{rng.choice(plan['chains'])}", headers=plan["ki"])
                expected = 200
            elif kind == "chains":
                r = await http.get("/chains", params={"limit": 50}, headers=plan["ki"])
                expected = 200
            elif kind == "step":
                action = "resume" if plan["blocked"] else "block"
                body = {"action": action, "expected_version": plan["version"]}
                if action == "block":
                    body["reason"] = "Unterlagen fehlen"
                r = await http.post(f"/chains/{plan['chain']}/steps/arrival_assignment/actions",
                                    headers=plan["soz"], json=body)
                expected = 200
                if r.status_code == 200:
                    plan["version"] = r.json()["version"]
                    plan["blocked"] = not plan["blocked"]
            elif kind == "ack":
                r = await http.post(f"/handovers/{plan['handovers'].pop()}/actions", headers=plan["abh"],
                                    json={"action": "acknowledge"})
                expected = 200
            else:
                r = await http.get("/reports/steering", headers=plan["steering"])
                expected = 200
            ok = r.status_code == expected
            why = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        stats.record(kind, time.perf_counter() - started, ok, why)


async def drive(inst: Installation, plans: list[dict], seconds: float) -> tuple[Stats, float]:
    stats = Stats()
    limits = httpx.Limits(max_connections=len(plans), max_keepalive_connections=len(plans))
    async with httpx.AsyncClient(base_url=inst.base, timeout=60, limits=limits) as http:
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*(user(http, plan, stats, until, random.Random(i)) for i, plan in enumerate(plans)))
        elapsed = time.monotonic() - started
    return stats, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--handovers", type=int, default=4, help="handovers per user to acknowledge")
    parser.add_argument("--smoke", action="store_true", help="5 users, 5 s, 1 handover each")
    args = parser.parse_args()
    if args.smoke:
        args.users, args.seconds, args.handovers = 5, 5, 1
    inst = Installation(args.workers)
    try:
        t0 = time.monotonic()
        plans = seed(inst, args.users, args.handovers)
        print(f"seeded {args.users} users ({args.users * (args.handovers + 1)} persons and chains, "
              f"{args.users * args.handovers} handovers) in {time.monotonic() - t0:.1f} s; "
              f"serve --workers {args.workers} on 127.0.0.1:{inst.port}")
        stats, elapsed = asyncio.run(drive(inst, plans, args.seconds))
    finally:
        inst.close()
    total = sum(len(v) for v in stats.latencies.values())
    errors = sum(stats.errors.values())
    print(f"\n{args.users} users for {elapsed:.1f} s: {total} requests, {total / elapsed:.1f} requests/s, "
          f"{errors} errors")
    print(f"{'kind':<8}{'count':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for kind, values in stats.latencies.items():
        print(f"{kind:<8}{len(values):>8}{pct(values, 50):>10.1f}{pct(values, 95):>10.1f}"
              f"{pct(values, 99):>10.1f}{stats.errors[kind]:>8}")
    for sample in stats.samples:
        print(f"  e.g. {sample}")
    reads = [k for k in READS if stats.latencies[k]]
    worst = max(reads, key=lambda k: pct(stats.latencies[k], 95))
    p95 = pct(stats.latencies[worst], 95)
    print(f"\ntarget (issue 14, at 20 users): p95 <= {READ_P95_TARGET_MS} ms for every read kind: "
          f"worst {worst} {p95:.1f} ms {'PASS' if p95 <= READ_P95_TARGET_MS else 'FAIL'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
