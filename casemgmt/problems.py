"""RFC 9457 problem details: every error the API returns, with a stable ``type`` per kind.

Services raise :class:`Problem` subclasses; the handlers registered by :func:`install_handlers`
turn them (and FastAPI's own validation and routing errors) into ``application/problem+json``.
The ``type`` URIs are relative references to ``/problems/{slug}``, which the API serves, so a
client can key on them and a person can read what they mean.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from casemgmt.requestcontext import REQUEST_ID

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"

# slug -> (status, title, what it means); served at /problems and /problems/{slug}.
PROBLEM_TYPES: dict[str, tuple[int, str, str]] = {}


def problem_type(slug: str, status: int, title: str, description: str) -> str:
    PROBLEM_TYPES[slug] = (status, title, description)
    return slug


class Problem(Exception):
    """An error the client can act on. Subclasses fix ``slug``; ``extra`` adds members."""

    slug: ClassVar[str] = "about:blank"

    def __init__(self, detail: str, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def status(self) -> int:
        return PROBLEM_TYPES[self.slug][0]

    @property
    def title(self) -> str:
        return PROBLEM_TYPES[self.slug][1]


def _define(slug: str, status: int, title: str, description: str) -> type[Problem]:
    problem_type(slug, status, title, description)
    name = "".join(part.capitalize() for part in slug.split("-"))
    return type(name, (Problem,), {"slug": slug, "__doc__": description})


NotAuthenticated = _define(
    "not-authenticated", 401, "Not authenticated",
    "No bearer token was sent, or the token is invalid, expired, for another audience or issuer, "
    "signed with an algorithm that is not accepted, or lacks a required claim.",
)
Forbidden = _define(
    "forbidden", 403, "Not allowed for your role",
    "Your roles do not include the permission this action needs.",
)
WrongOrganisation = _define(
    "wrong-organisation", 403, "Not your organisation's step",
    "The step is owned by another kind of organisation, or by an organisation of another "
    "jurisdiction. `owner` names who may act on it.",
)
UnknownOrganisation = _define(
    "unknown-organisation", 401, "Unknown organisation",
    "The token names an organisation that does not exist in this installation.",
)
NotFound = _define(
    "not-found", 404, "Not found",
    "The resource does not exist (or no longer exists). `resource` and `id` name what was looked up.",
)
RouteNotFound = _define("route-not-found", 404, "No such endpoint", "The URL matches no endpoint.")
MethodNotAllowed = _define(
    "method-not-allowed", 405, "Method not allowed", "The endpoint exists but not for this method."
)
ValidationFailed = _define(
    "validation-error", 422, "Invalid request",
    "The request body, path or query did not validate. `errors` lists each field and why (at most "
    "20; `errors_omitted` counts the rest). Long input is not echoed back in full.",
)
IllegalTransition = _define(
    "illegal-transition", 409, "Action not possible in this state",
    "The action cannot be taken on the step in its current state. `state` is the current state "
    "and `allowed_actions` lists what can be done instead.",
)
GuardFailed = _define(
    "transition-guard-failed", 409, "Action's precondition not met",
    "The action exists for this state but a precondition failed, for example skipping a step "
    "that is not optional. `guard` names the precondition.",
)
ReasonRequired = _define(
    "reason-required", 422, "Reason required",
    "Blocking, skipping and closing must say why: send a non-empty `reason`.",
)
VersionConflict = _define(
    "version-conflict", 409, "Changed by someone else",
    "The chain changed since you read it (`expected_version` is not the current `version`). "
    "Reload it and decide again.",
)
ChainClosed = _define(
    "chain-not-active", 409, "Chain is not active",
    "The chain is completed or closed; its steps cannot change any more.",
)
DuplicateChain = _define(
    "duplicate-chain", 409, "Chain already running",
    "The person already has an open chain of this template.",
)
NoLegalBasis = _define(
    "no-legal-basis", 403, "No legal basis for these fields",
    "Writing (or reading) these fields needs a statutory basis, a data-exchange agreement or the "
    "person's consent, and none applies to your organisation for this purpose. `fields` names "
    "each field and why.",
)
InvalidConsent = _define(
    "invalid-consent", 422, "Consent not valid",
    "The consent cannot be recorded as given: for example special categories without explicit "
    "consent, no notice of the consequences of refusing, or an end before its start.",
)
ConsentAlreadyWithdrawn = _define(
    "consent-already-withdrawn", 409, "Consent already withdrawn",
    "The consent was withdrawn before; a withdrawal cannot be repeated or undone.",
)
ReleaseExists = _define(
    "release-exists", 409, "Period already released",
    "This quarter has been released for this area. A re-release must be asked for explicitly "
    "(`casemgmt report release --again`) and is protected together with the earlier release.",
)
PeriodNotClosed = _define(
    "period-not-closed", 409, "Period not closed",
    "A quarter is released only after it has ended and the waiting period (releases.waiting_days in "
    "policies/steering.yaml) has passed, so that its figures cannot change any more.",
)
NoRelease = _define(
    "no-release", 404, "No release yet",
    "Nothing has been released for this area yet: the steering group reads releases of closed quarters "
    "(`casemgmt report release`, or the escalation loop when releases.automatic is set).",
)
DatabaseUnavailable = _define(
    "database-unavailable", 503, "Database unavailable",
    "The database could not be reached, or the connection to it broke while the request ran. "
    "Nothing was changed: the request's transaction was rolled back as a whole. Try again after "
    "the seconds in the `Retry-After` header.",
)
NotReady = _define(
    "not-ready", 503, "Service not ready",
    "The service cannot answer requests yet or any more (`failing` names the checks that fail: "
    "database, migrations, policies, master_key). Try again after the seconds in `Retry-After`.",
)
InternalError = _define(
    "internal-error", 500, "Internal error",
    "Something failed on the server. Nothing was changed. The incident is logged.",
)


MAX_ERRORS = 20
MAX_ECHO_CHARS = 300
MAX_LIST_ITEMS = 50


def _bounded(value: Any, depth: int = 0) -> Any:
    """What a problem body may echo of the request: strings cut to MAX_ECHO_CHARS, lists to
    MAX_LIST_ITEMS, nesting to a few levels, so a megabyte of input never comes back."""
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHO_CHARS else value[:MAX_ECHO_CHARS] + "… (cut)"
    if depth > 4:
        return None
    if isinstance(value, list | tuple):
        return [_bounded(v, depth + 1) for v in value[:MAX_LIST_ITEMS]]
    if isinstance(value, dict):
        return {_bounded(str(k), depth + 1): _bounded(v, depth + 1) for k, v in list(value.items())[:MAX_LIST_ITEMS]}
    return value


def problem_response(status: int, slug: str, title: str, detail: str, instance: str, *,
                     headers: dict[str, str] | None = None, retry_after: int | None = None,
                     **extra: Any) -> JSONResponse:
    errors = extra.get("errors")
    if isinstance(errors, list) and len(errors) > MAX_ERRORS:
        extra["errors"] = errors[:MAX_ERRORS]
        extra["errors_omitted"] = len(errors) - MAX_ERRORS
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": _bounded(detail),
        "instance": _bounded(instance),
    }
    body.update({name: _bounded(value) for name, value in extra.items()})
    request_id = REQUEST_ID.get()
    if request_id is not None:
        body["request_id"] = request_id  # quoted by a user, it finds the log lines of the request
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
        body["retry_after"] = retry_after
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers or None)


DATABASE_RETRY_AFTER_SECONDS = 5


def is_database_outage(exc: BaseException) -> bool:
    """The database is unreachable or the connection broke (killed backend, restart, network),
    as opposed to an error of the statement itself. Such a request is answered 503."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        sqlstate = getattr(exc.orig, "sqlstate", None)
        # No SQLSTATE: the client library lost or never got the connection. 08: connection
        # exception, 57: operator intervention (terminated, shutting down), 53: too many clients.
        return sqlstate is None or sqlstate[:2] in ("08", "57", "53")
    return False


