"""Chain use cases. Each public function is one transaction: read, decide (engine), then write
state, events and the chain's new version together, or nothing at all.

The step transition is the hot path and is written with SQLAlchemy Core (see bench/): the chain row
is locked with ``SELECT ... FOR UPDATE`` so concurrent actions on one chain are serialised, and
the version check in the final UPDATE also protects SQLite, which has no row locks.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Integer, and_, bindparam, exists, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import psycopg as _pg_psycopg
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from casemgmt.chains import engine as eng
from casemgmt.chains.agreed import AgreedStep, agreed_steps, end_of_day, next_agreed_key, with_agreed_steps
from casemgmt.chains.catalog import TemplateCatalog
from casemgmt.chains.engine import (
    Actor,
    ChainLifecycle,
    ChainScope,
    StateChange,
    StepInstance,
    StepState,
)
from casemgmt.chains.models import Chain, ChainEvent, ChainStep
from casemgmt.chains.schemas import (
    AgreedInOut,
    ChainOut,
    ChainPage,
    ChainSummary,
    StepOut,
)
from casemgmt.chains.spec import ChainTemplate
from casemgmt.database import unit_of_work
from casemgmt.observability import STEP_TRANSITIONS
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER
from casemgmt.handovers.chain_hooks import pending_step_handover, withdraw_for_closed_chain
from casemgmt.handovers.lifecycle import PENDING_VALUES, HandoverKind
from casemgmt.handovers.models import Handover
from casemgmt.involvement.scope import (
    Access,
    chain_involvement,
    former_until,
    involved_chain_ids,
    listed_chain_ids,
    one_of,
)
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.jurisdictions.service import nearest_serving_organisations
from casemgmt.privacy import audit
from casemgmt.privacy.audit import AuditEntry
from casemgmt.rights.gate import active_person, processing_of, refuse_unless_active
from casemgmt.conferences.scrubber import scan
from casemgmt.privacy.service import Privacy, check_free_text, check_free_text_hits, person_in_scope, write_audit
from casemgmt.problems import (
    ChainClosed,
    DuplicateChain,
    HandoverPending,
    InvolvementEnded,
    NotFound,
    ValidationFailed,
    VersionConflict,
    WrongOrganisation,
)

chains_t = Chain.__table__
steps_t = ChainStep.__table__
events_t = ChainEvent.__table__
jur_t = Jurisdiction.__table__

EVENT_CHAIN_STARTED = "chain_started"
EVENT_STEP = "step"
EVENT_CHAIN_COMPLETED = "chain_completed"
EVENT_CHAIN_CLOSED = "chain_closed"
EVENT_STEP_ASSIGNED = "step_assigned"
EVENT_STEP_ADDED = "step_added"  # a Fallkonferenz agreed a step for this chain
EVENT_TEMPLATE_MIGRATED = "template_migrated"  # the chain moved to the next template version
EVENT_STEP_MIGRATED = "step_migrated"  # what that move changed about one step

# Step columns are labelled so they can share a row with the chain's columns.
_STEP_COLUMNS = (
    steps_t.c.id.label("step_id"), steps_t.c.key.label("step_key"), steps_t.c.owner_kind,
    steps_t.c.optional, steps_t.c.state, steps_t.c.reason.label("step_reason"),
    steps_t.c.started_at.label("step_started_at"), steps_t.c.completed_at.label("step_completed_at"),
    steps_t.c.due_at, steps_t.c.due_for, steps_t.c.assigned_organisation_id, steps_t.c.agreement_id,
)
_CHAIN_FIELDS = tuple(c.name for c in chains_t.columns)


@dataclass(frozen=True)
class ChainRow:
    """The columns of one ``chains`` row."""

    id: uuid.UUID
    person_id: uuid.UUID
    template_key: str
    template_version: int
    lead_jurisdiction_id: int
    case_management_organisation_id: int
    lifecycle: str
    closed_reason: str | None
    started_at: datetime
    completed_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime
    version: int
    agreed_steps: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CHAIN_FIELDS}


@dataclass
class LoadedChain:
    """A chain row with its steps, as the engine needs them. ``template`` is the template version
    with the chain's agreed steps appended (see casemgmt.chains.agreed); ``agreed`` their
    definitions."""

    row: ChainRow
    jurisdiction_path: str
    template: ChainTemplate
    steps: dict[str, StepInstance]
    step_ids: dict[str, int]
    agreed: dict[str, AgreedStep] = field(default_factory=dict)
    # With ``load_chain(..., completing=key)``: the waiting Rechtskreiswechsel that will complete
    # that step, if any (read in the same statement as the steps, after the lock).
    pending_rechtskreiswechsel: uuid.UUID | None = None

    @property
    def scope(self) -> ChainScope:
        return ChainScope(self.jurisdiction_path, self.row.case_management_organisation_id)


def _template_of(catalog: TemplateCatalog, key: str, version: int, session: Session | None = None
                 ) -> ChainTemplate:
    template = catalog.get(key, version) if session is None else catalog.load(session, key, version)
    if template is None:  # only if the database was changed behind the service's back
        raise RuntimeError(f"template {key} v{version} is not in the catalogue")
    return template


# Statements of the hot path, built once: constructing them per call costs more than running them.
# The chain and all its steps come in one statement, so they are one consistent snapshot.
_SELECT_CHAIN = (
    select(chains_t, jur_t.c.path.label("jurisdiction_path"), *_STEP_COLUMNS)
    .join(jur_t, jur_t.c.id == chains_t.c.lead_jurisdiction_id)
    .join(steps_t, steps_t.c.chain_id == chains_t.c.id)
    .where(chains_t.c.id == bindparam("chain_id"))
)
# The lock is taken by its own statement first. Locking inside the join would not do: under READ
# COMMITTED, a statement that waited for the lock re-reads only the locked chain row and keeps the
# steps it saw before waiting, so two clerks would both complete the same step (the concurrency
# test shows it). Read after the lock, the steps are current.
# A completion also needs to know whether a Rechtskreiswechsel waits to complete the step: asked
# in the same statement (one round trip less), so it is as current as the steps.
# (The condition of handovers.chain_hooks.pending_rechtskreiswechsel.)
_handovers_t = Handover.__table__
_SELECT_CHAIN_COMPLETING = _SELECT_CHAIN.add_columns(
    select(_handovers_t.c.id).where(
        _handovers_t.c.chain_id == bindparam("chain_id"), _handovers_t.c.subject == bindparam("subject"),
        _handovers_t.c.kind == HandoverKind.rechtskreiswechsel.value,
        one_of(_handovers_t.c.state, PENDING_VALUES),
    ).limit(1).scalar_subquery().label("pending_rechtskreiswechsel"))


def _for_the_driver(stmt) -> tuple[str, dict[str, Any]]:
    """A statement of the transition's hot path as psycopg's SQL text and its fixed parameter
    values, compiled once: run with ``exec_driver_sql`` (which the statement listeners still see)
    it skips SQLAlchemy's per-execution compile step and per-value result processing (the chain
    load makes the times UTC itself, as UTCDateTime would). PostgreSQL only; SQLite keeps the
    Core statements."""
    compiled = stmt.compile(dialect=_pg_psycopg.dialect())
    return compiled.string, dict(compiled.params)


_SELECT_CHAIN_PG = _for_the_driver(_SELECT_CHAIN)
_SELECT_CHAIN_COMPLETING_PG = _for_the_driver(_SELECT_CHAIN_COMPLETING)
LOCK_CHAIN = select(chains_t.c.id).where(chains_t.c.id == bindparam("chain_id")).with_for_update()
_UPDATE_STEP = (
    update(steps_t)
    .where(steps_t.c.id == bindparam("step_id"))
    .values(
        state=bindparam("state"), reason=bindparam("reason"), started_at=bindparam("started_at"),
        completed_at=bindparam("completed_at"), due_at=bindparam("due_at"),
        due_for=bindparam("due_for"), assigned_organisation_id=bindparam("assigned"),
        updated_at=bindparam("now"),
    )
)
INSERT_EVENTS = insert(events_t)


def load_chain(
    session: Session, catalog: TemplateCatalog, chain_id: uuid.UUID, lock: bool,
    completing: str | None = None,
) -> LoadedChain:
    params: dict[str, Any] = {"chain_id": chain_id}
    if lock and session.execute(LOCK_CHAIN, params).first() is None:
        raise NotFound(f"no chain {chain_id}", resource="chain", id=str(chain_id))
    if completing is not None:
        params["subject"] = f"step:{completing}"
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        sql, fixed = _SELECT_CHAIN_PG if completing is None else _SELECT_CHAIN_COMPLETING_PG
        rows = connection.exec_driver_sql(sql, fixed | params).all()
        utc = _utc
    else:
        rows = session.execute(_SELECT_CHAIN if completing is None else _SELECT_CHAIN_COMPLETING, params).all()
        utc = _same
    if not rows:  # every chain has at least one step, so no rows means no chain
        raise NotFound(f"no chain {chain_id}", resource="chain", id=str(chain_id))
    first = rows[0]
    values = {name: getattr(first, name) for name in _CHAIN_FIELDS}
    for name in _CHAIN_TIMES:
        values[name] = utc(values[name])
    chain = ChainRow(**values)
    steps: dict[str, StepInstance] = {}
    ids: dict[str, int] = {}
    for s in rows:
        steps[s.step_key] = StepInstance(
            key=s.step_key, owner_kind=s.owner_kind, optional=s.optional, state=s.state,
            reason=s.step_reason, started_at=utc(s.step_started_at), completed_at=utc(s.step_completed_at),
            due_at=utc(s.due_at), due_for=s.due_for, assigned_organisation_id=s.assigned_organisation_id,
        )
        ids[s.step_key] = s.step_id
    agreed = agreed_steps(chain.agreed_steps)
    template = with_agreed_steps(_template_of(catalog, chain.template_key, chain.template_version, session),
                                 agreed)
    return LoadedChain(chain, first.jurisdiction_path, template, steps, ids, agreed,
                       first.pending_rechtskreiswechsel if completing is not None else None)


_CHAIN_TIMES = ("started_at", "completed_at", "closed_at", "updated_at")


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _same(value: datetime | None) -> datetime | None:
    return value


def step_event_rows(
    chain_id: uuid.UUID, changes: list[StateChange], actor: Actor, now: datetime,
    steps: dict[str, StepInstance] | None = None,
) -> list[dict[str, Any]]:
    """One event per change; each names the organisation the step is assigned to after it."""
    return [
        {
            "chain_id": chain_id, "kind": EVENT_STEP, "step_key": c.step_key, "action": c.action,
            "from_state": c.from_state, "to_state": c.to_state, "reason": c.reason,
            "actor_user": actor.user_id, "actor_organisation_id": actor.organisation_id,
            "organisation_id": steps[c.step_key].assigned_organisation_id if steps else None,
            "previous_organisation_id": None, "previous_step_key": None, "occurred_at": now,
        }
        for c in changes
    ]


def chain_event_row(chain_id: uuid.UUID, kind: str, actor: Actor, now: datetime, reason: str | None = None,
                    to_state: str | None = None, step_key: str | None = None,
                    organisation_id: int | None = None, previous_organisation_id: int | None = None,
                    from_state: str | None = None, action: str | None = None,
                    previous_step_key: str | None = None) -> dict[str, Any]:
    return {
        "chain_id": chain_id, "kind": kind, "step_key": step_key, "action": action,
        "from_state": from_state, "to_state": to_state, "reason": reason, "actor_user": actor.user_id,
        "actor_organisation_id": actor.organisation_id, "organisation_id": organisation_id,
        "previous_organisation_id": previous_organisation_id, "previous_step_key": previous_step_key,
        "occurred_at": now,
    }


def assign_ready_steps(session: Session, loaded: LoadedChain) -> None:
    """Give every step that has become ready and has nobody yet its organisation: the chain's
    case management for its own steps, otherwise the nearest organisation of the owner kind that
    serves the chain's lead jurisdiction (the rule handovers use). A kind nobody serves leaves
    the step unassigned until the case management assigns it."""
    waiting = [s for s in loaded.steps.values()
               if s.state == StepState.ready.value and s.assigned_organisation_id is None]
    if not waiting:
        return
    kinds = {s.owner_kind for s in waiting if s.owner_kind != CASE_MANAGEMENT_OWNER}
    nearest = nearest_serving_organisations(session, kinds, loaded.jurisdiction_path)
    for step in waiting:
        agreed = loaded.agreed.get(step.key)
        if step.owner_kind == CASE_MANAGEMENT_OWNER:
            step.assigned_organisation_id = loaded.row.case_management_organisation_id
        elif agreed is not None and _serves(session, agreed.owner_organisation_id, loaded.jurisdiction_path):
            # The office the conference named, as long as it serves the chain's place (a move
            # since the agreement sends the step to the new place's office instead).
            step.assigned_organisation_id = agreed.owner_organisation_id
        else:
            step.assigned_organisation_id = nearest.get(step.owner_kind)
        step.dirty = True


def _serves(session: Session, organisation_id: int, jurisdiction_path: str) -> bool:
    path = session.scalar(select(jur_t.c.path).join(Organisation, Organisation.jurisdiction_id == jur_t.c.id)
                          .where(Organisation.id == organisation_id))
    return path is not None and jurisdiction_path.startswith(path)


def write_steps(session: Session, loaded: LoadedChain, now: datetime) -> None:
    """One executemany for every step the change touched."""
    params = [
        {
            "step_id": loaded.step_ids[step.key], "state": step.state, "reason": step.reason,
            "started_at": step.started_at, "completed_at": step.completed_at,
            "due_at": step.due_at, "due_for": step.due_for,
            "assigned": step.assigned_organisation_id, "now": now,
        }
        for step in loaded.steps.values()
        if step.dirty
    ]
    if params:
        session.execute(_UPDATE_STEP, params)
    for step in loaded.steps.values():
        step.dirty = False


_BUMP_CHAIN = (
    update(chains_t)
    .where(chains_t.c.id == bindparam("b_id"), chains_t.c.version == bindparam("b_version"))
    .values(version=bindparam("b_new_version"), updated_at=bindparam("b_now"))
)


def bump_chain(session: Session, loaded: LoadedChain, now: datetime, **values: Any) -> int:
    """Write the chain's new version; 0 rows means someone else got there first."""
    new_version = loaded.row.version + 1
    if values:
        result = session.execute(
            update(chains_t)
            .where(chains_t.c.id == loaded.row.id, chains_t.c.version == loaded.row.version)
            .values(version=new_version, updated_at=now, **values)
        )
    else:  # the usual case, a statement built once
        result = session.execute(_BUMP_CHAIN, {"b_id": loaded.row.id, "b_version": loaded.row.version,
                                               "b_new_version": new_version, "b_now": now})
    if result.rowcount != 1:
        session.rollback()
        raise VersionConflict(
            "the chain was changed by someone else at the same time; reload it",
            current_version=None,
        )
    return new_version


