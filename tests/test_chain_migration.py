"""Migrating running chains to the next template version (casemgmt.chains.migration): the plan
files and their checks with file and line, the difference between two versions, and properties of
migrating random chain states of random templates. Pure tests: no database."""

from __future__ import annotations

import dataclasses
import random
import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemgmt.chains import engine as eng
from casemgmt.chains.agreed import AgreedStep, with_agreed_steps
from casemgmt.chains.engine import SATISFIES_PREREQUISITE, TERMINAL, StepInstance
from casemgmt.chains.migration import (
    AddedStep,
    MigrationPlan,
    RemovedStep,
    check_plan,
    compose_renames,
    diff_templates,
    load_migration_plans,
    migrate_steps,
)
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER, CHAIN_STARTED, ChainTemplate
from casemgmt.policy.source import PolicyError
from test_engine import CM_ORG, REASON, SCOPE, T0, assign_ready, assignee, owner_of, walk_to_end

OWNERS = ["jobcenter", "auslaenderbehoerde", "course_provider", CASE_MANAGEMENT_OWNER]
_TERMINAL = {s.value for s in TERMINAL}
_SATISFIES = {s.value for s in SATISFIES_PREREQUISITE}


def template(key: str, version: int, steps: list[dict[str, Any]]) -> ChainTemplate:
    return ChainTemplate.from_document({"key": key, "version": version, "title": key, "description": "",
                                        "steps": steps})


def step_doc(key: str, owner: str = "jobcenter", requires: list[str] | None = None, optional: bool = False,
             due: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"key": key, "title": key.replace("_", " ").title(), "owner": owner, "requires": requires or [],
            "optional": optional, "description": "", "due": due}


def plan(source: ChainTemplate, target: ChainTemplate, **parts: Any) -> MigrationPlan:
    return MigrationPlan(template=source.key, from_version=source.version, to_version=target.version,
                         description="", renamed=parts.get("renamed", {}), removed=parts.get("removed", {}),
                         added=parts.get("added", {}), due=parts.get("due", {}), source="<test>")


# --------------------------------------------------------------------------------------------
# Random templates, plans and chain states
# --------------------------------------------------------------------------------------------


def random_template(rng: random.Random) -> ChainTemplate:
    keys = [f"s{i}" for i in range(rng.randint(2, 8))]
    steps = []
    for i, key in enumerate(keys):
        requires = rng.sample(keys[:i], k=min(i, rng.randint(0, 2))) if i else []
        steps.append(step_doc(key, rng.choice(OWNERS), requires, rng.random() < 0.3,
                              random_due(rng, requires)))
    return template("t", 1, steps)


def random_due(rng: random.Random, requires: list[str]) -> dict[str, Any] | None:
    if rng.random() < 0.5:
        return None
    anchor = rng.choice([CHAIN_STARTED, *requires])
    return {"after": anchor, "on": "started" if anchor == CHAIN_STARTED else rng.choice(["started", "completed"]),
            "days": rng.randint(1, 60), "for": rng.choice(["start", "completion"])}


def random_next_version(rng: random.Random, v1: ChainTemplate) -> tuple[ChainTemplate, MigrationPlan]:
    """Version 2 with steps removed, renamed, added (also before existing ones), owners, optional
    flags and deadlines changed, and a plan that says what becomes of every step."""
    removed = {k for k in v1.step_keys()[1:] if rng.random() < 0.2}
    renamed = {k: f"r{k[1:]}" for k in v1.step_keys() if k not in removed and rng.random() < 0.2}
    order: list[Any] = [k for k in v1.step_keys() if k not in removed]
    new_keys = [f"n{j}" for j in range(rng.randint(0, 3))]
    for key in new_keys:
        order.insert(rng.randint(1, len(order)), ("new", key))
    steps, placed = [], []
    for item in order:
        if isinstance(item, tuple):
            key = item[1]
            requires = rng.sample(placed, k=min(len(placed), rng.randint(0, 2)))
            steps.append(step_doc(key, rng.choice(OWNERS), requires, rng.random() < 0.3, random_due(rng, requires)))
        else:
            spec = v1.step(item)
            key = renamed.get(item, item)
            requires = [renamed.get(r, r) for r in spec.requires if r not in removed]
            extra = [p for p in placed if p.startswith("n") and p not in requires and rng.random() < 0.4]
            requires += extra
            owner = rng.choice(OWNERS) if rng.random() < 0.2 else spec.owner
            optional = (not spec.optional) if rng.random() < 0.15 else spec.optional
            due = None
            if spec.due is not None:
                anchor = spec.due.anchor if spec.due.anchor == CHAIN_STARTED else renamed.get(spec.due.anchor,
                                                                                             spec.due.anchor)
                due = {"after": anchor, "on": spec.due.anchor_event, "days": spec.due.days,
                       "for": spec.due.deadline_for}
            if due is None or (due["after"] != CHAIN_STARTED and due["after"] not in requires) or rng.random() < 0.25:
                due = random_due(rng, requires)
            steps.append(step_doc(key, owner, requires, optional, due))
        placed.append(key)
    v2 = template("t", 2, steps)
    draft = plan(v1, v2, renamed=renamed,
                 removed={k: RemovedStep("nicht mehr Teil der Kette", rng.choice(["refuse", "drop"])) for k in removed},
                 added={k: AddedStep(rng.choice(["always", "when_passed"]), "schon erledigt")
                        for k in new_keys if rng.random() < 0.6})
    due = {}
    for spec in v2.steps:
        if rng.random() < 0.7:
            due[spec.key] = rng.choice(["refuse", "keep", "overdue"])
    # Only steps whose rule changed may be listed; ask the checker which those are.
    changed = {k for k in due if not _rule_unchanged(draft, v1, v2, k)}
    full = dataclasses.replace(draft, due={k: v for k, v in due.items() if k in changed})
    check_plan(full, v1, v2)
    return v2, full