def database_unavailable(instance: str) -> JSONResponse:
    from casemgmt.observability import DB_UNAVAILABLE

    DB_UNAVAILABLE.inc()
    log.warning("database unavailable; answered 503")
    return problem_response(
        503, DatabaseUnavailable.slug, "Database unavailable",
        "the database is not reachable or the connection broke; nothing was changed",
        instance, retry_after=DATABASE_RETRY_AFTER_SECONDS)


def _jsonable_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        out.append({
            "field": ".".join(str(p) for p in err.get("loc", ())),
            "message": err.get("msg", ""),
            "type": err.get("type", ""),
        })
    return out


def _needs_token_first(request: Request) -> JSONResponse | None:
    """Authentication comes before everything else about a request: a route that needs a token
    answers 401 to a request without a valid one, whatever is wrong with its body."""
    from casemgmt.querycheck import authenticate_if_needed

    try:
        authenticate_if_needed(request)
    except Problem as problem:
        return problem_response(problem.status, problem.slug, problem.title, problem.detail,
                                request.url.path, **problem.extra)
    return None


def _validation_answer(request: Request, errors: list[dict[str, Any]]) -> JSONResponse:
    first = errors[0] if errors else {"field": "", "message": "invalid"}
    return problem_response(
        422, ValidationFailed.slug, "Invalid request",
        f"{first['field']}: {first['message']}", request.url.path, errors=errors,
    )


