"""Initial schema: jurisdictions, organisations, persons, chain templates, chains, steps, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-21 23:55:03.558527
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import casemgmt.database

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION casemgmt_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table('chain_template_versions',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('registered_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', 'version', name=op.f('pk_chain_template_versions'))
    )
    op.create_table('jurisdictions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('level', sa.String(length=20), nullable=False),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('path', sa.String(length=200), nullable=False),
    sa.CheckConstraint("level IN ('land', 'kreis', 'gemeinde', 'kreisfreie_stadt')", name=op.f('ck_jurisdictions_level')),
    sa.ForeignKeyConstraint(['parent_id'], ['jurisdictions.id'], name=op.f('fk_jurisdictions_parent_id_jurisdictions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jurisdictions')),
    sa.UniqueConstraint('key', name=op.f('uq_jurisdictions_key'))
    )
    op.create_index(op.f('ix_jurisdictions_parent_id'), 'jurisdictions', ['parent_id'], unique=False)
    op.create_index(op.f('ix_jurisdictions_path'), 'jurisdictions', ['path'], unique=False)
    op.create_table('organisations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('jurisdiction_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['jurisdiction_id'], ['jurisdictions.id'], name=op.f('fk_organisations_jurisdiction_id_jurisdictions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organisations')),
    sa.UniqueConstraint('key', name=op.f('uq_organisations_key'))
    )
    op.create_index('ix_organisations_kind_jurisdiction', 'organisations', ['kind', 'jurisdiction_id'], unique=False)
    op.create_table('persons',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('residence_status', sa.String(length=32), nullable=False),
    sa.Column('bleibeperspektive', sa.String(length=32), nullable=False),
    sa.Column('benefit_regime', sa.String(length=16), nullable=False),
    sa.Column('lead_jurisdiction_id', sa.Integer(), nullable=False),
    sa.Column('created_by_organisation_id', sa.Integer(), nullable=False),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("benefit_regime IN ('asylblg', 'sgb_ii', 'sgb_iii', 'sgb_xii', 'none')", name=op.f('ck_persons_benefit_regime')),
    sa.CheckConstraint("bleibeperspektive IN ('good', 'unclear', 'safe_country_of_origin', 'unknown')", name=op.f('ck_persons_bleibeperspektive')),
    sa.CheckConstraint("residence_status IN ('asylum_pending', 'protection_granted', 'tolerated', 'eu_free_movement', 'third_country_permit', 'spaetaussiedler', 'naturalised')", name=op.f('ck_persons_residence_status')),
    sa.ForeignKeyConstraint(['created_by_organisation_id'], ['organisations.id'], name=op.f('fk_persons_created_by_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['lead_jurisdiction_id'], ['jurisdictions.id'], name=op.f('fk_persons_lead_jurisdiction_id_jurisdictions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_persons'))
    )
    op.create_index(op.f('ix_persons_lead_jurisdiction_id'), 'persons', ['lead_jurisdiction_id'], unique=False)
    op.create_table('chains',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('template_key', sa.String(length=64), nullable=False),
    sa.Column('template_version', sa.Integer(), nullable=False),
    sa.Column('lead_jurisdiction_id', sa.Integer(), nullable=False),
    sa.Column('case_management_organisation_id', sa.Integer(), nullable=False),
    sa.Column('lifecycle', sa.String(length=16), nullable=False),
    sa.Column('closed_reason', sa.String(length=32), nullable=True),
    sa.Column('started_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("closed_reason IS NULL OR closed_reason IN ('moved_away', 'ended_by_person', 'naturalised', 'deceased', 'opened_in_error', 'other')", name=op.f('ck_chains_closed_reason')),
    sa.CheckConstraint("lifecycle IN ('open', 'completed', 'closed')", name=op.f('ck_chains_lifecycle')),
    sa.ForeignKeyConstraint(['case_management_organisation_id'], ['organisations.id'], name=op.f('fk_chains_case_management_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['lead_jurisdiction_id'], ['jurisdictions.id'], name=op.f('fk_chains_lead_jurisdiction_id_jurisdictions')),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_chains_person_id_persons')),
    sa.ForeignKeyConstraint(['template_key', 'template_version'], ['chain_template_versions.key', 'chain_template_versions.version'], name='fk_chains_template_chain_template_versions'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chains'))
    )
    op.create_index(op.f('ix_chains_case_management_organisation_id'), 'chains', ['case_management_organisation_id'], unique=False)
    op.create_index(op.f('ix_chains_lead_jurisdiction_id'), 'chains', ['lead_jurisdiction_id'], unique=False)
    op.create_index(op.f('ix_chains_person_id'), 'chains', ['person_id'], unique=False)
    op.create_index('ix_chains_started_at_id', 'chains', ['started_at', 'id'], unique=False)
    op.create_index(op.f('ix_chains_template_key'), 'chains', ['template_key'], unique=False)
    op.create_index('uq_chains_open_per_person_template', 'chains', ['person_id', 'template_key'], unique=True, postgresql_where=sa.text("lifecycle = 'open'"), sqlite_where=sa.text("lifecycle = 'open'"))
    op.create_table('chain_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('chain_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('step_key', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=32), nullable=True),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('actor_user', sa.String(length=200), nullable=False),
    sa.Column('actor_organisation_id', sa.Integer(), nullable=True),
    sa.Column('occurred_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_organisation_id'], ['organisations.id'], name=op.f('fk_chain_events_actor_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['chain_id'], ['chains.id'], name=op.f('fk_chain_events_chain_id_chains')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chain_events'))
    )
    op.create_index('ix_chain_events_chain_id_id', 'chain_events', ['chain_id', 'id'], unique=False)
    op.create_table('chain_steps',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('chain_id', sa.Uuid(), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('owner_kind', sa.String(length=64), nullable=False),
    sa.Column('optional', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('started_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('due_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('due_for', sa.String(length=16), nullable=True),
    sa.Column('updated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("due_for IS NULL OR due_for IN ('start', 'completion')", name=op.f('ck_chain_steps_due_for')),
    sa.CheckConstraint("state IN ('planned', 'ready', 'in_progress', 'completed', 'blocked', 'skipped', 'cancelled')", name=op.f('ck_chain_steps_state')),
    sa.ForeignKeyConstraint(['chain_id'], ['chains.id'], name=op.f('fk_chain_steps_chain_id_chains')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chain_steps')),
    sa.UniqueConstraint('chain_id', 'key', name='uq_chain_steps_chain_id_key')
    )
    op.create_index('ix_chain_steps_owner_kind_state', 'chain_steps', ['owner_kind', 'state'], unique=False)
    op.create_index('ix_chain_steps_state_due_at', 'chain_steps', ['state', 'due_at'], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        # The chain history is evidence: rows may be added, never changed or removed.
        op.execute(APPEND_ONLY_FUNCTION)
        op.execute(
            "CREATE TRIGGER chain_events_append_only BEFORE UPDATE OR DELETE ON chain_events "
            "FOR EACH ROW EXECUTE FUNCTION casemgmt_refuse_change()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS chain_events_append_only ON chain_events")
        op.execute("DROP FUNCTION IF EXISTS casemgmt_refuse_change()")
    op.drop_index('ix_chain_steps_state_due_at', table_name='chain_steps')
    op.drop_index('ix_chain_steps_owner_kind_state', table_name='chain_steps')
    op.drop_table('chain_steps')
    op.drop_index('ix_chain_events_chain_id_id', table_name='chain_events')
    op.drop_table('chain_events')
    op.drop_index('uq_chains_open_per_person_template', table_name='chains', postgresql_where=sa.text("lifecycle = 'open'"), sqlite_where=sa.text("lifecycle = 'open'"))
    op.drop_index(op.f('ix_chains_template_key'), table_name='chains')
    op.drop_index('ix_chains_started_at_id', table_name='chains')
    op.drop_index(op.f('ix_chains_person_id'), table_name='chains')
    op.drop_index(op.f('ix_chains_lead_jurisdiction_id'), table_name='chains')
    op.drop_index(op.f('ix_chains_case_management_organisation_id'), table_name='chains')
    op.drop_table('chains')
    op.drop_index(op.f('ix_persons_lead_jurisdiction_id'), table_name='persons')
    op.drop_table('persons')
    op.drop_index('ix_organisations_kind_jurisdiction', table_name='organisations')
    op.drop_table('organisations')
    op.drop_index(op.f('ix_jurisdictions_path'), table_name='jurisdictions')
    op.drop_index(op.f('ix_jurisdictions_parent_id'), table_name='jurisdictions')
    op.drop_table('jurisdictions')
    op.drop_table('chain_template_versions')
