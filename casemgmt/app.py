"""The FastAPI application: wiring only. Domain packages bring their routers."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from casemgmt import __version__
from casemgmt.auth.tokens import TokenVerifier
from casemgmt.chains.catalog import register_templates
from casemgmt.chains.migrate import check_plans
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
from casemgmt.limits import RateLimiter, RequestLimits
from casemgmt.migrations import ensure_at_head
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
    Problem,
    install_handlers,
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
        app.state.sessionmaker = make_sessionmaker(engine, audit_key=keys.audit_key, audit_key_id=keys.key_id)
        app.state.on_problem = _audit_refusals
        with app.state.sessionmaker() as session:
            app.state.catalog = register_templates(session, policies.templates, clock())
        # A migration plan that does not fit the versions it names stops start-up, like a template.
        check_plans(app.state.catalog, policies.migrations)
        yield

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
    install_handlers(app)

    for router in (reference_router, templates_router, persons_router, interviews_router, chains_router,
                   handovers_router, conferences_router, steering_router, privacy_router, rights_router,
                   notifications_router):
        app.include_router(router, responses=STANDARD_RESPONSES)

    @app.get("/health", tags=["service"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/problems", tags=["service"])
    def problem_types() -> list[dict[str, object]]:
        """Every problem ``type`` this API returns, with what it means."""
        return [
            {"type": f"/problems/{slug}", "status": status, "title": title, "description": desc}
            for slug, (status, title, desc) in sorted(PROBLEM_TYPES.items())
        ]

    @app.get("/problems/{slug}", tags=["service"])
    def problem_type_doc(slug: str) -> JSONResponse:
        if slug not in PROBLEM_TYPES:
            raise NotFound(f"no problem type '{slug}'", resource="problem type", id=slug)
        status, title, desc = PROBLEM_TYPES[slug]
        return JSONResponse({"type": f"/problems/{slug}", "status": status, "title": title,
                             "description": desc})

    return app


def _audit_refusals(request: Request, exc: Problem) -> None:
    """Every refused request of an authenticated user goes into the audit trail."""
    actor = getattr(request.state, "actor", None)
    if actor is None:
        return
    audit_refusal(request.app.state.sessionmaker, actor, request.method, request.url.path,
                  exc.slug, exc.detail, exc.extra, request.app.state.clock())


def openapi_document() -> dict:
    """The API description as committed in openapi/openapi.json (no database needed)."""
    return create_app(Settings(database_url="sqlite://")).openapi()


problem_type("http-error", 400, "HTTP error", "A generic HTTP error raised by the framework.")
