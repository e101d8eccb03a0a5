"""The step state machine of running chains (casemgmt.chains.engine): transition table, who may
act, timestamps and deadlines, the shared machine registry, and property tests driving random
action sequences against the five shipped templates.

Pure tests: no database, only the policy files.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import transitions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemgmt.chains import engine as eng
from casemgmt.chains.engine import (
    OPEN_STATES,
    SATISFIES_PREREQUISITE,
    TERMINAL,
    Action,
    Actor,
    ChainScope,
    ChainStatus,
    MachineRegistry,
    StateChange,
    StepInstance,
    StepState,
    SystemAction,
    apply_action,
    close_steps,
    derive_status,
    is_overdue,
    new_chain_steps,
    possible_actions,
)
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER, CHAIN_STARTED, ChainTemplate
from casemgmt.policy.loader import load_policies
from casemgmt.problems import (
    GuardFailed,
    IllegalTransition,
    Problem,
    ReasonRequired,
    WrongOrganisation,
)

ROOT = Path(__file__).resolve().parent.parent
POLICIES = load_policies(ROOT / "policies")
TEMPLATES: dict[str, ChainTemplate] = POLICIES.templates
TEMPLATE_KEYS = sorted(TEMPLATES)
KINDS = sorted(POLICIES.organisation_kinds)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

# Jurisdiction paths: Land /1/, Kreis /1/2/, town /1/2/5/, another Kreis /1/3/.
LAND, KREIS, TOWN, OTHER_KREIS, OTHER_TOWN = "/1/", "/1/2/", "/1/2/5/", "/1/3/", "/1/2/6/"
CM_ORG = 100
SCOPE = ChainScope(jurisdiction_path=TOWN, case_management_organisation_id=CM_ORG)
CASE_MANAGER = Actor("cm-user", CM_ORG, "kommunales_integrationszentrum", KREIS)
REASON = "Unterlagen fehlen noch"


def assignee(kind: str) -> int | None:
    """The organisation id the tests assign steps of this kind to (as the service assigns the
    nearest one when a step becomes ready); the case management's own steps stay unassigned."""
    return None if kind == CASE_MANAGEMENT_OWNER else 200 + KINDS.index(kind)


def owner_of(step: StepInstance, path: str = KREIS) -> Actor:
    """An actor allowed to act on the step of a chain in SCOPE."""
    if step.owner_kind == CASE_MANAGEMENT_OWNER:
        return CASE_MANAGER
    return Actor(f"user-{step.owner_kind}", assignee(step.owner_kind), step.owner_kind, path)


def assign_ready(steps: dict[str, StepInstance]) -> None:
    """What the service does after every change: a step that became ready gets its organisation."""
    for step in steps.values():
        if step.state == StepState.ready.value and step.assigned_organisation_id is None:
            step.assigned_organisation_id = assignee(step.owner_kind)


def snapshot(steps: dict[str, StepInstance]) -> dict[str, tuple]:
    return {k: dataclasses.astuple(s) for k, s in steps.items()}


def fresh(key: str, now: datetime = T0) -> tuple[ChainTemplate, transitions.Machine, dict[str, StepInstance]]:
    template = TEMPLATES[key]
    machine = eng.machines.for_template(template)
    steps, _ = new_chain_steps(template, machine, now)
    for step in steps.values():
        step.assigned_organisation_id = assignee(step.owner_kind)
    return template, machine, steps


def act(template, machine, steps, key, action, reason=None, actor=None, now=T0, scope=SCOPE):
    actor = actor or owner_of(steps[key])
    return apply_action(template, machine, steps, key, action, reason, actor, scope, now)


def a_step(optional: bool, state: StepState, started: bool = False, owner: str = "jobcenter") -> StepInstance:
    return StepInstance(
        key="s", owner_kind=owner, optional=optional, state=state.value,
        started_at=T0 if started else None, assigned_organisation_id=assignee(owner),
    )


def any_required_root(template: ChainTemplate) -> str:
    return next(k for k in template.roots() if not template.step(k).optional)


def planned_required(template: ChainTemplate) -> str:
    return next(s.key for s in template.steps if s.requires and not s.optional)


# --------------------------------------------------------------------------------------------
# Transition table
# --------------------------------------------------------------------------------------------

MACHINE = eng.machines.for_template(TEMPLATES["refugee_recognised"])

EXPECTED_ACTIONS = {
    # state: (required step, optional step)
    StepState.planned: (set(), {"skip"}),
    StepState.ready: ({"start", "block"}, {"start", "block", "skip"}),
    StepState.in_progress: ({"complete", "block"}, {"complete", "block", "skip"}),
    StepState.blocked: ({"resume"}, {"resume", "skip"}),
    StepState.completed: (set(), set()),
    StepState.skipped: (set(), set()),
    StepState.cancelled: (set(), set()),
}


