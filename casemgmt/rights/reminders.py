"""Reminders of overdue data subject requests, sent by the escalation job to the data protection
officer's contacts (``dpo`` contacts of the organisation that registered the request). Once per
due date: a request extended and overdue again is reminded again. No personal data in the
message: the kind of request, the dates and a link."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemgmt.database import unit_of_work
from casemgmt.handovers.models import OrganisationContact
from casemgmt.notifications.service import Notification, enqueue
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.service import write_audit
from casemgmt.rights import periods
from casemgmt.rights.lifecycle import OPEN
from casemgmt.rights.models import DataSubjectRequest

EVENT = "data_subject_request.overdue"
SYSTEM_USER = "system:escalation"
KIND_TITLES = {"access": "Auskunft", "rectification": "Berichtigung", "erasure": "Löschung",
               "restriction": "Einschränkung", "portability": "Datenübertragbarkeit", "objection": "Widerspruch"}


@dataclass
class ReminderReport:
    reminded: int = 0
    notifications: int = 0
    without_contact: int = 0


def remind_overdue(session: Session, now: datetime, base_url: str, batch: int = 200) -> ReminderReport:
    report = ReminderReport()
    today = periods.local_date(now)
    with unit_of_work(session):
        stmt = (select(DataSubjectRequest)
                .where(DataSubjectRequest.state.in_([s.value for s in OPEN]), DataSubjectRequest.due_date < today,
                       (DataSubjectRequest.reminded_for_due.is_(None)) | (DataSubjectRequest.reminded_for_due != DataSubjectRequest.due_date))
                .order_by(DataSubjectRequest.due_date).limit(batch))
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        rows = session.scalars(stmt).all()
        if not rows:
            return report
        orgs = {r.registered_by_organisation_id for r in rows}
        contacts: dict[int, list[tuple[str, str]]] = {}
        for c in session.scalars(select(OrganisationContact).where(OrganisationContact.organisation_id.in_(orgs),
                                                                   OrganisationContact.role == "dpo")):
            contacts.setdefault(c.organisation_id, []).append((c.channel, c.address))
        notes = []
        for r in rows:
            subject = (f"Betroffenenanfrage überfällig: {KIND_TITLES.get(r.kind, r.kind)}, eingegangen "
                       f"{periods.local_date(r.received_at):%d.%m.%Y}, fällig {r.due_date:%d.%m.%Y}")
            body = {"event": EVENT, "request_id": str(r.id), "kind": r.kind, "state": r.state,
                    "received_on": periods.local_date(r.received_at).isoformat(), "due_date": r.due_date.isoformat(),
                    "link": f"{base_url.rstrip('/')}/data-subject-requests/{r.id}"}
            addresses = contacts.get(r.registered_by_organisation_id, [])
            if not addresses:
                report.without_contact += 1
            notes += [Notification(EVENT, r.registered_by_organisation_id, ch, addr, subject, body) for ch, addr in addresses]
            r.reminded_for_due = r.due_date
        report.notifications = enqueue(session, notes, now)
        report.reminded = len(rows)
        write_audit(session, [AuditEntry(agent_user=SYSTEM_USER, agent_organisation_id=None, action="E",
                                         subtype="request.reminder", entity_type="data_subject_request",
                                         entity_id=str(r.id), person_id=r.person_id, detail=f"due {r.due_date}")
                              for r in rows], now)
    return report