BODY_PARSE_ERROR = "There was an error parsing the body"


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        hook = getattr(request.app.state, "on_problem", None)
        if hook is not None:
            try:
                await run_in_threadpool(hook, request, exc)
            except Exception as hook_error:
                # The refusal could not be audited because the database went away: the request
                # is not answered as if it had been.
                if is_database_outage(hook_error):
                    return database_unavailable(request.url.path)
                raise
        return problem_response(exc.status, exc.slug, exc.title, exc.detail, request.url.path, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        refused = await run_in_threadpool(_needs_token_first, request)
        if refused is not None:
            return refused
        return _validation_answer(request, _jsonable_errors(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
            # FastAPI's answer to a body that is not UTF-8: to the client it is invalid JSON like
            # any other, a documented 422 (after authentication).
            refused = await run_in_threadpool(_needs_token_first, request)
            if refused is not None:
                return refused
            return _validation_answer(request, [{
                "field": "body", "message": "the body is not valid UTF-8 JSON", "type": "json_invalid"}])
        if exc.status_code == 404:
            slug = RouteNotFound.slug
        elif exc.status_code == 405:
            slug = MethodNotAllowed.slug
        else:
            slug = "http-error"
        title = PROBLEM_TYPES.get(slug, (exc.status_code, "HTTP error", ""))[1]
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return problem_response(exc.status_code, slug, title, str(exc.detail), request.url.path,
                                headers=headers)

    from sqlalchemy.exc import SQLAlchemyError

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if is_database_outage(exc):
            return database_unavailable(request.url.path)
        return _internal_error(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request, exc)


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def _allowed_methods(request: Request) -> str:
    """`Allow` of a 405 (RFC 9110 15.5.6): every method the contract gives this path. Starlette
    names only those of the first route that matched the path (GET and PATCH of one resource are
    two routes here)."""
    from starlette.routing import compile_path

    patterns = getattr(request.app.state, "allow_patterns", None)
    if patterns is None:
        patterns = [(compile_path(template)[0], {m.upper() for m in ops if m in _HTTP_METHODS})
                    for template, ops in request.app.openapi().get("paths", {}).items()]
        request.app.state.allow_patterns = patterns
    methods = {m for regex, ms in patterns if regex.match(request.url.path) for m in ms}
    return ", ".join(sorted(methods))


def _internal_error(request: Request, exc: BaseException) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, _route_template(request), exc_info=exc)
    return problem_response(
        500, InternalError.slug, "Internal error",
        "The request failed on the server; nothing was changed.", request.url.path,
    )


def _route_template(request: Request) -> str:
    """The matched route's path template (no ids, no query): what logs may name."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "<unmatched>"


class ProblemDetails(BaseModel):
    """RFC 9457 problem details. Members beyond these depend on ``type`` (see /problems)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["/problems/illegal-transition"])
    title: str
    status: int
    detail: str
    instance: str
    request_id: str | None = Field(
        default=None, description="The request's id (`X-Request-ID`): quote it to the operator, it "
                                  "finds the request in the service's logs.")


def _response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": ProblemDetails,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
    }


