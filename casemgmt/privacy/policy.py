"""The data catalogue (``policies/data.yaml``) and the statutory legal bases and purposes
(``policies/legal_bases.yaml``), validated at start with file, line and field in every error."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.policy.source import PolicyError, line_of, load_yaml, validate

KEY = r"^[a-z][a-z0-9_]*$"
ACTIONS = ("read", "write")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


START_EVENTS = ("case_closed", "last_contact")


class _Retention(_Strict):
    years: int = Field(ge=0, le=100)
    after: Literal["case_closed", "last_contact"]
    source: str = Field(min_length=1)
    obligation: bool = False


class _CategoryDoc(_Strict):
    title: str = Field(min_length=1)
    description: str = ""
    special: bool = False
    portable: bool = False
    retention: _Retention


class _FieldDoc(_Strict):
    category: str
    type: Literal["text", "date", "enum", "integer", "boolean"]
    title: str = Field(min_length=1)
    max_length: int | None = Field(default=None, ge=1, le=100_000)
    values: list[str] | None = None
    min: int | None = None
    max: int | None = None


class _DataDoc(_Strict):
    categories: dict[str, _CategoryDoc] = Field(min_length=1)
    fields: dict[str, _FieldDoc] = Field(min_length=1)


class _PurposeDoc(_Strict):
    title: str = Field(min_length=1)
    description: str = ""


class _StatuteDoc(_Strict):
    id: str = Field(pattern=KEY)
    organisation_kind: str
    purposes: list[str] = Field(min_length=1)
    categories: list[str] = Field(min_length=1)
    actions: list[Literal["read", "write"]] = Field(min_length=1)
    law: str = Field(min_length=1)


class _BasesDoc(_Strict):
    purposes: dict[str, _PurposeDoc] = Field(min_length=1)
    default_purpose: dict[str, str]
    consent_recorders: list[str] = Field(min_length=1)
    statutory: list[_StatuteDoc]


@dataclass(frozen=True)
class RetentionRule:
    """How long a category is kept: ``years`` after the start event ``after`` (``case_closed``:
    the person's last chain ended; ``last_contact``: the last time anybody worked on the case).
    ``source`` names the statute or the municipal deletion concept. With ``obligation`` the period
    is a duty to keep (erasure on request is refused while it runs, GDPR Art. 17(3)(b)); without,
    it is the longest the data may be kept."""

    years: int
    after: str
    source: str
    obligation: bool = False

    def describe(self) -> str:
        event = "the case is closed" if self.after == "case_closed" else "the last contact"
        return f"{self.years} years after {event}"


@dataclass(frozen=True)
class Category:
    """A category of personal data; access is decided per category."""

    key: str
    title: str
    description: str
    special: bool  # GDPR Art. 9
    retention_years: int
    retention: RetentionRule | None = None
    # Data the person provides themselves (handed over on request, GDPR Art. 20).
    portable: bool = False


@dataclass(frozen=True)
class FieldSpec:
    """One personal field of the person record."""

    key: str
    category: str
    type: str
    title: str
    max_length: int | None = None
    values: tuple[str, ...] | None = None
    min: int | None = None
    max: int | None = None

    def parse(self, value: Any) -> Any:
        """Check a value sent by a client; returns the value to store. Raises ValueError."""
        if value is None:
            return None
        if self.type == "text":
            if not isinstance(value, str):
                raise ValueError("must be a string")
            value = value.strip()
            if "\x00" in value:
                raise ValueError("must not contain NUL characters")
            if self.max_length and len(value) > self.max_length:
                raise ValueError(f"must be at most {self.max_length} characters")
            return value
        if self.type == "date":
            if not isinstance(value, str):
                raise ValueError("must be a date (YYYY-MM-DD)")
            try:
                return dt.date.fromisoformat(value).isoformat()
            except ValueError:
                raise ValueError("must be a date (YYYY-MM-DD)") from None
        if self.type == "enum":
            if value not in (self.values or ()):
                raise ValueError(f"must be one of {list(self.values or ())}")
            return value
        if self.type == "integer":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("must be an integer")
            if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
                raise ValueError(f"must be between {self.min} and {self.max}")
            return value
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value


@dataclass(frozen=True)
class Statute:
    """A statutory legal basis: an organisation kind's own task."""

    id: str
    organisation_kind: str
    purposes: frozenset[str]
    categories: frozenset[str]
    actions: frozenset[str]
    law: str


@dataclass(frozen=True)
class DataPolicy:
    """Everything the policy decision point reads from files."""

    categories: dict[str, Category]
    fields: dict[str, FieldSpec]
    purposes: dict[str, str]  # key -> title
    default_purpose: dict[str, str]  # organisation kind -> purpose
    statutes: tuple[Statute, ...]
    # Organisation kinds that record consents (those that run case management and take the
    # signed form); nobody else records one, least of all for itself.
    consent_recorders: frozenset[str] = frozenset()

    def fields_of(self, category: str) -> list[str]:
        return [f.key for f in self.fields.values() if f.category == category]


def load_data_policy(data_path: Path, bases_path: Path, organisation_kinds: Collection[str]) -> DataPolicy:
    raw = load_yaml(data_path)
    doc: _DataDoc = validate(_DataDoc, raw, data_path)
    categories: dict[str, Category] = {}
    for key, cat in doc.categories.items():
        _check_key(key, raw, ["categories", key], data_path)
        rule = cat.retention
        if rule.obligation and rule.years == 0:
            raise PolicyError(data_path, line_of(raw, ["categories", key, "retention", "obligation"]),
                              f"categories.{key}.retention.obligation",
                              "a retention obligation of 0 years keeps nothing: set years or drop obligation")
        if not any(ch.isalpha() for ch in rule.source):
            raise PolicyError(data_path, line_of(raw, ["categories", key, "retention", "source"]),
                              f"categories.{key}.retention.source",
                              "name the statute or the municipal deletion concept the period comes from")
        categories[key] = Category(key, cat.title, cat.description, cat.special, rule.years,
                                   RetentionRule(rule.years, rule.after, rule.source.strip(), rule.obligation),
                                   cat.portable)
    fields: dict[str, FieldSpec] = {}
    for key, f in doc.fields.items():
        loc: list[str | int] = ["fields", key]
        _check_key(key, raw, loc, data_path)
        if f.category not in categories:
            raise PolicyError(data_path, line_of(raw, [*loc, "category"]), f"fields.{key}.category",
                              f"unknown category '{f.category}' (known: {sorted(categories)})")
        if f.type == "enum" and not f.values:
            raise PolicyError(data_path, line_of(raw, loc), f"fields.{key}.values",
                              "an enum field needs a non-empty list of values")
        if f.type != "enum" and f.values is not None:
            raise PolicyError(data_path, line_of(raw, [*loc, "values"]), f"fields.{key}.values",
                              "only enum fields have values")
        fields[key] = FieldSpec(key, f.category, f.type, f.title, f.max_length,
                                tuple(f.values) if f.values else None, f.min, f.max)
    empty = [c for c in categories if not any(f.category == c for f in fields.values())]
    if empty:
        raise PolicyError(data_path, line_of(raw, ["categories", empty[0]]), f"categories.{empty[0]}",
                          "category has no fields")

    braw = load_yaml(bases_path)
    bdoc: _BasesDoc = validate(_BasesDoc, braw, bases_path)
    for key in bdoc.purposes:
        _check_key(key, braw, ["purposes", key], bases_path)
    for kind, purpose in bdoc.default_purpose.items():
        loc = ["default_purpose", kind]
        if kind not in organisation_kinds:
            raise PolicyError(bases_path, line_of(braw, loc), f"default_purpose.{kind}",
                              "unknown organisation kind")
        if purpose not in bdoc.purposes:
            raise PolicyError(bases_path, line_of(braw, loc), f"default_purpose.{kind}",
                              f"unknown purpose '{purpose}'")
    for i, kind in enumerate(bdoc.consent_recorders):
        if kind not in organisation_kinds:
            raise PolicyError(bases_path, line_of(braw, ["consent_recorders", i]),
                              f"consent_recorders[{i}]", f"unknown organisation kind '{kind}'")
    statutes: list[Statute] = []
    seen: set[str] = set()
    for i, st in enumerate(bdoc.statutory):
        loc = ["statutory", i]
        where = f"statutory[{i}]"
        if st.id in seen:
            raise PolicyError(bases_path, line_of(braw, [*loc, "id"]), f"{where}.id", f"duplicate id '{st.id}'")
        seen.add(st.id)
        if st.organisation_kind not in organisation_kinds:
            raise PolicyError(bases_path, line_of(braw, [*loc, "organisation_kind"]),
                              f"{where}.organisation_kind",
                              f"unknown organisation kind '{st.organisation_kind}'")
        for j, p in enumerate(st.purposes):
            if p not in bdoc.purposes:
                raise PolicyError(bases_path, line_of(braw, [*loc, "purposes", j]),
                                  f"{where}.purposes[{j}]", f"unknown purpose '{p}'")
        for j, c in enumerate(st.categories):
            if c not in categories:
                raise PolicyError(bases_path, line_of(braw, [*loc, "categories", j]),
                                  f"{where}.categories[{j}]", f"unknown category '{c}'")
        statutes.append(Statute(st.id, st.organisation_kind, frozenset(st.purposes),
                                frozenset(st.categories), frozenset(st.actions), st.law))
    return DataPolicy(
        categories=categories,
        fields=fields,
        purposes={k: p.title for k, p in bdoc.purposes.items()},
        default_purpose=dict(bdoc.default_purpose),
        statutes=tuple(statutes),
        consent_recorders=frozenset(bdoc.consent_recorders),
    )


def _check_key(key: str, raw: Any, loc: list[str | int], path: Path) -> None:
    import re

    if not re.fullmatch(KEY, key):
        raise PolicyError(path, line_of(raw, loc), ".".join(str(p) for p in loc),
                          "keys are snake_case (a-z, 0-9, _)")