@pytest.mark.parametrize("state", list(StepState), ids=lambda s: s.value)
@pytest.mark.parametrize("optional", [False, True], ids=["required", "optional"])
def test_possible_actions_per_state(state: StepState, optional: bool) -> None:
    expected = EXPECTED_ACTIONS[state][optional]
    for started in (False, True):
        step = a_step(optional, state, started=started)
        before = dataclasses.astuple(step)
        assert set(possible_actions(MACHINE, step)) == expected
        assert len(possible_actions(MACHINE, step)) == len(expected)  # no duplicates
        assert dataclasses.astuple(step) == before, "the dry run must not touch the step"


def test_possible_actions_never_offers_system_actions() -> None:
    for state in StepState:
        for optional in (False, True):
            offered = set(possible_actions(MACHINE, a_step(optional, state)))
            assert offered <= {a.value for a in Action}


def test_allowed_actions_only_for_owner_and_open_chain() -> None:
    step = a_step(True, StepState.ready)
    owner = owner_of(step)
    stranger = Actor("u", 2, "sozialamt", KREIS)
    assert set(eng.allowed_actions(MACHINE, step, owner, SCOPE, "open")) == {"start", "block", "skip"}
    assert eng.allowed_actions(MACHINE, step, stranger, SCOPE, "open") == []
    for lifecycle in ("completed", "closed"):
        assert eng.allowed_actions(MACHINE, step, owner, SCOPE, lifecycle) == []


def test_resume_returns_to_in_progress_when_started() -> None:
    template, machine, steps = fresh("uma")
    key = "provisional_inobhutnahme"
    act(template, machine, steps, key, "start", now=T0)
    act(template, machine, steps, key, "block", REASON, now=T0 + timedelta(days=1))
    assert steps[key].state == "blocked"
    assert steps[key].reason == REASON
    changes = act(template, machine, steps, key, "resume", now=T0 + timedelta(days=2))
    assert steps[key].state == "in_progress"
    assert changes == [StateChange(key, "resume", "blocked", "in_progress", None)]
    assert steps[key].started_at == T0, "resume keeps the first start"
    assert steps[key].completed_at is None


def test_resume_returns_to_ready_when_not_started() -> None:
    template, machine, steps = fresh("uma")
    key = "provisional_inobhutnahme"
    act(template, machine, steps, key, "block", REASON)
    changes = act(template, machine, steps, key, "resume", now=T0 + timedelta(days=2))
    assert steps[key].state == "ready"
    assert steps[key].started_at is None
    assert changes == [StateChange(key, "resume", "blocked", "ready", None)]


@pytest.mark.parametrize("action", ["block", "skip"])
@pytest.mark.parametrize("reason", [None, "", "   \n\t"])
def test_block_and_skip_need_a_reason(action: str, reason: str | None) -> None:
    template, machine, steps = fresh("eu_newcomer")
    act(template, machine, steps, "registration", "start")
    act(template, machine, steps, "registration", "complete")
    key = "kita_place"  # optional, now ready
    assert steps[key].state == "ready"
    before = snapshot(steps)
    with pytest.raises(ReasonRequired) as info:
        act(template, machine, steps, key, action, reason)
    assert info.value.status == 422
    assert snapshot(steps) == before


def test_reason_is_stripped_and_recorded() -> None:
    template, machine, steps = fresh("eu_newcomer")
    changes = act(template, machine, steps, "first_interview", "block", "  Dolmetscher fehlt  ")
    assert changes == [StateChange("first_interview", "block", "ready", "blocked", "Dolmetscher fehlt")]
    assert steps["first_interview"].reason == "Dolmetscher fehlt"


def test_skip_of_required_step_is_refused_by_the_guard() -> None:
    template, machine, steps = fresh("uma")
    key = "provisional_inobhutnahme"
    before = snapshot(steps)
    with pytest.raises(GuardFailed) as info:
        act(template, machine, steps, key, "skip", REASON)
    assert info.value.extra["guard"] == "step_is_optional"
    assert set(info.value.extra["allowed_actions"]) == {"start", "block"}
    assert snapshot(steps) == before


@pytest.mark.parametrize("reason", [None, "", REASON])
def test_skip_of_required_step_is_refused_whatever_the_reason(reason: str | None) -> None:
    """Skipping a required step is impossible: asking for a reason first would send the client
    round in circles (add a reason, then learn it cannot be skipped at all)."""
    template, machine, steps = fresh("uma")
    key = "provisional_inobhutnahme"
    before = snapshot(steps)
    with pytest.raises(GuardFailed) as info:
        act(template, machine, steps, key, "skip", reason)
    assert info.value.status == 409
    assert "skip" not in info.value.extra["allowed_actions"]
    assert snapshot(steps) == before


ILLEGAL = [
    # (state to bring the root step into, illegal action, allowed then)
    ("ready", "complete", {"start", "block"}),
    ("ready", "resume", {"start", "block"}),
    ("in_progress", "start", {"complete", "block"}),
    ("in_progress", "resume", {"complete", "block"}),
    ("blocked", "start", {"resume"}),
    ("blocked", "complete", {"resume"}),
    ("blocked", "block", {"resume"}),
    ("completed", "start", set()),
    ("completed", "complete", set()),
    ("completed", "block", set()),
    ("completed", "resume", set()),
    ("completed", "skip", set()),
    ("ready", "make_ready", {"start", "block"}),
    ("ready", "cancel", {"start", "block"}),
    ("ready", "frobnicate", {"start", "block"}),
]


