"""CEFR levels of the Sprachenpass and the German level derived from its entries (pure).

The German level on the person record is the highest level the person has shown: a certificate
of a level counts for that level; without one, a course entry counts for the lowest level it
records over the skills assessed in it (a B1 in listening and an A2 in writing is A2 overall).
Entries of other languages do not count for German. No entry: no level is derived (None), and
the person record keeps what it had.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

CEFR = ("A1", "A2", "B1", "B2", "C1", "C2")
SKILLS = ("listening", "reading", "writing", "speaking")
SKILL_TITLES = {"listening": "Hören", "reading": "Lesen", "writing": "Schreiben", "speaking": "Sprechen"}
GERMAN = "Deutsch"


@dataclass(frozen=True)
class Shown:
    """What one entry shows: its language, levels per skill, levels of its certificates."""

    language: str
    levels: Mapping[str, str]
    certificate_levels: Sequence[str]


def rank_of(level: str) -> int:
    return CEFR.index(level)


def entry_level(entry: Shown) -> str | None:
    """The level one entry shows: its best certificate, else the lowest of its skill levels."""
    candidates = [rank_of(lvl) for lvl in entry.certificate_levels if lvl in CEFR]
    skills = [rank_of(lvl) for lvl in entry.levels.values() if lvl in CEFR]
    if skills:
        candidates.append(min(skills))
    return CEFR[max(candidates)] if candidates else None


def derived_german_level(entries: Iterable[Shown]) -> str | None:
    """The highest level any German entry shows (None without one)."""
    best = [rank_of(lvl) for e in entries if e.language == GERMAN and (lvl := entry_level(e)) is not None]
    return CEFR[max(best)] if best else None
