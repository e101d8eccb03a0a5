"""An event log for process mining that no chain can be singled out in (pure, no I/O).

The steering group's analysts mine the chains' histories (Disco, ProM, Celonis, PM4Py). A raw log
singles people out: a rare path, a start day nobody else shares, a unique pattern of waiting
times. Instead of dropping every chain whose path is rare (on real data that drops nearly all:
parallel branches make almost every path unique), the log is *generalised* until every chain
hides among at least k others, and only what still singles a chain out is dropped:

1. **Activities say what happened, in German** (``Aufenthaltserlaubnis erteilt``), named by the
   policy (``policies/steering.yaml``, ``export.activities``) or from the step's title. Only
   milestones are activities: a step completed, a step started where the policy names that (a
   course begun), the chain begun and ended. Readiness, blocks, resumptions, assignments and
   handovers are bookkeeping that would only split paths.
2. **Times are weeks since the chain's start**, never calendar dates, so every chain starts in
   week 0 and the start day (or week) of a person is not published. Within a week the order of
   events is the fixed order of the activities, not the order they happened in.
3. **Rare activities merge**: an activity that fewer than k chains reach becomes
   ``Sonstiger Schritt``, and a chain template (Kettenart) with fewer than k chains becomes
   ``Sonstige Kettenart`` (with the next smallest templates, until that has k chains).
4. **Chains are aggregated in groups of at least k** (microaggregation): within each Kettenart,
   chains are grouped greedily so that a group's members share as many activities as possible;
   each chain of a group publishes the activities all its members reached, at the group's median
   week, ordered by that week (then by the fixed order). The whole published trace of a chain,
   Kettenart, activities and weeks, is then shared by at least k chains: no start week, waiting
   time or path is unique. Activities outside what a group shares are dropped, not the chain;
   only when fewer than k chains ended in all is nothing published.

What was generalised and dropped is reported in :class:`LogStats`. The result is a
:class:`PublishedLog`, stored with each published trace once (:meth:`PublishedLog.as_dict`) and
rendered as OCEL 2.0 JSON (:func:`to_ocel`) or XES (:func:`to_xes`), which the endpoints stream
piece by piece with the same bytes (:func:`ocel_chunks`, :func:`xes_chunks`); ids
are per-release pseudonyms, so two releases cannot be joined on ids, and a release holds each chain
only once (see casemgmt.steering.releases), so they cannot be joined by content either.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from xml.sax.saxutils import quoteattr

OTHER_STEP = "Sonstiger Schritt"
OTHER_TEMPLATE = "Sonstige Kettenart"
CHAIN_BEGUN = "Kette begonnen"
CHAIN_ENDED = {"chain_completed": "Kette abgeschlossen", "chain_closed": "Kette beendet"}
CASE_MANAGEMENT_TITLE = "Case Management"
# Week 0 of every chain. A Monday long before any real chain, so that nobody mistakes the
# published times for calendar dates.
EPOCH = datetime(2000, 1, 3, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Milestone:
    """One event of a chain before generalisation: its activity, the kind that owns it (title),
    the day relative to the chain's start, and its rank in the fixed activity order."""

    activity: str
    kind: str
    day: int
    rank: int


@dataclass(frozen=True, slots=True)
class ChainHistory:
    """A chain's milestones (any order) and its Kettenart (template title)."""

    template: str
    milestones: tuple[Milestone, ...]


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    activity: str
    kind: str
    week: int


@dataclass(frozen=True, slots=True)
class PublishedTrace:
    id: str
    template: str
    events: tuple[PublishedEvent, ...]


