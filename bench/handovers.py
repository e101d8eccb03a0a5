"""Handover benchmark: inbox latency at 10k and 1M handovers, and acknowledgements per second.

Run from the repository root::

    .venv/bin/python bench/handovers.py [--small 10000] [--large 1000000] [--seconds 8] [--smoke]

Two databases (``small`` and ``large``) are filled with handovers by set-based SQL (same
generator, two sizes: ``INSERT ... SELECT FROM generate_series``, with the minimum columns of
persons and chains the handovers refer to), as the databases' owner: the load drops and rebuilds
indexes, switches foreign-key triggers off (replica mode, a superuser's right; without it they
stay on) and runs VACUUM, none of which the service role may do. Everything measured runs as the
service role. See the "Handovers" section of bench/README.md for what each figure means.

1. Inbox latency: ``handovers.service.inbox`` (the full service call: page, summaries and
   counts, a fresh session each time, as a request gets) for the incoming and the outgoing box
   of a busy and a typical organisation, in both databases, interleaved call by call so that
   both sizes see the same machine; median, p95 and the ratio large / small (target <= 3x).
   Then EXPLAIN (ANALYZE, BUFFERS) of every statement one inbox call issues, and diagnostics
   (candidate indexes, created by the owner in a transaction that is rolled back).
2. Acknowledgements per second: persons, chains and handovers made through the services
   (``create_person``, ``start_chain``, ``request_handover``) in the large database, then 1 and
   4 spawned worker processes call ``handovers.service.respond(..., "acknowledge", ...)`` on
   distinct requested handovers (each worker its own chains), as the receiving organisation.
   Before them, in-process on one connection: statements, round trips on the wire, CPU per
   acknowledgement (this process and its backend) and where this process's CPU goes by phase
   (service functions wrapped by timers in the benchmark's own process, then restored).

A script, not a test: it prints figures and PASS/FAIL lines for the inbox target and the
acknowledgement target (250/s with 4 workers, and the capacity by CPU). It uses the
application's service functions and never changes application code.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# bench/transitions.py would shadow the `transitions` library that casemgmt.chains.engine imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from sqlalchemy import create_engine, event, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from bench import harness as h  # noqa: E402
from casemgmt.chains.service import start_chain  # noqa: E402
from casemgmt.demo.seed import _intake, _seed_agreements  # noqa: E402
from casemgmt.demo.world import TOWNS  # noqa: E402
from casemgmt.handovers import service as handovers  # noqa: E402
from casemgmt.handovers.schemas import Box, HandoverIn  # noqa: E402
from casemgmt.privacy.service import create_person, resolve_purpose  # noqa: E402
from casemgmt.problems import Problem  # noqa: E402

TEMPLATE_KEY = "refugee_recognised"
TARGET_RATIO = 3.0  # inbox latency with --large handovers / with --small, at most
PAGE = 50  # the inbox's default page size (the API's `limit` default)
SPAN_DAYS = 4 * 365 + 1  # the decided handovers are spread over four years
DECIDED_SHARE = 0.92  # acknowledged 85%, rejected 4%, withdrawn 3% of all handovers
ESCALATED_SHARE_OF_PENDING = 0.25  # of the 8% waiting: 2% escalated, 6% requested
HANDOVERS_PER_CHAIN = 4  # bulk rows: chains (and persons) = handovers / 4
BULK_BATCH = 100_000  # handovers per INSERT ... SELECT
SLOTS = 1000  # weighted choices in SQL: an array of this many organisation ids
WARMUP_ACKS = 10  # per worker, before the clock starts
MIN_CALLS = 30  # timed inbox calls per case at least, whatever --inbox-budget says
POOL_CREATORS = 2  # processes making persons, chains and handovers through the services
CALIBRATION_CHAINS = 8  # chains (of 8 handovers each) for the in-process breakdown

# Who receives: the Kreis' Ausländerbehörde and Jobcenter take the largest share, then Hagenau's,
# the BAMF, schools, course providers; "*_sozialamt": the towns' Sozialämter, shared by inhabitants.
RECEIVER_WEIGHTS = {
    "ennetal_abh": 220, "ennetal_jobcenter": 170, "hagenau_abh": 45, "hagenau_jobcenter": 35,
    "ennetal_agentur": 35, "bamf_ast": 30, "ennetal_schulamt": 35, "hagenau_schulamt": 10,
    "ennetal_vhs": 30, "ennetal_sprachschule": 25, "ennetal_gesundheitsamt": 25, "ennetal_kita": 15,
    "ennetal_anerkennung": 15, "ennetal_jugendamt": 15, "hagenau_jugendamt": 5,
    "wittmar_jugendamt": 5, "hattenberg_jugendamt": 5, "ennetal_einbuergerung": 10,
    "ennetal_integration_point": 15, "ennetal_ki": 20, "wittmar_ki": 15, "hagenau_ki": 15,
    "ennetal_caritas": 10, "ennetal_awo": 5, "ennetal_mso": 2, "hagenau_sozialamt": 15,
    "hagenau_buergerbuero": 5, "*_sozialamt": 70, "*_buergerbuero": 40,
}
# Who sends, when it is not the chain's own case management (half of all handovers are).
SENDER_WEIGHTS = {
    "ennetal_ki": 250, "ennetal_caritas": 80, "wittmar_ki": 40, "hagenau_ki": 40,
    "*_sozialamt": 150, "hagenau_sozialamt": 25, "ennetal_abh": 60, "hagenau_abh": 15,
    "ennetal_jobcenter": 60, "hagenau_jobcenter": 15, "ennetal_agentur": 25,
    "ennetal_integration_point": 20, "ennetal_awo": 20, "ennetal_jugendamt": 15,
    "ennetal_schulamt": 10, "ennetal_vhs": 10, "ennetal_gesundheitsamt": 5, "bamf_ast": 5,
}
# Who runs a chain's case management.
CASE_MANAGEMENT_WEIGHTS = {"ennetal_ki": 60, "ennetal_caritas": 20, "wittmar_ki": 10, "hagenau_ki": 10}
# Whose inboxes are timed: (box, organisation, label).
TARGETS = [
    (Box.incoming, "ennetal_abh", "busiest receiver"),
    (Box.incoming, "ennetal_schulamt", "typical receiver"),
    (Box.outgoing, "ennetal_ki", "busiest sender / case management"),
    (Box.outgoing, "hattenberg_sozialamt", "typical sender"),
]
# Steps a case manager hands over per chain in the acknowledgement run (each a distinct subject,
# to the organisation of the step's owner kind serving the chain's town).
ACK_STEPS = ["residence_permit", "sgb2_application", "school_place", "integration_course",
             "registration", "health_first_doctor", "accommodation", "recognition_of_qualifications"]
MANAGERS = (("cm.ennetal", "ennetal_ki", 0.7), ("cm.caritas", "ennetal_caritas", 0.3))

# The data package of a bulk row: the shape and size of what request_handover froze for the ABH
# (fields shown, their legal bases, the fields withheld with the reason).
_FIELDS = ["address", "birth_date", "bleibeperspektive", "children", "family_name", "given_names",
           "interpreter_needed", "nationality", "phone", "preferred_language", "residence_status"]
PACKAGE_FIELDS = json.dumps(_FIELDS)
PACKAGE_BASES = json.dumps({f: "statute:abh_residence" for f in _FIELDS})
PACKAGE_REDACTED = json.dumps([
    {"field": f, "category": c, "reason": f"no legal basis for {c} (read, purpose residence_procedure)"}
    for f, c in (("benefit_regime", "benefits"), ("german_level", "language"),
                 ("housing_situation", "housing"), ("case_notes", "case_notes"),
                 ("psychosocial_support", "health"), ("health_notes", "health"))
])

SMOKE = {"small": 200, "large": 600, "seconds": 1.0, "iterations": 5, "warmup": 1, "workers": [1]}
SMOKE_CALIBRATION_CHAINS = 2
SMOKE_ACKS_PER_WORKER = WARMUP_ACKS + 16  # a smoke run may run out of handovers: that is shown


# --------------------------------------------------------------------------------------------
# Bulk handovers, set-based


def _u(expr: str, salt: int) -> str:
    """A deterministic uniform number in [0, 1) from an integer expression and a salt."""
    return f"((hashint8(({expr}) * 64 + {salt})::bigint + 2147483648) / float8 '4294967296')"


def _pick(array: str, u: str) -> str:
    """An element of a SLOTS-long int array bound as :array, chosen by u in [0, 1)."""
    return f"(CAST(:{array} AS int[]))[1 + floor({u} * {SLOTS})::int]"


def _slots(orgs: dict[str, h.Org], weights: dict[str, int]) -> list[int]:
    """SLOTS organisation ids, each organisation as often as its weight asks; '*_sozialamt'
    stands for the Sozialämter (Bürgerbüros) of the Kreis' towns, shared by inhabitants."""
    expanded: dict[int, float] = {}
    for key, w in weights.items():
        if key.startswith("*_"):
            suffix = key[1:]
            total = sum(n for _, _, n in TOWNS)
            for town, _, n in TOWNS:
                org = orgs[f"{town}{suffix}"]
                expanded[org.id] = expanded.get(org.id, 0) + w * n / total
        else:
            expanded[orgs[key].id] = expanded.get(orgs[key].id, 0) + w
    total = sum(expanded.values())
    out: list[int] = []
    acc = 0.0
    for org_id, w in sorted(expanded.items()):
        acc += w
        while len(out) < round(acc / total * SLOTS):
            out.append(org_id)
    assert len(out) == SLOTS
    return out


