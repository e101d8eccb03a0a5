"""Escalation of overdue handovers: safe to run from cron, a timer, or several machines at once.

A handover is escalated once, when it is still ``requested`` after its due date. The state
change, its event, the audit row and the notifications to the receiver's lead, the sender and the
chain's case management are written in one transaction per batch. Rows are claimed with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two runs never escalate the same handover twice,
and running again finds nothing to do.
"""

from __future__ import annotations

from collections.abc import Callable

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from casemgmt.database import unit_of_work
from casemgmt.handovers.lifecycle import HandoverState
from casemgmt.handovers.models import Handover, HandoverEvent, OrganisationContact
from casemgmt.handovers.policy import HandoverPolicy
from casemgmt.jurisdictions.models import Organisation
from casemgmt.notifications.service import Notification, enqueue
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.service import write_audit

handovers_t = Handover.__table__
events_t = HandoverEvent.__table__
contacts_t = OrganisationContact.__table__
orgs_t = Organisation.__table__

SYSTEM_USER = "system:escalation"
EVENT = "handover.escalated"


@dataclass
class EscalationReport:
    escalated: int = 0
    notifications: int = 0
    without_contact: int = 0  # organisations to notify that have no contact configured


def _contacts(session: Session, organisation_ids: set[int]) -> dict[tuple[int, str], list[tuple[str, str]]]:
    rows = session.execute(
        select(contacts_t.c.organisation_id, contacts_t.c.role, contacts_t.c.channel, contacts_t.c.address)
        .where(contacts_t.c.organisation_id.in_(organisation_ids))
        .order_by(contacts_t.c.id)
    ).all()
    out: dict[tuple[int, str], list[tuple[str, str]]] = {}
    for r in rows:
        out.setdefault((r.organisation_id, r.role), []).append((r.channel, r.address))
    return out


def _message(h, policy: HandoverPolicy, names: dict[int, str], base_url: str) -> tuple[str, dict]:
    """Subject and body of the escalation. No personal data: a mail leaves the system's
    protection, so it names the handover, the offices and the dates, and links to the handover."""
    kind = policy.kind_titles.get(h.kind, h.kind)
    subject = (f"Übergabe überfällig: {kind} von {names[h.sender_organisation_id]} an "
               f"{names[h.receiver_organisation_id]} (fällig {h.due_date:%d.%m.%Y})")
    body = {
        "event": EVENT, "handover_id": str(h.id), "kind": h.kind, "step": h.step_key,
        "sender": names[h.sender_organisation_id], "receiver": names[h.receiver_organisation_id],
        "requested_at": h.requested_at.isoformat(), "due_date": h.due_date.isoformat(),
        "working_days": h.working_days, "link": f"{base_url.rstrip('/')}/handovers/{h.id}",
    }
    return subject, body


def escalate_overdue(session: Session, policy: HandoverPolicy, now: datetime, base_url: str,
                     batch: int = 500, should_stop: Callable[[], bool] = lambda: False) -> EscalationReport:
    """Escalate every handover overdue at ``now``; one transaction per batch. ``should_stop`` is
    asked between batches (a stopping job ends after a committed batch, holding no row lock)."""
    report = EscalationReport()
    while not should_stop():
        with unit_of_work(session):
            due = (
                select(handovers_t)
                .where(handovers_t.c.state == HandoverState.requested.value, handovers_t.c.due_at <= now)
                .order_by(handovers_t.c.due_at, handovers_t.c.id)
                .limit(batch)
            )
            if session.get_bind().dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            rows = session.execute(due).all()
            if not rows:
                return report
            _escalate_batch(session, policy, rows, now, base_url, report)
        from casemgmt.observability import ESCALATIONS

        ESCALATIONS.inc(len(rows))
        if len(rows) < batch:
            return report
    return report


def _escalate_batch(session: Session, policy: HandoverPolicy, rows, now: datetime, base_url: str,
                    report: EscalationReport) -> None:
    session.execute(
        update(handovers_t)
        .where(handovers_t.c.id.in_([h.id for h in rows]))
        .values(state=HandoverState.escalated.value, escalated_at=now,
                version=handovers_t.c.version + 1, updated_at=now)
    )
    session.execute(insert(events_t), [
        {"handover_id": h.id, "action": "escalate", "from_state": h.state,
         "to_state": HandoverState.escalated.value, "reason": f"not acknowledged by {h.due_date}",
         "actor_user": SYSTEM_USER, "actor_organisation_id": None, "occurred_at": now}
        for h in rows
    ])
    involved = {o for h in rows for o in (h.sender_organisation_id, h.receiver_organisation_id,
                                          h.case_management_organisation_id)}
    names = dict(session.execute(select(orgs_t.c.id, orgs_t.c.name).where(orgs_t.c.id.in_(involved))).all())
    contacts = _contacts(session, involved)
    notifications = []
    for h in rows:
        subject, body = _message(h, policy, names, base_url)
        # The receiver's lead is told to act; the sender and the case management are told it is late.
        recipients = [(h.receiver_organisation_id, "lead"), (h.sender_organisation_id, "inbox")]
        if h.case_management_organisation_id != h.sender_organisation_id:
            recipients.append((h.case_management_organisation_id, "inbox"))
        for organisation_id, role in recipients:
            addresses = contacts.get((organisation_id, role), [])
            if not addresses:
                report.without_contact += 1
            for channel, address in addresses:
                notifications.append(Notification(EVENT, organisation_id, channel, address, subject,
                                                  body, handover_id=h.id))
    report.notifications += enqueue(session, notifications, now)
    write_audit(session, [
        AuditEntry(agent_user=SYSTEM_USER, agent_organisation_id=None, action="U",
                   subtype="handover.escalate", entity_type="handover", entity_id=str(h.id),
                   person_id=h.person_id, detail=f"due {h.due_date}")
        for h in rows
    ], now)
    report.escalated += len(rows)
