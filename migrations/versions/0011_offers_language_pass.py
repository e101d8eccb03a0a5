"""The Angebotsdatenbank (offers, their append-only history, good-practice entries, bookings of
chain steps onto offers) and the Sprachenpass (encrypted entries per person).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 05:46:37
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import casemgmt.database


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('offers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('provider_organisation_id', sa.Integer(), nullable=False),
    sa.Column('towns', sa.JSON(), nullable=False),
    sa.Column('address', sa.String(length=400), nullable=False),
    sa.Column('languages', sa.JSON(), nullable=False),
    sa.Column('target_residence_statuses', sa.JSON(), nullable=False),
    sa.Column('age_min', sa.Integer(), nullable=True),
    sa.Column('age_max', sa.Integer(), nullable=True),
    sa.Column('accessibility', sa.String(length=400), nullable=False),
    sa.Column('cost', sa.String(length=200), nullable=False),
    sa.Column('starts_on', sa.Date(), nullable=True),
    sa.Column('evening', sa.Boolean(), nullable=False),
    sa.Column('part_time', sa.Boolean(), nullable=False),
    sa.Column('schedule', sa.String(length=400), nullable=False),
    sa.Column('capacity', sa.Integer(), nullable=True),
    sa.Column('free_places', sa.Integer(), nullable=True),
    sa.Column('contacts', sa.JSON(), nullable=False),
    sa.Column('links', sa.JSON(), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=False),
    sa.Column('valid_until', sa.Date(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('age_min IS NULL OR age_max IS NULL OR age_min <= age_max', name=op.f('ck_offers_age_range')),
    sa.CheckConstraint('capacity IS NULL OR capacity >= 0', name=op.f('ck_offers_capacity')),
    sa.CheckConstraint('free_places IS NULL OR (free_places >= 0 AND (capacity IS NULL OR free_places <= capacity))', name=op.f('ck_offers_free_places')),
    sa.ForeignKeyConstraint(['provider_organisation_id'], ['organisations.id'], name=op.f('fk_offers_provider_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offers'))
    )
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.create_index('ix_offers_kind_valid', ['kind', 'valid_from'], unique=False)
        batch_op.create_index(batch_op.f('ix_offers_provider_organisation_id'), ['provider_organisation_id'], unique=False)

    op.create_table('good_practices',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('offer_id', sa.Uuid(), nullable=True),
    sa.Column('working_group_id', sa.Integer(), nullable=True),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['offer_id'], ['offers.id'], name=op.f('fk_good_practices_offer_id_offers')),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_good_practices_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['working_group_id'], ['working_groups.id'], name=op.f('fk_good_practices_working_group_id_working_groups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_good_practices'))
    )
    with op.batch_alter_table('good_practices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_good_practices_offer_id'), ['offer_id'], unique=False)

    op.create_table('language_pass_entries',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('recorded_by_user', sa.String(length=200), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('recorded_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_language_pass_entries_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_language_pass_entries_person_id_persons')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_language_pass_entries'))
    )
    with op.batch_alter_table('language_pass_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_language_pass_entries_person_id'), ['person_id'], unique=False)

    op.create_table('offer_versions',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('offer_id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('change', sa.String(length=32), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('changed_by_user', sa.String(length=200), nullable=False),
    sa.Column('changed_by_organisation_id', sa.Integer(), nullable=False),
    sa.Column('changed_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['changed_by_organisation_id'], ['organisations.id'], name=op.f('fk_offer_versions_changed_by_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['offer_id'], ['offers.id'], name=op.f('fk_offer_versions_offer_id_offers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offer_versions')),
    sa.UniqueConstraint('offer_id', 'version', name='uq_offer_versions_offer_id_version')
    )
    op.create_table('offer_bookings',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('offer_id', sa.Uuid(), nullable=False),
    sa.Column('chain_id', sa.Uuid(), nullable=False),
    sa.Column('step_key', sa.String(length=64), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('referred_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('enrolled_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('updated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('referred', 'enrolled')", name=op.f('ck_offer_bookings_state')),
    sa.ForeignKeyConstraint(['chain_id'], ['chains.id'], name=op.f('fk_offer_bookings_chain_id_chains')),
    sa.ForeignKeyConstraint(['offer_id'], ['offers.id'], name=op.f('fk_offer_bookings_offer_id_offers')),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_offer_bookings_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_offer_bookings_person_id_persons')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offer_bookings')),
    sa.UniqueConstraint('chain_id', 'step_key', 'offer_id', name='uq_offer_bookings_chain_step_offer')
    )
    with op.batch_alter_table('offer_bookings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_offer_bookings_chain_id'), ['chain_id'], unique=False)
        batch_op.create_index('ix_offer_bookings_offer_state', ['offer_id', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_offer_bookings_person_id'), ['person_id'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # The history of an offer is never rewritten; casemgmt_refuse_change() is from 0001.
        op.execute("CREATE TRIGGER offer_versions_append_only BEFORE UPDATE OR DELETE ON offer_versions "
                   "FOR EACH ROW EXECUTE FUNCTION casemgmt_refuse_change()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS offer_versions_append_only ON offer_versions")
    with op.batch_alter_table('offer_bookings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_offer_bookings_person_id'))
        batch_op.drop_index('ix_offer_bookings_offer_state')
        batch_op.drop_index(batch_op.f('ix_offer_bookings_chain_id'))

    op.drop_table('offer_bookings')
    op.drop_table('offer_versions')
    with op.batch_alter_table('language_pass_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_language_pass_entries_person_id'))

    op.drop_table('language_pass_entries')
    with op.batch_alter_table('good_practices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_good_practices_offer_id'))

    op.drop_table('good_practices')
    with op.batch_alter_table('offers', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_offers_provider_organisation_id'))
        batch_op.drop_index('ix_offers_kind_valid')

    op.drop_table('offers')
