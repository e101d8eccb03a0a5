"""Personal data: encrypted fields, per-person keys, consents, agreements, hash-chained audit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 00:20:45.901218
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import casemgmt.database

AUDIT_STREAMS = 16

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('stream', sa.SmallInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('recorded_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('agent_user', sa.String(length=200), nullable=False),
    sa.Column('agent_organisation_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('subtype', sa.String(length=64), nullable=False),
    sa.Column('entity_type', sa.String(length=32), nullable=False),
    sa.Column('entity_id', sa.String(length=64), nullable=True),
    sa.Column('person_id', sa.String(length=36), nullable=True),
    sa.Column('fields', sa.Text(), nullable=False),
    sa.Column('legal_bases', sa.Text(), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events')),
    sa.UniqueConstraint('stream', 'seq', name='uq_audit_events_stream_seq')
    )
    op.create_index('ix_audit_events_agent_organisation_id', 'audit_events', ['agent_organisation_id', 'id'], unique=False)
    op.create_index('ix_audit_events_agent_user', 'audit_events', ['agent_user', 'id'], unique=False)
    op.create_index('ix_audit_events_person_id', 'audit_events', ['person_id', 'id'], unique=False)
    op.create_index('ix_audit_events_recorded_at', 'audit_events', ['recorded_at'], unique=False)
    op.create_table('audit_head',
    sa.Column('stream', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('stream', name=op.f('pk_audit_head'))
    )
    op.create_table('data_exchange_agreements',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('organisation_ids', sa.JSON(), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('valid_from', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('valid_until', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('document_reference', sa.String(length=200), nullable=False),
    sa.Column('recorded_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_user', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_exchange_agreements'))
    )
    op.create_table('consents',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('recipients', sa.JSON(), nullable=False),
    sa.Column('categories', sa.JSON(), nullable=False),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('explicit_special', sa.Boolean(), nullable=False),
    sa.Column('consequences_explained', sa.Boolean(), nullable=False),
    sa.Column('mutual', sa.Boolean(), nullable=False),
    sa.Column('collection_method', sa.String(length=32), nullable=False),
    sa.Column('evidence_reference', sa.String(length=200), nullable=False),
    sa.Column('language', sa.String(length=50), nullable=False),
    sa.Column('interpreter_used', sa.Boolean(), nullable=False),
    sa.Column('valid_from', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('valid_until', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('recorded_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_user', sa.String(length=200), nullable=False),
    sa.Column('recorded_by_organisation_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_consents_person_id_persons')),
    sa.ForeignKeyConstraint(['recorded_by_organisation_id'], ['organisations.id'], name=op.f('fk_consents_recorded_by_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consents'))
    )
    op.create_index(op.f('ix_consents_person_id'), 'consents', ['person_id'], unique=False)
    op.create_table('person_fields',
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('field', sa.String(length=64), nullable=False),
    sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('updated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_by_organisation_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_person_fields_person_id_persons')),
    sa.ForeignKeyConstraint(['updated_by_organisation_id'], ['organisations.id'], name=op.f('fk_person_fields_updated_by_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('person_id', 'field', name=op.f('pk_person_fields'))
    )
    op.create_table('person_keys',
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_person_keys_person_id_persons')),
    sa.PrimaryKeyConstraint('person_id', name=op.f('pk_person_keys'))
    )
    op.create_table('consent_withdrawals',
    sa.Column('consent_id', sa.Uuid(), nullable=False),
    sa.Column('withdrawn_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_user', sa.String(length=200), nullable=False),
    sa.Column('recorded_by_organisation_id', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['consent_id'], ['consents.id'], name=op.f('fk_consent_withdrawals_consent_id_consents')),
    sa.ForeignKeyConstraint(['recorded_by_organisation_id'], ['organisations.id'], name=op.f('fk_consent_withdrawals_recorded_by_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('consent_id', name=op.f('pk_consent_withdrawals'))
    )
    # Batch mode, so SQLite (which cannot ALTER a column) gets the same schema.
    with op.batch_alter_table("persons") as batch:
        batch.add_column(sa.Column("blind_index", sa.String(length=64), nullable=True))
        for column, length in (("residence_status", 32), ("bleibeperspektive", 32), ("benefit_regime", 16)):
            batch.alter_column(column, existing_type=sa.VARCHAR(length=length), nullable=True)
        batch.create_index(op.f("ix_persons_blind_index"), ["blind_index"], unique=False)

    # One head per audit stream; casemgmt.privacy.audit.STREAMS must match.
    for stream in range(AUDIT_STREAMS):
        op.execute(f"INSERT INTO audit_head (stream, last_seq, last_hash) VALUES ({stream}, 0, '{'0' * 64}')")
    if op.get_bind().dialect.name == "postgresql":
        # Evidence and consent records are never rewritten; casemgmt_refuse_change() is from 0001.
        for table in ("audit_events", "consents", "consent_withdrawals"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION casemgmt_refuse_change()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("audit_events", "consents", "consent_withdrawals"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    with op.batch_alter_table("persons") as batch:
        batch.drop_index(op.f("ix_persons_blind_index"))
        for column, length in (("residence_status", 32), ("bleibeperspektive", 32), ("benefit_regime", 16)):
            batch.alter_column(column, existing_type=sa.VARCHAR(length=length), nullable=False)
        batch.drop_column("blind_index")
    op.drop_table('consent_withdrawals')
    op.drop_table('person_keys')
    op.drop_table('person_fields')
    op.drop_index(op.f('ix_consents_person_id'), table_name='consents')
    op.drop_table('consents')
    op.drop_table('data_exchange_agreements')
    op.drop_table('audit_head')
    op.drop_index('ix_audit_events_recorded_at', table_name='audit_events')
    op.drop_index('ix_audit_events_person_id', table_name='audit_events')
    op.drop_index('ix_audit_events_agent_user', table_name='audit_events')
    op.drop_index('ix_audit_events_agent_organisation_id', table_name='audit_events')
    op.drop_table('audit_events')
