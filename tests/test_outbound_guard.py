"""Outbound calls an administrator can aim: webhook URLs (server-side request forgery) and email
contacts (header injection, several recipients).

An attacker holding an admin token tries to make the server talk to itself or its network: when
the contact is saved (422 naming ``address``), and, for rows that got past that check or names
whose DNS answer changes later, at delivery (nothing sent, a coarse ``last_error``). The outbox
must not become a port scanner: a closed port, a missing host and a non-HTTP service look alike.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import threading
import time
from typing import Any

import conftest
import pytest
from fastapi.testclient import TestClient
from http_helpers import ok, problem
from test_handover_escalation import Hook, Mailbox, cli_env, free_port, message, queue  # noqa: F401 - cli_env is a fixture

from casemgmt import netguard
from casemgmt.app import create_app
from casemgmt.notifications.channels import EmailChannel, WebhookChannel
from casemgmt.notifications.models import OutboxMessage
from casemgmt.notifications.service import deliver_due

SECRET = "webhook-test-secret"
ADMIN = ("ennetal_ki", "admin")
PUBLIC_V4 = "93.184.215.14"


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"webhook_secret": SECRET})


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def contacts_url(world) -> str:
    return f"/organisations/{world.organisations['ennetal_abh']}/contacts"


def post_contact(client, auth, url: str, channel: str, address: str):
    return client.post(url, json={"role": "lead", "channel": channel, "address": address},
                       headers=auth(*ADMIN))


def fake_dns(monkeypatch, answers: dict[str, list[str] | list[list[str]]]) -> list[str]:
    """Replace name resolution: ``answers[name]`` is the addresses, or a list of successive
    answers (DNS rebinding). Returns the log of names looked up."""
    looked_up: list[str] = []

    def resolve(host: str, port: int):
        looked_up.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = answers[host]
        if answer and isinstance(answer[0], list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        return [ipaddress.ip_address(a) for a in answer]

    monkeypatch.setattr(netguard, "resolve_host", resolve)
    return looked_up


def webhook(allow_private: bool = False, secret: str | None = SECRET, **kw: Any) -> dict[str, Any]:
    return {"webhook": WebhookChannel(secret=secret, timeout=30, allow_private_networks=allow_private, **kw)}


def deliver(session_factory, clock, chans) -> None:
    deliver_due(session_factory, chans, clock, max_attempts=5)


# --- saving a webhook contact ----------------------------------------------------------------

LOOPBACK_AND_TRICKS = [
    "http://127.0.0.1/hook", "http://127.0.0.1:8080/", "http://127.255.255.254/", "http://127.0.0.1./",
    "http://localhost/", "http://LOCALHOST:9000/", "http://localhost./", "http://api.localhost/",
    "http://ｌｏｃａｌｈｏｓｔ/",
    "http://2130706433/", "http://0x7f000001/", "http://0x7F.0.0.1/", "http://0177.0.0.1/",
    "http://127.1/", "http://127.0.1/", "http://017700000001/", "http://0/", "http://%31%32%37.0.0.1/",
    "http://[::1]/", "http://[0:0:0:0:0:0:0:1]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/", "http://[::127.0.0.1]/", "http://[64:ff9b::127.0.0.1]/",
]
PRIVATE_AND_SPECIAL = [
    "http://10.0.0.1/", "http://10.255.255.255/", "http://172.16.0.1/", "http://172.31.255.1/",
    "http://192.168.178.1/", "http://100.64.0.1/", "http://100.127.255.254/",
    "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://[fe80::1%25eth0]/",
    "http://[fd00:ec2::254]/", "http://[fc00::1]/", "http://[::ffff:10.0.0.1]/",
    "http://[::ffff:169.254.169.254]/", "http://[64:ff9b::a9fe:a9fe]/",
    "http://0.0.0.0/", "http://[::]/", "http://224.0.0.1/", "http://239.255.255.250:1900/",
    "http://[ff02::1]/", "http://255.255.255.255/", "http://240.0.0.1/", "http://192.0.2.10/",
    "http://198.18.0.1/", "http://[2001:db8::1]/", "http://[2002:7f00:1::1]/", "http://[2001::1]/",
    "http://[100::1]/",
]
NOT_PLAIN_HTTP = [
    "https://user:secret@hooks.ennetal.example/x", "https://hooks.ennetal.example@127.0.0.1/",
    "http://@hooks.ennetal.example/", "http://127.0.0.1:80\\@hooks.ennetal.example/",
    "file:///etc/passwd", "gopher://127.0.0.1:25/_HELO", "ftp://hooks.ennetal.example/",
    "dict://127.0.0.1:11211/", "https://hooks.ennetal.example:0/", "http://hooks.ennetal.example\r\n/x",
    "http://hooks..ennetal.example/", "http://-hooks.ennetal.example/",
]


@pytest.mark.parametrize("address", LOOPBACK_AND_TRICKS + PRIVATE_AND_SPECIAL + NOT_PLAIN_HTTP)
def test_webhook_targets_inside_are_refused_when_saved(client, auth, contacts_url, address):
    body = problem(post_contact(client, auth, contacts_url, "webhook", address), 422, "validation-error")
    assert body["errors"][0]["field"] == "body.address", body
    assert ok(client.get(contacts_url, headers=auth(*ADMIN))) == []


@pytest.mark.parametrize("answer", [["10.20.30.40"], ["127.0.0.1"], ["169.254.169.254"], ["::1"],
                                    ["fd12:3456::1"], ["::ffff:192.168.0.10"],
                                    [PUBLIC_V4, "192.168.0.10"]])
def test_names_that_resolve_inside_are_refused_when_saved(client, auth, contacts_url, monkeypatch, answer):
    fake_dns(monkeypatch, {"intranet.ennetal.example": answer})
    body = problem(post_contact(client, auth, contacts_url, "webhook", "https://intranet.ennetal.example/hook"),
                   422, "validation-error")
    assert body["errors"][0]["field"] == "body.address"
    assert "resolves" in body["errors"][0]["message"]


def test_public_webhook_targets_are_accepted_and_inside_ones_are_not(client, auth, contacts_url, monkeypatch):
    fake_dns(monkeypatch, {"hooks.ennetal.de": [PUBLIC_V4, "2a00:1450:4001:82b::200e"],
                           "intern.ennetal.de": ["10.0.0.7"]})
    for address in ("https://hooks.ennetal.de/casemgmt?team=abh", f"http://{PUBLIC_V4}:8443/hook",
                    "https://[2a00:1450:4001:82b::200e]/hook",
                    # does not resolve now: accepted, checked again at every delivery
                    "https://hooks.kreis-ennetal.example/casemgmt"):
        ok(post_contact(client, auth, contacts_url, "webhook", address), 201)
    for address in ("https://intern.ennetal.de/casemgmt", "http://10.0.0.7/hook"):
        problem(post_contact(client, auth, contacts_url, "webhook", address), 422, "validation-error")
    assert len(ok(client.get(contacts_url, headers=auth(*ADMIN)))) == 4


def test_private_networks_allowed_by_setting_but_never_link_local(settings, db, policies, clock, auth,
                                                                  contacts_url):
    closed = create_app(settings.model_copy(update={"webhook_allow_private_networks": True}), engine=db,
                        policies=policies, clock=clock, master_key=conftest.MASTER_KEY)
    with TestClient(closed, raise_server_exceptions=False) as c:
        for address in ("http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://[fd00::5]/hook"):
            ok(post_contact(c, auth, contacts_url, "webhook", address), 201)
        for address in ("http://169.254.169.254/", "http://[fe80::1]/", "http://224.0.0.1/",
                        "http://0.0.0.0/", "http://2130706433/", "http://user@10.1.2.3/"):
            problem(post_contact(c, auth, contacts_url, "webhook", address), 422, "validation-error")


def test_webhook_contacts_need_a_signing_secret(settings, db, policies, clock, auth, contacts_url):
    unsigned = create_app(settings.model_copy(update={"webhook_secret": None}), engine=db,
                          policies=policies, clock=clock, master_key=conftest.MASTER_KEY)
    with TestClient(unsigned, raise_server_exceptions=False) as c:
        body = problem(post_contact(c, auth, contacts_url, "webhook", "https://hooks.ennetal.example/x"),
                       409, "webhook-secret-missing")
        assert "CASEMGMT_WEBHOOK_SECRET" in body["detail"]
        assert ok(c.get(contacts_url, headers=auth(*ADMIN))) == []
        ok(post_contact(c, auth, contacts_url, "email", "leitung@abh.ennetal.example"), 201)
        listed = ok(c.get("/problems", headers=auth(*ADMIN)))
        assert "/problems/webhook-secret-missing" in {p["type"] for p in listed}


# --- delivering to a webhook -----------------------------------------------------------------


def test_stored_inside_targets_are_refused_at_delivery(world, session_factory, clock, hook):
    """A row that got into the outbox without the save check (an old contact, a direct insert)
    is not delivered to loopback, and the error says no more than that."""
    ids = [queue(session_factory, world, "webhook", address, clock()) for address in (
        hook.url, hook.url.replace("127.0.0.1", "2130706433"), hook.url.replace("127.0.0.1", "[::ffff:127.0.0.1]"),
        hook.url.replace("http://", "http://admin:pw@"), hook.url.replace("http://", "ftp://"))]
    deliver(session_factory, clock, webhook())
    assert hook.requests == []
    for message_id in ids:
        m = message(session_factory, message_id)
        assert (m.state, m.last_error) == ("pending", "webhook delivery failed: refused target")


def test_dns_rebinding_between_saving_and_delivery_is_refused(client, auth, contacts_url, world,
                                                             session_factory, clock, hook, monkeypatch):
    fake_dns(monkeypatch, {"hooks.ennetal.de": [[PUBLIC_V4], ["127.0.0.1"]]})
    ok(post_contact(client, auth, contacts_url, "webhook", f"http://hooks.ennetal.de:{hook.port}/x"), 201)
    message_id = queue(session_factory, world, "webhook", f"http://hooks.ennetal.de:{hook.port}/x", clock())
    deliver(session_factory, clock, webhook())
    assert hook.requests == []
    assert message(session_factory, message_id).last_error == "webhook delivery failed: refused target"


def test_delivery_connects_to_the_address_it_checked(world, session_factory, clock, hook, monkeypatch):
    """The name is resolved once per delivery; the connection goes to that answer (the system
    resolver does not know the name at all), with the name in Host."""
    looked_up = fake_dns(monkeypatch, {"hooks.ennetal.example": [["127.0.0.1"], ["10.9.9.9"]]})
    message_id = queue(session_factory, world, "webhook", f"http://hooks.ennetal.example:{hook.port}/in?x=1",
                       clock())
    deliver(session_factory, clock, webhook(allow_private=True))
    assert looked_up == ["hooks.ennetal.example"]
    [(headers, _raw)] = hook.requests
    assert headers["host"] == f"hooks.ennetal.example:{hook.port}"
    assert hook.paths == ["/in?x=1"]
    assert message(session_factory, message_id).state == "delivered"


def test_redirects_are_not_followed(world, session_factory, clock, hook):
    target = Hook()
    try:
        hook.status = 302
        hook.location = target.url
        message_id = queue(session_factory, world, "webhook", hook.url, clock())
        deliver(session_factory, clock, webhook(allow_private=True))
        assert len(hook.requests) == 1 and target.requests == []
        m = message(session_factory, message_id)
        assert (m.state, m.last_error) == ("pending", "webhook delivery failed: HTTP status 3xx")
    finally:
        target.close()


class _RawServer:
    """A TCP service that is not a webhook receiver: answers ``banner`` (or nothing) and closes."""

    def __init__(self, banner: bytes | None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.banner = banner
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.banner is not None:
                    conn.sendall(self.banner)

    def close(self) -> None:
        self.sock.close()


def test_outbox_errors_do_not_tell_open_ports_or_hosts(world, session_factory, clock, hook, monkeypatch):
    """A closed port, a name that does not exist, an SSH-like service, a service that hangs up
    and a receiver answering 404: an admin reading GET /notifications learns only "connection
    failed" or the status class, never the host, port or the server's words."""
    fake_dns(monkeypatch, {})
    ssh, silent = _RawServer(b"SSH-2.0-OpenSSH_9.6\r\n"), _RawServer(None)
    try:
        hook.status = 404
        closed = free_port()
        addresses = {
            "closed": f"http://127.0.0.1:{closed}/",
            "no such host": "http://nowhere.ennetal.example/",
            "ssh": f"http://127.0.0.1:{ssh.port}/",
            "hangs up": f"http://127.0.0.1:{silent.port}/",
            "404": hook.url,
        }
        ids = {k: queue(session_factory, world, "webhook", a, clock()) for k, a in addresses.items()}
        deliver(session_factory, clock, webhook(allow_private=True))
    finally:
        ssh.close()
        silent.close()
    errors = {k: message(session_factory, i).last_error for k, i in ids.items()}
    assert errors == {
        "closed": "webhook delivery failed: connection failed",
        "no such host": "webhook delivery failed: connection failed",
        "ssh": "webhook delivery failed: connection failed",
        "hangs up": "webhook delivery failed: connection failed",
        "404": "webhook delivery failed: HTTP status 4xx",
    }