# A transition's three writes (the touched steps, the events, the chain's new version) in one
# statement on PostgreSQL: one round trip and one pass through the driver instead of three. The
# data-modifying CTEs all run, whatever the final UPDATE finds; when it finds no row (a concurrent
# change got there first) the caller rolls the whole transaction back, as before. The events keep
# their order (WITH ORDINALITY), so their ids follow the order of the changes.
_EVENT_COLUMNS = ("kind", "step_key", "action", "from_state", "to_state", "reason", "actor_user",
                  "actor_organisation_id", "organisation_id", "previous_organisation_id",
                  "previous_step_key", "occurred_at")
_WRITE_TRANSITION_PG = text("""
WITH touched AS (
    UPDATE chain_steps AS s
       SET state = v.state, reason = v.reason, started_at = v.started_at,
           completed_at = v.completed_at, due_at = v.due_at, due_for = v.due_for,
           assigned_organisation_id = v.assigned, updated_at = :now
      FROM unnest(CAST(:s_id AS bigint[]), CAST(:s_state AS text[]), CAST(:s_reason AS text[]),
                  CAST(:s_started_at AS timestamptz[]), CAST(:s_completed_at AS timestamptz[]),
                  CAST(:s_due_at AS timestamptz[]), CAST(:s_due_for AS text[]),
                  CAST(:s_assigned AS integer[]))
           AS v(id, state, reason, started_at, completed_at, due_at, due_for, assigned)
     WHERE s.id = v.id
), written AS (
    INSERT INTO chain_events (chain_id, kind, step_key, action, from_state, to_state, reason,
                              actor_user, actor_organisation_id, organisation_id,
                              previous_organisation_id, previous_step_key, occurred_at)
    SELECT :chain_id, e.kind, e.step_key, e.action, e.from_state, e.to_state, e.reason,
           e.actor_user, e.actor_organisation_id, e.organisation_id,
           e.previous_organisation_id, e.previous_step_key, e.occurred_at
      FROM unnest(CAST(:e_kind AS text[]), CAST(:e_step_key AS text[]), CAST(:e_action AS text[]),
                  CAST(:e_from_state AS text[]), CAST(:e_to_state AS text[]),
                  CAST(:e_reason AS text[]), CAST(:e_actor_user AS text[]),
                  CAST(:e_actor_organisation_id AS integer[]), CAST(:e_organisation_id AS integer[]),
                  CAST(:e_previous_organisation_id AS integer[]),
                  CAST(:e_previous_step_key AS text[]), CAST(:e_occurred_at AS timestamptz[]))
           WITH ORDINALITY
           AS e(kind, step_key, action, from_state, to_state, reason, actor_user,
                actor_organisation_id, organisation_id, previous_organisation_id,
                previous_step_key, occurred_at, n)
     ORDER BY e.n
)
UPDATE chains
   SET version = :new_version, updated_at = :now,
       lifecycle = COALESCE(CAST(:lifecycle AS text), lifecycle),
       completed_at = COALESCE(CAST(:completed_at AS timestamptz), completed_at)
 WHERE id = :chain_id AND version = :version
""")

