"""The process-mining export (OCEL 2.0 JSON): valid against the standard's schema, closed under
references, coarse in time, unlinkable between exports, free of anything personal, and without
chains that follow a rare path.

The database tests build chains through the HTTP API: three chains in Hattenberg along one path
(one of them relocates to Wittmar; their handovers end three different ways) and one chain along a
path of its own, which k = 3 must drop with its handover. The unit tests feed hand-made rows to
the pure builder.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from http_helpers import ok
from sqlalchemy import select
from test_api import acted, new_person, started

from casemgmt.chains.models import ChainEvent
from casemgmt.handovers.models import Handover, HandoverEvent
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.steering.ocel import (
    OCEL_TOP_LEVEL,
    ChainEventRow,
    ChainRow,
    ExportStats,
    HandoverEventRow,
    HandoverRow,
    build_ocel,
    export_ocel,
    pseudonym,
    step_object_id,
)

SCHEMA = json.loads((Path(__file__).parent / "data" / "ocel2-json.schema.json").read_text())
WHOLE_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}T00:00:00Z$")
KI = ("ennetal_ki", "case_manager")
SECRET = bytes(range(32))
# Synthetic names that cannot occur in the export by accident.
NAMES = [("Quendrova", "Ilsabet"), ("Tarvinesh", "Omarik"), ("Belucziak", "Fennah"),
         ("Xandorupe", "Mirelka")]


# --- helpers -------------------------------------------------------------------------------------


def validate(doc: dict[str, Any]) -> None:
    """The standard's schema, plus what a schema cannot say: references resolve, types are
    declared, ids are unique, times are whole days, and nothing sits beside the four members."""
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(doc)
    assert tuple(doc) == OCEL_TOP_LEVEL
    object_types = {t["name"]: {a["name"] for a in t["attributes"]} for t in doc["objectTypes"]}
    event_types = {t["name"] for t in doc["eventTypes"]}
    ids = [o["id"] for o in doc["objects"]]
    assert len(set(ids)) == len(ids)
    event_ids = [e["id"] for e in doc["events"]]
    assert len(set(event_ids)) == len(event_ids) and not set(event_ids) & set(ids)
    known = set(ids)
    for o in doc["objects"]:
        assert o["type"] in object_types
        for a in o["attributes"]:
            assert a["name"] in object_types[o["type"]]
            assert WHOLE_DAY.match(a["time"]), a
        for r in o["relationships"]:
            assert r["objectId"] in known, r
    for e in doc["events"]:
        assert e["type"] in event_types
        assert WHOLE_DAY.match(e["time"]), e
        for r in e["relationships"]:
            assert r["objectId"] in known, r
    times = [e["time"] for e in doc["events"]]
    assert times == sorted(times)


def objects_of(doc: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in doc["objects"] if o["type"] == type_}


def rel(item: dict[str, Any], qualifier: str) -> list[str]:
    return [r["objectId"] for r in item["relationships"] if r["qualifier"] == qualifier]


def numbers(value: Any) -> list[Any]:
    """Every number in a JSON value (booleans aside)."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, int | float) and not isinstance(value, bool) else []


def handover(client, headers, chain_id: str, **body: Any) -> dict[str, Any]:
    return ok(client.post(f"/chains/{chain_id}/handovers", json=body, headers=headers), 201)


def respond(client, headers, handover_id: str, action: str, **body: Any) -> dict[str, Any]:
    return ok(client.post(f"/handovers/{handover_id}/actions", json={"action": action, **body},
                          headers=headers))


# --- the scenario, through the API ---------------------------------------------------------------


