"""Database roles on PostgreSQL: the service runs as a role with only the rights it needs.

The schema belongs to an *owner* role that runs ``casemgmt migrate``. The *service* role (the one
in ``CASEMGMT_DATABASE_URL``) owns nothing and has no DDL rights, so it cannot switch the
append-only triggers off, truncate, alter or drop a table. On the audit trail it may only add
rows and move the stream heads forward (a trigger refuses backward moves); on the append-only
evidence tables it may only add and read rows; on the other tables it reads and writes rows.

``grant_service_role`` (``casemgmt db grant``) derives the grants from the live schema, so tables
added by later migrations are covered when it runs again after ``casemgmt migrate``: every table
with a trigger calling ``casemgmt_refuse_change()`` on UPDATE or DELETE counts as append-only, in
addition to the explicit list below. ``privilege_problems`` names what a role may do beyond that;
``casemgmt serve`` refuses to start when its own role has any such problem.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

# Stricter grants than read/write, by table. Append-only tables found through their triggers
# join APPEND_ONLY_TABLES at grant time.
AUDIT_GRANTS: dict[str, tuple[str, ...]] = {
    "audit_events": ("SELECT", "INSERT"),
    "audit_head": ("SELECT", "UPDATE"),  # only forward: trigger audit_head_forward
}
APPEND_ONLY_TABLES = ("chain_events", "handover_events", "proposal_events", "consents",
                      "consent_withdrawals", "steering_releases", "offer_versions")
# The service checks the schema version, never sets it; the audit keys of earlier master keys are
# written by `casemgmt keys rotate` as the schema owner and only read by the service.
READ_ONLY_TABLES = ("alembic_version", "audit_keys")
APPEND_ONLY = ("SELECT", "INSERT")
READ_WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")
READ_ONLY = ("SELECT",)
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
REFUSE_FUNCTION = "casemgmt_refuse_change"
ALLOW_SETTING = "CASEMGMT_ALLOW_PRIVILEGED_DB_ROLE"


class DatabaseRoleError(RuntimeError):
    """A role cannot be granted, or the service's role may do more than it needs."""


@dataclass
class GrantPlan:
    """What ``grant_service_role`` gives the role, table by table."""

    role: str
    schema: str
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sequences: list[str] = field(default_factory=list)

    def describe(self) -> str:
        groups: dict[tuple[str, ...], list[str]] = {}
        for table, privileges in sorted(self.tables.items()):
            groups.setdefault(privileges, []).append(table)
        lines = [f"granted role {self.role} on schema {self.schema} (everything else revoked):"]
        for privileges, tables in sorted(groups.items(), key=lambda g: -len(g[1])):
            names = ", ".join(tables) if len(tables) <= 12 else f"{len(tables)} tables"
            lines.append(f"  {', '.join(privileges)}: {names}")
        lines.append(f"  USAGE: {len(self.sequences)} sequences")
        return "\n".join(lines)


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def _schema_tables(conn: Connection) -> list[tuple[str, str, bool]]:
    """(name, relkind, append-only by trigger) of every table and view in the current schema."""
    return [tuple(r) for r in conn.execute(text(
        "SELECT c.relname, c.relkind, EXISTS ("
        "  SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
        "  WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND p.proname = :fn"
        "  AND (t.tgtype & (8 | 16)) <> 0)"  # fires on DELETE (8) or UPDATE (16)
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        " ORDER BY c.relname"), {"fn": REFUSE_FUNCTION})]


