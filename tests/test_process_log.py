"""The process-mining log of a release (casemgmt.steering.eventlog): no chain can be singled out,
most chains survive, the activities say what happened in German, and analysts' tools load it.

The pure tests feed hand-made chain histories; hypothesis draws small random ones. The loading
tests use PM4Py (a test-only tool: AGPL, never imported by casemgmt/) on the OCEL 2.0 JSON and
the XES renderings, including an empty log. tests/data/README.md says which schemas are used.
"""

from __future__ import annotations

import io
import json
import random
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from starlette.responses import JSONResponse

from casemgmt.steering import eventlog
from casemgmt.steering.eventlog import CHAIN_BEGUN, OTHER_STEP, OTHER_TEMPLATE, ChainHistory, Milestone

SCHEMA = json.loads((Path(__file__).parent / "data" / "ocel2-json.schema.json").read_text())
K = 5
RELEASE = {"number": 7, "period": "2026-Q3"}

# Two invented templates with a main path and optional steps (activity, kind, rank).
PATHS = {
    "Geflüchtete mit Anerkennung": [
        ("Ankunft in der Kommune", "Sozialamt"), ("Beim Bürgerbüro angemeldet", "Bürgerbüro"),
        ("Erstgespräch geführt", "Case Management"), ("Aufenthaltserlaubnis erteilt", "Ausländerbehörde"),
        ("SGB-II-Antrag gestellt", "Jobcenter"), ("Integrationskurs begonnen", "Sprachkursträger"),
        ("Integrationskurs abgeschlossen", "Sprachkursträger"), ("Kette abgeschlossen", "Case Management")],
    "EU-Neuzugewanderte": [
        ("Erstgespräch geführt", "Case Management"), ("Beim Bürgerbüro angemeldet", "Bürgerbüro"),
        ("Sprachkurs begonnen", "Sprachkursträger"), ("Arbeit aufgenommen", "Agentur für Arbeit"),
        ("Kette abgeschlossen", "Case Management")],
}
OPTIONAL = [("Kita-Platz erhalten", "Kita-Träger"), ("Erstuntersuchung erfolgt", "Gesundheitsamt"),
            ("Abschluss anerkannt", "Anerkennungsstelle")]


def history(rng: random.Random, template: str, *, length: int | None = None, rare: str | None = None) -> ChainHistory:
    path = PATHS[template][:length] if length else PATHS[template]
    day, milestones = 0, [Milestone(CHAIN_BEGUN, "Case Management", 0, 0)]
    for rank, (activity, kind) in enumerate(path, 1):
        day += rng.randint(1, 30)
        milestones.append(Milestone(activity, kind, day, rank))
        if rng.random() < 0.3:
            optional, okind = rng.choice(OPTIONAL)
            milestones.append(Milestone(optional, okind, day + rng.randint(0, 9), 50 + OPTIONAL.index((optional, okind))))
    if rare:
        milestones.append(Milestone(rare, "Jugendamt", day + 3, 90))
    return ChainHistory(template, tuple(milestones))


def check_guarantee(log: eventlog.PublishedLog, histories, k: int) -> None:
    """Every published trace, activities and weeks and Kettenart, is shared by at least k chains;
    every chain starts in week 0; activities fewer than k chains reached are not published."""
    traces = Counter((t.template, t.events) for t in log.traces)
    assert all(n >= k for n in traces.values()), traces
    for trace in log.traces:
        assert trace.events[0] == eventlog.PublishedEvent(CHAIN_BEGUN, "Case Management", 0)
        weeks = [e.week for e in trace.events]
        assert weeks == sorted(weeks)
    reach = Counter(a for h in histories for a in {m.activity for m in h.milestones})
    published = {e.activity for t in log.traces for e in t.events}
    assert all(reach[a] >= k for a in published - {OTHER_STEP}), published
    ids = [t.id for t in log.traces]
    assert len(set(ids)) == len(ids)
    s = log.stats
    assert s.chains_published == len(log.traces) and s.events_published == sum(len(t.events) for t in log.traces)
    assert s.chains_total == len(histories) and s.events_total == sum(len(h.milestones) for h in histories)


