"""Releases of the steering report (numbered, immutable; a trigger refuses UPDATE and DELETE on
PostgreSQL) and the Cell Key Method's record key of every person, drawn at random for the
persons already there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import casemgmt.database


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('steering_releases',
    sa.Column('number', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('area_jurisdiction_id', sa.Integer(), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('edition', sa.Integer(), nullable=False),
    sa.Column('revises', sa.Integer(), nullable=True),
    sa.Column('released_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('pattern', sa.JSON(), nullable=False),
    sa.Column('event_log', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['area_jurisdiction_id'], ['jurisdictions.id'],
                            name=op.f('fk_steering_releases_area_jurisdiction_id_jurisdictions')),
    sa.PrimaryKeyConstraint('number', name=op.f('pk_steering_releases')),
    sa.UniqueConstraint('area_jurisdiction_id', 'period', 'edition', name='uq_steering_releases_area_period_edition')
    )
    op.create_index('ix_steering_releases_area_number', 'steering_releases', ['area_jurisdiction_id', 'number'],
                    unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # random() is volatile: every existing row gets its own key.
        op.add_column('persons', sa.Column('record_key', sa.Float(), nullable=False,
                                           server_default=sa.text("random()")))
        op.execute(
            "CREATE TRIGGER steering_releases_append_only BEFORE UPDATE OR DELETE ON steering_releases "
            "FOR EACH ROW EXECUTE FUNCTION casemgmt_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER steering_releases_no_truncate BEFORE TRUNCATE ON steering_releases "
            "FOR EACH STATEMENT EXECUTE FUNCTION casemgmt_refuse_change()"
        )
    else:
        # SQLite adds a NOT NULL column only with a default, and cannot alter it afterwards
        # without rebuilding a table that others refer to.
        op.add_column('persons', sa.Column('record_key', sa.Float(), nullable=False, server_default=sa.text("0")))
        op.execute("UPDATE persons SET record_key = (abs(random()) % 9007199254740992) / 9007199254740992.0")


def downgrade() -> None:
    with op.batch_alter_table('persons', schema=None) as batch:
        batch.drop_column('record_key')
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS steering_releases_no_truncate ON steering_releases")
        op.execute("DROP TRIGGER IF EXISTS steering_releases_append_only ON steering_releases")
    op.drop_index('ix_steering_releases_area_number', table_name='steering_releases')
    op.drop_table('steering_releases')
