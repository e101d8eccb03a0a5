"""A synthetic Kreis shaped like DOMAIN.md section 10: a Land, one Kreis with nine towns from
about 9,000 to about 96,000 inhabitants, a kreisfreie Stadt next door, and the organisations an
Integrationskette passes through. Town and organisation names are invented."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemgmt.jurisdictions.models import (
    ALLOWED_PARENT,
    Jurisdiction,
    JurisdictionLevel,
    Organisation,
)

# (key, name, inhabitants) - sizes follow the spread of a real NRW Kreis (9,064 .. 96,382).
TOWNS: list[tuple[str, str, int]] = [
    ("wittmar", "Wittmar", 96_400),
    ("hattenberg", "Hattenberg", 54_900),
    ("sprockede", "Sprockede", 25_100),
    ("gevelstein", "Gevelstein", 31_200),
    ("schwelbach", "Schwelbach", 28_300),
    ("ennerich", "Ennerich", 30_100),
    ("herdeck", "Herdeck", 22_700),
    ("wetterau_ruhr", "Wetterau (Ruhr)", 27_600),
    ("breckenfeld", "Breckenfeld", 9_100),
]
KREIS = ("kreis_ennetal", "Kreis Ennetal")
CITY = ("hagenau", "Hagenau (kreisfreie Stadt)")

# Organisations serving the whole Kreis: (key suffix, name, kind)
KREIS_ORGS = [
    ("abh", "Ausländerbehörde Kreis Ennetal", "auslaenderbehoerde"),
    ("jobcenter", "Jobcenter Ennetal", "jobcenter"),
    ("agentur", "Agentur für Arbeit Ennetal-Hagenau", "agentur_fuer_arbeit"),
    ("ki", "Kommunales Integrationszentrum Kreis Ennetal", "kommunales_integrationszentrum"),
    ("schulamt", "Schulamt für den Kreis Ennetal", "schulamt"),
    ("gesundheitsamt", "Gesundheitsamt Kreis Ennetal", "gesundheitsamt"),
    ("jugendamt", "Kreisjugendamt Ennetal", "jugendamt"),
    ("vhs", "VHS Ennetal", "course_provider"),
    ("sprachschule", "Sprachinstitut Ruhrbogen gGmbH", "course_provider"),
    ("anerkennung", "Anerkennungsberatung Ennetal", "anerkennungsstelle"),
    ("einbuergerung", "Einbürgerungsstelle Kreis Ennetal", "einbuergerungsbehoerde"),
    ("caritas", "Caritas Migrationsdienst Ennetal", "wohlfahrtsverband"),
    ("awo", "AWO Jugendmigrationsdienst Ennetal", "wohlfahrtsverband"),
    ("integration_point", "Integration Point Ennetal", "integration_point"),
    ("kita", "Kita-Verbund Ennetal", "kita_traeger"),
    ("mso", "Forum der Migrantenvereine Ennetal", "migrantenorganisation"),
]
# Each town runs its own Sozialamt and Bürgerbüro; the large towns their own Jugendamt.
TOWN_ORGS = [
    ("sozialamt", "Sozialamt {town}", "sozialamt"),
    ("buergerbuero", "Bürgerbüro {town}", "buergerbuero"),
]
OWN_JUGENDAMT_ABOVE = 50_000
# The largest town runs its own integration office next to the Kreis's centre; people moving
# there from another town of the Kreis change case management.
OWN_INTEGRATION_OFFICE_ABOVE = 90_000
LAND_ORGS = [("bamf_ast", "BAMF Außenstelle (NRW)", "bamf")]
CITY_ORGS = [
    ("abh", "Ausländerbehörde Hagenau", "auslaenderbehoerde"),
    ("jobcenter", "Jobcenter Hagenau", "jobcenter"),
    ("sozialamt", "Sozialamt Hagenau", "sozialamt"),
    ("ki", "Kommunales Integrationszentrum Hagenau", "kommunales_integrationszentrum"),
    ("jugendamt", "Jugendamt Hagenau", "jugendamt"),
    ("schulamt", "Schulamt Hagenau", "schulamt"),
    ("buergerbuero", "Bürgerbüro Hagenau", "buergerbuero"),
]


@dataclass
class World:
    """Ids of what was created, by key."""

    jurisdictions: dict[str, int] = field(default_factory=dict)
    organisations: dict[str, int] = field(default_factory=dict)
    town_population: dict[str, int] = field(default_factory=dict)


def add_jurisdiction(session: Session, key: str, name: str, level: JurisdictionLevel,
                     parent: Jurisdiction | None) -> Jurisdiction:
    """Insert a jurisdiction under its parent, enforcing the NRW hierarchy."""
    expected = ALLOWED_PARENT[level]
    actual = JurisdictionLevel(parent.level) if parent else None
    if expected != actual:
        raise ValueError(f"a {level.value} must sit under a {expected}, not {actual}")
    j = Jurisdiction(key=key, name=name, level=level.value, parent_id=parent.id if parent else None,
                     path="")
    session.add(j)
    session.flush()
    j.path = f"{parent.path if parent else '/'}{j.id}/"
    session.flush()
    return j


def build_world(session: Session) -> World:
    """Create the synthetic Land, Kreis, towns and organisations (idempotent: reuses them)."""
    world = World()
    existing = session.scalar(select(Jurisdiction).where(Jurisdiction.key == "nrw"))
    if existing is not None:
        for j in session.scalars(select(Jurisdiction)):
            world.jurisdictions[j.key] = j.id
        for o in session.scalars(select(Organisation)):
            world.organisations[o.key] = o.id
        world.town_population = {k: n for k, _, n in TOWNS}
        return world

    def org(key: str, name: str, kind: str, where: Jurisdiction) -> None:
        o = Organisation(key=key, name=name, kind=kind, jurisdiction_id=where.id)
        session.add(o)
        session.flush()
        world.organisations[key] = o.id

    land = add_jurisdiction(session, "nrw", "Nordrhein-Westfalen", JurisdictionLevel.land, None)
    kreis = add_jurisdiction(session, KREIS[0], KREIS[1], JurisdictionLevel.kreis, land)
    city = add_jurisdiction(session, CITY[0], CITY[1], JurisdictionLevel.kreisfreie_stadt, land)
    world.jurisdictions.update({"nrw": land.id, KREIS[0]: kreis.id, CITY[0]: city.id})
    for suffix, name, kind in LAND_ORGS:
        org(suffix, name, kind, land)
    for suffix, name, kind in KREIS_ORGS:
        org(f"ennetal_{suffix}", name, kind, kreis)
    for key, name, inhabitants in TOWNS:
        town = add_jurisdiction(session, key, name, JurisdictionLevel.gemeinde, kreis)
        world.jurisdictions[key] = town.id
        world.town_population[key] = inhabitants
        for suffix, template, kind in TOWN_ORGS:
            org(f"{key}_{suffix}", template.format(town=name), kind, town)
        if inhabitants > OWN_JUGENDAMT_ABOVE:
            org(f"{key}_jugendamt", f"Jugendamt {name}", "jugendamt", town)
        if inhabitants > OWN_INTEGRATION_OFFICE_ABOVE:
            org(f"{key}_ki", f"Integrationsbüro der Stadt {name}", "kommunales_integrationszentrum", town)
    for suffix, name, kind in CITY_ORGS:
        org(f"hagenau_{suffix}", name, kind, city)
    session.commit()
    return world
