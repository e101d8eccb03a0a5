"""The taxonomy of the Angebotsdatenbank (``policies/offers.yaml``): offer kinds, the chain steps
each kind serves, and the languages offers are held in. Pure apart from reading the file; every
problem is a :class:`PolicyError` with file, line and field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.chains.spec import ChainTemplate
from casemgmt.policy.source import PolicyError, line_of, load_yaml, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _KindDoc(_Strict):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=1000)
    serves_steps: list[str] = Field(default_factory=list)
    course: bool = False


class _PublicDoc(_Strict):
    max_start_within_days: int = Field(default=365, ge=1, le=3660)


class _OffersDoc(_Strict):
    kinds: dict[str, _KindDoc] = Field(min_length=1)
    languages: list[str] = Field(min_length=1)
    public: _PublicDoc = _PublicDoc()


@dataclass(frozen=True)
class OfferKind:
    """A kind of integration offer (Integrationskurs, MBE, Sport, ...)."""

    key: str
    title: str
    description: str
    serves_steps: frozenset[str]
    course: bool


@dataclass(frozen=True)
class OfferPolicy:
    """The kinds, the languages and the public search's limits."""

    kinds: dict[str, OfferKind]
    languages: tuple[str, ...]
    max_start_within_days: int

    def kinds_for_step(self, step_key: str) -> list[str]:
        """The offer kinds that serve a chain step (empty: no offer is booked on it)."""
        return [k.key for k in self.kinds.values() if step_key in k.serves_steps]

    def step_kinds(self) -> dict[str, list[str]]:
        """Every step key that some kind serves, with those kinds."""
        out: dict[str, list[str]] = {}
        for kind in self.kinds.values():
            for step in sorted(kind.serves_steps):
                out.setdefault(step, []).append(kind.key)
        return out


def load_offer_policy(path: Path, templates: Mapping[str, ChainTemplate]) -> OfferPolicy:
    raw = load_yaml(path)
    doc: _OffersDoc = validate(_OffersDoc, raw, path)
    step_keys = {s.key for t in templates.values() for s in t.steps}
    kinds: dict[str, OfferKind] = {}
    for key, kind in doc.kinds.items():
        if not key.isidentifier() or not key.islower():
            raise PolicyError(path, line_of(raw, ["kinds", key]), f"kinds.{key}",
                              "a kind key is lower case letters, digits and underscores")
        for i, step in enumerate(kind.serves_steps):
            if step not in step_keys:
                raise PolicyError(path, line_of(raw, ["kinds", key, "serves_steps", i]),
                                  f"kinds.{key}.serves_steps[{i}]", f"no chain template has a step '{step}'")
        kinds[key] = OfferKind(key, kind.title, kind.description, frozenset(kind.serves_steps), kind.course)
    seen: set[str] = set()
    for i, language in enumerate(doc.languages):
        if not language.strip() or language in seen:
            raise PolicyError(path, line_of(raw, ["languages", i]), f"languages[{i}]",
                              f"empty or duplicate language '{language}'")
        seen.add(language)
    return OfferPolicy(kinds, tuple(doc.languages), doc.public.max_start_within_days)
