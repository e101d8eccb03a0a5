"""The data subject's rights: the request register, restrictions, legal holds and erasure
tombstones (append-only); the processing state of each person; key ids on wrapped person keys and
audit rows, and the audit keys of earlier master keys; agreement texts may be erased; a contact
role for the data protection officer.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 03:24:42
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import casemgmt.database

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_keys',
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=False),
    sa.Column('wrapped_under', sa.String(length=32), nullable=False),
    sa.Column('covers_unlabelled', sa.Boolean(), nullable=False),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_audit_keys'))
    )
    op.create_table('data_subject_requests',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('received_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('identity_checked_by', sa.String(length=200), nullable=False),
    sa.Column('identity_check_method', sa.String(length=200), nullable=False),
    sa.Column('original_due_date', sa.Date(), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('extension_reason', sa.Text(), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('refusal_reason', sa.Text(), nullable=True),
    sa.Column('answered_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('registered_by_user', sa.String(length=200), nullable=False),
    sa.Column('registered_by_organisation_id', sa.Integer(), nullable=False),
    sa.Column('reminded_for_due', sa.Date(), nullable=True),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("kind IN ('access', 'rectification', 'erasure', 'restriction', 'portability', 'objection')", name=op.f('ck_data_subject_requests_kind')),
    sa.CheckConstraint("state <> 'refused' OR refusal_reason IS NOT NULL", name=op.f('ck_data_subject_requests_refusal_reason')),
    sa.CheckConstraint("state IN ('received', 'in_progress', 'extended', 'answered', 'refused')", name=op.f('ck_data_subject_requests_state')),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_data_subject_requests_person_id_persons')),
    sa.ForeignKeyConstraint(['registered_by_organisation_id'], ['organisations.id'], name=op.f('fk_data_subject_requests_registered_by_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_subject_requests'))
    )
    op.create_index(op.f('ix_data_subject_requests_person_id'), 'data_subject_requests', ['person_id'], unique=False)
    op.create_index('ix_data_subject_requests_state_due', 'data_subject_requests', ['state', 'due_date'], unique=False)
    op.create_table('erasure_tombstones',
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('erased_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('cause', sa.String(length=16), nullable=False),
    sa.Column('request_id', sa.Uuid(), nullable=True),
    sa.CheckConstraint("cause IN ('request', 'retention')", name=op.f('ck_erasure_tombstones_cause')),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_erasure_tombstones_person_id_persons')),
    sa.PrimaryKeyConstraint('person_id', name=op.f('pk_erasure_tombstones'))
    )
    op.create_table('legal_holds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('set_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('set_by_user', sa.String(length=200), nullable=False),
    sa.Column('set_by_organisation_id', sa.Integer(), nullable=False),
    sa.Column('lifted_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lifted_by_user', sa.String(length=200), nullable=True),
    sa.Column('lift_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_legal_holds_person_id_persons')),
    sa.ForeignKeyConstraint(['set_by_organisation_id'], ['organisations.id'], name=op.f('fk_legal_holds_set_by_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_legal_holds'))
    )
    op.create_index(op.f('ix_legal_holds_person_id'), 'legal_holds', ['person_id'], unique=False)
    op.create_table('person_restrictions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('request_id', sa.Uuid(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('set_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('set_by_user', sa.String(length=200), nullable=False),
    sa.Column('set_by_organisation_id', sa.Integer(), nullable=False),
    sa.Column('lifted_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('lifted_by_user', sa.String(length=200), nullable=True),
    sa.Column('lift_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_person_restrictions_person_id_persons')),
    sa.ForeignKeyConstraint(['request_id'], ['data_subject_requests.id'], name=op.f('fk_person_restrictions_request_id_data_subject_requests')),
    sa.ForeignKeyConstraint(['set_by_organisation_id'], ['organisations.id'], name=op.f('fk_person_restrictions_set_by_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_person_restrictions'))
    )
    op.create_index(op.f('ix_person_restrictions_person_id'), 'person_restrictions', ['person_id'], unique=False)
    with op.batch_alter_table('audit_events', schema=None) as batch:
        batch.add_column(sa.Column('key_id', sa.String(length=32), nullable=True))
    with op.batch_alter_table('conference_agreements', schema=None) as batch:
        batch.alter_column('text_ciphertext', existing_type=sa.LargeBinary(), nullable=True)
    with op.batch_alter_table('person_keys', schema=None) as batch:
        batch.add_column(sa.Column('master_key_id', sa.String(length=32), nullable=True))
        batch.create_index(batch.f('ix_person_keys_master_key_id'), ['master_key_id'], unique=False)
    with op.batch_alter_table('persons', schema=None) as batch:
        batch.add_column(sa.Column('processing', sa.String(length=16), server_default=sa.text("'active'"),
                                   nullable=False))
        batch.create_check_constraint(batch.f('ck_persons_processing'),
                                      "processing IN ('active', 'restricted', 'erased')")
    with op.batch_alter_table('organisation_contacts', schema=None) as batch:
        batch.drop_constraint(batch.f('ck_organisation_contacts_role'), type_='check')
        batch.create_check_constraint(batch.f('ck_organisation_contacts_role'), "role IN ('lead', 'inbox', 'dpo')")
    if op.get_bind().dialect.name == "postgresql":
        # A tombstone is evidence that a key was destroyed: nobody removes it, not even the owner.
        op.execute("CREATE TRIGGER erasure_tombstones_append_only BEFORE UPDATE OR DELETE ON erasure_tombstones "
                   "FOR EACH ROW EXECUTE FUNCTION casemgmt_refuse_change()")
        op.execute("CREATE TRIGGER erasure_tombstones_no_truncate BEFORE TRUNCATE ON erasure_tombstones "
                   "FOR EACH STATEMENT EXECUTE FUNCTION casemgmt_refuse_change()")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS erasure_tombstones_no_truncate ON erasure_tombstones")
        op.execute("DROP TRIGGER IF EXISTS erasure_tombstones_append_only ON erasure_tombstones")
    with op.batch_alter_table('organisation_contacts', schema=None) as batch:
        batch.drop_constraint(batch.f('ck_organisation_contacts_role'), type_='check')
        batch.create_check_constraint(batch.f('ck_organisation_contacts_role'), "role IN ('lead', 'inbox')")
    with op.batch_alter_table('persons', schema=None) as batch:
        batch.drop_constraint(batch.f('ck_persons_processing'), type_='check')
        batch.drop_column('processing')
    with op.batch_alter_table('person_keys', schema=None) as batch:
        batch.drop_index(batch.f('ix_person_keys_master_key_id'))
        batch.drop_column('master_key_id')
    with op.batch_alter_table('conference_agreements', schema=None) as batch:
        batch.alter_column('text_ciphertext', existing_type=sa.LargeBinary(), nullable=False)
    with op.batch_alter_table('audit_events', schema=None) as batch:
        batch.drop_column('key_id')
    op.drop_index(op.f('ix_person_restrictions_person_id'), table_name='person_restrictions')
    op.drop_table('person_restrictions')
    op.drop_index(op.f('ix_legal_holds_person_id'), table_name='legal_holds')
    op.drop_table('legal_holds')
    op.drop_table('erasure_tombstones')
    op.drop_index('ix_data_subject_requests_state_due', table_name='data_subject_requests')
    op.drop_index(op.f('ix_data_subject_requests_person_id'), table_name='data_subject_requests')
    op.drop_table('data_subject_requests')
    op.drop_table('audit_keys')
