"""Erstgespräch use cases. Each public function is one transaction.

The case management holds the interview by the Gesprächsleitfaden (casemgmt.interviews.guide).
Answers are person fields: they are parsed by the data catalogue, written through
:func:`casemgmt.privacy.service.write_fields` (the decision point decides each field; no basis, no
write, and nothing of the interview is stored) and read back only through ``disclose``. Consents
the person signed in the interview are recorded first, by the usual rules. The interview row keeps
how it was held (day, language, interpreter, guide version), which fields were answered, and what
the guide suggested; the suggestion is worked out from the answers, so it is encrypted with the
person's key like them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from casemgmt.chains import service as chains
from casemgmt.chains.catalog import TemplateCatalog
from casemgmt.chains.agreed import LOCAL_TIMEZONE
from casemgmt.chains.engine import Action, Actor, ChainLifecycle, StepState
from casemgmt.chains.models import Chain
from casemgmt.chains.schemas import ChainOut
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER, ChainTemplate
from casemgmt.database import unit_of_work
from casemgmt.interviews.guide import FIRST_INTERVIEW_STEP, Guide, Suggested, Suggestion
from casemgmt.interviews.models import Interview
from casemgmt.interviews.schemas import InterviewIn, InterviewOut, StartFromInterviewIn, SuggestedOut
from casemgmt.persons.models import Person
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.crypto import decrypt_field, encrypt_field
from casemgmt.privacy.schemas import PersonRecordOut
from casemgmt.privacy.service import (
    Privacy,
    disclose,
    person_data_key,
    person_data_key_for_writing,
    person_in_scope,
    record_signed_consent,
    resolve_purpose,
    write_audit,
    write_fields,
)
from casemgmt.problems import (
    IllegalTransition,
    InterviewUsed,
    NotFound,
    RechtskreisByHandover,
    ValidationFailed,
    WrongOrganisation,
    invalid_field,
)

_OPEN = ChainLifecycle.open.value


def _aad(interview_id: uuid.UUID) -> str:
    return f"interview-suggestion:{interview_id}"


def _audit(actor: Actor, interview_id: uuid.UUID, person_id: uuid.UUID, action: str, subtype: str, *,
           fields: tuple[str, ...] = (), purpose: str | None = None, detail: str | None = None) -> AuditEntry:
    return AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action=action,
                      subtype=subtype, entity_type="interview", entity_id=str(interview_id), person_id=person_id,
                      fields=fields, purpose=purpose, detail=detail)


def _require_case_management(session: Session, case_management_kinds, actor: Actor, person: Person) -> None:
    """The Erstgespräch is held by the case management: an organisation of a case-management kind,
    and, once a chain of the person runs, the one running it."""
    if actor.organisation_kind not in case_management_kinds:
        raise WrongOrganisation("the Erstgespräch is held by the case management", owner="case_management")
    other = session.scalar(select(Chain.case_management_organisation_id).where(
        Chain.person_id == person.id, Chain.lifecycle == _OPEN,
        Chain.case_management_organisation_id != actor.organisation_id).limit(1))
    if other is not None:
        raise WrongOrganisation("another organisation runs the case management of this person's chain; "
                                "it holds the Erstgespräch", owner="case_management")


def record_interview(session: Session, privacy: Privacy, guide: Guide, catalog: TemplateCatalog,
                     case_management_kinds, actor: Actor, person_id: uuid.UUID, body: InterviewIn,
                     now: datetime) -> InterviewOut:
    """Record an Erstgespräch: consents signed in it, then the answers (each field decided), the
    interview with its suggestion, and the answers read back through the exit point."""
    with unit_of_work(session):
        person = person_in_scope(session, actor, person_id)
        _require_case_management(session, case_management_kinds, actor, person)
        if body.held_on > now.astimezone(LOCAL_TIMEZONE).date():
            raise invalid_field("held_on", "an interview cannot have been held in the future")
        values, answers = _parse_answers(privacy, guide, body.answers)
        purpose = resolve_purpose(privacy, actor, body.purpose)
        regime = values.get("benefit_regime")
        if regime is not None and regime != person.benefit_regime and session.scalar(
                select(Chain.id).where(Chain.person_id == person.id, Chain.lifecycle == _OPEN).limit(1)):
            raise RechtskreisByHandover(
                "the person has a running chain: their Rechtskreis changes only when the receiving office "
                "acknowledges a Rechtskreiswechsel; leave the question out or answer it as it stands",
                field="benefit_regime")
        for consent in body.consents:
            record_signed_consent(session, privacy, actor, person, consent, now)
        write_fields(session, privacy, actor, person, values, purpose, now, "interview.answers")
        suggestion = guide.suggest(answers)
        interview_id = uuid.uuid4()
        key = person_data_key_for_writing(session, privacy, person.id, now)
        interview = Interview(
            id=interview_id, person_id=person.id, organisation_id=actor.organisation_id, held_by_user=actor.user_id,
            held_on=body.held_on, language=body.language.strip(), interpreter_used=body.interpreter_used,
            guide_version=guide.version, answered_fields=sorted(values),
            suggestion_ciphertext=encrypt_field(key, person.id, _aad(interview_id), suggestion.to_document()),
            chain_id=None, recorded_at=now)
        session.add(interview)
        session.flush()
        write_audit(session, [_audit(actor, interview_id, person.id, "C", "interview.record",
                                     fields=tuple(sorted(values)), purpose=purpose,
                                     detail=f"guide version {guide.version}")], now)
        record = disclose(session, privacy, actor, person, purpose, now, subtype="interview.read",
                          only=sorted(values))
        out = _out(interview, suggestion, guide, catalog, record)
    return out


def _parse_answers(privacy: Privacy, guide: Guide, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values by person field, values by question); 422 listing every bad answer."""
    errors = []
    values: dict[str, Any] = {}
    answers: dict[str, Any] = {}
    for key, value in raw.items():
        question = guide.questions.get(key)
        if question is None:
            errors.append({"field": f"body.answers.{key}", "message": "not a question of the Gesprächsleitfaden",
                           "type": "unknown_field"})
            continue
        try:
            parsed = privacy.policy.fields[question.field].parse(value)
        except ValueError as exc:
            errors.append({"field": f"body.answers.{key}", "message": str(exc), "type": "value_error"})
            continue
        values[question.field] = parsed
        answers[key] = parsed
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors=errors)
    if not values:
        raise invalid_field("answers", "an interview answers at least one question of the guide")
    return values, answers


