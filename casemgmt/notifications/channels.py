"""Delivery channels. Each ``send`` returns on success and raises on any failure; the notifier
decides about retries."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

from casemgmt import netguard

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """The message was not delivered; ``str()`` says why (kept as the outbox row's last error)."""


class Channel(Protocol):
    def send(self, address: str, subject: str, body: dict[str, Any]) -> None: ...


def render_text(subject: str, body: dict[str, Any]) -> str:
    """Plain-text mail body: the subject, then each member on its own line."""
    lines = [subject, ""]
    lines += [f"{key}: {value}" for key, value in body.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class EmailChannel:
    """Mail through the operator's relay, to exactly one recipient: the contact's address is
    checked again here (rows saved before the check existed), is the only ``To`` and the only
    envelope recipient. Errors name the relay (operator configuration) and a coarse class."""

    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0

    def send(self, address: str, subject: str, body: dict[str, Any]) -> None:
        try:
            recipient = netguard.check_email_address(address)
        except netguard.RefusedAddress:
            raise DeliveryError("email delivery failed: not a single email address") from None
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = recipient
        message["Subject"] = " ".join(subject.split())
        message.set_content(render_text(subject, body))
        relay = f"relay {self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(message, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            log.warning("email to %s refused: %s", recipient, exc)
            raise DeliveryError(f"email delivery failed: recipient refused by the {relay}") from exc
        except smtplib.SMTPResponseException as exc:
            log.warning("email to %s: %s answered %s", recipient, relay, exc)
            raise DeliveryError(f"email delivery failed: {relay} answered {_status_class(exc.smtp_code)}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("email to %s: %s: %s", recipient, relay, exc)
            raise DeliveryError(f"email delivery failed: {relay} unreachable") from exc
        if refused:
            raise DeliveryError(f"email delivery failed: recipient refused by the {relay}")


def _status_class(code: int) -> str:
    return f"{code // 100}xx" if 100 <= code <= 599 else "an invalid status"


def sign_webhook(secret: str, timestamp: int, payload: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``"{timestamp}." + body`` under the secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address, whatever the name resolves to by now."""


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to the checked address; TLS names and verifies the certificate of the host."""

    def __init__(self, ip: str, port: int, server_name: str, timeout: float):
        super().__init__(ip, port, timeout=timeout, context=ssl.create_default_context())
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)


@dataclass(frozen=True)
class WebhookChannel:
    """POSTs the message as JSON, signed with the secret over a timestamp and the body, to a
    target checked by :mod:`casemgmt.netguard` at delivery time. Redirects are not followed.

    ``last_error`` (shown to administrators) says only a coarse class: a refused target, a failed
    connection (no name, closed port, timeout and TLS failure look the same) or the HTTP status
    class, so the outbox cannot be used to scan the network behind this server. The details go
    to the notifier's log for the operator."""

    secret: str | None = None
    timeout: float = 10.0
    allow_private_networks: bool = False
    clock: Callable[[], float] = time.time

    def send(self, address: str, subject: str, body: dict[str, Any]) -> None:
        if not self.secret:
            raise DeliveryError("webhook delivery failed: not signed (CASEMGMT_WEBHOOK_SECRET is not set)")
        try:
            url, addresses = netguard.resolve_target(address, self.allow_private_networks)
        except netguard.RefusedAddress as exc:
            log.warning("webhook %s refused: %s", address, exc)
            raise DeliveryError("webhook delivery failed: refused target") from None
        except OSError as exc:
            log.warning("webhook %s: name not resolved: %s", address, exc)
            raise DeliveryError("webhook delivery failed: connection failed") from None
        payload = json.dumps({"subject": subject, **body}, ensure_ascii=False, sort_keys=True).encode()
        timestamp = int(self.clock())
        headers = {
            "Host": url.host_header,
            "Content-Type": "application/json",
            "User-Agent": "casemgmt-notifier",
            "X-Casemgmt-Timestamp": str(timestamp),
            "X-Casemgmt-Signature": sign_webhook(self.secret, timestamp, payload),
        }
        status = self._post(url, addresses, payload, headers)
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook delivery failed: HTTP status {_status_class(status)}")

    def _post(self, url: netguard.WebhookURL, addresses: list[Any], payload: bytes,
              headers: dict[str, str]) -> int:
        """The response status from the first checked address that answers."""
        for ip in addresses:
            if url.scheme == "https":
                conn: http.client.HTTPConnection = _PinnedHTTPSConnection(
                    str(ip), url.port, url.host, self.timeout)
            else:
                conn = _PinnedHTTPConnection(str(ip), url.port, timeout=self.timeout)
            try:
                conn.request("POST", url.target, body=payload, headers=headers)
                response = conn.getresponse()
                status = response.status
                response.close()
                return status
            except (OSError, http.client.HTTPException) as exc:
                log.warning("webhook %s via %s: %s", url.host, ip, exc)
            finally:
                conn.close()
        raise DeliveryError("webhook delivery failed: connection failed")
