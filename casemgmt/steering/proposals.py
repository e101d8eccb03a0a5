"""The lifecycle of a proposal to the Lenkungsgruppe. Pure: no I/O, no clock.

    bundled --submit--> submitted                                 (moderator)
    submitted --accept--> accepted          new working group, due date      (steering group)
    submitted --delegate--> delegated       existing working group, due date
    submitted --reject--> rejected          reason
    submitted --defer--> deferred           reason (internal clarification); may be resubmitted
    deferred --submit--> submitted
    accepted | delegated --start--> in_implementation
    in_implementation --complete--> implemented
    implemented --make_permanent--> made_permanent  (verstetigt)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from casemgmt.problems import IllegalTransition, ReasonRequired, invalid_field


class ProposalState(str, enum.Enum):
    bundled = "bundled"
    submitted = "submitted"
    accepted = "accepted"
    delegated = "delegated"
    rejected = "rejected"
    deferred = "deferred"
    in_implementation = "in_implementation"
    implemented = "implemented"
    made_permanent = "made_permanent"


class ProposalAction(str, enum.Enum):
    submit = "submit"
    accept = "accept"
    delegate = "delegate"
    reject = "reject"
    defer = "defer"
    start = "start"
    complete = "complete"
    make_permanent = "make_permanent"


S, A = ProposalState, ProposalAction
TRANSITIONS: dict[tuple[ProposalState, ProposalAction], ProposalState] = {
    (S.bundled, A.submit): S.submitted,
    (S.deferred, A.submit): S.submitted,
    (S.submitted, A.accept): S.accepted,
    (S.submitted, A.delegate): S.delegated,
    (S.submitted, A.reject): S.rejected,
    (S.submitted, A.defer): S.deferred,
    (S.accepted, A.start): S.in_implementation,
    (S.delegated, A.start): S.in_implementation,
    (S.in_implementation, A.complete): S.implemented,
    (S.implemented, A.make_permanent): S.made_permanent,
}
# Who may take an action: the moderators bring proposals in, the steering group decides.
MODERATOR_ACTIONS = frozenset({A.submit})
DECISIONS = frozenset({A.accept, A.delegate, A.reject, A.defer})
NEEDS_REASON = frozenset({A.reject, A.defer})
NEEDS_WORKING_GROUP = frozenset({A.accept, A.delegate})


@dataclass(frozen=True)
class Decision:
    """What the caller sent with the action."""

    reason: str | None = None
    working_group_name: str | None = None  # accept: the new group
    working_group_id: int | None = None  # delegate: an existing group
    has_due_date: bool = False


def next_state(state: str, action: str, decision: Decision) -> ProposalState:
    """The state after ``action``; raises a Problem (and changes nothing) otherwise."""
    current, act = ProposalState(state), ProposalAction(action)
    target = TRANSITIONS.get((current, act))
    if target is None:
        raise IllegalTransition(
            f"cannot {act.value} a proposal that is {current.value}",
            state=current.value, allowed_actions=allowed_actions(current.value),
        )
    if act in NEEDS_REASON and not (decision.reason and decision.reason.strip()):
        raise ReasonRequired(f"{act.value} needs a reason")
    if act is A.accept and not (decision.working_group_name and decision.working_group_name.strip()):
        raise invalid_field("working_group_name", "accepting sets up a working group: name it", "missing")
    if act is A.delegate and decision.working_group_id is None:
        raise invalid_field("working_group_id", "delegating names an existing working group", "missing")
    if act in NEEDS_WORKING_GROUP and not decision.has_due_date:
        raise invalid_field("due_date", "the working group needs a due date", "missing")
    return target


def allowed_actions(state: str) -> list[str]:
    current = ProposalState(state)
    return [a.value for (s, a) in TRANSITIONS if s is current]