STEP_OF_KIND = {
    "auslaenderbehoerde": "residence_permit", "jobcenter": "sgb2_application",
    "sozialamt": "accommodation", "buergerbuero": "registration",
    "gesundheitsamt": "health_first_doctor", "bamf": "asylum_decision",
    "course_provider": "integration_course", "kita_traeger": "kita_place",
    "schulamt": "school_place", "anerkennungsstelle": "recognition_of_qualifications",
    "agentur_fuer_arbeit": "work_placement", "einbuergerungsbehoerde": "integration_course_entitlement",
}


def _chain_cols(k: str) -> str:
    """Per chain number k: its case management and its town (deterministic in k)."""
    return (f"{_pick('cms', _u(k, 60))} AS cm, "
            f"{_pick('towns', _u(k, 61))} AS town")


def _lead(cm: str, town: str) -> str:
    """A chain managed by Wittmar's or Hagenau's own office lives there."""
    return (f"CASE {cm} WHEN CAST(:wittmar_ki AS int) THEN CAST(:wittmar AS int) "
            f"WHEN CAST(:hagenau_ki AS int) THEN CAST(:hagenau AS int) ELSE {town} END")


PERSONS_SQL = f"""
INSERT INTO persons (id, lead_jurisdiction_id, created_by_organisation_id, created_at)
SELECT md5('bench-person-' || k)::uuid, {_lead('cm', 'town')}, cm, started
FROM (SELECT k, {_chain_cols('k')},
             CAST(:now AS timestamptz) - (CAST(:span AS int) + 60 - 60 * {_u('k', 62)})
               * interval '1 day' AS started
      FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS k) AS c
"""

CHAINS_SQL = f"""
INSERT INTO chains (id, person_id, template_key, template_version, lead_jurisdiction_id,
                    case_management_organisation_id, lifecycle, started_at, updated_at, version)
SELECT md5('bench-chain-' || k)::uuid, md5('bench-person-' || k)::uuid, :template_key,
       :template_version, {_lead('cm', 'town')}, cm, 'open', started, started, 1
FROM (SELECT k, {_chain_cols('k')},
             CAST(:now AS timestamptz) - (CAST(:span AS int) + 60 - 60 * {_u('k', 62)})
               * interval '1 day' AS started
      FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS k) AS c
"""

# Decided handovers: number n of :count, requested at a time that grows with n over SPAN_DAYS
# (so the heap is in request order, as the application writes it), on a random chain.
_DECIDED_SRC = f"""
SELECT n, md5('bench-handover-d-' || n)::uuid AS id,
       floor({_u('n', 9)} * CAST(:chains AS bigint))::bigint AS k,
       CASE WHEN {_u('n', 5)} < 85.0 / 92 THEN 'acknowledged'
            WHEN {_u('n', 5)} < 89.0 / 92 THEN 'rejected' ELSE 'withdrawn' END AS state,
       CAST(:now AS timestamptz) - CAST(:span AS int) * interval '1 day'
         + ((n + {_u('n', 6)}) / CAST(:count AS bigint)) * CAST(:span AS int) * interval '1 day'
         AS requested_at
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS n
"""
# Waiting handovers, written after the decided ones (the newest rows of the heap): the first
# :esc escalated (requested 90 to 16 days ago, all overdue), the rest requested in the last ten
# days (overdue when older than their deadline). Waiting handover n is on chain n, so no chain
# has two waiting (the one-pending-per-subject index holds).
_PENDING_SRC = f"""
SELECT n, md5('bench-handover-p-' || n)::uuid AS id, n AS k,
       CASE WHEN n < CAST(:esc AS bigint) THEN 'escalated' ELSE 'requested' END AS state,
       CASE WHEN n < CAST(:esc AS bigint)
            THEN CAST(:now AS timestamptz) - interval '90 days'
                 + ((n + {_u('n', 6)}) / CAST(:esc AS bigint)) * interval '74 days'
            ELSE CAST(:now AS timestamptz) - interval '10 days'
                 + ((n - CAST(:esc AS bigint) + {_u('n', 6)})
                    / (CAST(:count AS bigint) - CAST(:esc AS bigint))) * interval '10 days'
       END AS requested_at
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint) - 1) AS n
"""


def _handovers_sql(src: str, salt: int) -> str:
    step_case = " ".join(f"WHEN '{kind}' THEN '{step}'" for kind, step in STEP_OF_KIND.items())
    return f"""
WITH src AS ({src}),
a AS (
  SELECT src.*, md5('bench-chain-' || k)::uuid AS chain_id, md5('bench-person-' || k)::uuid AS person_id,
         {_chain_cols('k')},
         {_pick('receivers', _u('n', salt + 1))} AS r0,
         CASE WHEN {_u('n', salt + 2)} < 0.5 THEN NULL ELSE {_pick('senders', _u('n', salt + 3))} END AS s_other,
         {_u('n', salt + 4)} AS u_kind, {_u('n', salt + 7)} AS u_resp
  FROM src
),
b AS (SELECT a.*, {_lead('cm', 'town')} AS lead, coalesce(s_other, cm) AS s FROM a),
c AS (
  SELECT b.*, CASE WHEN r0 <> s THEN r0 WHEN s <> CAST(:jobcenter AS int) THEN CAST(:jobcenter AS int)
                   ELSE CAST(:abh AS int) END AS r
  FROM b
),
d AS (
  SELECT c.*, so.kind AS s_kind, so.jurisdiction_id AS s_jur, ro.kind AS r_kind, ro.jurisdiction_id AS r_jur,
         CASE WHEN ro.kind = 'jobcenter' AND u_kind < 0.3 THEN 'rechtskreiswechsel'
              WHEN ro.kind IN ('kommunales_integrationszentrum', 'wohlfahrtsverband') AND u_kind < 0.7
                THEN 'relocation'
              ELSE 'step' END AS kind
  FROM c JOIN organisations so ON so.id = c.s JOIN organisations ro ON ro.id = c.r
),
e AS (
  SELECT d.*,
         CASE kind WHEN 'rechtskreiswechsel' THEN 'asylblg_subsistence' WHEN 'relocation' THEN NULL
              ELSE CASE r_kind {step_case} ELSE 'first_interview' END END AS step_key,
         CASE WHEN kind <> 'step' THEN 10 WHEN r_kind = 'course_provider' THEN 3
              WHEN r_kind = 'kita_traeger' THEN 10 ELSE 5 END AS wd
  FROM d
),
f AS (
  SELECT e.*, (requested_at AT TIME ZONE 'Europe/Berlin')::date + (wd + 2 * ((wd + 4) / 5)) AS due_date
  FROM e
),
g AS (
  SELECT f.*, ((due_date + 1)::timestamp AT TIME ZONE 'Europe/Berlin') AS due_at,
         CASE WHEN state IN ('acknowledged', 'rejected', 'withdrawn')
              THEN requested_at + u_resp * least(interval '15 days', CAST(:now AS timestamptz) - requested_at)
         END AS responded_at
  FROM f
)
INSERT INTO handovers ({h.columns("handovers")})
SELECT id, kind, state, chain_id, person_id,
       CASE WHEN kind = 'relocation' THEN 'chain_lead' ELSE 'step:' || step_key END,
       step_key, CASE WHEN kind = 'rechtskreiswechsel' THEN 'sgb2_application' END,
       CASE WHEN kind = 'rechtskreiswechsel' THEN 'asylblg' END,
       CASE WHEN kind = 'rechtskreiswechsel' THEN 'sgb_ii' END,
       s, s_kind, s_jur, 'bench.' || s, r, r_kind, r_jur, cm, lead,
       CASE WHEN kind = 'relocation' THEN r_jur END,
       (CAST(:purposes AS text[]))[r],
       CAST(:fields AS json), CAST(:bases AS json), CAST(:redacted AS json),
       decode(repeat(md5(id::text), 19), 'hex'),
       CASE WHEN kind = 'relocation' THEN CAST('[]' AS json) END,
       wd, requested_at, due_date, due_at,
       CASE WHEN state = 'escalated' THEN least(CAST(:now AS timestamptz), due_at + interval '1 hour') END,
       responded_at,
       CASE WHEN responded_at IS NOT NULL THEN 'bench.' || CASE WHEN state = 'withdrawn' THEN s ELSE r END END,
       CASE WHEN state = 'rejected' THEN 'Nicht zuständig: Wohnort liegt außerhalb' END,
       CASE WHEN state = 'acknowledged' THEN responded_at::date - requested_at::date END,
       CASE WHEN state = 'acknowledged' THEN ((responded_at::date - requested_at::date) * 5) / 7 END,
       CASE WHEN state = 'requested' THEN 1 ELSE 2 END,
       coalesce(responded_at, requested_at)
FROM g
"""


