"""`casemgmt serve --workers 2` as a real process tree on PostgreSQL: metrics summed over the
workers, SIGTERM lets a request in flight finish, a worker killed with SIGKILL in the middle of a
request leaves nothing half-done and the service goes on answering.

A request is held in the middle of its transaction by locking the audit heads from the test (a
transition has written its step states and events and waits to append its audit rows)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import text
from test_api import new_person, started
from test_handover_escalation import free_port
from test_handovers_api import KI, SOZ

from casemgmt.privacy.audit import verify
from conftest import MASTER_KEY, ROOT, backend_gone


class Server:
    def __init__(self, settings, service_url: str, workers: int = 2) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "CASEMGMT_DATABASE_URL": service_url,
               "CASEMGMT_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
               "CASEMGMT_DEV_KEY_DIR": str(settings.dev_key_dir), "CASEMGMT_POLICY_DIR": str(ROOT / "policies"),
               "CASEMGMT_SHUTDOWN_GRACE_SECONDS": "20"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.env = env
        # The server's output goes to a file: a pipe nobody reads would stop the server once full.
        self.output = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "casemgmt.cli", "serve", "--workers", str(workers), "--port", str(self.port)],
            env=env, stdout=self.output, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.said()
            try:
                if httpx.get(self.base + "/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("serve did not become ready")

    def said(self) -> str:
        self.output.seek(0)
        return self.output.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.output.close()


@pytest.fixture(scope="module")
def server(settings, service_url, world, catalog) -> Iterator[Server]:
    """One process tree for the module; the SIGTERM test, which ends it, runs last."""
    s = Server(settings, service_url)
    yield s
    s.stop()


@contextmanager
def audit_heads_locked(owner) -> Iterator[None]:
    with owner.connect() as conn:
        trans = conn.begin()
        conn.execute(text("SELECT stream FROM audit_head FOR UPDATE"))
        try:
            yield
        finally:
            trans.rollback()


def waiting_worker(owner, timeout: float = 20) -> tuple[int, int]:
    """(backend pid, worker pid) of the service connection waiting for the audit heads. Only
    this test database's backends: with two test processes the other one's service (another
    database) may be waiting for a lock too, and its process is not ours to kill. Each look is
    its own transaction (pg_stat_activity is a snapshot kept until the transaction ends)."""
    deadline = time.monotonic() + timeout
    with owner.connect() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(text(
                "SELECT pid, application_name FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'casemgmt pid %' "
                "AND wait_event_type = 'Lock'")).first()
            conn.rollback()
            if row:
                return row.pid, int(row.application_name.rsplit(" ", 1)[1])
            time.sleep(0.05)
    raise AssertionError("no request waited for the lock")


def prepared_chain(server: Server, auth, world) -> tuple[dict, dict]:
    with httpx.Client(base_url=server.base, timeout=30) as http:
        ki = auth(*KI)
        chain = started(http, ki, new_person(http, ki, world.jurisdictions["wittmar"]))
    return chain, auth(*SOZ)


def start_step(server: Server, chain: dict, headers: dict, out: list) -> threading.Thread:
    def run() -> None:
        try:
            out.append(httpx.post(f"{server.base}/chains/{chain['id']}/steps/arrival_assignment/actions",
                                  json={"action": "start", "expected_version": chain["version"]},
                                  headers=headers, timeout=30))
        except httpx.HTTPError as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_metrics_are_summed_over_the_workers(server, auth, db):
    headers = auth(*KI)
    for _ in range(6):
        assert httpx.get(server.base + "/templates", headers=headers, timeout=10).status_code == 200

    def counted() -> float:
        text_ = httpx.get(server.base + "/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text_.splitlines()
                   if line.startswith("casemgmt_http_requests_total{") and 'route="/templates"' in line)

    # A request is counted after its answer has gone out, so the last one may be counted a moment
    # after the client has it (by the other worker, on a busy machine).
    deadline = time.monotonic() + 10
    while (total := counted()) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert total == 6.0


def workers_of(server: Server) -> list[int]:
    """The pids of the server's worker processes (children of the parent process)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == server.process.pid:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    # Not multiprocessing's resource tracker, also a child of the parent.
                    if b"resource_tracker" not in f.read():
                        children.append(int(entry))
    return children