def test_most_chains_survive_with_their_common_path():
    rng = random.Random(3)
    histories = ([history(rng, "Geflüchtete mit Anerkennung") for _ in range(23)]
                 + [history(rng, "Geflüchtete mit Anerkennung", length=4) for _ in range(6)]
                 + [history(rng, "EU-Neuzugewanderte") for _ in range(12)]
                 + [history(rng, "EU-Neuzugewanderte", rare="Vormundschaft bestellt")]
                 + [history(rng, "EU-Neuzugewanderte", length=2) for _ in range(2)])
    log = eventlog.generalise(histories, K)
    check_guarantee(log, histories, K)
    assert log.stats.share_published >= 0.9
    # The main path of each template survives for most chains, in its order.
    main = [e.activity for e in max(log.traces, key=lambda t: len(t.events)).events]
    assert main[:3] == [CHAIN_BEGUN, "Ankunft in der Kommune", "Beim Bürgerbüro angemeldet"]
    assert "Vormundschaft bestellt" not in {e.activity for t in log.traces for e in t.events}  # one chain only
    assert log.stats.activities_merged == 1
    assert log.stats.events_published >= 0.6 * log.stats.events_total


def test_a_template_of_fewer_than_k_chains_is_merged_and_nothing_unique_remains():
    rng = random.Random(4)
    histories = [history(rng, "Geflüchtete mit Anerkennung") for _ in range(7)]
    histories += [history(rng, "EU-Neuzugewanderte") for _ in range(3)]
    log = eventlog.generalise(histories, K)
    check_guarantee(log, histories, K)
    # Three EU newcomers are too few for "Sonstige Kettenart": the refugees join them.
    assert log.stats.templates_merged == 2 and log.stats.chains_published == 10
    assert {t.template for t in log.traces} == {OTHER_TEMPLATE}
    more = histories + [history(rng, "Geflüchtete mit Anerkennung") for _ in range(3)] + [
        history(rng, "EU-Neuzugewanderte") for _ in range(2)]
    log = eventlog.generalise(more, K)
    check_guarantee(log, more, K)
    assert {t.template for t in log.traces} == {"Geflüchtete mit Anerkennung", "EU-Neuzugewanderte"}
    assert eventlog.generalise(histories[:4], K).traces == ()  # fewer than k chains in all


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(PATHS)), st.integers(1, 8), st.integers(0, 10**6)),
                max_size=30), st.integers(2, 6))
def test_generalisation_never_publishes_a_trace_of_fewer_than_k_chains(drawn, k):
    histories = [history(random.Random(seed), template, length=length) for template, length, seed in drawn]
    log = eventlog.generalise(histories, k)
    check_guarantee(log, histories, k)
    if len(histories) >= k:
        assert log.stats.chains_published == len(histories)  # chains are generalised, not dropped


def test_two_releases_share_no_id():
    rng = random.Random(5)
    histories = [history(rng, "EU-Neuzugewanderte") for _ in range(10)]
    a, b = eventlog.generalise(histories, K), eventlog.generalise(histories, K)
    assert not {t.id for t in a.traces} & {t.id for t in b.traces}


# --- renderings and tools ------------------------------------------------------------------------


def validate_ocel(doc) -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(doc)
    ids = [o["id"] for o in doc["objects"]]
    assert len(set(ids)) == len(ids)
    declared = {t["name"]: {a["name"]: a["type"] for a in t["attributes"]} for t in doc["objectTypes"]}
    events = {t["name"] for t in doc["eventTypes"]}
    for o in doc["objects"]:
        for a in o["attributes"]:
            # Values are typed by the declaration, written as text the declared type parses.
            kind = declared[o["type"]][a["name"]]
            {"integer": int, "float": float, "string": str}[kind](a["value"])
            assert isinstance(a["value"], str)
    for e in doc["events"]:
        assert e["type"] in events
        assert all(r["objectId"] in ids for r in e["relationships"])


def pm4py_quiet():
    warnings.filterwarnings("ignore")
    return pytest.importorskip("pm4py", reason="PM4Py (test-only) is not installed")