def plan_grants(conn: Connection, role: str) -> GrantPlan:
    """The privileges each table of the live schema gets for the service role."""
    schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    plan = GrantPlan(role, schema)
    for name, kind, refuses_change in _schema_tables(conn):
        if name in AUDIT_GRANTS:
            plan.tables[name] = AUDIT_GRANTS[name]
        elif name in READ_ONLY_TABLES or kind in ("v", "m"):
            plan.tables[name] = READ_ONLY
        elif name in APPEND_ONLY_TABLES or refuses_change:
            plan.tables[name] = APPEND_ONLY
        else:
            plan.tables[name] = READ_WRITE
    plan.sequences = list(conn.execute(text(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind = 'S' ORDER BY c.relname")).scalars())
    return plan


def grant_service_role(engine: Engine, role: str) -> GrantPlan:
    """Give ``role`` exactly the service's privileges on the current schema and revoke anything
    more, in one transaction (all or nothing). Run as the owner of the schema, after every
    ``casemgmt migrate``; running it again changes nothing."""
    if engine.dialect.name != "postgresql":
        raise DatabaseRoleError("database roles exist only on PostgreSQL; the SQLite demo has none")
    with engine.begin() as conn:
        me = conn.execute(text("SELECT current_user")).scalar_one()
        if role == me:
            raise DatabaseRoleError(
                f"the service role must not be the role that runs migrations ({me}); "
                "create a separate login role for the service (see README)")
        attributes = conn.execute(text("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = :r"),
                                  {"r": role}).one_or_none()
        if attributes is None:
            raise DatabaseRoleError(f"role {role} does not exist: create it first (see README)")
        foreign = conn.execute(text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')"
            " AND NOT pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY c.relname")).scalars().all()
        if foreign:
            # PostgreSQL only warns when a non-owner grants or revokes: nothing would change.
            raise DatabaseRoleError(
                f"{me} does not own {', '.join(foreign[:3])}{' and more' if len(foreign) > 3 else ''}: "
                "run `casemgmt db grant` as the schema owner (CASEMGMT_MIGRATION_DATABASE_URL)")
        plan = plan_grants(conn, role)
        q = lambda name: _quote(conn, name)  # noqa: E731
        r, s = q(role), q(plan.schema)
        statements = [
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}, PUBLIC",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {r}, PUBLIC",
            f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {s} FROM {r}",
            f"REVOKE ALL ON SCHEMA {s} FROM {r}",
            f"REVOKE CREATE ON SCHEMA {s} FROM PUBLIC",
            f"GRANT USAGE ON SCHEMA {s} TO {r}",
            f"GRANT CONNECT ON DATABASE {q(conn.execute(text('SELECT current_database()')).scalar_one())} TO {r}",
        ]
        statements += [f"GRANT {', '.join(p)} ON TABLE {s}.{q(t)} TO {r}" for t, p in plan.tables.items()]
        if plan.sequences:
            statements.append(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO {r}")
        for statement in statements:
            conn.execute(text(statement))
        problems = privilege_problems(conn, role)
        if problems:
            # Ownership, superuser or membership in a mightier role: grants cannot take these
            # away. Roll back rather than leave a half-restricted role behind.
            raise DatabaseRoleError(f"grants alone cannot restrict role {role}: {'; '.join(problems)}. "
                                    "Nothing was changed")
    return plan


def privilege_problems(conn: Connection, role: str | None = None) -> list[str]:
    """What ``role`` (default: the connected role) may do beyond the service's needs: be a
    superuser or create roles, own (or be a member of the owner of) the database, the schema or
    any object in it, create objects in the schema, or change rows it may only append."""
    role = role or conn.execute(text("SELECT current_user")).scalar_one()
    problems: list[str] = []
    attributes = conn.execute(text("SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = :r"),
                              {"r": role}).one()
    if attributes.rolsuper:
        return ["it is a superuser"]
    if attributes.rolcreaterole:
        problems.append("it has CREATEROLE (it could grant itself the owner's role)")
    owned = conn.execute(text(
        "SELECT 'database ' || d.datname, pg_get_userbyid(d.datdba) FROM pg_database d"
        " WHERE d.datname = current_database() AND pg_has_role(:r, d.datdba, 'MEMBER')"
        " UNION ALL SELECT 'schema ' || n.nspname, pg_get_userbyid(n.nspowner) FROM pg_namespace n"
        " WHERE n.nspname = current_schema() AND pg_has_role(:r, n.nspowner, 'MEMBER')"
        " UNION ALL (SELECT CASE c.relkind WHEN 'S' THEN 'sequence ' WHEN 'v' THEN 'view ' ELSE 'table ' END"
        "  || c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
        "  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema()"
        "  AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND pg_has_role(:r, c.relowner, 'MEMBER')"
        "  ORDER BY c.relname)"
        " UNION ALL (SELECT 'function ' || p.proname, pg_get_userbyid(p.proowner) FROM pg_proc p"
        "  JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = current_schema()"
        "  AND pg_has_role(:r, p.proowner, 'MEMBER') ORDER BY p.proname)"), {"r": role}).all()
    if owned:
        names = ", ".join(name for name, _ in owned[:3]) + (f" and {len(owned) - 3} more" if len(owned) > 3 else "")
        owners = sorted({owner for _, owner in owned})
        via = "" if owners == [role] else f" (as member of {', '.join(owners)})"
        problems.append(f"it owns {names}{via}")
        return problems  # an owner may do everything below, and more
    if conn.execute(text("SELECT has_schema_privilege(:r, current_schema(), 'CREATE')"), {"r": role}).scalar():
        problems.append("it may create objects in the schema")
    plan = plan_grants(conn, role)
    held: dict[str, set[str]] = {}
    for table, privilege in conn.execute(text(
            "SELECT c.relname, p.privilege FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " CROSS JOIN unnest(CAST(:privileges AS text[])) AS p(privilege)"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
            " AND has_table_privilege(:r, c.oid, p.privilege)"),
            {"r": role, "privileges": list(TABLE_PRIVILEGES)}):
        held.setdefault(table, set()).add(privilege)
    excess = []
    for table, allowed in plan.tables.items():
        extra = [p for p in TABLE_PRIVILEGES if p in held.get(table, ()) and p not in allowed]
        if extra:
            excess.append(f"{'/'.join(extra)} {table}")
    if excess:
        more = f" and {len(excess) - 4} more tables" if len(excess) > 4 else ""
        problems.append("it may " + ", ".join(excess[:4]) + more)
    return problems


def unreadable_tables(conn: Connection) -> list[str]:
    """Tables of the schema the connected role may not read: grants missing for new tables."""
    return list(conn.execute(text(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
        " AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY c.relname")).scalars())


def ensure_service_role(engine: Engine, allow_privileged: bool = False) -> None:
    """The start-up check of the service on PostgreSQL: its role must not be able to rewrite or
    shorten the audit trail (no superuser, no ownership, no UPDATE/DELETE/TRUNCATE where rows are
    only appended), and must be able to read every table (grants given after the last
    migration). ``allow_privileged`` turns the first part into a warning, for development."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        role = conn.execute(text("SELECT current_user")).scalar_one()
        problems = privilege_problems(conn, role)
        missing = unreadable_tables(conn)
    where = engine.url.render_as_string(hide_password=True)
    if problems:
        message = (f"the database role {role} ({where}) could change or shorten the audit trail: "
                   f"{'; '.join(problems)}. Run the service as a role with only the grants of "
                   f"`casemgmt db grant --service-role NAME` (see README), or set {ALLOW_SETTING}=1 "
                   "for development")
        if not allow_privileged:
            raise DatabaseRoleError(message)
        log.warning("%s (allowed by %s)", message, ALLOW_SETTING)
    if missing:
        raise DatabaseRoleError(
            f"the database role {role} may not read {', '.join(missing)}: run `casemgmt db grant "
            f"--service-role {role}` as the schema owner after `casemgmt migrate`")


DEMO_SERVICE_ROLE = "casemgmt_demo_app"


def demo_service_url(owner_url: str, role: str = DEMO_SERVICE_ROLE) -> str | None:
    """For the demo on PostgreSQL: create (or refresh) the restricted login role ``role``
    (``casemgmt_demo_app``) with a fresh random password, grant it exactly the service's rights and
    return the URL to serve with, so the demo runs as production does. None when the seeding role
    may not create roles (the demo then serves as that role, and says so)."""
    import secrets

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    from casemgmt.database import make_engine

    password = secrets.token_urlsafe(24)
    engine = make_engine(owner_url)
    try:
        with engine.begin() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
            verb = "ALTER" if exists else "CREATE"
            # A role name and a password cannot be bind parameters: the name is ours, the
            # password is URL-safe base64.
            conn.execute(text(f'{verb} ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                              f"PASSWORD '{password}'"))
        grant_service_role(engine, role)
    except (DBAPIError, DatabaseRoleError) as exc:
        log.warning("the demo could not set up its restricted role %s: %s", role,
                    str(exc).splitlines()[0])
        return None
    finally:
        engine.dispose()
    return make_url(owner_url).set(username=role, password=password).render_as_string(
        hide_password=False)