def verify_like_a_receiver(secret: str, headers: dict[str, str], body: bytes, now: float,
                           window: int = 300) -> bool:
    """What README tells a receiver to do."""
    timestamp = headers.get("x-casemgmt-timestamp", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > window:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("x-casemgmt-signature", ""))


def test_signature_covers_timestamp_and_body(world, session_factory, clock, hook):
    queue(session_factory, world, "webhook", hook.url, clock(), body={"handover_id": "h1", "kind": "step"})
    deliver(session_factory, clock, webhook(allow_private=True))
    [(headers, raw)] = hook.requests
    now = time.time()
    assert verify_like_a_receiver(SECRET, headers, raw, now)
    assert json.loads(raw)["handover_id"] == "h1"
    # A replayed request is refused once the window has passed ...
    assert not verify_like_a_receiver(SECRET, headers, raw, now + 301)
    # ... and moving its timestamp forward, or changing the body, breaks the signature.
    moved = {**headers, "x-casemgmt-timestamp": str(int(now))} if headers["x-casemgmt-timestamp"] != str(int(now)) \
        else {**headers, "x-casemgmt-timestamp": str(int(now) + 1)}
    assert not verify_like_a_receiver(SECRET, moved, raw, now)
    assert not verify_like_a_receiver(SECRET, headers, raw.replace(b"h1", b"h2"), now)
    assert not verify_like_a_receiver("another-secret", headers, raw, now)


