"""The steering report (DOMAIN.md sections 8-9) as the Lenkungsgruppe, and an attacker, meet it.

The central test builds a Kreis Ennetal with many small cells: persons spread unevenly over the
nine towns, chains walked so that goal clocks run and steps fall overdue, Fallkonferenzen whose
findings (random barrier, field of action and organisation kinds) link random subsets of the
cases, and acknowledged handovers. Persons are inserted as rows (with the conference consent as a
row); chains, steps, conferences, findings and handovers go through the service layer with an
explicit ``now``. The report is then fetched over HTTP as the steering group and attacked as a
black box, from the JSON alone: the relations are rebuilt from each table's ``dimensions`` and
``totals`` and handed to :func:`casemgmt.steering.disclosure.attack` (which does not know which
cells are primary, since the document does not say), and small suppression patterns are also
solved exhaustively by a search written here. The truth every published value is compared with is
computed here from what the test itself created.

That the attack can succeed at all is shown on the same data twice: with one complementary
suppression fewer per protected table, and with primary suppression alone; the attacker then
works cells out, and always correctly.

Further: the CSV for German Excel and the HTML page against the JSON; the steering group's token
against every person endpoint of the OpenAPI document; reports for a kreisfreie Stadt, a town
(422) and an unknown id (404). The last test documents a disclosure through the waiting-time
trend that the report does not yet prevent (strict xfail).
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from casemgmt.chains import service as chains
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER
from casemgmt.conferences import service as conferences
from casemgmt.conferences.schemas import ConferenceIn, FindingIn
from casemgmt.handovers import service as handovers
from casemgmt.handovers.schemas import HandoverIn
from casemgmt.persons.models import Person
from casemgmt.privacy import service as persons
from casemgmt.privacy.models import Consent
from casemgmt.privacy.schemas import PersonCreateIn
from casemgmt.steering import disclosure
from casemgmt.steering import report as steering_report
from http_helpers import PROBLEM_JSON, ok, problem
from test_api import INTAKE_CONSENT, PERSON
from test_conferences_api import LG, conference_consent
from test_goals import serving_actors

TOWNS = ["wittmar", "hattenberg", "sprockede", "gevelstein", "schwelbach", "ennerich", "herdeck",
         "wetterau_ruhr", "breckenfeld"]
K = 5
TOTAL = "_total"
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)  # the moment the report is read
LIMIT = NOW - timedelta(hours=2)  # nothing the test does happens later than this
FIRST = datetime(2025, 12, 1, 9, 0, tzinfo=UTC)  # chains start from here ...
LAST = datetime(2026, 6, 20, 9, 0, tzinfo=UTC)  # ... to here: 2025-Q4 to 2026-Q2
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

# A few keys each, so that findings of different conferences meet in the same rows.
BARRIERS = ["waiting_times", "language_barriers", "housing_shortage", "interfaces"]
FIELDS = ["language", "housing", "training_work"]
FINDING_KINDS = ["course_provider", "auslaenderbehoerde", "jobcenter"]
FINDING_TEXT = "Wartezeiten auf Integrationskurse liegen bei über drei Monaten; Kinderbetreuung fehlt."
TEMPLATES = ["young_adult", "tolerated_family", "eu_newcomer", "refugee_recognised"]
# Steps handed from the Kreis's integration centre to another kind of organisation, by template.
HANDOVER_STEPS = {
    "auslaenderbehoerde": {"young_adult": "residence_status_check", "tolerated_family": "duldung_review",
                           "eu_newcomer": "freizuegigkeit"},
    "jobcenter": {"young_adult": "subsistence"},
    "course_provider": {"young_adult": "language_assessment"},
}
SEEDS = [3, 17, 42, 2026]


def live_report(session_factory, policies, world, now: datetime = None, area: str = "kreis_ennetal") -> dict:
    """The report over all data, computed as a release computes each quarter's (the releases'
    disclosure control is this one), read back through JSON as a client would."""
    with session_factory() as s:
        document = steering_report.build_report(s, policies.steering, policies.goals,
                                                steering_report.resolve_area(s, world.jurisdictions[area]), now or NOW)
    return json.loads(json.dumps(document))


def quarter(moment: datetime) -> str:
    local = moment.astimezone(BERLIN)
    return f"{local.year}-Q{(local.month - 1) // 3 + 1}"


# --------------------------------------------------------------------------------------------
# Building a Kreis with many small cells
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    person_id: uuid.UUID
    town: str
    template: str
    chain_id: uuid.UUID | None
    started_at: datetime
    events: dict[tuple[str, str], datetime] = field(default_factory=dict)  # (step, on) -> when


@dataclass
class FindingRec:
    barrier: str
    field_of_action: str
    kinds: list[str]
    persons: set[uuid.UUID]


@dataclass
class HandoverRec:
    sender_kind: str
    receiver_kind: str
    person_id: uuid.UUID
    requested_at: datetime
    acknowledged_at: datetime
    id: uuid.UUID


class Kreis:
    """Builds the data and remembers what it built (the truth the report is checked against)."""

    def __init__(self, session, catalog, privacy, policies, world, rng: random.Random):
        self.s, self.catalog, self.privacy, self.policies, self.world, self.rng = (
            session, catalog, privacy, policies, world, rng)
        self.actors = {t: serving_actors(session, world, t) for t in TOWNS}
        self.cm = self.actors["wittmar"][CASE_MANAGEMENT_OWNER]  # the Kreis's integration centre
        self.moderator = replace(self.cm, user_id="test.moderator")
        self.cases: list[Case] = []
        self.conferences: list[tuple[datetime, set[uuid.UUID]]] = []
        self.findings: list[FindingRec] = []
        self.handovers: list[HandoverRec] = []

    @property
    def town_of(self) -> dict[uuid.UUID, str]:
        return {c.person_id: c.town for c in self.cases}

    # -- persons and chains ---------------------------------------------------------------------

    def add_persons(self, n: int, towns: list[str] | None = None, weights: list[float] | None = None,
                    templates: list[str] | None = None) -> list[Case]:
        """Insert ``n`` persons with their conference consent, then start a chain for each."""
        rng = self.rng
        if weights is None:
            # Very uneven: a few towns get most persons, some one or two, some none.
            weights = [rng.expovariate(1.0) ** 2 for _ in TOWNS]
            weights[0] += 1.0
        towns = towns or TOWNS
        new: list[Case] = []
        rows: list[Any] = []
        for _ in range(n):
            town = rng.choices(towns, weights)[0]
            template = rng.choices(templates or TEMPLATES, [4, 3, 2, 3][:len(templates or TEMPLATES)])[0]
            started = FIRST + (LAST - FIRST) * rng.random()
            if template == "refugee_recognised" and sum(c.template == template for c in self.cases + new) < 5:
                started = FIRST + (datetime(2026, 3, 15, tzinfo=UTC) - FIRST) * rng.random()
            person = Person(id=uuid.uuid4(), residence_status="protection_granted", bleibeperspektive="good",
                            benefit_regime="asylblg", lead_jurisdiction_id=self.world.jurisdictions[town],
                            created_by_organisation_id=self.cm.organisation_id, created_at=started - DAY)
            rows.append(person)
            rows.append(Consent(
                id=uuid.uuid4(), person_id=person.id,
                recipients=[{"organisation_id": self.world.organisations[k]} for k in ("ennetal_ki", "ennetal_abh")],
                categories=["case_notes"], purpose="case_conference", explicit_special=False,
                consequences_explained=True, mutual=False, collection_method="written",
                evidence_reference="EW-FK-1", language="Arabisch", interpreter_used=False,
                valid_from=started - DAY, valid_until=None, recorded_at=started - DAY,
                recorded_by_user=self.cm.user_id, recorded_by_organisation_id=self.cm.organisation_id))
            new.append(Case(person.id, town, template, None, started))
        self.s.add_all(rows[0::2])
        self.s.flush()
        self.s.add_all(rows[1::2])
        self.s.commit()
        for case in new:
            case.chain_id = chains.start_chain(self.s, self.catalog, self.cm, case.person_id, case.template,
                                               case.started_at).id
        self.cases += new
        return new

    def add_named_person(self, town: str, template: str, started: datetime, family_name: str,
                         given_names: str) -> Case:
        """A person registered through the service, with a name (to look for in the renderings)."""
        wid = self.world.jurisdictions[town]
        body = PersonCreateIn(lead_jurisdiction_id=wid, fields=PERSON | {
            "family_name": family_name, "given_names": given_names, "birth_date": "1994-02-03"}, consents=[
            INTAKE_CONSENT | {"recipients": [{"organisation_kind": "kommunales_integrationszentrum",
                                              "jurisdiction_id": wid}]},
            conference_consent(self.world, "ennetal_ki", "ennetal_abh")])
        person = persons.create_person(self.s, self.privacy, self.cm, body, started - DAY)
        chain = chains.start_chain(self.s, self.catalog, self.cm, person.id, template, started)
        case = Case(person.id, town, template, chain.id, started)
        self.cases.append(case)
        return case

    def second_chain(self, case: Case) -> Case:
        """Another chain for the same person, of the other family template, started later."""
        template = {"young_adult": "tolerated_family", "tolerated_family": "young_adult"}[case.template]
        started = case.started_at + self.rng.uniform(1, 20) * DAY
        chain = chains.start_chain(self.s, self.catalog, self.cm, case.person_id, template, started)
        second = Case(case.person_id, case.town, template, chain.id, started)
        self.cases.append(second)
        return second

    def walk(self, case: Case) -> None:
        """Move the chain's steps at random moments, in time order; nothing after LIMIT."""
        rng, t0, plan = self.rng, case.started_at, []

        def at(step: str, start: datetime, end: datetime | None) -> None:
            plan.append((start, step, "start"))
            if end is not None:
                plan.append((end, step, "complete"))

        def interview(earliest: datetime) -> datetime | None:
            outcome = rng.choices(["fast", "late", "open", "none"], [5, 3, 2, 2])[0]
            if outcome == "none":
                return None
            done = {"fast": t0 + rng.uniform(1.5, 27.5) * DAY, "late": t0 + rng.uniform(29, 70) * DAY,
                    "open": None}[outcome]
            if done is not None and done <= earliest:
                done = earliest + rng.uniform(0.2, 3) * DAY
            at("first_interview", earliest + HOUR, done)
            return done

        walked_refugees = sum(1 for c in self.cases if c.template == "refugee_recognised" and c.events)
        if case.template == "refugee_recognised":
            if walked_refugees >= 5:
                plan.append((t0 + rng.uniform(0.1, 3) * DAY, "arrival_assignment", "start"))
            else:
                at("arrival_assignment", t0 + HOUR, t0 + 4 * HOUR)
                at("accommodation", t0 + 5 * HOUR, t0 + 20 * HOUR)
                registered = t0 + rng.uniform(2, 10) * DAY
                at("registration", t0 + DAY, registered)
                decided = t0 + rng.uniform(2, 20) * DAY
                at("asylum_decision", t0 + 5 * HOUR, decided)
                entitled = max(registered, decided) + rng.uniform(2, 30) * DAY
                at("residence_permit", max(registered, decided) + HOUR, entitled - 2 * HOUR)
                at("integration_course_entitlement", entitled - HOUR, entitled)
                if rng.random() < 0.75:
                    at("integration_course", entitled + rng.uniform(5, 100) * DAY, None)
                interview(registered)
        else:
            done = interview(t0)
            if case.template == "eu_newcomer" and rng.random() < 0.6:
                at("registration", t0 + 2 * HOUR, t0 + DAY)
                admitted = t0 + rng.uniform(2, 40) * DAY
                at("course_admission", t0 + DAY + HOUR, admitted)
                if rng.random() < 0.75:
                    at("language_course", admitted + rng.uniform(5, 100) * DAY, None)
            elif case.template == "tolerated_family" and done is not None and rng.random() < 0.6:
                admitted = done + rng.uniform(1, 20) * DAY
                at("course_admission", done + HOUR, admitted)
                if rng.random() < 0.75:
                    at("language_course", admitted + rng.uniform(5, 100) * DAY, None)
        for moment, step, action in sorted(plan):
            if moment > LIMIT:
                continue  # dependent steps come later still, so they are left out as well
            owner = self.catalog.current[case.template].step(step).owner
            chains.transition_step(self.s, self.catalog, self.actors[case.town][owner], case.chain_id, step,
                                   action, None, None, moment)
            case.events[(step, "started" if action == "start" else "completed")] = moment

    # -- conferences and findings ---------------------------------------------------------------

    def conference(self, scheduled_at: datetime, cases: list[Case], findings: int) -> None:
        rng, now, policy = self.rng, LIMIT - DAY, self.policies.steering
        conf = conferences.create_conference(self.s, self.privacy, policy, self.moderator, ConferenceIn(
            title="Fallkonferenz Kreis Ennetal", scheduled_at=scheduled_at,
            jurisdiction_id=self.world.jurisdictions["kreis_ennetal"],
            participant_organisation_ids=[self.world.organisations["ennetal_abh"]]), now)
        conferences.set_phase(self.s, self.privacy, policy, self.moderator, conf.id, "case_phase", None, now)
        case_ids: dict[int, uuid.UUID] = {}
        for case in cases:
            out = conferences.add_case(self.s, self.privacy, policy, self.moderator, conf.id, case.chain_id, now)
            case_ids[out.cases[-1].id] = case.person_id
        self.conferences.append((scheduled_at, {c.person_id for c in cases}))
        conferences.set_phase(self.s, self.privacy, policy, self.moderator, conf.id, "structural_phase", None, now)
        for _ in range(findings):
            linked = rng.sample(sorted(case_ids), rng.randint(1, len(case_ids)))
            rec = FindingRec(rng.choice(BARRIERS), rng.choice(FIELDS),
                             rng.sample(FINDING_KINDS, rng.choice([1, 1, 2])), {case_ids[i] for i in linked})
            conferences.add_finding(self.s, self.privacy, policy, self.policies.organisation_kinds.keys(),
                                    self.moderator, conf.id, FindingIn(
                                        barrier_category=rec.barrier, field_of_action=rec.field_of_action,
                                        organisation_kinds=rec.kinds, level="organisation", weather="gewitter",
                                        text=FINDING_TEXT, conference_case_ids=linked), now)
            self.findings.append(rec)

    # -- handovers ------------------------------------------------------------------------------

    def handover(self, case: Case, receiver_kind: str, requested: datetime, waited: timedelta) -> None:
        step = HANDOVER_STEPS[receiver_kind][case.template]
        receiver = self.actors[case.town][receiver_kind]
        out = handovers.request_handover(
            self.s, self.catalog, self.privacy, self.policies.handovers, self.cm, case.chain_id,
            HandoverIn(kind="step", step_key=step, receiver_organisation_id=receiver.organisation_id), requested)
        acknowledged = requested + waited
        handovers.respond(self.s, self.catalog, self.privacy, self.policies.handovers, receiver, out.id,
                          "acknowledge", None, None, acknowledged)
        self.handovers.append(HandoverRec(self.cm.organisation_kind, receiver_kind, case.person_id,
                                          requested, acknowledged, out.id))

    def handovers_to(self, receiver_kind: str, persons: int) -> None:
        rng = self.rng
        eligible = [c for c in self.cases if c.template in HANDOVER_STEPS[receiver_kind]]
        for case in rng.sample(eligible, min(persons, len(eligible))):
            for _ in range(rng.choice([1, 1, 1, 2])):  # a second handover of the same person: same step again
                requested = max(case.started_at + DAY, datetime(2026, 3, 2, 8, tzinfo=UTC)
                                + rng.uniform(0, 110) * DAY)
                waited = rng.uniform(0, 12) * DAY
                if requested + waited > LIMIT:
                    break
                self.handover(case, receiver_kind, requested, waited)