def _rule_unchanged(p: MigrationPlan, v1: ChainTemplate, v2: ChainTemplate, key: str) -> bool:
    try:
        check_plan(dataclasses.replace(p, due={key: "keep"}), v1, v2)
    except PolicyError as exc:
        assert "did not change" in exc.message
        return True
    return False


def random_walk(rng: random.Random, template: ChainTemplate, steps: dict[str, StepInstance], now: datetime,
                moves: int) -> datetime:
    machine = eng.machines.for_template(template)
    for _ in range(moves):
        assign_ready(steps)
        options = [(k, a) for k, s in steps.items()
                   for a in eng.allowed_actions(machine, s, owner_of(s), SCOPE, "open")]
        if not options:
            break
        key, action = rng.choice(options)
        eng.apply_action(template, machine, steps, key, action, REASON, owner_of(steps[key]), SCOPE, now)
        now += timedelta(hours=rng.randint(1, 400))
    assign_ready(steps)
    return now


def valid_chain_state(template: ChainTemplate, steps: dict[str, StepInstance]) -> None:
    assert set(steps) == set(template.step_keys())
    for spec in template.steps:
        step = steps[spec.key]
        met = all(steps[r].state in _SATISFIES for r in spec.requires)
        if step.state in ("ready", "in_progress", "blocked", "completed"):
            assert met, f"{spec.key} is {step.state} before its prerequisites ended"
        if step.state == "planned":
            assert not met, f"{spec.key} stayed planned although its prerequisites ended"
        if step.state in ("in_progress", "completed"):
            assert step.started_at is not None
        assert (step.completed_at is not None) == (step.state == "completed")
        if step.state in ("blocked", "skipped"):
            assert step.reason
        assert (step.due_at is None) == (step.due_for is None)
        assert step.state != "cancelled"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), moves=st.integers(0, 25), agreed=st.booleans())
