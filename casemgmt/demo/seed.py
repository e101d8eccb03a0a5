"""Seeds the demo database: the synthetic Kreis and several hundred persons whose chains were
walked through the real service layer at simulated past times, so every state, overdue steps,
blocked steps and closed chains appear as they would in a year of use. No real names: persons
are pseudonymous ids with residence attributes only."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from casemgmt.auth.tokens import mint_dev_token
from casemgmt.chains import service as chains
from casemgmt.chains.catalog import TemplateCatalog, register_templates
from casemgmt.chains.engine import Action, Actor, StepState
from casemgmt.chains.models import Chain
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER
from casemgmt.config import Settings
from casemgmt.database import make_engine, make_sessionmaker
from casemgmt.demo.world import World, build_world
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.jurisdictions.service import serving_organisations
from casemgmt.migrations import upgrade
from casemgmt.persons.models import Person
from casemgmt.policy.loader import load_policies
from casemgmt.problems import Problem

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
SKIP_REASONS = [
    "Nicht erforderlich nach Erstgespräch",
    "Person hat das Angebot abgelehnt",
    "Bereits anderweitig erledigt",
]
DEMO_USERS = [
    ("cm.ennetal", "ennetal_ki", ["case_manager"], "Case-Manager/in, KI Kreis Ennetal"),
    ("cm.caritas", "ennetal_caritas", ["case_manager"], "Case-Manager/in, Caritas Migrationsdienst"),
    ("abh.ennetal", "ennetal_abh", ["clerk"], "Sachbearbeitung Ausländerbehörde (Kreis)"),
    ("jc.ennetal", "ennetal_jobcenter", ["clerk"], "Sachbearbeitung Jobcenter"),
    ("soz.wittmar", "wittmar_sozialamt", ["clerk"], "Sachbearbeitung Sozialamt Wittmar"),
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
    """Resolves, per chain and owner kind, an organisation that may act, as an Actor."""

    def __init__(self, session: Session):
        self.session = session
        self._cache: dict[tuple[str, int], Actor | None] = {}

    def for_kind(self, kind: str, jurisdiction_id: int) -> Actor | None:
        key = (kind, jurisdiction_id)
        if key not in self._cache:
            orgs = serving_organisations(self.session, kind, jurisdiction_id)
            self._cache[key] = actor_of(orgs[0], f"demo.{orgs[0].key}") if orgs else None
        return self._cache[key]


def actor_of(org: Organisation, user: str, roles: frozenset[str] = frozenset({"clerk"})) -> Actor:
    return Actor(user_id=user, organisation_id=org.id, organisation_kind=org.kind,
                 jurisdiction_path=org.jurisdiction.path, roles=roles)


def _weighted(rng: random.Random, options: list[tuple[object, int]]):
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def _walk(
    session: Session,
    catalog: TemplateCatalog,
    rng: random.Random,
    chain,
    actors: _Actors,
    case_manager: Actor,
    start: datetime,
    until: datetime,
) -> tuple[object, datetime]:
    """Move a chain forward at simulated times between its start and ``until``. Each chain gets
    a pace and a point where it stops moving, so the demo shows chains at every stage."""
    now = start
    pace_days = rng.uniform(2, 10)
    # Most chains keep moving; some get stuck early, which is what the overdue views are for.
    stop_after = rng.randint(0, 12) if rng.random() < 0.2 else 200
    blocker = rng.random() < 0.1
    last = start
    for _ in range(stop_after):
        candidates = [s for s in chain.steps if s.state in (StepState.ready, StepState.in_progress, StepState.blocked)]
        if not candidates:
            break
        # Clerks mostly work on what is due first; sometimes on something else.
        if rng.random() < 0.75:
            step = min(candidates, key=lambda s: s.due_at or until + timedelta(days=3650))
        else:
            step = rng.choice(candidates)
        now += timedelta(days=rng.expovariate(1 / pace_days), hours=rng.randint(0, 8))
        if now >= until:
            break
        if step.owner == CASE_MANAGEMENT_OWNER:
            actor = case_manager
        else:
            actor = actors.for_kind(step.owner, chain.lead_jurisdiction_id)
            if actor is None:
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
                                           action.value, reason, chain.version, now)
        except Problem:
            continue
        last = now
        if blocker and action is Action.block:
            break  # leave it blocked: the demo needs stalled chains
    return chain, last


def seed_demo(settings: Settings, persons: int = 400, seed: int = 2017,
              now: datetime | None = None) -> DemoSummary:
    """Migrate the configured database and seed it unless it already holds persons."""
    now = now or datetime.now(UTC)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    policies = load_policies(settings.policy_dir)
    factory = make_sessionmaker(engine)
    rng = random.Random(seed)
    with factory() as session:
        world = build_world(session)
        catalog = register_templates(session, policies.templates, now)
        existing = session.scalar(select(func.count()).select_from(Person)) or 0
        created = existing == 0
        if created:
            _seed_cases(session, catalog, world, rng, persons, now)
        summary = DemoSummary(
            database=engine.url.render_as_string(hide_password=True),
            persons=session.scalar(select(func.count()).select_from(Person)) or 0,
            created=created,
        )
        _count(session, summary, now)
    for user, org, roles, title in DEMO_USERS:
        token = mint_dev_token(settings, user, org, roles)
        summary.tokens.append((user, org, ",".join(roles), title, token))
    engine.dispose()
    return summary


def _seed_cases(session: Session, catalog: TemplateCatalog, world: World, rng: random.Random,
                count: int, now: datetime) -> None:
    towns = list(world.town_population)
    weights = [world.town_population[t] for t in towns]
    managers = [
        actor_of(session.get(Organisation, world.organisations[key]), user, frozenset({"case_manager"}))
        for user, key in (("cm.ennetal", "ennetal_ki"), ("cm.caritas", "ennetal_caritas"))
    ]
    actors = _Actors(session)
    kinds = list(CHAIN_MIX)
    shares = [CHAIN_MIX[k][0] for k in kinds]
    for _ in range(count):
        template_key = rng.choices(kinds, weights=shares)[0]
        status, perspective, benefits = _weighted(rng, CHAIN_MIX[template_key][1])
        town = rng.choices(towns, weights=weights)[0]
        started = now - timedelta(days=rng.uniform(3, 540))
        manager = managers[0] if rng.random() < 0.7 else managers[1]
        person = Person(
            residence_status=status, bleibeperspektive=perspective, benefit_regime=benefits,
            lead_jurisdiction_id=world.jurisdictions[town],
            created_by_organisation_id=manager.organisation_id, created_at=started,
        )
        session.add(person)
        session.commit()
        chain = chains.start_chain(session, catalog, manager, person.id, template_key, started)
        chain, last = _walk(session, catalog, rng, chain, actors, manager, started, now)
        if rng.random() < 0.05 and chain.status.value not in ("completed", "closed"):
            reason = rng.choice(["moved_away", "ended_by_person"])
            note = "Umzug in ein anderes Bundesland" if reason == "moved_away" else None
            closed_at = min(now, last + timedelta(days=rng.uniform(1, 30)))
            chains.close_chain(session, catalog, manager, chain.id, reason, note, None, closed_at)


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