@pytest.fixture
def session(session_factory):
    """The session the data is built with, closed before the case tables are emptied (an open
    transaction, kept alive by a failing test's traceback, would block the TRUNCATE)."""
    s = session_factory()
    yield s
    s.close()


def build_kreis(session, catalog, privacy, policies, world, seed: int) -> Kreis:
    rng = random.Random(seed)
    kreis = Kreis(session, catalog, privacy, policies, world, rng)
    for case in kreis.add_persons(rng.randint(34, 44)):
        kreis.walk(case)
    # A few persons get a second chain: they still count once per cell and goal.
    for case in rng.sample([c for c in kreis.cases if c.template in ("young_adult", "tolerated_family")], 3):
        kreis.walk(kreis.second_chain(case))
    # 2026-03-31 22:30 UTC is 1 April in Berlin: the second quarter.
    quarters = [datetime(2025, 12, 9, 9, tzinfo=UTC), datetime(2026, 2, 17, 9, tzinfo=UTC),
                datetime(2026, 3, 31, 22, 30, tzinfo=UTC), datetime(2026, 5, 12, 9, tzinfo=UTC),
                datetime(2026, 6, 16, 9, tzinfo=UTC)]
    for scheduled in [quarters[2], *rng.sample(quarters[:2] + quarters[3:], 2)]:
        share = rng.uniform(0.25, 0.55)
        kreis.conference(scheduled, [c for c in kreis.cases if rng.random() < share], rng.randint(2, 4))
    kreis.handovers_to("auslaenderbehoerde", rng.randint(5, 8))
    kreis.handovers_to("jobcenter", rng.randint(1, 4))
    kreis.handovers_to("course_provider", rng.randint(0, 2))
    return kreis