@dataclass(frozen=True)
class LogStats:
    """How much was generalised and dropped; travels with the log as its metadata."""

    k: int
    chains_total: int
    chains_published: int
    chains_cut: int
    events_total: int
    events_published: int
    activities_merged: int
    templates_merged: int
    paths_published: int

    @property
    def share_published(self) -> float:
        return self.chains_published / self.chains_total if self.chains_total else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"k": self.k, "chains_total": self.chains_total, "chains_published": self.chains_published,
                "share_published": round(self.share_published, 4), "chains_cut": self.chains_cut,
                "events_total": self.events_total, "events_published": self.events_published,
                "events_dropped": self.events_total - self.events_published,
                "activities_merged": self.activities_merged, "templates_merged": self.templates_merged,
                "paths_published": self.paths_published,
                "times": "Wochen seit Beginn der Kette (Woche 0 = 2000-01-03), je Gruppe von mindestens k "
                         "Ketten desselben Verlaufs durch den Median ersetzt"}


@dataclass(frozen=True)
class PublishedLog:
    traces: tuple[PublishedTrace, ...]
    stats: LogStats
    activities: tuple[str, ...]  # in the fixed order
    kinds: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The stored form (``steering_releases.event_log``): each distinct published trace
        (Kettenart and events, a *variant*) once, with the pseudonyms of the chains that have
        it. Every published trace is shared by at least k chains, so this is about k times
        smaller than a trace per chain; it holds exactly what the exports publish, nothing more
        (which chains formed a microaggregation group is not kept). A variant's events are one
        flat list ``[activity, kind, week, ...]``, activity and kind as positions in
        ``names``: read back, a million events are a few lists of small integers, not a
        million lists of strings."""
        variants: dict[tuple[str, tuple[PublishedEvent, ...]], list[str]] = {}
        for t in self.traces:
            variants.setdefault((t.template, t.events), []).append(t.id)
        ordered = sorted(((sorted(ids), template, events) for (template, events), ids in variants.items()),
                         key=lambda v: v[0][0])  # by the first pseudonym: says nothing about the chains
        names: dict[str, int] = {}
        stored = []
        for ids, template, events in ordered:
            flat: list[Any] = []
            for e in events:
                flat += [names.setdefault(e.activity, len(names)), names.setdefault(e.kind, len(names)), e.week]
            stored.append({"template": template, "events": flat, "ids": ids})
        return {"format": STORED_FORMAT, "activities": list(self.activities), "kinds": list(self.kinds),
                "stats": self.stats.as_dict(), "names": list(names), "variants": stored}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, with_traces: bool = True) -> PublishedLog:
        """Either stored form: variants with their chains' pseudonyms (:meth:`as_dict`), or one
        entry per chain (releases stored before, read as they are). The chains of a variant
        share one tuple of events, and equal events and names are one object each. Without
        traces: only what a document's head needs (the statistics, activities and kinds), at
        once whatever the size of the log."""
        s = dict(doc["stats"])
        stats = LogStats(**{k: s[k] for k in LogStats.__dataclass_fields__})
        activities, kinds = tuple(doc["activities"]), tuple(doc["kinds"])
        if not with_traces:
            return cls((), stats, activities, kinds)
        one: dict[Any, Any] = {}  # each name and each event once
        traces: list[PublishedTrace] = []
        if "variants" in doc:
            names = [one.setdefault(n, n) for n in doc["names"]]
            for v in doc["variants"]:
                flat = v["events"]
                events = tuple(one.setdefault(key, PublishedEvent(*key)) for key in (
                    (names[flat[i]], names[flat[i + 1]], flat[i + 2]) for i in range(0, len(flat), 3)))
                template = one.setdefault(v["template"], v["template"])
                traces.extend(PublishedTrace(i, template, events) for i in v["ids"])
            traces.sort(key=lambda t: t.id)
        else:
            for t in doc["traces"]:
                events = tuple(one.setdefault(key, PublishedEvent(*key)) for key in (
                    (one.setdefault(a, a), one.setdefault(kd, kd), w) for a, kd, w in t["events"]))
                traces.append(PublishedTrace(t["id"], one.setdefault(t["template"], t["template"]), events))
        return cls(tuple(traces), stats, activities, kinds)


STORED_FORMAT = 2  # 1 (no "format" key): {"traces": [{"id", "template", "events"}, ...]}


# --- generalisation --------------------------------------------------------------------------


def _groups(sets: Sequence[frozenset[str]], k: int) -> list[list[int]]:
    """Chains in groups of at least k, each chosen to keep as much of its members' activities in
    common as possible (greedy, deterministic): the chain with the most activities (the most
    to lose) seeds a group, which then takes the k-1 chains sharing most with what the group
    has in common so far. Fewer than 2k left form the last group; fewer than k left join the
    group they share most with. Fewer than k chains in all: no group."""
    remaining = sorted(range(len(sets)), key=lambda i: (-len(sets[i]), sorted(sets[i]), i))
    if len(remaining) < k:
        return []
    groups: list[list[int]] = []
    while len(remaining) >= 2 * k:
        seed = remaining.pop(0)
        group, common = [seed], set(sets[seed])
        for _ in range(k - 1):
            best = max(range(len(remaining)),
                       key=lambda j: (len(common & sets[remaining[j]]), -len(sets[remaining[j]] - common), -j))
            chosen = remaining.pop(best)
            group.append(chosen)
            common &= sets[chosen]
        groups.append(group)
    if len(remaining) >= k or not groups:
        groups.append(remaining)
    else:
        for i in remaining:
            best = max(range(len(groups)), key=lambda g: (len(frozenset.intersection(*(sets[j] for j in groups[g])) & sets[i]), -g))
            groups[best].append(i)
    return groups


def generalise(histories: Sequence[ChainHistory], k: int, *,
               new_id: Callable[[], str] = lambda: f"kette-{secrets.token_hex(8)}") -> PublishedLog:
    """The published log of ``histories`` under the rules of the module docstring."""
    if k < 1:
        raise ValueError("k must be at least 1")
    events_total = sum(len(h.milestones) for h in histories)
    template_sizes = Counter(h.template for h in histories)
    rare_templates = {t for t, n in template_sizes.items() if n < k}
    # "Sonstige Kettenart" itself needs k chains: take in the smallest templates until it has.
    while 0 < sum(template_sizes[t] for t in rare_templates) < k and len(rare_templates) < len(template_sizes):
        rare_templates.add(min((n, t) for t, n in template_sizes.items() if t not in rare_templates)[1])
    reach = Counter(a for h in histories for a in {m.activity for m in h.milestones})
    rename = {a: OTHER_STEP for a, n in reach.items() if n < k}

    # Each chain as {activity: (first day, kind, rank)}, rare activities merged.
    firsts: list[dict[str, tuple[int, str, int]]] = []
    for h in histories:
        seen: dict[str, tuple[int, str, int]] = {}
        for m in sorted(h.milestones, key=lambda m: (m.day, m.rank)):
            name = rename.get(m.activity, m.activity)
            if name not in seen:
                seen[name] = (m.day, OTHER_STEP if name == OTHER_STEP else m.kind, m.rank)
        firsts.append(seen)
    buckets: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(histories):
        buckets[OTHER_TEMPLATE if h.template in rare_templates else h.template].append(i)

    traces: list[PublishedTrace] = []
    groups_published = chains_cut = 0
    for template, members in sorted(buckets.items()):
        sets = [frozenset(firsts[i]) for i in members]
        for group in _groups(sets, k):
            chains = [members[g] for g in group]
            common = frozenset.intersection(*(frozenset(firsts[c]) for c in chains))
            steps = []
            for activity in common:
                days = [firsts[c][activity][0] for c in chains]
                kinds = Counter(firsts[c][activity][1] for c in chains)
                rank = min(firsts[c][activity][2] for c in chains)
                # The kind most of the group's chains had; ties by name, so the result is stable.
                kind = min(kinds, key=lambda kd: (-kinds[kd], kd))
                steps.append((_median(days) // 7, rank, activity, kind))
            steps.sort()
            events = tuple(PublishedEvent(activity, kind, week) for week, _rank, activity, kind in steps)
            groups_published += 1
            chains_cut += sum(1 for c in chains if len(firsts[c]) > len(common))
            for _ in chains:
                traces.append(PublishedTrace(new_id(), template, events))
    traces.sort(key=lambda t: t.id)  # pseudonym order: says nothing about the chains

    ranks: dict[str, int] = {}
    for chain in firsts:
        for name, (_d, _kd, rank) in chain.items():
            ranks[name] = min(ranks.get(name, rank), rank)
    published_activities = {e.activity for t in traces for e in t.events}
    events_published = sum(len(t.events) for t in traces)
    stats = LogStats(
        k=k, chains_total=len(histories), chains_published=len(traces),
        chains_cut=chains_cut,
        events_total=events_total, events_published=events_published,
        activities_merged=len(rename), templates_merged=len(rare_templates), paths_published=groups_published,
    )
    return PublishedLog(tuple(traces), stats,
                        tuple(sorted(published_activities, key=lambda a: (ranks.get(a, 0), a))),
                        tuple(sorted({e.kind for t in traces for e in t.events})))


def _median(values: Sequence[int]) -> int:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


# --- renderings --------------------------------------------------------------------------------


def _time(week: int) -> datetime:
    return EPOCH + timedelta(weeks=week)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


CHAIN_TYPE, KIND_TYPE, EXPORT_TYPE = "Kette", "Organisationsart", "Export"
RELEASE_EVENT = "Veröffentlichung erstellt"
_STATIC = "1970-01-01T00:00:00Z"


def _metadata_attributes(log: PublishedLog, release: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(name, OCEL type, value as text) of the export's metadata."""
    s = log.stats.as_dict()
    rows: list[tuple[str, str, str]] = [
        ("Veröffentlichung", "integer", str(release.get("number", 0))),
        ("Zeitraum", "string", str(release.get("period", ""))),
        ("k", "integer", str(s["k"])),
        ("Ketten insgesamt", "integer", str(s["chains_total"])),
        ("Ketten veröffentlicht", "integer", str(s["chains_published"])),
        ("Anteil veröffentlicht", "float", str(s["share_published"])),
        ("Ketten gekürzt", "integer", str(s["chains_cut"])),
        ("Ereignisse insgesamt", "integer", str(s["events_total"])),
        ("Ereignisse veröffentlicht", "integer", str(s["events_published"])),
        ("Ereignisse entfernt", "integer", str(s["events_dropped"])),
        ("Aktivitäten zusammengefasst", "integer", str(s["activities_merged"])),
        ("Kettenarten zusammengefasst", "integer", str(s["templates_merged"])),
        ("Verläufe", "integer", str(s["paths_published"])),
        ("Zeitangaben", "string", s["times"]),
    ]
    return rows