@pytest.mark.parametrize(("state", "action", "allowed"), ILLEGAL)
def test_illegal_actions_raise_with_allowed_actions(state: str, action: str, allowed: set[str]) -> None:
    template, machine, steps = fresh("uma")
    key = "provisional_inobhutnahme"  # required root
    if state in ("in_progress", "completed"):
        act(template, machine, steps, key, "start")
    if state == "completed":
        act(template, machine, steps, key, "complete")
    if state == "blocked":
        act(template, machine, steps, key, "block", REASON)
    assert steps[key].state == state
    before = snapshot(steps)
    with pytest.raises(IllegalTransition) as info:
        act(template, machine, steps, key, action, REASON)
    assert info.value.status == 409
    assert info.value.extra["state"] == state
    assert set(info.value.extra["allowed_actions"]) == allowed
    assert snapshot(steps) == before


def test_planned_step_cannot_be_started() -> None:
    template, machine, steps = fresh("uma")
    key = "age_assessment"
    assert steps[key].state == "planned"
    with pytest.raises(IllegalTransition) as info:
        act(template, machine, steps, key, "start")
    assert info.value.extra["allowed_actions"] == []


# --------------------------------------------------------------------------------------------
# Who may act
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "actor",
    [
        Actor("u", 7, "sozialamt", KREIS),  # wrong kind
        Actor("u", 7, "jugendamt", OTHER_KREIS),  # right kind, another Kreis
        Actor("u", 7, "jugendamt", OTHER_TOWN),  # right kind, neighbouring town
        Actor("u", 7, "jugendamt", "/1/2/5/9/"),  # below the chain's jurisdiction
        Actor("u", 7, "jugendamt", "/2/5/"),  # a suffix, not a prefix
        Actor("u", CM_ORG, "kommunales_integrationszentrum", KREIS),  # the case management
    ],
    ids=["kind", "other-kreis", "other-town", "below", "suffix", "case-manager"],
)
def test_wrong_organisation(actor: Actor) -> None:
    """None of them is the organisation the step is assigned to."""
    template, machine, steps = fresh("uma")
    key = "provisional_inobhutnahme"  # jugendamt
    before = snapshot(steps)
    with pytest.raises(WrongOrganisation) as info:
        act(template, machine, steps, key, "start", actor=actor)
    assert info.value.status == 403
    assert info.value.extra["owner"] == "jugendamt"
    assert snapshot(steps) == before


@pytest.mark.parametrize("path", [LAND, KREIS, TOWN, OTHER_KREIS], ids=["land", "kreis", "town", "elsewhere"])
def test_only_the_assigned_organisation_acts_wherever_it_sits(path: str) -> None:
    """Owning the kind is not enough, and the place does not matter: the organisation the step
    is assigned to acts on it (the service assigned it as the nearest one serving the chain)."""
    template, machine, steps = fresh("uma")
    key = "provisional_inobhutnahme"  # jugendamt
    steps[key].assigned_organisation_id = 7
    with pytest.raises(WrongOrganisation):
        act(template, machine, steps, key, "start", actor=Actor("u", 8, "jugendamt", path))
    changes = act(template, machine, steps, key, "start", actor=Actor("u", 7, "jugendamt", path))
    assert changes[0] == StateChange(key, "start", "ready", "in_progress", None)


def test_an_unassigned_step_has_no_one_to_act_but_the_case_management_may_skip_it() -> None:
    template, machine, steps = fresh("uma")
    key = next(s.key for s in template.steps if s.optional and s.owner != CASE_MANAGEMENT_OWNER)
    steps[key].assigned_organisation_id = None
    owner_kind_org = Actor("u", 7, steps[key].owner_kind, KREIS)
    assert not eng.may_act(owner_kind_org, steps[key], SCOPE)
    assert eng.allowed_actions(machine, steps[key], owner_kind_org, SCOPE, "open") == []
    # The case management plans the chain: it may skip an optional step nobody has started,
    # planned or ready, but not do the step's work.
    assert eng.allowed_actions(machine, steps[key], CASE_MANAGER, SCOPE, "open") == ["skip"]
    steps[key].state = "ready"
    assert eng.allowed_actions(machine, steps[key], CASE_MANAGER, SCOPE, "open") == ["skip"]
    for action in ("start", "block"):
        with pytest.raises(WrongOrganisation):
            act(template, machine, steps, key, action, REASON, actor=CASE_MANAGER)
    act(template, machine, steps, key, "skip", REASON, actor=CASE_MANAGER)
    assert steps[key].state == "skipped"


def test_the_case_management_may_not_skip_a_started_or_required_step() -> None:
    template, machine, steps = fresh("uma")
    required = next(s.key for s in template.steps if not s.optional and s.owner != CASE_MANAGEMENT_OWNER
                    and steps[s.key].state == "ready")
    assert "skip" not in eng.allowed_actions(machine, steps[required], CASE_MANAGER, SCOPE, "open")
    step = a_step(True, StepState.in_progress, started=True)
    assert eng.allowed_actions(MACHINE, step, CASE_MANAGER, SCOPE, "open") == []


