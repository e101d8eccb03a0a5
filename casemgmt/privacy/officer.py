"""What the data protection officer reads: the audit trail, agreements, and the record of
processing activities (GDPR Art. 30) generated from the policy files."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, cast, or_, select
from sqlalchemy.orm import Session

from casemgmt.chains.engine import Actor
from casemgmt.database import unit_of_work
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.policy.loader import Policies
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.models import AuditEvent, DataExchangeAgreement
from casemgmt.privacy.schemas import AuditEventOut, AuditPage
from casemgmt.jurisdictions.service import area_organisation_ids
from casemgmt.persons.models import Person
from casemgmt.privacy.service import in_area, person_area_clause, write_audit


@dataclass(frozen=True)
class AuditFilters:
    person_id: uuid.UUID | None = None
    user: str | None = None
    organisation_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    outcome: str | None = None


def search_audit(session: Session, actor: Actor, filters: AuditFilters, cursor: int | None,
                 limit: int, now: datetime) -> AuditPage:
    """Newest first, keyset-paginated by id. The search itself is audited."""
    with unit_of_work(session):
        conds = []
        if filters.person_id is not None:
            conds.append(AuditEvent.person_id == str(filters.person_id))
        if filters.user is not None:
            conds.append(AuditEvent.agent_user == filters.user)
        if filters.organisation_id is not None:
            conds.append(AuditEvent.agent_organisation_id == filters.organisation_id)
        if filters.since is not None:
            conds.append(AuditEvent.recorded_at >= filters.since)
        if filters.until is not None:
            conds.append(AuditEvent.recorded_at < filters.until)
        if filters.outcome is not None:
            conds.append(AuditEvent.outcome == filters.outcome)
        if cursor is not None:
            conds.append(AuditEvent.id < cursor)
        if not actor.installation_wide:
            # The officer oversees its own area: what its organisations did, and what was done
            # with the data of persons who live there or were registered there.
            persons = select(cast(Person.id, String)).where(person_area_clause(actor))
            conds.append(or_(AuditEvent.agent_organisation_id.in_(area_organisation_ids(actor.jurisdiction_path)),
                             AuditEvent.person_id.in_(persons)))
        rows = session.scalars(
            select(AuditEvent).where(*conds).order_by(AuditEvent.id.desc()).limit(limit + 1)
        ).all()
        more = len(rows) > limit
        rows = rows[:limit]
        items = [_event_out(r) for r in rows]
        write_audit(session, [AuditEntry(
            agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="R",
            subtype="audit.search", entity_type="audit", person_id=filters.person_id,
            detail=f"{len(items)} rows",
        )], now)
    return AuditPage(items=items, next_cursor=rows[-1].id if more else None)


def _event_out(row: AuditEvent) -> AuditEventOut:
    return AuditEventOut(
        id=row.id, recorded_at=row.recorded_at, agent_user=row.agent_user,
        agent_organisation_id=row.agent_organisation_id, action=row.action, subtype=row.subtype,
        entity_type=row.entity_type, entity_id=row.entity_id,
        person_id=uuid.UUID(row.person_id) if row.person_id else None,
        fields=json.loads(row.fields), legal_bases=json.loads(row.legal_bases),
        purpose=row.purpose, outcome=row.outcome, detail=row.detail,
    )


def list_agreements(session: Session, actor: Actor) -> list[DataExchangeAgreement]:
    """Agreements with at least one party in the caller's area."""
    rows = list(session.scalars(select(DataExchangeAgreement).order_by(DataExchangeAgreement.recorded_at)))
    if not actor.installation_wide:
        paths = dict(session.execute(
            select(Organisation.id, Jurisdiction.path).join(Jurisdiction, Jurisdiction.id == Organisation.jurisdiction_id)).all())
        rows = [a for a in rows if any(in_area(actor, paths.get(o)) for o in a.organisation_ids)]
    session.rollback()
    return rows


def record_of_processing(policies: Policies) -> dict[str, Any]:
    """Art. 30 GDPR: categories of data, purposes, recipients (by legal basis) and retention."""
    data = policies.data
    kinds = policies.organisation_kinds
    activities = []
    for purpose, title in data.purposes.items():
        statutes = [s for s in data.statutes if purpose in s.purposes]
        activities.append({
            "purpose": purpose,
            "title": title,
            "statutory_recipients": [
                {
                    "organisation_kind": s.organisation_kind,
                    "organisation_kind_title": kinds[s.organisation_kind].title,
                    "categories": sorted(s.categories),
                    "actions": sorted(s.actions),
                    "legal_basis": s.law,
                }
                for s in statutes
            ],
            "other_recipients": "organisations named in the person's consent or in a data-exchange agreement",
        })
    return {
        "controller": "the municipality operating this installation",
        "categories_of_data_subjects": ["newcomers in municipal integration case management"],
        "categories_of_personal_data": [
            {
                "category": c.key,
                "title": c.title,
                "special_category_art_9": c.special,
                "fields": data.fields_of(c.key),
                "retention": c.retention.describe() if c.retention else f"{c.retention_years} years",
                "retention_rule": {"years": c.retention.years, "after": c.retention.after,
                                   "obligation": c.retention.obligation} if c.retention else None,
                "retention_source": c.retention.source if c.retention else None,
                "portable_art_20": c.portable,
            }
            for c in data.categories.values()
        ],
        "processing_activities": activities,
        "technical_and_organisational_measures": [
            "field-level encryption (AES-256-GCM, one key per person, wrapped by a master key)",
            "deny-by-default access decisions per field category, purpose and legal basis",
            "hash-chained, append-only audit trail of every access, change and refusal",
            "signed bearer tokens (asymmetric algorithms only)",
            "deletion concept as data: retention per category run by `casemgmt retention run`; "
            "erasure by destroying the person's data key, recorded in tombstones replayed after a "
            "restore of a backup",
            "master key rotation by key id, online and resumable (`casemgmt keys rotate`)",
        ],
    }
