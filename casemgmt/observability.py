"""Operating the service: request ids, JSON log lines and Prometheus metrics.

**Request ids.** Every request gets an id: the caller's ``X-Request-ID`` when it is a plain token
(letters, digits and ``._:-``, at most 128 characters; anything else could forge log lines), or a
new one. It is returned in the ``X-Request-ID`` header and in every problem body, and it is on
every log line written while the request runs.

**Logs** are one JSON object per line: time, level, logger, message and, for requests, the
request id, method, route *template* (``/persons/{person_id}``, never the path with its ids or
the query), status, duration, user id (``sub``) and organisation key. Nothing from a token, a
body, a query or a person's record is ever put into a log line, and exceptions are logged with
their type and stack but without their message, which may quote a value.

**Metrics** (prometheus-client, served at ``/metrics``) carry no person data and no ids in their
labels: route templates, methods, status codes, template keys, actions and organisation kinds.
With several worker processes the counters of all workers are summed through
``PROMETHEUS_MULTIPROC_DIR`` (``casemgmt serve --workers N`` sets one up).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from casemgmt.requestcontext import REQUEST_ID

access_log = logging.getLogger("casemgmt.access")

_REQUEST_ID_SHAPE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_HEADER = "X-Request-ID"

# --- metrics -------------------------------------------------------------------------------------
# Buckets in seconds: from a cached read to a slow report.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "casemgmt_http_requests_total", "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"])
HTTP_LATENCY = Histogram(
    "casemgmt_http_request_duration_seconds", "Time to answer a request, by route template and method.",
    ["route", "method"], buckets=_LATENCY_BUCKETS)
STEP_TRANSITIONS = Counter(
    "casemgmt_step_transitions_total", "Step actions that committed, by chain template and action.",
    ["template", "action"])
AUDIT_APPEND = Histogram(
    "casemgmt_audit_append_duration_seconds", "Time to append a transaction's rows to the audit trail "
    "(locking the stream heads included).", buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                    0.1, 0.25, 1.0))
JOB_RUNS = Counter(
    "casemgmt_job_runs_total", "Runs of the periodic jobs, by job (escalate, notify) and outcome.",
    ["job", "outcome"])
JOB_LAST_SUCCESS = Gauge(
    "casemgmt_job_last_success_timestamp_seconds", "When a job's last run succeeded (Unix time).",
    ["job"], multiprocess_mode="max")
NOTIFICATIONS = Counter(
    "casemgmt_notifications_total", "Notification delivery attempts, by channel and outcome "
    "(delivered, retry, failed).", ["channel", "outcome"])
ESCALATIONS = Counter(
    "casemgmt_handover_escalations_total", "Overdue handovers escalated.")
POOL_IN_USE = Gauge(
    "casemgmt_db_pool_connections_in_use", "Database connections checked out of the pool now.",
    multiprocess_mode="livesum")
POOL_OPEN = Gauge(
    "casemgmt_db_pool_connections_open", "Database connections the pool holds open now.",
    multiprocess_mode="livesum")
DB_UNAVAILABLE = Counter(
    "casemgmt_db_unavailable_total", "Requests answered 503 because the database was unreachable.")


def count_outcome(job: str, ok: bool) -> None:
    JOB_RUNS.labels(job=job, outcome="ok" if ok else "failed").inc()
    if ok:
        JOB_LAST_SUCCESS.labels(job=job).set(time.time())


def watch_pool(engine: Any) -> None:
    """Keep the pool gauges of ``engine`` up to date (connection events of this process)."""
    from sqlalchemy import event

    if getattr(engine, "_casemgmt_pool_watched", False):
        return
    engine._casemgmt_pool_watched = True

    @event.listens_for(engine, "checkout")
    def _checkout(*_args):
        POOL_IN_USE.inc()

    @event.listens_for(engine, "checkin")
    def _checkin(*_args):
        POOL_IN_USE.dec()

    @event.listens_for(engine, "connect")
    def _connect(*_args):
        POOL_OPEN.inc()

    @event.listens_for(engine, "close")
    def _close(*_args):
        POOL_OPEN.dec()

    @event.listens_for(engine, "close_detached")
    def _close_detached(*_args):
        POOL_OPEN.dec()


class BacklogCollector:
    """Figures read from the database when Prometheus scrapes: handovers waiting and overdue per
    receiving organisation kind, and the notification outbox by state. Two aggregate queries; a
    failing database makes them absent from the scrape, never an error of ``/metrics``."""

    def __init__(self, sessionmaker_of: Callable[[], Any], clock: Callable[[], datetime]):
        self._sessionmaker_of = sessionmaker_of
        self._clock = clock

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        from sqlalchemy import case, func, select

        from casemgmt.handovers.models import Handover
        from casemgmt.notifications.models import OutboxMessage

        factory = self._sessionmaker_of()
        if factory is None:
            return
        now = self._clock()
        waiting = GaugeMetricFamily("casemgmt_handovers_waiting",
                                    "Handovers waiting for the receiver's answer, by receiving organisation kind.",
                                    labels=["organisation_kind"])
        overdue = GaugeMetricFamily("casemgmt_handovers_overdue",
                                    "Waiting handovers past their deadline, by receiving organisation kind.",
                                    labels=["organisation_kind"])
        outbox = GaugeMetricFamily("casemgmt_notifications_backlog",
                                   "Notifications in the outbox by state (pending, due now, failed).",
                                   labels=["state"])
        try:
            with factory() as session:
                rows = session.execute(
                    select(Handover.receiver_organisation_kind, func.count(),
                           func.sum(case((Handover.due_at <= now, 1), else_=0)))
                    .where(Handover.state.in_(("requested", "escalated")))
                    .group_by(Handover.receiver_organisation_kind)).all()
                o = OutboxMessage.__table__.c
                counts = session.execute(select(
                    func.sum(case((o.state == "pending", 1), else_=0)),
                    func.sum(case(((o.state == "pending") & (o.next_attempt_at <= now), 1), else_=0)),
                    func.sum(case((o.state == "failed", 1), else_=0)))).one()
                session.rollback()
        except Exception:  # the scrape still reports the process's own figures
            logging.getLogger(__name__).warning("metrics: database figures not available")
            return
        for kind, n, late in rows:
            waiting.add_metric([kind], n)
            overdue.add_metric([kind], late or 0)
        for state, n in zip(("pending", "due", "failed"), counts, strict=True):
            outbox.add_metric([state], n or 0)
        yield waiting
        yield overdue
        yield outbox


# --- logs ----------------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line. Exceptions keep their type and stack, not their message."""

    FIELDS = ("request_id", "method", "route", "status", "duration_ms", "user", "organisation",
              "job")

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            line["request_id"] = request_id
        for name in self.FIELDS[1:]:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _exc, tb = record.exc_info
            line["exception"] = exc_type.__name__
            line["stack"] = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_tb(tb)][-15:]
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    """Route every logger (uvicorn's too) through one handler on stderr in ``fmt`` (json|text)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # uvicorn's access line holds the raw path and query: ours (casemgmt.access) does not.
    logging.getLogger("uvicorn.access").disabled = True


def uvicorn_log_config(fmt: str, level: str) -> dict[str, Any]:
    """A dictConfig for uvicorn (also applied in each worker process) equal to configure_logging."""
    formatter = ({"()": "casemgmt.observability.JsonFormatter"} if fmt == "json"
                 else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "main",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
        },
    }


# --- the middleware ------------------------------------------------------------------------------
def request_id_from(scope: dict[str, Any]) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _REQUEST_ID_SHAPE.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class RequestObservability:
    """Outermost ASGI middleware: request id, access log line and request metrics."""

    def __init__(self, app: Any, skip_paths: frozenset[str] = frozenset({"/metrics"})):
        self.app = app
        self.skip_paths = skip_paths

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        started_response = False

        async def send_tracked(message: dict[str, Any]) -> None:
            nonlocal started_response
            started_response = started_response or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            # An error no handler took: answered here, so that the 500 carries the request id
            # too (Starlette's outermost handler would answer after the id is gone).
            if started_response:
                raise
            from casemgmt.problems import InternalError, problem_response

            logging.getLogger("casemgmt.problems").error(
                "unhandled error on %s %s", scope.get("method"),
                getattr(scope.get("route"), "path", None) or "<unmatched>", exc_info=exc)
            response = problem_response(500, InternalError.slug, "Internal error",
                                        "The request failed on the server; nothing was changed.",
                                        scope.get("path", ""))
            await response(scope, receive, send_tracked)
        finally:
            self._record(scope, status, time.perf_counter() - started, request_id)
            REQUEST_ID.reset(token)

    def _record(self, scope: dict[str, Any], status: int, seconds: float, request_id: str) -> None:
        route = getattr(scope.get("route"), "path", None) or "<unmatched>"
        method = scope.get("method", "")
        if scope.get("path") not in self.skip_paths:
            HTTP_REQUESTS.labels(route=route, method=method, status=str(status)).inc()
            HTTP_LATENCY.labels(route=route, method=method).observe(seconds)
        state = scope.get("state") or {}
        actor = state.get("actor")
        # Probes and scrapes come every few seconds: only at debug level.
        level = logging.DEBUG if scope.get("path", "").startswith(("/health", "/metrics")) else logging.INFO
        access_log.log(
            level, "%s %s %s", method, route, status,
            extra={"request_id": request_id, "method": method, "route": route, "status": status,
                   "duration_ms": round(seconds * 1000, 1),
                   "user": getattr(actor, "user_id", None),
                   "organisation": state.get("organisation_key")})
