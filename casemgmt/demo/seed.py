"""Seeds the demo database: the synthetic Kreis and several hundred persons whose chains were
walked through the real service layer at simulated past times, so every state, overdue steps,
blocked steps and closed chains appear as they would in a year of use. No real names: persons
are pseudonymous ids with residence attributes only."""

from __future__ import annotations

import gc
import heapq
import os
import random
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from casemgmt.auth.tokens import mint_dev_token
from casemgmt.chains import service as chains
from casemgmt.chains.catalog import TemplateCatalog, register_templates
from casemgmt.chains.engine import Action, Actor, StepState
from casemgmt.chains.models import Chain
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER
from casemgmt.config import Settings
from casemgmt.database import make_engine, make_sessionmaker
from casemgmt.demo.offers import seed_offers
from casemgmt.demo.progress import SeedProgress
from casemgmt.demo.world import World, build_world
from casemgmt.conferences import service as conferences_service
from casemgmt.conferences.schemas import AgreementIn, ConferenceIn, FindingIn
from casemgmt.handovers import service as handovers
from casemgmt.handovers.escalation import escalate_overdue
from casemgmt.handovers.models import OrganisationContact
from casemgmt.handovers.policy import HandoverPolicy
from casemgmt.handovers.schemas import HandoverIn
from casemgmt.jurisdictions.models import Organisation
from casemgmt.migrations import upgrade
from casemgmt.persons.models import Person
from casemgmt.policy.loader import Policies, load_policies
from casemgmt.privacy.crypto import KeyRing, generate_master_key_file, load_master_key
from casemgmt.privacy.schemas import AgreementIn as DataAgreementIn
from casemgmt.privacy.schemas import ConsentIn, PersonCreateIn
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.models import AuditEvent
from casemgmt.privacy.service import (
    Privacy,
    write_audit,
    create_person,
    list_consents,
    record_agreement,
    withdraw_consent,
)
from casemgmt.problems import Problem

# How far back the simulated use of the service starts (the first intake).
SEEDED_DAYS = 540

# Share of each chain kind among newcomers in case management, and their typical attributes
# (residence status, Bleibeperspektive, benefit regime), each with a weight.
CHAIN_MIX: dict[str, tuple[float, list[tuple[tuple[str, str, str], int]]]] = {
    "refugee_recognised": (0.38, [
        (("protection_granted", "good", "asylblg"), 5),
        (("protection_granted", "good", "sgb_ii"), 4),
        (("asylum_pending", "good", "asylblg"), 2),
    ]),
    "tolerated_family": (0.14, [
        (("tolerated", "safe_country_of_origin", "asylblg"), 3),
        (("tolerated", "unclear", "asylblg"), 2),
    ]),
    "eu_newcomer": (0.22, [
        (("eu_free_movement", "good", "none"), 3),
        (("eu_free_movement", "good", "sgb_ii"), 2),
    ]),
    "uma": (0.10, [
        (("asylum_pending", "good", "none"), 3),
        (("asylum_pending", "unclear", "none"), 2),
    ]),
    "young_adult": (0.16, [
        (("protection_granted", "good", "sgb_ii"), 4),
        (("tolerated", "unclear", "asylblg"), 1),
    ]),
}
BLOCK_REASONS = [
    "Keine freien Kursplätze vor dem nächsten Quartal",
    "Unterlagen fehlen (Nachweis der Identität)",
    "Termin bei der Behörde erst in sechs Wochen",
    "Wartet auf Entscheidung einer anderen Stelle",
    "Kinderbetreuung während des Kurses nicht gesichert",
]
REJECT_REASONS = [
    "Nicht zuständig: Wohnsitz liegt außerhalb unseres Bezirks",
    "Unterlagen unvollständig, bitte Meldebescheinigung nachreichen",
    "Antrag liegt bereits bei einer anderen Stelle",
]
SKIP_REASONS = [
    "Nicht erforderlich nach Erstgespräch",
    "Person hat das Angebot abgelehnt",
    "Bereits anderweitig erledigt",
]
# Invented names: common given and family names from the newcomers' regions, combined at random.
GIVEN_NAMES = ["Amina", "Yusuf", "Mariam", "Omar", "Fatima", "Ali", "Leyla", "Hassan", "Ayan",
               "Dawit", "Selam", "Karim", "Nour", "Reza", "Zahra", "Mihail", "Elena", "Ion",
               "Ana", "Bogdan", "Sara", "Tesfay", "Hamid", "Parisa", "Arben", "Dritan", "Hana"]
FAMILY_NAMES = ["Haddad", "Rahimi", "Tesfaye", "Osman", "Ahmadi", "Popescu", "Yilmaz", "Berhane",
                "Karimi", "Hussein", "Nowak", "Mohammadi", "Abdi", "Krasniqi", "Ionescu",
                "Hosseini", "Gebremedhin", "Farah", "Kaya", "Sadiqi"]
NATIONALITIES = {
    "refugee_recognised": ["SY", "IQ", "IR", "ER", "SO", "AF"],
    "tolerated_family": ["RS", "XK", "MK", "AL"],
    "eu_newcomer": ["RO", "BG", "PL", "GR", "IT"],
    "uma": ["AF", "SY", "GN", "SO", "ER"],
    "young_adult": ["SY", "AF", "IQ", "ER"],
}
LANGUAGES = ["Arabisch", "Farsi", "Tigrinya", "Kurdisch", "Englisch", "Französisch", "Russisch",
             "Türkisch", "Somali", "Rumänisch", "Bulgarisch"]
STREETS = ["Bahnhofstraße", "Ruhrstraße", "Am Markt", "Lindenweg", "Schulstraße", "Hauptstraße"]
CASE_NOTES = [
    "Erstgespräch mit Dolmetschung geführt; Ziele: Sprachkurs und Arbeit im erlernten Beruf.",
    "Unterlagen zur Berufsanerkennung liegen teilweise vor; Übersetzung beantragt.",
    "Sucht eine kleinere Wohnung; Wohnungsmarkt für 1-2 Personen sehr angespannt.",
    "Kinderbetreuung ist Voraussetzung für den Kursbesuch.",
]
CASE_MANAGEMENT_CATEGORIES = ["residence", "benefits", "education", "language", "family", "housing",
                              "case_notes", "feedback", "own_goals"]

