"""What the service knows about the request being answered, for logs and problem bodies.

Set by the observability middleware (casemgmt/observability.py) at the start of every request;
context variables follow the request into the thread pool and into exception handlers.
"""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("casemgmt_request_id", default=None)
