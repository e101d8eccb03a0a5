"""Faults that happen in production, on PostgreSQL: a database connection killed in the middle of
a transaction, the database gone and back, mail and webhook targets down for an hour.

What a user must notice: a 503 problem with ``Retry-After`` (never a 500), nothing half-done
afterwards, an intact audit trail, and the next request served without restarting anything.

PostgreSQL itself is not restarted here: the server is shared by everybody's tests on the
machine. A TCP proxy between the service and PostgreSQL is cut and restored instead, which is what
the service sees of a restart (its connections break, new ones are refused, then accepted)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from http_helpers import ok, problem
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from test_api import acted, new_person, started
from test_handovers_api import ABH, KI, SOZ, handover, respond

from casemgmt.database import make_engine
from casemgmt.privacy.audit import verify
from conftest import backend_gone


@contextmanager
def kill_backend_on(engine: Engine, owner: Engine, matches: Callable[[str], bool]) -> Iterator[list[int]]:
    """While active, the first statement of ``engine`` for which ``matches(sql)`` is true finds
    its connection terminated by ``pg_terminate_backend`` (as an administrator or a failover
    would), inside whatever transaction it is in."""
    killed: list[int] = []

    def before(conn, _cursor, statement, _params, _context, _many):
        if killed or not matches(statement):
            return
        pid = conn.connection.dbapi_connection.info.backend_pid
        killed.append(pid)
        with owner.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.commit()
        assert backend_gone(owner, pid, timeout=10), f"backend {pid} outlived pg_terminate_backend"

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield killed
    finally:
        event.remove(engine, "before_cursor_execute", before)


def audit_intact(owner: Engine, keys) -> None:
    with owner.connect() as conn:
        result = verify(conn, keys.audit_key)
    assert result.ok, result.problem


def unavailable(resp) -> dict:
    body = problem(resp, 503, "database-unavailable")
    assert int(resp.headers["Retry-After"]) > 0
    assert body["request_id"] == resp.headers["X-Request-ID"]
    return body


def count(owner: Engine, sql: str, **params) -> int:
    with owner.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def test_connection_killed_during_a_step_transition(client, auth, world, db, owner_db, keys):
    ki, soz = auth(*KI), auth(*SOZ)
    chain = started(client, ki, new_person(client, ki, world.jurisdictions["wittmar"]))
    events_before = count(owner_db, "SELECT count(*) FROM chain_events WHERE chain_id = :c", c=chain["id"])
    with kill_backend_on(db, owner_db, lambda sql: "INSERT INTO chain_events" in sql) as killed:
        resp = client.post(f"/chains/{chain['id']}/steps/arrival_assignment/actions",
                           json={"action": "start", "expected_version": chain["version"]}, headers=soz)
    assert killed, "the transition never reached its event insert"
    unavailable(resp)
    # Nothing of the transition stayed: same version, same step state, no new event.
    again = ok(client.get(f"/chains/{chain['id']}", headers=ki))
    assert again["version"] == chain["version"]
    assert next(s for s in again["steps"] if s["key"] == "arrival_assignment")["state"] == "ready"
    assert count(owner_db, "SELECT count(*) FROM chain_events WHERE chain_id = :c", c=chain["id"]) == events_before
    audit_intact(owner_db, keys)
    # The same service, unchanged, serves the retry.
    done = acted(client, soz, chain["id"], "arrival_assignment", "start", expected_version=chain["version"])
    assert done["version"] == chain["version"] + 1


def test_connection_killed_during_a_handover_acknowledgement(client, auth, world, db, owner_db, keys):
    ki, abh = auth(*KI), auth(*ABH)
    chain = started(client, ki, new_person(client, ki, world.jurisdictions["wittmar"]))
    h = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    with kill_backend_on(db, owner_db, lambda sql: "INSERT INTO handover_events" in sql) as killed:
        resp = respond(client, abh, h["id"], "acknowledge")
    assert killed
    unavailable(resp)
    still = ok(client.get(f"/handovers/{h['id']}", headers=abh))
    assert still["state"] == "requested"
    assert [e["action"] for e in still["events"]] == ["request"]
    audit_intact(owner_db, keys)
    assert ok(respond(client, abh, h["id"], "acknowledge"))["state"] == "acknowledged"


def test_connection_killed_during_the_audit_append(client, auth, world, db, owner_db, keys):
    ki = auth(*KI)
    persons_before = count(owner_db, "SELECT count(*) FROM persons")
    audit_before = count(owner_db, "SELECT count(*) FROM audit_events")
    with kill_backend_on(db, owner_db, lambda sql: "INSERT INTO audit_events" in sql) as killed:
        resp = client.post("/persons", json={"lead_jurisdiction_id": world.jurisdictions["wittmar"],
                                             "fields": {"family_name": "Beispiel", "given_names": "Nora",
                                                        "birth_date": "1990-04-01"}}, headers=ki)
    assert killed
    unavailable(resp)
    # The registration and its audit rows went together.
    assert count(owner_db, "SELECT count(*) FROM persons") == persons_before
    assert count(owner_db, "SELECT count(*) FROM audit_events") == audit_before
    audit_intact(owner_db, keys)
    ok(client.post("/persons", json={"lead_jurisdiction_id": world.jurisdictions["wittmar"],
                                     "fields": {"family_name": "Beispiel", "given_names": "Nora",
                                                "birth_date": "1990-04-01"}}, headers=ki), 201)


class CuttableProxy:
    """A TCP proxy on loopback in front of PostgreSQL that the test can cut (every connection
    broken, new ones refused) and restore, as a database restart looks to the service."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(32)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.close()
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while this one was being accepted
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def proxied_client(settings, service_url, db, policies, clock):
    from fastapi.testclient import TestClient

    from casemgmt.app import create_app
    from conftest import MASTER_KEY

    url = make_url(service_url)
    proxy = CuttableProxy(url.port or 5432)
    engine = make_engine(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
                         pool_size=4, max_overflow=4, connect_args={"connect_timeout": 2})
    app = create_app(settings, engine=engine, policies=policies, clock=clock, master_key=MASTER_KEY)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, proxy
    proxy.cut()
    engine.dispose()