DEMO_USERS = [
    ("cm.ennetal", "ennetal_ki", ["case_manager"], "Case-Manager/in, KI Kreis Ennetal"),
    ("cm.caritas", "ennetal_caritas", ["case_manager"], "Case-Manager/in, Caritas Migrationsdienst"),
    ("abh.ennetal", "ennetal_abh", ["clerk"], "Sachbearbeitung Ausländerbehörde (Kreis)"),
    ("jc.ennetal", "ennetal_jobcenter", ["clerk"], "Sachbearbeitung Jobcenter"),
    ("soz.wittmar", "wittmar_sozialamt", ["clerk"], "Sachbearbeitung Sozialamt Wittmar"),
    ("cm.wittmar", "wittmar_ki", ["case_manager"], "Case-Manager/in, Integrationsbüro Wittmar"),
    ("vhs.ennetal", "ennetal_vhs", ["clerk"], "Kursträger VHS (Teilnahme an Fallkonferenzen)"),
    ("mod.ennetal", "ennetal_ki", ["moderator"], "Moderation Fallkonferenz"),
    ("lg.ennetal", "ennetal_ki", ["steering"], "Mitglied der Lenkungsgruppe"),
    ("dsb.ennetal", "ennetal_ki", ["dpo"], "Datenschutzbeauftragte/r"),
    ("admin.ennetal", "ennetal_ki", ["admin"], "Administration"),
]


@dataclass
class DemoSummary:
    database: str
    persons: int
    created: bool
    chains_by_template: Counter = field(default_factory=Counter)
    chains_by_status: Counter = field(default_factory=Counter)
    # (user, organisation key, roles, what the user does, token)
    tokens: list[tuple[str, str, str, str, str]] = field(default_factory=list)

    def describe(self) -> str:
        lines = [
            f"Demo database: {self.database}",
            ("Seeded" if self.created else "Already seeded:") + f" {self.persons} persons",
            "Chains by template: " + ", ".join(f"{k} {v}" for k, v in sorted(self.chains_by_template.items())),
            "Chains by status:   " + ", ".join(f"{k} {v}" for k, v in sorted(self.chains_by_status.items())),
            "",
            "Tokens for demo users (valid 8 hours; send as 'Authorization: Bearer <token>'):",
        ]
        for user, org, roles, title, token in self.tokens:
            lines.append(f"\n# {title}: user {user}, organisation {org}, roles {roles}")
            lines.append(token)
        return "\n".join(lines)


class _Actors:
    """The organisation a step is assigned to, as an Actor (cached)."""

    def __init__(self, session: Session):
        self.session = session
        self._cache: dict[tuple[str, int], Actor | None] = {}

    def for_organisation(self, organisation_id: int | None) -> Actor | None:
        """The clerk of the organisation a step is assigned to."""
        if organisation_id is None:
            return None
        key = ("id", organisation_id)
        if key not in self._cache:
            org = self.session.get(Organisation, organisation_id)
            self._cache[key] = actor_of(org, f"demo.{org.key}") if org else None
        return self._cache[key]


def actor_of(org: Organisation, user: str, roles: frozenset[str] = frozenset({"clerk"})) -> Actor:
    return Actor(user_id=user, organisation_id=org.id, organisation_kind=org.kind,
                 jurisdiction_path=org.jurisdiction.path, roles=roles)


