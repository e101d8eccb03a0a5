"""Steering-report benchmark: ``build_report`` against a hand-written SQL aggregate, and the OCEL
export, on a Kreis of 100,000 persons.

Run from the repository root::

    .venv/bin/python bench/report.py [--persons 100000] [--events 1000000] [--findings 20000]
        [--repeat 5]

The database is filled with set-based SQL (persons, chains, chain steps assigned as the service
assigns them, chain events naming the organisations they concern, handovers and their events,
Fallkonferenzen with cases, findings with cases and organisation kinds) as the database's owner
and a superuser: helper tables, dropped and rebuilt indexes, foreign-key triggers off (replica
mode) and VACUUM ANALYZE are not the service role's to do. Everything measured runs as the
service role.

1. ``build_report(session, policies.steering, policies.goals, area, now)`` for the Kreis, warm,
   median of ``--repeat`` runs, each in a fresh session as a request gets one.
2. The same raw cells computed by hand-written SQL (five plain statements: barriers, overdue
   steps, conference persons, waiting-time percentiles, goal attainment), measured the same way
   and interleaved run by run with 1., so that both see the same machine. Before timing, every
   raw cell of the hand-written SQL is compared with what the report's query functions return
   (before suppression), both the aggregates build_report uses on PostgreSQL
   (``waiting_figures``, ``attainment_in_sql``) and the Python reference (``waiting_times``,
   ``goal_clocks`` + ``attainment``). Target: report <= 1.5x hand-written SQL.
3. Where the report's time goes: the query functions build_report calls on PostgreSQL timed on
   their own, an instrumented ``build_report`` (phases: each query function,
   ``disclosure.protect``), a cProfile, and EXPLAIN (ANALYZE, BUFFERS) of every statement
   ``build_report`` sends.
4. ``export_ocel`` in a child process (time, peak memory, JSON size with Starlette's
   ``json.dumps`` settings), and once more with its input streams materialised first, to split
   reading from building.

A script, not a test: it prints figures and one PASS/FAIL line. It never changes
application code; the phase breakdown wraps functions of ``casemgmt.steering.report`` and
``casemgmt.steering.disclosure`` inside this process only.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import random
import resource
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/transitions.py would shadow the `transitions` library that casemgmt.chains.engine imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from bench import harness as h  # noqa: E402
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER  # noqa: E402
from casemgmt.database import make_engine, make_sessionmaker  # noqa: E402
from casemgmt.demo.world import KREIS  # noqa: E402
from casemgmt.policy.loader import Policies  # noqa: E402
from casemgmt.steering import disclosure  # noqa: E402
from casemgmt.steering import report as steering_report  # noqa: E402
from casemgmt.steering.goals import Goal, attainment, goal_clocks, measurable  # noqa: E402

TARGET_RATIO = 1.5
TMAX_DAYS = 730  # chains started within the last two years
CASES_PER_CONFERENCE = 20
FINDINGS_PER_CONFERENCE = 10
EXTRA_CHAIN_SHARE = 0.03  # persons with a second chain (another template), for the per-person rule
STALLED_SHARE = 0.12  # chains whose progress stopped 20-120 days ago (overdue steps)
HANDOVERS_PER_PERSON = 0.5
PENDING_HANDOVER_SHARE = 0.07
TEMPLATE_MIX = [("refugee_recognised", 0.50), ("eu_newcomer", 0.20), ("tolerated_family", 0.15),
                ("young_adult", 0.10), ("uma", 0.05)]
SECOND_TEMPLATE = {"refugee_recognised": "eu_newcomer"}  # others: refugee_recognised
RESIDENCE = {"refugee_recognised": ("protection_granted", "good", "asylblg"),
             "eu_newcomer": ("eu_free_movement", "unknown", "none"),
             "tolerated_family": ("tolerated", "unclear", "asylblg"),
             "young_adult": ("protection_granted", "good", "sgb_ii"),
             "uma": ("asylum_pending", "good", "none")}
# Typical length of a step in days, by key (first match); the wait before a step is per chain.
STEP_DAYS = [("integration_course_entitlement", 14), ("integration_course", 180),
             ("asylum_decision", 90), ("residence_permit", 30), ("language_course", 120),
             ("course_admission", 14), ("training", 90), ("work", 60), ("job", 60),
             ("placement", 60), ("housing", 90), ("school", 20), ("kita", 30), ("closure", 5),
             ("handover", 5), ("guardianship", 30), ("clearing", 20)]
DEFAULT_STEP_DAYS = 7
SMOKE = {"persons": 300, "events": 3000, "findings": 100, "repeat": 1}
OCEL_URL_VARIABLE = "CASEMGMT_BENCH_OCEL_URL"  # the child's database URL (not on its command line)


def step_days(key: str) -> int:
    return next((d for pat, d in STEP_DAYS if pat in key), DEFAULT_STEP_DAYS)


# --------------------------------------------------------------------------------------------
# Data generation, set-based



def u(expr: str, salt: int) -> str:
    """A deterministic uniform number in [0, 1) from an integer expression and a salt."""
    return f"((hashint8(({expr})::bigint * 64 + {salt})::bigint + 2147483648) / float8 '4294967296')"


def calibrate_exponent(policies: Policies, chains: int, events: int) -> tuple[float, float]:
    """The exponent a of the chain age T = TMAX * U^a that gives about ``events`` chain events,
    by a Monte-Carlo run of the same model the SQL below uses (Python's random numbers)."""
    tpl_days = {k: [step_days(s.key) for s in t.steps] for k, t in policies.templates.items()}

    def mean_events(a: float) -> float:
        rnd = random.Random(7)
        n = 6000
        total = 0
        for _ in range(n):
            x, acc = rnd.random(), 0.0
            key = TEMPLATE_MIX[-1][0]
            for k, share in TEMPLATE_MIX:
                acc += share
                if x < acc:
                    key = k
                    break
            gw = 2 + 80 * rnd.random() ** 2
            age = TMAX_DAYS * rnd.random() ** a
            stall = (20 + 100 * rnd.random()) if rnd.random() < STALLED_SHARE else 0.0
            tp = max(age - stall, 0.0)
            ev, t = 1, 0.0
            for d in tpl_days[key]:
                ready = t
                start = ready + gw * rnd.random()
                t = start + d * (0.3 + 1.4 * rnd.random())
                ev += (ready <= tp) + (start <= tp) + (t <= tp)
            ev += t <= tp
            total += ev
        return total / n

    want = events / chains
    lo, hi = 0.3, 40.0
    if mean_events(hi) > want:
        return hi, mean_events(hi)
    if mean_events(lo) < want:
        return lo, mean_events(lo)
    for _ in range(16):
        mid = math.sqrt(lo * hi)
        if mean_events(mid) > want:
            lo = mid
        else:
            hi = mid
    a = math.sqrt(lo * hi)
    return a, mean_events(a)


def town_slots(world_towns: list[tuple[int, int]], slots: int = 1000) -> list[int]:
    total = sum(p for _, p in world_towns)
    out: list[int] = []
    acc = 0
    for town, people in world_towns:
        acc += people
        while len(out) < round(acc / total * slots):
            out.append(town)
    return out



def generate(engine: Engine, app: h.App, now: datetime, args: argparse.Namespace) -> dict[str, Any]:
    """Fill the database as the owner (``engine``); every statement is an INSERT ... SELECT over
    generate_series."""
    policies, catalog = app.policies, app.catalog
    P = args.persons
    extras = int(P * EXTRA_CHAIN_SHARE)
    C = P + extras
    a, expected = calibrate_exponent(policies, C, args.events)
    h.log(f"chain age T = {TMAX_DAYS} d x U^{a:.2f} (Monte Carlo: {expected:.1f} events per chain)")
    figures: dict[str, Any] = {"age_exponent": a}
    timings: dict[str, float] = {}

    jur = app.world.jurisdictions
    towns = app.towns()
    kreis_id = jur[KREIS[0]]
    ki = app.orgs["ennetal_ki"].id
    wittmar_ki = app.orgs["wittmar_ki"].id
    # The organisation of each kind a step in each town is assigned to: the service's own rule
    # (casemgmt.jurisdictions.service.nearest_serving_organisations).
    with engine.connect() as conn:
        path_of = dict(conn.execute(text("SELECT id, path FROM jurisdictions")).all())
    kinds_in_use = {s.owner for t in policies.templates.values() for s in t.steps} - {CASE_MANAGEMENT_OWNER}
    kinds_in_use |= set(policies.organisation_kinds)
    kindorg = [(kind, town, org) for town, _ in towns
               for kind, org in sorted(app.nearest(kinds_in_use, path_of[town]).items())]

    tpl_rows = []
    mix_hi = 0.0
    mix = []
    for key, share in TEMPLATE_MIX:
        mix.append((key, mix_hi, mix_hi + share))
        mix_hi += share
    for key, template in catalog.current.items():
        index = {s.key: i for i, s in enumerate(template.steps)}
        n = len(template.steps)
        for i, s in enumerate(template.steps):
            due = s.due
            anchor_ord = None
            if due is not None:
                anchor_ord = -1 if due.anchor == "chain_started" else index[due.anchor]
            tpl_rows.append({
                "template_key": key, "version": template.version, "n": n, "ord": i, "key": s.key,
                "owner_kind": s.owner, "optional": s.optional, "base_days": float(step_days(s.key)),
                "anchor_ord": anchor_ord, "anchor_event": due.anchor_event if due else None,
                "due_days": due.days if due else None, "due_for": due.deadline_for if due else None,
                "actor_kind": "kommunales_integrationszentrum" if s.owner == CASE_MANAGEMENT_OWNER
                else s.owner,
                "cm_acts": s.owner == CASE_MANAGEMENT_OWNER,
            })
    mix_case = " ".join(f"WHEN x < {hi!r} THEN '{key}'" for key, lo, hi in mix)
    second_case = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in SECOND_TEMPLATE.items())
    res_case = {i: " ".join(f"WHEN '{k}' THEN '{v[i]}'" for k, v in RESIDENCE.items()) for i in range(3)}
    barriers = list(policies.steering.barrier_categories)
    fields = list(policies.steering.fields_of_action)
    kinds = list(policies.organisation_kinds)
    H = int(P * HANDOVERS_PER_PERSON)
    pending = min(int(H * PENDING_HANDOVER_SHARE), P)
    F = args.findings
    NC = max(1, math.ceil(F / FINDINGS_PER_CONFERENCE))
    CPC = CASES_PER_CONFERENCE
    if P < CPC:
        raise SystemExit(f"--persons must be at least {CPC}")
    stride = next(s for s in range(max(1, P // CPC), 10 * P + 2) if math.gcd(s, P) == 1)
    params = {"now": now, "P": P, "C": C, "a": a, "tmax": TMAX_DAYS, "slots": town_slots(towns),
              "wittmar": jur["wittmar"], "wittmar_ki": wittmar_ki, "ki": ki, "kreis": kreis_id,
              "stalled": STALLED_SHARE, "H": H, "pending": pending, "F": F, "NC": NC,
              "barriers": barriers, "fields": fields, "kinds": kinds, "stride": stride}

    def run(label: str, sql: str, **extra: Any) -> int:
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL work_mem = '256MB'"))
            conn.execute(text("SET LOCAL synchronous_commit = off"))
            # Bulk load: no per-row foreign-key triggers (the rows are consistent by construction;
            # each RI check would also lock the referenced row). Needs a superuser, as the tests'.
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            n = conn.execute(text(sql), {**params, **extra}).rowcount
        timings[label] = time.perf_counter() - t0
        h.log(f"  {label}: {n:,} rows in {timings[label]:.1f} s")
        return n

    t_all = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("""
            CREATE UNLOGGED TABLE bench_tpl (template_key text, version int, n int, ord int, key text,
              owner_kind text, optional bool, base_days float8, anchor_ord int, anchor_event text,
              due_days int, due_for text, actor_kind text, cm_acts bool, PRIMARY KEY (template_key, ord))
        """))
        conn.execute(text("CREATE UNLOGGED TABLE bench_kindorg (kind text, town int, org_id int, "
                          "PRIMARY KEY (kind, town))"))
        conn.execute(text("INSERT INTO bench_tpl VALUES (:template_key, :version, :n, :ord, :key, "
                          ":owner_kind, :optional, :base_days, :anchor_ord, :anchor_event, :due_days, "
                          ":due_for, :actor_kind, :cm_acts)"), tpl_rows)
        conn.execute(text("INSERT INTO bench_kindorg VALUES (:kind, :town, :org)"),
                     [{"kind": k, "town": t, "org": o} for k, t, o in kindorg])

    # One row per chain: its person, template, town, pace and age. Chain c < P is person c's
    # main chain; the extras give a few persons a second chain of another template.
    run("bench_chain (helper)", f"""
        CREATE UNLOGGED TABLE bench_chain AS
        WITH src AS (
          SELECT c, p, {u('p', 1)} AS x_main FROM (
            SELECT k AS c, k AS p FROM generate_series(0, CAST(:P AS int) - 1) k
            UNION ALL
            SELECT CAST(:P AS int) + j, (j * 37) % CAST(:P AS int)
            FROM generate_series(0, CAST(:C AS int) - CAST(:P AS int) - 1) j) s
        ), t AS (
          SELECT src.*, (SELECT CASE {mix_case.replace('x <', 'src.x_main <')} END) AS main_template,
                 (CAST(:slots AS int[]))[1 + floor({u('p', 11)} * 1000)::int] AS town
          FROM src
        ), v AS (
          SELECT t.*, CASE WHEN c < CAST(:P AS int) THEN main_template
                           ELSE CASE main_template {second_case} ELSE 'refugee_recognised' END END AS template_key,
                 2 + 80 * power({u('c', 2)}, 2) AS gw,
                 CAST(:tmax AS float8) * power({u('c', 3)}, CAST(:a AS float8)) AS age,
                 CASE WHEN {u('c', 4)} < CAST(:stalled AS float8) THEN 20 + 100 * {u('c', 5)} ELSE 0 END AS stall
          FROM t
        )
        SELECT c, p, md5('bench-chain-' || c)::uuid AS id, md5('bench-person-' || p)::uuid AS person_id,
               v.template_key, tp.version, tp.n, town,
               CASE WHEN town = CAST(:wittmar AS int) THEN CAST(:wittmar_ki AS int) ELSE CAST(:ki AS int) END AS cm,
               gw, age, greatest(age - stall, 0) AS tp,
               CAST(:now AS timestamptz) - age * interval '1 day' AS started
        FROM v JOIN (SELECT DISTINCT template_key, version, n FROM bench_tpl) tp USING (template_key)
    """)
    # One row per chain step: when it became ready, started and ended, in days after the chain
    # started (a wait per chain, then a duration per step, in template order).
    run("bench_sched (helper)", f"""
        CREATE UNLOGGED TABLE bench_sched AS
        SELECT c, ord, t_end - d - w AS ready, t_end - d AS start, t_end AS complete FROM (
          SELECT ch.c, t.ord, x.w, x.d, sum(x.w + x.d) OVER (PARTITION BY ch.c ORDER BY t.ord) AS t_end
          FROM bench_chain ch JOIN bench_tpl t USING (template_key)
          CROSS JOIN LATERAL (SELECT ch.gw * {u('ch.c * 32 + t.ord', 6)} AS w,
                                     t.base_days * (0.3 + 1.4 * {u('ch.c * 32 + t.ord', 7)}) AS d) x
        ) s
    """)
    with engine.begin() as conn:
        # Each chain's step start and end times as arrays, to find a due rule's anchor.
        for sql in ("CREATE UNLOGGED TABLE bench_times AS SELECT c, array_agg(start ORDER BY ord) AS starts, "
                    "array_agg(complete ORDER BY ord) AS completes FROM bench_sched GROUP BY c",
                    "ANALYZE bench_chain", "ANALYZE bench_sched", "ANALYZE bench_times"):
            conn.execute(text(sql))

    run("persons", f"""
        INSERT INTO persons (id, residence_status, bleibeperspektive, benefit_regime, lead_jurisdiction_id,
                             created_by_organisation_id, created_at, plain_field_writers)
        SELECT person_id, CASE template_key {res_case[0]} END, CASE template_key {res_case[1]} END,
               CASE template_key {res_case[2]} END, town, cm, started,
               json_build_object('residence_status', cm, 'bleibeperspektive', cm, 'benefit_regime', cm)
        FROM bench_chain WHERE c < CAST(:P AS int) ORDER BY c
    """)
    run("chains", """
        INSERT INTO chains (id, person_id, template_key, template_version, lead_jurisdiction_id,
                            case_management_organisation_id, lifecycle, closed_reason, started_at,
                            completed_at, closed_at, updated_at, version)
        SELECT ch.id, ch.person_id, ch.template_key, ch.version, ch.town, ch.cm,
               CASE WHEN s.complete <= ch.tp THEN 'completed' ELSE 'open' END, NULL, ch.started,
               CASE WHEN s.complete <= ch.tp THEN ch.started + s.complete * interval '1 day' END, NULL,
               ch.started + least(s.complete, ch.tp) * interval '1 day', 1
        FROM bench_chain ch JOIN bench_sched s ON s.c = ch.c AND s.ord = ch.n - 1
        ORDER BY ch.started, ch.id
    """)
    # A step is assigned when it becomes ready (the case management for its own steps), and
    # each step event names the organisation the step is assigned to after it, as the service
    # writes them (chains.service.assign_ready_steps, step_event_rows).
    with engine.connect() as idx_conn, h.indexes_deferred(idx_conn, ("chain_steps", "chain_events")) as deferred:
        run("chain_steps", """
            INSERT INTO chain_steps (chain_id, key, owner_kind, optional, state, reason, started_at,
                                     completed_at, due_at, due_for, assigned_organisation_id, updated_at)
            SELECT ch.id, t.key, t.owner_kind, t.optional,
                   CASE WHEN s.complete <= ch.tp THEN 'completed' WHEN s.start <= ch.tp THEN 'in_progress'
                        WHEN s.ready <= ch.tp THEN 'ready' ELSE 'planned' END,
                   NULL,
                   CASE WHEN s.start <= ch.tp THEN ch.started + s.start * interval '1 day' END,
                   CASE WHEN s.complete <= ch.tp THEN ch.started + s.complete * interval '1 day' END,
                   CASE WHEN anchor <= ch.tp THEN ch.started + (anchor + t.due_days) * interval '1 day' END,
                   CASE WHEN anchor <= ch.tp THEN t.due_for END,
                   CASE WHEN s.ready <= ch.tp THEN CASE WHEN t.cm_acts THEN ch.cm ELSE ko.org_id END END,
                   ch.started + least(ch.tp, greatest(s.ready, 0)) * interval '1 day'
            FROM bench_chain ch JOIN bench_tpl t USING (template_key)
            JOIN bench_sched s ON s.c = ch.c AND s.ord = t.ord
            JOIN bench_times a ON a.c = ch.c
            LEFT JOIN bench_kindorg ko ON ko.kind = t.owner_kind AND ko.town = ch.town
            CROSS JOIN LATERAL (SELECT CASE WHEN t.anchor_ord = -1 THEN 0
                                            WHEN t.anchor_event = 'started' THEN a.starts[t.anchor_ord + 1]
                                            ELSE a.completes[t.anchor_ord + 1] END AS anchor) x
            ORDER BY ch.id, t.ord  -- in the order of uq_chain_steps_chain_id_key: cheap index inserts
        """)
        # Who acted: a step's start and complete by its organisation; its make_ready by whoever
        # completed the step before it (steps run in template order here; the case management at
        # the chain's start), and the chain's completion by whoever completed its last step.
        run("chain_events", """
            INSERT INTO chain_events (chain_id, kind, step_key, action, from_state, to_state, reason,
                                      actor_user, actor_organisation_id, organisation_id, occurred_at)
            SELECT chain_id, kind, step_key, action, from_state, to_state, reason, 'bench.user', actor, org,
                   started + at * interval '1 day'
            FROM (
              SELECT ch.id AS chain_id, ch.c, -1 AS ord, 0 AS phase, 'chain_started' AS kind, NULL AS step_key,
                     NULL AS action, NULL AS from_state, 'open' AS to_state,
                     ch.template_key || ' v' || ch.version AS reason, ch.cm AS actor, ch.cm AS org, ch.started,
                     0 AS at
              FROM bench_chain ch
              UNION ALL
              SELECT ch.id, ch.c, t.ord, e.phase, 'step', t.key, e.action, e.from_state, e.to_state, NULL,
                     CASE WHEN e.phase > 1 THEN own.org WHEN tp.ord IS NULL OR tp.cm_acts THEN ch.cm
                          ELSE kp.org_id END,
                     own.org, ch.started, e.at
              FROM bench_chain ch JOIN bench_tpl t USING (template_key)
              JOIN bench_sched s ON s.c = ch.c AND s.ord = t.ord
              LEFT JOIN bench_kindorg ko ON ko.kind = t.owner_kind AND ko.town = ch.town
              LEFT JOIN bench_tpl tp ON tp.template_key = t.template_key AND tp.ord = t.ord - 1
              LEFT JOIN bench_kindorg kp ON kp.kind = tp.owner_kind AND kp.town = ch.town
              CROSS JOIN LATERAL (SELECT CASE WHEN t.cm_acts THEN ch.cm ELSE ko.org_id END AS org) own
              CROSS JOIN LATERAL (VALUES (1, 'make_ready', 'planned', 'ready', greatest(s.ready, 0)),
                                         (2, 'start', 'ready', 'in_progress', s.start),
                                         (3, 'complete', 'in_progress', 'completed', s.complete))
                         AS e(phase, action, from_state, to_state, at)
              WHERE e.at <= ch.tp
              UNION ALL
              SELECT ch.id, ch.c, ch.n, 4, 'chain_completed', NULL, NULL, 'open', 'completed', NULL,
                     CASE WHEN tl.cm_acts THEN ch.cm ELSE kl.org_id END, ch.cm, ch.started, s.complete
              FROM bench_chain ch JOIN bench_sched s ON s.c = ch.c AND s.ord = ch.n - 1
              JOIN bench_tpl tl ON tl.template_key = ch.template_key AND tl.ord = ch.n - 1
              LEFT JOIN bench_kindorg kl ON kl.kind = tl.owner_kind AND kl.town = ch.town
              WHERE s.complete <= ch.tp
            ) e
            ORDER BY started + at * interval '1 day', c, ord, phase
        """)
        t0 = time.perf_counter()
    timings["indexes of chain_steps, chain_events"] = time.perf_counter() - t0
    h.log(f"  indexes of chain_steps and chain_events rebuilt in {timings['indexes of chain_steps, chain_events']:.1f} s "
          f"({', '.join(name for name, _ in deferred)}; definitions checked against the migrated ones)")
    # Handovers: on a random step of a random main chain (waiting ones each on a chain of its
    # own), from the owner of the step before (or the case management) to the step's owner.
    run("handovers", f"""
        INSERT INTO handovers ({h.columns("handovers")})
        WITH h AS (
          SELECT n, md5('bench-handover-' || n)::uuid AS id,
                 CASE WHEN n < CAST(:pending AS int) THEN n
                      ELSE floor({u('n', 21)} * CAST(:P AS int))::int END AS c,
                 CASE WHEN n < CAST(:pending AS int) THEN 'requested'
                      WHEN {u('n', 22)} < 0.92 THEN 'acknowledged'
                      WHEN {u('n', 22)} < 0.97 THEN 'rejected' ELSE 'withdrawn' END AS state,
                 {u('n', 23)} AS u_ord, {u('n', 24)} AS u_time, {u('n', 26)} AS u_hour,
                 floor(45 * power({u('n', 25)}, 2))::int AS wait
          FROM generate_series(0, CAST(:H AS int) - 1) n
        ), j AS (
          SELECT h.*, ch.id AS chain_id, ch.person_id, ch.town, ch.cm, ch.started, ch.template_key,
                 least(floor(h.u_ord * ch.n)::int, ch.n - 1) AS ord,
                 least(h.wait, floor(extract(epoch FROM CAST(:now AS timestamptz) - ch.started) / 86400)::int) AS w
          FROM h JOIN bench_chain ch ON ch.c = h.c
        ), k AS (
          SELECT j.*, t.key AS step_key, t.actor_kind AS r_kind, t.cm_acts AS r_cm,
                 coalesce(tp.actor_kind, 'kommunales_integrationszentrum') AS s_kind0,
                 coalesce(tp.cm_acts, true) AS s_cm0
          FROM j JOIN bench_tpl t ON t.template_key = j.template_key AND t.ord = j.ord
          LEFT JOIN bench_tpl tp ON tp.template_key = j.template_key AND tp.ord = j.ord - 1
        ), m AS (
          SELECT k.*,
                 CASE WHEN s_kind0 <> r_kind THEN s_kind0
                      WHEN r_kind <> 'kommunales_integrationszentrum' THEN 'kommunales_integrationszentrum'
                      ELSE 'sozialamt' END AS s_kind,
                 CASE WHEN s_kind0 <> r_kind THEN s_cm0 ELSE r_kind <> 'kommunales_integrationszentrum' END AS s_cm,
                 started + u_time * greatest(CAST(:now AS timestamptz) - started - w * interval '1 day',
                                             interval '0') AS requested_at
          FROM k
        ), o AS (
          SELECT m.*,
                 CASE WHEN s_cm THEN cm ELSE so.org_id END AS s_org,
                 CASE WHEN r_cm THEN cm ELSE ro.org_id END AS r_org,
                 CASE WHEN state = 'requested' THEN NULL
                      ELSE least(CAST(:now AS timestamptz),
                                 requested_at + w * interval '1 day' + u_hour * interval '8 hours') END AS responded_at
          FROM m LEFT JOIN bench_kindorg so ON so.kind = m.s_kind AND so.town = m.town
          LEFT JOIN bench_kindorg ro ON ro.kind = m.r_kind AND ro.town = m.town
        ), q AS (
          SELECT o.*, coalesce(s_org, cm) AS s, coalesce(r_org, cm) AS r,
                 (requested_at AT TIME ZONE 'Europe/Berlin')::date + 7 AS due_date,
                 (responded_at AT TIME ZONE 'Europe/Berlin')::date
                   - (requested_at AT TIME ZONE 'Europe/Berlin')::date AS cal
          FROM o
        )
        SELECT q.id, 'step', state, chain_id, person_id, 'step:' || step_key, step_key, NULL, NULL, NULL,
               s, so.kind, so.jurisdiction_id, 'bench.sender', r, ro.kind, ro.jurisdiction_id, cm, town,
               NULL, 'case_management', CAST('[]' AS json), CAST('{{}}' AS json), CAST('[]' AS json), NULL, NULL,
               5, requested_at, due_date, (due_date + 1)::timestamp AT TIME ZONE 'Europe/Berlin', NULL,
               responded_at, CASE WHEN responded_at IS NOT NULL THEN 'bench.receiver' END,
               CASE WHEN state = 'rejected' THEN 'Nicht zuständig' END,
               CASE WHEN state = 'acknowledged' THEN cal END,
               CASE WHEN state = 'acknowledged' THEN (cal * 5) / 7 END,
               CASE WHEN state = 'requested' THEN 1 ELSE 2 END, coalesce(responded_at, requested_at)
        FROM q JOIN organisations so ON so.id = q.s JOIN organisations ro ON ro.id = q.r
        ORDER BY requested_at
    """)
    run("handover_events", """
        INSERT INTO handover_events (handover_id, action, from_state, to_state, reason, actor_user,
                                     actor_organisation_id, occurred_at)
        SELECT id, action, from_state, to_state, reason, actor_user, org, at FROM (
          SELECT id, 'request' AS action, NULL AS from_state, 'requested' AS to_state, NULL AS reason,
                 sender_user AS actor_user, sender_organisation_id AS org, requested_at AS at
          FROM handovers
          UNION ALL
          SELECT id, CASE state WHEN 'acknowledged' THEN 'acknowledge' WHEN 'rejected' THEN 'reject'
                                ELSE 'withdraw' END,
                 'requested', state, response_reason, responded_by_user,
                 CASE WHEN state = 'withdrawn' THEN sender_organisation_id ELSE receiver_organisation_id END,
                 responded_at
          FROM handovers WHERE responded_at IS NOT NULL
        ) e ORDER BY at
    """)
    run("conferences", f"""
        INSERT INTO conferences (id, title, scheduled_at, jurisdiction_id, moderator_organisation_id,
                                 moderator_user, phase, created_at, updated_at, version)
        SELECT md5('bench-conference-' || m)::uuid, 'Fallkonferenz ' || m, at, CAST(:kreis AS int),
               CAST(:ki AS int), 'bench.moderator', 'closed', at - interval '14 days', at, 1
        FROM (SELECT m, CAST(:now AS timestamptz) - CAST(:tmax AS int) * {u('m', 31)} * interval '1 day' AS at
              FROM generate_series(0, CAST(:NC AS int) - 1) m) s
        ORDER BY at
    """)
    run("conference_cases", f"""
        INSERT INTO conference_cases (id, conference_id, chain_id, person_id, legal_bases, added_by_user, added_at)
        SELECT m * {CPC} + j + 1, cf.id, md5('bench-chain-' || c)::uuid, md5('bench-person-' || c)::uuid,
               CAST('{{}}' AS json), 'bench.moderator', cf.scheduled_at
        FROM (SELECT m, j, ((m::bigint * 7919 + j::bigint * CAST(:stride AS bigint)) % CAST(:P AS int))::int AS c
              FROM generate_series(0, CAST(:NC AS int) - 1) m, generate_series(0, {CPC - 1}) j) s
        JOIN conferences cf ON cf.id = md5('bench-conference-' || m)::uuid
        ORDER BY m, j
    """)
    with engine.begin() as conn:
        conn.execute(text("SELECT setval('conference_cases_id_seq', (SELECT max(id) FROM conference_cases))"))
    finding_src = f"""
        SELECT f, f % CAST(:NC AS int) AS m,
               (CAST(:barriers AS text[]))[1 + floor(power({u('f', 41)}, 1.7) * cardinality(CAST(:barriers AS text[])))::int] AS barrier,
               (CAST(:fields AS text[]))[1 + floor(power({u('f', 42)}, 1.3) * cardinality(CAST(:fields AS text[])))::int] AS field,
               floor(power({u('f', 43)}, 1.5) * cardinality(CAST(:kinds AS text[])))::int AS k0,
               1 + floor({u('f', 44)} * 7)::int AS d1, 1 + floor({u('f', 45)} * 8)::int AS d2,
               1 + floor({u('f', 46)} * 3)::int AS nkinds,
               1 + floor({u('f', 47)} * 10)::int AS ncases,
               floor({u('f', 48)} * {CPC})::int AS j0
        FROM generate_series(0, CAST(:F AS int) - 1) f
    """
    kind_at = ("(CAST(:kinds AS text[]))[1 + (k0 + CASE i WHEN 0 THEN 0 WHEN 1 THEN d1 ELSE d1 + d2 END) "
               "% cardinality(CAST(:kinds AS text[]))]")
    run("findings", f"""
        INSERT INTO findings (id, conference_id, barrier_category, field_of_action, organisation_kinds, level,
                              weather, text, case_count, proposal_id, created_by_user, created_at)
        SELECT md5('bench-finding-' || f)::uuid, cf.id, barrier, field,
               (SELECT to_json(array_agg({kind_at} ORDER BY i)) FROM generate_series(0, nkinds - 1) i),
               (ARRAY['staff', 'organisation', 'intermunicipal'])[1 + f % 3],
               (ARRAY['sonne', 'wolke', 'gewitter', 'wind'])[1 + f % 4],
               'Befund ' || f, ncases, NULL, 'bench.moderator', cf.scheduled_at
        FROM ({finding_src}) s JOIN conferences cf ON cf.id = md5('bench-conference-' || m)::uuid
        ORDER BY f
    """)
    run("finding_cases", f"""
        INSERT INTO finding_cases (finding_id, conference_case_id)
        SELECT md5('bench-finding-' || f)::uuid, m * {CPC} + (j0 + i) % {CPC} + 1
        FROM ({finding_src}) s, generate_series(0, ncases - 1) i
    """)
    run("finding_organisation_kinds", f"""
        INSERT INTO finding_organisation_kinds (finding_id, organisation_kind)
        SELECT md5('bench-finding-' || f)::uuid, {kind_at}
        FROM ({finding_src}) s, generate_series(0, nkinds - 1) i
    """)
    with engine.begin() as conn:
        for table in ("bench_times", "bench_sched", "bench_chain", "bench_kindorg", "bench_tpl"):
            conn.execute(text(f"DROP TABLE {table}"))
    t0 = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    timings["VACUUM ANALYZE"] = time.perf_counter() - t0
    h.log(f"  VACUUM ANALYZE in {timings['VACUUM ANALYZE']:.1f} s")
    figures["seconds"] = time.perf_counter() - t_all
    figures["timings"] = timings
    with engine.connect() as conn:
        figures["rows"] = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in (
            "persons", "chains", "chain_steps", "chain_events", "handovers", "handover_events",
            "conferences", "conference_cases", "findings", "finding_cases", "finding_organisation_kinds")}
        figures["db_size"] = conn.execute(text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar_one()
        figures["shape"] = dict(conn.execute(text("""
            SELECT 'open chains', count(*) FROM chains WHERE lifecycle = 'open'
            UNION ALL SELECT 'completed chains', count(*) FROM chains WHERE lifecycle = 'completed'
            UNION ALL SELECT 'acknowledged handovers', count(*) FROM handovers WHERE state = 'acknowledged'
            UNION ALL SELECT 'open steps past their due date', count(*) FROM chain_steps s JOIN chains c ON c.id = s.chain_id
              WHERE c.lifecycle = 'open' AND s.due_at < :now AND s.state IN ('planned', 'ready', 'in_progress', 'blocked')
                AND (s.due_for = 'completion' OR s.started_at IS NULL)
            UNION ALL SELECT 'persons with >1 chain', count(*) FROM (SELECT person_id FROM chains GROUP BY 1 HAVING count(*) > 1) x
        """), {"now": now}).all())
    return figures


# --------------------------------------------------------------------------------------------
# The hand-written SQL: the same raw cells as the report's queries, in five plain statements

QUARTER = """to_char({col} AT TIME ZONE 'Europe/Berlin', 'YYYY-"Q"Q')"""

HAND_BARRIERS = """
SELECT f.barrier_category, f.field_of_action, k.organisation_kind, p.lead_jurisdiction_id,
       count(DISTINCT cc.person_id)
FROM findings f
JOIN finding_organisation_kinds k ON k.finding_id = f.id
JOIN finding_cases fc ON fc.finding_id = f.id
JOIN conference_cases cc ON cc.id = fc.conference_case_id
JOIN persons p ON p.id = cc.person_id
WHERE p.lead_jurisdiction_id = ANY(:towns)
GROUP BY 1, 2, 3, 4
"""

HAND_OVERDUE = """
SELECT s.key, p.lead_jurisdiction_id, count(DISTINCT c.person_id)
FROM chain_steps s
JOIN chains c ON c.id = s.chain_id
JOIN persons p ON p.id = c.person_id
WHERE c.lifecycle = 'open' AND s.due_at < :now
  AND s.state IN ('planned', 'ready', 'in_progress', 'blocked')
  AND (s.due_for = 'completion' OR s.started_at IS NULL)
  AND p.lead_jurisdiction_id = ANY(:towns)
GROUP BY 1, 2
"""

HAND_CONFERENCES = f"""
SELECT {QUARTER.format(col='cf.scheduled_at')} AS quarter, p.lead_jurisdiction_id,
       count(DISTINCT cc.person_id)
FROM conference_cases cc
JOIN conferences cf ON cf.id = cc.conference_id
JOIN persons p ON p.id = cc.person_id
WHERE p.lead_jurisdiction_id = ANY(:towns)
GROUP BY 1, 2
"""

HAND_WAITING = f"""
SELECT sender_organisation_kind, receiver_organisation_kind, quarter, count(DISTINCT person_id),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY waiting_working_days),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY waiting_working_days),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY waiting_calendar_days),
       percentile_cont(0.9) WITHIN GROUP (ORDER BY waiting_calendar_days)
FROM (SELECT sender_organisation_kind, receiver_organisation_kind, person_id, waiting_working_days,
             waiting_calendar_days, {QUARTER.format(col='responded_at')} AS quarter
      FROM handovers
      WHERE state = 'acknowledged' AND from_jurisdiction_id = ANY(:towns)) h
GROUP BY GROUPING SETS ((sender_organisation_kind, receiver_organisation_kind), (quarter))
"""

STEP_STATE = {"started": "in_progress", "completed": "completed"}


def hand_goals_sql(goals: Sequence[Goal]) -> str:
    """One statement for every measurable goal: one pass over the relevant chain events, each
    chain's clock per goal, the first clock per person, outcome counts per quarter and town."""
    events: list[tuple[str, str]] = []

    def col(step: str, on: str) -> str:
        pair = (step, STEP_STATE[on])
        if pair not in events:
            events.append(pair)
        return f"e{events.index(pair)}"

    clocks = []
    for goal in goals:
        m = goal.measure
        assert m is not None
        templates = ", ".join(f"'{t}'" for t in m.templates)
        stop = col(m.stop_step, m.stop_on)
        # A chain closed before its clock stopped has left the population.
        if m.start_step is None:
            clocks.append(f"""
  SELECT '{goal.key}' AS goal, {m.within_days} AS within_days, c.id, c.person_id,
         c.lead_jurisdiction_id AS town, c.started_at AS started, ev.{stop} AS stopped
  FROM chains c LEFT JOIN ev ON ev.chain_id = c.id
  WHERE c.template_key IN ({templates}) AND c.lead_jurisdiction_id = ANY(:towns)
    AND (c.lifecycle <> 'closed' OR ev.{stop} IS NOT NULL)""")
        else:
            start = col(m.start_step, m.start_on)
            clocks.append(f"""
  SELECT '{goal.key}', {m.within_days}, c.id, c.person_id, c.lead_jurisdiction_id, ev.{start}, ev.{stop}
  FROM chains c JOIN ev ON ev.chain_id = c.id
  WHERE c.template_key IN ({templates}) AND ev.{start} IS NOT NULL
    AND c.lead_jurisdiction_id = ANY(:towns)
    AND (c.lifecycle <> 'closed' OR ev.{stop} IS NOT NULL)""")
    mins = ",\n         ".join(
        f"min(occurred_at) FILTER (WHERE step_key = '{s}' AND to_state = '{st}') AS e{i}"
        for i, (s, st) in enumerate(events))
    pairs = ", ".join(f"('{s}', '{st}')" for s, st in events)
    steps = ", ".join(sorted({f"'{s}'" for s, _ in events}))
    states = ", ".join(sorted({f"'{st}'" for _, st in events}))
    return f"""
WITH ev AS (
  SELECT chain_id,
         {mins}
  FROM chain_events
  WHERE kind = 'step' AND step_key IN ({steps}) AND to_state IN ({states})
    AND (step_key, to_state) IN ({pairs})
  GROUP BY chain_id
), clocks AS ({' UNION ALL'.join(clocks)}
), firsts AS (
  SELECT DISTINCT ON (goal, person_id) goal, within_days, town, started, stopped
  FROM clocks ORDER BY goal, person_id, started, id
)
SELECT goal, {QUARTER.format(col='started')} AS quarter, town,
       count(*) FILTER (WHERE stopped - started <= within_days * interval '1 day') AS attained,
       count(*) FILTER (WHERE stopped - started > within_days * interval '1 day'
                        OR (stopped IS NULL AND CAST(:now AS timestamptz) - started > within_days * interval '1 day')) AS missed,
       count(*) FILTER (WHERE stopped IS NULL AND CAST(:now AS timestamptz) - started <= within_days * interval '1 day') AS pending
FROM firsts
GROUP BY 1, 2, 3
"""


def hand_statements(goals: Sequence[Goal]) -> dict[str, str]:
    return {"barriers": HAND_BARRIERS, "overdue": HAND_OVERDUE, "conferences": HAND_CONFERENCES,
            "waiting": HAND_WAITING, "goals": hand_goals_sql(goals)}


def run_hand(session: Session, statements: dict[str, str], towns: list[int], now: datetime,
             timer: dict[str, float] | None = None) -> dict[str, list]:
    out = {}
    for name, sql in statements.items():
        t0 = time.perf_counter()
        out[name] = session.execute(text(sql), {"towns": towns, "now": now}).all()
        if timer is not None:
            timer[name] = timer.get(name, 0.0) + time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------
# Checking the hand-written SQL against the report's query functions (raw, before suppression)


def compare(session: Session, area: Any, goals: Sequence[Goal], now: datetime,
            hand: dict[str, list]) -> tuple[int, int, list[str]]:
    """(cells compared, mismatches, a few sample lines)."""
    R = steering_report
    towns = area.towns
    compared = mismatched = 0
    samples: list[str] = []
    problems: list[str] = []

    def check(what: str, key: Any, app: Any, mine: Any) -> None:
        nonlocal compared, mismatched
        compared += 1
        same = app == mine if not isinstance(app, float) else (
            mine is not None and abs(app - mine) < 1e-9)
        if not same:
            mismatched += 1
            if len(problems) < 10:
                problems.append(f"MISMATCH {what} {key}: report {app!r} vs SQL {mine!r}")
        elif len(samples) < 8 and (len(samples) == 0 or samples[-1].split()[0] != what):
            samples.append(f"{what} {key}: report {app!r} = SQL {mine!r}")

    def both(what: str, app: dict, mine: dict) -> None:
        for key in sorted(set(app) | set(mine), key=repr):
            check(what, key, app.get(key), mine.get(key))

    app_b = {(b, f, k, t): n for (b, f, k), per in R.barrier_counts(session, area).items() for t, n in per.items()}
    mine_b = {(b, f, k, towns[t]): n for b, f, k, t, n in hand["barriers"]}
    both("barriers", app_b, mine_b)
    app_o = {(s, t): n for s, per in R.overdue_counts(session, area, now).items() for t, n in per.items()}
    both("overdue", app_o, {(s, towns[t]): n for s, t, n in hand["overdue"]})
    app_c = {(q, t): n for q, per in R.conference_counts(session, area).items() for t, n in per.items()}
    both("conferences", app_c, {(q, towns[t]): n for q, t, n in hand["conferences"]})

    pairs, quarters = R.waiting_times(session, area)
    app_w: dict[tuple, Any] = {}
    for label, groups in (("pair", pairs), ("quarter", quarters)):
        for key, g in groups.items():
            persons = len(g.persons)
            app_w[(label, key, "persons")] = persons
            for name, values in (("working", g.working), ("calendar", g.calendar)):
                for q in (50, 90):
                    app_w[(label, key, name, q)] = disclosure.percentile_or_none(values, q, 1, persons=persons)
    mine_w: dict[tuple, Any] = {}
    for s, r, q, persons, w50, w90, c50, c90 in hand["waiting"]:
        key = ("pair", (s, r)) if q is None else ("quarter", q)
        mine_w[(*key, "persons")] = persons
        for name, q_, v in (("working", 50, w50), ("working", 90, w90), ("calendar", 50, c50), ("calendar", 90, c90)):
            mine_w[(*key, name, q_)] = v
    both("waiting", app_w, mine_w)
    # What build_report uses on PostgreSQL: the same figures aggregated by the database.
    sql_pairs, sql_quarters = R.waiting_figures(session, area)
    app_ws: dict[tuple, Any] = {}
    for label, figures in (("pair", sql_pairs), ("quarter", sql_quarters)):
        for key, f in figures.items():
            app_ws[(label, key, "persons")] = f.persons
            for name, q, v in (("working", 50, f.working_median), ("working", 90, f.working_p90),
                               ("calendar", 50, f.calendar_median), ("calendar", 90, f.calendar_p90)):
                app_ws[(label, key, name, q)] = float(v) if v is not None else None
    both("waiting (SQL)", app_ws, mine_w)

    mine_g: dict[tuple, int] = {}
    for goal_key, quarter, town, att, miss, pend in hand["goals"]:
        for outcome, n in (("attained", att), ("missed", miss), ("pending", pend)):
            if n:
                mine_g[(goal_key, quarter, towns[town], outcome)] = n
    app_g: dict[tuple, int] = {}
    for goal in goals:
        cells = attainment((c for c in goal_clocks(session, goal) if c.jurisdiction_id in towns),
                           goal.measure.within_days, now)
        for (quarter, town), cell in cells.items():
            for outcome in ("attained", "missed", "pending"):
                n = getattr(cell, outcome)
                if n:
                    app_g[(goal.key, quarter, towns[town], outcome)] = n
    both("goals", app_g, mine_g)
    app_gs: dict[tuple, int] = {}
    for goal in goals:
        for (quarter, town), cell in R.attainment_in_sql(session, goal, towns, now).items():
            for outcome in ("attained", "missed", "pending"):
                if getattr(cell, outcome):
                    app_gs[(goal.key, quarter, towns[town], outcome)] = getattr(cell, outcome)
    both("goals (SQL)", app_gs, mine_g)
    return compared, mismatched, problems + samples


# --------------------------------------------------------------------------------------------
# Timing


median = h.median


class SqlClock:
    """Time spent in cursor.execute (server work plus transfer of the result; psycopg's client
    cursor receives the whole result there), by the phase set in ``phase``."""

    def __init__(self, engine: Engine):
        self.phase = "other"
        self.execute: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.statements: list[tuple[str, Any]] = []
        self.capture = False
        self._t0 = 0.0

        @event.listens_for(engine, "before_cursor_execute")
        def _before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            self._t0 = time.perf_counter()
            if self.capture:
                self.statements.append((statement, parameters))

        @event.listens_for(engine, "after_cursor_execute")
        def _after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            self.execute[self.phase] += time.perf_counter() - self._t0
            self.count[self.phase] += 1

    def reset(self) -> None:
        self.execute.clear()
        self.count.clear()


class Phases:
    """Wraps functions of the report modules (in this process only) to time the phases of a real
    build_report call. Nested phases are charged to the innermost one."""

    # The query functions build_report calls: on PostgreSQL waiting_figures and
    # attainment_in_sql; waiting_times, goal_clocks and attainment on SQLite (shown if called).
    QUERIES = ("barrier_counts", "overdue_counts", "conference_counts", "waiting_figures", "waiting_times",
               "attainment_in_sql")

    def __init__(self, clock: SqlClock):
        self.clock = clock
        self.time: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, module: Any, name: str, label: str) -> None:
        original = getattr(module, name)

        def wrapper(*a: Any, **kw: Any) -> Any:
            now = time.perf_counter()
            if self._stack:  # pause the enclosing phase
                outer = self._stack[-1]
                self.time[outer[0]] += now - outer[1]
            self._stack.append([label, now])
            prev_phase = self.clock.phase
            self.clock.phase = label
            try:
                return original(*a, **kw)
            finally:
                end = time.perf_counter()
                frame = self._stack.pop()
                self.time[label] += end - frame[1]
                self.calls[label] += 1
                self.clock.phase = prev_phase
                if self._stack:
                    self._stack[-1][1] = end

        self._saved.append((module, name, original))
        setattr(module, name, wrapper)

    def __enter__(self) -> Phases:
        R = steering_report
        for name in self.QUERIES:
            self._wrap(R, name, name)
        self._wrap(R, "goal_clocks", "goal_clocks")
        self._wrap(R, "attainment", "attainment")
        self._wrap(disclosure, "protect", "disclosure.protect")
        self._wrap(disclosure, "percentile_or_none", "percentile_or_none")
        return self

    def __exit__(self, *exc: Any) -> None:
        for module, name, original in reversed(self._saved):
            setattr(module, name, original)


def build_report_once(factory: sessionmaker[Session], policies: Policies, area_id: int,
                      now: datetime) -> dict[str, Any]:
    with factory() as session:
        area = steering_report.resolve_area(session, area_id)
        document = steering_report.build_report(session, policies.steering, policies.goals, area, now)
        session.rollback()
    return document


def queries_once(factory: sessionmaker[Session], policies: Policies, area_id: int, now: datetime,
                 timer: dict[str, float]) -> None:
    """The query functions build_report calls on PostgreSQL, alone, no protection: what its SQL
    costs the report."""
    R = steering_report
    with factory() as session:
        area = R.resolve_area(session, area_id)
        calls = [("barrier_counts", lambda: R.barrier_counts(session, area)),
                 ("overdue_counts", lambda: R.overdue_counts(session, area, now)),
                 ("conference_counts", lambda: R.conference_counts(session, area)),
                 ("waiting_figures", lambda: R.waiting_figures(session, area))]
        calls += [(f"attainment_in_sql:{goal.key}",
                   lambda goal=goal: R.attainment_in_sql(session, goal, area.towns, now))
                  for goal in measurable(policies.goals)]
        for name, call in calls:
            t0 = time.perf_counter()
            call()
            timer[name] = timer.get(name, 0.0) + time.perf_counter() - t0
        session.rollback()


def hand_once(factory: sessionmaker[Session], statements: dict[str, str], towns: list[int],
              now: datetime, timer: dict[str, float]) -> dict[str, list]:
    with factory() as session:
        out = run_hand(session, statements, towns, now, timer)
        session.rollback()
    return out


def explain(engine: Engine, statements: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement with its parameters, as the app sent it."""
    out = []
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for statement, parameters in statements:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = "\n".join(r[0] for r in cur.fetchall())
            ms = next((float(line.split(":")[1].split()[0]) for line in plan.splitlines()
                       if line.strip().startswith("Execution Time")), float("nan"))
            out.append({"statement": " ".join(statement.split()), "plan": plan, "ms": ms})
        raw.rollback()
    finally:
        raw.close()
    return out


def profile_report(factory: sessionmaker[Session], policies: Policies, area_id: int, now: datetime) -> str:
    prof = cProfile.Profile()
    prof.enable()
    build_report_once(factory, policies, area_id, now)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(18)
    stats.sort_stats("cumulative").print_stats(r"casemgmt|sqlalchemy/engine/result|psycopg", 22)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# OCEL export, in a child process (clean peak memory)


def ocel_child(min_variant_chains: int, mode: str) -> None:
    from casemgmt.steering import ocel

    engine = make_engine(os.environ[OCEL_URL_VARIABLE])
    pids = h.remember_backends(engine)
    factory = make_sessionmaker(engine)
    out: dict[str, Any] = {"mode": mode}
    if mode == "split":
        original = ocel.build_ocel

        def materialised(*streams: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            lists = [s if isinstance(s, dict) else list(s) for s in streams]
            out["read_s"] = time.perf_counter() - t0
            out["rows"] = [len(x) for x in lists]
            t0 = time.perf_counter()
            result = original(*lists, **kw)
            out["build_s"] = time.perf_counter() - t0
            return result

        ocel.build_ocel = materialised
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    with factory() as session:  # no transaction open: export_ocel moves it to REPEATABLE READ
        t0 = time.perf_counter()
        document, stats = ocel.export_ocel(session, min_variant_chains=min_variant_chains)
        out["export_s"] = time.perf_counter() - t0
        out["backend_cpu_s"] = sum(h.cpu_seconds_of(p) or 0 for p in pids)  # a new backend: all its CPU
        session.rollback()
    out["cpu_s"] = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu0
    out["stats"] = {"chains_total": stats.chains_total, "chains_exported": stats.chains_exported,
                    "variants_total": stats.variants_total, "variants_exported": stats.variants_exported,
                    "events_exported": stats.events_exported, "objects": len(document["objects"])}
    out["vmhwm_after_export_mib"] = (h.vm_kb("VmHWM") or 0) / 1024
    if mode == "plain":
        t0 = time.perf_counter()
        # What Starlette's JSONResponse.render does with the endpoint's dict.
        body = json.dumps(document, ensure_ascii=False, allow_nan=False, indent=None,
                          separators=(",", ":")).encode("utf-8")
        out["dumps_s"] = time.perf_counter() - t0
        out["json_bytes"] = len(body)
        out["vmhwm_mib"] = (h.vm_kb("VmHWM") or 0) / 1024
    out["cpu_total_s"] = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # the whole child
    out["backend_cpu_total_s"] = sum(h.cpu_seconds_of(p) or 0 for p in pids)
    print("OCEL-RESULT " + json.dumps(out), flush=True)


def run_ocel(url: str, k: int, mode: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--ocel-child", str(k), mode],
                          env=dict(os.environ, **{OCEL_URL_VARIABLE: url}), capture_output=True, text=True,
                          timeout=3600)
    wall = time.perf_counter() - t0
    line = next((x for x in proc.stdout.splitlines() if x.startswith("OCEL-RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"OCEL child failed ({proc.returncode}): {proc.stderr[-3000:]}")
    result = json.loads(line[len("OCEL-RESULT "):])
    result["process_wall_s"] = wall
    return result


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--persons", type=int, default=100_000)
    p.add_argument("--events", type=int, default=1_000_000, help="chain events to aim at (about)")
    p.add_argument("--findings", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--skip-ocel", action="store_true")
    p.add_argument("--skip-explain", action="store_true")
    p.add_argument("--use-db", metavar="NAME", help="measure an existing database filled by this script "
                   "(not generated, not dropped; this run's service role is granted access to it)")
    p.add_argument("--keep-db", action="store_true", help="keep the database (and its service role) at the end")
    h.common_args(p)
    args = p.parse_args(argv)
    if args.persons < CASES_PER_CONFERENCE:
        p.error(f"--persons must be at least {CASES_PER_CONFERENCE}")
    return h.smoke_sizes(args, SMOKE)


def run(bench: h.Bench, args: argparse.Namespace) -> None:
    results = bench.results
    h.log(f"measuring the casemgmt package in {results['package']} ({results['code']})")
    now = datetime.now(UTC).replace(microsecond=0)
    bench.dbs.keep = args.keep_db
    if args.use_db:
        db = bench.dbs.adopt(args.use_db)
        app = h.App.open(db.service_url, bench.master, templates_at=now)
        with app.engine.connect() as conn:
            now = conn.execute(text("SELECT max(occurred_at) FROM chain_events")).scalar_one() + timedelta(seconds=1)
    else:
        t0 = time.perf_counter()
        db = bench.database("main")
        app = h.App.open(db.service_url, bench.master, templates_at=now)
        h.log(f"migrated, world built, {len(app.catalog.current)} templates registered ({time.perf_counter() - t0:.1f} s)")
        h.log(f"generating: {args.persons:,} persons, about {args.events:,} chain events, {args.findings:,} findings "
              "(as the owner)")
        bench.phase("generating")
        owner = make_engine(db.owner_url)
        try:
            results["data"] = generate(owner, app, now, args)
        finally:
            owner.dispose()
        h.log(f"generated in {results['data']['seconds']:.1f} s: " + ", ".join(
              f"{t} {n:,}" for t, n in results["data"]["rows"].items()) + f"; database {results['data']['db_size']}")
        h.log("shape: " + ", ".join(f"{k} {v:,}" for k, v in results["data"]["shape"].items()))
    try:
        measure(bench, app, now, args)
    finally:
        app.dispose()


def measure(bench: h.Bench, app: h.App, now: datetime, args: argparse.Namespace) -> None:
    """Everything as the service role, on the application's engine."""
    results = bench.results
    engine, factory, policies, url = app.engine, app.factory, app.policies, app.url
    goals = measurable(policies.goals)
    backend_pids = app.backend_pids
    clock = SqlClock(engine)
    bench.server_facts(url, ("shared_buffers", "work_mem", "jit", "max_parallel_workers_per_gather"))
    with engine.connect() as conn:
        kreis_id = conn.execute(text("SELECT id FROM jurisdictions WHERE key = :k"), {"k": KREIS[0]}).scalar_one()
    with factory() as session:
        area = steering_report.resolve_area(session, kreis_id)
    towns = list(area.towns)
    statements = hand_statements(goals)

    # 1. Same cells?
    with factory() as session:
        hand = run_hand(session, statements, towns, now)
        compared, mismatched, lines = compare(session, area, goals, now, hand)
    results["check"] = {"cells": compared, "mismatches": mismatched, "lines": lines}
    h.log(f"hand-written SQL vs the report's query functions (raw counts, before suppression): "
          f"{compared:,} cells compared, {mismatched} differ")
    for line in lines:
        h.log(f"  {line}")

    # 2. Interleaved timing, warm.
    document = build_report_once(factory, policies, kreis_id, now)
    hand_once(factory, statements, towns, now, {})
    queries_once(factory, policies, kreis_id, now, {})
    results["report_shape"] = {
        "tables": len(document["tables"]),
        "cells": sum(len(t["cells"]) for t in document["tables"]),
        "suppressed": sum(1 for t in document["tables"] for c in t["cells"] if c["value"] is None),
        "dropped_breakdowns": sum(len(t["dropped_breakdowns"]) for t in document["tables"]),
        "by_table": {t["key"]: len(t["cells"]) for t in document["tables"]},
        "waiting_rows": len(document["handover_waiting_times"]) + len(document["handover_waiting_trend"]),
    }
    h.log(f"report: {results['report_shape']['tables']} tables, {results['report_shape']['cells']:,} cells, "
          f"{results['report_shape']['suppressed']:,} suppressed, {results['report_shape']['dropped_breakdowns']} "
          f"breakdowns dropped, {results['report_shape']['waiting_rows']} waiting-time rows")
    rep_t: list[float] = []
    hand_t: list[float] = []
    q_t: list[float] = []
    cpu: dict[str, list[tuple[float, float]]] = defaultdict(list)  # (bench process, backend) seconds

    def cpu_now() -> tuple[float, float]:
        return (sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
                sum(h.cpu_seconds_of(p) or 0.0 for p in backend_pids))
    hand_parts: list[dict[str, float]] = []
    q_parts: list[dict[str, float]] = []
    sql_exec: dict[str, list[float]] = defaultdict(list)
    bench.phase("timing")
    h.log(f"timing, interleaved: build_report / hand-written SQL / the report's query functions alone, "
          f"{args.repeat} rounds")
    for i in range(args.repeat):
        order = ["report", "hand", "queries"]
        order = order[i % 3:] + order[:i % 3]
        for what in order:
            clock.reset()
            clock.phase = what
            c0 = cpu_now()
            t0 = time.perf_counter()
            if what == "report":
                build_report_once(factory, policies, kreis_id, now)
                rep_t.append(time.perf_counter() - t0)
            elif what == "hand":
                parts: dict[str, float] = {}
                hand_once(factory, statements, towns, now, parts)
                hand_t.append(time.perf_counter() - t0)
                hand_parts.append(parts)
            else:
                parts = {}
                queries_once(factory, policies, kreis_id, now, parts)
                q_t.append(time.perf_counter() - t0)
                q_parts.append(parts)
            sql_exec[what].append(clock.execute[what])
            c1 = cpu_now()
            cpu[what].append((c1[0] - c0[0], c1[1] - c0[1]))
        h.log(f"  round {i + 1}: report {rep_t[-1] * 1000:.0f} ms, hand SQL {hand_t[-1] * 1000:.0f} ms, "
              f"query functions {q_t[-1] * 1000:.0f} ms")
    results["timing"] = {
        "report_s": median(rep_t), "hand_s": median(hand_t), "queries_s": median(q_t),
        "report_runs": rep_t, "hand_runs": hand_t, "queries_runs": q_t,
        "ratio": median(rep_t) / median(hand_t),
        "ratio_per_round": [r / h for r, h in zip(rep_t, hand_t)],
        "report_execute_s": median(sql_exec["report"]), "hand_execute_s": median(sql_exec["hand"]),
        "queries_execute_s": median(sql_exec["queries"]),
        "hand_parts": {k: median([p[k] for p in hand_parts]) for k in hand_parts[0]},
        "query_parts": {k: median([p[k] for p in q_parts]) for k in q_parts[0]},
        "cpu": {w: {"bench_s": median([x[0] for x in v]), "backend_s": median([x[1] for x in v]),
                    "total_s": median([x[0] + x[1] for x in v])} for w, v in cpu.items()},
    }
    results["timing"]["cpu_ratio"] = (results["timing"]["cpu"]["report"]["total_s"]
                                      / results["timing"]["cpu"]["hand"]["total_s"])

    # 3. Where the report's time goes: an instrumented build_report.
    phase_runs: list[dict[str, float]] = []
    exec_runs: list[dict[str, float]] = []
    totals: list[float] = []
    for _ in range(max(1, min(args.repeat, 3))):
        clock.reset()
        with Phases(clock) as ph:
            clock.phase = "other"
            t0 = time.perf_counter()
            build_report_once(factory, policies, kreis_id, now)
            totals.append(time.perf_counter() - t0)
        phase_runs.append(dict(ph.time))
        exec_runs.append(dict(clock.execute))
        calls = dict(ph.calls)
    keys = sorted({k for r in phase_runs for k in r})
    phases = {k: median([r.get(k, 0.0) for r in phase_runs]) for k in keys}
    execs = {k: median([r.get(k, 0.0) for r in exec_runs]) for k in sorted({k for r in exec_runs for k in r})}
    results["phases"] = {"total_s": median(totals), "phases_s": phases, "execute_s": execs, "calls": calls}

    results["profile"] = profile_report(factory, policies, kreis_id, now)

    if not args.skip_explain:
        clock.statements.clear()
        clock.capture = True
        build_report_once(factory, policies, kreis_id, now)
        clock.capture = False
        app_plans = explain(engine, clock.statements)
        hand_plans = explain(engine, [(s.replace(":towns", "%(towns)s").replace(":now", "%(now)s"),
                                       {"towns": towns, "now": now}) for s in statements.values()])
        for p, name in zip(hand_plans, statements):
            p["name"] = name
        results["explain"] = {"report": app_plans, "hand": hand_plans}

    if not args.skip_ocel:
        k = policies.steering.min_variant_chains
        bench.phase("OCEL")
        h.log("OCEL export in a child process (plain)")
        o = results["ocel"] = run_ocel(url, k, "plain")
        h.log(f"  export_ocel {o['export_s']:.1f} s (child CPU {o['cpu_s']:.1f} s, its PostgreSQL backend "
              f"{o['backend_cpu_s']:.1f} s), json.dumps {o['dumps_s']:.1f} s, JSON {o['json_bytes'] / 2**20:,.0f} MiB, "
              f"peak RSS {o['vmhwm_after_export_mib']:,.0f} MiB after export, {o['vmhwm_mib']:,.0f} MiB with the JSON")
        h.log("OCEL export again with its input materialised first (read vs build)")
        results["ocel_split"] = run_ocel(url, k, "split")
        s = results["ocel_split"]
        h.log(f"  read (4 queries, streamed, into lists) {s['read_s']:.1f} s, build_ocel {s['build_s']:.1f} s, "
              f"rows {s['rows']}")


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    h.banner("casemgmt steering report", results)
    print("server settings: " + ", ".join(f"{k}={v}" for k, v in results.get("settings", {}).items()))
    d = results.get("data")
    if d:
        h.heading("Data")
        print(f"data (generated in {d['seconds']:.1f} s, database {d['db_size']}):")
        for t, n in d["rows"].items():
            print(f"  {t:<28} {n:>10,}")
        for k, v in d["shape"].items():
            print(f"  {k:<28} {v:>10,}")
        print("  generation: " + ", ".join(f"{k} {v:.1f} s" for k, v in d["timings"].items()))
    c = results.get("check")
    if c:
        h.heading("Report against hand-written SQL")
        print(f"raw cells, hand-written SQL vs report query functions: {c['cells']:,} compared, "
              f"{c['mismatches']} differ")
    rs = results.get("report_shape")
    if rs:
        print(f"report: {rs['tables']} tables, {rs['cells']:,} cells ({rs['suppressed']:,} suppressed), "
              f"{rs['dropped_breakdowns']} breakdowns dropped; cells per table: {rs['by_table']}")
    t = results.get("timing")
    if t:
        print(f"\n{'':<44}{'median':>10}   runs")
        print(f"{'build_report (Kreis)':<44}{t['report_s'] * 1000:>8.0f} ms   "
              + " ".join(f"{x * 1000:.0f}" for x in t["report_runs"]))
        print(f"{'hand-written SQL (5 statements)':<44}{t['hand_s'] * 1000:>8.0f} ms   "
              + " ".join(f"{x * 1000:.0f}" for x in t["hand_runs"]))
        print(f"{'report query functions alone':<44}{t['queries_s'] * 1000:>8.0f} ms   "
              + " ".join(f"{x * 1000:.0f}" for x in t["queries_runs"]))
        print(f"  of which cursor.execute: report {t['report_execute_s'] * 1000:.0f} ms, hand SQL "
              f"{t['hand_execute_s'] * 1000:.0f} ms, query functions {t['queries_execute_s'] * 1000:.0f} ms")
        print("  hand-written SQL per statement: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in t["hand_parts"].items()))
        print("  report query functions: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in t["query_parts"].items()))
        verdict = "PASS" if t["ratio"] <= TARGET_RATIO else "FAIL"
        print("  CPU per run (median; bench process + its PostgreSQL backend): " + ", ".join(
            f"{w} {v['bench_s'] * 1000:.0f} + {v['backend_s'] * 1000:.0f} = {v['total_s'] * 1000:.0f} ms"
            for w, v in t["cpu"].items()))
        print(f"  CPU ratio build_report / hand-written SQL: {t['cpu_ratio']:.2f}x")
        print(f"\nratio build_report / hand-written SQL: {t['ratio']:.2f}x (per round "
              + ", ".join(f"{x:.2f}" for x in t["ratio_per_round"]) + f"); target <= {TARGET_RATIO}x: {verdict}")
    ph = results.get("phases")
    if ph:
        h.heading("Where the report's time goes")
        print(f"instrumented build_report, median of runs: {ph['total_s'] * 1000:.0f} ms")
        for k, v in sorted(ph["phases_s"].items(), key=lambda kv: -kv[1]):
            ex = ph["execute_s"].get(k)
            print(f"  {k:<28}{v * 1000:>9.0f} ms  {ph['calls'].get(k, 0):>6} calls"
                  + (f"   (cursor.execute {ex * 1000:.0f} ms)" if ex else ""))
        rest = ph["total_s"] - sum(ph["phases_s"].values())
        print(f"  {'rest (report.py itself)':<28}{rest * 1000:>9.0f} ms")
    if results.get("profile"):
        print("\ncProfile of one build_report:")
        print(results["profile"])
    ex = results.get("explain")
    if ex:
        print("EXPLAIN ANALYZE of every statement build_report sends (server time):")
        for p in sorted(ex["report"], key=lambda p: -p["ms"]):
            print(f"  {p['ms']:>9.1f} ms  {p['statement'][:150]}")
        print("EXPLAIN ANALYZE of the hand-written statements:")
        for p in ex["hand"]:
            print(f"  {p['ms']:>9.1f} ms  {p['name']}")
        slow = max(ex["report"], key=lambda p: p["ms"])
        print(f"\nplan of the slowest report statement ({slow['ms']:.0f} ms):\n{slow['plan']}")
        goals_plan = next(p for p in ex["hand"] if p["name"] == "goals")
        print(f"\nplan of the hand-written goals statement ({goals_plan['ms']:.0f} ms):\n{goals_plan['plan']}")
    o = results.get("ocel")
    if o:
        h.heading("OCEL export")
        print(f"OCEL export: {o['export_s']:.1f} s (child CPU {o['cpu_s']:.1f} s, PostgreSQL backend "
              f"{o['backend_cpu_s']:.1f} s), json.dumps {o['dumps_s']:.1f} s, JSON {o['json_bytes']:,} bytes "
              f"({o['json_bytes'] / 2**20:,.0f} MiB), peak RSS {o['vmhwm_after_export_mib']:,.0f} MiB after the "
              f"export, {o['vmhwm_mib']:,.0f} MiB with the JSON text; {o['stats']}")
    s = results.get("ocel_split")
    if s:
        print(f"  split run: reading the 4 streams into lists {s['read_s']:.1f} s, build_ocel {s['build_s']:.1f} s "
              f"(export {s['export_s']:.1f} s), rows {s['rows']}")
    print(h.LINE)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ocel-child":
        ocel_child(int(sys.argv[2]), sys.argv[3])
        sys.exit(0)
    sys.exit(h.main("report", parse_args(), run, report))
