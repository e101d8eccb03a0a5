"""Runtime settings, read from the environment (prefix ``CASEMGMT_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator sets per deployment. Policies (what is allowed) live in policies/."""

    model_config = SettingsConfigDict(env_prefix="CASEMGMT_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./casemgmt.db",
        description="SQLAlchemy URL; PostgreSQL in production: postgresql+psycopg://user@host/db",
    )
    policy_dir: Path = Field(
        default=Path(__file__).resolve().parent.parent / "policies",
        description="Directory holding the operator's policy files.",
    )
    # Authentication: tokens from the municipal identity provider (or `casemgmt token` in dev).
    jwt_issuer: str = "casemgmt-dev"
    jwt_audience: str = "casemgmt"
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["RS256"])
    jwt_public_key_file: Path | None = Field(
        default=None, description="PEM public key that verifies tokens."
    )
    jwt_jwks_file: Path | None = Field(
        default=None, description="JWKS document (as exported by Keycloak and the like)."
    )
    # OpenID Connect: with an issuer set, keys come from its discovery document's JWKS URL.
    oidc_issuer: str | None = Field(
        default=None, description="Issuer URL (e.g. https://sso.kreis.example/realms/kommune); "
                                  "replaces the key files and CASEMGMT_JWT_ISSUER.")
    oidc_jwks_min_refresh_seconds: float = Field(
        default=30, ge=0, description="A token naming an unknown key refetches the JWKS at most once per this interval.")
    oidc_jwks_default_cache_seconds: float = Field(
        default=300, ge=0, description="How long keys are kept when the JWKS answer has no Cache-Control max-age.")
    oidc_jwks_max_cache_seconds: float = Field(default=86400, ge=0)
    oidc_http_timeout_seconds: float = Field(default=5, gt=0)
    # Where the token carries the user's roles and organisation (dotted paths into the claims).
    jwt_roles_claim: str = Field(default="roles", description="e.g. realm_access.roles for Keycloak realm roles.")
    jwt_organisation_claim: str = Field(default="org", description="e.g. org, or groups with a group prefix.")
    jwt_organisation_group_prefix: str | None = Field(
        default=None, description="With a list claim (groups): the organisation is the one entry under "
                                  "this prefix, e.g. /organisationen/ (exactly one must match).")
    jwt_role_map: dict[str, str] = Field(
        default_factory=dict, description="Identity-provider role -> role of policies/roles.yaml (JSON object).")
    dev_key_dir: Path = Field(
        default=Path(".casemgmt/dev-keys"),
        description="Where `casemgmt token` keeps its generated development key pair.",
    )
    dev_token_ttl_minutes: int = 8 * 60
    jwt_max_lifetime_minutes: int = Field(
        default=12 * 60, ge=1,
        description="Tokens valid for longer (exp - iat, or exp - now without iat) are refused.",
    )

    # The web interface (casemgmt/web): sign-in through the identity provider (authorization code
    # flow with PKCE) as this client; the demo's own login page only when `casemgmt demo` serves.
    oidc_client_id: str = Field(default="casemgmt", description="Client id of the web interface at the identity provider.")
    oidc_client_secret: str | None = Field(
        default=None, description="Client secret, for a confidential client (a public client uses PKCE alone).")
    oidc_scope: str = "openid profile"
    web_session_minutes: int = Field(default=8 * 60, ge=5, le=24 * 60,
                                     description="How long a web sign-in lasts.")
    demo_login: bool = Field(
        default=False, description="Set by `casemgmt demo`: the login page lists the demo users. Never in production.")

    # Personal data: AES-256 master key (base64), from the environment or a key file.
    master_key: str | None = Field(default=None, description="Base64 master key (32 bytes).")
    master_key_file: Path = Field(
        default=Path(".casemgmt/master.key"),
        description="File holding the base64 master key; `casemgmt demo` creates one if missing.",
    )

    retired_master_keys: str | None = Field(
        default=None, description="Earlier master keys during a rotation: base64, comma-separated.")
    retired_master_keys_file: Path | None = Field(
        default=None,
        description="File with earlier master keys (one base64 key per line) during a rotation: data "
                    "keys they wrapped still unwrap until `casemgmt keys rotate` has rewrapped them.",
    )

    host: str = "127.0.0.1"
    port: int = 8000
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL of this API as users reach it; notifications link to it.",
    )

    # Notifications (escalations): an SMTP relay and webhooks.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_from: str = "casemgmt@localhost"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout_seconds: float = 10.0
    webhook_secret: str | None = Field(
        default=None,
        description="Signs webhook deliveries (HMAC-SHA256 over timestamp and body); without it "
                    "webhook contacts cannot be saved and nothing is sent unsigned.",
    )
    webhook_allow_private_networks: bool = Field(
        default=False,
        description="Let webhooks reach loopback, private (RFC 1918, ULA) and CGNAT addresses: for "
                    "tests and closed networks only.",
    )
    webhook_timeout_seconds: float = 10.0
    notify_max_attempts: int = Field(default=8, ge=1, le=100)

    # Database roles: migrations run as the schema owner, the service as a restricted role.
    migration_database_url: str | None = Field(
        default=None,
        description="URL of the schema owner's role for `migrate` and `db grant` (default: database_url).",
    )
    allow_privileged_db_role: bool = Field(
        default=False,
        description="Let the service run as a superuser or the schema owner (development only).",
    )

    # Signed audit checkpoints, kept outside the database (ideally on WORM storage).
    audit_checkpoint_key_file: Path = Field(
        default=Path(".casemgmt/audit-checkpoint.key"),
        description="PEM Ed25519 private key that signs checkpoints; `casemgmt audit keygen` makes one.",
    )
    audit_checkpoint_public_key_file: Path | None = Field(
        default=None, description="PEM public key that verifies checkpoints (default: from the private key).",
    )
    audit_checkpoint_dir: Path | None = Field(
        default=None, description="Where `escalate` and `audit checkpoint` append checkpoints.",
    )
    demo_checkpoint_every_seconds: float = Field(
        default=900, ge=0,
        description="While `casemgmt demo` serves, append a checkpoint this often (0: only after seeding).",
    )

    erasure_tombstone_dir: Path | None = Field(
        default=None,
        description="Where erasures are also recorded as tombstone lines, for `casemgmt erasure replay` "
                    "after a restore (default: the audit checkpoint directory).",
    )

    @property
    def tombstone_dir(self) -> Path | None:
        return self.erasure_tombstone_dir or self.audit_checkpoint_dir

    # Operations: logs and metrics.
    log_format: str = Field(default="json", pattern="^(json|text)$",
                            description="`json`: one JSON object per line (for a log platform); `text`.")
    log_level: str = Field(default="INFO", pattern="^(?i:debug|info|warning|error)$")
    workers: int = Field(default=1, ge=1, le=64, description="Worker processes of `casemgmt serve`.")
    keep_alive_seconds: int = Field(
        default=75, ge=1, description="How long `serve` keeps an idle connection open; longer than the "
                                      "reverse proxy's upstream keep-alive, or the proxy may send on a "
                                      "connection the service is closing.")
    shutdown_grace_seconds: int = Field(
        default=30, ge=1, description="On SIGTERM, how long `serve` waits for requests in flight.")
    metrics_job_address: str = Field(
        default="127.0.0.1", description="Address the --metrics-port of escalate and notify listens on.")
    metrics_token: str | None = Field(
        default=None, description="When set, /metrics needs `Authorization: Bearer <token>`.")

    @property
    def migration_url(self) -> str:
        return self.migration_database_url or self.database_url

    # Request limits (casemgmt/limits.py): per process; 0 switches a rate limit off.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Larger request bodies get 413.")
    rate_limit_window_seconds: int = Field(default=60, ge=1)
    rate_limit_expensive_per_subject: int = Field(
        default=30, ge=0, description="Exports, reports, person search and audit search per user and window.")
    rate_limit_expensive_per_address: int = Field(
        default=120, ge=0, description="The same per client address (an office behind one NAT shares it).")
    rate_limit_writes_per_subject: int = Field(
        default=300, ge=0, description="POST, PATCH, PUT and DELETE per user and window.")
    rate_limit_writes_per_address: int = Field(default=1200, ge=0, description="The same per client address.")


@lru_cache
def get_settings() -> Settings:
    return Settings()
