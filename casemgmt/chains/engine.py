"""The step state machine and the rules of a running chain. Pure: no I/O, no clock.

One ``transitions.Machine`` is built per template version (``model=None``,
``auto_transitions=False``) and triggered on the step loaded from the database, so memory does not
grow with the number of chains. The service layer loads a chain, calls :func:`apply_action`, and
writes the returned changes (state + one event per change) in one transaction.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from threading import Lock

from transitions import Machine, MachineError

from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER, ChainTemplate
from casemgmt.problems import (
    GuardFailed,
    IllegalTransition,
    ReasonRequired,
    WrongOrganisation,
)


class StepState(str, enum.Enum):
    """State of one step of a running chain."""

    planned = "planned"  # waiting for prerequisites
    ready = "ready"  # prerequisites met, the owner can start
    in_progress = "in_progress"
    completed = "completed"
    blocked = "blocked"  # held up, with a reason; resumable
    skipped = "skipped"  # optional step not needed, with a reason
    cancelled = "cancelled"  # the chain was closed before the step ended


class Action(str, enum.Enum):
    """What a user may do to a step."""

    start = "start"
    complete = "complete"
    block = "block"
    resume = "resume"
    skip = "skip"


class SystemAction(str, enum.Enum):
    """State changes the chain makes by itself."""

    make_ready = "make_ready"  # all prerequisites completed or skipped
    cancel = "cancel"  # the chain was closed
    # A step that a new template version adds, skipped by the migration plan because the chain
    # is already past it (casemgmt.chains.migration); never offered to users.
    skip_on_migration = "skip_on_migration"
    # A ready step nobody has started that a new template version makes wait for a new
    # prerequisite: it is planned again until that has ended.
    wait_on_migration = "wait_on_migration"


class ChainLifecycle(str, enum.Enum):
    """Stored lifecycle of a chain; see :class:`ChainStatus` for what users see."""

    open = "open"
    completed = "completed"
    closed = "closed"


class ChainStatus(str, enum.Enum):
    """Derived status of a chain."""

    active = "active"
    stalled = "stalled"  # a step is blocked or overdue
    completed = "completed"
    closed = "closed"


class CloseReason(str, enum.Enum):
    """Why a chain ended before completion."""

    moved_away = "moved_away"
    ended_by_person = "ended_by_person"
    naturalised = "naturalised"
    deceased = "deceased"
    opened_in_error = "opened_in_error"
    other = "other"


TERMINAL = frozenset({StepState.completed, StepState.skipped, StepState.cancelled})
SATISFIES_PREREQUISITE = frozenset({StepState.completed, StepState.skipped})
OPEN_STATES = frozenset(StepState) - TERMINAL
REASON_REQUIRED = frozenset({Action.block, Action.skip})
MAX_REASON_LENGTH = 2000


@dataclass(slots=True)
class StepInstance:
    """The mutable state of one step, as loaded from its row. ``state`` is what the machine moves."""

    key: str
    owner_kind: str
    optional: bool
    state: str = StepState.planned.value
    reason: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    due_at: datetime | None = None
    due_for: str | None = None
    # The organisation that does the step: set when it becomes ready (or earlier by an
    # acknowledged handover); None while nobody is assigned.
    assigned_organisation_id: int | None = None
    dirty: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a user for one organisation, as authenticated."""

    user_id: str
    organisation_id: int
    organisation_kind: str
    jurisdiction_path: str  # the organisation's jurisdiction path, e.g. "/1/4/"
    roles: frozenset[str] = frozenset()
    # A role of the user is declared installation-wide (policies/roles.yaml): its officer and
    # administration views are not limited to the organisation's own area.
    installation_wide: bool = False


@dataclass(frozen=True, slots=True)
class ChainScope:
    """What of the chain decides who may act on its steps."""

    jurisdiction_path: str  # path of the chain's lead jurisdiction
    case_management_organisation_id: int


@dataclass(frozen=True, slots=True)
class StateChange:
    """One state change of one step; becomes exactly one event row."""

    step_key: str
    action: str
    from_state: str
    to_state: str
    reason: str | None


def _stamp_started(event) -> None:
    step: StepInstance = event.model
    if step.started_at is None:
        step.started_at = event.kwargs["now"]


def _stamp_completed(event) -> None:
    event.model.completed_at = event.kwargs["now"]


def _record_reason(event) -> None:
    event.model.reason = event.kwargs.get("reason")