def _ocel_head(log: PublishedLog, release: Mapping[str, Any]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str], list[dict[str, Any]]]:
    """What an OCEL log holds before its chains: the object and event types, the organisation
    kinds' ids, and the objects that are not chains (the Export object, the organisation kinds)."""
    meta = _metadata_attributes(log, release)
    object_types = [
        {"name": CHAIN_TYPE, "attributes": [{"name": "Kettenart", "type": "string"}]},
        {"name": KIND_TYPE, "attributes": [{"name": "Bezeichnung", "type": "string"}]},
        {"name": EXPORT_TYPE, "attributes": [{"name": n, "type": t} for n, t, _ in meta]},
    ]
    event_types = [{"name": a, "attributes": [{"name": "Woche", "type": "integer"}]} for a in log.activities]
    event_types.append({"name": RELEASE_EVENT, "attributes": []})
    kind_ids = {kind: f"organisationsart-{i + 1}" for i, kind in enumerate(log.kinds)}
    head = [{"id": "export", "type": EXPORT_TYPE,
             "attributes": [{"name": n, "time": _STATIC, "value": v} for n, _t, v in meta], "relationships": []}]
    head += [{"id": kind_ids[kind], "type": KIND_TYPE,
              "attributes": [{"name": "Bezeichnung", "time": _STATIC, "value": kind}], "relationships": []}
             for kind in log.kinds]
    return object_types, event_types, kind_ids, head


