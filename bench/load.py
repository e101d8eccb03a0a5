"""Load: a bounded, realistic mix against `casemgmt serve --workers 2` on PostgreSQL.

    python bench/load.py              # 50 simulated users for 60 s
    python bench/load.py --smoke      # 5 users for 5 s (seconds in all, for CI and a quick look)

On the harness (bench/harness.py): a database and a restricted service role of its own, the
synthetic Kreis with a released quarter, `casemgmt serve --workers 2` on a free loopback port
(harness.Server) driven over HTTP; everything is removed at the end, also after an error or
Ctrl-C. Traffic goes to 127.0.0.1 only.

The mix, per simulated user and weighted: inbox reads (a clerk's incoming handovers), person
reads, chain reads and chain lists (the case manager's "Meine Fälle", 50 a page), step actions
(a clerk blocks and resumes a step of the user's own chain, with the version it read), handover acknowledgements (the receiving clerk, each handover
once) and steering report reads. Each user has its own token subject, chains and handovers, so
a 409 would be a defect, not contention the mix made up. The per-address rate limits are off
(every simulated user comes from 127.0.0.1); the per-user ones stay on.

Prints the throughput, p50/p95/p99 per request kind, the error count (any status other than
the expected one, or a transport error; zero errors is the bar: it exits 1 otherwise) and the
server's CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/transitions.py would shadow the `transitions` library that casemgmt.chains.engine imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import httpx  # noqa: E402

from bench import harness as h  # noqa: E402
from casemgmt.database import make_engine, make_sessionmaker  # noqa: E402
from casemgmt.demo.world import build_world  # noqa: E402
from casemgmt.policy.loader import load_policies  # noqa: E402
from casemgmt.steering.releases import due_quarters, run_releases  # noqa: E402

READS = ("inbox", "person", "chain", "chains", "report")
READ_P95_TARGET_MS = 300
WEIGHTS = {"inbox": 25, "person": 25, "chain": 12, "chains": 8, "step": 13, "ack": 9, "report": 8}


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


def prepare(url: str) -> dict[str, int]:
    """The synthetic Kreis and a released quarter (GET /reports/steering serves the latest), as
    the service role; the towns' ids."""
    with make_sessionmaker(make_engine(url))() as session:
        world = build_world(session)
        policies = load_policies(h.POLICY_DIR)
        now = datetime.now(UTC)
        quarter = due_quarters(policies.steering.release_first_quarter, now, policies.steering.release_waiting_days)[-1]
        run_releases(session, policies.steering, policies.goals, now, quarter=quarter)
    return world.jurisdictions


def seed(server: h.Server, wittmar: int, users: int, handovers_per_user: int) -> list[dict]:
    """Per simulated user: a person with a chain whose first step the Sozialamt has started,
    and handovers to the ABH waiting for that user's acknowledgement."""
    plans = []
    with httpx.Client(base_url=server.base, timeout=60) as http:
        for i in range(users):
            ki = server.token("ennetal_ki", "case_manager", f"cm-{i}")
            soz = server.token("wittmar_sozialamt", "clerk", f"soz-{i}")
            abh = server.token("ennetal_abh", "clerk", f"abh-{i}")
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
                          "steering": server.token("ennetal_ki", "steering", f"lg-{i}")})
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


async def drive(server: h.Server, plans: list[dict], seconds: float) -> tuple[Stats, float]:
    stats = Stats()
    limits = httpx.Limits(max_connections=len(plans), max_keepalive_connections=len(plans))
    async with httpx.AsyncClient(base_url=server.base, timeout=60, limits=limits) as http:
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*(user(http, plan, stats, until, random.Random(i)) for i, plan in enumerate(plans)))
        elapsed = time.monotonic() - started
    return stats, elapsed


def run(bench: h.Bench, args: argparse.Namespace) -> None:
    r = bench.results
    r.update(users=args.users, seconds=args.seconds, workers=args.workers, handovers=args.handovers)
    db = bench.database("main")
    bench.server_facts(db.owner_url)
    towns = prepare(db.service_url)
    with h.Server(db.service_url, bench.master, args.workers, h.NO_RATE_LIMITS) as server:
        bench.phase("seeding")
        t0 = time.monotonic()
        plans = seed(server, towns["wittmar"], args.users, args.handovers)
        r["seed_s"] = time.monotonic() - t0
        h.log(f"seeded {args.users} users ({args.users * (args.handovers + 1)} persons and chains, "
              f"{args.users * args.handovers} handovers) in {r['seed_s']:.1f} s")
        bench.phase("load")
        pids = server.pids()
        cpu_before = h.backend_cpu(pids)
        stats, elapsed = asyncio.run(drive(server, plans, args.seconds))
        cpu_after = h.backend_cpu(server.pids() & pids)
    total = sum(len(v) for v in stats.latencies.values())
    r["elapsed_s"], r["requests"] = elapsed, total
    r["kinds"] = {k: {"count": len(v), "p50_ms": h.percentile(v, 50) * 1000 if v else None,
                      "p95_ms": h.percentile(v, 95) * 1000 if v else None,
                      "p99_ms": h.percentile(v, 99) * 1000 if v else None, "errors": stats.errors[k]}
                  for k, v in stats.latencies.items()}
    r["error_samples"] = stats.samples
    if cpu_before is not None and cpu_after is not None and total:
        r["server_cpu_ms_per_request"] = (cpu_after - cpu_before) / total * 1000
    if sum(stats.errors.values()):
        raise RuntimeError(f"{sum(stats.errors.values())} requests answered other than expected")


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    h.banner(f"casemgmt load - {r.get('users')} users against casemgmt serve --workers {r.get('workers')}", r)
    if "kinds" not in r:
        return
    errors = sum(k["errors"] for k in r["kinds"].values())
    h.heading(f"Load: {r['users']} users for {r['elapsed_s']:.1f} s")
    print(f"  {r['requests']} requests, {r['requests'] / r['elapsed_s']:.1f} requests/s, {errors} errors"
          + (f"; server CPU {r['server_cpu_ms_per_request']:.2f} ms per request (uvicorn master and workers)"
             if r.get("server_cpu_ms_per_request") is not None else ""))
    h.heading("Latency per request kind")
    print(f"  {'kind':<8}{'count':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for kind, k in r["kinds"].items():
        shown = [f"{k[q]:>10.1f}" if k[q] is not None else f"{'-':>10}" for q in ("p50_ms", "p95_ms", "p99_ms")]
        print(f"  {kind:<8}{k['count']:>8}{''.join(shown)}{k['errors']:>8}")
    for sample in r.get("error_samples", []):
        print(f"    e.g. {sample}")
    reads = [kind for kind in READS if r["kinds"][kind]["count"]]
    if reads:
        worst = max(reads, key=lambda kind: r["kinds"][kind]["p95_ms"])
        p95 = r["kinds"][worst]["p95_ms"]
        h.heading("Target")
        h.target(f"p95 of every read kind (issue 14, at 20 users; this run {r['users']})", p95,
                 READ_P95_TARGET_MS, True, f"worst {worst} {p95:.1f} ms")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--handovers", type=int, default=4, help="handovers per user to acknowledge")
    h.common_args(p)
    return h.smoke_sizes(p.parse_args(), {"users": 5, "seconds": 5, "handovers": 1})


if __name__ == "__main__":
    sys.exit(h.main("load", parse_args(), run, report))