def connections_per_worker(server: Server) -> dict[int, int]:
    """Established TCP connections to the server's port, by the worker process holding them."""
    inodes: dict[str, int] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == server.port and parts[3] == "01":
                    inodes[parts[9]] = 0
    held: dict[int, int] = {}
    for pid in workers_of(server):
        count = 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        held[pid] = count
    return held


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT balances on Linux only")
def test_connections_opened_at_once_are_spread_over_the_workers(server):
    """uvicorn's shared socket gave a burst of new connections to whichever worker woke first
    (64 connections: 61-63 on one worker of two); each worker's own socket lets the
    kernel spread them."""
    clients = [httpx.Client(base_url=server.base, timeout=10) for _ in range(64)]
    start = threading.Barrier(len(clients))
    answers: list[int] = []

    def connect(client: httpx.Client) -> None:
        start.wait()
        answers.append(client.get("/health/live").status_code)

    try:
        threads = [threading.Thread(target=connect, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert answers == [200] * len(clients)
        held = connections_per_worker(server)
        assert len(held) == 2 and sum(held.values()) == len(clients), held
        # By a hash of the addresses: 64 connections split 32 +- 4; fewer than 16 on one worker
        # has odds of about 1 in 15,000.
        assert min(held.values()) >= 16, held
    finally:
        for c in clients:
            c.close()


def test_a_second_server_on_the_same_port_is_refused(server):
    second = subprocess.run(
        [sys.executable, "-m", "casemgmt.cli", "serve", "--workers", "2", "--port", str(server.port)],
        env=server.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second.stderr
    assert f"cannot listen on 127.0.0.1:{server.port}" in second.stderr
    assert httpx.get(server.base + "/health/live", timeout=10).status_code == 200


def test_worker_killed_mid_request_leaves_nothing_half_done(server, auth, world, owner_db, keys):
    chain, soz = prepared_chain(server, auth, world)
    out: list = []
    with audit_heads_locked(owner_db):
        t = start_step(server, chain, soz, out)
        backend, worker = waiting_worker(owner_db)
        os.kill(worker, signal.SIGKILL)
        t.join(30)
    # The killed worker's transaction (step state and event written, audit waiting) was never
    # committed: PostgreSQL rolls it back when the connection's other end is gone.
    assert backend_gone(owner_db, backend, timeout=20), f"backend {backend} is still there"
    assert out and (isinstance(out[0], Exception) or out[0].status_code >= 500)
    with owner_db.connect() as conn:
        assert conn.execute(text("SELECT version FROM chains WHERE id = :c"), {"c": chain["id"]}).scalar_one() == \
            chain["version"]
        assert conn.execute(text("SELECT state FROM chain_steps WHERE chain_id = :c AND key = 'arrival_assignment'"),
                            {"c": chain["id"]}).scalar_one() == "ready"
        assert verify(conn, keys.audit_key).ok
    # The service goes on: the other worker (or the one the master starts anew) answers.
    deadline = time.monotonic() + 30
    while True:
        resp = httpx.post(f"{server.base}/chains/{chain['id']}/steps/arrival_assignment/actions",
                          json={"action": "start", "expected_version": chain["version"]}, headers=soz, timeout=30)
        if resp.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert resp.status_code == 200, resp.text


def test_sigterm_lets_the_request_in_flight_finish(server, auth, world, db, owner_db):
    chain, soz = prepared_chain(server, auth, world)
    out: list = []
    with audit_heads_locked(owner_db):
        t = start_step(server, chain, soz, out)
        waiting_worker(owner_db)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.process.poll() is None  # still finishing the request
    t.join(30)
    assert out and not isinstance(out[0], Exception), out
    assert out[0].status_code == 200, out[0].text
    assert server.process.wait(30) == 0