_WRITE_TRANSITION_SQL = _for_the_driver(_WRITE_TRANSITION_PG)


def write_transition(session: Session, loaded: LoadedChain, events: list[dict[str, Any]], now: datetime,
                     chain_values: dict[str, Any]) -> int:
    """Write the steps the change touched, its events and the chain's new version (with
    ``chain_values``: at most ``lifecycle`` and ``completed_at``); return the new version. On
    PostgreSQL one statement, elsewhere :func:`write_steps`, the event insert and
    :func:`bump_chain`."""
    if session.get_bind().dialect.name != "postgresql" or set(chain_values) - {"lifecycle", "completed_at"}:
        write_steps(session, loaded, now)
        session.execute(INSERT_EVENTS, events)
        return bump_chain(session, loaded, now, **chain_values)
    dirty = [step for step in loaded.steps.values() if step.dirty]
    params: dict[str, Any] = {
        "now": now, "chain_id": loaded.row.id, "version": loaded.row.version,
        "new_version": loaded.row.version + 1,
        "lifecycle": chain_values.get("lifecycle"), "completed_at": chain_values.get("completed_at"),
        "s_id": [loaded.step_ids[step.key] for step in dirty],
        "s_state": [step.state for step in dirty], "s_reason": [step.reason for step in dirty],
        "s_started_at": [step.started_at for step in dirty],
        "s_completed_at": [step.completed_at for step in dirty],
        "s_due_at": [step.due_at for step in dirty], "s_due_for": [step.due_for for step in dirty],
        "s_assigned": [step.assigned_organisation_id for step in dirty],
    }
    for name in _EVENT_COLUMNS:
        params[f"e_{name}"] = [e[name] for e in events]
    sql, fixed = _WRITE_TRANSITION_SQL
    result = session.connection().exec_driver_sql(sql, fixed | params)
    for step in dirty:
        step.dirty = False
    if result.rowcount != 1:
        session.rollback()
        raise VersionConflict(
            "the chain was changed by someone else at the same time; reload it",
            current_version=None,
        )
    return loaded.row.version + 1