def test_case_management_owner_is_matched_by_organisation_id_only() -> None:
    template, machine, steps = fresh("eu_newcomer")
    key = "first_interview"  # owner: case_management
    # Same kind and jurisdiction as the case management, but another organisation: refused.
    twin = Actor("u", CM_ORG + 1, CASE_MANAGER.organisation_kind, KREIS)
    with pytest.raises(WrongOrganisation):
        act(template, machine, steps, key, "start", actor=twin)
    # An actor whose kind is literally "case_management" is nothing special either.
    literal = Actor("u", CM_ORG + 2, CASE_MANAGEMENT_OWNER, LAND)
    with pytest.raises(WrongOrganisation):
        act(template, machine, steps, key, "start", actor=literal)
    # The chain's case management may act, whatever its kind or jurisdiction.
    elsewhere = Actor("u", CM_ORG, "wohlfahrtsverband", OTHER_KREIS)
    act(template, machine, steps, key, "start", actor=elsewhere)
    assert steps[key].state == "in_progress"


def test_case_management_may_not_act_on_other_owners_steps() -> None:
    template, machine, steps = fresh("eu_newcomer")
    with pytest.raises(WrongOrganisation):
        act(template, machine, steps, "registration", "start", actor=CASE_MANAGER)


# --------------------------------------------------------------------------------------------
# Timestamps and deadlines
# --------------------------------------------------------------------------------------------


def test_started_at_set_on_first_start_and_kept() -> None:
    template, machine, steps = fresh("young_adult")
    key = "first_interview"
    t1, t2, t3, t4 = (T0 + timedelta(days=d) for d in (1, 2, 3, 4))
    act(template, machine, steps, key, "start", now=t1)
    assert steps[key].started_at == t1
    act(template, machine, steps, key, "block", REASON, now=t2)
    act(template, machine, steps, key, "resume", now=t3)
    assert steps[key].started_at == t1
    assert steps[key].completed_at is None
    act(template, machine, steps, key, "complete", now=t4)
    assert steps[key].started_at == t1
    assert steps[key].completed_at == t4


def test_block_before_start_leaves_started_at_empty() -> None:
    template, machine, steps = fresh("young_adult")
    key = "first_interview"
    act(template, machine, steps, key, "block", REASON, now=T0 + timedelta(days=1))
    act(template, machine, steps, key, "resume", now=T0 + timedelta(days=2))
    act(template, machine, steps, key, "start", now=T0 + timedelta(days=3))
    assert steps[key].started_at == T0 + timedelta(days=3)


@pytest.mark.parametrize("key", TEMPLATE_KEYS)
def test_new_chain_steps(key: str) -> None:
    template = TEMPLATES[key]
    machine = eng.machines.for_template(template)
    steps, changes = new_chain_steps(template, machine, T0)
    assert list(steps) == list(template.step_keys())
    roots = set(template.roots())
    for spec in template.steps:
        s = steps[spec.key]
        assert s.state == ("ready" if spec.key in roots else "planned")
        assert s.owner_kind == spec.owner and s.optional == spec.optional
        assert s.started_at is None and s.completed_at is None and s.reason is None
        if spec.due is not None and spec.due.anchor == CHAIN_STARTED:
            assert s.due_at == T0 + timedelta(days=spec.due.days)
            assert s.due_for == spec.due.deadline_for
        else:
            assert s.due_at is None and s.due_for is None
    assert sorted(c.step_key for c in changes) == sorted(roots)
    assert all(c == StateChange(c.step_key, "make_ready", "planned", "ready", None) for c in changes)


def test_due_rule_on_completion_is_set_when_anchor_completes_and_not_twice() -> None:
    template, machine, steps = fresh("refugee_recognised")
    rp = template.step("residence_permit").due
    assert rp is not None and rp.anchor == "asylum_decision" and rp.anchor_event == "completed"
    t1, t2, t3 = (T0 + timedelta(days=d) for d in (1, 5, 9))
    act(template, machine, steps, "arrival_assignment", "start", now=t1)
    act(template, machine, steps, "arrival_assignment", "complete", now=t1)
    assert steps["residence_permit"].due_at is None
    act(template, machine, steps, "asylum_decision", "start", now=t2)
    assert steps["residence_permit"].due_at is None, "anchored on completion, not on start"
    act(template, machine, steps, "asylum_decision", "complete", now=t3)
    assert steps["residence_permit"].state == "planned"  # still waits for registration
    assert steps["residence_permit"].due_at == t3 + timedelta(days=rp.days)
    assert steps["residence_permit"].due_for == rp.deadline_for == "completion"