def test_signature_timestamp_is_the_time_of_sending(world, session_factory, clock, hook):
    queue(session_factory, world, "webhook", hook.url, clock())
    deliver(session_factory, clock, webhook(allow_private=True, clock=lambda: 1_700_000_000.7))
    [(headers, raw)] = hook.requests
    assert headers["x-casemgmt-timestamp"] == "1700000000"
    assert verify_like_a_receiver(SECRET, headers, raw, 1_700_000_100)
    assert not verify_like_a_receiver(SECRET, headers, raw, 1_700_000_000 + 600)


# --- email contacts --------------------------------------------------------------------------

NOT_ONE_ADDRESS = [
    "a,b@abh.ennetal.example", "leitung@abh.ennetal.example,spy@evil.example",
    "leitung@abh.ennetal.example;spy@evil.example", "leitung@abh.ennetal.example, spy@evil.example",
    "Leitung ABH <leitung@abh.ennetal.example>", "<leitung@abh.ennetal.example>",
    '"Leitung" leitung@abh.ennetal.example', "leitung@abh.ennetal.example (Leitung)",
    "leitung@abh.ennetal.example\r\nBcc: spy@evil.example", "leitung@abh.ennetal.example\nBcc: spy@evil.example",
    "leitung@abh.ennetal.example\rBcc: spy@evil.example", "leitung@abh.ennetal.example\x00",
    "leit ung@abh.ennetal.example", "leitung@abh.ennetal.example\tx", "a@b@abh.ennetal.example",
    '"a@b"@abh.ennetal.example', "leitung@[127.0.0.1]", "leitung@127.0.0.1", ".leitung@abh.ennetal.example",
    "lei..tung@abh.ennetal.example", "leitung@-abh.ennetal.example", "leitung@abh_x.ennetal.example",
    "leitung@abh.ennetal.example.", "x" * 65 + "@abh.ennetal.example", "a@" + "b" * 250 + ".example",
    "müller@abh.ennetal.example",
]


