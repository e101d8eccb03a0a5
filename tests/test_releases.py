"""Releases of the steering report: what the Lenkungsgruppe reads, and an attacker who holds every
release and the goal rules.

The data is small and hand-built: persons in three towns of the Kreis discussed in
Fallkonferenzen of 2026-Q1 and 2026-Q2 (the conference table is quarter x town, with the Kreis
total), so that the suppression patterns are known in advance:

* Wittmar 2 (primary), Hattenberg 6, Sprockede 9: the complementary cell of Wittmar is Hattenberg.
* After late entries (four more Hattenberg persons discussed in another 2026-Q1 conference),
  Hattenberg 10: protected afresh, the complementary cell would be Sprockede, and an attacker
  holding both patterns works Wittmar out (11 - 9 = 2). A re-release chosen together with the
  first one does not give it away.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest
from http_helpers import ok, problem
from sqlalchemy import text
from starlette.responses import JSONResponse
from test_conferences_api import LG
from test_audit_checkpoints import cli  # noqa: F401  (the fixture)
from test_process_log import old_stored_form
from test_steering_report import Kreis, session  # noqa: F401  (the fixture)

from casemgmt.steering import disclosure, eventlog
from casemgmt.steering.releases import (
    SteeringRelease,
    _cell_of,
    due_quarters,
    latest_edition,
    normalise_quarter,
    relations_of,
    union_disclosures,
)
from casemgmt.steering.report import Period, Protection, build_report, resolve_area

K = 5
Q1_CONFERENCE = datetime(2026, 2, 10, 9, tzinfo=UTC)
Q2_CONFERENCE = datetime(2026, 5, 12, 9, tzinfo=UTC)
Q1_DUE = datetime(2026, 7, 1, 8, tzinfo=UTC)  # 2026-Q1 ended 2026-03-31, + 60 days
Q2_DUE = datetime(2026, 9, 1, 8, tzinfo=UTC)


def test_due_quarters_and_quarter_names():
    assert due_quarters("2025-Q4", datetime(2026, 5, 30, 0, tzinfo=UTC), 60) == ["2025-Q4"]
    assert due_quarters("2025-Q4", datetime(2026, 5, 31, 0, tzinfo=UTC), 60) == ["2025-Q4", "2026-Q1"]
    assert due_quarters("2026-Q3", datetime(2026, 5, 31, tzinfo=UTC), 60) == []
    assert normalise_quarter("2026q3") == normalise_quarter("2026-Q3") == "2026-Q3"
    p = Period.of("2026-Q2")  # German local time: the quarter starts at 22:00 UTC the day before
    assert (p.start.isoformat(), p.end.isoformat()) == ("2026-03-31T22:00:00+00:00", "2026-06-30T22:00:00+00:00")


def _town_persons(kreis: Kreis, counts: dict[str, int]):
    cases = []
    for town, n in counts.items():
        cases += kreis.add_persons(n, towns=[town], weights=[1], templates=["young_adult"])
    return cases


def _conference_cells(document) -> dict[str, int | None]:
    table = next(t for t in document["tables"] if t["key"] == "conference_persons")
    return {c["town"]: c["value"] for c in table["cells"] if c["quarter"] == "2026-Q1"}


def test_releases_are_numbered_stored_served_and_immutable(client, auth, clock, session, catalog, privacy, policies,
                                                            world, release, session_factory, owner_db):
    kreis = Kreis(session, catalog, privacy, policies, world, random.Random(11))
    kreis.conference(Q1_CONFERENCE, _town_persons(kreis, {"wittmar": 2, "hattenberg": 6, "sprockede": 9}), 0)
    clock.now = Q1_DUE
    problem(client.get("/reports/steering", headers=auth(*LG)), 404, "no-release")
    # Not due yet: refused, nothing stored.
    with pytest.raises(Exception) as refused:
        release("2026-Q2", Q1_DUE, area="kreis_ennetal")
    assert refused.value.slug == "period-not-closed"
    [(number, area_id)] = release("2026-Q1", Q1_DUE, area="kreis_ennetal")
    assert area_id == world.jurisdictions["kreis_ennetal"]
    with pytest.raises(Exception) as again:
        release("2026-Q1", Q1_DUE, area="kreis_ennetal")
    assert again.value.slug == "release-exists"

    served = ok(client.get("/reports/steering", headers=auth(*LG)))
    assert served["release"]["number"] == number and served["period"]["key"] == "2026-Q1"
    assert _conference_cells(served) == {"wittmar": None, "hattenberg": None, "sprockede": 9, "_total": 17,
                                         **{t: 0 for t in ("ennerich", "gevelstein", "herdeck", "schwelbach",
                                                           "wetterau_ruhr", "breckenfeld")}}
    listed = ok(client.get("/reports/steering/releases", headers=auth(*LG)))
    assert [r["number"] for r in listed] == [number] and listed[0]["period_title"] == "1. Quartal 2026"
    assert ok(client.get(f"/reports/steering/releases/{number}", headers=auth(*LG))) == served
    problem(client.get("/reports/steering/releases/999", headers=auth(*LG)), 404, "not-found")

    # Served from storage: more data afterwards changes nothing that was released.
    kreis.conference(Q1_CONFERENCE, _town_persons(kreis, {"hattenberg": 4}), 0)
    assert ok(client.get("/reports/steering", headers=auth(*LG))) == served
    # The pattern and the true values are stored, never served.
    assert "pattern" not in str(served.keys()) and "truth" not in served
    with session_factory() as s:
        row = s.get(SteeringRelease, number)
        assert _cell_of("conference_persons\x1f2026-Q1\x1fwittmar") in {_cell_of(c) for c in row.pattern["suppressed"]}
        assert row.pattern["truth"]["conference_persons\x1f2026-Q1\x1fwittmar"] == 2
    # The table refuses changes, even from the schema owner.
    with owner_db.begin() as conn, pytest.raises(Exception, match="append-only|not allowed|refuse"):
        conn.execute(text("UPDATE steering_releases SET k = 3"))


def test_an_attacker_with_every_release_and_the_goal_rules_recovers_nothing(
        client, auth, clock, session, catalog, privacy, policies, world, release, session_factory):
    kreis = Kreis(session, catalog, privacy, policies, world, random.Random(12))
    cases = _town_persons(kreis, {"wittmar": 2, "hattenberg": 6, "sprockede": 9})
    kreis.conference(Q1_CONFERENCE, cases, 2)
    later = _town_persons(kreis, {"wittmar": 7, "hattenberg": 1, "herdeck": 3})
    kreis.conference(Q2_CONFERENCE, cases[:5] + later, 2)
    release("2026-Q1", Q1_DUE, area="kreis_ennetal")
    release("2026-Q2", Q2_DUE, area="kreis_ennetal")
    clock.now = Q2_DUE
    numbers = [r["number"] for r in ok(client.get("/reports/steering/releases", headers=auth(*LG)))]
    documents = [ok(client.get(f"/reports/steering/releases/{n}", headers=auth(*LG))) for n in numbers]
    q1, q2 = sorted(documents, key=lambda d: d["period"]["key"])
    # A release holds only its own quarter: the clock rule (a 2026-Q1 clock is decided 28 or
    # 56 days after it started) tells the attacker that a 2026-Q1 cell is the same in every
    # later release, so no later release shows one.
    for table in q2["tables"]:
        for cell in table["cells"]:
            assert cell.get("quarter") in (None, "2026-Q2", "_total"), (table["key"], cell)
    # The attacker: every published value and relation of both releases, the clock rule as
    # equations between cells that appear in both (there are none), told which cells are primary.
    published, relations = {}, []
    truth: dict = {}
    with session_factory() as s:
        for doc in documents:
            p, r = relations_of(doc, doc["release"]["number"])
            published |= p
            relations += r
            row = s.get(SteeringRelease, doc["release"]["number"])
            truth |= {(doc["release"]["number"], *_cell_of(c)): v for c, v in row.pattern["truth"].items()}
    # (Tables without a quarter, like the barriers, count each release's own quarter: the same
    # labels in two releases are different quantities.)
    shared = {c[1:] for c in published if c[0] == numbers[0] and any("-Q" in label for label in c[2])} & {
        c[1:] for c in published if c[0] == numbers[1]}
    relations += [disclosure.Relation((numbers[1], *c), ((numbers[0], *c),)) for c in shared]
    assert any(v is None for v in published.values()), "the data should need suppression"
    primary = [c for c, v in published.items() if v is None and 0 < truth[c] < K]
    bounds = disclosure.attack(published, relations, K, primary=primary, witness={c: truth[c] for c in published})
    for cell, b in bounds.items():
        assert b.low <= truth[cell] and (b.high is None or truth[cell] <= b.high)  # sound
    assert not disclosure.disclosed(bounds), disclosure.disclosed(bounds)
    # Wittmar's 2 in 2026-Q1 stays hidden in both releases.
    assert _conference_cells(q1)["wittmar"] is None


def test_a_re_release_is_protected_together_with_the_earlier_one(clock, session, catalog, privacy, policies, world,
                                                                 release, session_factory):
    kreis = Kreis(session, catalog, privacy, policies, world, random.Random(13))
    kreis.conference(Q1_CONFERENCE, _town_persons(kreis, {"wittmar": 2, "hattenberg": 6, "sprockede": 9}), 0)
    [(first, _)] = release("2026-Q1", Q1_DUE, area="kreis_ennetal")
    # Late entries: four more Hattenberg persons were discussed in 2026-Q1.
    kreis.conference(Q1_CONFERENCE, _town_persons(kreis, {"hattenberg": 4}), 0)
    area_id = world.jurisdictions["kreis_ennetal"]
    with session_factory() as s:
        earlier = latest_edition(s, area_id, "2026-Q1")
        before = {"document": earlier.document, "k": K,
                  "truth": {_cell_of(c): v for c, v in earlier.pattern["truth"].items()}}
        # Protected afresh, as a live report would be, the new pattern gives Wittmar away.
        fresh = Protection(K, policies.steering.merge_towns)
        naive = build_report(s, policies.steering, policies.goals, resolve_area(s, area_id), Q1_DUE,
                             period="2026-Q1", protection=fresh)
        assert _conference_cells(naive)["sprockede"] is None and _conference_cells(naive)["hattenberg"] == 10
        exposed = union_disclosures(before, {"document": naive, "truth": fresh.truth, "k": K})
        assert ("a", "conference_persons", ("2026-Q1", "wittmar")) in exposed
        assert exposed[("a", "conference_persons", ("2026-Q1", "wittmar"))].low == 2
    [(second, _)] = release("2026-Q1", Q1_DUE, area="kreis_ennetal", again=True)
    with session_factory() as s:
        row = s.get(SteeringRelease, second)
        assert (row.edition, row.revises, row.document["release"]["revises"]) == (2, first, first)
        # Everything the first release suppressed stays suppressed ...
        assert set(before_suppressed := s.get(SteeringRelease, first).pattern["suppressed"]) <= set(row.pattern["suppressed"])
        assert before_suppressed
        # ... and the attacker holding both pins nothing.
        after = {"document": row.document, "k": K, "truth": {_cell_of(c): v for c, v in row.pattern["truth"].items()}}
        assert union_disclosures(before, after) == {}
        assert _conference_cells(row.document)["wittmar"] is None


def test_each_chain_is_in_the_export_of_the_quarter_it_ended_in(client, auth, clock, session, catalog, privacy,
                                                               policies, world, release, tmp_path, session_factory):
    """Six chains that ended in 2026-Q1 and one in 2026-Q2: the Q1 release's log holds the six
    (at least k share their trace), the Q2 release's log is empty and still loads; no chain is
    in both, so the two exports cannot be joined."""
    from casemgmt.chains import service as chains

    kreis = Kreis(session, catalog, privacy, policies, world, random.Random(14))
    cases = _town_persons(kreis, {"wittmar": 7})
    for i, case in enumerate(cases):
        ended = datetime(2026, 3, 20, 9, tzinfo=UTC) if i < 6 else datetime(2026, 4, 20, 9, tzinfo=UTC)
        ended = max(ended, case.started_at + (Q1_CONFERENCE - Q1_CONFERENCE.replace(day=1)))
        chains.close_chain(session, catalog, kreis.cm, case.chain_id, "moved_away", None, None, ended, privacy=privacy)
    ended_q1 = sum(1 for c in cases if Period.of("2026-Q1").start <= _closed_at(session, c) < Period.of("2026-Q1").end)
    release("2026-Q1", Q2_DUE, area="kreis_ennetal")
    release("2026-Q2", Q2_DUE, area="kreis_ennetal")
    clock.now = Q2_DUE
    numbers = sorted(r["number"] for r in ok(client.get("/reports/steering/releases", headers=auth(*LG))))
    logs = [ok(client.get(f"/exports/releases/{n}/ocel", headers=auth(*LG))) for n in numbers]
    chain_ids = [{o["id"] for o in doc["objects"] if o["type"] == "Kette"} for doc in logs]
    meta = [{a["name"]: a["value"] for a in next(o for o in doc["objects"] if o["type"] == "Export")["attributes"]}
            for doc in logs]
    assert [int(m["Ketten insgesamt"]) for m in meta] == [ended_q1, len(cases) - ended_q1]
    assert len(chain_ids[0]) == (ended_q1 if ended_q1 >= K else 0)
    assert not chain_ids[0] & chain_ids[1]
    xes = client.get(f"/exports/releases/{numbers[0]}/xes", headers=auth(*LG))
    assert xes.status_code == 200 and xes.headers["content-type"].startswith("application/xml")
    assert ok(client.get("/exports/ocel", headers=auth(*LG))) == logs[1]  # the latest release
    # The page of the first release draws the directly-follows graph of its ended chains.
    page = client.get(f"/reports/steering/releases/{numbers[0]}.html", headers=auth(*LG)).text
    assert "Prozessverlauf" in page and ("marker-end" in page or ended_q1 < K)
    # Streamed, the same bytes as the whole document; the stored form keeps each published trace
    # once, and a release stored before (one entry per chain) is served the same way.
    with session_factory() as s:
        row = s.get(SteeringRelease, numbers[0])
        stored, meta_of = row.event_log, {"number": row.number, "period": row.period}
        log = eventlog.PublishedLog.from_dict(stored)
        assert set(stored) >= {"variants"} and all(len(v["ids"]) >= K for v in stored["variants"])
        old_number = numbers[-1] + 1
        s.add(SteeringRelease(number=old_number, area_jurisdiction_id=row.area_jurisdiction_id, period="2025-Q4",
                              edition=1, revises=None, released_at=row.released_at, k=row.k, document=row.document,
                              pattern=row.pattern, event_log=old_stored_form(log)))
        s.commit()
    served = client.get(f"/exports/releases/{numbers[0]}/ocel", headers=auth(*LG))
    assert served.content == JSONResponse(eventlog.to_ocel(log, meta_of)).body
    assert served.headers["content-type"] == "application/json"
    assert xes.content == eventlog.to_xes(log, meta_of)
    old_meta = {"number": old_number, "period": "2025-Q4"}
    assert client.get(f"/exports/releases/{old_number}/ocel", headers=auth(*LG)).content == JSONResponse(
        eventlog.to_ocel(log, old_meta)).body
    assert client.get(f"/exports/releases/{old_number}/xes", headers=auth(*LG)).content == eventlog.to_xes(log, old_meta)
    for form in ("ocel", "xes"):  # refused before the first byte, as problem+json
        problem(client.get(f"/exports/releases/{old_number + 1}/{form}", headers=auth(*LG)), 404, "not-found")
    with session_factory() as s:  # every streamed export audited, none of the refused ones
        audited = s.execute(text("SELECT subtype, detail FROM audit_events WHERE entity_type = 'release' "
                                 "AND entity_id = :n"), {"n": str(old_number)}).all()
        assert sorted(audited) == [("export.ocel", "ocel"), ("export.xes", "xes")]
        assert not s.execute(text("SELECT 1 FROM audit_events WHERE entity_id = :n"), {"n": str(old_number + 1)}).all()
    pm4py = pytest.importorskip("pm4py", reason="PM4Py (test-only) is not installed")
    for n, doc in zip(numbers, logs):
        (tmp_path / f"{n}.jsonocel").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        ocel = pm4py.read_ocel2_json(str(tmp_path / f"{n}.jsonocel"))
        assert len(ocel.objects[ocel.objects["ocel:type"] == "Kette"]) == len(chain_ids[numbers.index(n)])
        (tmp_path / f"{n}.xes").write_bytes(client.get(f"/exports/releases/{n}/xes", headers=auth(*LG)).content)
        pm4py.read_xes(str(tmp_path / f"{n}.xes"), return_legacy_log_object=False, show_progress_bar=False)


def _closed_at(session, case) -> datetime:
    from casemgmt.chains.models import Chain

    session.expire_all()
    return session.get(Chain, case.chain_id).closed_at


def test_small_towns_merge_with_their_neighbour_rather_than_being_dropped(policies):
    """Four towns with one person each (and k = 5) cannot be shown apart: the attacker knows the
    total is at most 4 and each town at least 1. With the neighbours of policies/steering.yaml
    (Breckenfeld and Herdeck with Wetterau (Ruhr), Sprockede with Hattenberg) two units of two
    remain, which suppression protects."""
    from casemgmt.steering.report import Protection, _town_table

    towns = ["breckenfeld", "ennerich", "gevelstein", "hattenberg", "herdeck", "schwelbach", "sprockede",
             "wetterau_ruhr", "wittmar"]
    counts = {"breckenfeld": 1, "herdeck": 1, "sprockede": 1, "hattenberg": 1}
    alone = Protection(K, {})
    values, done = _town_table(("t", "x"), towns, counts, alone, "t", ("x",))
    assert done == "dropped" and values == {"_total": None}
    merged = Protection(K, policies.steering.merge_towns)
    values, done = _town_table(("t", "x"), towns, counts, merged, "t", ("x",))
    assert done == "merged"
    assert values["wetterau_ruhr+breckenfeld+herdeck"] is None and values["hattenberg+sprockede"] is None
    assert values["wittmar"] == 0 and values["_total"] is None
    published = {("t", (u,)): v for u, v in values.items()}
    relations = [disclosure.Relation(("t", ("_total",)), tuple(("t", (u,)) for u in values if u != "_total"))]
    assert not disclosure.disclosed(disclosure.attack(published, relations, K))


def test_report_release_command(cli, db, world):
    """`casemgmt report release`: every due quarter once, a given quarter, refusals with exit 1."""
    kreis = str(world.jurisdictions["kreis_ennetal"])
    code, out, err = cli("report", "release", "--quarter", "2025q3", "--area", kreis)
    assert code == 0 and "2025-Q3 for Kreis Ennetal" in out and "process log: 0 of 0 chains" in out, (out, err)
    code, out, err = cli("report", "release", "--quarter", "2025Q3", "--area", kreis)
    assert code == 1 and "already released" in err
    code, out, err = cli("report", "release", "--quarter", "2099Q1")
    assert code == 1 and "can be released from 2099-05-30 on" in err
    code, out, err = cli("report", "release", "--quarter", "2026-13")
    assert code == 1 and "not a quarter" in err
    code, out, _ = cli("report", "release", "--area", kreis)  # every due quarter from releases.first_quarter
    assert code == 0 and "2025-Q1 for Kreis Ennetal" in out and "2025-Q3" not in out
    code, out, _ = cli("report", "release", "--area", kreis)
    assert code == 0 and "nothing due" in out