def test_due_rule_for_start() -> None:
    template, machine, steps = fresh("young_adult")
    rule = template.step("career_guidance").due
    assert rule is not None and rule.deadline_for == "start"
    t1 = T0 + timedelta(days=3)
    act(template, machine, steps, "first_interview", "start", now=T0)
    act(template, machine, steps, "first_interview", "complete", now=t1)
    cg = steps["career_guidance"]
    assert cg.state == "ready"
    assert cg.due_at == t1 + timedelta(days=rule.days) and cg.due_for == "start"
    assert not is_overdue(cg, cg.due_at)
    assert is_overdue(cg, cg.due_at + timedelta(microseconds=1))
    act(template, machine, steps, "career_guidance", "start", now=cg.due_at + timedelta(days=1))
    assert not is_overdue(cg, cg.due_at + timedelta(days=2)), "started late, but started"


def test_due_rule_anchored_on_start() -> None:
    template, machine, steps = fresh("uma")
    t1 = T0 + timedelta(hours=5)
    act(template, machine, steps, "provisional_inobhutnahme", "start", now=t1)
    for key in ("age_assessment", "distribution_decision"):
        rule = template.step(key).due
        assert rule is not None and rule.anchor_event == "started"
        assert steps[key].due_at == t1 + timedelta(days=rule.days)
        assert steps[key].due_for == rule.deadline_for
    # A block and a resume are not a second start: deadlines stay.
    act(template, machine, steps, "provisional_inobhutnahme", "block", REASON, now=t1 + timedelta(days=1))
    act(template, machine, steps, "provisional_inobhutnahme", "resume", now=t1 + timedelta(days=2))
    assert steps["age_assessment"].due_at == t1 + timedelta(days=7)


def test_due_rule_not_set_on_skipped_target() -> None:
    template, machine, steps = fresh("eu_newcomer")
    # school_place is optional and due 28 days after registration completed.
    act(template, machine, steps, "school_place", "skip", REASON)
    act(template, machine, steps, "registration", "start")
    act(template, machine, steps, "registration", "complete", now=T0 + timedelta(days=1))
    assert steps["school_place"].state == "skipped"
    assert steps["school_place"].due_at is None


def test_is_overdue_for_completion() -> None:
    due = T0 + timedelta(days=10)
    step = StepInstance("s", "jobcenter", False, state="in_progress", started_at=T0, due_at=due,
                        due_for="completion")
    assert not is_overdue(step, due)
    assert is_overdue(step, due + timedelta(seconds=1))
    for state in TERMINAL:
        assert not is_overdue(dataclasses.replace(step, state=state.value), due + timedelta(days=1))
    assert is_overdue(dataclasses.replace(step, state="blocked"), due + timedelta(days=1))
    assert not is_overdue(dataclasses.replace(step, due_at=None, due_for=None), due + timedelta(days=99))


def test_derive_status() -> None:
    due = T0 + timedelta(days=10)
    active = StepInstance("a", "jobcenter", False, state="ready", due_at=due, due_for="start")
    blocked = StepInstance("b", "jobcenter", False, state="blocked", reason="x")
    done = StepInstance("c", "jobcenter", False, state="completed")
    assert derive_status("open", [active, done], T0) is ChainStatus.active
    assert derive_status("open", [active, done], due + timedelta(seconds=1)) is ChainStatus.stalled
    assert derive_status("open", [blocked], T0) is ChainStatus.stalled
    assert derive_status("completed", [blocked], T0) is ChainStatus.completed
    assert derive_status("closed", [blocked], T0) is ChainStatus.closed
    assert derive_status("open", [], T0) is ChainStatus.active


OPTIONAL_WITH_DEPENDANTS = [
    (key, spec.key)
    for key in TEMPLATE_KEYS
    for spec in TEMPLATES[key].steps
    if spec.optional and TEMPLATES[key].dependants(spec.key)
]


def descendants(template: ChainTemplate, key: str) -> set[str]:
    found: set[str] = set()
    stack = [key]
    while stack:
        for dep in template.dependants(stack.pop()):
            if dep not in found:
                found.add(dep)
                stack.append(dep)
    return found


@pytest.mark.parametrize("at", ["planned", "ready", "in_progress", "blocked"])
@pytest.mark.parametrize(("template_key", "optional_key"), OPTIONAL_WITH_DEPENDANTS)
def test_skipping_an_optional_prerequisite_releases_dependants(template_key, optional_key, at) -> None:
    """Skipped counts as ended for prerequisites: dependants waiting only for the skipped step
    become ready at once, with one make_ready change each."""
    template, machine, steps = fresh(template_key)
    held = descendants(template, optional_key) | {optional_key}
    # Finish everything that does not depend on the optional step (for "planned": nothing).
    progress = at != "planned"
    while progress:
        progress = False
        for k, s in steps.items():
            if k in held or s.state in ("completed",):
                continue
            if s.state == "ready":
                act(template, machine, steps, k, "start")
                progress = True
            if s.state == "in_progress":
                act(template, machine, steps, k, "complete")
                progress = True
    opt = steps[optional_key]
    if at != "planned":
        assert opt.state == "ready"
        if at in ("in_progress", "blocked"):
            act(template, machine, steps, optional_key, "start")
        if at == "blocked":
            act(template, machine, steps, optional_key, "block", REASON)
    assert opt.state == at
    before = {k: s.state for k, s in steps.items()}
    changes = act(template, machine, steps, optional_key, "skip", REASON)
    assert changes[0] == StateChange(optional_key, "skip", at, "skipped", REASON)
    released = {
        d for d in template.dependants(optional_key)
        if before[d] == "planned" and prerequisites_met(template, steps, d)
    }
    if at != "planned":
        # everything else was finished, so each direct dependant waits only for the skipped step
        assert released == set(template.dependants(optional_key))
    assert {c.step_key for c in changes[1:]} == released
    for c in changes[1:]:
        assert c == StateChange(c.step_key, "make_ready", "planned", "ready", None)
        assert steps[c.step_key].state == "ready"
    # Either way the chain can still be finished without touching the skipped step again.
    walk_to_end(template, steps, random.Random(0), T0)
    assert steps[optional_key].state == "skipped"


