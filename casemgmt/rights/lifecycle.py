"""The life of a data subject request, pure: received -> in progress -> extended (once) ->
answered or refused (with a reason). Answered and refused requests do not change."""

from __future__ import annotations

import enum

from casemgmt.problems import RequestState


class RequestKind(str, enum.Enum):
    """What the person asks for (GDPR article)."""

    access = "access"  # Art. 15
    rectification = "rectification"  # Art. 16
    erasure = "erasure"  # Art. 17
    restriction = "restriction"  # Art. 18
    portability = "portability"  # Art. 20
    objection = "objection"  # Art. 21


class RequestStatus(str, enum.Enum):
    received = "received"
    in_progress = "in_progress"
    extended = "extended"
    answered = "answered"
    refused = "refused"


class RequestAction(str, enum.Enum):
    start = "start"
    extend = "extend"  # with a reason; once
    answer = "answer"  # with the outcome
    refuse = "refuse"  # with the reason


OPEN = frozenset({RequestStatus.received, RequestStatus.in_progress, RequestStatus.extended})
FINAL = frozenset({RequestStatus.answered, RequestStatus.refused})

_MOVES: dict[RequestAction, tuple[frozenset[RequestStatus], RequestStatus]] = {
    RequestAction.start: (frozenset({RequestStatus.received}), RequestStatus.in_progress),
    RequestAction.extend: (frozenset({RequestStatus.received, RequestStatus.in_progress}), RequestStatus.extended),
    RequestAction.answer: (OPEN, RequestStatus.answered),
    RequestAction.refuse: (OPEN, RequestStatus.refused),
}


def allowed_actions(state: RequestStatus) -> list[RequestAction]:
    return [a for a, (sources, _) in _MOVES.items() if state in sources]


def next_state(state: RequestStatus, action: RequestAction) -> RequestStatus:
    """The state after ``action``; 409 request-state naming what is possible instead."""
    sources, target = _MOVES[action]
    if state not in sources:
        raise RequestState(f"a request that is {state.value} cannot be {action.value}ed"
                           if action is not RequestAction.start else
                           f"a request that is {state.value} cannot be started",
                           state=state.value, allowed_actions=[a.value for a in allowed_actions(state)])
    return target