@pytest.fixture
def scenario(client, auth, world, clock) -> dict[str, Any]:
    ki, abh = auth(*KI), auth("ennetal_abh", "clerk")
    sozialamt = auth("hattenberg_sozialamt", "clerk")
    secrets: list[str] = []  # free text that must not leave the database
    common, handovers = [], []
    for i, (family, given) in enumerate(NAMES[:3]):
        person = new_person(client, ki, world.jurisdictions["hattenberg"], family_name=family,
                            given_names=given, birth_date=f"199{i}-02-0{i + 1}")
        clock.advance(hours=7)  # starts cross midnight: times must still be whole days
        chain = started(client, ki, person)
        cid = chain["id"]
        clock.advance(days=1)
        acted(client, sozialamt, cid, "arrival_assignment", "start")
        # A reason may not name the person (it would be refused); free text all the same, which
        # must not reach the export.
        secrets.append(f"Zeugnisübersetzung fehlt, Stapel {'ABC'[i]}-Ordner")
        acted(client, sozialamt, cid, "arrival_assignment", "block", reason=secrets[-1])
        acted(client, sozialamt, cid, "arrival_assignment", "resume")
        acted(client, sozialamt, cid, "arrival_assignment", "complete")
        h = handover(client, ki, cid, kind="step", step_key="residence_permit")
        handovers.append(h)
        clock.advance(days=1)
        if i == 0:
            respond(client, abh, h["id"], "acknowledge")
            # The lead moves: the chain_events reason names both towns.
            moved = handover(client, ki, cid, kind="relocation",
                             to_jurisdiction_id=world.jurisdictions["wittmar"])
            handovers.append(moved)
            respond(client, auth("wittmar_ki", "case_manager"), moved["id"], "acknowledge")
        elif i == 1:
            secrets.append("Zuständigkeit liegt beim Nachbarkreis")
            respond(client, abh, h["id"], "reject", reason=secrets[-1])
        else:
            respond(client, ki, h["id"], "withdraw")
        common.append({"person": person, "chain": chain})

    family, given = NAMES[3]
    person = new_person(client, ki, world.jurisdictions["hattenberg"], family_name=family,
                        given_names=given, birth_date="1985-11-30")
    rare_chain = started(client, ki, person)
    clock.advance(days=1)
    acted(client, sozialamt, rare_chain["id"], "arrival_assignment", "start")
    acted(client, sozialamt, rare_chain["id"], "arrival_assignment", "complete")
    rare_handover = handover(client, ki, rare_chain["id"], kind="step", step_key="residence_permit")
    respond(client, abh, rare_handover["id"], "acknowledge")
    return {"common": common, "handovers": handovers, "rare": {"person": person, "chain": rare_chain},
            "rare_handover": rare_handover, "secrets": secrets}


def export(session_factory, k: int, secret: bytes | None = None):
    with session_factory() as session:
        return export_ocel(session, min_variant_chains=k, secret=secret)


# --- database tests ------------------------------------------------------------------------------


def test_export_from_the_database(scenario, session_factory):
    # One test for both checks, so the scenario is built through the API only once.
    valid_and_without_the_rare_path(scenario, session_factory)
    nothing_personal_and_no_link_across_exports(scenario, session_factory)


