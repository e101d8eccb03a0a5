"""Involvement as a fact: the organisation assigned to each step (set when the step becomes
ready), the organisations each chain event concerns (after it, and whose part it ended), who wrote each residence attribute, and when
a consent form was signed. Existing steps that are ready or later are assigned as the service
would have assigned them: the case management for its own steps, otherwise the nearest
organisation of the owner kind serving the chain's lead jurisdiction.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 03:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import casemgmt.database


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The nearest organisation of the step's kind whose jurisdiction contains the chain's lead
# jurisdiction (a town office before the Kreis office; the lowest id among equals), as
# casemgmt.jurisdictions.service.serving_organisations orders them.
BACKFILL_ASSIGNMENTS = """
UPDATE chain_steps SET assigned_organisation_id = (
    SELECT CASE WHEN chain_steps.owner_kind = 'case_management'
                THEN c.case_management_organisation_id
                ELSE (SELECT o.id FROM organisations o
                      JOIN jurisdictions oj ON oj.id = o.jurisdiction_id
                      WHERE o.kind = chain_steps.owner_kind
                        AND substr(lj.path, 1, length(oj.path)) = oj.path
                      ORDER BY length(oj.path) DESC, o.id LIMIT 1) END
    FROM chains c JOIN jurisdictions lj ON lj.id = c.lead_jurisdiction_id
    WHERE c.id = chain_steps.chain_id)
WHERE state <> 'planned'
"""


def upgrade() -> None:
    with op.batch_alter_table('chain_steps', schema=None) as batch:
        batch.add_column(sa.Column('assigned_organisation_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(batch.f('fk_chain_steps_assigned_organisation_id_organisations'),
                                 'organisations', ['assigned_organisation_id'], ['id'])
        batch.create_index('ix_chain_steps_assigned_state', ['assigned_organisation_id', 'state'],
                           unique=False, postgresql_include=['chain_id'])
    with op.batch_alter_table('chain_events', schema=None) as batch:
        batch.add_column(sa.Column('organisation_id', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('previous_organisation_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(batch.f('fk_chain_events_organisation_id_organisations'),
                                 'organisations', ['organisation_id'], ['id'])
        batch.create_foreign_key(batch.f('fk_chain_events_previous_organisation_id_organisations'),
                                 'organisations', ['previous_organisation_id'], ['id'])
    with op.batch_alter_table('persons', schema=None) as batch:
        batch.add_column(sa.Column('plain_field_writers', sa.JSON(), server_default=sa.text("'{}'"),
                                   nullable=False))
    with op.batch_alter_table('consents', schema=None) as batch:
        batch.add_column(sa.Column('signed_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True))
    op.execute(BACKFILL_ASSIGNMENTS)


def downgrade() -> None:
    with op.batch_alter_table('consents', schema=None) as batch:
        batch.drop_column('signed_at')
    with op.batch_alter_table('persons', schema=None) as batch:
        batch.drop_column('plain_field_writers')
    with op.batch_alter_table('chain_events', schema=None) as batch:
        batch.drop_constraint(batch.f('fk_chain_events_previous_organisation_id_organisations'), type_='foreignkey')
        batch.drop_constraint(batch.f('fk_chain_events_organisation_id_organisations'), type_='foreignkey')
        batch.drop_column('previous_organisation_id')
        batch.drop_column('organisation_id')
    with op.batch_alter_table('chain_steps', schema=None) as batch:
        batch.drop_index('ix_chain_steps_assigned_state')
        batch.drop_constraint(batch.f('fk_chain_steps_assigned_organisation_id_organisations'), type_='foreignkey')
        batch.drop_column('assigned_organisation_id')