def to_ocel(log: PublishedLog, release: Mapping[str, Any]) -> dict[str, Any]:
    """OCEL 2.0 JSON: events typed by activity, related to their chain (``Kette``) and to the
    organisation kind responsible (``Organisationsart``, qualifier ``zuständig``); one object of
    type ``Export`` carries the metadata, with one event of its own (``Veröffentlichung
    erstellt``, outside every chain). Attribute values are written as text and typed by the
    declarations."""
    object_types, event_types, kind_ids, head = _ocel_head(log, release)
    objects: list[dict[str, Any]] = list(head)
    timed: list[tuple[str, int, int, dict[str, Any]]] = []
    for trace in log.traces:
        objects.append({"id": trace.id, "type": CHAIN_TYPE,
                        "attributes": [{"name": "Kettenart", "time": _iso(EPOCH), "value": trace.template}],
                        "relationships": []})
        for position, event in enumerate(trace.events):
            timed.append((trace.id, event.week, position, {
                "id": f"{trace.id}/{position + 1}", "type": event.activity, "time": _iso(_time(event.week)),
                "attributes": [{"name": "Woche", "value": str(event.week)}],
                "relationships": [{"objectId": trace.id, "qualifier": "Kette"},
                                  {"objectId": kind_ids[event.kind], "qualifier": "zuständig"}]}))
    timed.sort(key=lambda item: (item[1], item[0], item[2]))
    # One event on the Export object: it carries the metadata into tools that keep only objects
    # some event refers to, and an empty release is still a log PM4Py can load (its OCEL 2.0 JSON
    # reader fails on a log without events).
    release_event = {"id": "export/1", "type": RELEASE_EVENT, "time": _iso(EPOCH), "attributes": [],
                     "relationships": [{"objectId": "export", "qualifier": "Veröffentlichung"}]}
    return {"objectTypes": object_types, "eventTypes": event_types, "objects": objects,
            "events": [release_event, *(item[3] for item in timed)]}