def valid_and_without_the_rare_path(scenario, session_factory):
    doc, stats = export(session_factory, 3, SECRET)
    validate(doc)

    chains = objects_of(doc, "chain")
    kept = {pseudonym(SECRET, "chain", uuid.UUID(c["chain"]["id"])) for c in scenario["common"]}
    rare = pseudonym(SECRET, "chain", uuid.UUID(scenario["rare"]["chain"]["id"]))
    assert set(chains) == kept and rare not in json.dumps(doc)
    assert stats == ExportStats(chains_total=4, chains_exported=3, variants_total=2,
                                variants_exported=1, events_exported=len(doc["events"]))
    assert stats.chains_dropped == 1 and stats.variants_dropped == 1
    for c in chains.values():
        assert {a["name"]: a["value"] for a in c["attributes"]} == {
            "template_key": "refugee_recognised", "template_version": 1}

    # Handovers: the three of the kept chains and the relocation; the rare chain's is gone.
    hos = objects_of(doc, "handover")
    assert set(hos) == {pseudonym(SECRET, "handover", uuid.UUID(h["id"])) for h in scenario["handovers"]}
    assert pseudonym(SECRET, "handover", uuid.UUID(scenario["rare_handover"]["id"])) not in hos
    assert sorted(h["attributes"][0]["value"] for h in hos.values()) == ["relocation", "step", "step", "step"]

    # Every exported event is one of a kept chain's or kept handover's rows, and all of them are.
    with session_factory() as session:
        chain_ids = [uuid.UUID(c["chain"]["id"]) for c in scenario["common"]]
        # Assignments of steps to offices are record-scope bookkeeping, not process events.
        n_chain = len(session.scalars(select(ChainEvent.id).where(
            ChainEvent.chain_id.in_(chain_ids), ChainEvent.kind != "step_assigned")).all())
        handover_ids = session.scalars(select(Handover.id).where(Handover.chain_id.in_(chain_ids))).all()
        n_handover = len(session.scalars(select(HandoverEvent.id)
                                         .where(HandoverEvent.handover_id.in_(handover_ids))).all())
    assert len(handover_ids) == 4
    assert len(doc["events"]) == n_chain + n_handover

    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in doc["events"]:
        by_type.setdefault(e["type"], []).append(e)
    assert len(by_type["chain started"]) == 3 and len(by_type["lead moved"]) == 1
    assert len(by_type["step blocked"]) == 3 and len(by_type["step resumed"]) == 3
    assert len(by_type["handover requested"]) == 4
    assert [len(by_type[t]) for t in ("handover acknowledged", "handover rejected",
                                      "handover withdrawn")] == [2, 1, 1]
    kinds = objects_of(doc, "organisation_kind")
    steps = objects_of(doc, "step")
    for e in doc["events"]:
        assert len(rel(e, "chain")) == 1 and rel(e, "chain")[0] in chains
        assert all(s in steps for s in rel(e, "step"))
        assert all(k in kinds for q in ("actor", "sender", "receiver") for k in rel(e, q))
    started_ev = by_type["chain started"][0]
    assert rel(started_ev, "actor") == ["kommunales_integrationszentrum"] and not rel(started_ev, "step")
    blocked = by_type["step blocked"][0]
    assert rel(blocked, "actor") == ["sozialamt"]
    assert rel(blocked, "step") == [step_object_id(rel(blocked, "chain")[0], "arrival_assignment")]
    requested = by_type["handover requested"]
    step_requests = [e for e in requested if rel(e, "step")]
    assert len(step_requests) == 3
    for e in step_requests:
        assert rel(e, "sender") == ["kommunales_integrationszentrum"]
        assert rel(e, "receiver") == ["auslaenderbehoerde"]
        assert len(rel(e, "handover")) == 1 and rel(e, "handover")[0] in hos
    permit = steps[rel(step_requests[0], "step")[0]]
    assert {a["name"]: a["value"] for a in permit["attributes"]} == {
        "step_key": "residence_permit", "owner_kind": "auslaenderbehoerde"}

    # Within a chain the log keeps the real order, though the times are only days.
    for cpid in chains:
        arrival_step = step_object_id(cpid, "arrival_assignment")
        arrival = [e["type"] for e in doc["events"]
                   if rel(e, "chain") == [cpid] and rel(e, "step") == [arrival_step]]
        assert arrival == ["step ready", "step started", "step blocked", "step resumed", "step completed"]

    # No k: every chain; a k above every group: an empty but valid log.
    everything, all_stats = export(session_factory, 1)
    validate(everything)
    assert all_stats.chains_exported == 4 and all_stats.variants_exported == 2
    assert len(objects_of(everything, "handover")) == 5
    nothing, none_stats = export(session_factory, 5)
    validate(nothing)
    assert nothing["objects"] == [] and nothing["events"] == []
    assert none_stats == ExportStats(4, 0, 2, 0, 0)


def nothing_personal_and_no_link_across_exports(scenario, session_factory):
    first, _ = export(session_factory, 1)
    second, _ = export(session_factory, 1)
    text = json.dumps(first, ensure_ascii=False)

    with session_factory() as session:
        organisations = session.execute(select(Organisation.key, Organisation.name)).all()
        jurisdictions = session.execute(select(Jurisdiction.key, Jurisdiction.name)).all()
        users = session.scalars(select(ChainEvent.actor_user).distinct()).all()
        handover_ids = session.scalars(select(Handover.id)).all()
    forbidden = [s for pair in organisations + jurisdictions for s in pair]
    forbidden += users + scenario["secrets"]
    forbidden += [n for pair in NAMES for n in pair]
    for c in scenario["common"] + [scenario["rare"]]:
        forbidden += [c["person"]["id"], c["chain"]["id"], uuid.UUID(c["chain"]["id"]).hex,
                      uuid.UUID(c["person"]["id"]).hex]
    forbidden += [str(h) for h in handover_ids] + [h.hex for h in handover_ids]
    assert len(forbidden) > 50
    leaked = [s for s in forbidden if s in text]
    assert leaked == []
    # Organisation and jurisdiction ids are small integers: the only numbers are template versions.
    assert numbers(first) == [1] * 4

    # Fresh secrets: nothing but the kind keys (not personal, the same by design) is shared.
    def ids(doc):
        return ({o["id"] for o in doc["objects"] if o["type"] != "organisation_kind"}
                | {e["id"] for e in doc["events"]})

    assert ids(first) and not ids(first) & ids(second)
    assert len(first["events"]) == len(second["events"])