def _template_title(catalog: TemplateCatalog, key: str) -> str:
    template = catalog.current.get(key)
    return template.title if template is not None else key


def _step_title(catalog: TemplateCatalog, template_key: str | None, step_key: str) -> str:
    candidates = [catalog.current[template_key]] if template_key in catalog.current else []
    candidates += list(catalog.current.values())
    for template in candidates:
        if step_key in template.step_keys():
            return template.step(step_key).title
    return step_key


def _suggested_steps(suggestion: Suggestion, template: ChainTemplate | None) -> list[Suggested]:
    """The suggested steps that are optional steps of the template (all of them, without one)."""
    if template is None:
        return list(suggestion.steps)
    return [s for s in suggestion.steps if s.key in template.step_keys() and template.step(s.key).optional]


def _out(interview: Interview, suggestion: Suggestion, guide: Guide, catalog: TemplateCatalog,
         record: PersonRecordOut | None) -> InterviewOut:
    def template_out(s: Suggested) -> SuggestedOut:
        return SuggestedOut(key=s.key, title=_template_title(catalog, s.key), reasons=[guide.reason(r) for r in s.rules])

    chosen = suggestion.template.key if suggestion.template else None
    return InterviewOut(
        id=interview.id, person_id=interview.person_id, organisation_id=interview.organisation_id,
        held_by_user=interview.held_by_user, held_on=interview.held_on, language=interview.language,
        interpreter_used=interview.interpreter_used, guide_version=interview.guide_version,
        answered_fields=list(interview.answered_fields),
        suggested_template=template_out(suggestion.template) if suggestion.template else None,
        alternative_templates=[template_out(a) for a in suggestion.alternatives],
        suggested_steps=[SuggestedOut(key=s.key, title=_step_title(catalog, chosen, s.key),
                                      reasons=[guide.reason(r) for r in s.rules])
                         for s in _suggested_steps(suggestion, catalog.current.get(chosen) if chosen else None)],
        chain_id=interview.chain_id, recorded_at=interview.recorded_at, record=record,
    )


def _suggestion(session: Session, privacy: Privacy, interview: Interview) -> Suggestion:
    key = person_data_key(session, privacy, interview.person_id)
    return Suggestion.from_document(decrypt_field(key, interview.person_id, _aad(interview.id),
                                                  interview.suggestion_ciphertext))


def list_interviews(session: Session, privacy: Privacy, guide: Guide, catalog: TemplateCatalog, actor: Actor,
                    person_id: uuid.UUID, now: datetime) -> list[InterviewOut]:
    """The interviews the actor's organisation held with the person (newest first); the
    suggestions come from the answers, so reading them is audited."""
    with unit_of_work(session):
        person = person_in_scope(session, actor, person_id)
        rows = session.scalars(select(Interview).where(
            Interview.person_id == person.id, Interview.organisation_id == actor.organisation_id)
            .order_by(Interview.recorded_at.desc(), Interview.id)).all()
        out = [_out(i, _suggestion(session, privacy, i), guide, catalog, None) for i in rows]
        write_audit(session, [_audit(actor, i.id, person.id, "R", "interview.read") for i in rows]
                    or [AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="R",
                                   subtype="interview.read", entity_type="person", entity_id=str(person.id),
                                   person_id=person.id, detail="no interviews")], now)
    return out


