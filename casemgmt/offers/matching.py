"""Which offers fit a chain step, and in what order (pure: no I/O).

An offer fits when its kind serves the step, it is valid on the day, it is open to the person's
town, and (if it names target groups) to the person's residence status and age. Among the
fitting ones, the case manager sees first those held or supported in the person's language,
then those that have a place, then the earliest start (a course that already runs counts from
today), then the most free places; the title breaks ties so the order is stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

GERMAN = "Deutsch"
FAR_FUTURE = date.max
MAX_AGE = 120  # the highest age an offer's range or a search may name


@dataclass(frozen=True)
class Candidate:
    """What the ranking needs of an offer."""

    id: object
    title: str
    kind: str
    towns: frozenset[int]
    languages: frozenset[str]
    target_residence_statuses: frozenset[str]
    age_min: int | None
    age_max: int | None
    starts_on: date | None
    free_places: int | None  # None: no limit
    valid_from: date
    valid_until: date | None


@dataclass(frozen=True)
class Need:
    """What the ranking knows of the person and the step: every part may be unknown (None), for
    example when the caller has no basis to read the person's language."""

    kinds: frozenset[str]
    town_path: Sequence[int]  # jurisdiction ids from the root down to the person's town
    language: str | None = None
    residence_status: str | None = None
    age: int | None = None


def age_on(birth: date, day: date) -> int:
    """Completed years on ``day``: one more from the birthday on (a 29 February birthday counts
    from 1 March in other years)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def valid_on(c: Candidate, day: date) -> bool:
    return c.valid_from <= day and (c.valid_until is None or day <= c.valid_until)


def serves_town(c: Candidate, town_path: Sequence[int]) -> bool:
    """An offer names towns or a Kreis; it is open to a town when it names the town or one of
    the jurisdictions above it."""
    return any(j in c.towns for j in town_path)


def fits(c: Candidate, need: Need, day: date) -> bool:
    if c.kind not in need.kinds or not valid_on(c, day) or not serves_town(c, need.town_path):
        return False
    if c.target_residence_statuses and need.residence_status is not None \
            and need.residence_status not in c.target_residence_statuses:
        return False
    if need.age is not None:
        if c.age_min is not None and need.age < c.age_min:
            return False
        if c.age_max is not None and need.age > c.age_max:
            return False
    return True


def has_place(c: Candidate) -> bool:
    return c.free_places is None or c.free_places > 0


def speaks(c: Candidate, language: str | None) -> bool:
    return language is not None and language in c.languages


def rank_key(c: Candidate, need: Need, day: date) -> tuple:
    start = FAR_FUTURE if c.starts_on is None else max(c.starts_on, day)
    places = -(10**9) if c.free_places is None else -c.free_places
    return (not speaks(c, need.language) if need.language and need.language != GERMAN else False,
            not has_place(c), start, places, c.title, str(c.id))


def rank(candidates: Iterable[Candidate], need: Need, day: date) -> list[Candidate]:
    """The fitting offers, best first."""
    return sorted((c for c in candidates if fits(c, need, day)), key=lambda c: rank_key(c, need, day))


def places_band(free_places: int | None, k: int) -> str:
    """What the public directory says about places, without a number: an exact count of free
    places next to a known capacity would tell how many persons are enrolled (a count under k).
    ``open`` (no limit), ``available`` (at least k free), ``few`` (1..k-1 free), ``full``."""
    if free_places is None:
        return "open"
    if free_places <= 0:
        return "full"
    return "few" if free_places < k else "available"
