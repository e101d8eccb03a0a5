"""Endpoints for chain templates, chains, step actions and timelines. Thin: parse, call the
service, return."""

from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains import service
from casemgmt.chains.engine import Actor, ChainStatus
from casemgmt.chains.schemas import (
    ChainCloseIn,
    ChainEventOut,
    ChainOut,
    ChainPage,
    ChainStart,
    DueRuleOut,
    StepActionIn,
    StepAssignmentIn,
    StepDiffOut,
    TemplateDiffOut,
    TemplateOut,
    TemplateStepOut,
    TemplateSummary,
    TemplateVersionOut,
    ValueChange,
)
from casemgmt.chains.migration import compose_renames, diff_templates, plans_between
from casemgmt.chains.spec import ChainTemplate, StepSpec
from casemgmt.clock import request_now
from casemgmt.problems import NotFound
from casemgmt.validation import DbId, Key

templates_router = APIRouter(prefix="/templates", tags=["templates"],
                             dependencies=[Depends(require("reference.read"))])
router = APIRouter(prefix="/chains", tags=["chains"])


def _catalog(request: Request):
    return request.app.state.catalog


def _step_out(s: StepSpec) -> TemplateStepOut:
    return TemplateStepOut(
        key=s.key, title=s.title, description=s.description, owner=s.owner,
        requires=list(s.requires), optional=s.optional,
        due=DueRuleOut(after=s.due.anchor, on=s.due.anchor_event, days=s.due.days,
                       deadline_for=s.due.deadline_for) if s.due else None,
    )


def _template_out(t: ChainTemplate) -> TemplateOut:
    return TemplateOut(key=t.key, version=t.version, title=t.title, description=t.description,
                       steps=[_step_out(s) for s in t.steps])


def _known_versions(request: Request, key: str) -> list[ChainTemplate]:
    found = _catalog(request).versions_of(key)
    if not found:
        raise NotFound(f"no chain template {key}", resource="template", id=key)
    return found


@templates_router.get("", response_model=list[TemplateSummary])
def list_templates(request: Request):
    catalog = _catalog(request)
    return [
        TemplateSummary(key=t.key, version=t.version, title=t.title, description=t.description,
                        step_count=len(t.steps),
                        versions=[v.version for v in catalog.versions_of(t.key)])
        for t in sorted(catalog.current.values(), key=lambda t: t.key)
    ]


@templates_router.get("/{key}/versions", response_model=list[TemplateVersionOut])
def list_template_versions(request: Request, key: Key):
    """Every version of the template this installation knows: the file's current one, and the
    earlier ones running chains may still use until they are migrated."""
    catalog = _catalog(request)
    plans = request.app.state.policies.migrations.get(key, {})
    current = catalog.current.get(key)
    return [
        TemplateVersionOut(version=t.version, title=t.title, step_count=len(t.steps), digest=t.digest(),
                           registered_at=catalog.registered_at(key, t.version),
                           current=current is not None and current.version == t.version,
                           migration_plan_from_previous=(t.version - 1) in plans)
        for t in _known_versions(request, key)
    ]


@templates_router.get("/{key}/diff", response_model=TemplateDiffOut)
def diff_template_versions(
    request: Request,
    key: Key,
    from_version: int = Query(alias="from", ge=1, le=2**31 - 1),
    to_version: int = Query(alias="to", ge=1, le=2**31 - 1),
):
    """What changed between two versions: steps added and removed, renamed (where the migration
    plans say so), and per step a changed owner, due rule, prerequisites, optional flag or title."""
    catalog = _catalog(request)
    _known_versions(request, key)
    before, after = catalog.get(key, from_version), catalog.get(key, to_version)
    for version, found in ((from_version, before), (to_version, after)):
        if found is None:
            raise NotFound(f"no chain template {key} v{version}", resource="template", id=f"{key} v{version}")
    assert before is not None and after is not None
    plans = request.app.state.policies.migrations.get(key, {})
    chain = plans_between(plans, from_version, to_version) if from_version < to_version else None
    diff = diff_templates(before, after, compose_renames(chain) if chain else None)
    previous = {new: old for old, new in diff.renamed.items()}
    return TemplateDiffOut(
        template_key=key, from_version=from_version, to_version=to_version,
        added=[_step_out(after.step(k)) for k in diff.added],
        removed=[_step_out(before.step(k)) for k in diff.removed],
        renamed=dict(diff.renamed),
        changed=[StepDiffOut(key=k, previous_key=previous.get(k),
                             changes={name: ValueChange(before=b, after=a) for name, (b, a) in changes.items()})
                 for k, changes in diff.changed.items()],
    )


