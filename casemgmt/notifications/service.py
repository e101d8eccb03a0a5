"""The outbox and its notifier.

Messages are written by the change they report, in its transaction, so a notification exists if
and only if the change committed. The notifier delivers them at least once:

1. claim a batch (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several notifiers can run) and
   push each claimed message's next attempt one lease into the future, then commit;
2. deliver outside any transaction (a slow mail server must not hold row locks);
3. record the outcome: ``delivered``, or the error and the next attempt with exponential backoff,
   or ``failed`` after the last attempt.

A notifier that dies between 1 and 3 leaves the message pending; it is picked up again when the
lease runs out. A message may therefore arrive twice, never zero times.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from casemgmt.database import unit_of_work
from casemgmt.jurisdictions.service import area_organisation_ids
from casemgmt.notifications.channels import Channel, DeliveryError
from casemgmt.notifications.models import OutboxMessage
from casemgmt.notifications.schemas import OutboxMessageOut
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.service import write_audit
from casemgmt.problems import NotFound, ValidationFailed

log = logging.getLogger(__name__)
outbox_t = OutboxMessage.__table__

LEASE = timedelta(minutes=5)
FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=6)


def backoff(attempts: int) -> timedelta:
    """Wait before attempt ``attempts + 1``: 1, 2, 4, ... minutes, at most six hours."""
    return min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), MAX_RETRY)


@dataclass(frozen=True)
class Notification:
    """A message to be queued."""

    event: str
    organisation_id: int
    channel: str
    address: str
    subject: str
    body: dict[str, Any]
    handover_id: uuid.UUID | None = None


def enqueue(session: Session, notifications: Iterable[Notification], now: datetime) -> int:
    """Queue messages in the caller's transaction. The same event to the same address is queued
    once, however often the caller runs (the escalation may run twice)."""
    rows = [
        {"event": n.event, "handover_id": n.handover_id, "organisation_id": n.organisation_id,
         "channel": n.channel, "address": n.address, "subject": n.subject[:300], "body": n.body,
         "state": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
         "updated_at": now}
        for n in notifications
    ]
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = dialect_insert(outbox_t).values(rows).on_conflict_do_nothing(
        index_elements=["event", "handover_id", "channel", "address"]).returning(outbox_t.c.id)
    return len(session.execute(stmt).all())


@dataclass
class DeliveryReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0

    def __add__(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(self.delivered + other.delivered, self.retried + other.retried,
                              self.failed + other.failed)


def _claim(factory: sessionmaker, now: datetime, batch: int) -> list[Any]:
    with factory() as session, session.begin():
        due = (
            select(outbox_t.c.id)
            .where(outbox_t.c.state == "pending", outbox_t.c.next_attempt_at <= now)
            .order_by(outbox_t.c.next_attempt_at, outbox_t.c.id)
            .limit(batch)
        )
        if session.get_bind().dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = list(session.scalars(due))
        if not ids:
            return []
        return session.execute(
            update(outbox_t).where(outbox_t.c.id.in_(ids))
            .values(attempts=outbox_t.c.attempts + 1, next_attempt_at=now + LEASE, updated_at=now)
            .returning(outbox_t)
        ).all()


def deliver_due(factory: sessionmaker, channels: Mapping[str, Channel], clock: Callable[[], datetime],
                max_attempts: int, batch: int = 50, should_stop: Callable[[], bool] = lambda: False
                ) -> DeliveryReport:
    """Deliver every message that is due now, batch by batch; returns what happened.
    ``should_stop`` is asked between batches: a claimed batch is always finished, so a stopping
    notifier leaves no message waiting for its lease to run out (and no row lock: the claim's
    lock ends with the claim's own short transaction)."""
    report = DeliveryReport()
    while not should_stop():
        now = clock()
        claimed = _claim(factory, now, batch)
        if not claimed:
            return report
        for message in claimed:
            report += _deliver_one(factory, channels, message, clock, max_attempts)
        if len(claimed) < batch:
            return report
    return report


def _deliver_one(factory: sessionmaker, channels: Mapping[str, Channel], message: Any,
                 clock: Callable[[], datetime], max_attempts: int) -> DeliveryReport:
    error: str | None = None
    channel = channels.get(message.channel)
    if channel is None:
        error = f"no {message.channel} channel is configured"
    else:
        try:
            channel.send(message.address, message.subject, message.body)
        except DeliveryError as exc:
            error = str(exc)[:2000]
        except Exception:  # any failure of any channel is retried, never lost
            # Shown to administrators: no exception text, which may describe the target's network.
            log.exception("notification %s: delivery by %s failed", message.id, message.channel)
            error = f"{message.channel} delivery failed: internal error (see the notifier's log)"
    now = clock()
    if error is None:
        values: dict[str, Any] = {"state": "delivered", "delivered_at": now, "last_error": None}
        outcome = DeliveryReport(delivered=1)
    elif message.attempts >= max_attempts:
        values = {"state": "failed", "last_error": error}
        outcome = DeliveryReport(failed=1)
    else:
        values = {"last_error": error, "next_attempt_at": now + backoff(message.attempts)}
        outcome = DeliveryReport(retried=1)
    with factory() as session, session.begin():
        session.execute(update(outbox_t).where(outbox_t.c.id == message.id).values(updated_at=now, **values))
    from casemgmt.observability import NOTIFICATIONS

    NOTIFICATIONS.labels(channel=message.channel,
                         outcome="delivered" if outcome.delivered else "failed" if outcome.failed else "retry").inc()
    return outcome


def _in_area(stmt, area: str | None):
    """Messages to organisations in the administrator's area (None: the whole installation)."""
    if area is None:
        return stmt
    return stmt.where(outbox_t.c.organisation_id.in_(area_organisation_ids(area)))


def list_messages(session: Session, state: str | None, limit: int, area: str | None = None) -> list[OutboxMessageOut]:
    stmt = _in_area(select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit), area)
    if state is not None:
        stmt = stmt.where(OutboxMessage.state == state)
    messages = [OutboxMessageOut.model_validate(m) for m in session.scalars(stmt)]
    session.rollback()
    return messages