def _is_optional(event) -> bool:
    return event.model.optional


def _was_started(event) -> bool:
    return event.model.started_at is not None


def _was_not_started(event) -> bool:
    return event.model.started_at is None


GUARD_NAMES = {_is_optional: "step_is_optional"}


def _build_machine(template: ChainTemplate) -> Machine:
    s = StepState
    open_ = [s.planned.value, s.ready.value, s.in_progress.value, s.blocked.value]
    transitions = [
        {"trigger": SystemAction.make_ready.value, "source": s.planned.value, "dest": s.ready.value},
        {"trigger": Action.start.value, "source": s.ready.value, "dest": s.in_progress.value},
        {"trigger": Action.complete.value, "source": s.in_progress.value, "dest": s.completed.value},
        {
            "trigger": Action.block.value,
            "source": [s.ready.value, s.in_progress.value],
            "dest": s.blocked.value,
        },
        # Resuming returns to where the step was: started work continues, unstarted waits.
        {
            "trigger": Action.resume.value,
            "source": s.blocked.value,
            "dest": s.in_progress.value,
            "conditions": [_was_started],
        },
        {
            "trigger": Action.resume.value,
            "source": s.blocked.value,
            "dest": s.ready.value,
            "conditions": [_was_not_started],
        },
        {
            "trigger": Action.skip.value,
            "source": open_,
            "dest": s.skipped.value,
            "conditions": [_is_optional],
        },
        {"trigger": SystemAction.cancel.value, "source": open_, "dest": s.cancelled.value},
        {"trigger": SystemAction.skip_on_migration.value, "source": [s.planned.value, s.ready.value],
         "dest": s.skipped.value},
        {"trigger": SystemAction.wait_on_migration.value, "source": s.ready.value, "dest": s.planned.value},
    ]
    machine = Machine(
        model=None,
        states=[st.value for st in StepState],
        transitions=transitions,
        initial=s.planned.value,
        auto_transitions=False,
        send_event=True,
        before_state_change=[_record_reason],
        name=f"{template.key}@{template.version}",
    )
    machine.get_state(s.in_progress.value).add_callback("enter", _stamp_started)
    machine.get_state(s.completed.value).add_callback("enter", _stamp_completed)
    return machine


class MachineRegistry:
    """One shared machine per (template key, version), built on first use."""

    def __init__(self) -> None:
        self._machines: dict[tuple[str, int], Machine] = {}
        self._lock = Lock()

    def for_template(self, template: ChainTemplate) -> Machine:
        ident = (template.key, template.version)
        machine = self._machines.get(ident)
        if machine is None:
            with self._lock:
                machine = self._machines.get(ident)
                if machine is None:
                    machine = _build_machine(template)
                    self._machines[ident] = machine
        return machine

    def __len__(self) -> int:
        return len(self._machines)


machines = MachineRegistry()


def may_act(actor: Actor, step: StepInstance, scope: ChainScope) -> bool:
    """The actor's organisation does the step: for a case-management step it is the chain's
    case-management organisation; otherwise it is the organisation the step is assigned to.
    Owning the *kind* of a step is not enough: an organisation acts on a step of a person only
    once the step has been assigned to it (when it became ready, by a handover or by the case
    management)."""
    if step.owner_kind == CASE_MANAGEMENT_OWNER:
        return actor.organisation_id == scope.case_management_organisation_id
    return step.assigned_organisation_id is not None and actor.organisation_id == step.assigned_organisation_id


def plans_step(actor: Actor, step: StepInstance, scope: ChainScope) -> bool:
    """The chain's case management plans the chain: it may skip an optional step that nobody
    has started yet, whoever it is (or will be) assigned to."""
    return (actor.organisation_id == scope.case_management_organisation_id and step.optional
            and step.started_at is None)


def _fire(machine: Machine, step: StepInstance, trigger: str, now: datetime, reason: str | None) -> bool:
    """Trigger on the step itself. False when a guard refused; MachineError when illegal."""
    return machine.events[trigger].trigger(step, now=now, reason=reason)


def possible_actions(machine: Machine, step: StepInstance) -> list[str]:
    """User actions the step's state and guards allow, whoever asks.

    The guards read only the state, whether the step is optional and whether it was started,
    so the answer is worked out once per machine and combination (a dry run of each trigger on
    a copy of the step) and then looked up."""
    key = (id(machine), step.state, step.optional, step.started_at is not None)
    cached = _POSSIBLE.get(key)
    if cached is None:
        cached = []
        for trigger in machine.get_triggers(step.state):
            if trigger not in Action.__members__:
                continue
            probe = dataclasses.replace(step)
            if _fire(machine, probe, trigger, probe.started_at or _EPOCH, "dry run"):
                cached.append(trigger)
        _POSSIBLE[key] = cached
    return list(cached)


