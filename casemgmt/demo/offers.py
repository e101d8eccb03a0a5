"""The demo Kreis's Angebotsdatenbank and Sprachenpass entries: about 60 offers across the
towns (courses, counselling, childcare, sports, volunteering; some full, some starting within
two weeks, some held or supported in other languages than German), a few good-practice
examples, enrolments of waiting chains into courses with a place (through the service, so they
are step events and take places), and a Sprachenpass entry from the course provider for every
person who completed a course step. Uses its own random generator, so the rest of the demo is
seeded exactly as before."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemgmt.chains.catalog import TemplateCatalog
from casemgmt.chains.engine import ChainLifecycle
from casemgmt.chains.models import Chain, ChainStep
from casemgmt.demo.world import TOWNS, World
from casemgmt.jurisdictions.models import Organisation
from casemgmt.languagepass import service as languagepass
from casemgmt.languagepass.schemas import EntryIn
from casemgmt.offers import service as offers
from casemgmt.offers.models import Offer, OfferBooking
from casemgmt.offers.schemas import BookingIn, GoodPracticeIn, OfferIn
from casemgmt.persons.models import Person
from casemgmt.privacy.service import Privacy
from casemgmt.problems import Problem

# kind -> (how many, providers, title pattern, capacity range or None for no limit)
CATALOGUE = [
    ("integration_course", 12, ["ennetal_vhs", "ennetal_sprachschule"], "Integrationskurs {slot}", (15, 25)),
    ("integration_course_childcare", 5, ["ennetal_vhs"], "Integrationskurs mit Kinderbetreuung {slot}", (10, 16)),
    ("youth_integration_course", 3, ["ennetal_sprachschule"], "Jugendintegrationskurs {slot}", (12, 20)),
    ("literacy_course", 5, ["ennetal_vhs", "ennetal_sprachschule"], "Alphabetisierungskurs {slot}", (10, 15)),
    ("basic_language_course", 4, ["ennetal_sprachschule"], "Basissprachkurs Deutsch {slot}", (12, 18)),
    ("job_related_german", 5, ["ennetal_vhs", "ennetal_sprachschule"], "Berufssprachkurs B1/B2 {slot}", (15, 25)),
    ("mbe", 4, ["ennetal_caritas"], "Migrationsberatung (MBE) {slot}", None),
    ("jmd", 3, ["ennetal_awo"], "Jugendmigrationsdienst Sprechstunde {slot}", None),
    ("counselling", 4, ["ennetal_anerkennung", "ennetal_caritas"], "Beratung zur Anerkennung {slot}", None),
    ("childcare", 5, ["ennetal_kita"], "Brückenprojekt Kita {slot}", (8, 15)),
    ("sports", 5, ["ennetal_mso"], "Sport und Begegnung {slot}", (15, 30)),
    ("volunteering", 5, ["ennetal_mso"], "Patenschaften und Ehrenamt {slot}", None),
]
SLOTS = ["am Vormittag", "am Nachmittag", "am Abend", "in Teilzeit", "kompakt"]
OTHER_LANGUAGES = ["Arabisch", "Farsi", "Ukrainisch", "Tigrinya", "Kurdisch", "Russisch", "Türkisch"]
STAFF = ["Petra Kurzmann", "Jonas Brettschneider", "Aylin Demirtas", "Miriam Vogelsang", "Tarek Chaouki",
         "Sabine Hollweg", "Oksana Melnyk", "Henrik Aldag"]
COURSE_STEPS = ("integration_course", "language_course", "language_support", "job_related_german")
ENROL_SHARE = 0.5  # of the waiting course steps with a matching offer that has a place


def seed_offers(session: Session, catalog: TemplateCatalog, privacy: Privacy, policies, world: World,
                seed: int, now: datetime) -> None:
    rng = random.Random(seed * 7919 + 16)
    policy, k = policies.offers, policies.steering.k
    towns = [key for key, _, _ in TOWNS]
    weights = [n for _, _, n in TOWNS]
    actors: dict[str, object] = {}

    def actor(key: str, roles=frozenset({"clerk"})):
        if key not in actors:
            from casemgmt.demo.seed import actor_of

            actors[key] = actor_of(session.get(Organisation, world.organisations[key]), f"demo.{key}", roles)
        return actors[key]

    today = now.date()
    made: list = []
    for kind, count, providers, pattern, capacity in CATALOGUE:
        for i in range(count):
            town = rng.choices(towns, weights=weights)[0]
            served = [world.jurisdictions["kreis_ennetal"]] if rng.random() < 0.15 else [world.jurisdictions[town]]
            if len(served) == 1 and rng.random() < 0.25:  # a neighbouring town too
                served.append(world.jurisdictions[rng.choice([t for t in towns if t != town])])
            languages = ["Deutsch"] + (rng.sample(OTHER_LANGUAGES, rng.randint(1, 2)) if rng.random() < 0.35 else [])
            start = today + timedelta(days=rng.choice([rng.randint(2, 14), rng.randint(15, 120), -rng.randint(5, 60)]))
            cap = rng.randint(*capacity) if capacity else None
            free = None if cap is None else (0 if rng.random() < 0.2 else rng.randint(1, cap))
            name = dict((t, n) for t, n, _ in TOWNS)[town]
            body = OfferIn(
                offer_kind=kind, title=pattern.format(slot=SLOTS[i % len(SLOTS)]) + f" in {name}",
                description=policy.kinds[kind].description or policy.kinds[kind].title,
                towns=served, address=f"Bildungszentrum {name}", languages=languages,
                target_residence_statuses=[] if kind not in ("integration_course", "integration_course_childcare")
                else ["protection_granted", "third_country_permit", "spaetaussiedler", "eu_free_movement"],
                age_min=14 if kind == "youth_integration_course" else None,
                age_max=27 if kind in ("youth_integration_course", "jmd") else None,
                accessibility=rng.choice(["barrierefrei", "Aufzug vorhanden", ""]),
                cost=rng.choice(["kostenfrei", "Kostenbeitrag nach Bescheid des BAMF", "kostenfrei mit Berechtigung"]),
                starts_on=start if capacity else None, evening=SLOTS[i % len(SLOTS)] == "am Abend",
                part_time=SLOTS[i % len(SLOTS)] == "in Teilzeit", schedule=rng.choice(
                    ["Mo-Fr 8:30-12:45", "Mo, Mi, Do 17:30-20:45", "Di und Do 14:00-17:00", "nach Vereinbarung"]),
                capacity=cap, free_places=free,
                contacts=[{"name": rng.choice(STAFF), "role": "Ansprechperson", "phone": "02335 " + str(rng.randint(1000, 9999))}],
                links=[], valid_from=today - timedelta(days=400), valid_until=None,
                provider_organisation_id=world.organisations[rng.choice(providers)])
            made.append(offers.create_offer(session, privacy, policy, k, actor("ennetal_ki", frozenset({"case_manager"})),
                                            body, now))
    ki = actor("ennetal_ki", frozenset({"case_manager"}))
    for title, text in (("Kinderbetreuung im Nebenraum", "Eltern nehmen am Kurs teil, weil ihre Kinder im "
                                                         "Nebenraum betreut werden; die Abbrüche sanken deutlich."),
                        ("Kursstart mit Lotsinnen", "Ehrenamtliche begleiten die ersten zwei Kurswochen; "
                                                    "so finden alle den Weg zum Kursort.")):
        offer = next(o for o in made if o.offer_kind == ("integration_course_childcare" if "Kinder" in title
                                                         else "integration_course"))
        offers.add_good_practice(session, privacy, ki, GoodPracticeIn(offer_id=offer.id, title=title, text=text), now)
    _enrol_waiting(session, catalog, privacy, policies, rng, now)
    _language_passes(session, privacy, policies, rng, now)


def _enrol_waiting(session: Session, catalog: TemplateCatalog, privacy: Privacy, policies, rng: random.Random,
                   now: datetime) -> None:
    """About half of the waiting course steps are enrolled in the best matching offer with a
    place of the provider doing the step, by the chain's case management, through the service
    (events, places taken)."""
    from casemgmt.demo.seed import actor_of

    rows = session.execute(
        select(Chain.id, Chain.case_management_organisation_id, ChainStep.key, ChainStep.assigned_organisation_id)
        .join(ChainStep, ChainStep.chain_id == Chain.id)
        .join(Person, Person.id == Chain.person_id)
        .where(Chain.lifecycle == ChainLifecycle.open.value, ChainStep.key.in_(COURSE_STEPS),
               ChainStep.state.in_(("ready", "in_progress")), Person.processing == "active")
        .order_by(Chain.started_at, Chain.id)).all()
    managers: dict[int, object] = {}
    for chain_id, manager_id, step_key, assigned in rows:
        if rng.random() > ENROL_SHARE:
            continue
        if manager_id not in managers:
            managers[manager_id] = actor_of(session.get(Organisation, manager_id), "demo.case_manager",
                                            frozenset({"case_manager"}))
        found = offers.matching_offers(session, catalog, privacy, policies.offers, policies.steering.k,
                                       managers[manager_id], chain_id, step_key, None, now)
        # A course of the provider doing the step: booking another provider's course would give
        # the step to it, and the demo keeps one course provider without cases (it has offers only).
        choice = next((m for m in found.offers if m.has_place and m.offer.provider_organisation_id == assigned), None)
        if choice is None:
            continue
        try:
            offers.book_offer(session, catalog, policies.offers, managers[manager_id], chain_id, step_key,
                              choice.offer.id, BookingIn(action="enrol"), now)
        except Problem:
            session.rollback()


LEVEL_BY_STEP = {"integration_course": ["A2", "B1", "B1", "B1"], "language_course": ["A1", "A2", "B1"],
                 "language_support": ["A1", "A2", "A2"], "job_related_german": ["B1", "B2", "B2"]}


def _language_passes(session: Session, privacy: Privacy, policies, rng: random.Random, now: datetime) -> None:
    """Every person who completed a course step gets an entry from the provider that did it,
    for one of its offers of a kind serving the step (recorded as the enrolment it was)."""
    from casemgmt.demo.seed import actor_of

    rows = session.execute(
        select(Chain.id, Chain.person_id, ChainStep.key, ChainStep.assigned_organisation_id, ChainStep.started_at,
               ChainStep.completed_at)
        .join(ChainStep, ChainStep.chain_id == Chain.id)
        .join(Person, Person.id == Chain.person_id)
        .where(ChainStep.key.in_(COURSE_STEPS), ChainStep.state == "completed",
               ChainStep.assigned_organisation_id.is_not(None), Person.processing == "active")
        .order_by(Chain.started_at, Chain.id)).all()
    providers: dict[int, object] = {}
    for chain_id, person_id, step_key, provider_id, started_at, completed_at in rows:
        kinds = policies.offers.kinds_for_step(step_key)
        offer = session.scalar(select(Offer).where(Offer.provider_organisation_id == provider_id,
                                                   Offer.kind.in_(kinds)).order_by(Offer.title).limit(1))
        if offer is None:
            continue
        if provider_id not in providers:
            providers[provider_id] = actor_of(session.get(Organisation, provider_id), "demo.course_provider")
        if session.scalar(select(OfferBooking.id).where(OfferBooking.chain_id == chain_id,
                                                        OfferBooking.step_key == step_key)) is None:
            session.add(OfferBooking(offer_id=offer.id, chain_id=chain_id, step_key=step_key, person_id=person_id,
                                     state="enrolled", enrolled_at=started_at or completed_at,
                                     organisation_id=provider_id, updated_at=completed_at or now))
        level = rng.choice(LEVEL_BY_STEP[step_key])
        skills = {s: level for s in ("listening", "reading", "speaking")} | {"writing": rng.choice(["A2", level])}
        certificates = []
        if step_key in ("integration_course", "job_related_german") and rng.random() < 0.7:
            exam = "DTZ" if step_key == "integration_course" else "telc"
            certificates = [{"exam": exam, "title": "Deutsch-Test für Zuwanderer" if exam == "DTZ"
                             else f"telc Deutsch {level} Beruf", "level": level,
                             "date": (completed_at or now).date().isoformat(),
                             "evidence_reference": f"{exam}-{(completed_at or now).year}-{rng.randint(100, 999)}"}]
        entry = EntryIn(offer_id=offer.id, from_date=(started_at or completed_at or now).date(),
                        to_date=(completed_at or now).date(), hours=rng.choice([100, 300, 400, 700]),
                        levels=skills, certificates=certificates)
        try:
            languagepass.add_entry(session, privacy, providers[provider_id], person_id, entry, completed_at or now)
        except Problem:
            session.rollback()
