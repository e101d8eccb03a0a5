"""The service's notion of now, injectable so tests and the demo can move time."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Request


def utcnow() -> datetime:
    return datetime.now(UTC)


async def request_now(request: Request) -> datetime:
    """Dependency: the request's now. A coroutine, so FastAPI calls it on the event loop instead
    of handing it to a worker thread and back (it does no I/O)."""
    return request.app.state.clock()
