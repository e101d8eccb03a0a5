"""The FastAPI application: wiring only. Domain packages bring their routers."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.engine import Engine

from casemgmt import __version__
from casemgmt.auth.tokens import TokenVerifier
from casemgmt.chains.catalog import register_templates
from casemgmt.chains.migrate import check_plans
from casemgmt.auth.views import router as session_router
from casemgmt.chains.views import router as chains_router
from casemgmt.chains.views import templates_router
from casemgmt.clock import utcnow
from casemgmt.config import Settings, get_settings
from casemgmt.database import make_engine, make_sessionmaker
from casemgmt.dbroles import ensure_service_role
from casemgmt.docs import install_docs
from casemgmt.conferences.views import router as conferences_router
from casemgmt.handovers.views import admin_router as notifications_router
from casemgmt.handovers.views import router as handovers_router
from casemgmt.interviews.views import router as interviews_router
from casemgmt.jurisdictions.views import router as reference_router
from casemgmt.languagepass.views import router as languagepass_router
from casemgmt.limits import RateLimiter, RequestLimits
from casemgmt.migrations import ensure_at_head, head_revision
from casemgmt.observability import BacklogCollector, RequestObservability, watch_pool
from casemgmt.offers.views import public_router as public_offers_router
from casemgmt.offers.views import router as offers_router
from casemgmt.persons.views import router as persons_router
from casemgmt.policy.loader import Policies, load_policies
from casemgmt.privacy.crypto import keyring_from_settings
from casemgmt.privacy.service import Privacy, audit_refusal
from casemgmt.privacy.views import router as privacy_router
from casemgmt.querycheck import reject_unknown_query
from casemgmt.rights.views import router as rights_router
from casemgmt.steering.views import router as steering_router
from casemgmt.problems import (
    PROBLEM_TYPES,
    STANDARD_RESPONSES,
    NotFound,
    NotAuthenticated,
    NotReady,
    Problem,
    ProblemDetails,
    install_handlers,
    problem_response,
    problem_type,
)

DESCRIPTION = """
Case management across authorities for newcomers in a German municipality: each person's
**Integrationskette** as a state machine across offices.

