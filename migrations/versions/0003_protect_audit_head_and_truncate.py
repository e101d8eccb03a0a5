"""Close two ways around the append-only evidence tables on PostgreSQL: moving the audit chain's
head backwards (which would hide cut-off rows) and TRUNCATE (which skips row triggers).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 00:55:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVIDENCE_TABLES = ("chain_events", "audit_events", "consents", "consent_withdrawals", "audit_head")

HEAD_ONLY_FORWARD = """
CREATE OR REPLACE FUNCTION casemgmt_audit_head_forward() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit_head cannot be deleted' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.stream <> OLD.stream OR NEW.last_seq <= OLD.last_seq THEN
        RAISE EXCEPTION 'audit_head only moves forward (% -> %)', OLD.last_seq, NEW.last_seq
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(HEAD_ONLY_FORWARD)
    op.execute(
        "CREATE TRIGGER audit_head_forward BEFORE UPDATE OR DELETE ON audit_head "
        "FOR EACH ROW EXECUTE FUNCTION casemgmt_audit_head_forward()"
    )
    for table in EVIDENCE_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION casemgmt_refuse_change()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in EVIDENCE_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    op.execute("DROP TRIGGER IF EXISTS audit_head_forward ON audit_head")
    op.execute("DROP FUNCTION IF EXISTS casemgmt_audit_head_forward()")
