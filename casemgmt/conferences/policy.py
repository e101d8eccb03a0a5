"""Taxonomies (``policies/barriers.yaml``) and the settings of conferences, reports and the
export (``policies/steering.yaml``), validated at start with file, line and field."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
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


class _ExportDoc(_Strict):
    min_variant_chains: int = Field(ge=1, le=1000)


class _SteeringDoc(_Strict):
    conferences: _ConferencesDoc
    reports: _ReportsDoc
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
    return SteeringPolicy(
        barrier_categories={k: v.title for k, v in barriers.barrier_categories.items()},
        fields_of_action={k: v.title for k, v in barriers.fields_of_action.items()},
        conference_purpose=doc.conferences.purpose, conference_category=doc.conferences.category,
        dots_per_participant=doc.conferences.dots_per_participant, k=doc.reports.k,
        min_variant_chains=doc.export.min_variant_chains,
    )