# --- the pure builder ----------------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
ORGS = {10: "kommunales_integrationszentrum", 11: "sozialamt", 12: "jobcenter"}


def chain_rows(n: int, start_id: int = 1, version: int = 1) -> tuple[list[ChainRow], list[ChainEventRow]]:
    """``n`` chains along one path: started, arrival ready, started, completed (next day)."""
    chains, events = [], []
    for c in range(start_id, start_id + n):
        chains.append(ChainRow(f"c{c}", "refugee_recognised", version))
        base = c * 100
        events += [
            ChainEventRow(base + 1, f"c{c}", "chain_started", None, None, T0, 10),
            ChainEventRow(base + 2, f"c{c}", "step", "arrival_assignment", "make_ready", T0, 10, "sozialamt"),
            ChainEventRow(base + 3, f"c{c}", "step", "arrival_assignment", "start",
                          T0 + timedelta(hours=3), 11, "sozialamt"),
            ChainEventRow(base + 4, f"c{c}", "step", "arrival_assignment", "complete",
                          T0 + timedelta(days=1, hours=6), 11, "sozialamt"),
        ]
    return chains, events


def test_build_ocel_on_hand_made_rows():
    chains, events = chain_rows(3)
    rare_chains, rare_events = chain_rows(1, start_id=9)
    # The rare chain also blocks its step; its reason never reaches the builder anyway.
    rare_events.append(ChainEventRow(905, "c9", "step", "arrival_assignment", "block",
                                     T0 + timedelta(hours=4), 11, "sozialamt"))
    # Given out of order: the variant follows time, then id, not input order.
    events = list(reversed(events))
    # A chain-level event by an organisation the builder was not told about: no actor relation.
    events.append(ChainEventRow(150, "c1", "chain_closed", None, None,
                                datetime(2026, 3, 4, 1, 30, tzinfo=timezone(timedelta(hours=2))), 99))
    # Rows of a chain the chain query did not see are ignored.
    events.append(ChainEventRow(7001, "ghost", "step", "registration", "start", T0, 11, "buergerbuero"))
    handovers = [
        HandoverRow("h1", "c2", "rechtskreiswechsel", "asylblg_subsistence", "sgb2_application",
                    "sozialamt", "jobcenter", "sozialamt", "jobcenter"),
        HandoverRow("h9", "c9", "step", "residence_permit", None, "kommunales_integrationszentrum",
                    "auslaenderbehoerde", "auslaenderbehoerde"),
    ]
    handover_events = [
        HandoverEventRow(1, "h1", "request", T0 + timedelta(days=1, hours=2)),
        HandoverEventRow(2, "h1", "escalate", T0 + timedelta(days=20)),
        HandoverEventRow(3, "h9", "request", T0),
        HandoverEventRow(4, "nobody", "acknowledge", T0),
    ]
    doc, stats = build_ocel(chains + rare_chains, events + rare_events, handovers, handover_events,
                            ORGS, secret=SECRET, min_variant_chains=3)
    validate(doc)
    assert stats == ExportStats(chains_total=4, chains_exported=3, variants_total=2,
                                variants_exported=1, events_exported=3 * 4 + 1 + 2)

    c1, c2, c9 = (pseudonym(SECRET, "chain", c) for c in ("c1", "c2", "c9"))
    assert re.fullmatch(r"chain:[0-9a-f]{16}", c1)
    ids = {o["id"] for o in doc["objects"]}
    assert c1 in ids and c9 not in ids and pseudonym(SECRET, "handover", "h9") not in ids
    assert not any(r["objectId"] == "auslaenderbehoerde" for e in doc["events"] for r in e["relationships"])
    assert set(objects_of(doc, "organisation_kind")) == {"kommunales_integrationszentrum", "sozialamt",
                                                          "jobcenter"}

    steps = objects_of(doc, "step")
    # c2 has arrival and both steps of its handover; the others only arrival.
    kept = [pseudonym(SECRET, "chain", f"c{i}") for i in (1, 2, 3)]
    assert set(steps) == {step_object_id(c, "arrival_assignment") for c in kept} | {
        step_object_id(c2, "asylblg_subsistence"), step_object_id(c2, "sgb2_application")}
    sgb2 = steps[step_object_id(c2, "sgb2_application")]
    assert sgb2["attributes"] == [
        {"name": "step_key", "time": "1970-01-01T00:00:00Z", "value": "sgb2_application"},
        {"name": "owner_kind", "time": "1970-01-01T00:00:00Z", "value": "jobcenter"}]
    assert rel(sgb2, "chain") == [c2]

    c1_events = [e for e in doc["events"] if rel(e, "chain") == [c1]]
    assert [(e["type"], e["time"]) for e in c1_events] == [
        ("chain started", "2026-03-02T00:00:00Z"),
        ("step ready", "2026-03-02T00:00:00Z"),
        ("step started", "2026-03-02T00:00:00Z"),
        ("step completed", "2026-03-03T00:00:00Z"),
        # 01:30 at UTC+2 is 23:30 UTC the day before.
        ("chain closed", "2026-03-03T00:00:00Z"),
    ]
    assert c1_events[0]["id"] == pseudonym(SECRET, "event", "chain_event/101")
    assert rel(c1_events[0], "actor") == ["kommunales_integrationszentrum"]
    assert rel(c1_events[3], "actor") == ["sozialamt"] and rel(c1_events[4], "actor") == []

    h1 = [e for e in doc["events"] if rel(e, "handover")]
    assert [(e["type"], e["time"]) for e in h1] == [("handover requested", "2026-03-03T00:00:00Z"),
                                                    ("handover escalated", "2026-03-22T00:00:00Z")]
    assert {r["qualifier"]: r["objectId"] for r in h1[0]["relationships"]} == {
        "handover": pseudonym(SECRET, "handover", "h1"), "chain": c2,
        "step": step_object_id(c2, "asylblg_subsistence"),
        "to step": step_object_id(c2, "sgb2_application"),
        "sender": "sozialamt", "receiver": "jobcenter"}

    # Within a day, chains are listed by pseudonym, each in its own order.
    day_one = [rel(e, "chain")[0] for e in doc["events"] if e["time"] == "2026-03-02T00:00:00Z"]
    assert day_one == sorted(day_one)