XES_EXTENSIONS = (("Concept", "concept", "http://www.xes-standard.org/concept.xesext"),
                  ("Time", "time", "http://www.xes-standard.org/time.xesext"),
                  ("Organizational", "org", "http://www.xes-standard.org/org.xesext"),
                  ("Lifecycle", "lifecycle", "http://www.xes-standard.org/lifecycle.xesext"))


def _xes_head(log: PublishedLog, release: Mapping[str, Any]) -> list[str]:
    """The lines of an XES log before its traces: extensions, globals, classifier, metadata."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<log xes.version="1849-2016" xes.features="" xmlns="http://www.xes-standard.org/">']
    for name, prefix, uri in XES_EXTENSIONS:
        out.append(f"  <extension name={quoteattr(name)} prefix={quoteattr(prefix)} uri={quoteattr(uri)}/>")
    out.append('  <global scope="trace"><string key="concept:name" value=""/></global>')
    out.append('  <global scope="event"><string key="concept:name" value=""/>'
               f'<date key="time:timestamp" value="{_iso(EPOCH)}"/></global>')
    out.append('  <classifier name="Aktivität" keys="concept:name"/>')
    out.append(f'  <string key="concept:name" value={quoteattr("Integrationsketten")}/>')
    for name, typ, value in _metadata_attributes(log, release):
        tag = {"integer": "int", "float": "float"}.get(typ, "string")
        out.append(f"  <{tag} key={quoteattr(name)} value={quoteattr(value)}/>")
    return out


def to_xes(log: PublishedLog, release: Mapping[str, Any]) -> bytes:
    """XES (IEEE 1849), flattened per chain: one trace per chain, its events with activity
    (``concept:name``), time (``time:timestamp``), responsible organisation kind
    (``org:group``) and ``lifecycle:transition`` complete; the metadata as log attributes."""
    out = _xes_head(log, release)
    for trace in log.traces:
        out.append(f'  <trace><string key="concept:name" value={quoteattr(trace.id)}/>'
                   f'<string key="Kettenart" value={quoteattr(trace.template)}/>')
        for event in trace.events:
            out.append(f'    <event><string key="concept:name" value={quoteattr(event.activity)}/>'
                       f'<date key="time:timestamp" value="{_iso(_time(event.week))}"/>'
                       f'<string key="org:group" value={quoteattr(event.kind)}/>'
                       '<string key="lifecycle:transition" value="complete"/></event>')
        out.append("  </trace>")
    out.append("</log>")
    return ("\n".join(out) + "\n").encode("utf-8")


# --- streamed renderings (what the endpoints send) ---------------------------------------------
# The same bytes as the documents above rendered whole (to_ocel through Starlette's JSONResponse,
# to_xes), written piece by piece: objects, then events week by week (OCEL); trace by trace
# (XES). Nothing of the size of the document is held: the text of an event is its variant's
# text with the chain's pseudonym filled in, and the events of one week are put in order from
# the variants that have events in it (each variant's chains are already in pseudonym order).

_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode  # = JSONResponse
CHUNK_ITEMS = 1000  # objects, events or traces per chunk (an OCEL event is about 300 bytes)


def _hole(log: PublishedLog) -> str:
    """A character that occurs in no name of the log, to mark where a pseudonym goes."""
    names = "".join((*log.activities, *log.kinds, *{t.template for t in log.traces}))
    for code in range(0xE000, 0xF900):  # the private use area
        if chr(code) not in names:
            return chr(code)
    raise ValueError("no free character to render the log with")  # pragma: no cover - 6,400 names


def _escaped(text: str) -> str:
    """``text`` as inside a JSON string (without the quotes)."""
    return _JSON(text)[1:-1]


def _chunks(pieces: Iterable[str], first: str = "") -> Iterator[bytes]:
    buffer: list[str] = [first] if first else []
    for piece in pieces:
        buffer.append(piece)
        if len(buffer) >= CHUNK_ITEMS:
            yield "".join(buffer).encode("utf-8")
            buffer.clear()
    if buffer:
        yield "".join(buffer).encode("utf-8")


def ocel_chunks(log: PublishedLog | StoredLog | Mapping[str, Any], release: Mapping[str, Any]) -> Iterator[bytes]:
    """:func:`to_ocel` as Starlette's ``JSONResponse`` writes it, in chunks of bytes. ``log``
    may be the stored form (:meth:`PublishedLog.as_dict`) or a :class:`StoredLog`: its head
    is read at once (a malformed one raises here, before anything is sent) and its chains only
    after the first chunk, the document's head, is out."""
    load, log = _head(log)
    object_types, event_types, kind_ids, head = _ocel_head(log, release)
    release_event = {"id": "export/1", "type": RELEASE_EVENT, "time": _iso(EPOCH), "attributes": [],
                     "relationships": [{"objectId": "export", "qualifier": "Veröffentlichung"}]}

    def document() -> Iterator[bytes]:
        yield ('{"objectTypes":' + _JSON(object_types) + ',"eventTypes":' + _JSON(event_types)
               + ',"objects":[').encode("utf-8")
        yield from _ocel_body(load(), head, release_event, kind_ids)

    return document()