@pytest.mark.parametrize("address", NOT_ONE_ADDRESS)
def test_email_contact_is_exactly_one_address(client, auth, contacts_url, address):
    body = problem(post_contact(client, auth, contacts_url, "email", address), 422, "validation-error")
    assert body["errors"][0]["field"] == "body.address", body
    assert ok(client.get(contacts_url, headers=auth(*ADMIN))) == []


def test_plain_addresses_are_accepted_lists_are_not(client, auth, contacts_url):
    for address in ("leitung@abh.ennetal.example", "o'brien+eskalation@kreis-ennetal.de",
                    "Team.ABH_1@xn--mnster-3ya.de"):
        assert ok(post_contact(client, auth, contacts_url, "email", address), 201)["address"] == address
    body = problem(post_contact(client, auth, contacts_url, "email", "leitung@abh.ennetal.example,x@evil.example"),
                   422, "validation-error")
    assert "one" in body["errors"][0]["message"]
    assert len(ok(client.get(contacts_url, headers=auth(*ADMIN)))) == 3


@pytest.fixture
def mailbox():
    box = Mailbox(free_port()).start()
    yield box
    box.stop()


def test_delivery_sends_to_exactly_one_recipient(world, session_factory, clock, mailbox):
    """Rows stored before the check (lists, injected headers) are not sent; a good one goes to
    its one address, in To and in the envelope."""
    relay = EmailChannel("127.0.0.1", mailbox.port, "casemgmt@ennetal.example", timeout=5)
    bad = [queue(session_factory, world, "email", a, clock()) for a in (
        "leitung@abh.ennetal.example,spy@evil.example",
        "leitung@abh.ennetal.example\r\nBcc: spy@evil.example",
        "Leitung <leitung@abh.ennetal.example>")]
    good = queue(session_factory, world, "email", "leitung@abh.ennetal.example", clock(),
                 subject="Übergabe überfällig\r\nBcc: spy@evil.example")
    deliver(session_factory, clock, {"email": relay})
    [envelope] = mailbox.handler.envelopes
    assert envelope.rcpt_tos == ["leitung@abh.ennetal.example"]
    [mail] = mailbox.messages
    assert mail["To"] == "leitung@abh.ennetal.example"
    assert mail["Bcc"] is None and mail["Subject"] == "Übergabe überfällig Bcc: spy@evil.example"
    assert message(session_factory, good).state == "delivered"
    for message_id in bad:
        m = message(session_factory, message_id)
        assert (m.state, m.last_error) == ("pending", "email delivery failed: not a single email address")