def test_ocel_and_xes_of_a_log_and_of_an_empty_log_load_in_pm4py(tmp_path):
    pm4py = pm4py_quiet()
    rng = random.Random(6)
    histories = [history(rng, "Geflüchtete mit Anerkennung") for _ in range(15)]
    histories += [history(rng, "EU-Neuzugewanderte") for _ in range(10)]
    for log in (eventlog.generalise(histories, K), eventlog.generalise([], K)):
        doc = eventlog.to_ocel(log, RELEASE)
        validate_ocel(doc)
        # What the endpoints send: the stored form, streamed.
        stored = json.loads(json.dumps(log.as_dict()))
        (tmp_path / "log.jsonocel").write_bytes(b"".join(eventlog.ocel_chunks(stored, RELEASE)))
        ocel = pm4py.read_ocel2_json(str(tmp_path / "log.jsonocel"))
        chains = ocel.objects[ocel.objects["ocel:type"] == "Kette"]
        assert len(chains) == log.stats.chains_published
        # The chains' events, and the one event of the Export object that carries the metadata.
        assert len(ocel.events) == log.stats.events_published + 1
        meta = ocel.objects[ocel.objects["ocel:type"] == "Export"]
        assert int(meta["Ketten veröffentlicht"].iloc[0]) == log.stats.chains_published
        assert int(meta["Ereignisse entfernt"].iloc[0]) == log.stats.events_total - log.stats.events_published

        xes = b"".join(eventlog.xes_chunks(stored, RELEASE))
        etree.fromstring(xes)  # well-formed
        (tmp_path / "log.xes").write_bytes(xes)
        frame = pm4py.read_xes(str(tmp_path / "log.xes"), return_legacy_log_object=False, show_progress_bar=False)
        if log.traces:
            assert frame["case:concept:name"].nunique() == log.stats.chains_published
            assert set(frame["concept:name"]) == {e.activity for t in log.traces for e in t.events}
            net, im, fm = pm4py.discover_petri_net_inductive(frame)
            labels = {t.label for t in net.transitions if t.label}
            # A model a person can read: German activity names, no keys.
            assert "Aufenthaltserlaubnis erteilt" in labels and not any("_" in label for label in labels)
        else:
            assert len(frame) == 0


def test_xes_has_the_standard_extensions_and_metadata():
    rng = random.Random(8)
    log = eventlog.generalise([history(rng, "EU-Neuzugewanderte") for _ in range(6)], K)
    root = etree.parse(io.BytesIO(eventlog.to_xes(log, RELEASE))).getroot()
    ns = {"x": "http://www.xes-standard.org/"}
    assert {e.get("prefix") for e in root.findall("x:extension", ns)} == {"concept", "time", "org", "lifecycle"}
    meta = {e.get("key"): e.get("value") for e in root if e.tag.endswith(("int", "float", "string")) and e.get("key")}
    assert meta["Ketten veröffentlicht"] == "6" and meta["Veröffentlichung"] == "7"
    traces = root.findall("x:trace", ns)
    assert len(traces) == 6
    first = traces[0].find("x:event", ns)
    keys = {a.get("key"): a.get("value") for a in first}
    assert keys["concept:name"] == CHAIN_BEGUN and keys["time:timestamp"] == "2000-01-03T00:00:00Z"
    assert datetime.fromisoformat(keys["time:timestamp"].replace("Z", "+00:00")) == eventlog.EPOCH.astimezone(UTC)


# --- the stored form and the streamed renderings ---------------------------------------------------


def old_stored_form(log: eventlog.PublishedLog) -> dict:
    """How releases stored their log before variants: one entry per chain."""
    return {"activities": list(log.activities), "kinds": list(log.kinds), "stats": log.stats.as_dict(),
            "traces": [{"id": t.id, "template": t.template, "events": [[e.activity, e.kind, e.week] for e in t.events]}
                       for t in log.traces]}


def hand_made_log() -> eventlog.PublishedLog:
    """Names that need escaping in JSON and XML, a character of the private use area, events of
    one chain in the same week and out of week order, a chain without events, and variants whose
    chains interleave in pseudonym order (the order a log keeps its chains in, as ``generalise``
    gives them): the streamed renderings must still equal the whole ones."""
    odd = ('Antrag "dringend" & <eilig> \\ erledigt', "Träger \ue000 Süd", 3)
    e1, e2 = eventlog.PublishedEvent(odd[0], odd[1], 0), eventlog.PublishedEvent("Kette begonnen", "Case Management", 0)
    e3, e4 = eventlog.PublishedEvent("Arbeit aufgenommen", "Jobcenter", 5), eventlog.PublishedEvent("Kurs", "Träger", 2)
    shared = (e2, e1, e4, e3)
    traces = (eventlog.PublishedTrace("kette-0", "Ü-Art", ()),
              eventlog.PublishedTrace("kette-a", "Kettenart \"A\"", shared),
              eventlog.PublishedTrace("kette-b", "Ü-Art", (e3, e2)),
              eventlog.PublishedTrace("kette-c", "Kettenart \"A\"", shared),
              eventlog.PublishedTrace("kette-d", "Kettenart \"A\"", (e2, e1, e4, e3)))
    stats = eventlog.LogStats(2, 6, 5, 1, 14, 10, 1, 0, 3)
    return eventlog.PublishedLog(traces, stats, ("Kette begonnen", odd[0], "Kurs", "Arbeit aufgenommen"),
                                 ("Case Management", "Jobcenter", odd[1], "Träger"))