def start_from_interview(session: Session, catalog: TemplateCatalog, privacy: Privacy, guide: Guide,
                         case_management_kinds, actor: Actor, person_id: uuid.UUID, interview_id: uuid.UUID,
                         body: StartFromInterviewIn, now: datetime) -> ChainOut:
    """Take the interview into the chain it suggests (or ``template_key``), in one transaction:
    start the chain (or take the person's running chain of that template, if the actor runs it),
    complete its ``first_interview`` step, and skip the optional steps the interview did not
    suggest if asked to."""
    with unit_of_work(session):
        person = person_in_scope(session, actor, person_id)
        _require_case_management(session, case_management_kinds, actor, person)
        interview = session.scalar(select(Interview).where(
            Interview.id == interview_id, Interview.person_id == person.id,
            Interview.organisation_id == actor.organisation_id).with_for_update())
        if interview is None:
            raise NotFound(f"no interview {interview_id}", resource="interview", id=str(interview_id))
        if interview.chain_id is not None:
            raise InterviewUsed(f"the interview already went into chain {interview.chain_id}",
                                chain_id=str(interview.chain_id))
        suggestion = _suggestion(session, privacy, interview)
        template_key = body.template_key or (suggestion.template.key if suggestion.template else None)
        if template_key is None:
            raise invalid_field("template_key", "the interview suggests no template; name one")
        template = catalog.current.get(template_key)
        if template is None:
            raise NotFound(f"no chain template '{template_key}'", resource="template", id=template_key)
        if (FIRST_INTERVIEW_STEP not in template.step_keys()
                or template.step(FIRST_INTERVIEW_STEP).owner != CASE_MANAGEMENT_OWNER):
            raise invalid_field("template_key", f"'{template_key}' has no {FIRST_INTERVIEW_STEP} step of the "
                                                "case management for the interview to complete")
        chain_id = session.scalar(select(Chain.id).where(
            Chain.person_id == person.id, Chain.template_key == template_key, Chain.lifecycle == _OPEN))
        if chain_id is None:
            chain_id = chains.open_chain(session, catalog, actor, person.id, template_key, now)[0]["id"]
        loaded = chains.load_chain(session, catalog, chain_id, lock=False)
        step = loaded.steps.get(FIRST_INTERVIEW_STEP)
        if step is None:  # a running chain of an older version without the step
            raise invalid_field("template_key", f"the running chain has no {FIRST_INTERVIEW_STEP} step")
        if step.state == StepState.planned.value:
            waiting = [r for r in loaded.template.step(FIRST_INTERVIEW_STEP).requires
                       if loaded.steps[r].state not in (StepState.completed.value, StepState.skipped.value)]
            raise IllegalTransition(
                f"step '{FIRST_INTERVIEW_STEP}' of '{template_key}' waits for {', '.join(waiting)}: start the "
                "chain, and take the interview into it when the step is ready",
                state=step.state, allowed_actions=[])
        if step.state == StepState.ready.value:
            chains.act_on_step(session, catalog, actor, chain_id, FIRST_INTERVIEW_STEP, Action.start.value,
                               None, None, now)
        loaded, row = chains.act_on_step(session, catalog, actor, chain_id, FIRST_INTERVIEW_STEP,
                                         Action.complete.value, None, None, now)
        if body.skip_unsuggested_optional_steps:
            wanted = {s.key for s in suggestion.steps}
            why = f"not suggested by the Erstgespräch of {interview.held_on.isoformat()}"
            for spec in loaded.template.steps:
                current = loaded.steps[spec.key]
                if (spec.optional and spec.key not in wanted and current.started_at is None
                        and current.state in (StepState.planned.value, StepState.ready.value, StepState.blocked.value)):
                    loaded, row = chains.act_on_step(session, catalog, actor, chain_id, spec.key, Action.skip.value,
                                                     why, None, now)
        interview.chain_id = chain_id
        write_audit(session, [_audit(actor, interview.id, person.id, "U", "interview.chain",
                                     detail=f"chain {chain_id} ({template_key}): {FIRST_INTERVIEW_STEP} completed")],
                    now)
        out = chains._chain_out(row, loaded.template, loaded.steps, actor, loaded.scope, now, loaded.agreed)
    return out