DECIDED_SQL = _handovers_sql(_DECIDED_SRC, 10)
PENDING_SQL = _handovers_sql(_PENDING_SRC, 30)


def fill(app: h.App, owner_url: str, n: int, now: datetime, label: str) -> dict[str, Any]:
    """``n`` handovers with the persons and chains they refer to, set-based, as the owner
    (secondary indexes dropped and created again, foreign-key triggers off and the references
    checked afterwards); then VACUUM ANALYZE, as autovacuum would have done on a table that grew
    this much."""
    orgs = app.orgs
    by_id = app.by_id
    purposes = []
    for org_id in range(1, max(by_id) + 1):  # indexed by organisation id
        org = by_id.get(org_id)
        try:
            purposes.append(resolve_purpose(app.privacy, h.actor_for(org), None) if org else "none")
        except Problem:
            purposes.append("case_management")
    params: dict[str, Any] = {
        "now": now, "span": SPAN_DAYS, "template_key": TEMPLATE_KEY,
        "template_version": app.catalog.current[TEMPLATE_KEY].version,
        "receivers": _slots(orgs, RECEIVER_WEIGHTS), "senders": _slots(orgs, SENDER_WEIGHTS),
        "cms": _slots(orgs, CASE_MANAGEMENT_WEIGHTS), "towns": _town_jurisdictions(app),
        "wittmar_ki": orgs["wittmar_ki"].id, "hagenau_ki": orgs["hagenau_ki"].id,
        "wittmar": orgs["wittmar_sozialamt"].jurisdiction_id,
        "hagenau": orgs["hagenau_sozialamt"].jurisdiction_id,
        "jobcenter": orgs["ennetal_jobcenter"].id, "abh": orgs["ennetal_abh"].id,
        "purposes": purposes, "fields": PACKAGE_FIELDS, "bases": PACKAGE_BASES,
        "redacted": PACKAGE_REDACTED,
    }
    decided = round(n * DECIDED_SHARE)
    pending = n - decided
    chains = max(-(-n // HANDOVERS_PER_CHAIN), pending)
    t0 = time.perf_counter()
    bulk = create_engine(owner_url, poolclass=NullPool)  # its settings never reach the app's pool
    try:
        times, size, fk_off = _fill(bulk, params, chains, decided, pending, n, label, t0)
    finally:
        bulk.dispose()
    return {"handovers": n, "decided": decided, "pending": pending, "chains": chains, **times,
            "fk_checked_after": fk_off, "total_s": time.perf_counter() - t0,
            "total_bytes": size[0], "heap_bytes": size[1], "in_db": size[2]}


BULK_TABLES = ("persons", "chains", "handovers")
# With foreign-key triggers off during the load, the references are checked afterwards.
_DANGLING_SQL = [
    ("handovers.chain_id", "SELECT count(*) FROM handovers h WHERE NOT EXISTS "
                           "(SELECT 1 FROM chains c WHERE c.id = h.chain_id)"),
    ("handovers.person_id", "SELECT count(*) FROM handovers h WHERE NOT EXISTS "
                            "(SELECT 1 FROM persons p WHERE p.id = h.person_id)"),
    ("chains.person_id", "SELECT count(*) FROM chains c WHERE NOT EXISTS "
                         "(SELECT 1 FROM persons p WHERE p.id = c.person_id)"),
    ("handovers -> organisations", "SELECT count(*) FROM handovers h WHERE NOT EXISTS "
                                   "(SELECT 1 FROM organisations o WHERE o.id = h.receiver_organisation_id) "
                                   "OR NOT EXISTS (SELECT 1 FROM organisations o "
                                   "WHERE o.id = h.sender_organisation_id)"),
]


def _fill(bulk: Engine, params: dict[str, Any], chains: int, decided: int, pending: int, n: int,
          label: str, t0: float) -> tuple[dict[str, float], Any, bool]:
    done = 0
    with bulk.connect() as conn:
        conn.execute(text("SET synchronous_commit = off"))  # this bulk-load connection only
        conn.commit()
        try:  # foreign-key triggers off for this session (needs a superuser; else they stay on)
            conn.execute(text("SET session_replication_role = replica"))
            conn.commit()
            fk_off = True
        except Exception:
            conn.rollback()
            fk_off = False
        with h.indexes_deferred(conn, BULK_TABLES) as indexes:
            for sql, total in ((PERSONS_SQL, chains), (CHAINS_SQL, chains)):
                for lo in range(0, total, BULK_BATCH * 2):
                    conn.execute(text(sql), params | {"lo": lo, "hi": min(total, lo + BULK_BATCH * 2)})
                    conn.commit()
            t_chains = time.perf_counter() - t0
            for sql, total, extra in ((DECIDED_SQL, decided, {}),
                                      (PENDING_SQL, pending, {"esc": round(pending * ESCALATED_SHARE_OF_PENDING)})):
                for lo in range(0, total, BULK_BATCH):
                    hi = min(total, lo + BULK_BATCH)
                    conn.execute(text(sql), params | extra | {"lo": lo, "hi": hi, "count": total, "chains": chains})
                    conn.commit()
                    done += hi - lo
                    if n >= 4 * BULK_BATCH:
                        el = time.perf_counter() - t0
                        h.log(f"  ... {label}: {done:,} handovers ({done / max(el - t_chains, 1e-9):,.0f}/s)")
            t_rows = time.perf_counter() - t0
        t_index = time.perf_counter() - t0 - t_rows
        if n >= 4 * BULK_BATCH:
            h.log(f"  ... {label}: {len(indexes)} secondary indexes created again in {t_index:.1f} s")
        if fk_off:
            conn.execute(text("SET session_replication_role = DEFAULT"))
            for what, sql in _DANGLING_SQL:
                dangling = conn.execute(text(sql)).scalar_one()
                if dangling:
                    raise RuntimeError(f"bulk load: {dangling} rows with a dangling {what}")
            conn.commit()
        t_insert = time.perf_counter() - t0
    with bulk.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) handovers"))
        conn.execute(text("ANALYZE persons"))
        conn.execute(text("ANALYZE chains"))
        size = conn.execute(text(
            "SELECT pg_total_relation_size('handovers'), pg_relation_size('handovers'), "
            "(SELECT count(*) FROM handovers)")).one()
    return ({"chains_s": t_chains, "rows_s": t_rows, "index_s": t_index, "insert_s": t_insert}, size, fk_off)


def _town_jurisdictions(app: h.App) -> list[int]:
    """SLOTS town jurisdiction ids of the Kreis, by inhabitants."""
    ids = app.world.jurisdictions
    total = sum(n for _, _, n in TOWNS)
    out: list[int] = []
    acc = 0
    for key, _, n in TOWNS:
        acc += n
        while len(out) < round(acc / total * SLOTS):
            out.append(ids[key])
    return out


def box_sizes(app: h.App, now: datetime) -> dict[str, dict[str, int]]:
    """For each timed organisation: handovers in its box (all, waiting, overdue, decided in the
    service's count window)."""
    since = now - timedelta(days=handovers.DECIDED_WINDOW_DAYS)
    out = {}
    with app.engine.connect() as conn:
        for box, key, _ in TARGETS:
            org = app.orgs[key].id
            where = ("receiver_organisation_id = :o" if box is Box.incoming else
                     "(sender_organisation_id = :o OR case_management_organisation_id = :o)")
            r = conn.execute(text(
                f"SELECT count(*), count(*) FILTER (WHERE state IN ('requested', 'escalated')), "
                f"count(*) FILTER (WHERE state IN ('requested', 'escalated') AND due_at <= :now), "
                f"count(*) FILTER (WHERE state IN ('acknowledged', 'rejected', 'withdrawn') "
                f"AND responded_at >= :since) FROM handovers WHERE {where}"),
                {"o": org, "now": now, "since": since}).one()
            out[f"{box.value}:{key}"] = {"all": r[0], "waiting": r[1], "overdue": r[2], "decided_30d": r[3]}
    return out

# --------------------------------------------------------------------------------------------
# 1. Inbox latency


def _statement_label(statement: str) -> str:
    s = " ".join(statement.split())
    if "count(*) FILTER" in s:
        return "counts: waiting"
    if "GROUP BY handovers.state" in s:
        return "counts: decided (30 days)"
    if "AS sender_org" in s:
        return "page rows (summaries)"
    if "FROM handovers" in s and "LIMIT" in s:
        return "page ids"
    return "other: " + s[:40]


class StatementClock:
    """Time per statement kind (between before/after_cursor_execute) of the calls made while
    ``current`` names them; the rest of a call is Python, the pool's pre-ping and the rollback."""

    def __init__(self, engine: Engine):
        self.current: str | None = None
        self.ms: dict[str, Counter[str]] = defaultdict(Counter)
        self.calls: dict[str, Counter[str]] = defaultdict(Counter)
        self._t0 = 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *args: Any) -> None:
        self._t0 = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.current is not None:
            label = _statement_label(statement)
            self.ms[self.current][label] += (time.perf_counter() - self._t0) * 1000
            self.calls[self.current][label] += 1