def _check_open(loaded: LoadedChain, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != loaded.row.version:
        raise VersionConflict(
            f"you decided on version {expected_version}, the chain is now at version "
            f"{loaded.row.version}",
            current_version=loaded.row.version,
        )
    if loaded.row.lifecycle != ChainLifecycle.open.value:
        raise ChainClosed(f"the chain is {loaded.row.lifecycle}", lifecycle=loaded.row.lifecycle)


def transition_step(
    session: Session,
    catalog: TemplateCatalog,
    actor: Actor,
    chain_id: uuid.UUID,
    step_key: str,
    action: str,
    reason: str | None,
    expected_version: int | None,
    now: datetime,
    privacy: Privacy | None = None,
) -> ChainOut:
    """Apply one action to one step, with everything it sets off, in one transaction. A reason
    goes into the append-only history, so it is checked for personal data first (with
    ``privacy`` also for the names of the chain's person; without, for the patterns only)."""
    with unit_of_work(session):
        loaded, row = act_on_step(session, catalog, actor, chain_id, step_key, action, reason,
                                  expected_version, now, privacy)
    STEP_TRANSITIONS.labels(template=loaded.template.key, action=action).inc()
    return _chain_out(row, loaded.template, loaded.steps, actor, loaded.scope, now, loaded.agreed)


def act_on_step(
    session: Session,
    catalog: TemplateCatalog,
    actor: Actor,
    chain_id: uuid.UUID,
    step_key: str,
    action: str,
    reason: str | None,
    expected_version: int | None,
    now: datetime,
    privacy: Privacy | None = None,
) -> tuple[LoadedChain, dict[str, Any]]:
    """:func:`transition_step` in the caller's transaction (no commit): the chain as changed and
    its new row."""
    lock_involved_chain(session, actor, chain_id)
    completing = action == eng.Action.complete.value
    loaded = load_chain(session, catalog, chain_id, lock=False, completing=step_key if completing else None)
    _check_open(loaded, expected_version)
    if step_key not in loaded.steps:
        raise NotFound(f"chain {chain_id} has no step '{step_key}'", resource="step", id=step_key)
    if completing:
        waiting = loaded.pending_rechtskreiswechsel
        if waiting is not None:
            raise HandoverPending(
                f"step '{step_key}' completes when the Rechtskreiswechsel is acknowledged; "
                "withdraw the handover to complete it yourself", handover_id=str(waiting))
    machine = eng.machines.for_template(loaded.template)
    changes = eng.apply_action(
        loaded.template, machine, loaded.steps, step_key, action, reason, actor,
        loaded.scope, now,
    )
    _check_reason(session, privacy, changes[0].reason, "reason", loaded, actor, now)
    assign_ready_steps(session, loaded)
    events = step_event_rows(chain_id, changes, actor, now, loaded.steps)
    chain_values: dict[str, Any] = {}
    if eng.all_steps_ended(loaded.steps.values()):
        chain_values = {"lifecycle": ChainLifecycle.completed.value, "completed_at": now}
        events.append(chain_event_row(chain_id, EVENT_CHAIN_COMPLETED, actor, now,
                                      to_state=ChainLifecycle.completed.value,
                                      organisation_id=loaded.row.case_management_organisation_id))
    version = write_transition(session, loaded, events, now, chain_values)
    write_audit(session, [_audit(actor, loaded.row.id, loaded.row.person_id, "U",
                                 f"chain.step.{action}", _describe(changes))], now)
    return loaded, loaded.row.as_dict() | chain_values | {"version": version, "updated_at": now}


def start_chain(
    session: Session,
    catalog: TemplateCatalog,
    actor: Actor,
    person_id: uuid.UUID,
    template_key: str,
    now: datetime,
) -> ChainOut:
    """Open a chain for a person from the current version of a template; the actor's
    organisation runs its case management."""
    try:
        row, template, steps, scope = open_chain(session, catalog, actor, person_id, template_key, now)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise DuplicateChain(f"the person already has an open '{template_key}' chain") from None
    except BaseException:
        session.rollback()
        raise
    return _chain_out(row, template, steps, actor, scope, now)


def open_chain(
    session: Session,
    catalog: TemplateCatalog,
    actor: Actor,
    person_id: uuid.UUID,
    template_key: str,
    now: datetime,
) -> tuple[dict[str, Any], ChainTemplate, dict[str, StepInstance], ChainScope]:
    """:func:`start_chain` in the caller's transaction (no commit)."""
    template = catalog.current.get(template_key)
    if template is None:
        raise NotFound(f"no chain template '{template_key}'", resource="template", id=template_key)
    person = person_in_scope(session, actor, person_id)
    jurisdiction = session.get(Jurisdiction, person.lead_jurisdiction_id)
    assert jurisdiction is not None
    if not jurisdiction.path.startswith(actor.jurisdiction_path):
        raise WrongOrganisation(
            f"your organisation does not serve {jurisdiction.name}, where the person lives",
            owner="case management of " + jurisdiction.name,
        )
    open_chain_id = session.scalar(
        select(Chain.id).where(
            Chain.person_id == person_id,
            Chain.template_key == template_key,
            Chain.lifecycle == ChainLifecycle.open.value,
        )
    )
    if open_chain_id is not None:
        raise DuplicateChain(
            f"the person already has an open '{template_key}' chain", chain_id=str(open_chain_id)
        )
    machine = eng.machines.for_template(template)
    steps, changes = eng.new_chain_steps(template, machine, now)
    chain_id = uuid.uuid4()
    row = {
        "id": chain_id, "person_id": person_id, "template_key": template.key,
        "template_version": template.version, "lead_jurisdiction_id": jurisdiction.id,
        "case_management_organisation_id": actor.organisation_id,
        "lifecycle": ChainLifecycle.open.value, "closed_reason": None, "started_at": now,
        "completed_at": None, "closed_at": None, "updated_at": now, "version": 1,
        "agreed_steps": None,
    }
    assign_ready_steps(session, LoadedChain(ChainRow(**row), jurisdiction.path, template, steps, {}))
    session.execute(insert(chains_t).values(**row))
    session.execute(
        insert(steps_t),
        [
            {
                "chain_id": chain_id, "key": s.key, "owner_kind": s.owner_kind,
                "optional": s.optional, "state": s.state, "reason": s.reason,
                "started_at": None, "completed_at": None, "due_at": s.due_at,
                "due_for": s.due_for, "assigned_organisation_id": s.assigned_organisation_id,
                "updated_at": now,
            }
            for s in steps.values()
        ],
    )
    events = [chain_event_row(chain_id, EVENT_CHAIN_STARTED, actor, now,
                              reason=f"{template.key} v{template.version}",
                              to_state=ChainLifecycle.open.value,
                              organisation_id=actor.organisation_id)]
    events += step_event_rows(chain_id, changes, actor, now, steps)
    session.execute(INSERT_EVENTS, events)
    write_audit(session, [_audit(actor, chain_id, person_id, "C", "chain.start",
                                 f"{template.key} v{template.version}")], now)
    for s in steps.values():
        s.dirty = False
    return row, template, steps, ChainScope(jurisdiction.path, actor.organisation_id)


def close_chain(
    session: Session,
    catalog: TemplateCatalog,
    actor: Actor,
    chain_id: uuid.UUID,
    reason: str,
    note: str | None,
    expected_version: int | None,
    now: datetime,
    privacy: Privacy | None = None,
) -> ChainOut:
    """End a chain before completion; open steps are cancelled. Only its case management may."""
    with unit_of_work(session):
        lock_involved_chain(session, actor, chain_id)
        loaded = load_chain(session, catalog, chain_id, lock=False)
        if actor.organisation_id != loaded.row.case_management_organisation_id:
            raise WrongOrganisation(
                "only the organisation running the chain's case management may close it",
                owner="case_management",
            )
        _check_open(loaded, expected_version)
        _check_reason(session, privacy, eng.clean_reason(note), "note", loaded, actor, now)
        text = reason if not eng.clean_reason(note) else f"{reason}: {eng.clean_reason(note)}"
        machine = eng.machines.for_template(loaded.template)
        in_template_order = [loaded.steps[spec.key] for spec in loaded.template.steps]
        changes = eng.close_steps(machine, in_template_order, text, now)
        write_steps(session, loaded, now)
        events = step_event_rows(chain_id, changes, actor, now, loaded.steps)
        events.append(chain_event_row(chain_id, EVENT_CHAIN_CLOSED, actor, now, reason=text,
                                      to_state=ChainLifecycle.closed.value,
                                      organisation_id=loaded.row.case_management_organisation_id))
        withdraw_for_closed_chain(session, actor, chain_id, reason, now)
        session.execute(INSERT_EVENTS, events)
        values = {"lifecycle": ChainLifecycle.closed.value, "closed_reason": reason, "closed_at": now}
        version = bump_chain(session, loaded, now, **values)
        write_audit(session, [_audit(actor, chain_id, loaded.row.person_id, "U", "chain.close", text)], now)
    row = loaded.row.as_dict() | values | {"version": version, "updated_at": now}
    return _chain_out(row, loaded.template, loaded.steps, actor, loaded.scope, now, loaded.agreed)


def assign_step(
    session: Session,
    catalog: TemplateCatalog,
    actor: Actor,
    chain_id: uuid.UUID,
    step_key: str,
    organisation_id: int,
    expected_version: int | None,
    now: datetime,
) -> ChainOut:
    """The case management gives a step to another organisation of its owner kind that serves
    the chain's place (say, the language school that has a place free). Recorded on the step and
    as a ``step_assigned`` event; the organisation is involved from now on if the step is ready."""
    with unit_of_work(session):
        lock_involved_chain(session, actor, chain_id)
        loaded = load_chain(session, catalog, chain_id, lock=False)
        if actor.organisation_id != loaded.row.case_management_organisation_id:
            raise WrongOrganisation("only the chain's case management assigns its steps",
                                    owner="case_management")
        _check_open(loaded, expected_version)
        step = loaded.steps.get(step_key)
        if step is None:
            raise NotFound(f"chain {chain_id} has no step '{step_key}'", resource="step", id=step_key)
        if step.owner_kind == CASE_MANAGEMENT_OWNER:
            raise _invalid_assignment("the case management's own steps stay with it")
        if step.state in {s.value for s in eng.TERMINAL}:
            raise _invalid_assignment(f"step '{step_key}' has ended ({step.state})")
        org = session.get(Organisation, organisation_id)
        if org is None:
            raise _invalid_assignment(f"no organisation {organisation_id}")
        if org.kind != step.owner_kind:
            raise _invalid_assignment(f"{org.name} is a {org.kind}; step '{step_key}' needs a {step.owner_kind}")
        if not loaded.jurisdiction_path.startswith(org.jurisdiction.path):
            raise _invalid_assignment(f"{org.name} does not serve the chain's place")
        waiting = pending_step_handover(session, chain_id, step_key)
        if waiting is not None:
            raise HandoverPending(f"a handover of step '{step_key}' is waiting; its answer decides "
                                  "who does the step", handover_id=str(waiting))
        before = step.assigned_organisation_id
        if before == org.id:
            raise _invalid_assignment(f"step '{step_key}' is already assigned to {org.name}")
        step.assigned_organisation_id, step.dirty = org.id, True
        write_steps(session, loaded, now)
        session.execute(INSERT_EVENTS, [chain_event_row(
            chain_id, EVENT_STEP_ASSIGNED, actor, now, step_key=step_key, organisation_id=org.id,
            previous_organisation_id=before,
            reason=f"assigned to organisation {org.id}" + (f" (was {before})" if before else ""))])
        version = bump_chain(session, loaded, now)
        write_audit(session, [_audit(actor, chain_id, loaded.row.person_id, "U", "chain.step.assign",
                                     f"{step_key}: {before} -> {org.id}")], now)
    row = loaded.row.as_dict() | {"version": version, "updated_at": now}
    return _chain_out(row, loaded.template, loaded.steps, actor, loaded.scope, now, loaded.agreed)


def add_agreed_step(session: Session, catalog: TemplateCatalog, privacy: Privacy, actor: Actor,
                    chain_id: uuid.UUID, *, title: str, owner: Organisation, due_date: date,
                    requires: str | None, agreement_id: uuid.UUID, conference_id: uuid.UUID,
                    conference_title: str, conference_scheduled_at: datetime, now: datetime) -> str:
    """Add a step a Fallkonferenz agreed to the chain, in the caller's transaction (the
    agreement's). The step is the owner organisation's (the case management's own when the
    conference gave it to the case management), due at the end of ``due_date``, and waits for
    ``requires`` if given. Written like every change: the step row, a ``step_added`` event (and
    ``make_ready`` if it is ready at once), the chain's new version and an audit row. The title
    goes into the append-only history, so it is checked for personal data. Returns its key."""
    lock_involved_chain(session, actor, chain_id)
    loaded = load_chain(session, catalog, chain_id, lock=False)
    _check_open(loaded, None)
    check_free_text(session, privacy, title, "add_step.title", [loaded.row.person_id], actor, now,
                    entity_type="chain", entity_id=str(chain_id))
    if not _serves(session, owner.id, loaded.jurisdiction_path):
        raise _invalid_step("owner_organisation_id", f"{owner.name} does not serve the chain's place")
    if requires is not None:
        prerequisite = loaded.steps.get(requires)
        if prerequisite is None:
            raise _invalid_step("add_step.requires", f"the chain has no step '{requires}'")
        if prerequisite.state == StepState.cancelled.value:
            raise _invalid_step("add_step.requires", f"step '{requires}' was cancelled")
    due_at = end_of_day(due_date)
    if due_at < now:
        raise _invalid_step("due_date", "an agreed step cannot be due in the past")
    key = next_agreed_key(loaded.agreed)
    kind = CASE_MANAGEMENT_OWNER if owner.id == loaded.row.case_management_organisation_id else owner.kind
    agreed = AgreedStep(key=key, title=title, owner=kind, owner_organisation_id=owner.id,
                        requires=(requires,) if requires else (), due_at=due_at.astimezone(UTC),
                        agreement_id=str(agreement_id), conference_id=str(conference_id),
                        conference_title=conference_title, conference_scheduled_at=conference_scheduled_at,
                        added_at=now)
    loaded.agreed[key] = agreed
    loaded.template = loaded.template.with_steps([agreed.spec()])
    machine = eng.machines.for_template(loaded.template)
    changes = eng.add_step(loaded.template, machine, loaded.steps, key, agreed.due_at, now)
    assign_ready_steps(session, loaded)
    step = loaded.steps[key]
    session.execute(insert(steps_t).values(
        chain_id=chain_id, key=key, owner_kind=kind, optional=False, state=step.state, reason=None,
        started_at=None, completed_at=None, due_at=step.due_at, due_for=step.due_for,
        assigned_organisation_id=step.assigned_organisation_id, agreement_id=agreement_id, updated_at=now))
    step.dirty = False
    events = [chain_event_row(chain_id, EVENT_STEP_ADDED, actor, now, step_key=key,
                              to_state=StepState.planned.value,
                              reason=f"{title} (Fallkonferenz „{conference_title}“, fällig {due_date.isoformat()})")]
    events += step_event_rows(chain_id, changes, actor, now, loaded.steps)
    session.execute(INSERT_EVENTS, events)
    bump_chain(session, loaded, now, agreed_steps=[a.to_document() for a in loaded.agreed.values()])
    write_audit(session, [_audit(actor, chain_id, loaded.row.person_id, "U", "chain.step.add",
                                 f"{key} agreed in conference {conference_id} (agreement {agreement_id}), "
                                 f"owner {owner.id}, {step.state}")], now)
    return key


def _invalid_step(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}",
                            errors=[{"field": f"body.{field}", "message": message, "type": "value_error"}])


