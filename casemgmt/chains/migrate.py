"""Rolling a new template version out to running chains (``casemgmt chains migrate``).

Each chain is migrated in a transaction of its own: the chain row is locked, its version checked
(a chain already at the target version is never migrated again, so a run can be repeated or
resumed after an interruption), the plan applied (casemgmt.chains.migration) and everything
written together: the step rows, a ``template_migrated`` event per version step with a
``step_migrated`` event per changed step and a ``step`` event per state change, the chain's new
version and template version, and an audit row. A chain the plan does not fit is left as it was
and reported with the reasons; a dry run reports what would happen and writes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Literal

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from casemgmt.chains import service as chains
from casemgmt.chains.agreed import LOCAL_TIMEZONE, with_agreed_steps
from casemgmt.chains.catalog import TemplateCatalog
from casemgmt.chains.engine import Actor, ChainLifecycle, StepState
from casemgmt.chains.migration import ChainMigration, MigrationPlan, check_plan, migrate_steps
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER
from casemgmt.handovers.lifecycle import PENDING_VALUES
from casemgmt.handovers.models import Handover
from casemgmt.jurisdictions.models import Jurisdiction
from casemgmt.jurisdictions.service import nearest_serving_organisations
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.service import write_audit

MIGRATION_USER = "system:template-migration"

chains_t, steps_t = chains.chains_t, chains.steps_t
handovers_t = Handover.__table__
jur_t = Jurisdiction.__table__

Status = Literal["migrated", "would_migrate", "refused", "skipped"]
_ACTIVE = {StepState.ready.value, StepState.in_progress.value, StepState.blocked.value}

_UPDATE_STEP = (
    update(steps_t).where(steps_t.c.id == bindparam("step_id")).values(
        key=bindparam("key"), owner_kind=bindparam("owner_kind"), optional=bindparam("optional"),
        state=bindparam("state"), reason=bindparam("reason"), started_at=bindparam("started_at"),
        completed_at=bindparam("completed_at"), due_at=bindparam("due_at"), due_for=bindparam("due_for"),
        assigned_organisation_id=bindparam("assigned"), updated_at=bindparam("now"))
)


def check_plans(catalog: TemplateCatalog, plans: Mapping[str, Mapping[int, MigrationPlan]]) -> None:
    """Check every plan whose two versions this installation knows (at start and before a run);
    a plan between versions it never had cannot concern any of its chains."""
    for by_from in plans.values():
        for plan in by_from.values():
            source = catalog.get(plan.template, plan.from_version)
            target = catalog.get(plan.template, plan.to_version)
            if source is not None and target is not None:
                check_plan(plan, source, target)


@dataclass
class ChainOutcome:
    """What became (or would become) of one chain."""

    chain_id: uuid.UUID
    from_version: int
    to_version: int
    status: Status
    changes: list[str] = field(default_factory=list)  # one line per version step
    reasons: list[str] = field(default_factory=list)  # why not, or why skipped

    def line(self) -> str:
        if self.status in ("migrated", "would_migrate"):
            verb = "migrated" if self.status == "migrated" else "would migrate"
            return f"{self.chain_id}  v{self.from_version} -> v{self.to_version}  {verb}: " + " | ".join(self.changes)
        if self.status == "refused":
            return f"{self.chain_id}  v{self.from_version}  cannot migrate: " + "; ".join(self.reasons)
        return f"{self.chain_id}  v{self.from_version}  skipped: " + "; ".join(self.reasons)


@dataclass(frozen=True)
class MigrationFilters:
    """Which chains a run covers (``--where``); all conditions must hold."""

    jurisdiction_path: str | None = None  # the chain's lead jurisdiction is this one or below it
    chain_ids: tuple[uuid.UUID, ...] = ()
    started_before: date | None = None
    started_after: date | None = None
    from_version: int | None = None

    def clauses(self) -> list:
        conds = []
        if self.jurisdiction_path is not None:
            conds.append(chains_t.c.lead_jurisdiction_id.in_(
                select(jur_t.c.id).where(jur_t.c.path.startswith(self.jurisdiction_path))))
        if self.chain_ids:
            conds.append(chains_t.c.id.in_(self.chain_ids))
        if self.started_before is not None:
            conds.append(chains_t.c.started_at < _midnight(self.started_before))
        if self.started_after is not None:
            conds.append(chains_t.c.started_at >= _midnight(self.started_after))
        if self.from_version is not None:
            conds.append(chains_t.c.template_version == self.from_version)
        return conds


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=LOCAL_TIMEZONE)


@dataclass
class MigrationReport:
    template_key: str
    to_version: int
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    keep_version: int = 0  # completed or closed chains of older versions: their history stays

    def summary(self) -> str:
        c = self.counts
        moved = (f"{c.get('would_migrate', 0)} chains would be migrated" if self.dry_run
                 else f"{c.get('migrated', 0)} chains migrated")
        return (f"{self.template_key} -> v{self.to_version}{' (dry run)' if self.dry_run else ''}: {moved}, "
                f"{c.get('refused', 0)} cannot be migrated, {c.get('skipped', 0)} done or closed meanwhile; "
                f"{self.keep_version} completed or closed chains keep their version")


def migrate_chain(session: Session, catalog: TemplateCatalog, plans: Mapping[int, MigrationPlan],
                  template_key: str, chain_id: uuid.UUID, to_version: int, now: datetime, *,
                  dry_run: bool, user: str = MIGRATION_USER) -> ChainOutcome:
    """Migrate one chain to ``to_version`` (through every version between), in one transaction."""
    try:
        outcome = _migrate(session, catalog, plans, template_key, chain_id, to_version, now, dry_run, user)
        if outcome.status == "migrated":
            session.commit()
        else:
            session.rollback()
        return outcome
    except BaseException:
        session.rollback()
        raise


def _migrate(session: Session, catalog: TemplateCatalog, plans: Mapping[int, MigrationPlan], template_key: str,
             chain_id: uuid.UUID, to_version: int, now: datetime, dry_run: bool, user: str) -> ChainOutcome:
    if session.execute(chains.LOCK_CHAIN, {"chain_id": chain_id}).first() is None:
        return ChainOutcome(chain_id, 0, to_version, "skipped", reasons=["no such chain"])
    loaded = chains.load_chain(session, catalog, chain_id, lock=False)
    row = loaded.row
    outcome = ChainOutcome(chain_id, row.template_version, to_version, "skipped")
    if row.template_key != template_key:
        outcome.reasons.append(f"a chain of {row.template_key}")
        return outcome
    if row.template_version >= to_version:
        outcome.reasons.append(f"already at version {row.template_version}")
        return outcome
    if row.lifecycle != ChainLifecycle.open.value:
        outcome.reasons.append(f"{row.lifecycle}: a finished chain keeps the version it ran on")
        return outcome
    held = _held_by_handovers(session, chain_id)
    steps, agreed = loaded.steps, loaded.agreed
    hops: list[ChainMigration] = []
    for version in range(row.template_version, to_version):
        plan = plans.get(version)
        source, target = catalog.get(template_key, version), catalog.get(template_key, version + 1)
        if plan is None or source is None or target is None:
            outcome.status = "refused"
            outcome.reasons.append(f"no migration plan from version {version} to {version + 1}")
            return outcome
        hop = migrate_steps(plan, source, target, steps, agreed, row.started_at, now, held)
        if not hop.ok:
            outcome.status = "refused"
            outcome.reasons.extend(hop.refusals)
            return outcome
        hops.append(hop)
        steps, agreed = hop.steps, hop.agreed
    final = hops[-1]
    effective = with_agreed_steps(catalog.get(template_key, to_version), final.agreed)  # type: ignore[arg-type]
    result = chains.LoadedChain(row, loaded.jurisdiction_path, effective, final.steps, {}, dict(final.agreed))
    _assign(session, result)
    outcome.changes = [hop.describe(head=len(hops) > 1) for hop in hops]
    if dry_run:
        outcome.status = "would_migrate"
        return outcome
    _write(session, loaded, result, hops, now, user)
    outcome.status = "migrated"
    return outcome


def _held_by_handovers(session: Session, chain_id: uuid.UUID) -> set[str]:
    """Steps a waiting handover hands on or will hand to (their keys must stay put)."""
    held: set[str] = set()
    for step_key, to_step_key in session.execute(
            select(handovers_t.c.step_key, handovers_t.c.to_step_key)
            .where(handovers_t.c.chain_id == chain_id, handovers_t.c.state.in_(list(PENDING_VALUES)))):
        held.update(k for k in (step_key, to_step_key) if k)
    return held


def _assign(session: Session, loaded: chains.LoadedChain) -> None:
    """Steps the migration made ready, and not-started ones given to another kind, get their
    organisation as a step that becomes ready does (see chains.service.assign_ready_steps)."""
    chains.assign_ready_steps(session, loaded)
    blocked = [s for s in loaded.steps.values()
               if s.state == StepState.blocked.value and s.assigned_organisation_id is None]
    if not blocked:
        return
    nearest = nearest_serving_organisations(
        session, {s.owner_kind for s in blocked if s.owner_kind != CASE_MANAGEMENT_OWNER}, loaded.jurisdiction_path)
    for step in blocked:
        step.assigned_organisation_id = (loaded.row.case_management_organisation_id
                                         if step.owner_kind == CASE_MANAGEMENT_OWNER else nearest.get(step.owner_kind))


def _write(session: Session, before: chains.LoadedChain, after: chains.LoadedChain, hops: list[ChainMigration],
           now: datetime, user: str) -> None:
    chain_id = before.row.id
    actor = Actor(user_id=user, organisation_id=None, organisation_kind="system",  # type: ignore[arg-type]
                  jurisdiction_path="/")
    # Which row each final step comes from, and the key each hop's step ends up with.
    row_of: dict[str, int | None] = dict(before.step_ids)
    removed_rows: list[int] = []
    final_key: list[dict[str, str | None]] = []
    for hop in hops:
        for old_key in hop.removed:
            if row_of.get(old_key) is not None:
                removed_rows.append(row_of[old_key])  # type: ignore[arg-type]
        row_of = {new: (row_of.get(origin) if origin is not None else None) for new, origin in hop.origin.items()}
    for i, hop in enumerate(hops):
        forward = {k: k for k in hop.steps}
        for later in hops[i + 1:]:
            back = {origin: new for new, origin in later.origin.items() if origin is not None}
            forward = {k: back.get(v) if v is not None else None for k, v in forward.items()}
        final_key.append(forward)

    if removed_rows:
        session.execute(delete(steps_t).where(steps_t.c.id.in_(removed_rows)))
    key_of_row = {row_id: key for key, row_id in before.step_ids.items()}
    renamed = [(row_id, key) for key, row_id in row_of.items() if row_id is not None and key_of_row[row_id] != key]
    if renamed:
        # Keys are unique per chain: park renamed rows on a key no step has before the final one.
        session.execute(update(steps_t).where(steps_t.c.id == bindparam("step_id"))
                        .values(key=bindparam("parked")),
                        [{"step_id": row_id, "parked": f"~{row_id}"} for row_id, _ in renamed])
    updates, inserts = [], []
    for key, step in after.steps.items():
        values = {"key": key, "owner_kind": step.owner_kind, "optional": step.optional, "state": step.state,
                  "reason": step.reason, "started_at": step.started_at, "completed_at": step.completed_at,
                  "due_at": step.due_at, "due_for": step.due_for, "assigned": step.assigned_organisation_id,
                  "now": now}
        row_id = row_of.get(key)
        if row_id is None:
            inserts.append(values)
        else:
            updates.append(values | {"step_id": row_id})
    if updates:
        session.execute(_UPDATE_STEP, updates)
    if inserts:
        session.execute(insert(steps_t), [
            {"chain_id": chain_id, "key": v["key"], "owner_kind": v["owner_kind"], "optional": v["optional"],
             "state": v["state"], "reason": v["reason"], "started_at": v["started_at"],
             "completed_at": v["completed_at"], "due_at": v["due_at"], "due_for": v["due_for"],
             "assigned_organisation_id": v["assigned"], "agreement_id": None, "updated_at": now}
            for v in inserts])

    def assigned(hop_index: int, key: str) -> int | None:
        final = final_key[hop_index].get(key)
        return after.steps[final].assigned_organisation_id if final is not None else None

    events = []
    for i, hop in enumerate(hops):
        plan = hop.plan
        events.append(chains.chain_event_row(
            chain_id, chains.EVENT_TEMPLATE_MIGRATED, actor, now, reason=f"{plan.template} {hop.describe()}",
            from_state=str(plan.from_version), to_state=str(plan.to_version)))
        for c in hop.changes:
            events.append(chains.chain_event_row(
                chain_id, chains.EVENT_STEP_MIGRATED, actor, now, step_key=c.key, action=c.change,
                from_state=c.from_state, to_state=c.to_state, reason=c.detail,
                organisation_id=None if c.change == "removed" else assigned(i, c.key),
                previous_organisation_id=c.previous_organisation_id, previous_step_key=c.previous_key))
        for c in hop.state_changes:
            events.append(chains.chain_event_row(
                chain_id, chains.EVENT_STEP, actor, now, step_key=c.step_key, action=c.action,
                from_state=c.from_state, to_state=c.to_state, reason=c.reason,
                organisation_id=assigned(i, c.step_key), previous_organisation_id=hop.released.get(c.step_key)))
    session.execute(chains.INSERT_EVENTS, events)
    values: dict = {"template_version": hops[-1].plan.to_version}
    if before.agreed or after.agreed:
        values["agreed_steps"] = [a.to_document() for a in after.agreed.values()] or None
    chains.bump_chain(session, before, now, **values)
    write_audit(session, [AuditEntry(
        agent_user=user, agent_organisation_id=None, action="U", subtype="chain.migrate", entity_type="chain",
        entity_id=str(chain_id), person_id=before.row.person_id,
        detail=(" | ".join(f"{h.plan.template} {h.describe()}" for h in hops))[:4000])], now)


def candidate_ids(session: Session, template_key: str, to_version: int, filters: MigrationFilters,
                  after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
    stmt = select(chains_t.c.id).where(
        chains_t.c.template_key == template_key, chains_t.c.template_version < to_version,
        chains_t.c.lifecycle == ChainLifecycle.open.value, *filters.clauses())
    if after is not None:
        stmt = stmt.where(chains_t.c.id > after)
    return list(session.scalars(stmt.order_by(chains_t.c.id).limit(limit)))


def run_migration(factory: sessionmaker[Session], catalog: TemplateCatalog,
                  plans: Mapping[int, MigrationPlan], template_key: str, to_version: int,
                  filters: MigrationFilters, *, dry_run: bool, clock: Callable[[], datetime],
                  batch_size: int = 200, report: Callable[[ChainOutcome], None] | None = None,
                  user: str = MIGRATION_USER) -> MigrationReport:
    """Every open chain of the template below ``to_version`` that the filters select, in
    batches of ``batch_size`` ids (keyset by id, so a refused chain is not met twice), one
    transaction per chain. Safe to run again: migrated chains are no longer candidates."""
    out = MigrationReport(template_key, to_version, dry_run)
    last: uuid.UUID | None = None
    while True:
        with factory() as session:
            ids = candidate_ids(session, template_key, to_version, filters, last, batch_size)
            session.rollback()
        if not ids:
            break
        for chain_id in ids:
            with factory() as session:
                outcome = migrate_chain(session, catalog, plans, template_key, chain_id, to_version, clock(),
                                        dry_run=dry_run, user=user)
            out.counts[outcome.status] = out.counts.get(outcome.status, 0) + 1
            if report is not None:
                report(outcome)
        last = ids[-1]
    with factory() as session:
        out.keep_version = _finished_below(session, template_key, to_version, filters)
        if dry_run:
            # The listing shows the state of the chains of one template: the read is audited.
            write_audit(session, [AuditEntry(
                agent_user=user, agent_organisation_id=None, action="R", subtype="template.migrate.dry_run",
                entity_type="template", entity_id=f"{template_key}@{to_version}",
                detail=out.summary())], clock())
            session.commit()
    return out


def _finished_below(session: Session, template_key: str, to_version: int, filters: MigrationFilters) -> int:
    from sqlalchemy import func

    return session.scalar(select(func.count()).select_from(chains_t).where(
        chains_t.c.template_key == template_key, chains_t.c.template_version < to_version,
        chains_t.c.lifecycle != ChainLifecycle.open.value, *filters.clauses())) or 0


def parse_where(items: Iterable[str], session: Session) -> MigrationFilters:
    """``jurisdiction=KEY|ID``, ``chain=UUID`` (repeatable), ``started_before=YYYY-MM-DD``,
    ``started_after=YYYY-MM-DD``, ``version=N``; ValueError naming what is wrong."""
    values: dict = {}
    chain_ids: list[uuid.UUID] = []
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not value:
            raise ValueError(f"--where {item!r}: write NAME=VALUE")
        if name == "jurisdiction":
            found = session.execute(select(jur_t.c.path).where(
                jur_t.c.id == int(value) if value.isdigit() else jur_t.c.key == value)).first()
            if found is None:
                raise ValueError(f"--where {item!r}: no such jurisdiction")
            values["jurisdiction_path"] = found.path
        elif name == "chain":
            chain_ids.append(uuid.UUID(value))
        elif name in ("started_before", "started_after"):
            values[name] = date.fromisoformat(value)
        elif name == "version":
            values["from_version"] = int(value)
        else:
            raise ValueError(f"--where {item!r}: one of jurisdiction, chain, started_before, started_after, version")
    session.rollback()
    return MigrationFilters(chain_ids=tuple(chain_ids), **values)