def measure_inboxes(apps: dict[str, h.App], iterations: int, warmup: int, budget_s: float) -> dict[str, Any]:
    """Every (database, box, organisation) once per round, in a random order per round, so that
    both sizes see the same machine; ``warmup`` rounds are not recorded. A case that has had
    MIN_CALLS timed calls and spent ``budget_s`` seconds in them is left out of later rounds
    (a call that takes seconds would otherwise hold the run up for many minutes)."""
    clocks = {name: StatementClock(app.engine) for name, app in apps.items()}
    cases = [(name, box, key) for name in apps for box, key, _ in TARGETS]
    lat: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    items: dict[tuple[str, str, str], tuple[int, dict[str, int]]] = {}
    rng = random.Random(7)
    filters = handovers.InboxFilters()
    for it in range(warmup + iterations):
        rng.shuffle(cases)
        for name, box, key in cases:
            app = apps[name]
            actor = h.actor_for(app.orgs[key])
            case = (name, box.value, key)
            if len(lat[case]) >= MIN_CALLS and sum(lat[case]) > budget_s * 1000:
                continue
            clocks[name].current = "|".join(case) if it >= warmup else None
            t0 = time.perf_counter()
            with h.session_cm(app.factory) as session:
                page = handovers.inbox(session, actor, box, filters, limit=PAGE, cursor=None,
                                       now=datetime.now(UTC))
            dt = (time.perf_counter() - t0) * 1000
            clocks[name].current = None
            if it >= warmup:
                lat[case].append(dt)
            else:
                items[case] = (len(page.items), page.counts.model_dump())
    out: dict[str, Any] = {}
    for (name, box, key), values in lat.items():
        tag = "|".join((name, box, key))
        n = len(values)
        out[tag] = {
            "p50": statistics.median(values), "p95": h.percentile(values, 95), "mean": statistics.fmean(values),
            "n": n, "items": items[(name, box, key)][0], "counts": items[(name, box, key)][1],
            "statements_ms": {k: v / n for k, v in clocks[name].ms[tag].items()},
            "statements_per_call": sum(clocks[name].calls[tag].values()) / n,
        }
    return out


def explain_inbox(app: h.App, box: Box, key: str) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement one inbox call issues, with its parameters,
    run on a connection of the same engine (second run shown: warm)."""
    captured: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        captured.append((statement, parameters))

    event.listen(app.engine, "before_cursor_execute", grab)
    try:
        with h.session_cm(app.factory) as session:
            handovers.inbox(session, h.actor_for(app.orgs[key]), box, handovers.InboxFilters(),
                            limit=PAGE, cursor=None, now=datetime.now(UTC))
    finally:
        event.remove(app.engine, "before_cursor_execute", grab)
    out = []
    with app.engine.connect() as conn:
        raw = conn.connection.driver_connection
        for statement, parameters in captured:
            with raw.cursor() as cur:
                plan, ms = h.explain_analyze(cur, statement, parameters, runs=2)
            raw.rollback()
            out.append({"label": _statement_label(statement), "sql": " ".join(statement.split()),
                        "plan": plan, "ms": ms})
    return out


_PLAN_NODE = re.compile(r"(Scan|Join|Loop|Aggregate|Limit|Sort |Append|Unique|Hash\b|Materialize|"
                        r"Execution Time|Heap Fetches|JIT:|Timing:|Workers Launched)")


def summary_lines(plan: Sequence[str], full: bool = False) -> list[str]:
    """The whole plan, or its nodes, the top node's buffers and the execution time."""
    if full:
        return list(plan)
    out = []
    top_buffers = False
    for line in plan:
        if line.strip().startswith("Buffers:"):
            if not top_buffers:
                out.append(line)
                top_buffers = True
        elif _PLAN_NODE.search(line):
            out.append(line)
    return out


_WAITING = ("count(*) FILTER (WHERE state = 'requested') AS requested, "
            "count(*) FILTER (WHERE state = 'escalated') AS escalated, "
            "count(*) FILTER (WHERE due_at <= %(now)s) AS overdue")
_PENDING_WHERE = "state IN ('escalated', 'requested')"
_ENDED_WHERE = "state IN ('acknowledged', 'rejected', 'withdrawn') AND responded_at >= %(since)s"
_RECEIVER_PENDING_COVERING = (
    "CREATE INDEX bench_candidate_receiver_pending ON handovers (receiver_organisation_id, due_at, id) "
    "INCLUDE (state) WHERE state IN ('escalated', 'requested')")
_OUTGOING_COVERING = [
    "CREATE INDEX bench_candidate_sender_pending ON handovers (sender_organisation_id, due_at, id) "
    "INCLUDE (state) WHERE state IN ('escalated', 'requested')",
    "CREATE INDEX bench_candidate_cm_pending ON handovers (case_management_organisation_id, due_at, id) "
    "INCLUDE (state, sender_organisation_id) WHERE state IN ('escalated', 'requested')",
    "CREATE INDEX bench_candidate_cm_decided ON handovers "
    "(case_management_organisation_id, state, responded_at) INCLUDE (sender_organisation_id)",
]
# The outgoing box without a UNION of ids: what the organisation sent, plus what it manages and
# someone else sent (each handover counted once, each part from one index).
_OUT_WAITING = (
    f"SELECT sum(requested), sum(escalated), sum(overdue) FROM ("
    f"SELECT {_WAITING} FROM handovers WHERE sender_organisation_id = %(ki)s AND {_PENDING_WHERE} "
    f"UNION ALL SELECT {_WAITING} FROM handovers WHERE case_management_organisation_id = %(ki)s "
    f"AND sender_organisation_id <> %(ki)s AND {_PENDING_WHERE}) AS parts")