def test_a_migrated_chain_is_a_valid_chain_of_the_new_version(seed: int, moves: int, agreed: bool) -> None:
    rng = random.Random(seed)
    v1 = random_template(rng)
    v2, the_plan = random_next_version(rng, v1)
    made: dict[str, AgreedStep] = {}
    effective = v1
    if agreed:
        required = rng.choice(v1.step_keys())
        made["agreed_1"] = AgreedStep("agreed_1", "Vereinbarter Schritt", "course_provider", 300, (required,),
                                      T0 + timedelta(days=30), "a", "c", "Fallkonferenz", T0, T0)
        effective = with_agreed_steps(v1, made)
    machine = eng.machines.for_template(effective)
    steps, _ = eng.new_chain_steps(v1, machine, T0)
    if agreed:
        eng.add_step(effective, machine, steps, "agreed_1", made["agreed_1"].due_at, T0)
    now = random_walk(rng, effective, steps, T0, moves)
    before = {k: dataclasses.replace(s) for k, s in steps.items()}

    result = migrate_steps(the_plan, v1, v2, steps, made, T0, now)

    assert {k: dataclasses.astuple(s) for k, s in steps.items()} == {
        k: dataclasses.astuple(s) for k, s in before.items()}, "the input is not changed"
    if not result.ok:
        assert all(isinstance(r, str) and r for r in result.refusals)
        return
    target = with_agreed_steps(v2, result.agreed)
    valid_chain_state(target, result.steps)
    # Events explain every change: each key, state, owner, deadline and assignment that differs.
    changes = {(c.change, c.key) for c in result.changes}
    for old_key in v1.step_keys():
        if the_plan.new_key(old_key) is None:
            assert ("removed", old_key) in changes
    state_changes = {c.step_key: c for c in result.state_changes}
    for key, step in result.steps.items():
        origin = result.origin[key]
        if origin is None:
            assert ("added", key) in changes
            old_state, old = "planned", None
        else:
            old = before[origin]
            old_state = old.state
            if origin != key:
                assert any(c.change == "renamed" and c.key == key and c.previous_key == origin for c in result.changes)
        if step.state != old_state:
            c = state_changes[key]
            assert (c.from_state, c.to_state) == (old_state, step.state)
            assert c.action in ("make_ready", "skip_on_migration", "wait_on_migration")
        else:
            assert key not in state_changes
        if old is not None:
            described = " ".join(c.detail for c in result.changes if c.key == key)
            if (old.due_at, old.due_for) != (step.due_at, step.due_for):
                assert "due" in described
            if old.owner_kind != step.owner_kind or old.optional != step.optional:
                assert described
            if old.assigned_organisation_id != step.assigned_organisation_id:
                assert key in result.reassign or result.released.get(key) == old.assigned_organisation_id
            # Nothing that happened is rewritten.
            assert (old.started_at, old.completed_at) == (step.started_at, step.completed_at)
            if old.state in _TERMINAL:
                assert step.state == old.state
    # A migrated chain runs on to its end like any other (once the service has given the
    # reassigned steps to an office of their new kind).
    for key in result.reassign:
        result.steps[key].assigned_organisation_id = assignee(result.steps[key].owner_kind)
    walk_to_end(target, result.steps, rng, now)


# --------------------------------------------------------------------------------------------
# Cases the plan must decide
# --------------------------------------------------------------------------------------------

V1 = template("kurs", 1, [
    step_doc("entitlement", "auslaenderbehoerde"),
    step_doc("health", "jobcenter", ["entitlement"], optional=True),
    step_doc("course", "course_provider", ["entitlement"],
             due={"after": "entitlement", "on": "completed", "days": 56, "for": "start"}),
    step_doc("work", "jobcenter", ["course"]),
])
V2 = template("kurs", 2, [
    step_doc("entitlement", "auslaenderbehoerde"),
    step_doc("buergergeld", "jobcenter", ["entitlement"]),
    step_doc("course", "course_provider", ["entitlement"],
             due={"after": "entitlement", "on": "completed", "days": 42, "for": "start"}),
    step_doc("placement", "jobcenter", ["course", "buergergeld"]),
])


def walked(*moves: tuple[str, str], now: datetime = T0) -> tuple[dict[str, StepInstance], datetime]:
    machine = eng.machines.for_template(V1)
    steps, _ = eng.new_chain_steps(V1, machine, now)
    for key, action in moves:
        assign_ready(steps)
        eng.apply_action(V1, machine, steps, key, action, REASON, owner_of(steps[key]), SCOPE, now)
        now += timedelta(days=1)
    assign_ready(steps)
    return steps, now


def kurs_plan(**over: Any) -> MigrationPlan:
    parts = {"renamed": {"work": "placement"}, "removed": {"health": RemovedStep("entfällt", "refuse")},
             "added": {"buergergeld": AddedStep("when_passed", "Bescheid lag schon vor")}} | over
    return plan(V1, V2, **parts)


def test_a_fresh_chain_gets_the_new_step_and_the_shorter_deadline_counts_from_its_anchor() -> None:
    steps, now = walked(("entitlement", "start"), ("entitlement", "complete"))
    result = migrate_steps(kurs_plan(), V1, V2, steps, {}, T0, now)
    assert result.ok, result.refusals
    assert {k: s.state for k, s in result.steps.items()} == {
        "entitlement": "completed", "buergergeld": "ready", "course": "ready", "placement": "planned"}
    completed = steps["entitlement"].completed_at
    assert result.steps["course"].due_at == completed + timedelta(days=42)
    assert "health removed (entfällt)" in result.describe() and "course: due" in result.describe()
    assert result.origin["placement"] == "work"


PAST_COURSE = (("entitlement", "start"), ("entitlement", "complete"), ("course", "start"), ("course", "complete"))


