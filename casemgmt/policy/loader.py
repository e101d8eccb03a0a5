"""Loads and cross-checks every policy file at start. Any error names file, line and field."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.auth.roles import RolePolicy, load_roles
from casemgmt.chains.migration import MigrationPlan, load_migration_plans
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER, ChainTemplate, load_templates
from casemgmt.conferences.policy import SteeringPolicy, load_steering_policy
from casemgmt.handovers.policy import HandoverPolicy, load_handover_policy
from casemgmt.interviews.guide import Guide, load_guide
from casemgmt.offers.policy import OfferPolicy, load_offer_policy
from casemgmt.policy.source import PolicyError, line_of, load_yaml, validate
from casemgmt.privacy.policy import DataPolicy, load_data_policy
from casemgmt.steering.goals import Goal, load_goals

KEY_PATTERN = r"^[a-z][a-z0-9_]*$"


class _KindDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(pattern=KEY_PATTERN, max_length=64)
    title: str = Field(min_length=1)
    description: str = ""


class _KindsDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: list[_KindDoc] = Field(min_length=1)


@dataclass(frozen=True)
class OrganisationKind:
    """A kind of organisation (Ausländerbehörde, Jobcenter, ...)."""

    key: str
    title: str
    description: str


@dataclass(frozen=True)
class Policies:
    """Everything the operator configures as data, validated together."""

    directory: Path
    organisation_kinds: dict[str, OrganisationKind]
    roles: RolePolicy
    templates: dict[str, ChainTemplate]  # the current version of each template, by key
    data: DataPolicy  # field catalogue, purposes, statutory legal bases
    handovers: HandoverPolicy  # deadlines in working days, calendar, case-management kinds
    steering: SteeringPolicy  # barrier taxonomy, conferences, report anonymity, export
    goals: dict[str, Goal]  # the Zielsystem; measurable goals are checked against the templates
    # How running chains move to a template's next version: template key -> from-version -> plan
    migrations: dict[str, dict[int, MigrationPlan]] = field(default_factory=dict)
    interview: Guide | None = None  # the Gesprächsleitfaden of the Erstgespräch
    offers: OfferPolicy | None = None  # the Angebotsdatenbank's kinds and the steps they serve


def load_organisation_kinds(path: Path) -> dict[str, OrganisationKind]:
    raw = load_yaml(path)
    doc: _KindsDoc = validate(_KindsDoc, raw, path)
    kinds: dict[str, OrganisationKind] = {}
    for i, kind in enumerate(doc.kinds):
        if kind.key in kinds or kind.key == CASE_MANAGEMENT_OWNER:
            why = "reserved for the chain's case management" if kind.key == CASE_MANAGEMENT_OWNER else "duplicate kind"
            raise PolicyError(path, line_of(raw, ["kinds", i, "key"]), f"kinds[{i}].key", f"{why} '{kind.key}'")
        kinds[kind.key] = OrganisationKind(kind.key, kind.title, kind.description)
    return kinds


def load_policies(directory: Path) -> Policies:
    directory = Path(directory)
    if not directory.is_dir():
        raise PolicyError(directory, None, "", "policy directory does not exist")
    kinds = load_organisation_kinds(directory / "organisation_kinds.yaml")
    roles = load_roles(directory / "roles.yaml")
    templates = load_templates(directory / "chains", kinds.keys())
    goals = load_goals(directory / "goals.yaml", templates)
    counted: dict[str, set[str]] = {}
    for goal in goals.values():
        if goal.measure is not None:
            for key in goal.measure.templates:
                counted.setdefault(key, set()).update(
                    k for k in (goal.measure.start_step, goal.measure.stop_step) if k is not None)
    migrations = load_migration_plans(directory / "chains", templates, counted)
    data = load_data_policy(directory / "data.yaml", directory / "legal_bases.yaml", kinds.keys())
    handovers = load_handover_policy(directory / "handovers.yaml", kinds.keys())
    steering = load_steering_policy(directory / "barriers.yaml", directory / "steering.yaml",
                                    data.purposes.keys(), data.categories.keys())
    steering = _with_titles(steering, kinds, templates, directory / "steering.yaml")
    interview = load_guide(directory / "interview.yaml", data.fields, templates)
    offers = load_offer_policy(directory / "offers.yaml", templates)
    steering = replace(steering, offer_kind_titles={k: v.title for k, v in offers.kinds.items()},
                       offer_steps={k: tuple(sorted(v.serves_steps)) for k, v in offers.kinds.items() if v.serves_steps})
    return Policies(directory, kinds, roles, templates, data, handovers, steering, goals, migrations, interview,
                    offers)


def _with_titles(steering: SteeringPolicy, kinds, templates, path: Path) -> SteeringPolicy:
    """The steering outputs show titles, never keys: organisation kinds, chain templates and
    steps (a step key shared by templates with different titles shows them all)."""
    step_titles: dict[str, list[str]] = {}
    for _key, template in sorted(templates.items()):
        for step in template.steps:
            titles = step_titles.setdefault(step.key, [])
            if step.title not in titles:
                titles.append(step.title)
    unknown = sorted(set(steering.activities) - set(step_titles))
    if unknown:
        raise PolicyError(path, None, "export.activities", f"unknown step key(s): {', '.join(unknown)}")
    kind_titles = {k: v.title for k, v in kinds.items()}
    kind_titles[CASE_MANAGEMENT_OWNER] = "Case Management"
    return replace(steering, kind_titles=kind_titles,
                   step_titles={k: " / ".join(v) for k, v in step_titles.items()},
                   template_titles={k: t.title for k, t in templates.items()},
                   step_order=tuple(step_titles))