def _check_reason(session: Session, privacy: Privacy | None, text: str | None, field: str,
                  loaded: LoadedChain, actor: Actor, now: datetime) -> None:
    """A reason is kept for ever in the append-only history: refuse personal data in it (the
    patterns, and the names of the chain's own person when the keys are at hand)."""
    if not text:
        return
    if privacy is not None:
        check_free_text(session, privacy, text, field, [loaded.row.person_id], actor, now,
                        entity_type="chain", entity_id=str(loaded.row.id))
        return
    hits = scan(text)
    if hits:
        check_free_text_hits(session, hits, text, field, actor, now, "chain", str(loaded.row.id))


def _invalid_assignment(message: str) -> ValidationFailed:
    return ValidationFailed(f"organisation_id: {message}",
                            errors=[{"field": "body.organisation_id", "message": message, "type": "value_error"}])


def get_chain(
    session: Session, catalog: TemplateCatalog, actor: Actor, chain_id: uuid.UUID, now: datetime
) -> ChainOut:
    """A chain the actor's organisation is involved in; the read is audited. A formerly involved
    organisation sees the chain as it was when its part ended; anybody else gets 404."""
    with unit_of_work(session):
        access, until = require_chain_access(session, actor, chain_id)
        loaded = load_chain(session, catalog, chain_id, lock=False)
        write_audit(session, [_audit(actor, chain_id, loaded.row.person_id, "R", "chain.read",
                                     None if until is None else f"history until {until.isoformat()}")], now)
        if access is Access.former:
            assert until is not None
            return _history_view(session, catalog, loaded, actor, until)
    return _chain_out(loaded.row.as_dict(), loaded.template, loaded.steps, actor, loaded.scope, now,
                      loaded.agreed)