# --------------------------------------------------------------------------------------------
# Machine registry
# --------------------------------------------------------------------------------------------


def test_registry_builds_one_machine_per_template_version(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[transitions.Machine] = []
    real = eng.Machine

    class CountingMachine(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(eng, "Machine", CountingMachine)
    registry = MachineRegistry()
    monkeypatch.setattr(eng, "machines", registry)

    rng = random.Random(5)
    all_steps: list[StepInstance] = []
    for _ in range(20):
        for key in TEMPLATE_KEYS:
            template = TEMPLATES[key]
            machine = eng.machines.for_template(template)
            steps, _ = new_chain_steps(template, machine, T0)
            walk_to_end(template, steps, rng, T0)
            all_steps.extend(steps.values())
    assert len(registry) == len(TEMPLATES)
    assert len(built) == len(TEMPLATES)
    # A second version of a template is a second machine; the same version is never rebuilt.
    v2 = dataclasses.replace(TEMPLATES["uma"], version=2)
    m2 = registry.for_template(v2)
    assert m2 is registry.for_template(v2) is registry.for_template(dataclasses.replace(v2))
    assert m2 is not registry.for_template(TEMPLATES["uma"])
    assert len(registry) == len(built) == len(TEMPLATES) + 1
    for machine in built:
        assert machine.models == [], "machines are shared: no step may be registered on them"
    # Nothing of the machine is attached to the steps.
    for step in all_steps:
        assert not hasattr(step, "__dict__")
        for attr in ("trigger", "may_start", "may_complete", "start", "complete", "block",
                     "to_ready", "is_ready", "machine"):
            assert not hasattr(step, attr), attr


def test_global_registry_is_stable() -> None:
    for key in TEMPLATE_KEYS:
        m = eng.machines.for_template(TEMPLATES[key])
        count = len(eng.machines)
        for _ in range(3):
            template, machine, steps = fresh(key)
            assert machine is m
            walk_to_end(TEMPLATES[key], steps, random.Random(1), T0)
        assert len(eng.machines) == count
        assert m.models == []


# --------------------------------------------------------------------------------------------
# Every template can be completed
# --------------------------------------------------------------------------------------------


def walk_to_end(template: ChainTemplate, steps: dict[str, StepInstance], rng: random.Random,
                now: datetime) -> int:
    """Take random allowed non-block actions as the owner until every step has ended."""
    machine = eng.machines.for_template(template)
    moves = 0
    limit = 3 * len(steps)
    while not eng.all_steps_ended(steps.values()):
        assign_ready(steps)
        options = [
            (k, a)
            for k, s in steps.items()
            for a in eng.allowed_actions(machine, s, owner_of(s), SCOPE, "open")
            if a != Action.block.value
        ]
        assert options, f"stuck: {[(k, s.state) for k, s in steps.items()]}"
        key, action = rng.choice(options)
        apply_action(template, machine, steps, key, action, REASON, owner_of(steps[key]), SCOPE, now)
        now += timedelta(hours=rng.randint(1, 200))
        moves += 1
        assert moves <= limit, "no progress"
    return moves


@pytest.mark.parametrize("key", TEMPLATE_KEYS)
def test_every_template_is_completable(key: str) -> None:
    template = TEMPLATES[key]
    for seed in range(25):
        _, machine, steps = fresh(key)
        walk_to_end(template, steps, random.Random(seed), T0)
        assert eng.all_steps_ended(steps.values())
        assert all(s.state in SATISFIES_PREREQUISITE for s in steps.values())


@pytest.mark.parametrize("key", TEMPLATE_KEYS)
def test_template_completable_by_only_starting_and_completing(key: str) -> None:
    template, machine, steps = fresh(key)
    moves = 0
    while not eng.all_steps_ended(steps.values()):
        ready = [k for k, s in steps.items() if s.state == "ready"]
        running = [k for k, s in steps.items() if s.state == "in_progress"]
        assert ready or running
        for k in ready:
            act(template, machine, steps, k, "start")
        for k in running:
            act(template, machine, steps, k, "complete")
        moves += 1
        assert moves <= 2 * len(steps)
    assert all(s.state == "completed" for s in steps.values())


# --------------------------------------------------------------------------------------------
# Properties over random action sequences
# --------------------------------------------------------------------------------------------


def prerequisites_met(template: ChainTemplate, steps: dict[str, StepInstance], key: str) -> bool:
    return all(steps[r].state in SATISFIES_PREREQUISITE for r in template.step(key).requires)


def expected_overdue(step: StepInstance, now: datetime) -> bool:
    if step.due_at is None or step.state in {s.value for s in TERMINAL}:
        return False
    if now <= step.due_at:
        return False
    return step.started_at is None if step.due_for == "start" else step.completed_at is None


def expected_status(lifecycle: str, steps: list[StepInstance], now: datetime) -> ChainStatus:
    if lifecycle == "closed":
        return ChainStatus.closed
    if lifecycle == "completed":
        return ChainStatus.completed
    if any(s.state == "blocked" or expected_overdue(s, now) for s in steps):
        return ChainStatus.stalled
    return ChainStatus.active


def check_invariants(template: ChainTemplate, steps: dict[str, StepInstance], now: datetime) -> None:
    for key, step in steps.items():
        met = prerequisites_met(template, steps, key)
        # (3) nothing runs or finishes before its prerequisites; "ready" means they are met.
        if step.state in ("ready", "in_progress", "completed", "blocked"):
            assert met, f"{key} is {step.state} before its prerequisites ended"
        # (4) no planned step whose prerequisites are all satisfied.
        if step.state == "planned":
            assert not met, f"{key} stayed planned although its prerequisites ended"
        if step.state in ("in_progress", "completed"):
            assert step.started_at is not None
        if step.state == "completed":
            assert step.completed_at is not None
        else:
            assert step.completed_at is None
        if step.state in ("blocked", "skipped"):
            assert step.reason
        assert (step.due_at is None) == (step.due_for is None)
    # (5) derived status
    lifecycle = "completed" if eng.all_steps_ended(steps.values()) else "open"
    for t in (now, now + timedelta(days=20), now + timedelta(days=200), now + timedelta(days=4000)):
        assert derive_status(lifecycle, steps.values(), t) is expected_status(lifecycle, list(steps.values()), t)
        for s in steps.values():
            assert is_overdue(s, t) == expected_overdue(s, t)


def expected_acceptance(machine, step: StepInstance, action: str, actor: Actor, reason: str | None) -> bool:
    if action not in {a.value for a in Action}:
        return False
    if not eng.may_act(actor, step, SCOPE) and not (action == "skip" and eng.plans_step(actor, step, SCOPE)):
        return False
    # the transition table written out above, not the engine's own possible_actions
    if action not in EXPECTED_ACTIONS[StepState(step.state)][step.optional]:
        return False
    return not (action in ("block", "skip") and not (reason or "").strip())


ACTIONS = [a.value for a in Action] + ["make_ready", "cancel", "frobnicate"]
REASONS = st.sampled_from([None, "", "   ", REASON, "  Termin verschoben "])


def stranger_for(step: StepInstance, pick: int) -> Actor:
    """An actor that must not act on the step."""
    if step.owner_kind == CASE_MANAGEMENT_OWNER:
        return [
            Actor("x", CM_ORG + 1, CASE_MANAGER.organisation_kind, KREIS),
            Actor("x", CM_ORG + 2, CASE_MANAGEMENT_OWNER, LAND),
        ][pick % 2]
    other_kind = KINDS[(KINDS.index(step.owner_kind) + 1 + pick) % len(KINDS)]
    return [
        Actor("x", 900, other_kind, KREIS),
        Actor("x", 901, step.owner_kind, OTHER_KREIS),
        Actor("x", 902, step.owner_kind, OTHER_TOWN),
        Actor("x", CM_ORG, other_kind, TOWN),
    ][pick % 4]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), key=st.sampled_from(TEMPLATE_KEYS))
