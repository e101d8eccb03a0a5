"""Overdue handovers are escalated once, after the last working day, and the offices concerned are
told by mail and webhook without any personal data; the notifier delivers at least once, retries
with backoff, gives up visibly after the last attempt and can be told to try again; the
``escalate`` and ``notify`` commands do the same from cron; contact points are validated.
"""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import conftest
import pytest
from aiosmtpd.controller import Controller
from http_helpers import ok, problem, ts
from sqlalchemy import func, select
from test_api import acted, new_person, started
from test_handovers_api import ABH, KI, SOZ, handover, respond, walk_to

from casemgmt.clock import utcnow
from casemgmt.handovers.escalation import escalate_overdue
from casemgmt.handovers.models import Handover, HandoverEvent, OrganisationContact
from casemgmt.jurisdictions.models import Organisation
from casemgmt.notifications.channels import EmailChannel, WebhookChannel
from casemgmt.notifications.models import OutboxMessage
from casemgmt.notifications.service import LEASE, Notification, _claim, deliver_due, enqueue
from casemgmt.privacy.models import AuditEvent

BASE_URL = "https://fallmanagement.ennetal.example"
ADMIN = ("ennetal_ki", "admin")
# The person whose handovers are escalated: none of this may leave the system in a notification.
NAME = {"family_name": "Abdelrahman-Quast", "given_names": "Leyla Noor", "birth_date": "1987-11-23"}
PERSONAL = ["Abdelrahman", "Quast", "Leyla", "Noor", "1987-11-23", "23.11.1987", "1987"]


# --- helpers ---------------------------------------------------------------------------------


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_handover(client, auth, world, **person: Any) -> dict[str, Any]:
    """The KI hands the residence permit step of a new Wittmar chain to the ABH (5 working days)."""
    ki = auth(*KI)
    p = new_person(client, ki, world.jurisdictions["wittmar"], **person)
    chain = started(client, ki, p)
    return ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)


def rechtskreiswechsel(client, auth, world, **person: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Sozialamt Wittmar hands the benefits to the Jobcenter (10 working days); the chain's
    case management is the KI. Returns the handover and the chain."""
    ki = auth(*KI)
    p = new_person(client, ki, world.jurisdictions["wittmar"], **person)
    chain = started(client, ki, p)
    walk_to(client, auth, chain["id"], [("wittmar_sozialamt", "arrival_assignment")])
    soz = auth(*SOZ)
    acted(client, soz, chain["id"], "asylblg_subsistence", "start")
    h = ok(handover(client, soz, chain["id"], kind="rechtskreiswechsel", step_key="asylblg_subsistence",
                    to_step_key="sgb2_application", benefit_regime="sgb_ii"), 201)
    return h, chain


def add_contacts(session_factory, world, *contacts: tuple[str, str, str, str]) -> None:
    with session_factory() as s, s.begin():
        for org, role, channel, address in contacts:
            s.add(OrganisationContact(organisation_id=world.organisations[org], role=role,
                                      channel=channel, address=address))


def escalate(session_factory, policies, now: datetime, **kw):
    with session_factory() as s:
        return escalate_overdue(s, policies.handovers, now, BASE_URL, **kw)


def row(session_factory, handover_id: str) -> Handover:
    with session_factory() as s:
        return s.get(Handover, uuid.UUID(handover_id))


def event_actions(session_factory, handover_id: str) -> list[str]:
    with session_factory() as s:
        return list(s.scalars(select(HandoverEvent.action).where(
            HandoverEvent.handover_id == uuid.UUID(handover_id)).order_by(HandoverEvent.id)))


def escalation_audits(session_factory, handover_id: str | None = None) -> int:
    with session_factory() as s:
        q = select(func.count()).select_from(AuditEvent).where(AuditEvent.subtype == "handover.escalate")
        if handover_id is not None:
            q = q.where(AuditEvent.entity_id == handover_id)
        return s.scalar(q)


def outbox(session_factory, handover_id: str | None = None) -> list[OutboxMessage]:
    with session_factory() as s:
        q = select(OutboxMessage).order_by(OutboxMessage.id)
        if handover_id is not None:
            q = q.where(OutboxMessage.handover_id == uuid.UUID(handover_id))
        return list(s.scalars(q))


def message(session_factory, message_id: int) -> OutboxMessage:
    with session_factory() as s:
        return s.get(OutboxMessage, message_id)


def org_name(session_factory, world, key: str) -> str:
    with session_factory() as s:
        return s.get(Organisation, world.organisations[key]).name


def queue(session_factory, world, channel: str, address: str, now: datetime,
          subject: str = "Übergabe überfällig: Test", body: dict[str, Any] | None = None) -> int:
    """Put one message in the outbox directly, as the escalation would."""
    with session_factory() as s, s.begin():
        enqueue(s, [Notification("handover.escalated", world.organisations["ennetal_abh"], channel,
                                 address, subject, body or {"handover_id": "x", "kind": "step"})], now)
        return s.scalar(select(func.max(OutboxMessage.id)))


# --- local servers ---------------------------------------------------------------------------


class _Collect:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


class Mailbox:
    """A real SMTP server on localhost (aiosmtpd), started and stopped by the test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.handler = _Collect()
        self.controller: Controller | None = None

    def start(self) -> Mailbox:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=30)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(e.content, policy=email.policy.default)
                for e in self.handler.envelopes]