def _chain_person_gate(session: Session, chain_id: uuid.UUID) -> None:
    """410 for a chain of an erased person, 423 for one of a restricted person."""
    row = session.execute(select(chains_t.c.person_id, processing_of(chains_t.c.person_id).label("processing"))
                          .where(chains_t.c.id == chain_id)).first()
    if row is not None:
        refuse_unless_active(row.processing, row.person_id)


def _refuse_chain(session: Session, actor: Actor, chain_id: uuid.UUID) -> None:
    """The actor is not involved now: 404 unless it was (it knows the chain); then 409 if the
    chain has ended for everyone, else 403."""
    if former_until(session, actor.organisation_id, chain_id) is not None:
        _chain_person_gate(session, chain_id)
        lifecycle = session.scalar(select(chains_t.c.lifecycle).where(chains_t.c.id == chain_id))
        if lifecycle != ChainLifecycle.open.value:
            raise ChainClosed(f"the chain is {lifecycle}", lifecycle=lifecycle)
        raise InvolvementEnded("your organisation's part in this chain has ended; you may read its "
                               "history up to then, not change it", resource="chain", id=str(chain_id))
    raise NotFound(f"no chain {chain_id}", resource="chain", id=str(chain_id))


# The record-scope check of a change, built once: building the involvement clause anew for every
# call cost more Python time than the statement costs the server.
_INVOLVED_CHAIN = (
    select(chains_t.c.id, chains_t.c.person_id, processing_of(chains_t.c.person_id).label("processing"))
    .where(chains_t.c.id == bindparam("chain_id"), chain_involvement(bindparam("organisation_id")))
)
_LOCK_INVOLVED_CHAIN = _INVOLVED_CHAIN.with_for_update(of=chains_t)
# On PostgreSQL the lock also brings the head of the person's audit stream (unlocked), so that the
# change's audit rows are appended in one round trip at commit (see audit.head_hint_column).
_LOCK_INVOLVED_CHAIN_PG = _for_the_driver(_LOCK_INVOLVED_CHAIN.add_columns(
    audit.head_hint_column(audit.person_stream_sql(f"{chains_t.name}.person_id"))))


def lock_involved_chain(session: Session, actor: Actor, chain_id: uuid.UUID) -> None:
    """Lock the chain row for a change, if the actor's organisation is involved now. The record
    scope is checked in the same statement as the lock, before version, state or step checks, so
    an outsider learns nothing from the answer (404 for a real and for a random id)."""
    params = {"chain_id": chain_id, "organisation_id": actor.organisation_id}
    connection = session.connection()
    if connection.dialect.name == "postgresql":  # the hot path: SQL compiled once, see load_chain
        sql, fixed = _LOCK_INVOLVED_CHAIN_PG
        found = connection.exec_driver_sql(sql, fixed | params).first()
        if found is not None:
            audit.remember_head(session, audit.stream_of_person(found.person_id), found.audit_head_hint)
    else:
        found = session.execute(_LOCK_INVOLVED_CHAIN, params).first()
    if found is None:
        _refuse_chain(session, actor, chain_id)
    else:
        refuse_unless_active(found.processing, found.person_id)


def require_chain_involvement(session: Session, actor: Actor, chain_id: uuid.UUID) -> None:
    """The actor's organisation is involved with the chain now (for changes that do not lock it)."""
    found = session.execute(
        _INVOLVED_CHAIN, {"chain_id": chain_id, "organisation_id": actor.organisation_id}
    ).first()
    if found is None:
        _refuse_chain(session, actor, chain_id)
    else:
        refuse_unless_active(found.processing, found.person_id)


# The record-scope check of a read, built once (see _INVOLVED_CHAIN): whether the organisation is
# involved now, and the processing state of the chain's person for the gate after it. On
# PostgreSQL it also brings the head of the person's audit stream, so the read's audit row is
# appended in one round trip at commit (see audit.head_hint_column).
_CHAIN_READ_ACCESS = (
    select(chains_t.c.id, chains_t.c.person_id,
           chain_involvement(bindparam("organisation_id")).label("involved"),
           processing_of(chains_t.c.person_id).label("processing"))
    .where(chains_t.c.id == bindparam("chain_id"))
)
_CHAIN_READ_ACCESS_PG = _for_the_driver(_CHAIN_READ_ACCESS.add_columns(
    audit.head_hint_column(audit.person_stream_sql(f"{chains_t.name}.person_id"))))


def require_chain_access(session: Session, actor: Actor, chain_id: uuid.UUID
                         ) -> tuple[Access, datetime | None]:
    """Read access: (current, None), (former, until) or 404; then 410/423 for an erased or
    restricted person. One statement in the usual case (involved now)."""
    params = {"chain_id": chain_id, "organisation_id": actor.organisation_id}
    connection = session.connection()
    postgresql = connection.dialect.name == "postgresql"
    if postgresql:
        sql, fixed = _CHAIN_READ_ACCESS_PG
        row = connection.exec_driver_sql(sql, fixed | params).first()
    else:
        row = session.execute(_CHAIN_READ_ACCESS, params).first()
    if row is None:
        raise NotFound(f"no chain {chain_id}", resource="chain", id=str(chain_id))
    access: tuple[Access, datetime | None] = (Access.current, None)
    if not row.involved:
        until = former_until(session, actor.organisation_id, chain_id)
        if until is None:
            raise NotFound(f"no chain {chain_id}", resource="chain", id=str(chain_id))
        access = (Access.former, until)
    refuse_unless_active(row.processing, row.person_id)
    if postgresql:
        audit.remember_head(session, audit.stream_of_person(row.person_id), row.audit_head_hint)
    return access