@dataclass(frozen=True)
class StoredLog:
    """A stored log read in two steps: ``head`` (its ``activities``, ``kinds`` and ``stats``)
    at once, ``read()`` (the whole stored form) when the chains are needed, so that a large log
    is not read before the first byte of its document is sent."""

    head: Mapping[str, Any]
    read: Callable[[], Mapping[str, Any]]


def _head(log: PublishedLog | StoredLog | Mapping[str, Any]) -> tuple[Callable[[], PublishedLog], PublishedLog]:
    """(what reads the whole log, the log's head)."""
    if isinstance(log, PublishedLog):
        return (lambda: log), log
    if isinstance(log, StoredLog):
        stored_log = log
        return (lambda: PublishedLog.from_dict(stored_log.read())), PublishedLog.from_dict(log.head, with_traces=False)
    stored = log
    return (lambda: PublishedLog.from_dict(stored)), PublishedLog.from_dict(stored, with_traces=False)


def _ocel_body(log: PublishedLog, head: list[dict[str, Any]], release_event: dict[str, Any],
               kind_ids: Mapping[str, str]) -> Iterator[bytes]:
    hole = _hole(log)
    traces = log.traces

    def objects() -> Iterator[str]:
        yield ",".join(_JSON(o) for o in head)
        chain_parts: dict[str, list[str]] = {}
        for trace in traces:
            parts = chain_parts.get(trace.template)
            if parts is None:
                parts = chain_parts[trace.template] = _JSON(
                    {"id": hole, "type": CHAIN_TYPE,
                     "attributes": [{"name": "Kettenart", "time": _iso(EPOCH), "value": trace.template}],
                     "relationships": []}).split(hole)
            yield "," + _escaped(trace.id).join(parts)

    def events() -> Iterator[str]:
        # Chunks of text: the release's own event, then at most CHUNK_ITEMS chains' events each.
        yield _JSON(release_event)
        # Chains in pseudonym order (the order of the events within a week), grouped by the
        # tuple of events they share (a variant; chains read from the stored form share it).
        order = sorted(range(len(traces)), key=lambda i: traces[i].id)
        variant_of: dict[int, int] = {}
        members: list[list[int]] = []
        variants: list[tuple[PublishedEvent, ...]] = []
        variant_at: list[int] = []
        for rank, i in enumerate(order):
            shared = traces[i].events
            v = variant_of.get(id(shared))
            if v is None:
                v = variant_of[id(shared)] = len(variants)
                variants.append(shared)
                members.append([])
            members[v].append(rank)
            variant_at.append(v)
        ids = [_escaped(traces[i].id) for i in order]
        del order, variant_of
        weeks: dict[int, dict[int, list[int]]] = defaultdict(dict)
        for v, shared in enumerate(variants):
            for position, event in enumerate(shared):
                weeks[event.week].setdefault(v, []).append(position)
        for week in sorted(weeks):
            in_week = weeks.pop(week)
            time, value = _iso(_time(week)), str(week)
            texts: dict[tuple[str, str, int], list[str]] = {}
            # Per variant, the text of its events in this week with a hole for the pseudonym:
            # split at the holes, so that a chain's text is ``pseudonym.join(parts)``.
            parts_of: dict[int, list[str]] = {}
            for v, positions in in_week.items():
                parts: list[str] = [","]
                for position in positions:
                    event = variants[v][position]
                    key = (event.activity, event.kind, position)
                    text = texts.get(key)
                    if text is None:
                        text = texts[key] = _JSON(
                            {"id": f"{hole}/{position + 1}", "type": event.activity, "time": time,
                             "attributes": [{"name": "Woche", "value": value}],
                             "relationships": [{"objectId": hole, "qualifier": "Kette"},
                                               {"objectId": kind_ids[event.kind], "qualifier": "zuständig"}]}
                        ).split(hole)
                    if len(parts) > 1:
                        parts[-1] += ","
                    parts[-1] += text[0]
                    parts.extend(text[1:])
                parts_of[v] = parts
            ranks = (members[next(iter(in_week))] if len(in_week) == 1
                     else sorted(r for v in in_week for r in members[v]))
            for at in range(0, len(ranks), CHUNK_ITEMS):
                yield "".join([ids[r].join(parts_of[variant_at[r]]) for r in ranks[at:at + CHUNK_ITEMS]])

    yield from _chunks(objects())
    yield '],"events":['.encode("utf-8")
    for text in events():
        yield text.encode("utf-8")
    yield b"]}"