def test_database_gone_and_back_while_requests_run(proxied_client, auth, world):
    client, proxy = proxied_client
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    statuses: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        deadline = time.monotonic() + 120  # a bound for a test gone wrong, not a timing
        while not stop.is_set() and time.monotonic() < deadline:
            statuses.append(client.get(f"/persons/{person['id']}", headers=ki).status_code)

    def seen_from(mark: int, status: int) -> None:
        """Until a reader got ``status`` after the first ``mark`` answers (conditions, not
        sleeps: on a busy machine a request may take longer than any fixed pause)."""
        deadline = time.monotonic() + 60
        while status not in statuses[mark:]:
            assert time.monotonic() < deadline, f"no {status} after answer {mark}: {statuses[mark:]}"
            time.sleep(0.02)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    seen_from(0, 200)
    proxy.cut()
    seen_from(len(statuses), 503)
    during = client.get(f"/persons/{person['id']}", headers=ki)
    ready = client.get("/health/ready")
    proxy.restore()
    seen_from(len(statuses), 200)
    stop.set()
    for t in readers:
        t.join(60)
    unavailable(during)
    assert problem(ready, 503, "not-ready")["failing"] == ["database"]
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    assert 503 in statuses and 200 in statuses
    # Recovered by itself: the pool drops the broken connections and opens new ones.
    assert ok(client.get(f"/persons/{person['id']}", headers=ki))["id"] == person["id"]
    assert ok(client.get("/health/ready")) == {"status": "ready"}