def _history_view(session: Session, catalog: TemplateCatalog, loaded: LoadedChain, actor: Actor,
                  until: datetime) -> ChainOut:
    """The chain as it stood when the organisation's part ended, replayed from its events:
    step states and times, the template version, the agreed steps, the lead jurisdiction and the
    case management of that moment. Nothing that happened later, and no actions."""
    if until >= loaded.row.updated_at:
        # Nothing changed since (a closed or completed chain, say): the chain as it is.
        return _former(_chain_out(_lead_as_of(session, loaded.row.as_dict(), until), loaded.template,
                                  loaded.steps, actor, loaded.scope, until, loaded.agreed), until)
    events = session.execute(
        select(events_t).where(events_t.c.chain_id == loaded.row.id, events_t.c.occurred_at <= until)
        .order_by(events_t.c.id)).all()
    # A migration after ``until`` started from the version the chain had then.
    migrated_from = session.scalar(
        select(events_t.c.from_state).where(events_t.c.chain_id == loaded.row.id,
                                            events_t.c.kind == EVENT_TEMPLATE_MIGRATED,
                                            events_t.c.occurred_at > until)
        .order_by(events_t.c.id).limit(1))
    version = int(migrated_from) if migrated_from is not None else loaded.row.template_version
    agreed = {k: a for k, a in loaded.agreed.items() if a.added_at <= until}
    template = with_agreed_steps(_template_of(catalog, loaded.row.template_key, version, session), agreed)
    # Replayed under the key each step had at each event: a migration may have renamed it.
    seen: dict[str, StepInstance] = {}

    def at(key: str) -> StepInstance:
        return seen.setdefault(key, StepInstance(key=key, owner_kind="", optional=False))

    lifecycle, completed_at, closed_at, closed_reason = ChainLifecycle.open.value, None, None, None
    for e in events:
        if e.kind == EVENT_STEP and e.step_key:
            step = at(e.step_key)
            step.state = e.to_state
            step.assigned_organisation_id = e.organisation_id
            if e.action in ("block", "skip", "cancel", "complete", eng.SystemAction.skip_on_migration.value):
                step.reason = e.reason
            if e.to_state == StepState.in_progress.value and step.started_at is None:
                step.started_at = e.occurred_at
            if e.to_state == StepState.completed.value:
                step.completed_at = e.occurred_at
        elif e.kind == EVENT_STEP_ASSIGNED and e.step_key:
            at(e.step_key).assigned_organisation_id = e.organisation_id
        elif e.kind == EVENT_STEP_MIGRATED and e.step_key:
            if e.previous_step_key is not None and e.previous_step_key in seen:
                seen[e.step_key] = seen.pop(e.previous_step_key)
            if e.action == "removed":
                seen.pop(e.step_key, None)
            else:
                at(e.step_key).assigned_organisation_id = e.organisation_id
        elif e.kind == EVENT_CHAIN_COMPLETED:
            lifecycle, completed_at = ChainLifecycle.completed.value, e.occurred_at
        elif e.kind == EVENT_CHAIN_CLOSED:
            lifecycle, closed_at = ChainLifecycle.closed.value, e.occurred_at
            closed_reason = loaded.row.closed_reason
    steps = {}
    for spec in template.steps:
        replayed = seen.get(spec.key)
        step = StepInstance(key=spec.key, owner_kind=spec.owner, optional=spec.optional)
        if replayed is not None:
            step.state, step.reason = replayed.state, replayed.reason
            step.started_at, step.completed_at = replayed.started_at, replayed.completed_at
            step.assigned_organisation_id = replayed.assigned_organisation_id
        steps[spec.key] = step
    row = loaded.row.as_dict() | {
        "lifecycle": lifecycle, "completed_at": completed_at, "closed_at": closed_at,
        "closed_reason": closed_reason, "updated_at": until, "template_version": version,
    }
    return _former(_chain_out(_lead_as_of(session, row, until), template, steps, actor, loaded.scope, until,
                              agreed), until)


def _lead_as_of(session: Session, row: dict[str, Any], until: datetime) -> dict[str, Any]:
    """The lead jurisdiction and case management at ``until``: a relocation acknowledged then or
    later moved them, so its sending side is what held at that moment."""
    moved = session.execute(
        select(Handover.from_jurisdiction_id, Handover.case_management_organisation_id)
        .where(Handover.chain_id == row["id"], Handover.kind == "relocation",
               Handover.state == "acknowledged", Handover.responded_at >= until)
        .order_by(Handover.responded_at).limit(1)).first()
    if moved is None:
        return row
    return row | {"lead_jurisdiction_id": moved.from_jurisdiction_id,
                  "case_management_organisation_id": moved.case_management_organisation_id}


def _former(out: ChainOut, until: datetime) -> ChainOut:
    for step_out in out.steps:
        step_out.allowed_actions = []
    out.access, out.history_until = Access.former.value, until
    return out


def chain_scope_clause(actor: Actor):
    """Chains the actor's organisation is involved with now (see casemgmt.involvement)."""
    return chain_involvement(actor.organisation_id)


def require_chain_in_scope(session: Session, actor: Actor, chain_id: uuid.UUID) -> None:
    """Kept for callers that act on a chain: involvement now, else 403/404."""
    require_chain_involvement(session, actor, chain_id)


def _audit(actor: Actor, chain_id: uuid.UUID, person_id: uuid.UUID, action: str, subtype: str,
           detail: str | None = None) -> AuditEntry:
    return AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id,
                      action=action, subtype=subtype, entity_type="chain", entity_id=str(chain_id),
                      person_id=person_id, detail=detail)


def _describe(changes: list[StateChange]) -> str:
    return "; ".join(f"{c.step_key}: {c.from_state} -> {c.to_state}" for c in changes)


def _chain_out(
    row: dict[str, Any],
    template: ChainTemplate,
    steps: dict[str, StepInstance],
    actor: Actor,
    scope: ChainScope,
    now: datetime,
    agreed: dict[str, AgreedStep] | None = None,
) -> ChainOut:
    machine = eng.machines.for_template(template)
    lifecycle = row["lifecycle"]
    out_steps = []
    for spec in template.steps:
        s = steps[spec.key]
        made = (agreed or {}).get(spec.key)
        out_steps.append(
            StepOut(
                key=s.key, title=spec.title, owner=spec.owner, requires=list(spec.requires),
                optional=s.optional, state=StepState(s.state), reason=s.reason,
                started_at=s.started_at, completed_at=s.completed_at, due_at=s.due_at,
                due_for=s.due_for, overdue=eng.is_overdue(s, now),
                assigned_organisation_id=s.assigned_organisation_id,
                allowed_actions=eng.allowed_actions(machine, s, actor, scope, lifecycle),
                agreed_in=None if made is None else AgreedInOut(
                    conference_id=made.conference_id, conference_title=made.conference_title,
                    conference_scheduled_at=made.conference_scheduled_at,
                    agreement_id=made.agreement_id),
            )
        )
    return ChainOut(
        id=row["id"], person_id=row["person_id"], template_key=row["template_key"],
        template_version=row["template_version"], template_title=template.title,
        lead_jurisdiction_id=row["lead_jurisdiction_id"],
        case_management_organisation_id=row["case_management_organisation_id"],
        status=eng.derive_status(lifecycle, steps.values(), now),
        closed_reason=row["closed_reason"], started_at=row["started_at"],
        completed_at=row["completed_at"], closed_at=row["closed_at"],
        updated_at=row["updated_at"], version=row["version"], steps=out_steps,
    )


# --- listing -----------------------------------------------------------------------------

_OPEN_STATES = [s.value for s in eng.OPEN_STATES]


def overdue_step_clause(now: datetime):
    """SQL twin of :func:`engine.is_overdue` (kept equal by a property test)."""
    return and_(
        steps_t.c.due_at.is_not(None),
        steps_t.c.due_at < now,
        steps_t.c.state.in_(_OPEN_STATES),
        or_(steps_t.c.due_for == "completion", steps_t.c.started_at.is_(None)),
    )


def stalled_clause(now: datetime):
    """The chain is open and has a blocked or overdue step (SQL twin of derive_status)."""
    return and_(
        chains_t.c.lifecycle == ChainLifecycle.open.value,
        exists().where(
            steps_t.c.chain_id == chains_t.c.id,
            or_(steps_t.c.state == StepState.blocked.value, overdue_step_clause(now)),
        ),
    )