def xes_chunks(log: PublishedLog | StoredLog | Mapping[str, Any], release: Mapping[str, Any]) -> Iterator[bytes]:
    """:func:`to_xes` in chunks of bytes, a thousand traces a chunk; ``log`` as for
    :func:`ocel_chunks`."""
    load, log = _head(log)
    out = _xes_head(log, release)
    return _xes_body(("\n".join(out) + "\n").encode("utf-8"), load)


def _xes_body(head: bytes, load: Callable[[], PublishedLog]) -> Iterator[bytes]:
    yield head
    log = load()

    def traces() -> Iterator[str]:
        lines: dict[tuple[str, str, int], str] = {}
        blocks: dict[int, tuple[str, ...]] = {}  # id of a tuple of events -> its lines (shared strings)
        templates: dict[str, str] = {}
        for trace in log.traces:
            block = blocks.get(id(trace.events))
            if block is None:
                parts = []
                for event in trace.events:
                    key = (event.activity, event.kind, event.week)
                    line = lines.get(key)
                    if line is None:
                        line = lines[key] = (
                            f'    <event><string key="concept:name" value={quoteattr(event.activity)}/>'
                            f'<date key="time:timestamp" value="{_iso(_time(event.week))}"/>'
                            f'<string key="org:group" value={quoteattr(event.kind)}/>'
                            '<string key="lifecycle:transition" value="complete"/></event>\n')
                    parts.append(line)
                block = blocks[id(trace.events)] = tuple(parts)
            template = templates.get(trace.template)
            if template is None:
                template = templates[trace.template] = f'<string key="Kettenart" value={quoteattr(trace.template)}/>\n'
            yield f'  <trace><string key="concept:name" value={quoteattr(trace.id)}/>{template}{"".join(block)}  </trace>\n'

    yield from _chunks(traces())
    yield b"</log>\n"


