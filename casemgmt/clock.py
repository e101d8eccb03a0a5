"""The service's notion of now, injectable so tests and the demo can move time."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request


def utcnow() -> datetime:
    return datetime.now(UTC)


def request_now(request: Request) -> datetime:
    return request.app.state.clock()
