"""Migrating running chains to a new template version: the plan, its checks, and what it does to
one chain. Pure: apart from reading the plan files no I/O, no clock (``now`` is passed in).

Laws and local agreements change while chains run. A running chain keeps its template version
until an operator migrates it with a **migration plan**: data next to the template, in
``policies/chains/<key>.migrations.yaml``, one entry per step from a version to the next::

    template: refugee_recognised
    migrations:
      - from: 1
        to: 2
        description: Bürgergeld-Bescheid als eigener Schritt       # optional
        renamed:                  # old key -> new key; every other step keeps its key
          health_first_doctor: health_check
        removed:                  # steps of `from` that `to` no longer has (each must be listed)
          kita_place:
            reason: Kita-Plätze vermittelt das Jugendamt außerhalb der Kette
            when_started: refuse  # refuse (default): a chain where the step has started (or
                                  #   ended after starting) is not migrated; drop: the step
                                  #   leaves the chain, its history stays in the events
        added:                    # steps of `to` that `from` did not have; unlisted ones are
          buergergeld_bescheid:   #   planned, or ready at once if their prerequisites ended
            skip: when_passed     # always | when_passed: skipped where a step that requires it
                                  #   has begun or ended (the chain is past this point)
            reason: Der Bescheid lag vor, als der Schritt eingeführt wurde
        due:                      # steps whose due rule changed (new, other anchor or days, gone)
          integration_course:
            if_past: keep         # refuse (default) | keep | overdue: what to do in a chain where
                                  #   the deadline, recomputed from its anchor, lies in the past

A migrated chain is a valid chain of the new version (:func:`migrate_steps` refuses it otherwise,
saying why): every step of the new version exists, nothing is ready, running or completed before
its prerequisites have ended, and a planned step whose prerequisites have ended becomes ready. A
ready step nobody has started that now has an open prerequisite is planned again.
Deadlines of steps that have not ended are recomputed from their anchors where the rule changed;
one that would move into the past needs the plan to say so.

Started steps keep the office that began them: a step whose owner kind changes is reassigned
only while nobody has started it. Steps agreed in a Fallkonferenz (casemgmt.chains.agreed) are
carried over; their prerequisite follows a renamed step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NoReturn, cast

from pydantic import BaseModel, ConfigDict, Field

from casemgmt.chains import engine as eng
from casemgmt.chains.agreed import AgreedStep, with_agreed_steps
from casemgmt.chains.engine import SATISFIES_PREREQUISITE, TERMINAL, StateChange, StepInstance, StepState
from casemgmt.chains.spec import CHAIN_STARTED, MIGRATIONS_SUFFIX, ChainTemplate, DueRule
from casemgmt.policy.source import PolicyError, format_loc, line_of, load_yaml, validate

__all__ = [
    "ChainMigration",
    "MigrationPlan",
    "StepMigration",
    "TemplateDiff",
    "check_plan",
    "compose_renames",
    "diff_templates",
    "load_migration_plans",
    "migrate_steps",
]

WhenStarted = Literal["refuse", "drop"]
SkipNew = Literal["always", "when_passed"]
IfPast = Literal["refuse", "keep", "overdue"]

_TERMINAL = {s.value for s in TERMINAL}
_SATISFIES = {s.value for s in SATISFIES_PREREQUISITE}
_NEEDS_PREREQUISITES = {StepState.ready.value, StepState.in_progress.value, StepState.blocked.value,
                        StepState.completed.value}
_ACTIVE = {StepState.ready.value, StepState.in_progress.value, StepState.blocked.value}


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemovedStep:
    reason: str
    when_started: WhenStarted


@dataclass(frozen=True, slots=True)
class AddedStep:
    skip: SkipNew
    reason: str


@dataclass(frozen=True)
class MigrationPlan:
    """How running chains move from version ``from_version`` of a template to the next."""

    template: str
    from_version: int
    to_version: int
    description: str
    renamed: Mapping[str, str]
    removed: Mapping[str, RemovedStep]
    added: Mapping[str, AddedStep]
    due: Mapping[str, IfPast]
    source: str
    # Where each part came from, for errors found only once both versions are known.
    raw: Any = field(default=None, repr=False, compare=False)
    index: int = field(default=0, repr=False, compare=False)

    def fail(self, loc: Sequence[str | int], message: str) -> NoReturn:
        full = ["migrations", self.index, *loc]
        raise PolicyError(self.source, line_of(self.raw, full), format_loc(full), message)

    def new_key(self, old: str) -> str | None:
        """The key an old step has in the new version; None if the plan removes it."""
        if old in self.removed:
            return None
        return self.renamed.get(old, old)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _RemovedDoc(_Strict):
    reason: str = Field(min_length=1, max_length=500)
    when_started: WhenStarted = "refuse"


class _AddedDoc(_Strict):
    skip: SkipNew
    reason: str = Field(min_length=1, max_length=500)


class _DueDoc(_Strict):
    if_past: IfPast = "refuse"


class _MigrationDoc(_Strict):
    from_: int = Field(alias="from", ge=1)
    to: int = Field(ge=2)
    description: str = ""
    renamed: dict[str, str] = Field(default_factory=dict)
    removed: dict[str, _RemovedDoc] = Field(default_factory=dict)
    added: dict[str, _AddedDoc] = Field(default_factory=dict)
    due: dict[str, _DueDoc] = Field(default_factory=dict)


class _PlanFileDoc(_Strict):
    template: str
    migrations: list[_MigrationDoc] = Field(min_length=1)


def load_migration_plans(directory: Path, templates: Mapping[str, ChainTemplate],
                         goal_steps: Mapping[str, Collection[str]] | None = None
                         ) -> dict[str, dict[int, MigrationPlan]]:
    """Read every ``*.migrations.yaml`` in the template directory: plans by template key and
    the version they migrate from. Checked here: the shape, that the file belongs to a template
    (``<key>.migrations.yaml`` naming ``template: <key>``), that each entry goes one version up
    to at most the current one, and, for the step into the current version, that the new keys
    exist in it. ``goal_steps`` (template key -> steps a measurable goal counts) refuses renaming
    such a step: its earlier events keep the old key, so the goal's clock would lose them.
    What needs the older version too is checked by :func:`check_plan` once it is known."""
    plans: dict[str, dict[int, MigrationPlan]] = {}
    for path in sorted(p for p in Path(directory).glob(f"*{MIGRATIONS_SUFFIX}") if p.is_file()):
        raw = load_yaml(path)
        doc = cast(_PlanFileDoc, validate(_PlanFileDoc, raw, path))

        def fail(loc: Sequence[str | int], message: str, raw=raw, path=path) -> NoReturn:
            raise PolicyError(path, line_of(raw, loc), format_loc(loc), message)

        expected = path.name[: -len(MIGRATIONS_SUFFIX)]
        if doc.template != expected:
            fail(["template"], f"the plans of {doc.template!r} belong in {doc.template}{MIGRATIONS_SUFFIX}")
        template = templates.get(doc.template)
        if template is None:
            fail(["template"], f"no chain template {doc.template!r}")
        by_from: dict[int, MigrationPlan] = {}
        for i, m in enumerate(doc.migrations):
            if m.to != m.from_ + 1:
                fail(["migrations", i, "to"], f"a plan goes one version up: from {m.from_} to {m.from_ + 1}")
            if m.to > template.version:
                fail(["migrations", i, "to"],
                     f"version {m.to} of {doc.template!r} does not exist yet (the file has version {template.version})")
            if m.from_ in by_from:
                fail(["migrations", i, "from"], f"a second plan from version {m.from_}")
            plan = MigrationPlan(
                template=doc.template, from_version=m.from_, to_version=m.to, description=m.description,
                renamed=dict(m.renamed),
                removed={k: RemovedStep(v.reason, v.when_started) for k, v in m.removed.items()},
                added={k: AddedStep(v.skip, v.reason) for k, v in m.added.items()},
                due={k: v.if_past for k, v in m.due.items()}, source=str(path), raw=raw, index=i,
            )
            for old in plan.renamed:
                if old in plan.removed:
                    plan.fail(["removed", old], f"step {old!r} is renamed and removed at once")
            counted = set((goal_steps or {}).get(doc.template, ()))
            for old, new in plan.renamed.items():
                if old in counted or new in counted:
                    plan.fail(["renamed", old], f"a measurable goal (goals.yaml) counts step "
                              f"{old if old in counted else new!r}; renaming it would cut the goal's clock "
                              "off from the step's earlier events")
            if m.to == template.version:
                _check_target(plan, template)
            by_from[m.from_] = plan
        plans[doc.template] = by_from
    return plans


def _check_target(plan: MigrationPlan, target: ChainTemplate) -> None:
    keys = set(target.step_keys())
    for old, new in plan.renamed.items():
        if new not in keys:
            plan.fail(["renamed", old], f"{new!r} is not a step of version {target.version}")
    targets = list(plan.renamed.values())
    for new in targets:
        if targets.count(new) > 1:
            plan.fail(["renamed"], f"two steps are renamed to {new!r}")
    for key in plan.removed:
        if key in keys:
            plan.fail(["removed", key], f"version {target.version} still has step {key!r}")
    for key in plan.added:
        if key not in keys:
            plan.fail(["added", key], f"{key!r} is not a step of version {target.version}")
    for key in plan.due:
        if key not in keys:
            plan.fail(["due", key], f"{key!r} is not a step of version {target.version}")


def check_plan(plan: MigrationPlan, source: ChainTemplate, target: ChainTemplate) -> None:
    """Check the plan against both versions; :class:`PolicyError` with file and line if it does
    not say what becomes of every step."""
    if (source.key, source.version, target.key, target.version) != (
            plan.template, plan.from_version, plan.template, plan.to_version):
        raise ValueError("the plan does not go between these versions")
    _check_target(plan, target)
    old_keys, new_keys = set(source.step_keys()), set(target.step_keys())
    for old, new in plan.renamed.items():
        if old not in old_keys:
            plan.fail(["renamed", old], f"{old!r} is not a step of version {source.version}")
        if old in new_keys:
            plan.fail(["renamed", old], f"version {target.version} still has step {old!r}; a renamed step "
                                        "gives its key up")
        if new in old_keys:
            plan.fail(["renamed", old], f"{new!r} is already a step of version {source.version}")
    for key in plan.removed:
        if key not in old_keys:
            plan.fail(["removed", key], f"{key!r} is not a step of version {source.version}")
    for key in source.step_keys():
        if key not in new_keys and key not in plan.renamed and key not in plan.removed:
            plan.fail([], f"step {key!r} of version {source.version} is not in version {target.version}: "
                          "list it under `renamed` or `removed`")
    sources = {plan.renamed.get(k, k): k for k in source.step_keys() if plan.new_key(k) is not None}
    for key in plan.added:
        if key in sources:
            plan.fail(["added", key], f"{key!r} is not new: version {source.version} has it"
                      + (f" as {sources[key]!r}" if sources[key] != key else ""))
    for key in plan.due:
        before = source.step(sources[key]).due if key in sources else None
        if _same_rule(before, target.step(key).due, plan):
            plan.fail(["due", key], f"the due rule of {key!r} did not change")


def _same_rule(before: DueRule | None, after: DueRule | None, plan: MigrationPlan) -> bool:
    if before is None or after is None:
        return before is after
    anchor = before.anchor if before.anchor == CHAIN_STARTED else plan.renamed.get(before.anchor, before.anchor)
    return dataclasses.replace(before, anchor=anchor) == after


def compose_renames(plans: Sequence[MigrationPlan]) -> dict[str, str]:
    """Old key -> key after all these steps of migration, for the steps that were renamed."""
    renamed: dict[str, str] = {}
    for plan in plans:
        carried = set(renamed.values())
        renamed = {old: plan.renamed.get(now, now) for old, now in renamed.items()}
        for old, new in plan.renamed.items():
            if old not in carried:
                renamed[old] = new
    return {old: new for old, new in renamed.items() if old != new}


# --------------------------------------------------------------------------------------------
# One chain
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepMigration:
    """What the migration changed about one step (one ``step_migrated`` event).

    ``change`` is ``renamed``, ``removed``, ``added`` or ``changed`` (owner, optional, deadline);
    ``key`` the step's key after it (before it, for a removed step); ``previous_organisation_id``
    the organisation whose part it ended, if any (the service adds the one the step is assigned
    to afterwards).
    """

    change: str
    key: str
    previous_key: str | None
    from_state: str | None
    to_state: str | None
    detail: str
    previous_organisation_id: int | None = None


@dataclass
class ChainMigration:
    """The outcome of one step of migration for one chain. With ``refusals`` nothing applies."""

    plan: MigrationPlan
    steps: dict[str, StepInstance]  # by key in the new version, agreed steps included
    origin: dict[str, str | None]  # new key -> old key (None for a new step)
    removed: dict[str, StepInstance]  # by old key
    agreed: dict[str, AgreedStep]
    changes: list[StepMigration] = field(default_factory=list)
    state_changes: list[StateChange] = field(default_factory=list)
    reassign: list[str] = field(default_factory=list)  # not-started steps given to another kind
    released: dict[str, int | None] = field(default_factory=dict)  # ready steps planned again: their office
    notes: list[str] = field(default_factory=list)  # decisions that change nothing (a deadline kept)
    refusals: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refusals

    def describe(self, head: bool = True) -> str:
        """One line for the event, the audit trail and the dry run."""
        parts = [c.detail for c in self.changes]
        parts += [f"{c.step_key}: {c.from_state} -> {c.to_state}" for c in self.state_changes]
        parts += self.notes
        text = "; ".join(parts) if parts else "no step changes"
        return f"v{self.plan.from_version} -> v{self.plan.to_version}: {text}" if head else text


def migrate_steps(
    plan: MigrationPlan,
    source: ChainTemplate,
    target: ChainTemplate,
    steps: Mapping[str, StepInstance],
    agreed: Mapping[str, AgreedStep],
    chain_started_at: datetime,
    now: datetime,
    held_by_handovers: Collection[str] = (),
) -> ChainMigration:
    """Move one open chain's steps from ``source`` to ``target`` by the plan, or say why not.

    ``steps`` are the chain's steps by their current keys (agreed steps included, untouched:
    copies are returned). ``held_by_handovers`` are the steps a waiting handover concerns: the
    plan may not rename, remove or give them to another kind until the handover is answered.
    """
    old = {k: dataclasses.replace(s, dirty=False) for k, s in steps.items()}
    result = ChainMigration(plan=plan, steps={}, origin={}, removed={}, agreed={})
    refuse = result.refusals.append
    v_to = target.version

    # Removed steps leave the chain; a started one only if the plan says so.
    for key in source.step_keys():
        if plan.new_key(key) is not None:
            continue
        step, rule = old[key], plan.removed[key]
        started = step.started_at is not None
        if started and rule.when_started == "refuse":
            refuse(f"step {key!r} was started (it is {step.state}); version {v_to} removes it and the plan "
                   "drops only steps nobody started")
        if key in held_by_handovers:
            refuse(f"a handover of step {key!r} is waiting; version {v_to} removes the step")
        result.removed[key] = step
        ended_part = step.assigned_organisation_id if step.state in _ACTIVE else None
        result.changes.append(StepMigration(
            "removed", key, None, step.state, None, f"{key} removed ({rule.reason})",
            previous_organisation_id=ended_part))

    # The steps of the new version, from their old selves or new.
    sources = {plan.renamed.get(k, k): k for k in source.step_keys() if plan.new_key(k) is not None}
    for spec in target.steps:
        before_key = sources.get(spec.key)
        if before_key is None:
            result.steps[spec.key] = StepInstance(key=spec.key, owner_kind=spec.owner, optional=spec.optional)
            result.origin[spec.key] = None
            result.changes.append(StepMigration("added", spec.key, None, None, StepState.planned.value,
                                                f"{spec.key} added"))
            continue
        step = dataclasses.replace(old[before_key], key=spec.key)
        result.steps[spec.key] = step
        result.origin[spec.key] = before_key
        notes: list[str] = []
        previous_org: int | None = None
        if before_key != spec.key:
            if before_key in held_by_handovers:
                refuse(f"a handover of step {before_key!r} is waiting; version {v_to} renames it to {spec.key!r}")
            notes.append(f"renamed from {before_key}")
        if spec.owner != step.owner_kind and step.state not in _TERMINAL:
            if step.started_at is not None:
                notes.append(f"owner {step.owner_kind} -> {spec.owner} for later chains; the office "
                             "that started it finishes it")
            else:
                if before_key in held_by_handovers:
                    refuse(f"a handover of step {before_key!r} is waiting; version {v_to} gives the step "
                           f"to a {spec.owner}")
                notes.append(f"owner {step.owner_kind} -> {spec.owner}")
                step.owner_kind = spec.owner
                if step.state in _ACTIVE:
                    previous_org, step.assigned_organisation_id = step.assigned_organisation_id, None
                    result.reassign.append(spec.key)
        if spec.optional != step.optional:
            notes.append("now optional" if spec.optional else "no longer optional")
            step.optional = spec.optional
        if notes:
            result.changes.append(StepMigration(
                "renamed" if before_key != spec.key else "changed", spec.key,
                before_key if before_key != spec.key else None, step.state, step.state,
                f"{spec.key}: " + ", ".join(notes), previous_organisation_id=previous_org))

    # Agreed steps stay; a prerequisite that was renamed is followed, a removed one refuses.
    for key, made in agreed.items():
        requires = []
        for r in made.requires:
            new = plan.new_key(r) if r in source.step_keys() else r
            if new is None:
                refuse(f"the agreed step {key!r} waits for {r!r}, which version {v_to} removes")
                new = r
            requires.append(new)
        result.agreed[key] = dataclasses.replace(made, requires=tuple(requires))
        result.steps[key] = old[key]
        result.origin[key] = key
    if result.refusals:  # the new version's shape does not fit this chain: nothing more to work out
        return result
    effective = with_agreed_steps(target, result.agreed)
    machine = eng.machines.for_template(effective)

    # New steps the chain is already past (a step that requires it has begun or ended) are
    # skipped, as the plan says.
    for key, rule in plan.added.items():
        step = result.steps[key]
        passed = any(result.steps[d].started_at is not None or result.steps[d].state in _TERMINAL
                     for d in effective.dependants(key))
        if rule.skip == "always" or passed:
            why = f"skipped on migration to version {v_to}: {rule.reason}"
            before = step.state
            machine.events[eng.SystemAction.skip_on_migration.value].trigger(step, now=now, reason=why)
            result.state_changes.append(StateChange(key, eng.SystemAction.skip_on_migration.value, before,
                                                    step.state, why))

    # Nothing may have begun before its prerequisites; what waited for them only may begin now.
    waiting = {spec.key: [r for r in spec.requires if result.steps[r].state not in _SATISFIES]
               for spec in effective.steps}
    # A ready step nobody started that now has a prerequisite still open waits for it again.
    for spec in effective.steps:
        step, pending = result.steps[spec.key], waiting[spec.key]
        if step.state == StepState.ready.value and step.started_at is None and pending:
            why = f"waits for {', '.join(pending)} (version {v_to})"
            machine.events[eng.SystemAction.wait_on_migration.value].trigger(step, now=now, reason=why)
            step.reason = None
            result.released[spec.key] = step.assigned_organisation_id
            step.assigned_organisation_id = None
            result.state_changes.append(StateChange(spec.key, eng.SystemAction.wait_on_migration.value,
                                                    StepState.ready.value, step.state, why))
    for spec in effective.steps:
        step, pending = result.steps[spec.key], waiting[spec.key]
        if step.state in _NEEDS_PREREQUISITES and pending:
            refuse(f"step {spec.key!r} is {step.state} but in version {v_to} it requires {pending[0]!r}, "
                   f"which is {result.steps[pending[0]].state}")
    if result.refusals:
        return result
    for spec in effective.steps:
        step = result.steps[spec.key]
        if step.state == StepState.planned.value and not waiting[spec.key]:
            machine.events[eng.SystemAction.make_ready.value].trigger(step, now=now, reason=None)
            result.state_changes.append(StateChange(spec.key, eng.SystemAction.make_ready.value,
                                                    StepState.planned.value, step.state, None))

    # Deadlines whose rule changed are counted again from their anchors.
    for spec in target.steps:
        step = result.steps[spec.key]
        before_key = result.origin[spec.key]
        before_rule = source.step(before_key).due if before_key is not None else None
        if step.state in _TERMINAL or _same_rule(before_rule, spec.due, plan):
            continue
        due_at, due_for = _recount(spec.due, result.steps, chain_started_at)
        if due_at == step.due_at and due_for == step.due_for:
            continue
        if due_at is not None and due_at < now:
            choice = plan.due.get(spec.key, "refuse")
            if choice == "refuse":
                refuse(f"the deadline of {spec.key!r} would move to {due_at:%Y-%m-%d}, in the past; the "
                       "plan says neither keep nor overdue")
                continue
            if choice == "keep":
                result.notes.append(f"{spec.key}: deadline {_day(step.due_at)} kept (the new rule gives "
                                    f"{due_at:%Y-%m-%d}, already past)")
                continue
        detail = f"{spec.key}: due {_day(step.due_at)} -> {_day(due_at)}"
        step.due_at, step.due_for = due_at, due_for
        result.changes.append(StepMigration("changed", spec.key, None, step.state, step.state, detail))

    return result


def _recount(rule: DueRule | None, steps: Mapping[str, StepInstance], chain_started_at: datetime
             ) -> tuple[datetime | None, str | None]:
    """The deadline a rule gives, counted from its anchor if the anchor has happened."""
    if rule is None:
        return None, None
    if rule.anchor == CHAIN_STARTED:
        at: datetime | None = chain_started_at
    else:
        anchor = steps[rule.anchor]
        at = anchor.started_at if rule.anchor_event == "started" else anchor.completed_at
    if at is None:
        return None, None
    return at + timedelta(days=rule.days), rule.deadline_for


def _day(at: datetime | None) -> str:
    return "none" if at is None else f"{at:%Y-%m-%d}"


# --------------------------------------------------------------------------------------------
# The difference between two versions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateDiff:
    """Steps added and removed between two versions, renamed ones (where migration plans say
    so), and per step that is in both what changed: ``{"owner": (before, after), ...}``."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    renamed: Mapping[str, str]
    changed: Mapping[str, Mapping[str, tuple[Any, Any]]]


