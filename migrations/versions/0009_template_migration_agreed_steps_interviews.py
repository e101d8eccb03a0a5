"""Chains that change with the law: the key a step had before a migration to a new template
version (on its events), steps agreed in a Fallkonferenz (their definitions on the chain, a
marker on the step), and recorded Erstgespräche.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import casemgmt.database


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('chains', schema=None) as batch:
        batch.add_column(sa.Column('agreed_steps', sa.JSON(), nullable=True))
    with op.batch_alter_table('chain_steps', schema=None) as batch:
        batch.add_column(sa.Column('agreement_id', sa.Uuid(), nullable=True))
        batch.create_foreign_key(batch.f('fk_chain_steps_agreement_id_conference_agreements'),
                                 'conference_agreements', ['agreement_id'], ['id'])
    with op.batch_alter_table('chain_events', schema=None) as batch:
        batch.add_column(sa.Column('previous_step_key', sa.String(length=64), nullable=True))
    op.create_table('interviews',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('held_by_user', sa.String(length=200), nullable=False),
    sa.Column('held_on', sa.Date(), nullable=False),
    sa.Column('language', sa.String(length=50), nullable=False),
    sa.Column('interpreter_used', sa.Boolean(), nullable=False),
    sa.Column('guide_version', sa.Integer(), nullable=False),
    sa.Column('answered_fields', sa.JSON(), nullable=False),
    sa.Column('suggestion_ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('chain_id', sa.Uuid(), nullable=True),
    sa.Column('recorded_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['chain_id'], ['chains.id'], name=op.f('fk_interviews_chain_id_chains')),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'],
                            name=op.f('fk_interviews_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_interviews_person_id_persons')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_interviews'))
    )
    with op.batch_alter_table('interviews', schema=None) as batch:
        batch.create_index(batch.f('ix_interviews_person_id'), ['person_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('interviews', schema=None) as batch:
        batch.drop_index(batch.f('ix_interviews_person_id'))
    op.drop_table('interviews')
    with op.batch_alter_table('chain_events', schema=None) as batch:
        batch.drop_column('previous_step_key')
    with op.batch_alter_table('chain_steps', schema=None) as batch:
        batch.drop_constraint(batch.f('fk_chain_steps_agreement_id_conference_agreements'), type_='foreignkey')
        batch.drop_column('agreement_id')
    with op.batch_alter_table('chains', schema=None) as batch:
        batch.drop_column('agreed_steps')