def _weighted(rng: random.Random, options: list[tuple[object, int]]):
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def _case(
    session: Session,
    catalog: TemplateCatalog,
    privacy: Privacy,
    policy: HandoverPolicy,
    towns: list[int],
    rng: random.Random,
    actors: _Actors,
    manager: Actor,
    body: PersonCreateIn,
    template_key: str,
    started: datetime,
    until: datetime,
    progress: SeedProgress,
) -> Iterator[datetime]:
    """One person's year, as a generator: it yields the time of its next action and performs it
    when resumed, so the driver can interleave all persons in time order (the audit trail and
    the event log then read as they would after a year of real use). Each chain gets a pace and
    maybe a point where it stops moving, so the demo shows chains at every stage."""
    now = yield started
    person = create_person(session, privacy, manager, body, now)
    progress.count("persons")
    chain = chains.start_chain(session, catalog, manager, person.id, template_key, now)
    progress.count("chains")
    handed_over: set[str] = set()
    relocates = rng.random() < RELOCATION_SHARE
    pace_days = rng.uniform(2, 10)
    # Most chains keep moving; some get stuck early, which is what the overdue views are for.
    moves = rng.randint(0, 12) if rng.random() < 0.2 else 200
    blocker = rng.random() < 0.1
    for _ in range(moves):
        candidates = [s for s in chain.steps if s.state in (StepState.ready, StepState.in_progress, StepState.blocked)]
        if not candidates:
            break
        # Clerks mostly work on what is due first; sometimes on something else.
        if rng.random() < 0.75:
            step = min(candidates, key=lambda s: s.due_at or until + timedelta(days=3650))
        else:
            step = rng.choice(candidates)
        when = now + timedelta(days=rng.expovariate(1 / pace_days), hours=rng.randint(0, 8))
        if when >= until:
            return
        now = yield when
        if step.owner == CASE_MANAGEMENT_OWNER:
            actor = manager
        else:
            actor = actors.for_organisation(step.assigned_organisation_id)
            if actor is None:
                continue
        if relocates and len(handed_over) >= 2 and "chain_lead" not in handed_over:
            # The family moves to another town of the Kreis; the case management hands the chain over.
            handed_over.add("chain_lead")
            outcome = yield from _handover(session, catalog, privacy, policy, rng, actors, manager, chain,
                                           HandoverIn(kind="relocation", to_jurisdiction_id=_move_target(rng, chain, towns)),
                                           now, until, progress)
            if outcome is not None:
                now, chain, manager = outcome
            continue
        if (step.state == StepState.ready and step.owner != CASE_MANAGEMENT_OWNER
                and step.key not in handed_over and rng.random() < STEP_HANDOVER_SHARE):
            handed_over.add(step.key)
            outcome = yield from _handover(session, catalog, privacy, policy, rng, actors, manager, chain,
                                           HandoverIn(kind="step", step_key=step.key), now, until, progress)
            if outcome is not None:
                now, chain, manager = outcome
            continue
        if (step.key == RKW_SENDING_STEP and step.state == StepState.in_progress
                and template_key == RKW_TEMPLATE and body.fields.get("benefit_regime") == "asylblg"):
            # The Sozialamt does not end AsylbLG benefits itself: it hands them to the Jobcenter
            # once the residence permit is there, and its step ends when the Jobcenter takes over.
            permit = next(s for s in chain.steps if s.key == "residence_permit")
            if permit.state != StepState.completed or "rkw" in handed_over:
                continue
            handed_over.add("rkw")
            outcome = yield from _handover(session, catalog, privacy, policy, rng, actors, actor, chain,
                                           HandoverIn(kind="rechtskreiswechsel", step_key=RKW_SENDING_STEP,
                                                      to_step_key="sgb2_application", benefit_regime="sgb_ii"),
                                           now, until, progress, reader=manager)
            if outcome is not None:
                now, chain, _ = outcome
            continue
        reason = None
        if step.state == StepState.blocked:
            action = Action.resume
        elif blocker and rng.random() < 0.15:
            action, reason = Action.block, rng.choice(BLOCK_REASONS)
        elif step.optional and rng.random() < 0.35:
            action, reason = Action.skip, rng.choice(SKIP_REASONS)
        elif step.state == StepState.ready:
            action = Action.start
        else:
            action = Action.complete
        try:
            chain = chains.transition_step(session, catalog, actor, chain.id, step.key,
                                           action.value, reason, chain.version, now, privacy=privacy)
        except Problem:
            continue
        progress.count("transitions")
        if blocker and action is Action.block:
            break  # leave it blocked: the demo needs stalled chains
    if rng.random() < 0.04:
        # The person withdraws a consent, as the law allows at any time.
        # Not where the chain's case management has moved on: after a move to another town the
        # receiving office is no longer involved once the chain has completed, and the person's
        # data is refused to it (403 involvement-ended); the seed stopped there for some start
        # times (the walk depends on the time of day it starts).
        when = now + timedelta(days=rng.uniform(1, 60))
        try:
            consents = list_consents(session, manager, person.id, now)
        except Problem:
            consents = []
        if consents and when < until:
            now = yield when
            try:
                withdraw_consent(session, privacy, manager, consents[-1].id, "Widerruf durch die Person", now)
            except Problem:
                pass
    if rng.random() < 0.05 and chain.status.value not in ("completed", "closed"):
        when = now + timedelta(days=rng.uniform(1, 30))
        if when < until:
            now = yield when
            reason = rng.choice(["moved_away", "ended_by_person"])
            note = "Umzug in ein anderes Bundesland" if reason == "moved_away" else None
            chains.close_chain(session, catalog, manager, chain.id, reason, note, None, now, privacy=privacy)


# Handovers in the demo: a share of steps is handed over explicitly before the owner starts,
# every refugee chain's benefits pass from the Sozialamt to the Jobcenter by a Rechtskreiswechsel,
# and a few families move between towns of the Kreis. Receivers mostly answer within the
# deadline, some late (escalated first), a few never (still escalated when the demo starts).
STEP_HANDOVER_SHARE = 0.35
RELOCATION_SHARE = 0.04
RKW_TEMPLATE = "refugee_recognised"
RKW_SENDING_STEP = "asylblg_subsistence"


def _answer_delay(rng: random.Random) -> timedelta | None:
    """How long the receiver takes; None: it never answers."""
    roll = rng.random()
    if roll < 0.62:
        return timedelta(days=rng.uniform(0.1, 6))
    if roll < 0.88:
        return timedelta(days=rng.uniform(6, 21))
    return None


def _move_target(rng: random.Random, chain, towns: list[int]) -> int:
    """Most moves go to the largest town (which runs its own integration office)."""
    others = [t for t in towns if t != chain.lead_jurisdiction_id]
    return others[0] if rng.random() < 0.7 and others[0] == towns[0] else rng.choice(others)


def _handover(session: Session, catalog: TemplateCatalog, privacy: Privacy, policy: HandoverPolicy,
              rng: random.Random, actors: _Actors, sender: Actor, chain, body: HandoverIn,
              now: datetime, until: datetime, progress: SeedProgress, reader: Actor | None = None):
    """Request a handover now, then (later, in simulated time) let the receiver answer. Returns
    the new time, the chain as it is after the answer and the chain's case manager, or None."""
    try:
        h = handovers.request_handover(session, catalog, privacy, policy, sender, chain.id, body, now)
    except Problem:
        return None
    progress.count("handovers")
    delay = _answer_delay(rng)
    if delay is None or now + delay >= until:
        return None
    now = yield now + delay
    receiver_org = session.get(Organisation, h.receiver.id)
    receiver = actor_of(receiver_org, f"demo.{receiver_org.key}")
    action, reason = "acknowledge", None
    if body.kind == "step" and rng.random() < 0.08:
        action, reason = "reject", rng.choice(REJECT_REASONS)
    try:
        handovers.respond(session, catalog, privacy, policy, receiver, h.id, action, reason, None, now)
    except Problem:
        return None
    manager = reader or sender
    if body.kind == "relocation" and action == "acknowledge":
        manager = actor_of(receiver_org, "cm.wittmar" if receiver_org.key == "wittmar_ki" else f"demo.{receiver_org.key}",
                           frozenset({"case_manager"}))
    return now, chains.get_chain(session, catalog, manager, chain.id, now), manager