def test_random_action_sequences(data: st.DataObject, key: str) -> None:
    template = TEMPLATES[key]
    machine = eng.machines.for_template(template)
    now = T0
    steps, initial = new_chain_steps(template, machine, now)
    assert {c.step_key for c in initial} == set(template.roots())
    check_invariants(template, steps, now)
    first_due = {k: s.due_at for k, s in steps.items()}
    step_keys = list(template.step_keys())
    moves = data.draw(st.integers(min_value=1, max_value=70), label="moves")
    for _ in range(moves):
        if eng.all_steps_ended(steps.values()):
            break
        assign_ready(steps)
        now += timedelta(minutes=data.draw(st.integers(0, 20 * 24 * 60), label="minutes"))
        smart = data.draw(st.integers(0, 3), label="mode") > 0
        options = [
            (k, a) for k, s in steps.items() if s.state in {st_.value for st_ in OPEN_STATES}
            for a in possible_actions(machine, s)
        ]
        if smart and options:
            step_key, action = data.draw(st.sampled_from(options), label="option")
        else:
            step_key = data.draw(st.sampled_from(step_keys), label="step")
            action = data.draw(st.sampled_from(ACTIONS), label="action")
        is_owner = data.draw(st.integers(0, 5), label="owner") > 0
        actor = owner_of(steps[step_key]) if is_owner else stranger_for(
            steps[step_key], data.draw(st.integers(0, 7), label="stranger"))
        reason = data.draw(REASONS, label="reason")
        if smart and action in ("block", "skip") and data.draw(st.booleans(), label="give reason"):
            reason = REASON

        before = snapshot(steps)
        before_states = {k: s.state for k, s in steps.items()}
        before_started = {k: s.started_at for k, s in steps.items()}
        expect = expected_acceptance(machine, steps[step_key], action, actor, reason)
        try:
            changes = apply_action(template, machine, steps, step_key, action, reason, actor, SCOPE, now)
        except Problem:
            # (1) a refused attempt changes nothing
            assert not expect, f"refused although allowed: {step_key} {action}"
            assert snapshot(steps) == before
            continue
        assert expect, f"accepted although not allowed: {step_key} {action} by {actor}"

        # (2) exactly one StateChange per step whose state changed, matching before/after
        changed = {k for k, s in steps.items() if s.state != before_states[k]}
        assert step_key in changed
        assert len(changes) == len(changed)
        assert {c.step_key for c in changes} == changed
        for c in changes:
            assert c.from_state == before_states[c.step_key]
            assert c.to_state == steps[c.step_key].state
        assert changes[0].step_key == step_key and changes[0].action == action
        assert all(c.action == SystemAction.make_ready.value and c.to_state == "ready" for c in changes[1:])
        # steps that did not change state were at most given a deadline
        for k in set(steps) - changed:
            if dataclasses.astuple(steps[k]) != before[k]:
                unchanged = dataclasses.replace(steps[k], due_at=None, due_for=None, dirty=False)
                assert dataclasses.astuple(unchanged)[:-1] == before[k][:-1], f"{k} changed beyond its deadline"
                assert first_due[k] is None

        # timestamps
        acted = steps[step_key]
        if action == "start":
            assert acted.started_at == now
        elif action == "resume":
            assert acted.started_at == before_started[step_key]
            assert acted.state == ("in_progress" if acted.started_at else "ready")
        elif action == "complete":
            assert acted.completed_at == now
        if action in ("block", "skip"):
            assert acted.reason == reason.strip()

        # deadlines: set once, never moved, and set exactly when their clock starts
        for k, s in steps.items():
            if first_due[k] is not None:
                assert s.due_at == first_due[k], f"deadline of {k} moved"
        clock_event = None
        if action == "complete":
            clock_event = "completed"
        elif action == "start" and before_states[step_key] == "ready":
            clock_event = "started"
        for spec in template.rules_anchored_on(step_key):
            target = steps[spec.key]
            assert spec.due is not None
            if clock_event == spec.due.anchor_event and first_due[spec.key] is None:
                if before_states[spec.key] in {s_.value for s_ in TERMINAL}:
                    assert target.due_at is None
                else:
                    assert target.due_at == now + timedelta(days=spec.due.days)
                    assert target.due_for == spec.due.deadline_for
        for k, s in steps.items():
            if first_due[k] is None and s.due_at is not None:
                rule = template.step(k).due
                assert rule is not None and rule.anchor == step_key, f"deadline of {k} set out of turn"
            first_due[k] = s.due_at

        check_invariants(template, steps, now)

    # (6) closing cancels every open step, one change each
    open_before = {k for k, s in steps.items() if s.state not in {t.value for t in TERMINAL}}
    ended_before = {k: dataclasses.astuple(s) for k, s in steps.items() if k not in open_before}
    state_before = {k: s.state for k, s in steps.items()}
    changes = close_steps(machine, steps.values(), "moved_away", now)
    assert not any(s.state in {o.value for o in OPEN_STATES} for s in steps.values())
    assert sorted(c.step_key for c in changes) == sorted(open_before)
    for c in changes:
        assert c.action == "cancel" and c.to_state == "cancelled" and c.reason == "moved_away"
        assert c.from_state == state_before[c.step_key]
    for k, snap in ended_before.items():
        assert dataclasses.astuple(steps[k]) == snap
    assert derive_status("closed", steps.values(), now) is ChainStatus.closed
    assert close_steps(machine, steps.values(), "again", now) == []


@settings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from(TEMPLATE_KEYS),
    seed=st.integers(0, 2**32 - 1),
    offsets=st.lists(st.integers(-3, 3), min_size=1, max_size=4),
)
def test_overdue_boundaries(key: str, seed: int, offsets: list[int]) -> None:
    """``is_overdue`` flips exactly one microsecond after ``due_at``."""
    template, machine, steps = fresh(key)
    rng = random.Random(seed)
    now = T0
    for _ in range(rng.randint(0, 3 * len(steps))):
        options = [(k, a) for k, s in steps.items() for a in possible_actions(machine, s)]
        if not options:
            break
        k, a = rng.choice(options)
        apply_action(template, machine, steps, k, a, REASON, owner_of(steps[k]), SCOPE, now)
        now += timedelta(hours=rng.randint(0, 300))
    for s in steps.values():
        if s.due_at is None:
            continue
        for off in offsets:
            t = s.due_at + timedelta(microseconds=off)
            assert is_overdue(s, t) == expected_overdue(s, t)
            if s.state not in {x.value for x in TERMINAL} and off <= 0:
                assert not is_overdue(s, t)
