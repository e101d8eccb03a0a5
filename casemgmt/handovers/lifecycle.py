"""The handover lifecycle. Pure: no I/O, no clock.

    requested --acknowledge--> acknowledged
    requested --reject (reason)--> rejected
    requested --withdraw--> withdrawn            (by the sender)
    requested --escalate--> escalated            (by the system, once overdue)
    escalated --acknowledge | reject | withdraw--> as above

Only the receiving organisation acknowledges or rejects; only the sending organisation
withdraws. An escalated handover can still be acknowledged: escalation makes the delay visible,
it does not end the handover.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime

from casemgmt.handovers.calendar import WorkingDayCalendar
from casemgmt.problems import HandoverNotPending, ReasonRequired, WrongOrganisation


class HandoverKind(str, enum.Enum):
    """What passes to the receiver."""

    step = "step"  # responsibility for one step of the chain
    rechtskreiswechsel = "rechtskreiswechsel"  # the benefit regime changes (AsylbLG -> SGB II)
    relocation = "relocation"  # the chain's lead moves to another jurisdiction


class HandoverState(str, enum.Enum):
    requested = "requested"
    acknowledged = "acknowledged"
    rejected = "rejected"
    withdrawn = "withdrawn"
    escalated = "escalated"


class HandoverAction(str, enum.Enum):
    acknowledge = "acknowledge"
    reject = "reject"
    withdraw = "withdraw"


PENDING = frozenset({HandoverState.requested, HandoverState.escalated})
PENDING_VALUES = tuple(sorted(s.value for s in PENDING))
ENDED = frozenset(HandoverState) - PENDING

_RESULT = {
    HandoverAction.acknowledge: HandoverState.acknowledged,
    HandoverAction.reject: HandoverState.rejected,
    HandoverAction.withdraw: HandoverState.withdrawn,
}


@dataclass(frozen=True, slots=True)
class Parties:
    """Who sent the handover and who is to receive it."""

    sender_organisation_id: int
    receiver_organisation_id: int


def respond(state: str, action: str, organisation_id: int, parties: Parties,
            reason: str | None) -> HandoverState:
    """The state after ``action`` by a user of ``organisation_id``; raises a Problem otherwise."""
    act = HandoverAction(action)
    if act is HandoverAction.withdraw:
        if organisation_id != parties.sender_organisation_id:
            raise WrongOrganisation("only the sending organisation may withdraw a handover",
                                    owner="sender")
    elif organisation_id != parties.receiver_organisation_id:
        raise WrongOrganisation(f"only the receiving organisation may {act.value} this handover",
                                owner="receiver")
    if HandoverState(state) not in PENDING:
        raise HandoverNotPending(f"the handover is already {state}", state=state)
    if act is HandoverAction.reject and not (reason and reason.strip()):
        raise ReasonRequired("rejecting a handover needs a reason")
    return _RESULT[act]


def allowed_actions(state: str, organisation_id: int, parties: Parties) -> list[str]:
    """What a user of ``organisation_id`` may do to the handover now."""
    if HandoverState(state) not in PENDING:
        return []
    actions = []
    if organisation_id == parties.receiver_organisation_id:
        actions += [HandoverAction.acknowledge.value, HandoverAction.reject.value]
    if organisation_id == parties.sender_organisation_id:
        actions.append(HandoverAction.withdraw.value)
    return actions


def is_overdue(state: str, due_at: datetime, now: datetime) -> bool:
    """Still waiting for the receiver after the end of the due date."""
    return HandoverState(state) in PENDING and now >= due_at


def should_escalate(state: str, due_at: datetime, now: datetime) -> bool:
    """Overdue and not escalated yet (escalation happens once)."""
    return state == HandoverState.requested.value and now >= due_at


@dataclass(frozen=True, slots=True)
class WaitingTime:
    """From request to acknowledgement: calendar days between the local dates, and the working
    days after the request day up to and including the acknowledgement day."""

    calendar_days: int
    working_days: int


def waiting_time(calendar: WorkingDayCalendar, requested_at: datetime, acknowledged_at: datetime) -> WaitingTime:
    start: date = calendar.local_date(requested_at)
    end: date = calendar.local_date(acknowledged_at)
    return WaitingTime(max((end - start).days, 0), calendar.working_days_between(start, end))