def _escalation_timer(session: Session, policy: HandoverPolicy, start: datetime, until: datetime):
    """The daily escalation run, as cron would start it at 06:00."""
    now = yield start.replace(hour=5, minute=0, second=0, microsecond=0) + timedelta(days=1)
    while now < until:
        escalate_overdue(session, policy, now, "http://127.0.0.1:8000")
        now = yield now + timedelta(days=1)


def _seed_contacts(session: Session, world: World) -> None:
    """Invented addresses (example.org is reserved for examples) for leads and team inboxes."""
    for key, organisation_id in world.organisations.items():
        slug = key.replace("_", "-")
        session.add(OrganisationContact(organisation_id=organisation_id, role="lead", channel="email",
                                        address=f"leitung@{slug}.example.org"))
        session.add(OrganisationContact(organisation_id=organisation_id, role="inbox", channel="email",
                                        address=f"team@{slug}.example.org"))
    session.add(OrganisationContact(organisation_id=world.organisations["ennetal_ki"], role="inbox",
                                    channel="webhook", address="https://chat.ennetal.example.org/hooks/ki"))
    session.add(OrganisationContact(organisation_id=world.organisations["ennetal_ki"], role="dpo",
                                    channel="email", address="datenschutz@ennetal-ki.example.org"))
    session.commit()



# --- Fallkonferenzen and the Lenkungsgruppe ------------------------------------------------------

CONFERENCE_CONSENT_SHARE = 0.6
CONFERENCE_KINDS = ["kommunales_integrationszentrum", "auslaenderbehoerde", "jobcenter", "sozialamt",
                    "course_provider", "wohlfahrtsverband"]
CONFERENCE_PARTICIPANTS = ["ennetal_abh", "ennetal_jobcenter", "ennetal_vhs", "ennetal_caritas"]
# (barrier, field of action, organisation kinds, weather, text): what conferences in the field
# report again and again; weights make some barriers common and others rare, so the report shows
# both published and suppressed cells.
FINDINGS = [
    ("waiting_times", "language", ["course_provider", "bamf"], "gewitter", 5,
     "Wartezeiten auf Integrationskurse liegen bei drei bis fünf Monaten; Kurse mit Kinderbetreuung fehlen ganz."),
    ("housing_shortage", "housing", ["sozialamt", "jobcenter"], "gewitter", 4,
     "Für Alleinstehende gibt es kaum Ein- bis Zwei-Zimmer-Wohnungen; der Auszug aus dem Übergangswohnheim scheitert."),
    ("interfaces", "subsistence", ["sozialamt", "jobcenter"], "wolke", 4,
     "Beim Rechtskreiswechsel entstehen Lücken von mehreren Wochen, weil Bescheide nicht rechtzeitig vorliegen."),
    ("language_barriers", "health", ["gesundheitsamt"], "wolke", 2,
     "Für Arzttermine fehlen Dolmetschende; Termine werden mehrfach verschoben."),
    ("offers_end_at_town_borders", "education", ["schulamt", "kita_traeger"], "wolke", 2,
     "Sprachförderangebote enden an der Stadtgrenze, obwohl der nächste Kurs im Nachbarort näher liegt."),
    ("data_protection_information_flow", "case_management", ["auslaenderbehoerde", "kommunales_integrationszentrum"],
     "wind", 2, "Ein gemeinsamer Einwilligungsbogen für alle beteiligten Stellen würde Rückfragen sparen."),
    ("legal_status", "training_work", ["auslaenderbehoerde", "agentur_fuer_arbeit"], "gewitter", 2,
     "Geduldete erhalten die Beschäftigungserlaubnis zu spät; Ausbildungsplätze verfallen."),
    ("poor_cooperation", "case_management", ["jobcenter", "kommunales_integrationszentrum"], "sonne", 1,
     "Die gemeinsame Sprechstunde von Jobcenter und Case Management funktioniert gut und sollte bleiben."),
    ("missing_offers", "family_youth", ["jugendamt"], "wolke", 1,
     "Für Jugendliche über 16 Jahre fehlen Freizeit- und Sportangebote in den kleinen Orten."),
]


@dataclass
class Conferences:
    """What the conference generators produced, for the proposals after them."""

    findings: list = field(default_factory=list)  # (finding id, barrier)


def _conference_dates(now: datetime) -> list[datetime]:
    """About one Fallkonferenz every two months over the last year and a half."""
    return [(now - timedelta(days=days)).replace(hour=9, minute=0, second=0, microsecond=0)
            for days in range(500, 20, -60)]