def diff_templates(before: ChainTemplate, after: ChainTemplate, renamed: Mapping[str, str] | None = None
                   ) -> TemplateDiff:
    """What changed from ``before`` to ``after``: owner, prerequisites, optional, title and due
    rule per step (prerequisites and anchors compared under the renames)."""
    renamed = dict(renamed or {})
    after_keys = set(after.step_keys())
    renamed = {old: new for old, new in renamed.items() if old in before.step_keys() and new in after_keys}
    pairs = {old: renamed.get(old, old) for old in before.step_keys() if renamed.get(old, old) in after_keys}
    matched = set(pairs.values())
    changed: dict[str, dict[str, tuple[Any, Any]]] = {}
    for old, new in pairs.items():
        a, b = before.step(old), after.step(new)
        diffs: dict[str, tuple[Any, Any]] = {}
        for name in ("title", "owner", "optional"):
            if getattr(a, name) != getattr(b, name):
                diffs[name] = (getattr(a, name), getattr(b, name))
        requires = [renamed.get(r, r) for r in a.requires]
        if requires != list(b.requires):
            diffs["requires"] = (list(a.requires), list(b.requires))
        due_a = None if a.due is None else dataclasses.replace(
            a.due, anchor=renamed.get(a.due.anchor, a.due.anchor))
        if due_a != b.due:
            diffs["due"] = (_rule_doc(a.due), _rule_doc(b.due))
        if diffs:
            changed[new] = diffs
    return TemplateDiff(
        added=tuple(k for k in after.step_keys() if k not in matched),
        removed=tuple(k for k in before.step_keys() if k not in pairs),
        renamed={old: new for old, new in renamed.items() if old != new},
        changed=changed,
    )


def _rule_doc(rule: DueRule | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {"after": rule.anchor, "on": rule.anchor_event, "days": rule.days, "for": rule.deadline_for}


def plans_between(plans: Mapping[int, MigrationPlan], from_version: int, to_version: int
                  ) -> list[MigrationPlan] | None:
    """The plans that lead from one version to a later one, or None if one is missing."""
    found = []
    for v in range(from_version, to_version):
        plan = plans.get(v)
        if plan is None:
            return None
        found.append(plan)
    return found


def plan_sources(plans: Mapping[str, Mapping[int, MigrationPlan]]) -> Iterable[MigrationPlan]:
    for by_from in plans.values():
        yield from by_from.values()