@templates_router.get("/{key}", response_model=TemplateOut)
def get_template(request: Request, key: Key, version: int | None = Query(default=None, ge=1, le=2**31 - 1)):
    catalog = _catalog(request)
    template = catalog.current.get(key) if version is None else catalog.get(key, version)
    if template is None:
        what = key if version is None else f"{key} v{version}"
        raise NotFound(f"no chain template {what}", resource="template", id=what)
    return _template_out(template)


@router.post("", response_model=ChainOut, status_code=201)
def start_chain(
    request: Request,
    body: ChainStart,
    actor: Actor = Depends(require("chains.start")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    return service.start_chain(session, _catalog(request), actor, body.person_id, body.template_key, now)


@router.get("", response_model=ChainPage)
def list_chains(
    status: ChainStatus | None = None,
    overdue: bool | None = None,
    organisation_id: DbId | None = None,
    template_key: Key | None = None,
    jurisdiction_id: DbId | None = Query(default=None, description="This jurisdiction and those below it."),
    person_id: uuid.UUID | None = None,
    limit: int = Query(default=50, ge=1, le=200),
    cursor: str | None = Query(default=None, max_length=200),
    actor: Actor = Depends(require("chains.read")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    filters = service.ChainFilters(
        status=status, overdue=overdue, organisation_id=organisation_id,
        template_key=template_key, jurisdiction_id=jurisdiction_id, person_id=person_id,
    )
    return service.list_chains(session, filters, limit, cursor, now, actor=actor)


@router.get("/{chain_id}", response_model=ChainOut)
def get_chain(
    request: Request,
    chain_id: uuid.UUID,
    actor: Actor = Depends(require("chains.read")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    return service.get_chain(session, _catalog(request), actor, chain_id, now)


@router.post("/{chain_id}/steps/{step_key}/actions", response_model=ChainOut)
def act_on_step(
    request: Request,
    chain_id: uuid.UUID,
    step_key: Key,
    body: StepActionIn,
    actor: Actor = Depends(require("steps.act")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    return service.transition_step(
        session, _catalog(request), actor, chain_id, step_key, body.action.value, body.reason,
        body.expected_version, now, privacy=request.app.state.privacy,
    )


@router.post("/{chain_id}/steps/{step_key}/assignment", response_model=ChainOut)
def assign_step(
    request: Request,
    chain_id: uuid.UUID,
    step_key: Key,
    body: StepAssignmentIn,
    actor: Actor = Depends(require("steps.act")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """The case management gives a step to another organisation of the step's owner kind that
    serves the chain's place. That organisation does the step from now on (and sees the person
    once the step is ready); the one it was assigned to before keeps only its own history."""
    return service.assign_step(session, _catalog(request), actor, chain_id, step_key,
                               body.organisation_id, body.expected_version, now)


@router.post("/{chain_id}/close", response_model=ChainOut)
def close_chain(
    request: Request,
    chain_id: uuid.UUID,
    body: ChainCloseIn,
    actor: Actor = Depends(require("chains.close")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    return service.close_chain(session, _catalog(request), actor, chain_id, body.reason.value,
                               body.note, body.expected_version, now, privacy=request.app.state.privacy)


@router.get("/{chain_id}/events", response_model=list[ChainEventOut])
def chain_timeline(
    chain_id: uuid.UUID,
    actor: Actor = Depends(require("chains.read")),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    return service.chain_events(session, actor, chain_id, now)