# --------------------------------------------------------------------------------------------
# The truth, computed from what the test built
# --------------------------------------------------------------------------------------------


def town_counts(persons: Iterable[uuid.UUID], town_of: Mapping[uuid.UUID, str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for p in set(persons):
        out[town_of[p]] += 1
    return dict(out)


def truth_barriers(kreis: Kreis) -> dict[tuple[str, str, str], dict[str, int]]:
    persons: dict[tuple[str, str, str], set[uuid.UUID]] = defaultdict(set)
    for f in kreis.findings:
        for kind in f.kinds:
            persons[(f.barrier, f.field_of_action, kind)] |= f.persons
    return {row: town_counts(ps, kreis.town_of) for row, ps in persons.items()}


def truth_conference_persons(kreis: Kreis) -> dict[tuple[str], dict[str, int]]:
    persons: dict[tuple[str], set[uuid.UUID]] = defaultdict(set)
    for scheduled, ps in kreis.conferences:
        persons[(quarter(scheduled),)] |= ps
    return {row: town_counts(ps, kreis.town_of) for row, ps in persons.items()}


def truth_overdue(session_factory, world, now: datetime) -> dict[tuple[str], dict[str, int]]:
    """Overdue as DOMAIN.md defines it: past the due moment and not done (for a due ``start``:
    not started), on an open chain; written here in SQL of its own."""
    town_key = {v: k for k, v in world.jurisdictions.items()}
    with session_factory() as s:
        rows = s.execute(text(
            "SELECT st.key, p.lead_jurisdiction_id, count(DISTINCT c.person_id) "
            "FROM chain_steps st JOIN chains c ON c.id = st.chain_id JOIN persons p ON p.id = c.person_id "
            "WHERE c.lifecycle = 'open' AND st.due_at < :now "
            "AND st.state NOT IN ('completed', 'skipped', 'cancelled') "
            "AND (st.due_for = 'completion' OR st.started_at IS NULL) "
            "GROUP BY st.key, p.lead_jurisdiction_id"), {"now": now}).all()
    out: dict[tuple[str], dict[str, int]] = defaultdict(dict)
    for step, town, n in rows:
        out[(step,)][town_key[town]] = n
    return dict(out)


def truth_offer_demand(session_factory, world, policies) -> dict[tuple[str], dict[str, int]]:
    """Persons waiting for an offer kind: a step the kind serves (policies/offers.yaml) is ready
    on an open chain and not enrolled in an offer; written here in SQL of its own."""
    town_key = {v: k for k, v in world.jurisdictions.items()}
    out: dict[tuple[str], dict[str, int]] = defaultdict(dict)
    with session_factory() as s:
        for kind in policies.offers.kinds.values():
            if not kind.serves_steps:
                continue
            rows = s.execute(text(
                "SELECT p.lead_jurisdiction_id, count(DISTINCT c.person_id) "
                "FROM chain_steps st JOIN chains c ON c.id = st.chain_id JOIN persons p ON p.id = c.person_id "
                "WHERE c.lifecycle = 'open' AND st.state = 'ready' AND st.key = ANY(:keys) "
                "AND NOT EXISTS (SELECT 1 FROM offer_bookings b WHERE b.chain_id = st.chain_id "
                "AND b.step_key = st.key AND b.state = 'enrolled') "
                "GROUP BY p.lead_jurisdiction_id"), {"keys": sorted(kind.serves_steps)}).all()
            for town, n in rows:
                out[(kind.key,)][town_key[town]] = n
    return dict(out)


def truth_goal(kreis: Kreis, goal, now: datetime) -> dict[tuple[str, str, str], int]:
    """(quarter, town, outcome) -> persons, by the clock that started first for each person;
    outcome "pending" for clocks still running within the limit."""
    m = goal.measure
    first: dict[uuid.UUID, tuple[datetime, Case]] = {}
    for case in kreis.cases:
        if case.template not in m.templates:
            continue
        start = case.started_at if m.start_step is None else case.events.get((m.start_step, m.start_on))
        if start is not None and (case.person_id not in first or start < first[case.person_id][0]):
            first[case.person_id] = (start, case)
    out: dict[tuple[str, str, str], int] = defaultdict(int)
    for start, case in first.values():
        stop = case.events.get((m.stop_step, m.stop_on))
        limit = timedelta(days=m.within_days)
        if stop is not None:
            outcome = "attained" if stop - start <= limit else "missed"
        else:
            outcome = "missed" if now - start > limit else "pending"
        out[(quarter(start), case.town, outcome)] += 1
    return dict(out)


def type7(values: list[float], q: float) -> float:
    data = sorted(values)
    h = (len(data) - 1) * q / 100
    low = int(h)
    if low + 1 >= len(data):
        return float(data[low])
    return data[low] + (h - low) * (data[low + 1] - data[low])


# --------------------------------------------------------------------------------------------
# The attacker: the JSON document only
# --------------------------------------------------------------------------------------------

Key = tuple[str, tuple[str, ...]]


def publication(report: Mapping[str, Any]) -> tuple[dict[Key, int | None], list[disclosure.Relation]]:
    """Cells and relations as an outsider reads them off the document: for every dimension named
    in ``totals`` and every combination of the other labels, the ``_total`` cell is the sum of the
    cells with the other members of that dimension."""
    published: dict[Key, int | None] = {}
    relations: list[disclosure.Relation] = []
    for table in report["tables"]:
        dims = table["dimensions"]
        cells = {tuple(c[d] for d in dims): c["value"] for c in table["cells"]}
        assert len(cells) == len(table["cells"]), f"{table['key']}: a cell is listed twice"
        for labels, value in cells.items():
            published[(table["key"], labels)] = value
        for i, d in enumerate(dims):
            if d not in table["totals"]:
                continue
            lines: dict[tuple, list[tuple]] = defaultdict(list)
            for labels in cells:
                if labels[i] != TOTAL:
                    lines[labels[:i] + labels[i + 1:]].append(labels)
            for labels in cells:
                if labels[i] == TOTAL and lines.get(labels[:i] + labels[i + 1:]):
                    relations.append(disclosure.Relation(
                        (table["key"], labels), tuple((table["key"], p) for p in lines[labels[:i] + labels[i + 1:]]),
                        name=f"{table['key']}: {d} at {labels}"))
    return published, relations


class Budget(Exception):
    pass


def components(published: Mapping[Key, int | None], relations: list[disclosure.Relation]):
    """Groups of suppressed cells linked by relations, each with its relations."""
    parent: dict[Key, Key] = {k: k for k, v in published.items() if v is None}

    def find(x: Key) -> Key:
        while parent[x] != x:
            x = parent[x]
        return x

    for r in relations:
        hidden = [c for c in (r.total, *r.parts) if c in parent]
        for c in hidden[1:]:
            a, b = find(hidden[0]), find(c)
            if a != b:
                parent[b] = a
    groups: dict[Key, list[Key]] = defaultdict(list)
    for x in parent:
        groups[find(x)].append(x)
    for members in groups.values():
        inside = set(members)
        yield members, [r for r in relations if inside.intersection((r.total, *r.parts))]


def alternative_exists(x: Key, members: list[Key], rels: list[disclosure.Relation],
                       published: Mapping[Key, int | None], true: Mapping[Key, int], budget: int) -> bool:
    """Exhaustive integer search: is there a table consistent with the publication (suppressed
    cells at least 1, every relation exact) in which ``x`` differs from its true value?
    Raises Budget when the search gets too large."""
    cap: dict[Key, int] = {}
    ceiling = 2 * max([true[m] for m in members] + [v or 0 for r in rels for v in [published[r.total]]]) + 2 * K
    for m in members:
        bounds = [published[r.total] for r in rels if m in r.parts and published[r.total] is not None]
        cap[m] = min(bounds) if bounds else ceiling
    values: dict[Key, int] = {}
    nodes = 0

    def interval(c: Key) -> tuple[int, int]:
        if c in values:
            return values[c], values[c]
        if published[c] is not None:
            return published[c], published[c]
        return 1, cap[c]

    def consistent() -> bool:
        for r in rels:
            lo = hi = 0
            for p in r.parts:
                a, b = interval(p)
                lo, hi = lo + a, hi + b
            t_lo, t_hi = interval(r.total)
            if hi < t_lo or lo > t_hi:
                return False
        return True

    order = [x] + sorted((m for m in members if m != x), key=lambda m: cap[m])

    def search(i: int) -> bool:
        nonlocal nodes
        nodes += 1
        if nodes > budget:
            raise Budget
        if not consistent():
            return False
        if i == len(order):
            return True
        c = order[i]
        candidates = range(1, cap[c] + 1)
        if c == x:
            candidates = sorted((v for v in candidates if v != true[x]), key=lambda v: abs(v - true[x]))
        for v in candidates:
            values[c] = v
            if search(i + 1):
                return True
            del values[c]
        return False

    return search(0)


def brute_force(published, relations, true, max_unknowns: int = 10, budget: int = 20_000):
    """For each suppressed cell of a small enough suppression pattern: True if some other
    consistent table gives it another value, False if none does (disclosed); cells of larger
    patterns, or whose search ran out of budget, are left out."""
    out: dict[Key, bool] = {}
    for members, rels in components(published, relations):
        if len(members) > max_unknowns:
            continue
        for x in members:
            try:
                out[x] = alternative_exists(x, members, rels, published, true, budget)
            except Budget:
                pass
    return out


def true_cells(report: Mapping[str, Any], truth: Mapping[str, Any]) -> dict[Key, int]:
    """The true value of every cell of the document, from the truth tables below."""
    out: dict[Key, int] = {}
    for table in report["tables"]:
        inner = truth[table["key"]]  # {(labels without totals): n}
        dims = table["dimensions"]
        for cell in table["cells"]:
            labels = tuple(cell[d] for d in dims)
            out[(table["key"], labels)] = sum(
                n for inner_labels, n in inner.items()
                # A merged town ("wetterau_ruhr+breckenfeld") holds the persons of each of its towns.
                if all(lab == TOTAL or il in lab.split("+") for lab, il in zip(labels, inner_labels)))
    return out


def truth_tables(kreis: Kreis, report: Mapping[str, Any], session_factory, world, policies) -> dict[str, dict]:
    """Inner cells of every table, keyed by the labels of the table's dimensions."""
    out: dict[str, dict] = {}
    for key, rows in (("barriers", truth_barriers(kreis)), ("conference_persons", truth_conference_persons(kreis)),
                      ("overdue_steps", truth_overdue(session_factory, world, NOW)),
                      ("offer_demand", truth_offer_demand(session_factory, world, policies))):
        out[key] = {(*row, town): n for row, towns in rows.items() for town, n in towns.items()}
    for table in report["tables"]:
        if table["key"].startswith("goal:"):
            goal = policies.goals[table["key"].removeprefix("goal:")]
            cells = {k: n for k, n in truth_goal(kreis, goal, NOW).items() if k[2] != "pending"}
            if table["dimensions"] == ["quarter", "outcome"]:  # the Kreis-level fallback
                kreis_cells: dict[tuple, int] = defaultdict(int)
                for (q, _t, o), n in cells.items():
                    kreis_cells[(q, o)] += n
                cells = dict(kreis_cells)
            out[table["key"]] = cells
    return out


# --------------------------------------------------------------------------------------------
# 1. The attacker test
# --------------------------------------------------------------------------------------------


def primary_only(grid, k=5, *, on_unprotectable="raise", forced=()):
    """What the report would publish with primary suppression alone."""
    published = {key: (None if 0 < v < k else v) for key, v in grid.cells.items()}
    return disclosure.Protected(k=k, published=published, suppressions={}, relations=tuple(grid.relations))


def one_complementary_too_few(grid, k=5, *, on_unprotectable="raise", forced=()):
    """The real protection, but the first complementary suppression of each grid published again."""
    real = PROTECT(grid, k, on_unprotectable=on_unprotectable)
    if not real.complementary:
        return real
    published = dict(real.published)
    published[real.complementary[0]] = grid.cells[real.complementary[0]]
    return replace(real, published=published)


PROTECT = disclosure.protect


def check_against_truth(report, true: Mapping[Key, int], kreis: Kreis, policies) -> None:
    for table in report["tables"]:
        dims = table["dimensions"]
        for cell in table["cells"]:
            key = (table["key"], tuple(cell[d] for d in dims))
            n, value = true[key], cell["value"]
            where = f"{table['key']} {cell}"
            if value is not None:
                assert value == n, f"{where}: published {value}, true {n}"
            assert not 0 < n < K or value is None, f"{where}: {n} persons published"
            if n == 0:
                assert value == 0, f"{where}: a zero cell must be published"
    # Every row with persons is in the report (town tables: broken down or only the total).
    for key, rows in (("barriers", truth_barriers(kreis)), ("conference_persons", truth_conference_persons(kreis))):
        table = next(t for t in report["tables"] if t["key"] == key)
        shown = {tuple(c[d] for d in table["dimensions"] if d != "town") for c in table["cells"]}
        assert shown == set(rows), key
        for cell in table["cells"]:
            labels = tuple(cell[d] for d in table["dimensions"] if d != "town")
            broken_down = any(c["town"] != TOTAL and tuple(c[d] for d in table["dimensions"] if d != "town") == labels
                              for c in table["cells"])
            dropped = dict(zip([d for d in table["dimensions"] if d != "town"], labels)) in table["dropped_breakdowns"]
            assert broken_down != dropped, (key, labels)
    # Goal tables: every quarter with a running or decided clock; the summary repeats the totals.
    for goal_summary in report["goals"]:
        table = next(t for t in report["tables"] if t["key"] == f"goal:{goal_summary['key']}")
        clocks = truth_goal(kreis, policies.goals[goal_summary["key"]], NOW)
        if table["cells"]:
            assert {c["quarter"] for c in table["cells"]} - {TOTAL} == {q for q, _, _ in clocks}
            grand = {c["outcome"]: c["value"] for c in table["cells"]
                     if all(c[d] == TOTAL for d in table["dimensions"] if d != "outcome")}
            assert (goal_summary["attained"], goal_summary["missed"]) == (grand["attained"], grand["missed"])
            if goal_summary["share"] is not None:
                assert goal_summary["share"] == pytest.approx(grand["attained"] / (grand["attained"] + grand["missed"]))
        else:
            assert goal_summary["attained"] is None and goal_summary["share"] is None


def check_waiting_times(report, kreis: Kreis, session_factory) -> None:
    with session_factory() as s:
        working = {r.id: r.waiting_working_days for r in s.execute(text(
            "SELECT id, waiting_working_days FROM handovers WHERE state = 'acknowledged'"))}
    assert len(working) == len(kreis.handovers)
    groups: dict[tuple, list[HandoverRec]] = defaultdict(list)
    for h in kreis.handovers:
        groups[("pair", h.sender_kind, h.receiver_kind)].append(h)
        groups[("quarter", quarter(h.acknowledged_at))].append(h)
    rows = {("pair", r["sender_kind"], r["receiver_kind"]): r for r in report["handover_waiting_times"]}
    rows |= {("quarter", r["quarter"]): r for r in report["handover_waiting_trend"]}
    assert set(rows) == set(groups)
    seen_null = seen_value = False
    for key, hs in groups.items():
        row, n = rows[key], len({h.person_id for h in hs})
        calendar = [((h.acknowledged_at.astimezone(BERLIN).date() - h.requested_at.astimezone(BERLIN).date()).days)
                    for h in hs]
        work = [working[h.id] for h in hs]
        figures = ("working_days_median", "working_days_p90", "calendar_days_median", "calendar_days_p90")
        if key[0] == "quarter":
            # The trend is a total over pairs one person can share: no count, only percentiles.
            assert "persons" not in row, row
        if n < K:
            seen_null = True
            assert row.get("persons") is None, row
            assert all(row[f] is None for f in figures), f"percentiles of {n} persons published: {row}"
        else:
            seen_value = True
            assert row.get("persons", n) == n
            assert row["calendar_days_median"] == pytest.approx(type7(calendar, 50))
            assert row["calendar_days_p90"] == pytest.approx(type7(calendar, 90))
            assert row["working_days_median"] == pytest.approx(type7(work, 50))
            assert row["working_days_p90"] == pytest.approx(type7(work, 90))
    assert seen_null and seen_value, "the data should give both a published and a withheld waiting time"


@pytest.mark.parametrize("seed", SEEDS)
def test_attacker_recovers_no_suppressed_cell(seed, client, auth, clock, session, session_factory, catalog, privacy,
                                              policies, world, monkeypatch):
    kreis = build_kreis(session, catalog, privacy, policies, world, seed)
    clock.now = NOW
    report = live_report(session_factory, policies, world)
    assert report["k"] == K == policies.steering.k and report["area"]["towns"] == sorted(TOWNS)

    true = true_cells(report, truth_tables(kreis, report, session_factory, world, policies))
    check_against_truth(report, true, kreis, policies)
    check_waiting_times(report, kreis, session_factory)
    # The Bestands- und Bedarfsanalyse is among the attacked tables, with small cells of its own.
    demand = [(key, n) for key, n in true.items() if key[0] == "offer_demand"]
    assert demand and any(0 < n < K for _, n in demand), "the data should have waiting persons per offer kind"

    published, relations = publication(report)
    suppressed = [k for k, v in published.items() if v is None]
    small = [k for k, n in true.items() if 0 < n < K]
    assert len(small) >= 15 and len(suppressed) > len(small), "the data should have many small cells"
    for r in relations:  # the relations read off the document hold for the true table
        assert true[r.total] == sum(true[p] for p in r.parts), r.label

    bounds = disclosure.attack(published, relations, K)
    for key, b in bounds.items():
        assert b.low <= true[key] and (b.high is None or true[key] <= b.high), (key, b)  # the attacker is sound
    disclosed = {key: b.low for key, b in bounds.items() if b.exact}
    assert not disclosed, f"seed {seed}: suppressed cells worked out from the report: {disclosed}"
    # Even an attacker told which cells are primary pins none (that is what protect() defends against).
    primary = [k for k in suppressed if 0 < true[k] < K]
    informed = disclosure.attack(published, relations, K, primary=primary, witness=true)
    assert not disclosure.disclosed(informed), f"seed {seed}: {disclosure.disclosed(informed)}"

    searched = brute_force(published, relations, true)
    assert searched, "some suppression patterns should be small enough to search exhaustively"
    assert all(searched.values()), f"seed {seed}: exhaustive search pins {[k for k, v in searched.items() if not v]}"

    # One complementary suppression fewer per table, and the attacker works cells out.
    with monkeypatch.context() as m:
        m.setattr(disclosure, "protect", one_complementary_too_few)
        leaky = live_report(session_factory, policies, world)
    leaky_published, leaky_relations = publication(leaky)
    leaky_true = true_cells(leaky, truth_tables(kreis, leaky, session_factory, world, policies))
    pinned = {key: b.low for key, b in disclosure.attack(leaky_published, leaky_relations, K).items() if b.exact}
    assert pinned, f"seed {seed}: one complementary cell fewer per table should give cells away"
    assert all(leaky_true[key] == v for key, v in pinned.items())

    # With primary suppression alone the same attacker does work out cells, and correctly.
    with monkeypatch.context() as m:
        m.setattr(disclosure, "protect", primary_only)
        weak = live_report(session_factory, policies, world)
    weak_published, weak_relations = publication(weak)
    weak_true = true_cells(weak, truth_tables(kreis, weak, session_factory, world, policies))
    exposed = {key: b.low for key, b in disclosure.attack(weak_published, weak_relations, K).items() if b.exact}
    assert exposed, f"seed {seed}: primary suppression alone should give cells away"
    assert all(weak_true[key] == v for key, v in exposed.items())
    assert any(0 < weak_true[key] < K for key in exposed), "a cell under k persons is recovered"
    weak_search = brute_force(weak_published, weak_relations, weak_true)
    # Where both ran, the exhaustive search agrees: what attack() pins has no alternative.
    agree = [key for key in exposed if key in weak_search]
    assert not any(weak_search[key] for key in agree), [key for key in agree if weak_search[key]]


def test_exhaustive_search_and_attack_agree_on_hand_made_tables():
    """The search above, on tables small enough to check by hand."""
    row = [disclosure.Relation(("t", ("_total",)), tuple(("t", (c,)) for c in "abc"))]
    true = {("t", ("a",)): 2, ("t", ("b",)): 9, ("t", ("c",)): 0, ("t", ("_total",)): 11}
    one_hidden = {**true, ("t", ("a",)): None}  # 11 - 9 - 0
    assert brute_force(one_hidden, row, true) == {("t", ("a",)): False}
    assert disclosure.attack(one_hidden, row, K)[("t", ("a",))].exact
    two_hidden = {**one_hidden, ("t", ("b",)): None}
    assert brute_force(two_hidden, row, true) == {("t", ("a",)): True, ("t", ("b",)): True}
    assert not disclosure.disclosed(disclosure.attack(two_hidden, row, K))
    # 2 x 2 with margins and every inner cell hidden: the margins leave one degree of freedom ...
    cells = {("a", "x"): 1, ("a", "y"): 6, ("b", "x"): 7, ("b", "y"): 8}
    grid = disclosure.Grid()
    grid.add_table("m", [["a", "b"], ["x", "y"]], cells)
    full = {k: v for k, v in grid.cells.items()}
    hidden = {k: (None if k[1] != disclosure.TOTAL and k[2] != disclosure.TOTAL else v) for k, v in full.items()}
    assert all(brute_force(hidden, grid.relations, full).values())
    # ... unless one inner cell is at its lower bound and the line forces it: a+x = 1 is pinned
    # once (a, total) = 1 + 0 would make the whole row 1.
    cells[("a", "y")] = 0
    grid = disclosure.Grid()
    grid.add_table("m", [["a", "b"], ["x", "y"]], cells)
    full = dict(grid.cells)
    hidden = {k: (None if 0 < v < K else v) for k, v in full.items()}
    searched = brute_force(hidden, grid.relations, full)
    assert searched == {("m", "a", "x"): False, ("m", "a", disclosure.TOTAL): False}
    assert set(disclosure.disclosed(disclosure.attack(hidden, grid.relations, K))) == set(searched)


# --------------------------------------------------------------------------------------------
# 2. CSV for German Excel, HTML with charts
# --------------------------------------------------------------------------------------------

NAMES = [("Qorvani", "Liyanet"), ("Duvessa", "Marokin"), ("Tellbrück", "Aysun-Mara")]


def german(value) -> str:
    if value is None:
        return "."
    if isinstance(value, float):
        return f"{value:.1f}".replace(".", ",")
    return str(value)


LATER = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)  # 2026-Q2 is due for release (60 days after its end)


def internal_keys(report: Mapping[str, Any], policies) -> set[str]:
    """Every key the document names that a reader must never see: table keys, dimension names,
    and the keys of towns, organisation kinds, steps, barriers, fields of action and outcomes."""
    keys = {t["key"] for t in report["tables"]} | {d for t in report["tables"] for d in t["dimensions"]}
    keys |= set(report["area"]["towns"]) | set(policies.organisation_kinds) | set(policies.steering.step_titles)
    keys |= set(policies.steering.barrier_categories) | set(policies.steering.fields_of_action)
    keys |= {"attained", "missed", "_total", "handover_waiting_times", "handover_waiting_trend"}
    # A key that is also a German word or title ("Wohnen" is no key; "bamf" vs "BAMF") is fine
    # only in the title's own spelling: compare as whole words, case-sensitively.
    return {k for k in keys if len(k) > 3}


def test_release_in_german_csv_xlsx_and_html_with_charts(client, auth, clock, session, catalog, privacy, policies,
                                                          world, release):
    rng = random.Random(7)
    kreis = Kreis(session, catalog, privacy, policies, world, rng)
    named = [kreis.add_named_person("wittmar", "young_adult", datetime(2026, 4, 2 + i, 9, tzinfo=UTC), f, g)
             for i, (f, g) in enumerate(NAMES)]
    for case in named + kreis.add_persons(16, weights=[3, 2, 1, 1, 0, 0, 0, 0, 1],
                                          templates=["young_adult", "tolerated_family"]):
        kreis.walk(case)
    kreis.conference(datetime(2026, 5, 12, 9, tzinfo=UTC), kreis.cases, 3)
    kreis.handovers_to("auslaenderbehoerde", 7)
    kreis.handovers_to("jobcenter", 2)
    release("2026-Q2", LATER, area="kreis_ennetal")
    clock.now = LATER
    report = ok(client.get("/reports/steering", headers=auth(*LG)))
    assert report["period"] == {"key": "2026-Q2", "title": "2. Quartal 2026", "start": "2026-03-31T22:00:00+00:00",
                                "end": "2026-06-30T22:00:00+00:00"}
    # Every key has its title beside it, in the JSON.
    for table in report["tables"]:
        assert table["title"] and set(table["dimension_titles"]) == set(table["dimensions"])
        for cell in table["cells"]:
            for d in table["dimensions"]:
                assert cell[f"{d}_title"] and (cell[d] == "_total" or cell[f"{d}_title"] != cell[d] or d == "quarter")
    barrier = next(t for t in report["tables"] if t["key"] == "barriers")["cells"][0]
    assert barrier["barrier_category_title"] == policies.steering.barrier_categories[barrier["barrier_category"]]
    assert barrier["organisation_kind_title"] == policies.organisation_kinds[barrier["organisation_kind"]].title
    assert {c["town_title"] for c in barrier_cells(report)} >= {"Wittmar", "Kreis Ennetal"}
    for row in report["handover_waiting_times"]:
        assert row["receiver_kind_title"] == policies.organisation_kinds[row["receiver_kind"]].title

    resp = client.get("/reports/steering.csv", headers=auth(*LG))
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/csv; charset=utf-8"
    assert "2026-Q2" in resp.headers["content-disposition"]
    raw = resp.content
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads umlauts correctly
    assert raw.endswith(b"\r\n") and raw.count(b"\n") == raw.count(b"\r\n")  # CRLF only
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline=""), delimiter=";"))
    header, body = rows[0], rows[1:]
    assert header[0] == "Tabelle" and header[-5:] == [
        "Personen", "Median Arbeitstage", "90. Perzentil Arbeitstage", "Median Kalendertage",
        "90. Perzentil Kalendertage"]
    assert all(len(r) == len(header) for r in body)
    dims: list[str] = []
    for table in report["tables"]:
        dims += [d for d in table["dimensions"] if d not in dims]
    dims += ["sender_kind", "receiver_kind"]
    assert header[1:-5] == [steering_report.DIMENSION_TITLES[d] for d in dims]
    expected = []
    for table in report["tables"]:
        for cell in table["cells"]:
            expected.append([table["title"], *(cell[f"{d}_title"] if d in cell else "" for d in dims),
                             german(cell["value"]), "", "", "", ""])
    for rows_ in (report["handover_waiting_times"], report["handover_waiting_trend"]):
        for row in rows_:
            expected.append([None, *(row[f"{d}_title"] if d in row else "" for d in dims),
                             german(row["persons"]) if "persons" in row else "",
                             german(row["working_days_median"]), german(row["working_days_p90"]),
                             german(row["calendar_days_median"]), german(row["calendar_days_p90"])])
    assert len(body) == len(expected)
    for got, want in zip(body, expected):
        want[0] = got[0] if want[0] is None else want[0]
        assert got == want
    assert any(r[-5] == "." for r in body), "some cells are suppressed, shown as '.'"
    medians = [r[-4] for r in body if r[-4] not in ("", ".")]
    assert medians and all(re.fullmatch(r"\d+,\d", m) for m in medians)  # decimal comma
    # Only German titles: no internal key appears as a word in the CSV.
    text_ = raw.decode("utf-8-sig")
    leaked = [k for k in internal_keys(report, policies) if re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", text_)]
    assert not leaked, leaked

    # The .xlsx holds the same rows; numbers are numbers, "." marks a suppressed cell.
    from openpyxl import load_workbook

    x = client.get("/reports/steering.xlsx", headers=auth(*LG))
    assert x.status_code == 200 and x.headers["content-type"].startswith("application/vnd.openxmlformats")
    sheet = load_workbook(io.BytesIO(x.content)).active
    values = [[("" if v is None else v) for v in r] for r in sheet.iter_rows(values_only=True)]
    assert values[0] == header
    assert len(values) == len(body) + 1
    for got, want in zip(values[1:], body):
        assert [float(v) if isinstance(v, int | float) else v for v in got] == [
            float(w.replace(",", ".")) if re.fullmatch(r"\d+(,\d+)?", w) else w for w in want]
    assert any(isinstance(v, int) and v > 0 for r in values[1:] for v in r)

    page = client.get("/reports/steering.html", headers=auth(*LG))
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    html_text = page.text
    assert "<svg" in html_text and "<rect" in html_text and "<td>.</td>" in html_text
    # The goal chart marks each goal's target; wide tables scroll inside their box.
    assert html_text.count('class="target"') == len(report["goals"]) and "Zielwert" in html_text
    assert 'class="box"' in html_text and "overflow-x:auto" in html_text
    visible = re.sub(r"<style>.*?</style>", "", html_text, flags=re.S)
    visible = re.sub(r"<[^>]+>", " ", visible)
    leaked = [k for k in internal_keys(report, policies) if re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", visible)]
    assert not leaked, leaked
    # No person reaches the page or the file: no names, no ids.
    for family, given in NAMES:
        for word in (family, given, *given.split("-")):
            assert word not in html_text and word.encode() not in raw
    for case in kreis.cases:
        assert str(case.person_id) not in html_text and str(case.chain_id) not in html_text
        assert str(case.person_id).encode() not in raw


def barrier_cells(report):
    return next(t for t in report["tables"] if t["key"] == "barriers")["cells"]


def test_chart_labels_wrap_instead_of_being_cut():
    from casemgmt.steering import render

    long_a = "Aufenthaltsrechtliche Hürden (Duldung, sicheres Herkunftsland, Residenzpflicht) / Sprache"
    long_b = "Aufenthaltsrechtliche Hürden (Duldung, sicheres Herkunftsland, Residenzpflicht) / Wohnen"
    svg = render._bars([(long_a, 7), (long_b, 9)])
    shown = ["".join(re.findall(r"<tspan[^>]*>([^<]*)</tspan>", text)) for text in re.findall(r"<text[^>]*>(.*?)</text>", svg)
             if "<tspan" in text]
    assert len(shown) == 2 and shown[0] != shown[1]
    assert shown[0].replace(" ", "") == long_a.replace(" ", "").replace("&", "&amp;")
    assert all(len(line) <= render.LABEL_CHARS for line in render.wrap(long_a))
    assert render.wrap("x" * 90) == ["x" * 40, "x" * 40, "x" * 10]


# --------------------------------------------------------------------------------------------
# 3. The steering group's token opens no person endpoint
# --------------------------------------------------------------------------------------------

PERSON_PREFIXES = ("/persons", "/chains", "/handovers", "/consents", "/audit", "/conferences", "/notifications")


def person_routes(spec) -> list[tuple[str, str, dict]]:
    out = []
    for path, ops in spec["paths"].items():
        if not (path.startswith(PERSON_PREFIXES) or re.fullmatch(r"/organisations/\{[^}]+\}/contacts(/.*)?", path)):
            continue
        for method, op in ops.items():
            if method in ("get", "post", "put", "patch", "delete"):
                out.append((path, method, op))
    return out


def fill(path: str, op: dict, real: Mapping[str, str]) -> str:
    for param in op.get("parameters", []):
        if param["in"] != "path":
            continue
        schema = param.get("schema", {})
        if param["name"] in real:
            value = real[param["name"]]
        elif schema.get("type") == "integer":
            value = "1"
        elif schema.get("format") == "uuid":
            value = str(uuid.uuid4())
        else:
            value = "arrival_assignment"
        path = path.replace("{" + param["name"] + "}", value)
    assert "{" not in path, path
    return path


def test_steering_token_is_refused_on_every_person_endpoint(client, auth, session, catalog, privacy, policies, world,
                                                           release):
    kreis = Kreis(session, catalog, privacy, policies, world, random.Random(1))
    case = kreis.add_persons(1, towns=["wittmar"], weights=[1], templates=["young_adult"])[0]
    real = {"person_id": str(case.person_id), "chain_id": str(case.chain_id)}
    spec = ok(client.get("/openapi.json"))
    routes = person_routes(spec)
    assert len(routes) >= 25, [f"{m} {p}" for p, m, _ in routes]
    assert {p for p, _, _ in routes} >= {"/persons", "/persons/{person_id}", "/chains/{chain_id}/events",
                                        "/handovers/incoming", "/audit", "/conferences/{conference_id}",
                                        "/organisations/{organisation_id}/contacts", "/notifications"}
    steering = auth(*LG)
    for path, method, op in routes:
        for ids in (real, {}):  # an existing person and chain, and ids that exist nowhere
            url = fill(path, op, ids)
            kwargs = {"json": {}} if method in ("post", "put", "patch") else {}
            resp = client.request(method.upper(), url, headers=steering, **kwargs)
            assert resp.status_code == 403, f"{method.upper()} {url}: {resp.status_code} {resp.text[:200]}"
            assert resp.headers["content-type"].startswith(PROBLEM_JSON)
            assert resp.json()["type"] == "/problems/forbidden", f"{method.upper()} {url}: {resp.json()}"
    # What the steering group may read: the releases in all forms, the exports and the perturbed
    # figures on demand; no one else may.
    number = release("2025-Q1", datetime(2026, 1, 5, tzinfo=UTC), area="kreis_ennetal")[0][0]
    for url in ("/reports/steering", "/reports/steering.csv", "/reports/steering.xlsx", "/reports/steering.html",
                "/reports/steering/releases", f"/reports/steering/releases/{number}",
                f"/reports/steering/releases/{number}.html", "/reports/on-demand", "/exports/ocel", "/exports/xes",
                f"/exports/releases/{number}/ocel", f"/exports/releases/{number}/xes"):
        assert client.get(url, headers=steering).status_code == 200, url
        # One user each per URL, so that the per-user rate limit of reports is not what answers.
        for who in (("ennetal_ki", "case_manager"), ("ennetal_abh", "clerk"), ("ennetal_ki", "dpo")):
            problem(client.get(url, headers=auth(*who, user=f"{who[1]}-{url}")), 403, "forbidden")


# --------------------------------------------------------------------------------------------
# 4. Areas: a kreisfreie Stadt, a town, an unknown id
# --------------------------------------------------------------------------------------------


def test_report_for_a_kreisfreie_stadt_a_town_and_an_unknown_id(client, auth, clock, session, catalog, policies,
                                                               world, session_factory, release):
    city = serving_actors(session, world, "hagenau")["kommunales_integrationszentrum"]
    kreis_cm = serving_actors(session, world, "wittmar")[CASE_MANAGEMENT_OWNER]
    started = datetime(2026, 4, 7, 9, tzinfo=UTC)  # 2026-Q2, more than 28 days before NOW

    def person(town: str, cm, interview_after: timedelta | None) -> None:
        p = Person(id=uuid.uuid4(), residence_status="protection_granted",
                   lead_jurisdiction_id=world.jurisdictions[town], created_by_organisation_id=cm.organisation_id,
                   created_at=started - DAY)
        session.add(p)
        session.commit()
        chain = chains.start_chain(session, catalog, cm, p.id, "young_adult", started)
        if interview_after is not None:
            chains.transition_step(session, catalog, cm, chain.id, "first_interview", "start", None, None,
                                   started + HOUR)
            chains.transition_step(session, catalog, cm, chain.id, "first_interview", "complete", None, None,
                                   started + interview_after)

    for _ in range(7):
        person("hagenau", city, None)  # Erstgespräch missed and overdue
    for _ in range(2):
        person("hagenau", city, 3 * DAY)  # attained; their language assessment and career guidance overdue
    for _ in range(3):
        person("wittmar", kreis_cm, None)
    clock.now = NOW
    hagenau = live_report(session_factory, policies, world, area="hagenau")
    assert hagenau["area"] == {"id": world.jurisdictions["hagenau"], "name": "Hagenau (kreisfreie Stadt)",
                               "towns": ["hagenau"], "town_titles": {"hagenau": "Hagenau (kreisfreie Stadt)"}}
    overdue = next(t for t in hagenau["tables"] if t["key"] == "overdue_steps")
    assert {(c["step_key"], c["town"]): c["value"] for c in overdue["cells"]} == {
        ("first_interview", TOTAL): 7, ("language_assessment", TOTAL): None, ("career_guidance", TOTAL): None}
    goal = next(t for t in hagenau["tables"] if t["key"] == "goal:erstgespraech_in_28_tagen")
    cells = {(c["quarter"], c["town"], c["outcome"]): c["value"] for c in goal["cells"]}
    assert cells[("2026-Q2", "hagenau", "attained")] is None  # 2 persons
    assert cells[("2026-Q2", "hagenau", "missed")] is None  # 9 - 7 would give the 2 away otherwise
    published, relations = publication(hagenau)
    assert not disclosure.disclosed(disclosure.attack(published, relations, K))
    # The persons of the city are not counted in the Kreis, nor the Kreis's in the city.
    kreis = live_report(session_factory, policies, world)
    assert kreis["area"]["id"] == world.jurisdictions["kreis_ennetal"]
    overdue = next(t for t in kreis["tables"] if t["key"] == "overdue_steps")
    first = {c["town"]: c["value"] for c in overdue["cells"] if c["step_key"] == "first_interview"}
    assert first[TOTAL] is None and first["wittmar"] is None and first["hattenberg"] == 0
    # The CSV and the page of the city's release show only the city.
    release("2026-Q2", LATER, area="hagenau")
    clock.now = LATER
    page = client.get("/reports/steering.html", params={"jurisdiction_id": world.jurisdictions["hagenau"]},
                      headers=auth(*LG))
    assert page.status_code == 200 and "Hagenau" in page.text and "Wittmar" not in page.text

    body = problem(client.get("/reports/steering", params={"jurisdiction_id": world.jurisdictions["wittmar"]},
                              headers=auth(*LG)), 422, "validation-error")
    assert body["errors"][0]["field"] == "query.jurisdiction_id"
    for form in ("", ".csv", ".html"):
        problem(client.get(f"/reports/steering{form}", params={"jurisdiction_id": world.jurisdictions["wittmar"]},
                           headers=auth(*LG)), 422, "validation-error")
        problem(client.get(f"/reports/steering{form}", params={"jurisdiction_id": 987654}, headers=auth(*LG)),
                404, "not-found")
    problem(client.get("/reports/steering", params={"jurisdiction_id": 0}, headers=auth(*LG)), 422,
            "validation-error")


# --------------------------------------------------------------------------------------------
# 5. Waiting times: the quarterly trend is a total over the pairs
# --------------------------------------------------------------------------------------------


def test_suppressed_waiting_time_pair_cannot_be_worked_out_from_the_trend(client, auth, clock, session, catalog,
                                                                         privacy, policies, world, session_factory):
    kreis = Kreis(session, catalog, privacy, policies, world, random.Random(5))
    cases = kreis.add_persons(11, towns=["wittmar"], weights=[1], templates=["young_adult"])
    for i, case in enumerate(cases):  # one handover each, all acknowledged in 2026-Q2
        kreis.handover(case, "auslaenderbehoerde" if i < 7 else "jobcenter",
                       datetime(2026, 6, 1, 9, tzinfo=UTC) + i * HOUR, (i % 4 + 1) * DAY)
    report = live_report(session_factory, policies, world)
    pairs = {r["receiver_kind"]: r["persons"] for r in report["handover_waiting_times"]}
    trend = {r["quarter"]: r.get("persons") for r in report["handover_waiting_trend"]}
    assert pairs == {"auslaenderbehoerde": 7, "jobcenter": None}
    # The quarter's count of all pairs would pin the Jobcenter pair (11 - 7 = 4 = k - 1): it is
    # not published, only the quarter's percentiles are.
    assert trend == {"2026-Q2": None}
    assert report["handover_waiting_trend"][0]["working_days_median"] is not None