def _conference(session: Session, catalog: TemplateCatalog, privacy: Privacy, policies, world: World,
                rng: random.Random, produced: Conferences, at: datetime, progress: SeedProgress):
    """One conference at its date, in time order with the cases: the cases on its agenda are the
    open chains of persons whose consent covers the conference at that moment."""
    now = yield at
    ki = session.get(Organisation, world.organisations["ennetal_ki"])
    moderator = actor_of(ki, "mod.ennetal", frozenset({"moderator"}))
    steering_policy = policies.steering
    conf = conferences_service.create_conference(session, privacy, steering_policy, moderator, ConferenceIn(
        title=f"Fallkonferenz Kreis Ennetal {now:%m/%Y}", scheduled_at=now,
        jurisdiction_id=world.jurisdictions["kreis_ennetal"],
        participant_organisation_ids=[world.organisations[k] for k in CONFERENCE_PARTICIPANTS]), now)
    progress.count("conferences")
    conferences_service.set_phase(session, privacy, steering_policy, moderator, conf.id, "case_phase", None, now)
    open_chains = session.execute(
        select(Chain.id).where(Chain.lifecycle == "open", Chain.case_management_organisation_id == ki.id)
        .order_by(Chain.started_at)).scalars().all()
    case_ids = []
    for chain_id in rng.sample(list(open_chains), min(len(open_chains), rng.randint(12, 24))):
        try:
            out = conferences_service.add_case(session, privacy, steering_policy, moderator, conf.id, chain_id, now)
        except Problem:
            continue  # no consent for the conference: the case is not discussed
        case_ids.append(out.cases[-1].id)
    for case_id in case_ids[: rng.randint(1, 3)]:
        owner = rng.choice(CONFERENCE_PARTICIPANTS)
        conferences_service.add_agreement(
            session, catalog, privacy, steering_policy, policies.handovers, moderator, conf.id,
            AgreementIn(conference_case_id=case_id, text=rng.choice(AGREEMENT_TEXTS),
                        owner_organisation_id=world.organisations[owner],
                        due_date=(now + timedelta(days=rng.choice([14, 28, 42]))).date()), now)
    conferences_service.set_phase(session, privacy, steering_policy, moderator, conf.id, "structural_phase", None, now)
    if not case_ids:
        return
    weights = [f[4] for f in FINDINGS]
    chosen = []
    known = set()
    for _ in range(rng.randint(3, 5)):
        spec = rng.choices(FINDINGS, weights=weights)[0]
        if spec in chosen:
            continue
        chosen.append(spec)
        barrier, field_, kinds, weather, _, text = spec
        behind = rng.sample(case_ids, max(1, min(len(case_ids), int(rng.expovariate(1 / 6)) + 1)))
        out = conferences_service.add_finding(
            session, privacy, steering_policy, policies.organisation_kinds.keys(), moderator, conf.id,
            FindingIn(barrier_category=barrier, field_of_action=field_, organisation_kinds=kinds, level=rng.choice(
                ["staff", "organisation", "intermunicipal"]), weather=weather, text=text,
                conference_case_ids=behind), now)
        new = next(f.id for f in out.findings if f.id not in known)
        known.add(new)
        produced.findings.append((new, barrier))
    for key in CONFERENCE_PARTICIPANTS:
        voter = actor_of(session.get(Organisation, world.organisations[key]), f"demo.{key}")
        finding_id, _ = rng.choice(produced.findings[-len(chosen):])
        conferences_service.vote(session, privacy, steering_policy, voter, conf.id, finding_id,
                                 rng.randint(1, steering_policy.dots_per_participant), now)
    conferences_service.set_phase(session, privacy, steering_policy, moderator, conf.id, "closed", None, now)


AGREEMENT_TEXTS = [
    "Jobcenter prüft vorrangig den Antrag und meldet sich beim Case Management.",
    "Kursträger bietet einen Platz im nächsten Kurs mit Kinderbetreuung an.",
    "Ausländerbehörde klärt die Verlängerung des Aufenthaltstitels vor Ablauf.",
    "Caritas begleitet zur Wohnungsbesichtigung und unterstützt beim Antrag.",
]
# (title, summary, barrier, the states it is walked through)
PROPOSALS = [
    ("Integrationskurse mit Kinderbetreuung", "Kreisweit Kurse mit Kinderbetreuung ausschreiben.",
     "waiting_times", ["submit", "accept", "start", "complete", "make_permanent"]),
    ("Kleine Wohnungen", "Belegungsrechte für Ein- bis Zwei-Zimmer-Wohnungen mit der Wohnungswirtschaft vereinbaren.",
     "housing_shortage", ["submit", "delegate", "start"]),
    ("Nahtloser Rechtskreiswechsel", "Verbindliche Übergabe zwischen Sozialamt und Jobcenter mit Fristen.",
     "interfaces", ["submit", "accept", "start", "complete"]),
    ("Dolmetschpool Gesundheit", "Einen Dolmetschpool für Arzttermine aufbauen.", "language_barriers",
     ["submit", "reject"]),
    ("Kurse über Stadtgrenzen", "Kursplätze kreisweit vergeben.", "offers_end_at_town_borders",
     ["submit", "defer"]),
    ("Gemeinsamer Einwilligungsbogen", "Einen Einwilligungsbogen für alle Stellen entwickeln.",
     "data_protection_information_flow", ["submit"]),
    ("Beschäftigungserlaubnis beschleunigen", "Bearbeitungszeiten der Beschäftigungserlaubnis verkürzen.",
     "legal_status", []),
    ("Sprechstunde verstetigen", "Die gemeinsame Sprechstunde von Jobcenter und Case Management beibehalten.",
     "poor_cooperation", ["submit", "accept"]),
    ("Wohnraum für Familien", "Große Wohnungen für Familien in den kleinen Orten erschließen.",
     "housing_shortage", ["submit", "delegate"]),
]
# Every state of the lifecycle is where some proposal rests: bundled, submitted, accepted,
# delegated, rejected, deferred, in_implementation, implemented and made_permanent.


def _seed_proposals(session: Session, privacy: Privacy, policies, world: World, rng: random.Random,
                    produced: Conferences, now: datetime) -> None:
    """Bundle the findings into proposals and walk them through every state of the lifecycle."""
    from casemgmt.steering import service as steering
    from casemgmt.steering.schemas import ProposalActionIn, ProposalIn

    ki = session.get(Organisation, world.organisations["ennetal_ki"])
    moderator = actor_of(ki, "mod.ennetal", frozenset({"moderator"}))
    group = actor_of(ki, "lg.ennetal", frozenset({"steering"}))
    at = now - timedelta(days=15)
    group_id = None
    unused = list(produced.findings)
    for title, summary, barrier, actions in PROPOSALS:
        ids = [f for f, b in unused if b == barrier][:3] or [f for f, _ in unused[:2]]
        if not ids:
            continue
        unused = [(f, b) for f, b in unused if f not in ids]
        proposal = steering.create_proposal(session, privacy, policies.steering, moderator,
                                            ProposalIn(title=title, summary=summary, finding_ids=ids), at)
        for action in actions:
            at += timedelta(hours=rng.randint(2, 30))
            body: dict = {"action": action}
            if action == "accept":
                body |= {"working_group_name": f"AG {title}", "due_date": (now + timedelta(days=180)).date(),
                         "lead_organisation_id": world.organisations["ennetal_ki"]}
            elif action == "delegate" and group_id is not None:
                body |= {"working_group_id": group_id, "due_date": (now + timedelta(days=120)).date()}
            elif action == "delegate":
                continue
            elif action in ("reject", "defer"):
                body["reason"] = ("Zuständigkeit liegt beim Land" if action == "reject"
                                  else "Kosten sind intern zu klären")
            who = moderator if action == "submit" else group
            out = steering.act(session, privacy, policies.steering, who, who is group, who is moderator,
                               proposal.id, ProposalActionIn(**body), at)
            if out.working_group is not None and group_id is None:
                group_id = out.working_group.id