_OUT_DECIDED = (
    f"SELECT state, sum(n) FROM ("
    f"SELECT state, count(*) AS n FROM handovers WHERE sender_organisation_id = %(ki)s AND {_ENDED_WHERE} "
    f"GROUP BY state UNION ALL SELECT state, count(*) FROM handovers "
    f"WHERE case_management_organisation_id = %(ki)s AND sender_organisation_id <> %(ki)s "
    f"AND {_ENDED_WHERE} GROUP BY state) AS parts GROUP BY state")
# (what, candidate indexes created first in a transaction that is rolled back, [(label, SQL)])
ALTERNATIVES: list[tuple[str, list[str], list[tuple[str, str]]]] = [
    ("incoming ennetal_abh, existing indexes", [], [
        ("waiting counts, one aggregate over ix_handovers_receiver_pending",
         f"SELECT {_WAITING} FROM handovers WHERE receiver_organisation_id = %(abh)s AND {_PENDING_WHERE}"),
        ("decided counts, one aggregate over ix_handovers_receiver_decided",
         f"SELECT state, count(*) FROM handovers WHERE receiver_organisation_id = %(abh)s AND {_ENDED_WHERE} "
         "GROUP BY state"),
    ]),
    ("incoming ennetal_abh, candidate index: " + _RECEIVER_PENDING_COVERING.split(" ON ")[1],
     [_RECEIVER_PENDING_COVERING], [
        ("waiting counts, one aggregate (index-only)",
         f"SELECT {_WAITING} FROM handovers WHERE receiver_organisation_id = %(abh)s AND {_PENDING_WHERE}"),
    ]),
    ("outgoing ennetal_ki, existing indexes", [], [
        ("waiting counts, sent + managed-and-sent-by-others", _OUT_WAITING),
        ("decided counts, sent + managed-and-sent-by-others", _OUT_DECIDED),
    ]),
    ("outgoing ennetal_ki, candidate indexes: sender/case-management pending INCLUDE (state[, "
     "sender_organisation_id]), case-management decided INCLUDE (sender_organisation_id)",
     _OUTGOING_COVERING, [
        ("waiting counts, sent + managed-and-sent-by-others (index-only)", _OUT_WAITING),
        ("decided counts, sent + managed-and-sent-by-others (index-only)", _OUT_DECIDED),
    ]),
]


def explain_alternatives(app: h.App, owner_url: str) -> list[dict[str, Any]]:
    """Diagnostics only, not what the application runs: the inbox counts as direct aggregates
    over the indexes (no ``id IN (SELECT ...)`` self-join), with the existing indexes and with
    candidate covering indexes created inside a transaction that is rolled back (as the owner:
    the service role may not create indexes)."""
    now = datetime.now(UTC)
    params = {"abh": app.orgs["ennetal_abh"].id, "ki": app.orgs["ennetal_ki"].id, "now": now,
              "since": now - timedelta(days=handovers.DECIDED_WINDOW_DAYS)}
    out = []
    owner = create_engine(owner_url, poolclass=NullPool)
    with owner.connect() as conn:
        raw = conn.connection.driver_connection
        raw.rollback()
        for what, setup, queries in ALTERNATIVES:
            done = []
            try:
                with raw.cursor() as cur:
                    t0 = time.perf_counter()
                    for ddl in setup:
                        cur.execute(ddl)
                    setup_s = time.perf_counter() - t0
                    for label, sql in queries:
                        plan, ms = h.explain_analyze(cur, sql, params, runs=2)  # the second is warm
                        cur.execute(sql, params)
                        result = [tuple(int(x) if isinstance(x, Decimal) else x for x in r)
                                  for r in cur.fetchall()]
                        done.append({"label": label, "sql": sql, "plan": plan, "ms": ms, "result": result})
            finally:
                raw.rollback()  # the candidate indexes go again
            out.append({"what": what, "setup_s": setup_s if setup else None, "queries": done})
    owner.dispose()
    return out



# --------------------------------------------------------------------------------------------
# 2. Acknowledgements: handovers made through the services, acknowledged by worker processes


def make_chains(cfg: dict[str, Any], n_chains: int, seed: int) -> dict[str, Any]:
    """Persons as the demo registers them (``_intake``), a chain each, and one step handover per
    step of ACK_STEPS from the case manager; timed per service call. Runs in a process of its
    own (``h.in_processes``) or in-process."""
    app = cfg if isinstance(cfg, h.App) else h.App.from_cfg(cfg)
    rng = random.Random(seed)
    towns = [t for t, _, _ in TOWNS]
    weights = [n for _, _, n in TOWNS]
    managers = [(app.actor(key, user, ["case_manager"]), share) for user, key, share in MANAGERS]
    ms: dict[str, list[float]] = defaultdict(list)
    chains: list[tuple[str, list[tuple[str, int]]]] = []
    errors: Counter[str] = Counter()
    now = datetime.now(UTC)
    for _ in range(n_chains):
        manager = managers[0][0] if rng.random() < managers[0][1] else managers[1][0]
        town = rng.choices(towns, weights=weights)[0]
        at = now - timedelta(days=2)
        body = _intake(rng, app.world, manager, town, at, TEMPLATE_KEY, ("protection_granted", "good", "asylblg"))
        t0 = time.perf_counter()
        with h.session_cm(app.factory) as session:
            person = create_person(session, app.privacy, manager, body, at)
        t1 = time.perf_counter()
        with h.session_cm(app.factory) as session:
            chain = start_chain(session, app.catalog, manager, person.id, TEMPLATE_KEY, at)
        ms["create_person"].append((t1 - t0) * 1000)
        ms["start_chain"].append((time.perf_counter() - t1) * 1000)
        made = []
        for step in ACK_STEPS:
            t0 = time.perf_counter()
            try:
                with h.session_cm(app.factory) as session:
                    ho = handovers.request_handover(session, app.catalog, app.privacy, app.policies.handovers,
                                                    manager, chain.id, HandoverIn(kind="step", step_key=step),
                                                    datetime.now(UTC))
            except Problem as exc:
                errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                continue
            ms["request_handover"].append((time.perf_counter() - t0) * 1000)
            made.append((str(ho.id), ho.receiver.id))
        chains.append((str(chain.id), made))
    if app is not cfg:
        app.dispose()
    return {"chains": chains, "ms": dict(ms), "errors": dict(errors)}