# Documented on every endpoint so clients see the error shape in openapi.json.
STANDARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _response("Not authenticated (`/problems/not-authenticated`, `/problems/unknown-organisation`)"),
    403: _response("Not allowed (`/problems/forbidden`, `/problems/wrong-organisation`)"),
    404: _response("Not found (`/problems/not-found`)"),
    409: _response("Conflict with the current state (`/problems/illegal-transition`, `/problems/version-conflict`, ...)"),
    422: _response("Invalid request (`/problems/validation-error`, `/problems/reason-required`)"),
}
HandoverNotPending = _define(
    "handover-not-pending", 409, "Handover already decided",
    "The handover was already acknowledged, rejected or withdrawn (`state` says which); it can "
    "change only once.",
)
HandoverPending = _define(
    "handover-pending", 409, "A handover is waiting",
    "A handover for this step or chain is still waiting for the receiver (`handover_id`): "
    "finish or withdraw it first.",
)
InvalidHandover = _define(
    "invalid-handover", 422, "Handover not possible",
    "The handover cannot be requested as sent: for example the receiver is not of the kind that "
    "owns the step, does not serve the chain's jurisdiction, or the step has already ended. "
    "`field` names the part of the request.",
)
HandoverStepNotReady = _define(
    "handover-step-state", 409, "Step not in the state the handover needs",
    "A Rechtskreiswechsel hands over a step that is in progress and completes it when the receiver "
    "acknowledges; the step is not in progress (`state`).",
)
WrongConferencePhase = _define(
    "conference-phase", 409, "Not possible in this phase of the conference",
    "Cases and agreements belong to the case phase, findings and votes to the structural phase; "
    "a closed conference does not change. `phase` is the current phase.",
)
PersonalDataInText = _define(
    "personal-data-in-text", 422, "Text contains personal data",
    "A finding or proposal text must not identify anyone: it contains a name, birth date, file "
    "number, address, phone number or e-mail address. `hits` says what to remove and where.",
)
TooManyDots = _define(
    "too-many-dots", 422, "Not enough dots left",
    "Each participant has a fixed number of dots per conference (policies/steering.yaml). "
    "`dots_left` says how many you may still give.",
)
DuplicateName = _define(
    "duplicate-name", 409, "Name already in use",
    "Another working group has this name; delegate to it or choose another name.",
)


def invalid_field(field: str, message: str, kind: str = "value_error") -> Problem:
    """A 422 about one member of the request body, in the shape request validation uses."""
    return ValidationFailed(f"{field}: {message}",
                            errors=[{"field": f"body.{field}", "message": message, "type": kind}])