@contextmanager
def _rare_collections() -> Iterator[None]:
    """Fewer runs of the cycle collector while the seed runs. The seed makes millions of short-lived
    objects (statements, rows, output models), and with the default threshold the collector ran
    about 3 times per person, each time also walking every imported module's objects: 4-5% of
    the seed's CPU. The objects that exist before the seed are frozen (never scanned again until
    unfrozen) and the youngest generation is collected every 50,000 allocations instead of 700;
    both are restored when the seed ends. Memory stays bounded (the collector still runs)."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _run_in_time_order(cases: list[Iterator[datetime]], progress: SeedProgress) -> None:
    """Advance every case generator, always the one whose next action is earliest."""
    queue: list[tuple[datetime, int, Iterator[datetime]]] = []
    for i, case in enumerate(cases):
        heapq.heappush(queue, (next(case), i, case))
    while queue:
        when, i, case = heapq.heappop(queue)
        progress.at(when)
        try:
            heapq.heappush(queue, (case.send(when), i, case))
        except StopIteration:
            pass


SEED_USER = "demo-seed"
SEEDED_SUBTYPE = "demo.seeded"
_SEEDED_MARK = select(AuditEvent.id).where(AuditEvent.subtype == SEEDED_SUBTYPE).limit(1)


class DemoIncomplete(RuntimeError):
    """The demo database holds a seeding that did not finish."""


def demo_master_key(settings: Settings) -> bytes:
    """The configured master key; for the demo, a key file is generated on first use."""
    if not settings.master_key and not settings.master_key_file.exists():
        generate_master_key_file(settings.master_key_file)
    return load_master_key(settings.master_key_file, settings.master_key)


def seed_demo(settings: Settings, persons: int = 400, seed: int = 2017,
              now: datetime | None = None, progress: TextIO | None = None,
              policies: Policies | None = None) -> DemoSummary:
    """Migrate the configured database and seed it unless it already holds persons; while it
    seeds, a progress line goes to ``progress`` (the command gives stderr). ``policies``: those
    of ``settings.policy_dir`` if the caller has loaded them already (the command shares one
    load between the seed, the releases and the app).

    A SQLite file that does not exist yet (the default demo) is seeded aside, in a file next to
    it without a journal on disk, and renamed to its name only once the seed is whole: an
    interrupted seeding leaves no demo database behind, and the seed does not wait for the disk
    (about 1 s less per demo start in bench/demo.py's runs; the seed's CPU time is unchanged)."""
    now = now or datetime.now(UTC)
    policies = policies or load_policies(settings.policy_dir)
    target = _new_sqlite_file(settings.database_url)
    if target is None:
        summary = _seed(settings, settings.database_url, True, persons, seed, now, progress, policies)
    else:
        aside = target.with_name(target.name + SEEDING_SUFFIX)
        _remove_sqlite_file(aside)  # left by a seeding that was killed
        try:
            aside_url = make_url(settings.database_url).set(database=str(aside)).render_as_string(hide_password=False)
            summary = _seed(settings, aside_url, False, persons, seed, now, progress, policies)
            # Into the write-ahead log the server's connections expect, before it takes the name.
            with closing(sqlite3.connect(aside)) as finished:
                finished.execute("PRAGMA journal_mode=WAL")
            os.replace(aside, target)
        except BaseException:
            _remove_sqlite_file(aside)
            raise
        summary.database = make_url(settings.database_url).render_as_string(hide_password=True)
    for user, org, roles, title in DEMO_USERS:
        token = mint_dev_token(settings, user, org, roles)
        summary.tokens.append((user, org, ",".join(roles), title, token))
    return summary


# The file a new SQLite demo database is seeded in, next to it, until the seed is whole.
SEEDING_SUFFIX = ".seeding"


def _new_sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL naming a file that does not exist yet; else None."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() != "sqlite" or not name or name == ":memory:" or name.startswith("file:"):
        return None
    path = Path(name)
    return None if path.exists() else path


def _remove_sqlite_file(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def _seed(settings: Settings, url: str, durable: bool, persons: int, seed: int, now: datetime,
          progress: TextIO | None, policies: Policies) -> DemoSummary:
    engine = make_engine(url, durable=durable)
    try:
        upgrade(engine)
        privacy = Privacy(policies.data, KeyRing.from_master(demo_master_key(settings)))
        factory = make_sessionmaker(engine, audit_key=privacy.keys.audit_key, audit_key_id=privacy.keys.key_id)
        rng = random.Random(seed)
        with factory() as session, _rare_collections():
            world = build_world(session)
            catalog = register_templates(session, policies.templates, now)
            existing = session.scalar(select(func.count()).select_from(Person)) or 0
            created = existing == 0
            if not created and session.scalar(_SEEDED_MARK) is None:
                raise DemoIncomplete(
                    f"the demo database {engine.url.render_as_string(hide_password=True)} holds {existing} persons "
                    "from a seeding that did not finish; remove it (for the default SQLite demo, the file "
                    f"{engine.url.database}) and run `casemgmt demo` again")
            if created:
                _seed_agreements(session, privacy, world, now)
                _seed_contacts(session, world)
                shown = SeedProgress(start=now - timedelta(days=SEEDED_DAYS), end=now, stream=progress,
                                     totals={"persons": persons, "conferences": len(_conference_dates(now))})
                _seed_cases(session, catalog, privacy, policies, world, rng, persons, now, shown)
                shown.step("offers and Sprachenpass entries")
                seed_offers(session, catalog, privacy, policies, world, seed, now)
                # Last: the mark that the seed is whole. A seeding that stopped half-way has persons
                # but no mark, and the next start says so instead of serving a partial world.
                write_audit(session, [AuditEntry(
                    agent_user=SEED_USER, agent_organisation_id=None, action="C", subtype=SEEDED_SUBTYPE,
                    entity_type="installation", detail=f"demo seeded: {persons} persons, seed {seed}")], now)
                session.commit()
                shown.finish()
            summary = DemoSummary(
                database=engine.url.render_as_string(hide_password=True),
                persons=session.scalar(select(func.count()).select_from(Person)) or 0,
                created=created,
            )
            _count(session, summary, now)
    finally:
        engine.dispose()
    return summary


def _seed_cases(session: Session, catalog: TemplateCatalog, privacy: Privacy, policies,
                world: World, rng: random.Random, count: int, now: datetime, progress: SeedProgress) -> None:
    towns = list(world.town_population)
    town_ids = [world.jurisdictions[t] for t in towns]
    weights = [world.town_population[t] for t in towns]
    managers = [
        actor_of(session.get(Organisation, world.organisations[key]), user, frozenset({"case_manager"}))
        for user, key in (("cm.ennetal", "ennetal_ki"), ("cm.caritas", "ennetal_caritas"))
    ]
    actors = _Actors(session)
    kinds = list(CHAIN_MIX)
    shares = [CHAIN_MIX[k][0] for k in kinds]
    cases = []
    for _ in range(count):
        template_key = rng.choices(kinds, weights=shares)[0]
        attributes = _weighted(rng, CHAIN_MIX[template_key][1])
        town = rng.choices(towns, weights=weights)[0]
        started = now - timedelta(days=rng.uniform(3, SEEDED_DAYS))
        manager = managers[0] if rng.random() < 0.7 else managers[1]
        body = _intake(rng, world, manager, town, started, template_key, attributes)
        cases.append(_case(session, catalog, privacy, policies.handovers, town_ids, rng, actors, manager,
                           body, template_key, started, now, progress))
    cases.append(_escalation_timer(session, policies.handovers, now - timedelta(days=SEEDED_DAYS), now))
    conferences = Conferences()
    cases.extend(_conference(session, catalog, privacy, policies, world, rng, conferences, at, progress)
                 for at in _conference_dates(now))
    _run_in_time_order(cases, progress)
    progress.step("proposals of the Lenkungsgruppe")
    _seed_proposals(session, privacy, policies, world, rng, conferences, now)
    progress.step("data subject requests")
    _seed_rights(session, catalog, privacy, policies, world, rng, managers[0], now)


def _seed_rights(session: Session, catalog: TemplateCatalog, privacy: Privacy, policies, world: World,
                 rng: random.Random, manager: Actor, now: datetime) -> None:
    """The data protection officer's desk: requests in every state (one overdue), one erased and
    one restricted person, a legal hold, and old closed cases whose retention ends within 30 days."""
    from casemgmt.rights import service as rights
    from casemgmt.rights.lifecycle import RequestAction, RequestKind
    from casemgmt.rights.schemas import ErasureIn, RequestActionIn, RequestIn

    calendar = policies.handovers.calendar
    conference_category = policies.steering.conference_category
    dpo = actor_of(session.get(Organisation, world.organisations["ennetal_ki"]), "dsb.ennetal", frozenset({"dpo"}))
    towns = [t for t in world.town_population if t != "breckenfeld"]

    def old_case(closed: datetime, benefits: bool = True) -> uuid.UUID:
        town = rng.choice(towns)
        body = _intake(rng, world, manager, town, closed - timedelta(days=300), "eu_newcomer", ("eu_free_movement", "good", "none"))
        if not benefits:
            body.fields.pop("benefit_regime", None)
        person = create_person(session, privacy, manager, body, closed - timedelta(days=300))
        chain = chains.start_chain(session, catalog, manager, person.id, "eu_newcomer", closed - timedelta(days=299))
        chains.close_chain(session, catalog, manager, chain.id, "moved_away", None, None, closed)
        return person.id

    # Closed three years ago give or take a few days: housing, health and case notes reach the
    # end of their three years within the next 30 days (one already did: `retention run` deletes it).
    due = [old_case(now - timedelta(days=365 * 3 + 1 - days)) for days in (-4, 6, 17, 28)]
    rights.set_measure(session, privacy, dpo, due[1], "legal_hold", "Widerspruchsverfahren beim Sozialgericht anhängig",
                       None, now)
    # One person erased on request after their case ended (no benefit data: no retention duty).
    gone = old_case(now - timedelta(days=60), benefits=False)
    req = rights.register_request(session, privacy, calendar, dpo, RequestIn(
        person_id=gone, kind=RequestKind.erasure, received_at=now - timedelta(days=9),
        identity_checked_by="Bürgerbüro Wittmar", identity_check_method="Personalausweis vorgelegt"), now)
    rights.erase_on_request(session, privacy, conference_category, dpo, gone, ErasureIn(
        request_id=req.id, legal_assessment="Einwilligung widerrufen; keine Aufbewahrungspflicht für die gehaltenen Daten"), now)
    area = list(session.scalars(select(Person.id).where(Person.processing == "active").order_by(Person.created_at).limit(8)))
    # One restricted person: the accuracy of the recorded data is contested (Art. 18(1)(a)).
    req = rights.register_request(session, privacy, calendar, dpo, RequestIn(
        person_id=area[0], kind=RequestKind.restriction, received_at=now - timedelta(days=3),
        identity_checked_by="Kommunales Integrationszentrum", identity_check_method="persönlich bekannt, Ausweis vorgelegt"), now)
    rights.set_measure(session, privacy, dpo, area[0], "restriction", "Richtigkeit der Angaben zur Familie bestritten",
                       req.id, now)
    steps = {
        "received": [],
        "in_progress": [RequestAction.start],
        "extended": [RequestAction.start, RequestAction.extend],
        "answered": [RequestAction.start, RequestAction.answer],
        "refused": [RequestAction.refuse],
    }
    texts = {RequestAction.extend: "Unterlagen mehrerer Stellen sind zusammenzutragen",
             RequestAction.answer: "Auskunft mit Brief versandt", RequestAction.refuse: "Identität nicht nachgewiesen"}
    kinds = [RequestKind.access, RequestKind.rectification, RequestKind.portability, RequestKind.access,
             RequestKind.objection, RequestKind.access]
    for i, (state, actions) in enumerate([*steps.items(), ("received", [])]):
        days_ago = 40 if i == len(steps) else rng.randint(2, 20)  # the last one is overdue
        req = rights.register_request(session, privacy, calendar, dpo, RequestIn(
            person_id=area[1 + i], kind=kinds[i], received_at=now - timedelta(days=days_ago),
            identity_checked_by="Kommunales Integrationszentrum", identity_check_method="Personalausweis vorgelegt"), now)
        for action in actions:
            rights.act_on_request(session, privacy, calendar, dpo, req.id,
                                  RequestActionIn(action=action, reason=texts.get(action)), now)


def _intake(rng: random.Random, world: World, manager: Actor, town: str, at: datetime,
            template_key: str, attributes: tuple[str, str, str]) -> PersonCreateIn:
    """What a first interview records: invented names, the residence attributes, and consents of
    every kind, so the demo shows redaction differing by organisation and consent."""
    family = rng.choice(FAMILY_NAMES)
    given = rng.choice(GIVEN_NAMES)
    minor = template_key == "uma"
    age = rng.randint(14, 17) if minor else rng.randint(18, 25) if template_key == "young_adult" else rng.randint(19, 58)
    birth = (at - timedelta(days=365.25 * age + rng.randint(0, 364))).date().isoformat()
    fields: dict[str, object] = {
        "family_name": family,
        "given_names": given,
        "birth_date": birth,
        "nationality": rng.choice(NATIONALITIES[template_key]),
        "address": f"{rng.choice(STREETS)} {rng.randint(1, 120)}, {town.replace('_', ' ').title()}",
        "phone": f"+49 23{rng.randint(10, 99)} {rng.randint(100000, 999999)}",
        "preferred_language": rng.choice(LANGUAGES),
        "interpreter_needed": rng.random() < 0.6,
    }
    consents: list[ConsentIn] = []
    base = {"consequences_explained": True, "collection_method": "written",
            "language": fields["preferred_language"], "interpreter_used": bool(fields["interpreter_needed"])}
    if rng.random() < 0.85:
        # The case management's own consent; some persons also release health information.
        health = rng.random() < 0.25
        consents.append(ConsentIn(
            recipients=[{"organisation_id": manager.organisation_id}],
            categories=CASE_MANAGEMENT_CATEGORIES + (["health"] if health else []),
            purpose="case_management", explicit_special=health,
            evidence_reference=f"EW-{at:%Y}-{rng.randint(10000, 99999)}", valid_from=at, **base,
        ))
        status, perspective, benefits = attributes
        fields.update({
            "residence_status": status, "bleibeperspektive": perspective, "benefit_regime": benefits,
            "german_level": rng.choice(["none", "A1", "A1", "A2", "B1", "B2"]),
            "children": rng.choice([0, 0, 1, 2, 3]) if not minor else 0,
            "housing_situation": rng.choice(["central_shelter", "municipal_shelter", "own_flat", "shared_flat"]),
            "case_notes": rng.choice(CASE_NOTES),
        })
        if health:
            fields["psychosocial_support"] = rng.random() < 0.5
    if rng.random() < CONFERENCE_CONSENT_SHARE:
        # A Schweigepflichtentbindung for the Kreis's case conferences: the offices at the table.
        consents.append(ConsentIn(
            recipients=[{"organisation_kind": kind, "jurisdiction_id": world.jurisdictions["kreis_ennetal"]}
                        for kind in CONFERENCE_KINDS],
            categories=["case_notes"], purpose="case_conference",
            evidence_reference=f"EW-FK-{rng.randint(1000, 9999)}", valid_from=at, **base,
        ))
    if rng.random() < 0.2:
        # A consent to the schools of the place the person lives, limited in time; some expire.
        until = at + timedelta(days=rng.choice([90, 365, 730]))
        consents.append(ConsentIn(
            recipients=[{"organisation_kind": "schulamt", "jurisdiction_id": world.jurisdictions[town]}],
            categories=["family", "language"], purpose="schooling",
            evidence_reference=f"EW-S-{rng.randint(1000, 9999)}", valid_from=at, valid_until=until, **base,
        ))
    return PersonCreateIn(lead_jurisdiction_id=world.jurisdictions[town], fields=fields, consents=consents)


def _seed_agreements(session: Session, privacy: Privacy, world: World, now: datetime) -> None:
    """The Kreis's agreement on case-triggered exchange with the employment agency."""
    admin = actor_of(session.get(Organisation, world.organisations["ennetal_ki"]), "admin.ennetal",
                     frozenset({"admin"}))
    record_agreement(session, privacy, admin, DataAgreementIn(
        title="Kooperationsvereinbarung Übergang Schule-Beruf / Integration Point Ennetal",
        organisation_ids=[world.organisations[k] for k in ("ennetal_ki", "ennetal_caritas", "ennetal_agentur")],
        categories=["residence", "benefits"], purpose="employment_promotion",
        valid_from=now - timedelta(days=800), valid_until=now + timedelta(days=365),
        document_reference="DAV-ENNETAL-2024-03",
    ), now - timedelta(days=800))


def _count(session: Session, summary: DemoSummary, now: datetime) -> None:
    """Tally chains by template and by derived status, through the same listing users get."""
    cursor = None
    while True:
        page = chains.list_chains(session, chains.ChainFilters(), 200, cursor, now)
        for item in page.items:
            summary.chains_by_template[item.template_key] += 1
            summary.chains_by_status[item.status.value] += 1
        cursor = page.next_cursor
        if cursor is None:
            return