def test_a_chain_past_the_new_step_skips_it_with_the_plans_reason() -> None:
    steps, now = walked(*PAST_COURSE, ("work", "start"))
    result = migrate_steps(kurs_plan(due={"course": "keep"}), V1, V2, steps, {}, T0, now)
    assert result.ok, result.refusals
    # work (now placement) has begun: the chain is past buergergeld, which is skipped, not waited for.
    assert result.steps["buergergeld"].state == "skipped"
    assert "Bescheid lag schon vor" in (result.steps["buergergeld"].reason or "")
    assert result.steps["placement"].state == "in_progress"


def test_a_ready_step_nobody_started_waits_again_for_its_new_prerequisite() -> None:
    steps, now = walked(*PAST_COURSE)
    result = migrate_steps(kurs_plan(due={"course": "keep"}), V1, V2, steps, {}, T0, now)
    assert result.ok, result.refusals
    assert result.steps["buergergeld"].state == "ready" and result.steps["placement"].state == "planned"
    assert result.steps["placement"].assigned_organisation_id is None
    assert result.released == {"placement": steps["work"].assigned_organisation_id}  # its office's part ends
    assert "placement: ready -> planned" in result.describe()


def test_without_a_skip_rule_a_step_that_began_before_the_new_prerequisite_is_refused() -> None:
    steps, now = walked(*PAST_COURSE, ("work", "start"))
    result = migrate_steps(kurs_plan(added={}), V1, V2, steps, {}, T0, now)
    assert not result.ok
    assert ("step 'placement' is in_progress but in version 2 it requires 'buergergeld', which is planned"
            in result.refusals)


def test_a_started_step_the_plan_removes_refuses_the_chain_unless_the_plan_drops_it() -> None:
    steps, now = walked(("entitlement", "start"), ("entitlement", "complete"), ("health", "start"))
    refused = migrate_steps(kurs_plan(), V1, V2, steps, {}, T0, now)
    assert any("step 'health' was started (it is in_progress)" in r for r in refused.refusals)
    dropped = migrate_steps(kurs_plan(removed={"health": RemovedStep("entfällt", "drop")}), V1, V2, steps, {}, T0, now)
    assert dropped.ok and "health" not in dropped.steps
    gone = next(c for c in dropped.changes if c.change == "removed")
    assert gone.previous_organisation_id == steps["health"].assigned_organisation_id  # its office's part ends


def test_a_deadline_moved_into_the_past_needs_the_plan_to_say_so() -> None:
    steps, now = walked(("entitlement", "start"), ("entitlement", "complete"), now=T0)
    later = now + timedelta(days=50)  # 42 days after the entitlement lie behind us, 56 not yet
    refused = migrate_steps(kurs_plan(), V1, V2, steps, {}, T0, later)
    assert any("deadline of 'course' would move to" in r and "in the past" in r for r in refused.refusals)
    kept = migrate_steps(kurs_plan(due={"course": "keep"}), V1, V2, steps, {}, T0, later)
    assert kept.steps["course"].due_at == steps["course"].due_at
    assert "course: deadline" in kept.describe() and "kept (the new rule gives" in kept.describe()
    overdue = migrate_steps(kurs_plan(due={"course": "overdue"}), V1, V2, steps, {}, T0, later)
    assert overdue.steps["course"].due_at == steps["entitlement"].completed_at + timedelta(days=42)
    assert eng.is_overdue(overdue.steps["course"], later)


def test_an_agreed_step_follows_a_renamed_prerequisite_and_a_removed_one_refuses() -> None:
    steps, now = walked(("entitlement", "start"), ("entitlement", "complete"))
    made = {"agreed_1": AgreedStep("agreed_1", "Nachweis", "jobcenter", 7, ("work",), T0 + timedelta(days=9),
                                   "a", "c", "FK", T0, T0)}
    eng.add_step(with_agreed_steps(V1, made), eng.machines.for_template(V1), steps, "agreed_1", None, now)
    result = migrate_steps(kurs_plan(), V1, V2, steps, made, T0, now)
    assert result.ok and result.agreed["agreed_1"].requires == ("placement",)
    made_on_removed = {"agreed_1": dataclasses.replace(made["agreed_1"], requires=("health",))}
    refused = migrate_steps(kurs_plan(), V1, V2, steps, made_on_removed, T0, now)
    assert "the agreed step 'agreed_1' waits for 'health', which version 2 removes" in refused.refusals


def test_a_step_waiting_for_a_handover_is_not_renamed_or_removed_under_it() -> None:
    steps, now = walked(("entitlement", "start"), ("entitlement", "complete"))
    result = migrate_steps(kurs_plan(), V1, V2, steps, {}, T0, now, held_by_handovers={"health"})
    assert "a handover of step 'health' is waiting; version 2 removes the step" in result.refusals


