"""Sessions of the web interface (casemgmt/web): the hash of the cookie's id, the claims the
browser signed in with, the CSRF token and when the session ends.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import casemgmt.database


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('web_sessions',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('organisation_key', sa.String(length=200), nullable=False),
    sa.Column('roles', sa.JSON(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_web_sessions'))
    )
    with op.batch_alter_table('web_sessions', schema=None) as batch:
        batch.create_index(batch.f('ix_web_sessions_expires_at'), ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('web_sessions', schema=None) as batch:
        batch.drop_index(batch.f('ix_web_sessions_expires_at'))
    op.drop_table('web_sessions')