@dataclass(frozen=True)
class ChainFilters:
    status: eng.ChainStatus | None = None
    overdue: bool | None = None
    organisation_id: int | None = None
    template_key: str | None = None
    jurisdiction_id: int | None = None
    person_id: uuid.UUID | None = None


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor from a previous page; anything else is the client's error, never a 500."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=" * (-len(cursor) % 4)))
        at, last_id = raw
        if not isinstance(at, str) or not isinstance(last_id, str):
            raise ValueError("cursor parts must be strings")
        started_at = datetime.fromisoformat(at)
        if started_at.tzinfo is None:
            raise ValueError("cursor time without time zone")
        return started_at.astimezone(UTC), uuid.UUID(last_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed(
            "cursor: not a cursor returned by this endpoint",
            errors=[{"field": "query.cursor", "message": "invalid cursor", "type": "value_error"}],
        ) from None


def encode_cursor(started_at: datetime, chain_id: uuid.UUID) -> str:
    raw = json.dumps([started_at.isoformat(), str(chain_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def status_clause(status: eng.ChainStatus, now: datetime):
    if status is eng.ChainStatus.closed:
        return chains_t.c.lifecycle == ChainLifecycle.closed.value
    if status is eng.ChainStatus.completed:
        return chains_t.c.lifecycle == ChainLifecycle.completed.value
    if status is eng.ChainStatus.stalled:
        return stalled_clause(now)
    return and_(chains_t.c.lifecycle == ChainLifecycle.open.value, ~stalled_clause(now))


def list_chains(
    session: Session, filters: ChainFilters, limit: int, cursor: str | None, now: datetime,
    actor: Actor | None = None,
) -> ChainPage:
    """Chains newest first, keyset-paginated so deep pages cost the same as the first. With an
    actor, only chains that involve the actor's organisation."""
    params: dict[str, Any] = {"now": now, "limit": limit + 1}
    if actor is not None:
        params["actor_organisation_id"] = actor.organisation_id
    if filters.template_key is not None:
        params["template_key"] = filters.template_key
    if filters.person_id is not None:
        params["person_id"] = filters.person_id
    if filters.jurisdiction_id is not None:
        area = session.get(Jurisdiction, filters.jurisdiction_id)
        if area is None:
            raise NotFound(f"no jurisdiction {filters.jurisdiction_id}", resource="jurisdiction",
                           id=str(filters.jurisdiction_id))
        params["area_path"] = area.path
    if filters.organisation_id is not None:
        org = session.get(Organisation, filters.organisation_id)
        if org is None:
            raise NotFound(f"no organisation {filters.organisation_id}", resource="organisation",
                           id=str(filters.organisation_id))
        params["organisation_id"] = org.id
    if cursor:
        params["cursor_at"], params["cursor_id"] = decode_cursor(cursor)
    stmt = _list_statement(actor is not None, filters.status, filters.overdue, filters.template_key is not None,
                           filters.person_id is not None, filters.jurisdiction_id is not None,
                           filters.organisation_id is not None, bool(cursor))
    page = session.execute(stmt, params).all()
    more = len(page) > limit
    page = page[:limit]
    ids = [r.id for r in page]
    items = _summaries(session, ids, now)
    session.rollback()
    next_cursor = encode_cursor(page[-1].started_at, page[-1].id) if more else None
    return ChainPage(items=items, next_cursor=next_cursor)


@functools.lru_cache(maxsize=512)
def _list_statement(scoped: bool, status: eng.ChainStatus | None, overdue: bool | None, template: bool,
                    person: bool, area: bool, organisation: bool, after_cursor: bool):
    """The page query of :func:`list_chains` for one combination of filters, with every value a
    bound parameter, built once: building it for each request cost about 0.5 ms of Python,
    more than the database spends on it."""
    now = bindparam("now")
    stmt = select(chains_t.c.id, chains_t.c.started_at)
    # A restricted or erased person's chains are stored, not shown (casemgmt.rights).
    conds = [chains_t.c.id.in_(listed_chain_ids(bindparam("actor_organisation_id"))),
             active_person(chains_t.c.person_id)] if scoped else []
    if status is not None:
        conds.append(status_clause(status, now))
    if overdue is not None:
        has_overdue = and_(
            chains_t.c.lifecycle == ChainLifecycle.open.value,
            exists().where(steps_t.c.chain_id == chains_t.c.id, overdue_step_clause(now)),
        )
        conds.append(has_overdue if overdue else ~has_overdue)
    if template:
        conds.append(chains_t.c.template_key == bindparam("template_key"))
    if person:
        conds.append(chains_t.c.person_id == bindparam("person_id"))
    if area:
        inside = select(jur_t.c.id).where(jur_t.c.path.startswith(bindparam("area_path", type_=jur_t.c.path.type)))
        conds.append(chains_t.c.lead_jurisdiction_id.in_(inside))
    if organisation:
        # Of the chains the caller sees, those the named organisation is involved with too.
        conds.append(chains_t.c.id.in_(involved_chain_ids(bindparam("organisation_id"))))
    if after_cursor:
        at, last_id = bindparam("cursor_at"), bindparam("cursor_id")
        conds.append(or_(chains_t.c.started_at < at, and_(chains_t.c.started_at == at, chains_t.c.id < last_id)))
    return (stmt.where(*conds).order_by(chains_t.c.started_at.desc(), chains_t.c.id.desc())
            .limit(bindparam("limit", type_=Integer)))


# The step counts of a page of chains, built once (see _list_statement).
_ENDED_STEP = steps_t.c.state.in_([StepState.completed.value, StepState.skipped.value])
_STEP_COUNTS = (
    select(
        steps_t.c.chain_id,
        func.count().label("total"),
        func.count().filter(_ENDED_STEP).label("ended"),
        func.count().filter(steps_t.c.state == StepState.blocked.value).label("blocked"),
        func.count().filter(overdue_step_clause(bindparam("now"))).label("overdue"),
        func.min(steps_t.c.due_at).filter(steps_t.c.state.in_(_OPEN_STATES)).label("next_due"),
    )
    .where(steps_t.c.chain_id.in_(bindparam("ids", expanding=True)))
    .group_by(steps_t.c.chain_id)
    .subquery()
)
_SUMMARIES = (
    select(chains_t, _STEP_COUNTS)
    .join(_STEP_COUNTS, _STEP_COUNTS.c.chain_id == chains_t.c.id)
    .where(chains_t.c.id.in_(bindparam("ids", expanding=True)))
)


def _summaries(session: Session, ids: list[uuid.UUID], now: datetime) -> list[ChainSummary]:
    if not ids:
        return []
    rows = session.execute(_SUMMARIES, {"ids": ids, "now": now}).all()
    by_id = {r.id: r for r in rows}
    out = []
    for chain_id in ids:
        r = by_id[chain_id]
        if r.lifecycle == ChainLifecycle.closed.value:
            status = eng.ChainStatus.closed
        elif r.lifecycle == ChainLifecycle.completed.value:
            status = eng.ChainStatus.completed
        elif r.blocked or r.overdue:
            status = eng.ChainStatus.stalled
        else:
            status = eng.ChainStatus.active
        out.append(
            ChainSummary(
                id=r.id, person_id=r.person_id, template_key=r.template_key,
                template_version=r.template_version, lead_jurisdiction_id=r.lead_jurisdiction_id,
                case_management_organisation_id=r.case_management_organisation_id,
                status=status, started_at=r.started_at, updated_at=r.updated_at,
                version=r.version, steps_total=r.total, steps_ended=r.ended,
                steps_blocked=r.blocked, steps_overdue=r.overdue,
                next_due_at=r.next_due,
            )
        )
    return out


def chain_events(session: Session, actor: Actor, chain_id: uuid.UUID, now: datetime) -> list[ChainEvent]:
    """The chain's timeline, oldest first; the read is audited."""
    with unit_of_work(session):
        _access, until = require_chain_access(session, actor, chain_id)
        stmt = select(ChainEvent).where(ChainEvent.chain_id == chain_id)
        if until is not None:  # a former organisation reads the history up to its part's end
            stmt = stmt.where(ChainEvent.occurred_at <= until)
        events = list(session.scalars(stmt.order_by(ChainEvent.id)))
        person_id = session.scalar(select(Chain.person_id).where(Chain.id == chain_id))
        write_audit(session, [_audit(actor, chain_id, person_id, "R", "chain.timeline",
                                     None if until is None else f"history until {until.isoformat()}")], now)
    return events