# --- https -----------------------------------------------------------------------------------


def _certificate(tmp_path, name: str):
    """A self-signed certificate for ``name``; returns (cert file, key file)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_https_checks_the_certificate_of_the_name_while_connecting_to_the_checked_address(
        world, session_factory, clock, monkeypatch, tmp_path):
    import ssl

    cert_file, key_file = _certificate(tmp_path, "hooks.ennetal.example")
    hook = Hook()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    hook.server.socket = context.wrap_socket(hook.server.socket, server_side=True)
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # trust the test certificate
        fake_dns(monkeypatch, {"hooks.ennetal.example": ["127.0.0.1"], "other.ennetal.example": ["127.0.0.1"]})
        good = queue(session_factory, world, "webhook", f"https://hooks.ennetal.example:{hook.port}/x", clock())
        wrong_name = queue(session_factory, world, "webhook", f"https://other.ennetal.example:{hook.port}/x", clock())
        deliver(session_factory, clock, webhook(allow_private=True))
        assert message(session_factory, good).state == "delivered"
        assert len(hook.requests) == 1
        assert message(session_factory, wrong_name).last_error == "webhook delivery failed: connection failed"
    finally:
        hook.close()


# --- the notify command and its settings -----------------------------------------------------


def test_notify_command_reaches_private_networks_only_when_configured(world, session_factory, hook,
                                                                       cli_env, capsys):
    from casemgmt.cli import main
    from casemgmt.clock import utcnow
    from casemgmt.config import get_settings

    message_id = queue(session_factory, world, "webhook", hook.url, utcnow())
    cli_env.setenv("CASEMGMT_WEBHOOK_SECRET", SECRET)
    get_settings.cache_clear()
    assert main(["notify"]) == 0
    assert "delivered 0, will retry 1" in capsys.readouterr().out
    assert hook.requests == []
    assert message(session_factory, message_id).last_error == "webhook delivery failed: refused target"

    cli_env.setenv("CASEMGMT_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
    get_settings.cache_clear()
    with session_factory() as s, s.begin():  # the retry is due now
        s.execute(OutboxMessage.__table__.update().values(next_attempt_at=utcnow()))
    assert main(["notify"]) == 0
    assert "delivered 1" in capsys.readouterr().out
    [(headers, raw)] = hook.requests
    assert verify_like_a_receiver(SECRET, headers, raw, time.time())