InvolvementEnded = _define(
    "involvement-ended", 403, "Your organisation's part in this case has ended",
    "Your organisation was involved with this person or chain and no longer is (its step ended or "
    "was handed on, the chain closed, the person moved). It may still read what it wrote and did "
    "itself, for appeals, but it cannot change anything or read what others added since.",
)
RechtskreisByHandover = _define(
    "rechtskreis-by-handover", 409, "The Rechtskreis changes only by a Rechtskreiswechsel",
    "The person has a running chain: their benefit regime (`benefit_regime`) changes only when the "
    "receiving office acknowledges a Rechtskreiswechsel handover, so that no moment passes without "
    "a responsible office. Request the handover instead.",
)
NotConsentRecorder = _define(
    "consent-recorder", 403, "Consent is recorded by the case management",
    "A consent is recorded by the organisation that runs the case management of the person's chain "
    "(which took the signed form), or by the organisation registering the person in the same "
    "request, and only by organisation kinds listed in policies/legal_bases.yaml "
    "(`consent_recorders`).",
)
WebhookSecretMissing = _define(
    "webhook-secret-missing", 409, "Webhooks need a signing secret",
    "Webhook deliveries are signed, and the operator has not configured a signing secret "
    "(CASEMGMT_WEBHOOK_SECRET), so no webhook contact can be saved. Use an email contact or ask "
    "the operator to set the secret.",
)
PayloadTooLarge = _define(
    "payload-too-large", 413, "Request body too large",
    "The request body is larger than the API accepts (`max_bytes`, 1 MiB); nothing was read "
    "beyond the limit and nothing was changed.",
)
RateLimited = _define(
    "rate-limited", 429, "Too many requests",
    "Exports, reports, searches and changes are limited per user and per client address. Wait "
    "the seconds in the `Retry-After` header (also `retry_after`) and try again.",
)
PersonErased = _define(
    "person-erased", 410, "The person's data was erased",
    "The person's data key was destroyed (GDPR Art. 17, or the end of the retention period): their "
    "data cannot be read or changed any more. Only the pseudonymous case history remains, for "
    "statistics. Organisations that were never involved get 404 instead.",
)
PersonRestricted = _define(
    "person-restricted", 423, "Processing of this person's data is restricted",
    "The processing of this person's data is restricted under GDPR Art. 18: the record is stored, "
    "and nothing else may be done with it until the restriction is lifted. The data protection "
    "officer knows why and for how long; ask them. Nothing was read or changed.",
)
ErasureRefused = _define(
    "erasure-refused", 409, "Erasure not possible now",
    "The person's data cannot be erased now: a legal hold is set, a statutory retention obligation "
    "still runs for data that is held (GDPR Art. 17(3)(b); `obligations` names each category, its "
    "source and until when), or a chain of the person is still open. Nothing was changed. Where a "
    "retention obligation stands against erasure, restrict the processing instead.",
)
RequestMismatch = _define(
    "request-mismatch", 409, "The request does not fit",
    "The action needs a registered data subject request of the right kind for this person that is "
    "not answered or refused yet (`request_id`, `expected_kind`).",
)
RequestState = _define(
    "request-state", 409, "Not possible in the request's state",
    "A data subject request moves received -> in progress -> (extended once) -> answered or "
    "refused; an answered or refused request does not change, and it is extended at most once. "
    "`state` is the current state and `allowed_actions` what can be done.",
)
RestrictionState = _define(
    "restriction-state", 409, "Restriction already set or not set",
    "A restriction (or legal hold) is set once and lifted once: setting one that is set, or "
    "lifting one that is not, changes nothing.",
)
InterviewUsed = _define(
    "interview-used", 409, "The interview already went into a chain",
    "This Erstgespräch already completed the `first_interview` step of a chain (`chain_id`); an "
    "interview is taken into one chain only. Record a new interview for another chain.",
)
OfferFull = _define(
    "offer-full", 409, "No free place left",
    "The offer has no free place left (`free_places` is 0): the enrolment was not recorded and "
    "nothing changed. Choose another matching offer, or refer the person to this one and enrol "
    "when a place is free.",
)
AlreadyEnrolled = _define(
    "already-enrolled", 409, "Already enrolled",
    "The step is already enrolled in this offer; a place is taken once.",
)
OfferDoesNotFit = _define(
    "offer-does-not-fit", 422, "The offer does not fit the step",
    "The offer cannot be booked on this step: its kind does not serve the step (see "
    "`policies/offers.yaml`), it is not valid today, it is not open to the chain's town, or the "
    "step has ended. `reason` says which.",
)
