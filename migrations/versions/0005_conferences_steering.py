"""Fallkonferenzen (participants, cases, agreements, findings, votes), proposals to the
Lenkungsgruppe with their history, working groups, and the name-token index for the
closed-world check of finding texts. On PostgreSQL the proposal history is append-only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 02:44:57.987366
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import casemgmt.database


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('conferences',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('scheduled_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('jurisdiction_id', sa.Integer(), nullable=False),
    sa.Column('moderator_organisation_id', sa.Integer(), nullable=False),
    sa.Column('moderator_user', sa.String(length=200), nullable=False),
    sa.Column('phase', sa.String(length=20), nullable=False),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("phase IN ('planned', 'case_phase', 'structural_phase', 'closed')", name=op.f('ck_conferences_phase')),
    sa.ForeignKeyConstraint(['jurisdiction_id'], ['jurisdictions.id'], name=op.f('fk_conferences_jurisdiction_id_jurisdictions')),
    sa.ForeignKeyConstraint(['moderator_organisation_id'], ['organisations.id'], name=op.f('fk_conferences_moderator_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conferences'))
    )
    op.create_index(op.f('ix_conferences_moderator_organisation_id'), 'conferences', ['moderator_organisation_id'], unique=False)
    op.create_index(op.f('ix_conferences_scheduled_at'), 'conferences', ['scheduled_at'], unique=False)
    op.create_table('working_groups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('lead_organisation_id', sa.Integer(), nullable=False),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['lead_organisation_id'], ['organisations.id'], name=op.f('fk_working_groups_lead_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_working_groups')),
    sa.UniqueConstraint('name', name=op.f('uq_working_groups_name'))
    )
    op.create_table('conference_participants',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conference_id', sa.Uuid(), nullable=False),
    sa.Column('organisation_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['conference_id'], ['conferences.id'], name=op.f('fk_conference_participants_conference_id_conferences')),
    sa.ForeignKeyConstraint(['organisation_id'], ['organisations.id'], name=op.f('fk_conference_participants_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conference_participants')),
    sa.UniqueConstraint('conference_id', 'organisation_id', name='uq_conference_participants_organisation')
    )
    op.create_index(op.f('ix_conference_participants_conference_id'), 'conference_participants', ['conference_id'], unique=False)
    op.create_table('person_name_tokens',
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_person_name_tokens_person_id_persons')),
    sa.PrimaryKeyConstraint('person_id', 'digest', name=op.f('pk_person_name_tokens'))
    )
    op.create_index(op.f('ix_person_name_tokens_digest'), 'person_name_tokens', ['digest'], unique=False)
    op.create_table('proposals',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('summary', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('created_by_user', sa.String(length=200), nullable=False),
    sa.Column('created_by_organisation_id', sa.Integer(), nullable=False),
    sa.Column('working_group_id', sa.Integer(), nullable=True),
    sa.Column('due_date', sa.Date(), nullable=True),
    sa.Column('decision_reason', sa.Text(), nullable=True),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint("state IN ('bundled', 'submitted', 'accepted', 'delegated', 'rejected', 'deferred', 'in_implementation', 'implemented', 'made_permanent')", name=op.f('ck_proposals_state')),
    sa.ForeignKeyConstraint(['created_by_organisation_id'], ['organisations.id'], name=op.f('fk_proposals_created_by_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['working_group_id'], ['working_groups.id'], name=op.f('fk_proposals_working_group_id_working_groups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_proposals'))
    )
    op.create_index('ix_proposals_state', 'proposals', ['state'], unique=False)
    op.create_table('conference_cases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conference_id', sa.Uuid(), nullable=False),
    sa.Column('chain_id', sa.Uuid(), nullable=False),
    sa.Column('person_id', sa.Uuid(), nullable=False),
    sa.Column('legal_bases', sa.JSON(), nullable=False),
    sa.Column('added_by_user', sa.String(length=200), nullable=False),
    sa.Column('added_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['chain_id'], ['chains.id'], name=op.f('fk_conference_cases_chain_id_chains')),
    sa.ForeignKeyConstraint(['conference_id'], ['conferences.id'], name=op.f('fk_conference_cases_conference_id_conferences')),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_conference_cases_person_id_persons')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conference_cases')),
    sa.UniqueConstraint('conference_id', 'chain_id', name='uq_conference_cases_chain')
    )
    op.create_index(op.f('ix_conference_cases_conference_id'), 'conference_cases', ['conference_id'], unique=False)
    op.create_index(op.f('ix_conference_cases_person_id'), 'conference_cases', ['person_id'], unique=False)
    op.create_table('findings',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('conference_id', sa.Uuid(), nullable=False),
    sa.Column('barrier_category', sa.String(length=64), nullable=False),
    sa.Column('field_of_action', sa.String(length=64), nullable=False),
    sa.Column('organisation_kinds', sa.JSON(), nullable=False),
    sa.Column('level', sa.String(length=20), nullable=False),
    sa.Column('weather', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('case_count', sa.Integer(), nullable=False),
    sa.Column('proposal_id', sa.Uuid(), nullable=True),
    sa.Column('created_by_user', sa.String(length=200), nullable=False),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("level IN ('staff', 'organisation', 'intermunicipal')", name=op.f('ck_findings_level')),
    sa.CheckConstraint("weather IN ('sonne', 'wolke', 'gewitter', 'wind')", name=op.f('ck_findings_weather')),
    sa.ForeignKeyConstraint(['conference_id'], ['conferences.id'], name=op.f('fk_findings_conference_id_conferences')),
    sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id'], name=op.f('fk_findings_proposal_id_proposals')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_findings'))
    )
    op.create_index('ix_findings_barrier_field', 'findings', ['barrier_category', 'field_of_action'], unique=False)
    op.create_index(op.f('ix_findings_conference_id'), 'findings', ['conference_id'], unique=False)
    op.create_index(op.f('ix_findings_proposal_id'), 'findings', ['proposal_id'], unique=False)
    op.create_table('proposal_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('proposal_id', sa.Uuid(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('from_state', sa.String(length=24), nullable=True),
    sa.Column('to_state', sa.String(length=24), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('working_group_id', sa.Integer(), nullable=True),
    sa.Column('due_date', sa.Date(), nullable=True),
    sa.Column('actor_user', sa.String(length=200), nullable=False),
    sa.Column('actor_organisation_id', sa.Integer(), nullable=True),
    sa.Column('occurred_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_organisation_id'], ['organisations.id'], name=op.f('fk_proposal_events_actor_organisation_id_organisations')),
    sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id'], name=op.f('fk_proposal_events_proposal_id_proposals')),
    sa.ForeignKeyConstraint(['working_group_id'], ['working_groups.id'], name=op.f('fk_proposal_events_working_group_id_working_groups')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_proposal_events'))
    )
    op.create_index('ix_proposal_events_proposal_id_id', 'proposal_events', ['proposal_id', 'id'], unique=False)
    op.create_table('conference_agreements',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('conference_id', sa.Uuid(), nullable=False),
    sa.Column('conference_case_id', sa.Integer(), nullable=False),
    sa.Column('text_ciphertext', sa.LargeBinary(), nullable=False),
    sa.Column('owner_organisation_id', sa.Integer(), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=False),
    sa.Column('step_key', sa.String(length=64), nullable=True),
    sa.Column('handover_id', sa.Uuid(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_by_user', sa.String(length=200), nullable=False),
    sa.Column('created_at', casemgmt.database.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('open', 'done', 'dropped')", name=op.f('ck_conference_agreements_state')),
    sa.ForeignKeyConstraint(['conference_case_id'], ['conference_cases.id'], name=op.f('fk_conference_agreements_conference_case_id_conference_cases')),
    sa.ForeignKeyConstraint(['conference_id'], ['conferences.id'], name=op.f('fk_conference_agreements_conference_id_conferences')),
    sa.ForeignKeyConstraint(['handover_id'], ['handovers.id'], name=op.f('fk_conference_agreements_handover_id_handovers')),
    sa.ForeignKeyConstraint(['owner_organisation_id'], ['organisations.id'], name=op.f('fk_conference_agreements_owner_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conference_agreements'))
    )
    op.create_index(op.f('ix_conference_agreements_conference_id'), 'conference_agreements', ['conference_id'], unique=False)
    op.create_index(op.f('ix_conference_agreements_owner_organisation_id'), 'conference_agreements', ['owner_organisation_id'], unique=False)
    op.create_table('finding_cases',
    sa.Column('finding_id', sa.Uuid(), nullable=False),
    sa.Column('conference_case_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['conference_case_id'], ['conference_cases.id'], name=op.f('fk_finding_cases_conference_case_id_conference_cases')),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_finding_cases_finding_id_findings')),
    sa.PrimaryKeyConstraint('finding_id', 'conference_case_id', name=op.f('pk_finding_cases'))
    )
    op.create_table('finding_organisation_kinds',
    sa.Column('finding_id', sa.Uuid(), nullable=False),
    sa.Column('organisation_kind', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_finding_organisation_kinds_finding_id_findings')),
    sa.PrimaryKeyConstraint('finding_id', 'organisation_kind', name=op.f('pk_finding_organisation_kinds'))
    )
    op.create_table('finding_votes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('conference_id', sa.Uuid(), nullable=False),
    sa.Column('finding_id', sa.Uuid(), nullable=False),
    sa.Column('voter_user', sa.String(length=200), nullable=False),
    sa.Column('voter_organisation_id', sa.Integer(), nullable=False),
    sa.Column('dots', sa.Integer(), nullable=False),
    sa.CheckConstraint('dots >= 1', name=op.f('ck_finding_votes_dots')),
    sa.ForeignKeyConstraint(['conference_id'], ['conferences.id'], name=op.f('fk_finding_votes_conference_id_conferences')),
    sa.ForeignKeyConstraint(['finding_id'], ['findings.id'], name=op.f('fk_finding_votes_finding_id_findings')),
    sa.ForeignKeyConstraint(['voter_organisation_id'], ['organisations.id'], name=op.f('fk_finding_votes_voter_organisation_id_organisations')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_finding_votes')),
    sa.UniqueConstraint('finding_id', 'voter_user', name='uq_finding_votes_voter')
    )
    op.create_index(op.f('ix_finding_votes_conference_id'), 'finding_votes', ['conference_id'], unique=False)
    op.create_index(op.f('ix_finding_votes_finding_id'), 'finding_votes', ['finding_id'], unique=False)

    op.create_index('ix_chain_events_step_state', 'chain_events', ['step_key', 'to_state'], unique=False,
                    postgresql_include=['chain_id', 'occurred_at'], postgresql_where=sa.text("kind = 'step'"),
                    sqlite_where=sa.text("kind = 'step'"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE TRIGGER proposal_events_append_only BEFORE UPDATE OR DELETE ON proposal_events "
            "FOR EACH ROW EXECUTE FUNCTION casemgmt_refuse_change()"
        )
        op.execute(
            "CREATE TRIGGER proposal_events_no_truncate BEFORE TRUNCATE ON proposal_events "
            "FOR EACH STATEMENT EXECUTE FUNCTION casemgmt_refuse_change()"
        )

def downgrade() -> None:
    op.drop_index('ix_chain_events_step_state', table_name='chain_events')
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS proposal_events_no_truncate ON proposal_events")
        op.execute("DROP TRIGGER IF EXISTS proposal_events_append_only ON proposal_events")
    op.drop_index(op.f('ix_finding_votes_finding_id'), table_name='finding_votes')
    op.drop_index(op.f('ix_finding_votes_conference_id'), table_name='finding_votes')
    op.drop_table('finding_votes')
    op.drop_table('finding_organisation_kinds')
    op.drop_table('finding_cases')
    op.drop_index(op.f('ix_conference_agreements_owner_organisation_id'), table_name='conference_agreements')
    op.drop_index(op.f('ix_conference_agreements_conference_id'), table_name='conference_agreements')
    op.drop_table('conference_agreements')
    op.drop_index('ix_proposal_events_proposal_id_id', table_name='proposal_events')
    op.drop_table('proposal_events')
    op.drop_index(op.f('ix_findings_proposal_id'), table_name='findings')
    op.drop_index(op.f('ix_findings_conference_id'), table_name='findings')
    op.drop_index('ix_findings_barrier_field', table_name='findings')
    op.drop_table('findings')
    op.drop_index(op.f('ix_conference_cases_person_id'), table_name='conference_cases')
    op.drop_index(op.f('ix_conference_cases_conference_id'), table_name='conference_cases')
    op.drop_table('conference_cases')
    op.drop_index('ix_proposals_state', table_name='proposals')
    op.drop_table('proposals')
    op.drop_index(op.f('ix_person_name_tokens_digest'), table_name='person_name_tokens')
    op.drop_table('person_name_tokens')
    op.drop_index(op.f('ix_conference_participants_conference_id'), table_name='conference_participants')
    op.drop_table('conference_participants')
    op.drop_table('working_groups')
    op.drop_index(op.f('ix_conferences_scheduled_at'), table_name='conferences')
    op.drop_index(op.f('ix_conferences_moderator_organisation_id'), table_name='conferences')
    op.drop_table('conferences')