def make_pool(bench: h.Bench, cfg: dict[str, Any], handovers_wanted: int, seed: int) -> dict[str, Any]:
    """Enough chains for ``handovers_wanted`` handovers, made by POOL_CREATORS processes."""
    n_chains = -(-handovers_wanted // len(ACK_STEPS))
    share = [n_chains // POOL_CREATORS + (1 if i < n_chains % POOL_CREATORS else 0) for i in range(POOL_CREATORS)]
    t0 = time.perf_counter()
    parts = h.in_processes(bench, make_chains, [(cfg, k, seed * 100 + i) for i, k in enumerate(share) if k],
                           600 + n_chains * 2, "handover creators")
    ms: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    for part in parts:
        for k, v in part["ms"].items():
            ms[k].extend(v)
        errors.update(part["errors"])
    chains = [c for part in parts for c in part["chains"]]
    return {"chains": chains, "seconds": time.perf_counter() - t0, "processes": len(parts),
            "ms": {k: statistics.median(v) for k, v in ms.items()}, "errors": dict(errors),
            "handovers": sum(len(hs) for _, hs in chains)}


def _interleave(chains: Sequence[tuple[str, list[tuple[str, int]]]]) -> list[tuple[str, int]]:
    """Round-robin over the chains: consecutive acknowledgements touch different chains."""
    out = []
    lists = [list(hs) for _, hs in chains]
    while any(lists):
        for hs in lists:
            if hs:
                out.append(hs.pop(0))
    return out


class AckWorker(h.PoolWorker):
    """Acknowledges its own chains' handovers, each as the receiving organisation."""

    def __init__(self, cfg: dict[str, Any], share: list[tuple[str, list[tuple[str, int]]]]):
        self.app = h.App.from_cfg(cfg)
        self.backend_pids = self.app.backend_pids
        self.actors = {o.id: h.actor_for(o, f"bench-ack.{o.key}") for o in self.app.orgs.values()}
        self.todo = _interleave(share)
        self.i = 0

    def _ack(self, hid: str, org_id: int) -> None:
        with h.session_cm(self.app.factory) as session:
            out = handovers.respond(session, self.app.catalog, self.app.privacy, self.app.policies.handovers,
                                    self.actors[org_id], uuid.UUID(hid), "acknowledge", None, None,
                                    datetime.now(UTC))
        assert out.state.value == "acknowledged", out.state

    def warm_up(self) -> None:
        for hid, org_id in self.todo[:WARMUP_ACKS]:
            self._ack(hid, org_id)
        self.i = WARMUP_ACKS

    def one(self) -> bool:
        if self.i >= len(self.todo):
            return False
        hid, org_id = self.todo[self.i]
        self.i += 1
        self._ack(hid, org_id)
        return True

    def close(self) -> None:
        self.app.dispose()


# Where an acknowledgement's CPU goes: functions of the service (and of the audit trail, and the
# driver's COMMIT and pre-ping) timed exclusively (a phase's time leaves out the phases it calls).
# Each is wrapped where it exists, so the same benchmark measures older code (for "before") and
# newer code; what is not in a named phase is respond's own code or the session's close.
ACK_PHASES = [
    ("casemgmt.handovers.service", "_find", "scope check (_find)"),
    ("casemgmt.handovers.service", "_scope_and_lock",
     "scope check + chain lock, handover lock with the answer's columns (_scope_and_lock)"),
    ("casemgmt.handovers.service", "_take_over_step", "chain hook: step assignment (_take_over_step)"),
    ("casemgmt.handovers.service", "_step_taken_over", "chain hook: the step assignment's values (_step_taken_over)"),
    ("casemgmt.handovers.service", "_set_state", "handover UPDATE (_set_state)"),
    ("casemgmt.handovers.service", "_write_answer",
     "writes: handover UPDATE + its event + step, chain event, chain version (_write_answer)"),
    ("casemgmt.handovers.service", "check_free_text", "reason check (check_free_text)"),
    ("casemgmt.handovers.service", "_regime_before", "decision point: the Rechtskreis before (_regime_before)"),
    ("casemgmt.handovers.service", "write_audit", "audit staging (write_audit)"),
    ("casemgmt.privacy.audit", "_append_rows", "audit append at commit, on the head the lock read (_append_rows)"),
    ("casemgmt.handovers.service", "_read_out", "answer: second read after the commit + model (_read_out)"),
    ("casemgmt.handovers.service", "_answer_out", "answer: events + model, in the transaction (_answer_out)"),
    ("casemgmt.handovers.service", "respond",
     "respond's own code (lifecycle, inline statements: locks, event INSERT before; BEGIN)"),
]
ACK_TARGET = 250.0  # acknowledgements/s with 4 workers (issue 14)


class _PhaseClock:
    """Exclusive CPU (thread_time) and wall time per wrapped function."""

    def __init__(self) -> None:
        self.cpu: Counter[str] = Counter()
        self.wall: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.stack: list[list[float]] = []  # per open phase: [child cpu, child wall]
        self.on = False
        self.undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        fn = getattr(owner, attr, None)
        if fn is None:
            return
        clock = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not clock.on:
                return fn(*args, **kwargs)
            c0, w0 = time.thread_time(), time.perf_counter()
            clock.stack.append([0.0, 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                child_c, child_w = clock.stack.pop()
                dc, dw = time.thread_time() - c0, time.perf_counter() - w0
                clock.cpu[label] += dc - child_c
                clock.wall[label] += dw - child_w
                clock.calls[label] += 1
                if clock.stack:
                    clock.stack[-1][0] += dc
                    clock.stack[-1][1] += dw

        self.undo.append((owner, attr, fn))
        setattr(owner, attr, timed)

    def restore(self) -> None:
        for owner, attr, fn in reversed(self.undo):
            setattr(owner, attr, fn)
        self.undo.clear()


def ack_breakdown(app: h.App, chains: list[tuple[str, list[tuple[str, int]]]]) -> dict[str, Any]:
    """In-process, on an engine with one connection: statements and time per statement of
    respond(acknowledge), CPU per acknowledgement (this process and its PostgreSQL backend) and
    by phase, and the round trips of one acknowledgement on the wire (libpq trace); the first
    third is a warm-up (psycopg prepares a statement on its 5th use)."""
    import importlib

    one = h.App.open(app.url, app.master, pool_size=1, max_overflow=0)
    todo = _interleave(chains)
    traced = todo.pop()  # the last one is acknowledged under the libpq trace
    warm = len(todo) // 3
    actors = {o.id: h.actor_for(o, f"bench-ack.{o.key}") for o in one.orgs.values()}
    stats: dict[str, Counter[str]] = {"ms": Counter(), "calls": Counter()}
    seen: list[tuple[str, float]] = []  # labelled after the run: the listener stays cheap
    on = [False]
    t_stmt = [0.0]

    def before(*args: Any) -> None:
        t_stmt[0] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if on[0]:
            seen.append((statement, time.perf_counter() - t_stmt[0]))

    def ack(hid: str, org_id: int) -> None:
        with h.session_cm(one.factory) as session:
            handovers.respond(session, one.catalog, one.privacy, one.policies.handovers, actors[org_id],
                              uuid.UUID(hid), "acknowledge", None, None, datetime.now(UTC))

    clock = _PhaseClock()
    for module, attr, label in ACK_PHASES:
        clock.wrap(importlib.import_module(module), attr, label)
    dialect = one.engine.dialect
    clock.wrap(dialect, "do_commit", "COMMIT (the driver's commit)")
    clock.wrap(dialect, "do_ping", "pool checkout pre-ping")
    event.listen(one.engine, "before_cursor_execute", before)
    event.listen(one.engine, "after_cursor_execute", after)
    # warm-up, then the instrumented half (statements, phases), then the plain half (CPU per
    # acknowledgement of this process and of its backend, without the instruments' own cost)
    half = warm + (len(todo) - warm) // 2
    timed: list[float] = []
    cpu = plain_cpu = 0.0
    server0 = server1 = None
    try:
        for i, (hid, org_id) in enumerate(todo):
            if i == half:
                on[0] = clock.on = False
                server0 = h.backend_cpu(one.backend_pids) if h.is_local(one.url) else None
            elif i == warm:
                on[0] = clock.on = True
            c0, t0 = time.thread_time(), time.perf_counter()
            ack(hid, org_id)
            if warm <= i < half:
                timed.append((time.perf_counter() - t0) * 1000)
                cpu += time.thread_time() - c0
            elif i >= half:
                plain_cpu += time.thread_time() - c0
        if server0 is not None:
            server1 = h.backend_cpu(one.backend_pids)
    finally:
        on[0] = clock.on = False
        clock.restore()
        event.remove(one.engine, "before_cursor_execute", before)
        event.remove(one.engine, "after_cursor_execute", after)
    try:
        wire = h.wire_round_trips(one.engine, lambda: ack(*traced))
    finally:
        one.dispose()
    for statement, dt in seen:
        label = re.sub(r"\s+", " ", re.sub(r"%\(\w+\)s|\$\d+", "?", " ".join(statement.split())))[:70]
        stats["ms"][label] += dt * 1000
        stats["calls"][label] += 1
    n, n_plain = max(len(timed), 1), max(len(todo) - half, 1)
    phases = [(label, clock.calls[label] / n, clock.cpu[label] / n * 1000, clock.wall[label] / n * 1000)
              for label in clock.cpu]
    named = sum(c for _, _, c, _ in phases)
    phases.append(("outside respond: session close, the benchmark's loop", 0.0, cpu / n * 1000 - named,
                   sum(timed) / n - sum(w for _, _, _, w in phases)))
    return {"n": n, "ms": statistics.fmean(timed), "p50": statistics.median(timed),
            "statements": sum(stats["calls"].values()) / n, "sql_ms": sum(stats["ms"].values()) / n,
            "by_statement": sorted(((k, stats["calls"][k] / n, v / n) for k, v in stats["ms"].items()),
                                   key=lambda r: -r[2]),
            "cpu_ms": cpu / n * 1000, "n_plain": n_plain, "plain_cpu_ms": plain_cpu / n_plain * 1000,
            "server_cpu_ms": (server1 - server0) / n_plain * 1000 if server1 is not None else None,
            "phases": sorted(phases, key=lambda r: -r[2]), "wire_round_trips": wire}


# --------------------------------------------------------------------------------------------
# Report


def fmt_mb(b: int) -> str:
    return f"{b / 2**20:,.0f} MiB"


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    small, large = "small", "large"
    h.banner("casemgmt handovers", results)
    print("server settings: " + ", ".join(f"{k}={v}" for k, v in results.get("settings", {}).items()))
    for name in (small, large):
        f = results.get("fill", {}).get(name)
        if f:
            print(f"{name}: {f['in_db']:,} handovers ({f['decided']:,} decided, {f['pending']:,} waiting), "
                  f"{f['chains']:,} chains/persons; loaded in {f['insert_s']:.1f} s (persons and chains "
                  f"{f['chains_s']:.1f} s, handovers {f['rows_s'] - f['chains_s']:.1f} s, indexes "
                  f"{f['index_s']:.1f} s, references checked {f['insert_s'] - f['rows_s'] - f['index_s']:.1f} s), "
                  f"VACUUM ANALYZE {f['total_s'] - f['insert_s']:.1f} s; "
                  f"handovers {fmt_mb(f['total_bytes'])} with indexes, heap {fmt_mb(f['heap_bytes'])}")
    sizes = results.get("box_sizes", {})
    inbox = results.get("inbox")
    if inbox:
        h.heading(f"1. Inbox latency: handovers.service.inbox(..., InboxFilters(), limit={PAGE}, cursor=None), "
                  f"{args.iterations} calls each, interleaved, after {args.warmup} warm-up rounds")
        print(f"  {'box / organisation':<42} {'waiting':>15} {'decided 30d':>15} "
              f"{'p50 ms':>15} {'p95 ms':>15} {'ratio p50':>9} {'ratio p95':>9}")
        verdicts = []
        short = [f"{tag} {r['n']}" for tag, r in inbox.items() if r["n"] < args.iterations]
        if short:
            print(f"  (fewer calls, --inbox-budget {args.inbox_budget:g} s reached: {', '.join(short)})")
        for box, key, label in TARGETS:
            a = inbox.get(f"{small}|{box.value}|{key}")
            b = inbox.get(f"{large}|{box.value}|{key}")
            if not a or not b:
                continue
            sa = sizes.get(small, {}).get(f"{box.value}:{key}", {})
            sb = sizes.get(large, {}).get(f"{box.value}:{key}", {})
            r50, r95 = b["p50"] / a["p50"], b["p95"] / a["p95"]
            verdicts.append((box, key, r50))
            print(f"  {box.value + ' ' + key + ' (' + label.split()[0] + ')':<42} "
                  f"{sa.get('waiting', 0):>6,} / {sb.get('waiting', 0):>6,} "
                  f"{sa.get('decided_30d', 0):>6,} / {sb.get('decided_30d', 0):>6,} "
                  f"{a['p50']:>6.2f} / {b['p50']:>6.2f} {a['p95']:>6.2f} / {b['p95']:>6.2f} "
                  f"{r50:>8.2f}x {r95:>8.2f}x")
        print(f"  (each pair: {args.small:,} / {args.large:,} handovers in the database)")
        print()
        print("  Where an inbox call's time goes (mean ms per call): each statement between before and "
              "after_cursor_execute (server time and round trip);")
        print("  rest = fetching and converting the rows, building the page, pool checkout with pre-ping, "
              "rollback")
        labels = ["page ids", "page rows (summaries)", "counts: waiting", "counts: decided (30 days)"]
        print(f"  {'':<42} " + " ".join(f"{lab[:18]:>18}" for lab in labels) + f" {'rest':>8}")
        for box, key, _ in TARGETS:
            for name in (small, large):
                r = inbox.get(f"{name}|{box.value}|{key}")
                if not r:
                    continue
                sm = r["statements_ms"]
                rest = r["mean"] - sum(sm.values())
                print(f"  {name + ' ' + box.value + ' ' + key:<42} "
                      + " ".join(f"{sm.get(lab, 0):>18.2f}" for lab in labels) + f" {rest:>8.2f}")
        worst = max(verdicts, key=lambda v: v[2]) if verdicts else None
        if worst:
            ok = all(r <= TARGET_RATIO for _, _, r in verdicts)
            print()
            print(f"  target: p50 with {args.large:,} within {TARGET_RATIO:g}x of {args.small:,}, every box: "
                  f"{'PASS' if ok else 'FAIL'} (worst {worst[2]:.2f}x, {worst[0].value} {worst[1]})")
            failing = [f"{b.value} {k} {r:.2f}x" for b, k, r in verdicts if r > TARGET_RATIO]
            if failing:
                print(f"  over {TARGET_RATIO:g}x: " + ", ".join(failing))
    for ex in results.get("explain", []):
        print()
        print(f"  EXPLAIN (ANALYZE, BUFFERS), {ex['db']} database, {ex['box']} box of {ex['org']}:")
        for st in ex["statements"]:
            print(f"    -- {st['label']}: {st['ms']:.2f} ms (server execution)")
            for line in summary_lines(st["plan"], full=ex.get("full") and st["label"] == "page ids"):
                print(f"       {line}")
    alts = results.get("alternatives")
    if alts:
        print()
        print("  Diagnostics (not what the application runs): the counts as direct aggregates over the "
              "indexes; candidate indexes are created in a transaction and rolled back.")
        for name in ("large", "small"):
            app_counts = {key: (inbox or {}).get(f"{name}|{box.value}|{key}", {}).get("counts")
                          for box, key, _ in TARGETS if key in ("ennetal_abh", "ennetal_ki")}
            print(f"    {name}: the service's counts: " + "; ".join(f"{k} {v}" for k, v in app_counts.items()))
            for a in alts.get(name, []):
                print(f"    {name}: {a['what']}"
                      + (f" (built in {a['setup_s']:.1f} s)" if a["setup_s"] else ""))
                for q in a["queries"]:
                    print(f"      -- {q['label']}: {q['ms']:.2f} ms (server execution); result {q['result']}")
                    if name == "large":
                        for line in summary_lines(q["plan"]):
                            print(f"         {line}")
    acks = results.get("acks")
    if acks:
        pool = acks.get("pool", {})
        h.heading("2. Acknowledgements (large database)")
        if pool:
            print(f"  pool made through the services by {pool['processes']} processes: {pool['handovers']:,} handovers "
                  f"on {len(pool['chains']):,} chains in {pool['seconds']:.1f} s; median create_person "
                  f"{pool['ms'].get('create_person', 0):.1f} ms, start_chain {pool['ms'].get('start_chain', 0):.1f} ms, "
                  f"request_handover {pool['ms'].get('request_handover', 0):.1f} ms"
                  + (f"; refused: {pool['errors']}" if pool["errors"] else ""))
        bd = acks.get("breakdown")
        if bd:
            print(f"  in-process, one connection, {bd['n']} acknowledgements: {bd['ms']:.2f} ms each "
                  f"(p50 {bd['p50']:.2f}), {bd['statements']:.1f} statements + COMMIT, SQL {bd['sql_ms']:.2f} ms:")
            for label, calls, ms in bd["by_statement"]:
                print(f"    {calls:>4.1f} x {ms:>6.2f} ms  {label}")
            if "cpu_ms" in bd:
                srv = bd.get("server_cpu_ms")
                print(f"  round trips of one acknowledgement on the wire (libpq trace: pre-ping, BEGIN, statements, "
                      f"COMMIT): {bd['wire_round_trips']}")
                print(f"  CPU per acknowledgement in-process, {bd['n_plain']} without instruments: this process "
                      f"{bd['plain_cpu_ms']:.2f} ms" + (f" + its PostgreSQL backend {srv:.2f} ms = "
                                                      f"{bd['plain_cpu_ms'] + srv:.2f} ms" if srv is not None else ""))
                print(f"  where this process's CPU goes, the {bd['n']} instrumented ones ({bd['cpu_ms']:.2f} ms each "
                      "with the instruments' own cost; each phase exclusive of the phases it calls):")
                print(f"    {'CPU ms':>7} {'share':>6} {'wall ms':>8} {'calls':>5}  phase")
                for label, calls, c, w in bd["phases"]:
                    print(f"    {c:>7.2f} {c / bd['cpu_ms'] * 100:>5.0f}% {w:>8.2f} {calls:>5.1f}  {label}")
        runs = acks.get("runs", {})
        for w in sorted(runs):
            r = runs[w]
            print(f"  {w} worker(s): {h.pool_text(r, 'acknowledgement')}")
            for s in r["error_samples"]:
                print(f"     error: {s}")
            print(f"     PostgreSQL backends of the run: {h.waits_text(r['waits'])}")
        if 1 in runs and 4 in runs:
            print(f"  ratio 4 workers / 1 worker: {h.ratio(runs[4]['per_s'], runs[1]['per_s']):.2f}x")
        if acks.get("check"):
            print(f"  check: {acks['check']}")
        if runs:
            h.heading("Acknowledgement target")
            w = max(runs)
            r = runs[w]
            others = r.get("others_cores")
            h.target(f"acknowledgements/s with {w} workers", r["per_s"], ACK_TARGET, False,
                     f"{r['per_s']:.1f}/s" + (f"; other processes used ~{others:.2f} CPUs" if others is not None
                                              else ""))
            if r["server_cpu_ms"] is not None:
                per = r["cpu_ms"] + r["server_cpu_ms"]
                cap = h.CPUS * 1000 / per
                print(f"  capacity by CPU ({h.CPUS} CPUs / (worker {r['cpu_ms']:.2f} + PostgreSQL "
                      f"{r['server_cpu_ms']:.2f} ms per acknowledgement with {w} workers)): {cap:.0f}/s; "
                      f">= {ACK_TARGET:g}/s {'PASS' if cap >= ACK_TARGET else 'FAIL'} by CPU")
    print(h.LINE)


# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=10_000, help="handovers in the small database (10000)")
    p.add_argument("--large", type=int, default=1_000_000, help="handovers in the large database (1000000)")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each acknowledgement run (8)")
    p.add_argument("--iterations", type=int, default=200, help="timed inbox calls per database and box (200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed rounds of inbox calls first (20)")
    p.add_argument("--inbox-budget", type=float, default=60.0,
                   help=f"seconds of timed calls per case, after at least {MIN_CALLS} calls (60)")
    p.add_argument("--workers", type=h.int_list, default=[1, 4],
                   help="worker counts for the acknowledgement runs (1,4)")
    p.add_argument("--skip-inbox", action="store_true")
    p.add_argument("--skip-acks", action="store_true")
    h.common_args(p)
    args = p.parse_args(argv)
    if min(args.small, args.large) < 100 or args.seconds <= 0 or args.iterations < 1 or args.warmup < 1:
        p.error("sizes >= 100, --seconds > 0, --iterations and --warmup >= 1")
    return h.smoke_sizes(args, SMOKE)


def run(bench: h.Bench, args: argparse.Namespace) -> None:
    results = bench.results
    now = datetime.now(UTC)  # the bulk rows' "now": the same in both databases
    apps: dict[str, h.App] = {}
    dbs: dict[str, h.Database] = {}
    try:
        for name in ("small", "large"):
            dbs[name] = bench.database(name)
            apps[name] = h.App.open(dbs[name].service_url, bench.master,
                                    templates_at=now - timedelta(days=SPAN_DAYS + 60))
        bench.server_facts(dbs["small"].service_url, ("shared_buffers", "work_mem", "jit", "synchronous_commit",
                                                      "effective_cache_size", "random_page_cost"))
        h.log(f"{results['server']}, {results['settings']}; {len(apps['small'].orgs)} organisations")
        results["fill"] = {}
        for name, n in (("small", args.small), ("large", args.large)):
            bench.phase(f"fill {name}")
            h.log(f"filling the {name} database with {n:,} handovers (set-based INSERT ... SELECT, as the owner)")
            f = results["fill"][name] = fill(apps[name], dbs[name].owner_url, n, now, name)
            h.log(f"{name}: {f['in_db']:,} handovers in {f['insert_s']:.1f} s + VACUUM ANALYZE "
                  f"{f['total_s'] - f['insert_s']:.1f} s; {fmt_mb(f['total_bytes'])} with indexes")
        results["box_sizes"] = {name: box_sizes(app, datetime.now(UTC)) for name, app in apps.items()}

        if not args.skip_inbox:
            bench.phase("1. inbox")
            h.log(f"1. inbox latency: {len(TARGETS)} boxes x 2 databases, {args.warmup} warm-up + "
                  f"{args.iterations} rounds, interleaved")
            results["inbox"] = measure_inboxes(apps, args.iterations, args.warmup, args.inbox_budget)
            for tag, r in sorted(results["inbox"].items()):
                h.log(f"  {tag}: p50 {r['p50']:.2f} ms, p95 {r['p95']:.2f} ms, {r['items']} items, "
                      f"{r['statements_per_call']:.0f} statements")
            bench.phase("explain")
            results["explain"] = [
                {"db": name, "box": box.value, "org": key, "full": name == "large",
                 "statements": explain_inbox(apps[name], box, key)}
                for name in ("large", "small") for box, key, _ in TARGETS if key in ("ennetal_abh", "ennetal_ki")]
            bench.phase("alternatives")
            h.log("diagnostics: the counts written differently, and a candidate index (rolled back)")
            results["alternatives"] = {name: explain_alternatives(apps[name], dbs[name].owner_url)
                                       for name in ("large", "small")}

        if not args.skip_acks and args.workers:
            large = apps["large"]
            cfg = large.cfg()
            with large.factory() as session:
                _seed_agreements(session, large.privacy, large.world, datetime.now(UTC) - timedelta(days=3))
            bench.phase("2. pool")
            h.log("2. acknowledgements: calibration chains through the services (in-process)")
            calib = make_chains(large, SMOKE_CALIBRATION_CHAINS if args.smoke else CALIBRATION_CHAINS, 1)
            acks = results["acks"] = {"breakdown": ack_breakdown(large, calib["chains"])}
            bd = acks["breakdown"]
            h.log(f"  one acknowledgement in-process: {bd['ms']:.2f} ms, {bd['statements']:.1f} statements")
            # Enough for each run at the rate one process managed in-process, with margin: one
            # worker is latency-bound; four share 2 CPUs (at most ~2.5x one, say).
            per_s = 1000 / bd["p50"]
            need = {w: (w * SMOKE_ACKS_PER_WORKER if args.smoke else
                        int(per_s * min(w, 3.5) * args.seconds * 1.5) + w * (WARMUP_ACKS + 8))
                    for w in args.workers}
            h.log(f"  making {sum(need.values()):,} handovers through create_person, start_chain and "
                  f"request_handover ({POOL_CREATORS} processes): {need}")
            pool = acks["pool"] = make_pool(bench, cfg, sum(need.values()), seed=2)
            h.log(f"  made {pool['handovers']:,} handovers on {len(pool['chains']):,} chains in {pool['seconds']:.1f} s")
            with large.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE handovers"))
            acks["runs"] = {}
            chains = list(pool["chains"])
            for w in args.workers:
                k = -(-need[w] // len(ACK_STEPS))
                mine, chains = chains[:k], chains[k:]
                bench.phase(f"2. acks x{w}")
                h.log(f"  {w} worker(s), {sum(len(hs) for _, hs in mine):,} handovers, {args.seconds:g} s")
                r = acks["runs"][w] = h.run_pool(bench, AckWorker, cfg, [mine[i::w] for i in range(w)],
                                                 args.seconds, "ack")
                h.log(f"  {w} worker(s): {h.pool_text(r, 'acknowledgement')}")
            with large.engine.connect() as conn:
                acked = conn.execute(text(
                    "SELECT count(*) FROM handovers WHERE state = 'acknowledged' "
                    "AND responded_by_user LIKE 'bench-ack.%'")).scalar_one()
                events = conn.execute(text(
                    "SELECT count(*) FROM handover_events WHERE action = 'acknowledge' "
                    "AND actor_user LIKE 'bench-ack.%'")).scalar_one()
            expected = (sum(len(hs) for _, hs in calib["chains"])  # the in-process breakdown
                        + sum(r["ok"] + r["workers"] * WARMUP_ACKS for r in acks["runs"].values()))
            acks["check"] = (f"{acked:,} handovers acknowledged by the benchmark with {events:,} 'acknowledge' "
                             f"events; expected {expected:,}: " + ("OK" if acked == events == expected else "MISMATCH"))
            h.log("  " + acks["check"])
    finally:
        for app in apps.values():
            app.dispose()


if __name__ == "__main__":
    sys.exit(h.main("handovers", parse_args(), run, report))