# --- directly-follows graph (for the HTML report) ---------------------------------------------


@dataclass(frozen=True)
class FollowsEdge:
    source: str
    target: str
    chains: int | None  # None: fewer than k chains, suppressed
    median_days: float | None


def directly_follows(histories: Iterable[Sequence[tuple[str, int]]], k: int) -> list[FollowsEdge]:
    """Edges a -> b between consecutive milestones (activity, day since start) of each chain,
    with the number of chains taking the edge and the median days between the two; edges of
    fewer than k chains are listed without figures (their count is suppressed, not dropped, so
    that the graph's shape is honest)."""
    waits: dict[tuple[str, str], list[int]] = defaultdict(list)
    chains: dict[tuple[str, str], int] = Counter()
    for path in histories:
        seen: set[tuple[str, str]] = set()
        for (a, day_a), (b, day_b) in zip(path, path[1:]):
            waits[(a, b)].append(day_b - day_a)
            if (a, b) not in seen:
                seen.add((a, b))
                chains[(a, b)] += 1
    out = []
    for (a, b), n in sorted(chains.items(), key=lambda item: (-item[1], item[0])):
        if n >= k:
            values = sorted(waits[(a, b)])
            mid = len(values) // 2
            median = float(values[mid]) if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
            out.append(FollowsEdge(a, b, n, median))
        else:
            out.append(FollowsEdge(a, b, None, None))
    return out


def day_of(moment: datetime) -> date:
    if moment.tzinfo is None:
        return moment.date()
    return moment.astimezone(UTC).date()
