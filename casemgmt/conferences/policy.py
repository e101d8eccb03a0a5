"""Taxonomies (``policies/barriers.yaml``) and the settings of conferences, reports and the
export (``policies/steering.yaml``), validated at start with file, line and field."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.policy.source import PolicyError, line_of, load_yaml, validate

KEY = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Entry(_Strict):
    title: str = Field(min_length=1, max_length=200)
    description: str = ""


class _BarriersDoc(_Strict):
    barrier_categories: dict[str, _Entry] = Field(min_length=1)
    fields_of_action: dict[str, _Entry] = Field(min_length=1)


class _ConferencesDoc(_Strict):
    purpose: str
    category: str
    dots_per_participant: int = Field(ge=1, le=20)


class _ReportsDoc(_Strict):
    k: int = Field(default=5, ge=1, le=100)
    merge_towns: dict[str, str] = Field(default_factory=dict)


class _ActivityDoc(_Strict):
    completed: str | None = Field(default=None, min_length=1, max_length=120)
    started: str | None = Field(default=None, min_length=1, max_length=120)


class _ExportDoc(_Strict):
    min_variant_chains: int = Field(ge=1, le=1000)
    activities: dict[str, _ActivityDoc] = Field(default_factory=dict)


class _ReleasesDoc(_Strict):
    waiting_days: int = Field(default=60, ge=0, le=3650)
    first_quarter: str = Field(pattern=r"^\d{4}-Q[1-4]$")
    automatic: bool = True


class _PtableRowDoc(BaseModel):
    # Not strict: YAML gives [from, noise] as a list, and 0 as an int where a float is meant.
    model_config = ConfigDict(extra="forbid")
    count: int = Field(ge=1, le=1000)
    noise: list[tuple[float, int]] = Field(min_length=1)


class _OnDemandDoc(_Strict):
    ptable: list[_PtableRowDoc] = Field(min_length=1)


class _SteeringDoc(_Strict):
    conferences: _ConferencesDoc
    reports: _ReportsDoc
    releases: _ReleasesDoc
    on_demand: _OnDemandDoc
    export: _ExportDoc


@dataclass(frozen=True)
class SteeringPolicy:
    """What conferences and the steering reports are configured with."""

    barrier_categories: dict[str, str]  # key -> title
    fields_of_action: dict[str, str]
    conference_purpose: str
    conference_category: str
    dots_per_participant: int
    k: int
    min_variant_chains: int
    merge_towns: dict[str, str] = field(default_factory=dict)  # town key -> neighbour's key
    release_waiting_days: int = 60
    release_first_quarter: str = "2025-Q1"
    release_automatic: bool = True
    # Cell Key Method: per count 1..n, ((from, noise), ...) over cell keys in [0, 1)
    ptable: tuple[tuple[tuple[float, int], ...], ...] = ()
    activities: dict[str, dict[str, str]] = field(default_factory=dict)  # step key -> {action: name}
    # Titles filled in by casemgmt.policy.loader from the other policy files.
    kind_titles: dict[str, str] = field(default_factory=dict)
    step_titles: dict[str, str] = field(default_factory=dict)
    template_titles: dict[str, str] = field(default_factory=dict)
    step_order: tuple[str, ...] = ()  # every step key once: templates by key, steps in file order
    # Filled in from policies/offers.yaml: offer kind -> title, and -> the step keys it serves.
    offer_kind_titles: dict[str, str] = field(default_factory=dict)
    offer_steps: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _check_keys(path: Path, raw, section: str, keys) -> None:
    import re

    for key in keys:
        if not re.match(KEY, key):
            raise PolicyError(path, line_of(raw, [section, key]), f"{section}.{key}",
                              "keys are snake_case (a-z, 0-9, _)")


def load_steering_policy(barriers_path: Path, steering_path: Path, purposes: Collection[str],
                         categories: Collection[str]) -> SteeringPolicy:
    raw_b = load_yaml(barriers_path)
    barriers: _BarriersDoc = validate(_BarriersDoc, raw_b, barriers_path)
    _check_keys(barriers_path, raw_b, "barrier_categories", barriers.barrier_categories)
    _check_keys(barriers_path, raw_b, "fields_of_action", barriers.fields_of_action)
    raw_s = load_yaml(steering_path)
    doc: _SteeringDoc = validate(_SteeringDoc, raw_s, steering_path)
    if doc.conferences.purpose not in purposes:
        raise PolicyError(steering_path, line_of(raw_s, ["conferences", "purpose"]), "conferences.purpose",
                          f"unknown purpose '{doc.conferences.purpose}' (see legal_bases.yaml)")
    if doc.conferences.category not in categories:
        raise PolicyError(steering_path, line_of(raw_s, ["conferences", "category"]), "conferences.category",
                          f"unknown category '{doc.conferences.category}' (see data.yaml)")
    ptable = _check_ptable(steering_path, raw_s, doc.on_demand, doc.reports.k)
    for town, neighbour in doc.reports.merge_towns.items():
        if town == neighbour:
            raise PolicyError(steering_path, line_of(raw_s, ["reports", "merge_towns", town]),
                              f"reports.merge_towns.{town}", "a town cannot be merged with itself")
    return SteeringPolicy(
        barrier_categories={k: v.title for k, v in barriers.barrier_categories.items()},
        fields_of_action={k: v.title for k, v in barriers.fields_of_action.items()},
        conference_purpose=doc.conferences.purpose, conference_category=doc.conferences.category,
        dots_per_participant=doc.conferences.dots_per_participant, k=doc.reports.k,
        min_variant_chains=doc.export.min_variant_chains,
        merge_towns=dict(doc.reports.merge_towns),
        release_waiting_days=doc.releases.waiting_days, release_first_quarter=doc.releases.first_quarter,
        release_automatic=doc.releases.automatic, ptable=ptable,
        activities={step: {a: n for a, n in (("completed", e.completed), ("started", e.started)) if n}
                    for step, e in doc.export.activities.items()},
    )


def _check_ptable(path: Path, raw, doc: _OnDemandDoc, k: int) -> tuple[tuple[tuple[float, int], ...], ...]:
    """Rows for the counts 1, 2, ... in order; intervals from 0 upwards inside [0, 1); no bias;
    no published count below 0 or in 1..k-1."""
    rows = []
    for i, row in enumerate(doc.ptable):
        loc = ["on_demand", "ptable", i]
        where = f"on_demand.ptable[{i}]"

        def fail(message: str) -> None:
            raise PolicyError(path, line_of(raw, loc), where, message)

        if row.count != i + 1:
            fail(f"rows must be for the counts 1, 2, 3, ... in order; expected count {i + 1}")
        starts = [start for start, _ in row.noise]
        if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= 1:
            fail("each row's intervals start at 0 and rise strictly below 1")
        widths = [b - a for a, b in zip(starts, [*starts[1:], 1.0])]
        bias = sum(w * noise for w, (_, noise) in zip(widths, row.noise))
        if abs(bias) > 1e-9:
            fail(f"the noise must average 0 (it averages {bias:+.3f})")
        for _, noise in row.noise:
            result = row.count + noise
            if result < 0 or 0 < result < k:
                fail(f"count {row.count} with noise {noise:+d} would publish {result}: "
                     f"published counts are 0 or at least k = {k}")
        rows.append(tuple((float(start), int(noise)) for start, noise in row.noise))
    if rows and len(rows) < k:
        raise PolicyError(path, line_of(raw, ["on_demand", "ptable"]), "on_demand.ptable",
                          f"give rows at least up to the count k = {k}")
    return tuple(rows)