@pytest.fixture
def mailbox():
    boxes: list[Mailbox] = []

    def make(port: int | None = None, start: bool = True) -> Mailbox:
        box = Mailbox(port or free_port())
        boxes.append(box)
        return box.start() if start else box

    yield make
    for box in boxes:
        box.stop()


class Hook:
    """A webhook receiver on localhost: records each request, answers ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.location: str | None = None
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's hook name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                hook.paths.append(self.path)
                self.send_response(hook.status)
                if hook.location:
                    self.send_header("Location", hook.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/casemgmt/escalations"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


SECRET = "s3cr3t"


def channels(box: Mailbox | None = None, secret: str | None = SECRET, port: int | None = None):
    # The local webhook receiver listens on 127.0.0.1: reachable only with private networks allowed.
    return {
        "email": EmailChannel("127.0.0.1", port or (box.port if box else free_port()),
                              "casemgmt@ennetal.example", timeout=30),
        "webhook": WebhookChannel(secret=secret, timeout=30, allow_private_networks=True),
    }


@pytest.fixture
def settings(settings):
    """Webhook contacts can only be saved while a signing secret is configured."""
    return settings.model_copy(update={"webhook_secret": SECRET})


# --- escalation ------------------------------------------------------------------------------


def test_escalated_once_after_the_last_working_day(client, auth, world, policies, session_factory, clock):
    add_contacts(session_factory, world,
                 ("ennetal_abh", "lead", "email", "leitung@abh.ennetal.example"),
                 ("ennetal_abh", "inbox", "email", "team@abh.ennetal.example"),
                 ("ennetal_ki", "inbox", "email", "team@ki.ennetal.example"),
                 ("ennetal_ki", "lead", "email", "leitung@ki.ennetal.example"))
    # Requested Monday 2 March 2026, 10:00 in Berlin; five working days: due Monday 9 March,
    # overdue from midnight in Berlin (23:00 UTC).
    first = step_handover(client, auth, world)
    assert first["due_date"] == "2026-03-09"
    assert ts(first["due_at"]) == at(2026, 3, 9, 23, 0)
    clock.advance(days=2)
    later = step_handover(client, auth, world)
    assert later["due_date"] == "2026-03-11"

    report = escalate(session_factory, policies, at(2026, 3, 9, 22, 59, 59))
    assert (report.escalated, report.notifications) == (0, 0)
    assert row(session_factory, first["id"]).state == "requested"
    assert outbox(session_factory) == []

    now = at(2026, 3, 9, 23, 0)
    report = escalate(session_factory, policies, now)
    assert report.escalated == 1
    assert report.without_contact == 0
    h = row(session_factory, first["id"])
    assert h.state == "escalated"
    assert h.escalated_at == now
    assert h.version == 2
    assert h.responded_at is None
    assert event_actions(session_factory, first["id"]) == ["request", "escalate"]
    assert escalation_audits(session_factory, first["id"]) == 1
    # The ABH's lead is told to act, the KI (sender and case management) that it is late.
    assert {(m.organisation_id, m.address) for m in outbox(session_factory)} == {
        (world.organisations["ennetal_abh"], "leitung@abh.ennetal.example"),
        (world.organisations["ennetal_ki"], "team@ki.ennetal.example"),
    }
    # The handover not yet due is untouched.
    untouched = row(session_factory, later["id"])
    assert untouched.state == "requested" and untouched.escalated_at is None and untouched.version == 1
    assert event_actions(session_factory, later["id"]) == ["request"]

    # Running again (the same minute, or an hour later) changes nothing and queues nothing.
    for again in (now, now + timedelta(hours=1)):
        report = escalate(session_factory, policies, again)
        assert (report.escalated, report.notifications) == (0, 0)
    h2 = row(session_factory, first["id"])
    assert (h2.state, h2.escalated_at, h2.version) == ("escalated", now, 2)
    assert event_actions(session_factory, first["id"]) == ["request", "escalate"]
    assert escalation_audits(session_factory) == 1
    assert len(outbox(session_factory)) == 2

    # Seen through the API: escalated, overdue, still for the ABH to decide.
    clock.now = now + timedelta(hours=1)
    seen = ok(client.get(f"/handovers/{first['id']}", headers=auth(*ABH)))
    assert seen["state"] == "escalated" and seen["overdue"] is True
    assert ts(seen["escalated_at"]) == now
    assert set(seen["allowed_actions"]) == {"acknowledge", "reject"}
    assert [e["action"] for e in seen["events"]] == ["request", "escalate"]
    assert seen["events"][1]["actor_user"] == "system:escalation"


def test_holidays_weekends_and_summer_time_count_in_the_deadline(client, auth, world, policies,
                                                                  session_factory, clock):
    # Requested Saturday 7 March 00:30 in Berlin (Friday 23:30 UTC): counting starts on Saturday,
    # so five working days end on Friday 13 March.
    clock.now = at(2026, 3, 6, 23, 30)
    weekend = step_handover(client, auth, world)
    assert weekend["due_date"] == "2026-03-13"
    # Requested Maundy Thursday 2 April: Good Friday and Easter Monday are holidays in NRW, so five
    # working days end on Monday 13 April, at midnight summer time (22:00 UTC).
    clock.now = at(2026, 4, 2, 9, 0)
    easter = step_handover(client, auth, world)
    assert easter["due_date"] == "2026-04-13"
    assert ts(easter["due_at"]) == at(2026, 4, 13, 22, 0)

    assert escalate(session_factory, policies, at(2026, 3, 13, 22, 59)).escalated == 0
    assert escalate(session_factory, policies, at(2026, 3, 13, 23, 0)).escalated == 1
    assert row(session_factory, weekend["id"]).state == "escalated"
    # Counting holidays as working days would make it due on Thursday 9 April.
    assert escalate(session_factory, policies, at(2026, 4, 10, 12, 0)).escalated == 0
    assert escalate(session_factory, policies, at(2026, 4, 13, 21, 59)).escalated == 0
    assert row(session_factory, easter["id"]).state == "requested"
    assert escalate(session_factory, policies, at(2026, 4, 13, 22, 0)).escalated == 1
    assert row(session_factory, easter["id"]).escalated_at == at(2026, 4, 13, 22, 0)


def test_escalated_handover_in_the_inbox_and_still_acknowledged(client, auth, world, policies,
                                                                session_factory, clock):
    ids = []
    for _ in range(3):  # requested Monday, Tuesday, Wednesday
        ids.append(step_handover(client, auth, world)["id"])
        clock.advance(days=1)
    clock.now = at(2026, 3, 10, 12, 0)  # Tuesday noon: only Monday's handover is overdue
    assert escalate(session_factory, policies, clock()).escalated == 1

    abh = auth(*ABH)
    inbox = ok(client.get("/handovers/incoming", headers=abh))
    assert [i["id"] for i in inbox["items"]] == ids
    assert [(i["state"], i["overdue"]) for i in inbox["items"]] == [
        ("escalated", True), ("requested", False), ("requested", False)]
    assert ts(inbox["items"][0]["escalated_at"]) == clock()
    counts = inbox["counts"]
    assert (counts["requested"], counts["escalated"], counts["overdue"]) == (2, 1, 1)
    assert [i["id"] for i in ok(client.get("/handovers/incoming?state=escalated", headers=abh))["items"]] == ids[:1]
    assert [i["id"] for i in ok(client.get("/handovers/incoming?overdue=true", headers=abh))["items"]] == ids[:1]
    outgoing = ok(client.get("/handovers/outgoing?state=escalated", headers=auth(*KI)))
    assert [i["id"] for i in outgoing["items"]] == ids[:1]
    assert outgoing["counts"]["escalated"] == 1

    # Escalation makes the delay visible; the ABH can still take the step over.
    done = ok(respond(client, abh, ids[0], "acknowledge"))
    assert done["state"] == "acknowledged" and done["version"] == 3
    assert [e["action"] for e in done["events"]] == ["request", "escalate", "acknowledge"]
    # Requested Monday 2 March, acknowledged Tuesday 10 March: six working days waited.
    assert done["waiting_working_days"] == 6 and done["waiting_calendar_days"] == 8
    counts = ok(client.get("/handovers/incoming", headers=abh))["counts"]
    assert (counts["requested"], counts["escalated"], counts["overdue"], counts["acknowledged"]) == (2, 0, 0, 1)

    # Decided handovers are never escalated; the next one is, once its day has ended.
    assert escalate(session_factory, policies, clock()).escalated == 0
    assert escalate(session_factory, policies, at(2026, 3, 10, 23, 0)).escalated == 1
    assert row(session_factory, ids[0]).state == "acknowledged"
    assert row(session_factory, ids[1]).state == "escalated"
    # The sender may still withdraw an escalated handover.
    clock.now = at(2026, 3, 11, 8, 0)
    assert ok(respond(client, auth(*KI), ids[1], "withdraw"))["state"] == "withdrawn"


def test_notifications_go_to_leads_and_inboxes_without_personal_data(client, auth, world, policies,
                                                                     session_factory, clock):
    add_contacts(session_factory, world,
                 # told to act: the receivers' leads
                 ("ennetal_jobcenter", "lead", "email", "leitung@jobcenter.example"),
                 ("ennetal_jobcenter", "lead", "webhook", "https://hooks.jobcenter.example/escalations"),
                 ("ennetal_abh", "lead", "email", "leitung@abh.ennetal.example"),
                 # told it is late: the senders' and the case management's team inboxes
                 ("wittmar_sozialamt", "inbox", "email", "sozialamt@wittmar.example"),
                 ("wittmar_sozialamt", "inbox", "email", "kette@ennetal.example"),
                 ("ennetal_ki", "inbox", "email", "team@ki.ennetal.example"),
                 ("ennetal_ki", "inbox", "email", "kette@ennetal.example"),
                 # not concerned
                 ("ennetal_jobcenter", "inbox", "email", "team@jobcenter.example"),
                 ("ennetal_abh", "inbox", "email", "team@abh.ennetal.example"),
                 ("wittmar_sozialamt", "lead", "email", "amtsleitung@wittmar.example"),
                 ("ennetal_ki", "lead", "email", "leitung@ki.ennetal.example"))
    rkw, chain = rechtskreiswechsel(client, auth, world, **NAME)
    assert rkw["due_date"] == "2026-03-16"  # ten working days
    step = ok(handover(client, auth(*KI), chain["id"], kind="step", step_key="residence_permit"), 201)

    report = escalate(session_factory, policies, at(2026, 3, 17, 0, 0))
    assert report.escalated == 2
    assert report.without_contact == 0
    orgs = world.organisations
    rkw_rows = outbox(session_factory, rkw["id"])
    step_rows = outbox(session_factory, step["id"])
    assert len(rkw_rows) + len(step_rows) == 8
    # Each address once per escalation, even when two offices share it.
    assert sorted((m.channel, m.address) for m in rkw_rows) == sorted([
        ("email", "leitung@jobcenter.example"),
        ("webhook", "https://hooks.jobcenter.example/escalations"),
        ("email", "sozialamt@wittmar.example"),
        ("email", "team@ki.ennetal.example"),
        ("email", "kette@ennetal.example"),
    ])
    assert {(m.organisation_id, m.address) for m in rkw_rows if m.address != "kette@ennetal.example"} == {
        (orgs["ennetal_jobcenter"], "leitung@jobcenter.example"),
        (orgs["ennetal_jobcenter"], "https://hooks.jobcenter.example/escalations"),
        (orgs["wittmar_sozialamt"], "sozialamt@wittmar.example"),
        (orgs["ennetal_ki"], "team@ki.ennetal.example"),
    }
    assert sorted((m.organisation_id, m.address) for m in step_rows) == sorted([
        (orgs["ennetal_abh"], "leitung@abh.ennetal.example"),
        (orgs["ennetal_ki"], "team@ki.ennetal.example"),
        (orgs["ennetal_ki"], "kette@ennetal.example"),
    ])
    assert all(m.state == "pending" and m.attempts == 0 and m.event == "handover.escalated"
               for m in rkw_rows + step_rows)

    soz_name = org_name(session_factory, world, "wittmar_sozialamt")
    jc_name = org_name(session_factory, world, "ennetal_jobcenter")
    subject = rkw_rows[0].subject
    assert "überfällig" in subject and "Rechtskreiswechsel" in subject
    assert soz_name in subject and jc_name in subject and "16.03.2026" in subject
    assert {m.subject for m in rkw_rows} == {subject}
    body = rkw_rows[0].body
    assert body["handover_id"] == rkw["id"]
    assert body["link"] == f"{BASE_URL}/handovers/{rkw['id']}"
    assert body["due_date"] == "2026-03-16" and body["kind"] == "rechtskreiswechsel"

    # No personal data leaves the system: no name, no birth date, not even the pseudonym.
    person_id = rkw["person_id"]
    for m in rkw_rows + step_rows:
        text = m.subject + "\n" + json.dumps(m.body, ensure_ascii=False)
        for value in [*PERSONAL, person_id]:
            assert value not in text, (value, text)

    # Escalating again queues nothing new for anyone.
    assert escalate(session_factory, policies, at(2026, 3, 18, 0, 0)).notifications == 0
    assert len(outbox(session_factory)) == 8


def test_escalation_reports_how_many_notifications_it_queued(client, auth, world, policies,
                                                           session_factory, clock):
    add_contacts(session_factory, world,
                 ("ennetal_abh", "lead", "email", "leitung@abh.ennetal.example"),
                 ("ennetal_ki", "inbox", "email", "team@ki.ennetal.example"))
    step_handover(client, auth, world)
    report = escalate(session_factory, policies, at(2026, 3, 10, 0, 0))
    assert report.escalated == 1
    assert len(outbox(session_factory)) == 2
    assert report.notifications == 2


def test_recipients_without_contact_are_counted(client, auth, world, policies, session_factory, clock):
    h = step_handover(client, auth, world)
    report = escalate(session_factory, policies, at(2026, 3, 10, 0, 0))
    assert report.escalated == 1
    assert report.notifications == 0
    assert report.without_contact == 2  # the ABH's lead and the KI's inbox
    assert row(session_factory, h["id"]).state == "escalated"


def test_two_parallel_escalation_runs_escalate_each_handover_once(client, auth, world, policies,
                                                                  session_factory, clock):
    add_contacts(session_factory, world,
                 ("ennetal_abh", "lead", "email", "leitung@abh.ennetal.example"),
                 ("ennetal_ki", "inbox", "webhook", "https://ki.ennetal.example/hook"))
    ids = [step_handover(client, auth, world)["id"] for _ in range(6)]
    now = at(2026, 3, 10, 0, 0)
    barrier = threading.Barrier(2)
    reports = []

    def run():
        with session_factory() as s:
            s.connection()
            s.rollback()
            barrier.wait()
            # One handover per batch, so the two runs interleave row by row.
            reports.append(escalate_overdue(s, policies.handovers, now, BASE_URL, batch=1))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(reports) == 2
    assert sum(r.escalated for r in reports) == 6
    assert len(outbox(session_factory)) == 12
    for handover_id in ids:
        assert row(session_factory, handover_id).state == "escalated"
        assert row(session_factory, handover_id).version == 2
        assert event_actions(session_factory, handover_id) == ["request", "escalate"]
        assert escalation_audits(session_factory, handover_id) == 1
        assert len(outbox(session_factory, handover_id)) == 2
    assert escalation_audits(session_factory) == 6


# --- the notifier ----------------------------------------------------------------------------


def test_escalation_mail_and_signed_webhook_are_delivered(client, auth, world, policies, session_factory,
                                                          clock, mailbox, hook):
    add_contacts(session_factory, world,
                 ("ennetal_abh", "lead", "email", "leitung@abh.ennetal.example"),
                 ("ennetal_abh", "lead", "webhook", hook.url))
    h = step_handover(client, auth, world, **NAME)
    clock.now = at(2026, 3, 10, 6, 0)
    assert escalate(session_factory, policies, clock()).escalated == 1
    queued = {m.channel: m for m in outbox(session_factory, h["id"])}

    box = mailbox()
    report = deliver_due(session_factory, channels(box), clock, max_attempts=5)
    assert (report.delivered, report.retried, report.failed) == (2, 0, 0)

    [mail] = box.messages
    assert mail["Subject"] == queued["email"].subject
    assert mail["To"] == "leitung@abh.ennetal.example"
    assert box.handler.envelopes[0].rcpt_tos == ["leitung@abh.ennetal.example"]
    text = mail.get_content()
    assert f"{BASE_URL}/handovers/{h['id']}" in text
    for value in PERSONAL:
        assert value not in text and value not in mail["Subject"]

    [(headers, raw)] = hook.requests
    assert headers["content-type"] == "application/json"
    assert json.loads(raw) == {"subject": queued["webhook"].subject, **queued["webhook"].body}
    timestamp = headers["x-casemgmt-timestamp"]
    assert abs(int(timestamp) - time.time()) < 60
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert headers["x-casemgmt-signature"] == f"sha256={expected}"

    for m in outbox(session_factory, h["id"]):
        assert m.state == "delivered" and m.delivered_at == clock() and m.attempts == 1
        assert m.last_error is None
    # Delivered is delivered: nothing is sent twice.
    clock.advance(hours=1)
    assert deliver_due(session_factory, channels(box), clock, 5).delivered == 0
    assert len(box.handler.envelopes) == 1 and len(hook.requests) == 1


def test_nothing_is_sent_unsigned_without_secret(world, session_factory, clock, hook):
    message_id = queue(session_factory, world, "webhook", hook.url, clock())
    report = deliver_due(session_factory, channels(secret=None), clock, 5)
    assert (report.delivered, report.retried) == (0, 1)
    assert hook.requests == []
    assert "not signed" in message(session_factory, message_id).last_error


def test_smtp_down_is_retried_and_delivered_when_back(world, session_factory, clock, mailbox):
    port = free_port()  # nothing listens here yet
    t0 = clock()
    message_id = queue(session_factory, world, "email", "leitung@abh.ennetal.example", t0)

    report = deliver_due(session_factory, channels(port=port), clock, max_attempts=5)
    assert (report.delivered, report.retried, report.failed) == (0, 1, 0)
    m = message(session_factory, message_id)
    assert m.state == "pending"
    assert m.attempts == 1
    assert m.last_error and f"127.0.0.1:{port}" in m.last_error
    assert m.next_attempt_at == t0 + timedelta(minutes=1)

    box = mailbox(port)  # the server comes back, but the retry is not due yet
    clock.advance(seconds=59)
    assert deliver_due(session_factory, channels(box), clock, 5).delivered == 0
    assert box.messages == []
    clock.advance(seconds=1)
    report = deliver_due(session_factory, channels(box), clock, 5)
    assert report.delivered == 1
    [mail] = box.messages
    assert mail["Subject"] == "Übergabe überfällig: Test"
    m = message(session_factory, message_id)
    assert (m.state, m.attempts, m.delivered_at, m.last_error) == ("delivered", 2, clock(), None)


def test_webhook_failing_backs_off_fails_for_good_and_is_requeued(client, auth, world, session_factory,
                                                                  clock, hook):
    hook.status = 500
    t0 = clock()
    message_id = queue(session_factory, world, "webhook", hook.url, t0)
    waits = []
    for attempt in (1, 2):
        report = deliver_due(session_factory, channels(), clock, max_attempts=3)
        assert report.retried == 1
        m = message(session_factory, message_id)
        assert (m.state, m.attempts) == ("pending", attempt)
        assert m.last_error == "webhook delivery failed: HTTP status 5xx"
        waits.append(m.next_attempt_at - clock())
        clock.now = m.next_attempt_at
    assert waits == [timedelta(minutes=1), timedelta(minutes=2)]  # exponential backoff
    report = deliver_due(session_factory, channels(), clock, max_attempts=3)
    assert (report.delivered, report.retried, report.failed) == (0, 0, 1)
    m = message(session_factory, message_id)
    assert (m.state, m.attempts) == ("failed", 3) and "HTTP status 5xx" in m.last_error
    # Failed for good: no more attempts, however long we wait.
    clock.advance(days=2)
    assert deliver_due(session_factory, channels(), clock, 3) == type(report)()
    assert len(hook.requests) == 3

    # The operator sees it ...
    admin = auth(*ADMIN)
    page = ok(client.get("/notifications?state=failed", headers=admin))
    assert page["counts"] == {"pending": 0, "delivered": 0, "failed": 1}
    [item] = page["items"]
    assert item["id"] == message_id and item["state"] == "failed" and item["attempts"] == 3
    assert "HTTP status 5xx" in item["last_error"] and item["address"] == hook.url
    assert ok(client.get("/notifications?state=pending", headers=admin))["items"] == []
    problem(client.get("/notifications?state=failed", headers=auth(*ABH)), 403, "forbidden")
    problem(client.get("/notifications?state=lost", headers=admin), 422, "validation-error")
    # ... and puts it back in the queue once the receiver is fixed.
    problem(client.post(f"/notifications/{message_id}/requeue", headers=auth(*ABH)), 403, "forbidden")
    again = ok(client.post(f"/notifications/{message_id}/requeue", headers=admin))
    assert (again["state"], again["attempts"]) == ("pending", 0)
    assert ts(again["next_attempt_at"]) == clock()
    problem(client.post(f"/notifications/{message_id}/requeue", headers=admin), 422, "validation-error")
    problem(client.post("/notifications/999999/requeue", headers=admin), 404, "not-found")
    hook.status = 200
    assert deliver_due(session_factory, channels(), clock, 3).delivered == 1
    assert len(hook.requests) == 4
    delivered = ok(client.get("/notifications?state=delivered", headers=admin))
    assert [i["id"] for i in delivered["items"]] == [message_id]
    assert delivered["items"][0]["attempts"] == 1


def test_a_notifier_that_crashed_after_claiming_is_taken_over_after_the_lease(world, session_factory,
                                                                             clock, hook):
    message_id = queue(session_factory, world, "webhook", hook.url, clock())
    claimed = _claim(session_factory, clock(), 50)  # ... and the notifier dies before sending
    assert [c.id for c in claimed] == [message_id]
    assert message(session_factory, message_id).state == "pending"

    assert deliver_due(session_factory, channels(), clock, 5).delivered == 0
    clock.advance(seconds=LEASE.total_seconds() - 1)
    assert deliver_due(session_factory, channels(), clock, 5).delivered == 0
    assert hook.requests == []
    clock.advance(seconds=1)
    assert deliver_due(session_factory, channels(), clock, 5).delivered == 1
    assert len(hook.requests) == 1
    m = message(session_factory, message_id)
    assert (m.state, m.attempts) == ("delivered", 2)


# --- the commands ----------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch, service_url):
    from casemgmt.config import get_settings

    monkeypatch.setenv("CASEMGMT_DATABASE_URL", service_url)
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(conftest.MASTER_KEY).decode())
    monkeypatch.setenv("CASEMGMT_POLICY_DIR", str(conftest.ROOT / "policies"))
    monkeypatch.setenv("CASEMGMT_PUBLIC_BASE_URL", BASE_URL)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_escalate_and_notify_commands(client, auth, world, session_factory, clock, mailbox, cli_env, capsys):
    from casemgmt.cli import main
    from casemgmt.config import get_settings

    add_contacts(session_factory, world, ("ennetal_abh", "lead", "email", "leitung@abh.ennetal.example"))
    # The commands use the real clock: request a month ago, so the handover is overdue now.
    clock.now = utcnow() - timedelta(days=30)
    h = step_handover(client, auth, world, **NAME)
    fresh = step_handover(client, auth, world)
    clock.now = utcnow()
    ok(respond(client, auth(*ABH), fresh["id"], "acknowledge"))
    box = mailbox()
    cli_env.setenv("CASEMGMT_SMTP_PORT", str(box.port))
    get_settings.cache_clear()

    assert main(["escalate"]) == 0
    first_run = capsys.readouterr().out
    assert "escalated 1 overdue handovers" in first_run
    assert "1 recipients have no contact configured" in first_run  # the KI has no inbox contact
    escalated = row(session_factory, h["id"])
    assert escalated.state == "escalated" and escalated.escalated_at is not None
    assert row(session_factory, fresh["id"]).state == "acknowledged"

    assert main(["escalate"]) == 0
    assert "escalated 0 overdue handovers, queued 0 notifications" in capsys.readouterr().out

    assert main(["notify"]) == 0
    assert "delivered 1, will retry 0, failed 0" in capsys.readouterr().out
    [mail] = box.messages
    assert mail["To"] == "leitung@abh.ennetal.example"
    assert f"{BASE_URL}/handovers/{h['id']}" in mail.get_content()
    assert outbox(session_factory, h["id"])[0].state == "delivered"

    assert main(["notify"]) == 0
    assert "delivered 0, will retry 0, failed 0" in capsys.readouterr().out
    assert len(box.messages) == 1
    # The summary says how many notifications the escalation queued: one mail.
    assert "queued 1 notifications" in first_run, first_run


def test_notify_command_requeues_failed(world, session_factory, clock, mailbox, cli_env, capsys):
    from casemgmt.cli import main

    with session_factory() as s, s.begin():
        enqueue(s, [Notification("handover.escalated", world.organisations["ennetal_abh"], "email",
                                 "leitung@abh.ennetal.example", "Übergabe überfällig", {})], utcnow())
        s.execute(OutboxMessage.__table__.update().values(state="failed", attempts=8, last_error="down"))
    box = mailbox()
    cli_env.setenv("CASEMGMT_SMTP_PORT", str(box.port))
    assert main(["notify", "--requeue-failed"]) == 0
    out = capsys.readouterr().out
    assert "re-queued 1 failed notifications" in out
    assert "delivered 1, will retry 0, failed 0" in out
    assert len(box.messages) == 1


# --- contact points --------------------------------------------------------------------------


def test_contact_points_are_validated(client, auth, world):
    admin = auth(*ADMIN)
    abh = world.organisations["ennetal_abh"]
    url = f"/organisations/{abh}/contacts"

    def post(headers=admin, **body):
        return client.post(url, json={"role": "lead", "channel": "email", **body}, headers=headers)

    created = ok(post(address="  leitung@abh.ennetal.example "), 201)
    assert created["address"] == "leitung@abh.ennetal.example"
    assert created["organisation_id"] == abh and created["role"] == "lead"
    hook = ok(post(role="inbox", channel="webhook", address="https://hooks.abh.example/casemgmt"), 201)

    for address in ("not-an-email", "leitung@abh", "two@@abh.example", "leitung abh@example.org"):
        body = problem(post(address=address), 422, "validation-error")
        assert body["errors"][0]["field"] == "body.address", body
    for address in ("ftp://hooks.abh.example/x", "javascript:alert(1)", "hooks.abh.example/x", "https://"):
        body = problem(post(channel="webhook", address=address), 422, "validation-error")
        assert body["errors"][0]["field"] == "body.address", body
    problem(post(role="boss", address="chef@abh.example"), 422, "validation-error")
    problem(post(channel="sms", address="+49 170 000000"), 422, "validation-error")

    dup = problem(post(address="leitung@abh.ennetal.example"), 422, "validation-error")
    assert "already" in dup["detail"]
    problem(post(address=" leitung@abh.ennetal.example"), 422, "validation-error")
    # The same address in another role is another contact point.
    ok(post(role="inbox", address="leitung@abh.ennetal.example"), 201)

    problem(post(headers=auth(*ABH), address="x@abh.example"), 403, "forbidden")
    problem(client.get(url, headers=auth(*KI)), 403, "forbidden")
    problem(client.post("/organisations/999999/contacts", json={
        "role": "lead", "channel": "email", "address": "x@y.example"}, headers=admin), 404, "not-found")

    listed = ok(client.get(url, headers=admin))
    assert [(c["role"], c["channel"], c["address"]) for c in listed] == [
        ("lead", "email", "leitung@abh.ennetal.example"),
        ("inbox", "webhook", "https://hooks.abh.example/casemgmt"),
        ("inbox", "email", "leitung@abh.ennetal.example"),
    ]
    assert client.delete(f"{url}/{hook['id']}", headers=admin).status_code == 204
    assert len(ok(client.get(url, headers=admin))) == 2


@pytest.mark.parametrize("address", ["http://[::1/hook", "https://hooks.abh.example:99999/x",
                                     "http://hooks abh.example/x"])
def test_undeliverable_webhook_urls_are_refused(client, auth, world, address):
    """A URL that can never be delivered to is a clear 422 when it is configured, not a server
    error, and not a contact point whose every notification fails later."""
    resp = client.post(f"/organisations/{world.organisations['ennetal_abh']}/contacts",
                       json={"role": "lead", "channel": "webhook", "address": address}, headers=auth(*ADMIN))
    body = problem(resp, 422, "validation-error")
    assert body["errors"][0]["field"] == "body.address"