def test_template_version_splits_a_variant_and_sizes_are_counted_per_variant():
    v1, e1 = chain_rows(2, start_id=1, version=1)
    v2, e2 = chain_rows(2, start_id=3, version=2)
    doc, stats = build_ocel(v1 + v2, e1 + e2, [], [], ORGS, secret=SECRET, min_variant_chains=3)
    assert stats == ExportStats(4, 0, 2, 0, 0) and doc["objects"] == []
    doc, stats = build_ocel(v1 + v2, e1 + e2, [], [], ORGS, secret=SECRET, min_variant_chains=2)
    assert stats == ExportStats(4, 4, 2, 2, 16)
    validate(doc)


def test_secrets_rotate_ids_and_bad_input_is_refused():
    chains, events = chain_rows(3)
    a, _ = build_ocel(chains, events, [], [], ORGS, secret=SECRET, min_variant_chains=1)
    b, _ = build_ocel(chains, events, [], [], ORGS, secret=bytes(32), min_variant_chains=1)
    assert [e["type"] for e in a["events"]] and not (
        {o["id"] for o in a["objects"] if o["type"] != "organisation_kind"} | {e["id"] for e in a["events"]}
    ) & ({o["id"] for o in b["objects"]} | {e["id"] for e in b["events"]})
    with pytest.raises(ValueError, match="secret"):
        build_ocel(chains, events, [], [], ORGS, secret=b"short", min_variant_chains=1)
    with pytest.raises(ValueError, match="min_variant_chains"):
        build_ocel(chains, events, [], [], ORGS, secret=SECRET, min_variant_chains=0)
    odd = [*events, ChainEventRow(999, "c1", "step", "arrival_assignment", "teleport", T0, 11)]
    with pytest.raises(ValueError, match="teleport"):
        build_ocel(chains, odd, [], [], ORGS, secret=SECRET, min_variant_chains=1)
