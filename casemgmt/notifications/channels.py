"""Delivery channels. Each ``send`` returns on success and raises on any failure; the notifier
decides about retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol


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
    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout: float = 10.0

    def send(self, address: str, subject: str, body: dict[str, Any]) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = address
        message["Subject"] = subject
        message.set_content(render_text(subject, body))
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"smtp {self.host}:{self.port}: {exc}") from exc
        if refused:
            raise DeliveryError(f"smtp refused {sorted(refused)}")


@dataclass(frozen=True)
class WebhookChannel:
    secret: str | None = None
    timeout: float = 10.0

    def send(self, address: str, subject: str, body: dict[str, Any]) -> None:
        payload = json.dumps({"subject": subject, **body}, ensure_ascii=False, sort_keys=True).encode()
        request = urllib.request.Request(address, data=payload, method="POST")
        request.add_header("Content-Type", "application/json")
        if self.secret:
            digest = hmac.new(self.secret.encode(), payload, hashlib.sha256).hexdigest()
            request.add_header("X-Casemgmt-Signature", f"sha256={digest}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - operator-configured URL
                status = response.status
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"webhook {address}: HTTP {exc.code}") from exc
        except (OSError, ValueError) as exc:  # URLError is an OSError; ValueError: malformed URL
            raise DeliveryError(f"webhook {address}: {exc}") from exc
        if not 200 <= status < 300:
            raise DeliveryError(f"webhook {address}: HTTP {status}")