def get_message(session: Session, message_id: int, area: str | None = None) -> OutboxMessageOut:
    message = session.scalar(_in_area(select(OutboxMessage).where(OutboxMessage.id == message_id), area))
    if message is None:
        session.rollback()
        raise NotFound(f"no notification {message_id}", resource="notification", id=str(message_id))
    out = OutboxMessageOut.model_validate(message)
    session.rollback()
    return out


def outbox_counts(session: Session, area: str | None = None) -> dict[str, int]:
    counts = dict(session.execute(
        _in_area(select(outbox_t.c.state, func.count()), area).group_by(outbox_t.c.state)).all())
    session.rollback()
    return {state: counts.get(state, 0) for state in ("pending", "delivered", "failed")}


def requeue(session: Session, message_id: int | None, now: datetime, actor=None, area: str | None = None) -> int:
    """Put failed messages back in the queue (one, or all with ``None``), attempts reset; an
    operator's request through the API is audited. ``area`` limits it to messages to the
    organisations of the administrator's area."""
    if message_id is not None:
        get_message(session, message_id, area)  # 404 outside the area, before anything else
    stmt = update(outbox_t).where(outbox_t.c.state == "failed")
    if message_id is not None:
        stmt = stmt.where(outbox_t.c.id == message_id)
    if area is not None:
        stmt = stmt.where(outbox_t.c.organisation_id.in_(area_organisation_ids(area)))
    with unit_of_work(session):
        count = session.execute(
            stmt.values(state="pending", attempts=0, next_attempt_at=now, updated_at=now)
        ).rowcount
        if actor is not None and count:
            write_audit(session, [AuditEntry(
                agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="U",
                subtype="notification.requeue", entity_type="notification",
                entity_id=str(message_id) if message_id is not None else "all")], now)
    if message_id is not None and count == 0:
        exists = session.scalar(select(outbox_t.c.state).where(outbox_t.c.id == message_id))
        session.rollback()
        if exists is None:
            raise NotFound(f"no notification {message_id}", resource="notification", id=str(message_id))
        raise ValidationFailed(f"notification {message_id} is {exists}, not failed",
                               errors=[{"field": "id", "message": f"state is {exists}", "type": "state"}])
    return count