# (machine, state, optional, started) -> possible actions; machines live as long as the process.
_POSSIBLE: dict[tuple[int, str, bool, bool], list[str]] = {}


def allowed_actions(
    machine: Machine, step: StepInstance, actor: Actor, scope: ChainScope, lifecycle: str
) -> list[str]:
    """What this actor may do to this step now."""
    if lifecycle != ChainLifecycle.open.value:
        return []
    if may_act(actor, step, scope):
        return possible_actions(machine, step)
    if plans_step(actor, step, scope):
        return [a for a in possible_actions(machine, step) if a == Action.skip.value]
    return []


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def clean_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    reason = reason.strip()
    return reason or None


def apply_action(
    template: ChainTemplate,
    machine: Machine,
    steps: Mapping[str, StepInstance],
    step_key: str,
    action: str,
    reason: str | None,
    actor: Actor,
    scope: ChainScope,
    now: datetime,
) -> list[StateChange]:
    """Apply a user's action to a step and everything it sets off (dependants becoming ready,
    deadlines starting). Returns the changes in order; raises a Problem and changes nothing if the
    action is not allowed."""
    step = steps[step_key]
    reason = clean_reason(reason)
    if action not in Action.__members__:
        raise IllegalTransition(
            f"'{action}' is not an action on steps",
            state=step.state,
            allowed_actions=possible_actions(machine, step),
        )
    if action not in machine.get_triggers(step.state):
        raise IllegalTransition(
            f"cannot {action} step '{step_key}' while it is {step.state}",
            state=step.state,
            allowed_actions=possible_actions(machine, step),
        )
    if not may_act(actor, step, scope) and not (action == Action.skip.value and plans_step(actor, step, scope)):
        raise WrongOrganisation(
            f"step '{step_key}' is done by the organisation it is assigned to"
            + ("" if step.owner_kind == CASE_MANAGEMENT_OWNER else f" (a {step.owner_kind})"),
            owner=step.owner_kind,
        )
    allowed = possible_actions(machine, step)
    if action not in allowed:
        # The state has the action but its guard refuses it (skip needs an optional step).
        raise GuardFailed(
            f"cannot {action} step '{step_key}': it is not optional",
            guard="step_is_optional",
            state=step.state,
            allowed_actions=allowed,
        )
    if Action(action) in REASON_REQUIRED and not reason:
        raise ReasonRequired(f"{action} needs a reason")
    before = step.state
    try:
        fired = _fire(machine, step, action, now, reason)
    except MachineError as exc:  # pragma: no cover - guarded by get_triggers above
        raise IllegalTransition(str(exc), state=step.state, allowed_actions=allowed) from exc
    if not fired:  # pragma: no cover - the dry run above evaluated the same guards
        raise GuardFailed(f"cannot {action} step '{step_key}'", state=step.state, allowed_actions=allowed)
    step.dirty = True
    changes = [StateChange(step_key, action, before, step.state, reason)]
    changes.extend(_after_change(template, machine, steps, step, before, now))
    return changes


def complete_on_handover(
    template: ChainTemplate,
    machine: Machine,
    steps: Mapping[str, StepInstance],
    step_key: str,
    reason: str,
    now: datetime,
) -> list[StateChange]:
    """Complete a step because the receiver of a Rechtskreiswechsel acknowledged it: the sending
    organisation's step ends exactly when the receiving one has taken over. The acknowledged
    handover is the authority, so no owner check; the step must be in progress."""
    step = steps[step_key]
    if step.state != StepState.in_progress.value:
        raise IllegalTransition(
            f"step '{step_key}' is {step.state}; a Rechtskreiswechsel completes a step in progress",
            state=step.state, allowed_actions=possible_actions(machine, step),
        )
    _fire(machine, step, Action.complete.value, now, reason)
    step.dirty = True
    changes = [StateChange(step_key, Action.complete.value, StepState.in_progress.value, step.state, reason)]
    changes.extend(_after_change(template, machine, steps, step, StepState.in_progress.value, now))
    return changes