def test_notifier_loop_rides_out_an_hour_of_dead_targets(monkeypatch, tmp_path, settings, service_url,
                                                          auth, client, world, clock, owner_db):
    """`casemgmt notify --every 60` while the mail relay and the webhook receiver are down for an
    hour of simulated time: nothing is lost, retries back off, the backlog drains when they
    return, and the loop stops between batches on SIGTERM."""
    import base64

    from test_handover_escalation import Hook, Mailbox, free_port

    import casemgmt.cli as cli
    import casemgmt.clock as clock_module
    from casemgmt.config import get_settings
    from casemgmt.notifications.service import Notification, enqueue
    from conftest import MASTER_KEY

    # Ten notifications queued, half by mail, half by webhook.
    hook = Hook()
    hook.status = 503
    box = Mailbox(free_port())
    from casemgmt.database import make_sessionmaker

    with make_sessionmaker(owner_db)() as session, session.begin():
        enqueue(session, [
            Notification("handover.escalated", world.organisations["ennetal_abh"],
                         "email" if i % 2 else "webhook", "lead@abh.ennetal.example" if i % 2 else hook.url,
                         f"Übergabe {i} überfällig", {"n": i})
            for i in range(10)], clock.now)

    for name, value in {
        "CASEMGMT_DATABASE_URL": service_url, "CASEMGMT_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
        "CASEMGMT_DEV_KEY_DIR": str(settings.dev_key_dir), "CASEMGMT_SMTP_HOST": "127.0.0.1",
        "CASEMGMT_SMTP_PORT": str(box.port), "CASEMGMT_WEBHOOK_SECRET": "s3cr3t",
        "CASEMGMT_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true", "CASEMGMT_SMTP_TIMEOUT_SECONDS": "2",
        "CASEMGMT_LOG_FORMAT": "text",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    monkeypatch.setattr(clock_module, "utcnow", lambda: clock.now)

    start = clock.now
    attempts_in_outage: list[int] = []

    class SimulatedTime(cli.StopSignal):
        """Waiting between runs moves the simulated clock instead of sleeping. After an hour
        the targets come back; after two, SIGTERM arrives."""

        def install(self):
            signal_event = self.event

            class Clockwork:
                def is_set(self) -> bool:
                    return signal_event.is_set()

                def set(self) -> None:
                    signal_event.set()

                def wait(self, seconds: float) -> bool:
                    clock.advance(seconds=seconds)
                    if clock.now - start >= timedelta(hours=1) and hook.status != 200:
                        attempts_in_outage.append(count(owner_db, "SELECT max(attempts) FROM notification_outbox"))
                        hook.status = 200
                        box.start()
                    if clock.now - start >= timedelta(hours=2):
                        signal_event.set()
                    return signal_event.is_set()

            self.event = Clockwork()
            return self

    monkeypatch.setattr(cli, "StopSignal", SimulatedTime)
    try:
        assert cli.main(["notify", "--every", "60"]) == 0
    finally:
        get_settings.cache_clear()
        box.stop()
        hook.close()
    # Backoff held: 1, 2, 4, 8, 16, 32 minutes apart, so at most 6 tries in the dead hour.
    assert attempts_in_outage and attempts_in_outage[0] <= 6
    with owner_db.connect() as conn:
        rows = conn.execute(text("SELECT state, count(*) FROM notification_outbox GROUP BY state")).all()
    assert dict(rows) == {"delivered": 10}
    assert len(box.messages) == 5
    assert len(hook.requests) > 5  # the refused attempts and the five that went through


def test_a_stopping_notifier_finishes_its_batch_and_holds_nothing(db, owner_db, world, clock, keys):
    """SIGTERM during a delivery run: the claimed batch is delivered and recorded, nothing more is
    claimed, and no outbox row stays locked or waits for a lease."""
    from casemgmt.database import make_sessionmaker
    from casemgmt.notifications.service import Notification, deliver_due, enqueue

    with make_sessionmaker(owner_db)() as session, session.begin():
        enqueue(session, [Notification("handover.escalated", world.organisations["ennetal_abh"], "email",
                                       f"lead{i}@abh.ennetal.example", f"Übergabe {i}", {"n": i})
                          for i in range(5)], clock.now)
    stop = threading.Event()

    class Channel:
        sent: list[str] = []

        def send(self, address, subject, body):
            self.sent.append(address)
            stop.set()  # SIGTERM arrives while the first message of the first batch goes out

    channel = Channel()
    report = deliver_due(make_sessionmaker(db), {"email": channel}, lambda: clock.now, 8, batch=2,
                         should_stop=stop.is_set)
    assert report.delivered == 2 and len(channel.sent) == 2
    with owner_db.connect() as conn:
        rows = conn.execute(text("SELECT state, attempts, next_attempt_at FROM notification_outbox ORDER BY id")).all()
        assert [r.state for r in rows] == ["delivered"] * 2 + ["pending"] * 3
        assert all(r.attempts == 0 and r.next_attempt_at == clock.now for r in rows[2:])  # never claimed
        conn.execute(text("SET lock_timeout = '1s'"))
        assert len(conn.execute(text("SELECT id FROM notification_outbox FOR UPDATE NOWAIT")).all()) == 5