def test_a_ready_step_given_to_another_kind_is_reassigned_a_started_one_stays() -> None:
    v2 = template("kurs", 2, [*(s for s in V2.to_document()["steps"] if s["key"] != "course"),
                              step_doc("course", "case_management", ["entitlement"],
                                       due={"after": "entitlement", "on": "completed", "days": 42, "for": "start"})])
    steps, now = walked(("entitlement", "start"), ("entitlement", "complete"))
    ready = migrate_steps(kurs_plan(), V1, v2, steps, {}, T0, now)
    assert ready.steps["course"].owner_kind == "case_management" and ready.reassign == ["course"]
    assert ready.steps["course"].assigned_organisation_id is None
    steps["course"].state, steps["course"].started_at = "in_progress", now
    started = migrate_steps(kurs_plan(), V1, v2, steps, {}, T0, now)
    assert started.steps["course"].owner_kind == "course_provider" and started.reassign == []
    assert "the office that started it finishes it" in started.describe()


# --------------------------------------------------------------------------------------------
# Plan files
# --------------------------------------------------------------------------------------------


def write_plan(tmp_path: Path, text: str, name: str = "kurs.migrations.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


GOOD = """
    template: kurs
    migrations:
      - from: 1
        to: 2
        renamed:
          work: placement
        removed:
          health:
            reason: entfällt
        added:
          buergergeld: {skip: when_passed, reason: Bescheid lag schon vor}
        due:
          course: {if_past: keep}
"""


def test_a_plan_file_is_read_and_checked_against_both_versions(tmp_path: Path) -> None:
    write_plan(tmp_path, GOOD)
    plans = load_migration_plans(tmp_path, {"kurs": V2})
    loaded = plans["kurs"][1]
    assert loaded.renamed == {"work": "placement"} and loaded.removed["health"].when_started == "refuse"
    assert loaded.due == {"course": "keep"}
    check_plan(loaded, V1, V2)


@pytest.mark.parametrize("change, line, field, message", [
    (("placement", "plaecement"), 6, "migrations[0].renamed.work", "'plaecement' is not a step of version 2"),
    (("to: 2", "to: 3"), 4, "migrations[0].to", "a plan goes one version up"),
    (("skip: when_passed", "skip: sometimes"), 11, "migrations[0].added.buergergeld.skip", "Input should be"),
    (("course: {if_past: keep}", "entitlement: {if_past: keep}"), 13, "migrations[0].due.entitlement",
     "did not change"),
    (("    removed:\n      health:\n        reason: entfällt\n", ""), 3, "migrations[0]",
     "step 'health' of version 1 is not in version 2"),
    (("template: kurs", "template: other"), 1, "template", "belong in other.migrations.yaml"),
])
def test_a_broken_plan_names_file_line_and_field(tmp_path: Path, change, line, field, message) -> None:
    text = textwrap.dedent(GOOD).replace(*change)
    path = write_plan(tmp_path, text)
    with pytest.raises(PolicyError) as caught:
        plans = load_migration_plans(tmp_path, {"kurs": V2})
        check_plan(plans["kurs"][1], V1, V2)
    assert caught.value.path == str(path)
    assert (caught.value.line, caught.value.field) == (line, field)
    assert message in caught.value.message


def test_renaming_a_step_a_goal_counts_is_refused(tmp_path: Path) -> None:
    write_plan(tmp_path, GOOD)
    with pytest.raises(PolicyError, match="measurable goal"):
        load_migration_plans(tmp_path, {"kurs": V2}, goal_steps={"kurs": {"work", "course"}})


# --------------------------------------------------------------------------------------------
# The difference between two versions
# --------------------------------------------------------------------------------------------


def test_the_diff_names_added_removed_renamed_and_changed_steps() -> None:
    diff = diff_templates(V1, V2, compose_renames([kurs_plan()]))
    assert diff.added == ("buergergeld",) and diff.removed == ("health",)
    assert diff.renamed == {"work": "placement"}
    assert diff.changed["course"]["due"][0]["days"] == 56 and diff.changed["course"]["due"][1]["days"] == 42
    assert diff.changed["placement"] == {"title": ("Work", "Placement"), "requires": (["course"], ["course", "buergergeld"])}
    by_key = diff_templates(V1, V2)
    assert by_key.removed == ("health", "work") and by_key.added == ("buergergeld", "placement")


def test_renames_compose_over_several_versions() -> None:
    p1 = dataclasses.replace(kurs_plan(), renamed={"a": "b", "x": "y"})
    p2 = dataclasses.replace(kurs_plan(), renamed={"b": "c"})
    assert compose_renames([p1, p2]) == {"a": "c", "x": "y"}
    assert CM_ORG  # the shared engine fixtures are in use