def _after_change(
    template: ChainTemplate,
    machine: Machine,
    steps: Mapping[str, StepInstance],
    step: StepInstance,
    before: str,
    now: datetime,
) -> list[StateChange]:
    changes: list[StateChange] = []
    if step.state == StepState.in_progress.value and before == StepState.ready.value:
        _start_clocks(template, steps, step.key, "started", now)
    if step.state in (StepState.completed.value, StepState.skipped.value):
        if step.state == StepState.completed.value:
            _start_clocks(template, steps, step.key, "completed", now)
        for dep_key in template.dependants(step.key):
            changes.extend(_make_ready_if_due(template, machine, steps, dep_key, now))
    return changes


def _make_ready_if_due(
    template: ChainTemplate,
    machine: Machine,
    steps: Mapping[str, StepInstance],
    key: str,
    now: datetime,
) -> list[StateChange]:
    dep = steps[key]
    if dep.state != StepState.planned.value:
        return []
    if not all(steps[r].state in SATISFIES_PREREQUISITE for r in template.step(key).requires):
        return []
    _fire(machine, dep, SystemAction.make_ready.value, now, None)
    dep.dirty = True
    return [StateChange(key, SystemAction.make_ready.value, StepState.planned.value, dep.state, None)]


def _start_clocks(
    template: ChainTemplate, steps: Mapping[str, StepInstance], anchor: str, event: str, at: datetime
) -> None:
    """Set the deadlines of steps whose due rule is anchored on this event (first time only)."""
    for spec in template.rules_anchored_on(anchor):
        rule = spec.due
        assert rule is not None
        target = steps[spec.key]
        if rule.anchor_event != event or target.state in TERMINAL or target.due_at is not None:
            continue
        target.due_at = at + timedelta(days=rule.days)
        target.due_for = rule.deadline_for
        target.dirty = True


def new_chain_steps(
    template: ChainTemplate, machine: Machine, now: datetime
) -> tuple[dict[str, StepInstance], list[StateChange]]:
    """The steps of a chain that starts now: roots ready, the rest planned, chain clocks running."""
    steps = {
        spec.key: StepInstance(key=spec.key, owner_kind=spec.owner, optional=spec.optional)
        for spec in template.steps
    }
    _start_clocks(template, steps, "chain_started", "started", now)
    changes: list[StateChange] = []
    for key in template.roots():
        changes.extend(_make_ready_if_due(template, machine, steps, key, now))
    return steps, changes


def add_step(
    template: ChainTemplate,
    machine: Machine,
    steps: dict[str, StepInstance],
    key: str,
    due_at: datetime | None,
    now: datetime,
) -> list[StateChange]:
    """A step added to a running chain (agreed in a Fallkonferenz; ``template`` already has its
    spec): planned, with its fixed deadline, and ready at once if its prerequisites have ended."""
    spec = template.step(key)
    steps[key] = StepInstance(key=key, owner_kind=spec.owner, optional=spec.optional, due_at=due_at,
                              due_for=None if due_at is None else "completion", dirty=True)
    return _make_ready_if_due(template, machine, steps, key, now)


def close_steps(
    machine: Machine, steps: Iterable[StepInstance], reason: str, now: datetime
) -> list[StateChange]:
    """Cancel every step that has not ended, because the chain is being closed."""
    changes = []
    for step in steps:
        if step.state in TERMINAL:
            continue
        before = step.state
        _fire(machine, step, SystemAction.cancel.value, now, reason)
        step.dirty = True
        changes.append(StateChange(step.key, SystemAction.cancel.value, before, step.state, reason))
    return changes


def is_overdue(step: StepInstance, now: datetime) -> bool:
    """The step's deadline has passed and what it was due for has not happened."""
    if step.due_at is None or step.state in TERMINAL or now <= step.due_at:
        return False
    if step.due_for == "start":
        return step.started_at is None
    return step.completed_at is None


def all_steps_ended(steps: Iterable[StepInstance]) -> bool:
    return all(step.state in SATISFIES_PREREQUISITE for step in steps)


def derive_status(lifecycle: str, steps: Iterable[StepInstance], now: datetime) -> ChainStatus:
    """What a user sees: closed, completed, stalled (a step blocked or overdue), or active."""
    if lifecycle == ChainLifecycle.closed.value:
        return ChainStatus.closed
    if lifecycle == ChainLifecycle.completed.value:
        return ChainStatus.completed
    for step in steps:
        if step.state == StepState.blocked.value or is_overdue(step, now):
            return ChainStatus.stalled
    return ChainStatus.active
