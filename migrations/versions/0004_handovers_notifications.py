"""Handovers between organisations with their history, organisations' contact points, and the
notification outbox. On PostgreSQL the handover history refuses UPDATE, DELETE and TRUNCATE.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 02:23:16.904254
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import casemgmt.database


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('organisation_contacts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=400), nullable=False),
    sa.CheckConstraint("channel IN ('email', 'webhook')", name=op.f('ck_organisation_contacts_channel')),
    sa.CheckConstraint("role IN ('lead', 'inbox')", name=op.f('ck_organisation_contacts_role')),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_organisation_contacts_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organisation_contacts')),
    sa.UniqueConstraint('organisation_id', 'role', 'channel', 'address', name='uq_organisation_contacts_address')
    )
    op.create_index(op.f('ix_organisation_contacts_organisation_id'), 'organisation_contacts', ['organisation_id'], unique=False)
    op.create_table('handovers',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('chain_id', sa.Uuid(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('subject', sa.String(length=80), nullable=False),
    sa.Column('step_key', sa.String(length=64), nullable=True),
    sa.Column('to_step_key', sa.String(length=64), nullable=True),
    sa.Column('benefit_regime_from', sa.String(length=32), nullable=True),
    sa.Column('benefit_regime_to', sa.String(length=32), nullable=True),
    sa.Column('sender_organisation_id', sa.Integer(), nullable=False),
    sa.Column('sender_organisation_kind', sa.String(length=64), nullable=False),
    sa.Column('sender_jurisdiction_id', sa.Integer(), nullable=False),
    sa.Column('sender_user', sa.String(length=200), nullable=False),
    sa.Column('receiver_organisation_id', sa.Integer(), nullable=False),
    sa.Column('receiver_organisation_kind', sa.String(length=64), nullable=False),
    sa.Column('receiver_jurisdiction_id', sa.Integer(), nullable=False),
    sa.Column('case_management_organisation_id', sa.Integer(), nullable=False),
    sa.Column('from_jurisdiction_id', sa.Integer(), nullable=False),
    sa.Column('to_jurisdiction_id', sa.Integer(), nullable=True),
    sa.Column('purpose', sa.String(length=64), nullable=False),
    sa.Column('package_fields', sa.JSON(), nullable=False),
    sa.Column('package_bases', sa.JSON(), nullable=False),
    sa.Column('package_redacted', sa.JSON(), nullable=False),
    sa.Column('package_ciphertext', sa.LargeBinary(), nullable=True),
    sa.Column('consent_review', sa.JSON(), nullable=True),
    sa.Column('working_days', sa.Integer(), nullable=False),
    sa.Column('requested_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('due_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('escalated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('responded_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('responded_by_user', sa.String(length=200), nullable=True),
    sa.Column('response_reason', sa.Text(), nullable=True),
    sa.Column('waiting_calendar_days', sa.Integer(), nullable=True),
    sa.Column('waiting_working_days', sa.Integer(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('step', 'rechtskreiswechsel', 'relocation')", name=op.f('ck_handovers_kind')),
    sa.CheckConstraint("state <> 'rejected' OR response_reason IS NOT NULL", name=op.f('ck_handovers_rejected_reason')),
    sa.CheckConstraint("state IN ('requested', 'acknowledged', 'rejected', 'withdrawn', 'escalated')", name=op.f('ck_handovers_state')),
    sa.ForeignKeyConstraint(['case_management_organisation_id'], ['organisations.id'], name=op.f('fk_handovers_case_management_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['chain_id'], ['chains.id'], name=op.f('fk_handovers_chain_id_chains')),
    sa.ForeignKeyConstraint(['from_jurisdiction_id'], ['jurisdictions.id'], name=op.f('fk_handovers_from_jurisdiction_id_jurisdictions')),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_handovers_person_id_persons')),
    sa.ForeignKeyConstraint(['receiver_jurisdiction_id'], ['jurisdictions.id'], name=op.f('fk_handovers_receiver_jurisdiction_id_jurisdictions')),
    sa.ForeignKeyConstraint(['receiver_organisation_id'], ['organisations.id'], name=op.f('fk_handovers_receiver_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['sender_jurisdiction_id'], ['jurisdictions.id'], name=op.f('fk_handovers_sender_jurisdiction_id_jurisdictions')),
    sa.ForeignKeyConstraint(['sender_organisation_id'], ['organisations.id'], name=op.f('fk_handovers_sender_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['to_jurisdiction_id'], ['jurisdictions.id'], name=op.f('fk_handovers_to_jurisdiction_id_jurisdictions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handovers'))
    )
    op.create_index('ix_handovers_case_management_decided', 'handovers', ['case_management_organisation_id', 'state', 'responded_at'], unique=False, postgresql_include=['sender_organisation_id'])
    op.create_index('ix_handovers_case_management_pending', 'handovers', ['case_management_organisation_id', 'due_at', 'id'], unique=False, postgresql_include=['state', 'sender_organisation_id'], postgresql_where=sa.text("state IN ('escalated', 'requested')"), sqlite_where=sa.text("state IN ('escalated', 'requested')"))
    op.create_index('ix_handovers_chain_id', 'handovers', ['chain_id'], unique=False)
    op.create_index('ix_handovers_person_id', 'handovers', ['person_id'], unique=False)
    op.create_index('ix_handovers_receiver_decided', 'handovers', ['receiver_organisation_id', 'state', 'responded_at'], unique=False)
    op.create_index('ix_handovers_receiver_pending', 'handovers', ['receiver_organisation_id', 'due_at', 'id'], unique=False, postgresql_include=['state'], postgresql_where=sa.text("state IN ('escalated', 'requested')"), sqlite_where=sa.text("state IN ('escalated', 'requested')"))
    op.create_index('ix_handovers_sender_decided', 'handovers', ['sender_organisation_id', 'state', 'responded_at'], unique=False)
    op.create_index('ix_handovers_sender_pending', 'handovers', ['sender_organisation_id', 'due_at', 'id'], unique=False, postgresql_include=['state'], postgresql_where=sa.text("state IN ('escalated', 'requested')"), sqlite_where=sa.text("state IN ('escalated', 'requested')"))
    op.create_index('ix_handovers_to_escalate', 'handovers', ['due_at'], unique=False, postgresql_where=sa.text("state = 'requested'"), sqlite_where=sa.text("state = 'requested'"))
    op.create_index('uq_handovers_pending_subject', 'handovers', ['chain_id', 'subject'], unique=True, postgresql_where=sa.text("state IN ('escalated', 'requested')"), sqlite_where=sa.text("state IN ('escalated', 'requested')"))
    op.create_table('handover_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('handover_id', sa.Uuid(), nullable=False),
    sa.Column('action', sa.String(length=24), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('actor_user', sa.String(length=200), nullable=False),
    sa.Column('actor_organisation_id', sa.Integer(), nullable=True),
    sa.Column('occurred_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_organisation_id'], ['organisations.id'], name=op.f('fk_handover_events_actor_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['handover_id'], ['handovers.id'], name=op.f('fk_handover_events_handover_id_handovers')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handover_events'))
    )
    op.create_index('ix_handover_events_handover_id_id', 'handover_events', ['handover_id', 'id'], unique=False)
    op.create_table('notification_outbox',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event', sa.String(length=48), nullable=False),
    sa.Column('handover_id', sa.Uuid(), nullable=True),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=400), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', casemgmt.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("channel IN ('email', 'webhook')", name=op.f('ck_notification_outbox_channel')),
    sa.CheckConstraint("state IN ('pending', 'delivered', 'failed')", name=op.f('ck_notification_outbox_state')),
    sa.ForeignKeyConstraint(['handover_id'], ['handovers.id'], name=op.f('fk_notification_outbox_handover_id_handovers')),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_notification_outbox_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_outbox')),
    sa.UniqueConstraint('event', 'handover_id', 'channel', 'address', name='uq_notification_outbox_event')
    )
    op.create_index('ix_notification_outbox_due', 'notification_outbox', ['state', 'next_attempt_at'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER handover_events_append_only BEFORE UPDATE OR DELETE ON handover_events "
            "FOR EACH ROW EXECUTE FUNCTION casemgmt_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER handover_events_no_truncate BEFORE TRUNCATE ON handover_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION casemgmt_refuse_change()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS handover_events_no_truncate ON handover_events")
        op.execute("DROP TRIGGER IF EXISTS handover_events_append_only ON handover_events")
    op.drop_index('ix_notification_outbox_due', table_name='notification_outbox')
    op.drop_table('notification_outbox')
    op.drop_index('ix_handover_events_handover_id_id', table_name='handover_events')
    op.drop_table('handover_events')
    op.drop_index('uq_handovers_pending_subject', table_name='handovers', postgresql_where=sa.text("state IN ('escalated', 'requested')"), sqlite_where=sa.text("state IN ('escalated', 'requested')"))
    op.drop_index('ix_handovers_to_escalate', table_name='handovers', postgresql_where=sa.text("state = 'requested'"), sqlite_where=sa.text("state = 'requested'"))
    op.drop_index('ix_handovers_sender_pending', table_name='handovers', postgresql_where=sa.text("state IN ('escalated', 'requested')"), sqlite_where=sa.text("state IN ('escalated', 'requested')"))
    op.drop_index('ix_handovers_sender_decided', table_name='handovers')
    op.drop_index('ix_handovers_receiver_pending', table_name='handovers', postgresql_where=sa.text("state IN ('escalated', 'requested')"), sqlite_where=sa.text("state IN ('escalated', 'requested')"))
    op.drop_index('ix_handovers_receiver_decided', table_name='handovers')
    op.drop_index('ix_handovers_person_id', table_name='handovers')
    op.drop_index('ix_handovers_chain_id', table_name='handovers')
    op.drop_index('ix_handovers_case_management_pending', table_name='handovers', postgresql_where=sa.text("state IN ('escalated', 'requested')"), sqlite_where=sa.text("state IN ('escalated', 'requested')"))
    op.drop_index('ix_handovers_case_management_decided', table_name='handovers')
    op.drop_table('handovers')
    op.drop_index(op.f('ix_organisation_contacts_organisation_id'), table_name='organisation_contacts')
    op.drop_table('organisation_contacts')