Authenticate with a bearer JWT (`casemgmt token` mints demo tokens). Every error is
`application/problem+json` (RFC 9457) with a stable `type`; see `/problems`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    policies: Policies | None = None,
    clock: Callable[[], datetime] = utcnow,
    master_key: bytes | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    policies = policies or load_policies(settings.policy_dir)
    engine = engine or make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Start-up refuses a bad key configuration or an unmigrated database before serving.
        app.state.verifier = TokenVerifier(settings)
        keys = keyring_from_settings(settings, master_key)
        app.state.privacy = Privacy(policies.data, keys)
        ensure_at_head(engine)
        ensure_service_role(engine, settings.allow_privileged_db_role)
        app.state.migration_head = head_revision()
        app.state.sessionmaker = make_sessionmaker(engine, audit_key=keys.audit_key, audit_key_id=keys.key_id)
        app.state.on_problem = _audit_refusals
        with app.state.sessionmaker() as session:
            app.state.catalog = register_templates(session, policies.templates, clock())
        # A migration plan that does not fit the versions it names stops start-up, like a template.
        check_plans(app.state.catalog, policies.migrations)
        yield
        _process_ends()

    app = FastAPI(
        title="casemgmt",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
        # Served from an installed package, never from a CDN (casemgmt/docs.py).
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    app.state.settings = settings
    app.state.policies = policies
    app.state.engine = engine
    app.state.clock = clock
    app.state.rate_limiter = RateLimiter.from_settings(settings)
    app.add_middleware(RequestLimits, max_body_bytes=settings.max_body_bytes)
    # Added last, so it is outermost: the request id is known to every layer below it.
    app.add_middleware(RequestObservability)
    install_handlers(app)
    watch_pool(engine)
    for router in (session_router, reference_router, templates_router, persons_router, interviews_router, chains_router,
                   handovers_router, conferences_router, steering_router, privacy_router, rights_router,
                   notifications_router, offers_router, public_offers_router, languagepass_router):
        app.include_router(router, responses=STANDARD_RESPONSES)
    # The web interface (casemgmt/web): German screens on the same services, below /ui. After the
    # API's routes, which no /ui path matches: an API request finds its route without first being
    # compared with every screen's.
    from casemgmt.web import install_web

    install_web(app)

    @app.get("/health", tags=["service"], summary="Liveness (kept for existing probes)")
    @app.get("/health/live", tags=["service"], summary="Liveness: the process answers")
    def health_live() -> dict[str, str]:
        """The process is up and answers; checks nothing else, costs nothing."""
        return {"status": "ok"}

    @app.get("/health/ready", tags=["service"], summary="Readiness: the service can answer requests",
             responses={503: {"description": "Not ready (`/problems/not-ready`); `failing` names the checks",
                              "model": ProblemDetails,
                              "content": {"application/problem+json": {
                                  "schema": {"$ref": "#/components/schemas/ProblemDetails"}}}}})
    def health_ready(request: Request) -> dict[str, str]:
        """The database answers, its schema is at the code's migration head, the policies are
        loaded and the master key is present. One short query; no authentication, and a failure
        names only which check failed."""
        failing = readiness(request.app)
        if failing:
            raise _NotReadyResponse(failing)
        return {"status": "ready"}

    @app.get("/metrics", tags=["service"], include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Prometheus metrics (text exposition format)."""
        expected = request.app.state.settings.metrics_token
        if expected:
            import hmac

            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
                raise NotAuthenticated("/metrics needs the metrics token: Authorization: Bearer <token>")
        body, content_type = _exposition(request.app)
        return Response(body, media_type=content_type)

    @app.get("/problems", tags=["service"])
    def problem_types() -> list[dict[str, object]]:
        """Every problem ``type`` this API returns, with what it means."""
        return [
            {"type": f"/problems/{slug}", "status": status, "title": title, "description": desc}
            for slug, (status, title, desc) in sorted(PROBLEM_TYPES.items())
        ]

    @app.get("/problems/{slug}", tags=["service"], responses={404: STANDARD_RESPONSES[404]})
    def problem_type_doc(slug: str) -> JSONResponse:
        if slug not in PROBLEM_TYPES:
            raise NotFound(f"no problem type '{slug}'", resource="problem type", id=slug)
        status, title, desc = PROBLEM_TYPES[slug]
        return JSONResponse({"type": f"/problems/{slug}", "status": status, "title": title,
                             "description": desc})

    @app.exception_handler(_NotReadyResponse)
    async def _not_ready(request: Request, exc: _NotReadyResponse) -> JSONResponse:
        return problem_response(503, NotReady.slug, "Service not ready",
                                f"failing: {', '.join(exc.failing)}", request.url.path,
                                retry_after=5, failing=exc.failing)

    _publish_policy_values(app, policies)
    return app


class _NotReadyResponse(Exception):
    """Readiness failed (not a Problem: a refusal of the service, not of a user, is not audited)."""

    def __init__(self, failing: list[str]):
        super().__init__(", ".join(failing))
        self.failing = failing


def readiness(app: FastAPI) -> list[str]:
    """The names of the readiness checks that fail (empty: ready)."""
    failing = []
    if getattr(app.state, "privacy", None) is None:
        failing.append("master_key")
    if getattr(app.state, "policies", None) is None or getattr(app.state, "catalog", None) is None:
        failing.append("policies")
    try:
        with app.state.engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if current != getattr(app.state, "migration_head", None):
            failing.append("migrations")
    except Exception:
        failing.append("database")
    return failing


def _exposition(app: FastAPI) -> tuple[bytes, str]:
    """This process's metrics (or all workers', with PROMETHEUS_MULTIPROC_DIR) and the figures
    read from the database now."""
    import os

    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        processes = CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)
        body = generate_latest(processes)
    else:
        body = generate_latest(REGISTRY)
    database = CollectorRegistry()
    database.register(BacklogCollector(lambda: getattr(app.state, "sessionmaker", None), app.state.clock))
    return body + generate_latest(database), CONTENT_TYPE_LATEST


def _process_ends() -> None:
    """A worker that stops takes its live gauges (pool use) out of the shared metrics."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


# Input properties whose values only the policy files define: the OpenAPI lists them as enums,
# so a client (and a contract tester) sees the allowed values instead of a 422 it cannot foresee.
def _policy_values(policies: Policies) -> dict[str, list[str]]:
    return {
        "purpose": sorted(policies.data.purposes),
        "categories": sorted(policies.data.categories),
        "barrier_category": sorted(policies.steering.barrier_categories),
        "field_of_action": sorted(policies.steering.fields_of_action),
        "organisation_kind": sorted(policies.organisation_kinds),
        "template_key": sorted(policies.templates),
        "offer_kind": sorted(policies.offers.kinds) if policies.offers else [],
        "languages": list(policies.offers.languages) if policies.offers else [],
    }


def _constrain(schema: dict, values: list[str]) -> None:
    if schema.get("type") == "string":
        schema.pop("pattern", None)
        schema["enum"] = values
    elif schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        _constrain(schema["items"], values)
    for branch in schema.get("anyOf", ()):
        _constrain(branch, values)


def _request_schemas(doc: dict) -> set[str]:
    """Names of the component schemas that request bodies use, directly or nested."""
    def refs(node) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"].rsplit("/", 1)[-1]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    todo = [r for ops in doc.get("paths", {}).values() for op in ops.values()
            if isinstance(op, dict) for r in refs(op.get("requestBody", {}))]
    seen: set[str] = set()
    schemas = doc.get("components", {}).get("schemas", {})
    while todo:
        name = todo.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        todo.extend(refs(schemas[name]))
    return seen


def _publish_policy_values(app: FastAPI, policies: Policies) -> None:
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        values = _policy_values(policies)
        schemas = doc.get("components", {}).get("schemas", {})
        for name in _request_schemas(doc):
            for prop, prop_schema in schemas[name].get("properties", {}).items():
                if prop in values:
                    _constrain(prop_schema, values[prop])
        return doc

    app.openapi = openapi


def _audit_refusals(request: Request, exc: Problem) -> None:
    """Every refused request of an authenticated user goes into the audit trail."""
    actor = getattr(request.state, "actor", None)
    if actor is None:
        return
    audit_refusal(request.app.state.sessionmaker, actor, request.method, request.url.path,
                  exc.slug, exc.detail, exc.extra, request.app.state.clock())


def app_from_environment() -> FastAPI:
    """The app of one `casemgmt serve --workers N` worker, configured from the environment."""
    from casemgmt.dbroles import ensure_service_role as check_role

    settings = get_settings()
    app = create_app(settings)
    check_role(app.state.engine, settings.allow_privileged_db_role)
    return app


def openapi_document() -> dict:
    """The API description as committed in openapi/openapi.json (no database needed)."""
    return create_app(Settings(database_url="sqlite://")).openapi()


problem_type("http-error", 400, "HTTP error", "A generic HTTP error raised by the framework.")