def generalised_log(seed: int, n: int = 40) -> eventlog.PublishedLog:
    rng = random.Random(seed)
    return eventlog.generalise([history(rng, rng.choice(sorted(PATHS))) for _ in range(n)], K)


@pytest.mark.parametrize("make", [hand_made_log, lambda: generalised_log(9), lambda: generalised_log(10, 3)],
                         ids=["hand-made", "generalised", "empty"])
def test_the_streamed_renderings_are_the_whole_documents_byte_for_byte(make):
    """What the endpoints stream, from a release stored now, from one stored before, and from the
    log itself, is what the whole document served as JSONResponse (OCEL) or as bytes (XES) was."""
    log = make()
    whole_ocel, whole_xes = JSONResponse(eventlog.to_ocel(log, RELEASE)).body, eventlog.to_xes(log, RELEASE)
    stored = json.loads(json.dumps(log.as_dict()))
    for source in (log, stored, json.loads(json.dumps(old_stored_form(log)))):
        chunks = list(eventlog.ocel_chunks(source, RELEASE))
        assert b"".join(chunks) == whole_ocel
        assert b"".join(eventlog.xes_chunks(source, RELEASE)) == whole_xes
    assert json.loads(whole_ocel) == eventlog.to_ocel(log, RELEASE)
    validate_ocel(json.loads(b"".join(eventlog.ocel_chunks(stored, RELEASE))))
    etree.fromstring(b"".join(eventlog.xes_chunks(stored, RELEASE)))


def test_a_large_log_is_streamed_in_many_chunks_and_still_equal():
    log = generalised_log(12, 3 * eventlog.CHUNK_ITEMS)
    chunks = list(eventlog.ocel_chunks(log.as_dict(), RELEASE))
    assert len(chunks) > 6 and b"".join(chunks) == JSONResponse(eventlog.to_ocel(log, RELEASE)).body
    xes = list(eventlog.xes_chunks(log.as_dict(), RELEASE))
    assert len(xes) > 3 and b"".join(xes) == eventlog.to_xes(log, RELEASE)


def test_the_stored_form_keeps_each_published_trace_once_with_its_chains():
    log = generalised_log(11, 60)
    stored = log.as_dict()
    assert set(stored) == {"format", "activities", "kinds", "stats", "names", "variants"}
    ids = [i for v in stored["variants"] for i in v["ids"]]
    assert sorted(ids) == sorted(t.id for t in log.traces) and len(set(ids)) == len(ids)
    # Each variant is a published trace shared by at least k chains, stored once.
    assert all(len(v["ids"]) >= K for v in stored["variants"])
    assert len(stored["variants"]) == len({(t.template, t.events) for t in log.traces}) <= len(log.traces) // K
    assert eventlog.PublishedLog.from_dict(json.loads(json.dumps(stored))) == log
    assert eventlog.PublishedLog.from_dict(old_stored_form(log)) == log


class _Unreadable(dict):
    def __getitem__(self, key):
        if key in ("variants", "traces"):
            raise AssertionError(f"{key} read before the document's head was sent")
        return super().__getitem__(key)

    def __contains__(self, key):
        return key == "variants" or super().__contains__(key)


def test_the_head_goes_out_before_the_chains_are_read_and_a_broken_head_fails_before_any_byte():
    log = generalised_log(13)
    head = _Unreadable({k: v for k, v in log.as_dict().items() if k != "variants"})
    for chunks in (eventlog.ocel_chunks(head, RELEASE), eventlog.xes_chunks(head, RELEASE)):
        first = next(chunks)
        assert first.startswith((b'{"objectTypes":', b"<?xml"))
        with pytest.raises(AssertionError, match="read before"):
            next(chunks)
    # As the endpoints pass it: the head now, the whole stored log read once the head is out.
    reads: list[int] = []

    def read():
        reads.append(1)
        return json.loads(json.dumps(log.as_dict()))

    for render, whole in ((eventlog.ocel_chunks, JSONResponse(eventlog.to_ocel(log, RELEASE)).body),
                          (eventlog.xes_chunks, eventlog.to_xes(log, RELEASE))):
        reads.clear()
        chunks = render(eventlog.StoredLog(dict(head), read), RELEASE)
        first = next(chunks)
        assert reads == []
        assert first + b"".join(chunks) == whole and reads == [1]
    broken = {k: v for k, v in log.as_dict().items() if k != "stats"}
    for render in (eventlog.ocel_chunks, eventlog.xes_chunks):
        with pytest.raises(KeyError):
            render(broken, RELEASE)  # raised by the call, before a generator hands out anything
