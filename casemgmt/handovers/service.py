"""Handover use cases. Each public function is one transaction.

Lock order, everywhere: the chain row first, then the handover row. Acknowledging changes the
chain (a Rechtskreiswechsel completes a step, a relocation moves the lead), so the chain lock
serialises it with step actions; the handover lock and the state check after it make twenty
concurrent acknowledgements one success and nineteen 409s.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Integer, and_, bindparam, func, insert, literal, or_, select, true, union, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from casemgmt import netguard
from casemgmt.chains import engine as eng
from casemgmt.chains import service as chains
from casemgmt.chains.catalog import TemplateCatalog
from casemgmt.chains.engine import Actor, ChainLifecycle, StepState
from casemgmt.chains.spec import CASE_MANAGEMENT_OWNER
from casemgmt.database import unit_of_work
from casemgmt.chains.models import ChainEvent
from casemgmt.handovers import lifecycle as lc
from casemgmt.handovers.chain_hooks import system_withdraw
from casemgmt.handovers.lifecycle import HandoverAction, HandoverKind, HandoverState, Parties
from casemgmt.handovers.models import Handover, HandoverEvent, OrganisationContact
from casemgmt.handovers.policy import HandoverPolicy
from casemgmt.handovers.schemas import (
    Box,
    ConsentReviewOut,
    ContactIn,
    ContactOut,
    DataPackage,
    HandoverEventOut,
    HandoverIn,
    HandoverOut,
    HandoverPage,
    HandoverSummary,
    InboxCounts,
    OrganisationRef,
    StateFilter,
)
from casemgmt.jurisdictions.models import Jurisdiction, JurisdictionLevel, Organisation
from casemgmt.jurisdictions.service import nearest_serving_organisations, serving_organisations
from casemgmt.persons.models import BenefitRegime, Person
from casemgmt.privacy import audit
from casemgmt.privacy.audit import AuditEntry
from casemgmt.rights.gate import active_person, processing_of, refuse_unless_active
from casemgmt.privacy.crypto import decrypt_field, encrypt_field
from casemgmt.privacy.schemas import Redaction
from casemgmt.privacy.service import (
    RECHTSKREISWECHSEL,
    Privacy,
    check_free_text,
    consent_grants,
    decide_category,
    disclose,
    person_data_key,
    person_data_key_for_writing,
    current_bases,
    requester_of,
    resolve_purpose,
    scope_clause,
    write_audit,
    write_fields,
)
from casemgmt.problems import (
    ChainClosed,
    HandoverPending,
    NoLegalBasis,
    HandoverStepNotReady,
    InvalidHandover,
    NotFound,
    VersionConflict,
    WebhookSecretMissing,
    WrongOrganisation,
    invalid_field,
)

handovers_t = Handover.__table__
events_t = HandoverEvent.__table__
chain_events_t = ChainEvent.__table__
orgs_t = Organisation.__table__
jur_t = Jurisdiction.__table__

SYSTEM_ESCALATION = "system:escalation"
DECIDED_WINDOW_DAYS = 30
_PENDING = list(lc.PENDING_VALUES)


def check_contact_address(channel: str, address: str,
                          outbound: netguard.OutboundPolicy = netguard.OutboundPolicy()) -> str:
    """Exactly one email address, or a signed webhook to a public http(s) URL (casemgmt.netguard);
    a clear 422 otherwise, and 409 for a webhook while no signing secret is configured."""
    address = address.strip()
    if channel == "webhook" and not outbound.signing_secret_configured:
        raise WebhookSecretMissing("webhook contacts need CASEMGMT_WEBHOOK_SECRET to be configured",
                                   setting="CASEMGMT_WEBHOOK_SECRET")
    try:
        if channel == "email":
            return netguard.check_email_address(address)
        return netguard.check_webhook_url(address, outbound.allow_private_networks)
    except netguard.RefusedAddress as exc:
        raise invalid_field("address", str(exc)) from None


def _contact_organisation(session: Session, actor: Actor, organisation_id: int) -> Organisation:
    """The organisation, if it lies in the administrator's area (else 404, like a random id)."""
    org = session.get(Organisation, organisation_id)
    if org is None or not (actor.installation_wide or org.jurisdiction.path.startswith(actor.jurisdiction_path)):
        raise NotFound(f"no organisation {organisation_id}", resource="organisation", id=str(organisation_id))
    return org


def _contact_out(c: OrganisationContact) -> ContactOut:
    return ContactOut(id=c.id, organisation_id=c.organisation_id, role=c.role, channel=c.channel,
                      address=c.address)


def list_contacts(session: Session, actor: Actor, organisation_id: int) -> list[ContactOut]:
    _contact_organisation(session, actor, organisation_id)
    out = [_contact_out(c) for c in session.scalars(select(OrganisationContact).where(
        OrganisationContact.organisation_id == organisation_id).order_by(OrganisationContact.id))]
    session.rollback()
    return out


def _contact_audit(actor: Actor, organisation_id: int, action: str, detail: str) -> AuditEntry:
    return AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action=action,
                      subtype="organisation.contact", entity_type="organisation",
                      entity_id=str(organisation_id), detail=detail)


def add_contact(session: Session, actor: Actor, organisation_id: int, body: ContactIn, now: datetime,
                outbound: netguard.OutboundPolicy = netguard.OutboundPolicy()) -> ContactOut:
    """Add where an organisation is notified; audited like every configuration change."""
    with unit_of_work(session):
        _contact_organisation(session, actor, organisation_id)
        address = check_contact_address(body.channel, body.address, outbound)
        contact = OrganisationContact(organisation_id=organisation_id, role=body.role, channel=body.channel,
                                      address=address)
        session.add(contact)
        try:
            session.flush()
        except IntegrityError:
            raise invalid_field("address", "this contact is already configured", "duplicate") from None
        out = _contact_out(contact)
        write_audit(session, [_contact_audit(actor, organisation_id, "C", f"{body.role} {body.channel}")], now)
    return out


def remove_contact(session: Session, actor: Actor, organisation_id: int, contact_id: int, now: datetime) -> None:
    with unit_of_work(session):
        _contact_organisation(session, actor, organisation_id)
        contact = session.get(OrganisationContact, contact_id)
        if contact is None or contact.organisation_id != organisation_id:
            raise NotFound(f"no contact {contact_id}", resource="contact", id=str(contact_id))
        detail = f"{contact.role} {contact.channel}"
        session.delete(contact)
        write_audit(session, [_contact_audit(actor, organisation_id, "D", detail)], now)


def _invalid(field: str, message: str) -> InvalidHandover:
    return InvalidHandover(f"{field}: {message}", field=field)


def _organisation(session: Session, organisation_id: int) -> Organisation:
    org = session.get(Organisation, organisation_id)
    if org is None:
        raise _invalid("receiver_organisation_id", f"no organisation {organisation_id}")
    return org


def _as_actor(org: Organisation, user_id: str) -> Actor:
    return Actor(user_id=user_id, organisation_id=org.id, organisation_kind=org.kind,
                 jurisdiction_path=org.jurisdiction.path)


def _serves(org: Organisation, jurisdiction_path: str) -> bool:
    return jurisdiction_path.startswith(org.jurisdiction.path)


def _pick_receiver(session: Session, requested_id: int | None, kinds: list[str],
                   jurisdiction: Jurisdiction, actor: Actor, what: str) -> Organisation:
    """The receiver named in the request, checked; or the nearest organisation of the needed kind
    that serves the jurisdiction (an office of the town before the Kreis office)."""
    if requested_id is not None:
        org = _organisation(session, requested_id)
        if org.kind not in kinds:
            raise _invalid("receiver_organisation_id",
                           f"{org.name} is a {org.kind}; {what} goes to a {' or '.join(kinds)}")
        if not _serves(org, jurisdiction.path):
            raise _invalid("receiver_organisation_id", f"{org.name} does not serve {jurisdiction.name}")
        return org
    for kind in kinds:
        candidates = [o for o in serving_organisations(session, kind, jurisdiction.id)]
        if candidates:
            return candidates[0]
    raise _invalid("receiver_organisation_id",
                   f"no {' or '.join(kinds)} serves {jurisdiction.name}; name the receiver")


@dataclass
class _Plan:
    """What a request resolved to, before anything is written."""

    subject: str
    receiver: Organisation
    step_key: str | None = None
    to_step_key: str | None = None
    regime_from: str | None = None
    regime_to: str | None = None
    to_jurisdiction: Jurisdiction | None = None


def _plan_step(session: Session, loaded: chains.LoadedChain, jurisdiction: Jurisdiction,
               actor: Actor, body: HandoverIn, agreed: bool) -> _Plan:
    if body.step_key is None:
        raise _invalid("step_key", "name the step to hand over")
    step = loaded.steps.get(body.step_key)
    if step is None:
        raise _invalid("step_key", f"the chain has no step '{body.step_key}'")
    # Who does a step is decided by the case management, by the office that has it now, or by a
    # Fallkonferenz's agreement; not by any other office that happens to be involved.
    if not agreed and actor.organisation_id not in (loaded.row.case_management_organisation_id,
                                                    step.assigned_organisation_id):
        raise WrongOrganisation(f"step '{step.key}' is handed on by the chain's case management or the "
                                "organisation it is assigned to", owner="case_management")
    if step.state in {s.value for s in eng.TERMINAL}:
        raise _invalid("step_key", f"step '{step.key}' has ended ({step.state})")
    if step.owner_kind == CASE_MANAGEMENT_OWNER:
        raise _invalid("step_key", f"step '{step.key}' belongs to the chain's case management")
    receiver = _pick_receiver(session, body.receiver_organisation_id, [step.owner_kind],
                              jurisdiction, actor, f"step '{step.key}'")
    return _Plan(subject=f"step:{step.key}", receiver=receiver, step_key=step.key)


def _plan_rechtskreiswechsel(session: Session, privacy: Privacy, loaded: chains.LoadedChain,
                             jurisdiction: Jurisdiction, person: Person, actor: Actor, body: HandoverIn,
                             now: datetime) -> _Plan:
    if body.step_key is None or body.to_step_key is None:
        raise _invalid("step_key" if body.step_key is None else "to_step_key",
                       "a Rechtskreiswechsel names your step (step_key) and the receiver's (to_step_key)")
    sending = loaded.steps.get(body.step_key)
    if sending is None:
        raise _invalid("step_key", f"the chain has no step '{body.step_key}'")
    receiving = loaded.steps.get(body.to_step_key)
    if receiving is None:
        raise _invalid("to_step_key", f"the chain has no step '{body.to_step_key}'")
    if receiving.key == sending.key:
        raise _invalid("to_step_key", "the receiving step must differ from the sending step")
    if not eng.may_act(actor, sending, loaded.scope):
        raise WrongOrganisation(f"step '{sending.key}' is not your organisation's", owner=sending.owner_kind)
    if sending.state != StepState.in_progress.value:
        raise HandoverStepNotReady(
            f"step '{sending.key}' is {sending.state}; it must be in progress until the receiver takes over",
            state=sending.state)
    if receiving.state in {s.value for s in eng.TERMINAL} or receiving.owner_kind == CASE_MANAGEMENT_OWNER:
        raise _invalid("to_step_key", f"step '{receiving.key}' cannot receive a Rechtskreiswechsel")
    regimes = [r.value for r in BenefitRegime]
    if body.benefit_regime is None or body.benefit_regime not in regimes:
        raise _invalid("benefit_regime", f"the new Rechtskreis, one of {regimes}")
    # The sender pays the benefits it hands on; it must have a basis to know the present regime,
    # and only then does it learn that the request would change nothing.
    decision = decide_category(session, privacy, actor, person, resolve_purpose(privacy, actor, None),
                               privacy.policy.fields["benefit_regime"].category, "read", now)
    if not decision.permit:
        raise NoLegalBasis("a Rechtskreiswechsel hands on the person's benefits: your organisation "
                           "has no legal basis for them", fields=[{
                               "field": "benefit_regime", "category": "benefits", "reason": decision.reason}])
    if body.benefit_regime == person.benefit_regime:
        raise _invalid("benefit_regime", "the person already has this Rechtskreis; a "
                                         "Rechtskreiswechsel names a different one")
    receiver = _pick_receiver(session, body.receiver_organisation_id, [receiving.owner_kind],
                              jurisdiction, actor, f"step '{receiving.key}'")
    return _Plan(subject=f"step:{sending.key}", receiver=receiver, step_key=sending.key,
                 to_step_key=receiving.key, regime_from=person.benefit_regime,
                 regime_to=body.benefit_regime)


def _plan_relocation(session: Session, loaded: chains.LoadedChain, jurisdiction: Jurisdiction,
                     policy: HandoverPolicy, actor: Actor, body: HandoverIn) -> _Plan:
    if actor.organisation_id != loaded.row.case_management_organisation_id:
        raise WrongOrganisation("only the chain's case management hands the chain over on relocation",
                                owner="case_management")
    if body.to_jurisdiction_id is None:
        raise _invalid("to_jurisdiction_id", "name the town or kreisfreie Stadt the person moves to")
    target = session.get(Jurisdiction, body.to_jurisdiction_id)
    if target is None:
        raise _invalid("to_jurisdiction_id", f"no jurisdiction {body.to_jurisdiction_id}")
    if target.level not in (JurisdictionLevel.gemeinde.value, JurisdictionLevel.kreisfreie_stadt.value):
        raise _invalid("to_jurisdiction_id", f"{target.name} is a {target.level}; a person moves to a town")
    if target.id == jurisdiction.id:
        raise _invalid("to_jurisdiction_id", f"the chain's lead is already {target.name}")
    own_kind_first = sorted(policy.case_management_kinds, key=lambda k: (k != actor.organisation_kind, k))
    receiver = _pick_receiver(session, body.receiver_organisation_id, own_kind_first, target, actor,
                              "a relocation")
    return _Plan(subject="chain_lead", receiver=receiver, to_jurisdiction=target)


def _consent_review(session: Session, person_id: uuid.UUID, sender: Actor, receiver: Actor,
                    now: datetime) -> list[dict[str, Any]]:
    """Consents in force, and whether each names the new case management: consent given to the
    organisations of the old town does not carry over to the new one."""
    review = []
    for grant in consent_grants(session, person_id):
        if not grant.in_force(now):
            continue
        review.append({
            "consent_id": str(grant.id), "purpose": grant.purpose,
            "categories": sorted(grant.categories),
            "covers_receiver": grant.names(requester_of(receiver)),
            "covered_sender": grant.names(requester_of(sender)),
        })
    return review


def open_handover(session: Session, catalog: TemplateCatalog, privacy: Privacy,
                  policy: HandoverPolicy, actor: Actor, chain_id: uuid.UUID, body: HandoverIn,
                  now: datetime, agreed: bool = False) -> uuid.UUID:
    """Decide and write a new handover in the caller's transaction (no commit). ``agreed``: a
    step handed on as a Fallkonferenz agreed, by its moderator."""
    chains.require_chain_in_scope(session, actor, chain_id)
    loaded = chains.load_chain(session, catalog, chain_id, lock=True)
    if loaded.row.lifecycle != ChainLifecycle.open.value:
        raise ChainClosed(f"the chain is {loaded.row.lifecycle}", lifecycle=loaded.row.lifecycle)
    jurisdiction = session.get(Jurisdiction, loaded.row.lead_jurisdiction_id)
    person = session.get(Person, loaded.row.person_id)
    assert jurisdiction is not None and person is not None
    kind = HandoverKind(body.kind)
    if kind is HandoverKind.step:
        plan = _plan_step(session, loaded, jurisdiction, actor, body, agreed)
    elif kind is HandoverKind.rechtskreiswechsel:
        plan = _plan_rechtskreiswechsel(session, privacy, loaded, jurisdiction, person, actor, body, now)
    else:
        plan = _plan_relocation(session, loaded, jurisdiction, policy, actor, body)
    receiver = plan.receiver
    if receiver.id == actor.organisation_id and kind is not HandoverKind.relocation:
        raise _invalid("receiver_organisation_id", "a handover goes to another organisation")
    waiting = session.scalar(select(handovers_t.c.id).where(
        handovers_t.c.chain_id == chain_id, handovers_t.c.subject == plan.subject,
        handovers_t.c.state.in_(_PENDING)))
    if waiting is not None:
        raise HandoverPending(f"a handover of {plan.subject} is already waiting", handover_id=str(waiting))

    receiver_actor = _as_actor(receiver, actor.user_id)
    purpose = resolve_purpose(privacy, receiver_actor, body.purpose)
    handover_id = uuid.uuid4()
    package = disclose(session, privacy, actor, person, purpose, now, subtype="handover.package",
                       recipient=receiver_actor)
    ciphertext = None
    if package.fields:
        ciphertext = encrypt_field(person_data_key_for_writing(session, privacy, person.id, now), person.id,
                                   _package_aad(handover_id), package.fields)
    review = None
    if kind is HandoverKind.relocation:
        review = _consent_review(session, person.id, actor, receiver_actor, now)
    days = policy.working_days(kind.value, actor.organisation_kind, receiver.kind)
    due_date, due_at = policy.calendar.deadline(now, days)
    sender_jurisdiction = session.scalar(select(jur_t.c.id).where(jur_t.c.path == actor.jurisdiction_path))
    values = {
        "id": handover_id, "kind": kind.value, "state": HandoverState.requested.value,
        "chain_id": chain_id, "person_id": person.id, "subject": plan.subject,
        "step_key": plan.step_key, "to_step_key": plan.to_step_key,
        "benefit_regime_from": plan.regime_from, "benefit_regime_to": plan.regime_to,
        "sender_organisation_id": actor.organisation_id,
        "sender_organisation_kind": actor.organisation_kind,
        "sender_jurisdiction_id": sender_jurisdiction, "sender_user": actor.user_id,
        "receiver_organisation_id": receiver.id, "receiver_organisation_kind": receiver.kind,
        "receiver_jurisdiction_id": receiver.jurisdiction_id,
        "case_management_organisation_id": loaded.row.case_management_organisation_id,
        "from_jurisdiction_id": jurisdiction.id,
        "to_jurisdiction_id": plan.to_jurisdiction.id if plan.to_jurisdiction else None,
        "purpose": purpose, "package_fields": sorted(package.fields),
        "package_bases": dict(sorted(package.legal_bases.items())),
        "package_redacted": [r.model_dump() for r in package.redacted],
        "package_ciphertext": ciphertext, "consent_review": review,
        "working_days": days, "requested_at": now, "due_date": due_date, "due_at": due_at,
        "version": 1, "updated_at": now,
    }
    session.execute(insert(handovers_t).values(**values))
    session.execute(insert(events_t).values(
        handover_id=handover_id, action="request", from_state=None,
        to_state=HandoverState.requested.value, reason=None, actor_user=actor.user_id,
        actor_organisation_id=actor.organisation_id, occurred_at=now))
    read: dict[str, str] = {}
    if kind is HandoverKind.rechtskreiswechsel:  # the answer shows the sender the Rechtskreis before
        h = session.execute(select(handovers_t).where(handovers_t.c.id == handover_id)).one()
        read = _regime_read(*_regime_before(session, privacy, actor, h, now))
    write_audit(session, [_audit(actor, handover_id, person.id, "C", "handover.request",
                                 f"{kind.value} to organisation {receiver.id}", read=read)], now)
    return handover_id


def request_handover(session: Session, catalog: TemplateCatalog, privacy: Privacy,
                     policy: HandoverPolicy, actor: Actor, chain_id: uuid.UUID, body: HandoverIn,
                     now: datetime) -> HandoverOut:
    """Start a handover, freezing the situation and the receiver's data package."""
    try:
        handover_id = open_handover(session, catalog, privacy, policy, actor, chain_id, body, now)
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HandoverPending("a handover of this step or chain is already waiting") from None
    except BaseException:
        session.rollback()
        raise
    # The sender sees the package's shape (fields, bases, what is withheld), not the values:
    # it may not be allowed to read everything the receiver may.
    h = session.execute(select(handovers_t).where(handovers_t.c.id == handover_id)).one()
    return _read_out(session, actor, handover_id, now, regime_from=_regime_before(session, privacy, actor, h, now)[0])


def _package_aad(handover_id: uuid.UUID) -> str:
    return f"handover:{handover_id}"


def _audit(actor: Actor, handover_id: uuid.UUID, person_id: uuid.UUID, action: str, subtype: str,
           detail: str | None = None, user: str | None = None, read: dict[str, str] | None = None) -> AuditEntry:
    """``read``: the person's fields the answer shows the actor, with the legal basis of each."""
    read = read or {}
    return AuditEntry(agent_user=user or actor.user_id, agent_organisation_id=actor.organisation_id,
                      action=action, subtype=subtype, entity_type="handover",
                      entity_id=str(handover_id), person_id=person_id, detail=detail,
                      fields=tuple(sorted(read)), legal_bases={f: read[f] for f in sorted(read)})


# --- the columns of a handover as answers show it ------------------------------------------------

_sender = aliased(Organisation.__table__, name="sender_org")
_receiver = aliased(Organisation.__table__, name="receiver_org")
# The inbox rows leave out the data package (large, encrypted, not shown in a list).
_PACKAGE_COLUMNS = {"package_fields", "package_bases", "package_redacted", "package_ciphertext", "consent_review"}
_LIST_COLUMNS = (
    *(c for c in handovers_t.c if c.name not in _PACKAGE_COLUMNS),
    _sender.c.name.label("sender_name"), _sender.c.jurisdiction_id.label("sender_org_jurisdiction"),
    _receiver.c.name.label("receiver_name"),
)
_SUMMARY_COLUMNS = (
    handovers_t,
    _sender.c.name.label("sender_name"), _sender.c.jurisdiction_id.label("sender_org_jurisdiction"),
    _receiver.c.name.label("receiver_name"),
)


def _with_orgs(stmt):
    return (stmt.join(_sender, _sender.c.id == handovers_t.c.sender_organisation_id)
            .join(_receiver, _receiver.c.id == handovers_t.c.receiver_organisation_id))


# --- responding ----------------------------------------------------------------------------------

def _visible_clause(actor: Actor):
    return or_(
        handovers_t.c.sender_organisation_id == actor.organisation_id,
        handovers_t.c.receiver_organisation_id == actor.organisation_id,
        handovers_t.c.case_management_organisation_id == actor.organisation_id,
    )


def _find(session: Session, actor: Actor, handover_id: uuid.UUID):
    row = session.execute(
        select(handovers_t.c.chain_id, handovers_t.c.person_id,
               processing_of(handovers_t.c.person_id).label("processing"))
        .where(handovers_t.c.id == handover_id, _visible_clause(actor))
    ).first()
    if row is None:
        raise NotFound(f"no handover {handover_id}", resource="handover", id=str(handover_id))
    refuse_unless_active(row.processing, row.person_id)
    return row


# --- responding: the statements of an answer, built once with bind parameters ---------------------
# (Building and compiling them anew for every call cost more CPU than running them.)

_VISIBLE = or_(
    handovers_t.c.sender_organisation_id == bindparam("organisation_id"),
    handovers_t.c.receiver_organisation_id == bindparam("organisation_id"),
    handovers_t.c.case_management_organisation_id == bindparam("organisation_id"),
)
# Record scope first, with the chain lock in the same statement: for an organisation that neither
# sends, receives nor manages the handover there is no row (404 like a random id) and no lock.
_SCOPE_AND_LOCK_CHAIN = (
    select(chains.chains_t.c.id.label("chain_id"), handovers_t.c.person_id,
           processing_of(handovers_t.c.person_id).label("processing"))
    .select_from(handovers_t.join(chains.chains_t, chains.chains_t.c.id == handovers_t.c.chain_id))
    .where(handovers_t.c.id == bindparam("handover_id"), _VISIBLE)
    .with_for_update(of=chains.chains_t)
)
# Then the handover's row lock (lock order: chain, then handover), in a statement that also reads
# what the answer shows (the organisations' names) and what acknowledging a step handover changes
# (the chain's lifecycle and version, the step). Read after the chain lock, the chain and its
# steps are current: every change to them takes that lock first.
_RESPONSE_COLUMNS = (
    *_SUMMARY_COLUMNS,
    chains.chains_t.c.lifecycle.label("chain_lifecycle"), chains.chains_t.c.version.label("chain_version"),
    chains.steps_t.c.id.label("step_id"), chains.steps_t.c.state.label("step_state"),
    chains.steps_t.c.assigned_organisation_id.label("step_assigned_organisation_id"),
)
_LOCK_HANDOVER = (
    select(*_RESPONSE_COLUMNS)
    .select_from(
        handovers_t
        .join(_sender, _sender.c.id == handovers_t.c.sender_organisation_id)
        .join(_receiver, _receiver.c.id == handovers_t.c.receiver_organisation_id)
        .join(chains.chains_t, chains.chains_t.c.id == handovers_t.c.chain_id)
        .outerjoin(chains.steps_t, and_(chains.steps_t.c.chain_id == handovers_t.c.chain_id,
                                        chains.steps_t.c.key == handovers_t.c.step_key)))
    .where(handovers_t.c.id == bindparam("handover_id"))
    .with_for_update(of=handovers_t)
)
# On PostgreSQL it also brings the head of the person's audit stream (unlocked), so that the
# answer's audit rows are appended in one round trip at commit (see audit.head_hint_column).
_LOCK_HANDOVER_WITH_AUDIT_HEAD = _LOCK_HANDOVER.add_columns(
    audit.head_hint_column(audit.person_stream_sql(f"{handovers_t.name}.person_id")))
_ANSWER_VALUES = dict(
    state=bindparam("r_state"), responded_at=bindparam("r_now"), responded_by_user=bindparam("r_user"),
    response_reason=bindparam("r_reason"), version=bindparam("r_new_version"), updated_at=bindparam("r_now"),
)
_SET_STATE = (update(handovers_t)
              .where(handovers_t.c.id == bindparam("r_id"), handovers_t.c.version == bindparam("r_version"))
              .values(**_ANSWER_VALUES))
_SET_ACKNOWLEDGED = _SET_STATE.values(waiting_calendar_days=bindparam("r_calendar_days"),
                                      waiting_working_days=bindparam("r_working_days"))
_INSERT_EVENT = insert(events_t).values(**{c: bindparam(f"e_{c}") for c in (
    "handover_id", "action", "from_state", "to_state", "reason", "actor_user", "actor_organisation_id",
    "occurred_at")})
_EVENTS = select(*(c for c in events_t.c if c.name in HandoverEventOut.model_fields)).where(
    events_t.c.handover_id == bindparam("handover_id")).order_by(events_t.c.id)
_ASSIGN_STEP = (update(chains.steps_t).where(chains.steps_t.c.id == bindparam("s_id"))
                .values(assigned_organisation_id=bindparam("s_organisation_id"), updated_at=bindparam("s_now")))
_BUMP_CHAIN = (update(chains.chains_t)
               .where(chains.chains_t.c.id == bindparam("c_id"), chains.chains_t.c.version == bindparam("c_version"))
               .values(version=bindparam("c_new_version"), updated_at=bindparam("c_now")))
_INSERT_CHAIN_EVENT = insert(chain_events_t).values(**{c: bindparam(f"ce_{c}") for c in (
    "chain_id", "kind", "step_key", "action", "from_state", "to_state", "reason", "actor_user",
    "actor_organisation_id", "organisation_id", "previous_organisation_id", "previous_step_key",
    "occurred_at")})
_TERMINAL = frozenset(s.value for s in eng.TERMINAL)
# On PostgreSQL the writes of an answer go in one statement (one round trip, one parse), the
# others as data-modifying CTEs of the handover's UPDATE: its event, and for a step handover the
# step's new organisation, the chain's event and the chain's new version. RETURNING gives the
# rows the two versioned UPDATEs changed.
_EVENT_CTE = _INSERT_EVENT.cte("handover_event")
_BUMPED_CTE = _BUMP_CHAIN.returning(chains.chains_t.c.id).cte("chain_bumped")
_BUMPED = select(func.count()).select_from(_BUMPED_CTE).scalar_subquery()
_ANSWER_IN_ONE = {
    False: _SET_STATE.add_cte(_EVENT_CTE).returning(handovers_t.c.id),
    True: _SET_ACKNOWLEDGED.add_cte(_EVENT_CTE).returning(handovers_t.c.id),
}
_STEP_TAKEN_OVER_IN_ONE = _SET_ACKNOWLEDGED.add_cte(
    _ASSIGN_STEP.cte("step_assigned"), _INSERT_CHAIN_EVENT.cte("chain_event"), _BUMPED_CTE, _EVENT_CTE,
).returning(handovers_t.c.id, _BUMPED.label("chains_bumped"))


def _scope_and_lock(session: Session, actor: Actor, handover_id: uuid.UUID):
    """Record scope (404 for outsiders, 410/423 for an erased or restricted person), then the
    chain's and the handover's row locks; the locked handover row, as the answer needs it."""
    found = session.execute(_SCOPE_AND_LOCK_CHAIN, {"handover_id": handover_id,
                                                    "organisation_id": actor.organisation_id}).first()
    if found is None:
        raise NotFound(f"no handover {handover_id}", resource="handover", id=str(handover_id))
    refuse_unless_active(found.processing, found.person_id)
    if session.get_bind().dialect.name != "postgresql":
        return session.execute(_LOCK_HANDOVER, {"handover_id": handover_id}).one()
    locked = session.execute(_LOCK_HANDOVER_WITH_AUDIT_HEAD, {"handover_id": handover_id}).one()
    audit.remember_head(session, audit.stream_of_person(found.person_id), locked.audit_head_hint)
    return locked


def respond(session: Session, catalog: TemplateCatalog, privacy: Privacy, policy: HandoverPolicy,
            actor: Actor, handover_id: uuid.UUID, action: str, reason: str | None,
            expected_version: int | None, now: datetime) -> HandoverOut:
    """Acknowledge, reject or withdraw, with what acknowledging sets off on the chain. The answer
    is built from the locked row and the values written, in the same transaction (no second
    read after the commit)."""
    with unit_of_work(session):
        h = _scope_and_lock(session, actor, handover_id)
        if expected_version is not None and expected_version != h.version:
            raise VersionConflict(
                f"you decided on version {expected_version}, the handover is now at version {h.version}",
                current_version=h.version)
        reason = eng.clean_reason(reason)
        new_state = lc.respond(h.state, action, actor.organisation_id,
                               Parties(h.sender_organisation_id, h.receiver_organisation_id), reason)
        # The reason goes into the append-only history: no personal data in it.
        check_free_text(session, privacy, reason, "reason", [h.person_id], actor, now,
                        entity_type="handover", entity_id=str(handover_id))
        values: dict[str, Any] = {
            "state": new_state.value, "responded_at": now, "responded_by_user": actor.user_id,
            "response_reason": reason, "version": h.version + 1, "updated_at": now,
        }
        step_change: dict[str, Any] | None = None
        if new_state is HandoverState.acknowledged:
            waited = lc.waiting_time(policy.calendar, h.requested_at, now)
            values |= {"waiting_calendar_days": waited.calendar_days,
                       "waiting_working_days": waited.working_days}
            if h.kind == HandoverKind.rechtskreiswechsel.value:
                _take_over_benefits(session, catalog, privacy, actor, h, now)
            elif h.kind == HandoverKind.relocation.value:
                _move_lead(session, catalog, actor, h, now)
            else:
                step_change = _step_taken_over(actor, h, now)
        event = {"e_handover_id": handover_id, "e_action": HandoverAction(action).value, "e_from_state": h.state,
                 "e_to_state": new_state.value, "e_reason": reason, "e_actor_user": actor.user_id,
                 "e_actor_organisation_id": actor.organisation_id, "e_occurred_at": now}
        _write_answer(session, h, values, event, step_change)
        regime_from, regime_basis = _regime_before(session, privacy, actor, h, now)
        write_audit(session, [_audit(actor, handover_id, h.person_id, "U", f"handover.{action}",
                                     f"{h.state} -> {new_state.value}",
                                     read=_regime_read(regime_from, regime_basis))], now)
        out = _answer_out(session, actor, h, values, now, regime_from)
    return out


def _answer_out(session: Session, actor: Actor, h, values: dict[str, Any], now: datetime,
                regime_from: str | None) -> HandoverOut:
    """The answer, as ``_read_out`` would read it after the commit: the locked row with the values
    written (times as stored: UTC), and the events including the one just written."""
    stored = {k: (v.astimezone(UTC) if isinstance(v, datetime) else v) for k, v in values.items()}
    row = SimpleNamespace(**(h._asdict() | stored))
    events = [HandoverEventOut.model_validate(e) for e in session.execute(_EVENTS, {"handover_id": h.id})]
    return _handover_out(row, actor, now, events, regime_from=regime_from)


def _state_params(h, values: dict[str, Any]) -> dict[str, Any]:
    params = {"r_id": h.id, "r_version": h.version, "r_state": values["state"], "r_now": values["updated_at"],
              "r_user": values["responded_by_user"], "r_reason": values["response_reason"],
              "r_new_version": values["version"]}
    if "waiting_calendar_days" in values:
        params |= {"r_calendar_days": values["waiting_calendar_days"],
                   "r_working_days": values["waiting_working_days"]}
    return params


def _write_answer(session: Session, h, values: dict[str, Any], event: dict[str, Any],
                  step_change: dict[str, Any] | None) -> None:
    """The handover's new state and its event, and a step handover's change to the chain: in one
    statement on PostgreSQL, one statement each elsewhere (SQLite has no data-modifying CTEs)."""
    params = _state_params(h, values) | event
    acknowledged = "waiting_calendar_days" in values
    if session.get_bind().dialect.name == "postgresql":
        if step_change is not None:
            row = session.execute(_STEP_TAKEN_OVER_IN_ONE, params | step_change).first()
            _check_written(session, row is not None, row is not None and row.chains_bumped == 1)
        else:
            _check_written(session, session.execute(_ANSWER_IN_ONE[acknowledged], params).first() is not None)
        return
    if step_change is not None:
        session.execute(_ASSIGN_STEP, step_change)
        session.execute(_INSERT_CHAIN_EVENT, step_change)
        _check_written(session, True, session.execute(_BUMP_CHAIN, step_change).rowcount == 1)
    _check_written(session, session.execute(_SET_ACKNOWLEDGED if acknowledged else _SET_STATE,
                                            params).rowcount == 1)
    session.execute(_INSERT_EVENT, params)


def _check_written(session: Session, handover: bool, chain: bool = True) -> None:
    """409 when a versioned UPDATE changed no row (the row locks make that unreachable on
    PostgreSQL; on other databases it is what stops a lost update)."""
    if not handover:
        session.rollback()
        raise VersionConflict("the handover was changed by someone else at the same time; reload it",
                              current_version=None)
    if not chain:
        session.rollback()
        raise VersionConflict("the chain was changed by someone else at the same time; reload it",
                              current_version=None)


def _give_step(loaded: chains.LoadedChain, step_key: str | None, organisation_id: int) -> tuple[bool, int | None]:
    """Assign a step that has not ended to the organisation: (whether that changed anything,
    the organisation it was assigned to before)."""
    step = loaded.steps.get(step_key) if step_key else None
    if step is None or step.state in {s.value for s in eng.TERMINAL} or step.assigned_organisation_id == organisation_id:
        return False, None
    before = step.assigned_organisation_id
    step.assigned_organisation_id, step.dirty = organisation_id, True
    return True, before


def _step_taken_over(actor: Actor, h, now: datetime) -> dict[str, Any] | None:
    """A step handover acknowledged: the step is the receiver's from now on (recorded on the
    step and as a ``step_assigned`` event, and the chain's version goes up): the parameters of
    those writes. None for a step that has ended meanwhile, or a chain no longer open: they stay
    as they were. ``h`` carries the chain and the step as read under the chain lock."""
    if h.chain_lifecycle != ChainLifecycle.open.value or h.step_id is None \
            or h.step_state in _TERMINAL or h.step_assigned_organisation_id == h.receiver_organisation_id:
        return None
    event = chains.chain_event_row(
        h.chain_id, chains.EVENT_STEP_ASSIGNED, actor, now, step_key=h.step_key,
        organisation_id=h.receiver_organisation_id, previous_organisation_id=h.step_assigned_organisation_id,
        reason=f"handover {h.id} acknowledged")
    return {"s_id": h.step_id, "s_organisation_id": h.receiver_organisation_id, "s_now": now,
            "c_id": h.chain_id, "c_version": h.chain_version, "c_new_version": h.chain_version + 1,
            "c_now": now} | {f"ce_{k}": v for k, v in event.items()}


def _take_over_benefits(session: Session, catalog: TemplateCatalog, privacy: Privacy, actor: Actor,
                        h, now: datetime) -> None:
    """The receiver took over: the sender's step completes and the person's Rechtskreis changes,
    in this transaction, so there is no moment without a responsible office."""
    loaded = chains.load_chain(session, catalog, h.chain_id, lock=False)
    if loaded.row.lifecycle != ChainLifecycle.open.value:
        raise ChainClosed(f"the chain is {loaded.row.lifecycle}", lifecycle=loaded.row.lifecycle)
    step = loaded.steps[h.step_key]
    if step.state != StepState.in_progress.value:
        raise HandoverStepNotReady(
            f"step '{step.key}' is {step.state}; resume it before the Rechtskreiswechsel can be "
            "acknowledged", state=step.state)
    person = session.get(Person, h.person_id)
    assert person is not None
    if person.benefit_regime != h.benefit_regime_from:
        # Another Rechtskreiswechsel of this person went through since this one was requested.
        raise VersionConflict("the person's Rechtskreis changed since the handover was requested; "
                              "withdraw it and request a new one", current_version=h.version)
    machine = eng.machines.for_template(loaded.template)
    why = f"Rechtskreiswechsel to {h.benefit_regime_to} acknowledged (handover {h.id})"
    changes = eng.complete_on_handover(loaded.template, machine, loaded.steps, step.key, why, now)
    # The receiving step is the acknowledging office's from now on.
    reassigned, before = _give_step(loaded, h.to_step_key, h.receiver_organisation_id)
    chains.assign_ready_steps(session, loaded)
    chains.write_steps(session, loaded, now)
    events = chains.step_event_rows(h.chain_id, changes, actor, now, loaded.steps)
    if reassigned and not any(c.step_key == h.to_step_key and c.to_state == StepState.ready.value
                              for c in changes):
        events.append(chains.chain_event_row(
            h.chain_id, chains.EVENT_STEP_ASSIGNED, actor, now, step_key=h.to_step_key,
            organisation_id=h.receiver_organisation_id, previous_organisation_id=before,
            reason=f"Rechtskreiswechsel acknowledged (handover {h.id})"))
    chain_values: dict[str, Any] = {}
    if eng.all_steps_ended(loaded.steps.values()):
        chain_values = {"lifecycle": ChainLifecycle.completed.value, "completed_at": now}
        events.append(chains.chain_event_row(h.chain_id, chains.EVENT_CHAIN_COMPLETED, actor, now,
                                             to_state=ChainLifecycle.completed.value,
                                             organisation_id=loaded.row.case_management_organisation_id))
    session.execute(chains.INSERT_EVENTS, events)
    chains.bump_chain(session, loaded, now, **chain_values)
    write_fields(session, privacy, actor, person, {"benefit_regime": h.benefit_regime_to}, h.purpose,
                 now, RECHTSKREISWECHSEL)


def _move_lead(session: Session, catalog: TemplateCatalog, actor: Actor, h, now: datetime) -> None:
    """Relocation acknowledged: the chain's lead jurisdiction and case management move, with an
    event naming both places; waiting handovers to offices that do not serve the new place are
    withdrawn, because they would go to an office no longer responsible."""
    loaded = chains.load_chain(session, catalog, h.chain_id, lock=False)
    if loaded.row.lifecycle != ChainLifecycle.open.value:
        raise ChainClosed(f"the chain is {loaded.row.lifecycle}", lifecycle=loaded.row.lifecycle)
    old = session.get(Jurisdiction, loaded.row.lead_jurisdiction_id)
    new = session.get(Jurisdiction, h.to_jurisdiction_id)
    assert old is not None and new is not None
    receiver = session.get(Organisation, h.receiver_organisation_id)
    assert receiver is not None
    text = f"relocation from {old.name} to {new.name}; case management: {receiver.name}"
    # The event names both case managements: the old one's part in the chain ends here.
    events = [chains.chain_event_row(h.chain_id, EVENT_LEAD_MOVED, actor, now, reason=text,
                                     organisation_id=h.receiver_organisation_id,
                                     previous_organisation_id=loaded.row.case_management_organisation_id)]
    events += _reassign_after_move(session, loaded, new, h.receiver_organisation_id, actor, now)
    chains.write_steps(session, loaded, now)
    session.execute(chains.INSERT_EVENTS, events)
    chains.bump_chain(session, loaded, now, lead_jurisdiction_id=new.id,
                      case_management_organisation_id=h.receiver_organisation_id)
    session.execute(update(Person.__table__).where(Person.__table__.c.id == h.person_id)
                    .values(lead_jurisdiction_id=new.id))
    write_audit(session, [AuditEntry(
        agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="U",
        subtype="person.relocate", entity_type="person", entity_id=str(h.person_id), person_id=h.person_id,
        fields=("lead_jurisdiction_id",), legal_bases={"lead_jurisdiction_id": f"handover:{h.id}"},
        purpose=h.purpose, detail=f"{old.name} -> {new.name}")], now)
    # Handovers still waiting now belong to the new case management's outgoing box.
    session.execute(update(handovers_t).where(
        handovers_t.c.chain_id == h.chain_id, handovers_t.c.id != h.id,
        handovers_t.c.state.in_(_PENDING)).values(case_management_organisation_id=h.receiver_organisation_id))
    stale = session.execute(
        select(handovers_t.c.id, handovers_t.c.state, handovers_t.c.version, orgs_t.c.id.label("org"),
               jur_t.c.path)
        .join(orgs_t, orgs_t.c.id == handovers_t.c.receiver_organisation_id)
        .join(jur_t, jur_t.c.id == orgs_t.c.jurisdiction_id)
        .where(handovers_t.c.chain_id == h.chain_id, handovers_t.c.id != h.id,
               handovers_t.c.state.in_(_PENDING))
        .with_for_update(of=handovers_t)
    ).all()
    for other in stale:
        if new.path.startswith(other.path):
            continue
        system_withdraw(session, other, f"withdrawn: the person moved to {new.name}", actor, now)


EVENT_LEAD_MOVED = "lead_moved"


def _reassign_after_move(session: Session, loaded: chains.LoadedChain, new: Jurisdiction,
                         new_case_management: int, actor: Actor, now: datetime) -> list[dict[str, Any]]:
    """After a move, the steps that have not ended go to who serves the new place: the new case
    management its own steps, the nearest office of the kind the others (or nobody, until the
    case management assigns one). Offices of the old place keep only their history."""
    serving = set(session.scalars(select(orgs_t.c.id).join(jur_t, jur_t.c.id == orgs_t.c.jurisdiction_id)
                                  .where(literal(new.path).startswith(jur_t.c.path))))
    open_steps = [s for s in loaded.steps.values() if s.state not in {t.value for t in eng.TERMINAL}]
    nearest = nearest_serving_organisations(
        session, {s.owner_kind for s in open_steps if s.owner_kind != CASE_MANAGEMENT_OWNER}, new.path)
    events = []
    for step in open_steps:
        if step.owner_kind == CASE_MANAGEMENT_OWNER:
            target = new_case_management if step.assigned_organisation_id is not None else None
        elif step.assigned_organisation_id is None or step.assigned_organisation_id in serving:
            continue
        elif step.state == StepState.planned.value:
            target = None
        else:
            target = nearest.get(step.owner_kind)
        if target == step.assigned_organisation_id:
            continue
        before = step.assigned_organisation_id
        step.assigned_organisation_id, step.dirty = target, True
        events.append(chains.chain_event_row(
            loaded.row.id, chains.EVENT_STEP_ASSIGNED, actor, now, step_key=step.key, organisation_id=target,
            previous_organisation_id=before, reason=f"the person moved to {new.name}"))
    return events


# --- reading -------------------------------------------------------------------------------------

def _summary(r, actor: Actor, now: datetime) -> dict[str, Any]:
    parties = Parties(r.sender_organisation_id, r.receiver_organisation_id)
    return dict(
        id=r.id, kind=r.kind, state=r.state, overdue=lc.is_overdue(r.state, r.due_at, now),
        chain_id=r.chain_id, person_id=r.person_id, step_key=r.step_key, to_step_key=r.to_step_key,
        sender=OrganisationRef(id=r.sender_organisation_id, name=r.sender_name,
                               kind=r.sender_organisation_kind, jurisdiction_id=r.sender_jurisdiction_id),
        receiver=OrganisationRef(id=r.receiver_organisation_id, name=r.receiver_name,
                                 kind=r.receiver_organisation_kind,
                                 jurisdiction_id=r.receiver_jurisdiction_id),
        requested_at=r.requested_at, working_days=r.working_days, due_date=r.due_date,
        due_at=r.due_at, escalated_at=r.escalated_at, responded_at=r.responded_at,
        version=r.version, allowed_actions=lc.allowed_actions(r.state, actor.organisation_id, parties),
    )


def _read_out(session: Session, actor: Actor, handover_id: uuid.UUID, now: datetime,
              values: dict[str, Any] | None = None, withheld: list[Redaction] | None = None,
              regime_from: str | None = None) -> HandoverOut:
    r = session.execute(_with_orgs(select(*_SUMMARY_COLUMNS)).where(handovers_t.c.id == handover_id)).one()
    # Converted before the rollback, which would expire the objects (one reload query each).
    events = [HandoverEventOut.model_validate(e) for e in session.scalars(
        select(HandoverEvent).where(HandoverEvent.handover_id == handover_id).order_by(HandoverEvent.id))]
    session.rollback()
    return _handover_out(r, actor, now, events, values=values, withheld=withheld, regime_from=regime_from)


def _handover_out(r, actor: Actor, now: datetime, events: list[HandoverEventOut],
                  values: dict[str, Any] | None = None, withheld: list[Redaction] | None = None,
                  regime_from: str | None = None) -> HandoverOut:
    package = DataPackage(purpose=r.purpose, fields=list(r.package_fields),
                          legal_bases=dict(r.package_bases), redacted=list(r.package_redacted),
                          values=values, withheld_now=withheld or [])
    # Which consents the person gave is for the two case managements handing over, no one else.
    parties = (r.sender_organisation_id, r.receiver_organisation_id)
    review = (None if r.consent_review is None or actor.organisation_id not in parties
              else [ConsentReviewOut(**c) for c in r.consent_review])
    return HandoverOut(
        **_summary(r, actor, now),
        case_management_organisation_id=r.case_management_organisation_id,
        from_jurisdiction_id=r.from_jurisdiction_id, to_jurisdiction_id=r.to_jurisdiction_id,
        # The Rechtskreis before is personal data: shown only where get_handover decided it.
        benefit_regime_from=regime_from, benefit_regime_to=r.benefit_regime_to,
        sender_user=r.sender_user, responded_by_user=r.responded_by_user,
        response_reason=r.response_reason, waiting_calendar_days=r.waiting_calendar_days,
        waiting_working_days=r.waiting_working_days, package=package, consent_review=review,
        events=events,
    )


def get_handover(session: Session, privacy: Privacy, actor: Actor, handover_id: uuid.UUID,
                 now: datetime) -> HandoverOut:
    """A handover the actor's organisation sends, receives or manages; every view is audited.

    Only the receiver sees the package's values, and only those it may still read now: the
    package is frozen when requested, but a consent withdrawn since then takes effect at once
    (the fields it covered are listed under ``withheld_now``)."""
    with unit_of_work(session):
        _find(session, actor, handover_id)
        h = session.execute(select(handovers_t).where(handovers_t.c.id == handover_id)).one()
        values: dict[str, Any] | None = None
        bases: dict[str, str] = {}
        withheld: list[Redaction] = []
        if actor.organisation_id == h.receiver_organisation_id and h.package_ciphertext is not None \
                and h.state not in _CLOSED_TO_RECEIVER and _involved_with_person(session, actor, h.person_id):
            key = person_data_key(session, privacy, h.person_id)
            frozen = decrypt_field(key, h.person_id, _package_aad(h.id), h.package_ciphertext)
            person = session.get(Person, h.person_id)
            assert person is not None
            bases, withheld = current_bases(session, privacy, actor, person, h.purpose, now, frozen)
            values = {f: v for f, v in frozen.items() if f in bases}
        regime_from, regime_basis = _regime_before(session, privacy, actor, h, now)
        read = ({f: bases[f] for f in values} if values else {}) | _regime_read(regime_from, regime_basis)
        write_audit(session, [AuditEntry(
            agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="R",
            subtype="handover.package.read" if values is not None else "handover.read",
            entity_type="handover", entity_id=str(h.id), person_id=h.person_id,
            fields=tuple(sorted(read)), legal_bases={f: read[f] for f in sorted(read)},
            purpose=h.purpose,
        )], now)
    return _read_out(session, actor, handover_id, now, values=values, withheld=withheld,
                     regime_from=regime_from)


def _regime_read(regime_from: str | None, basis: str | None) -> dict[str, str]:
    """The audit's record of showing the Rechtskreis before a Rechtskreiswechsel."""
    return {"benefit_regime": basis or ""} if regime_from is not None else {}


def _regime_before(session: Session, privacy: Privacy, actor: Actor, h, now: datetime
                   ) -> tuple[str | None, str | None]:
    """The Rechtskreis the person had when a Rechtskreiswechsel was requested, with the legal
    basis of reading it: shown to the two offices handing the benefits on, if they may read
    benefits now (and then audited as a read of ``benefit_regime``)."""
    if h.benefit_regime_from is None or actor.organisation_id not in (
            h.sender_organisation_id, h.receiver_organisation_id):
        return None, None
    person = session.get(Person, h.person_id)
    assert person is not None
    decision = decide_category(session, privacy, actor, person, resolve_purpose(privacy, actor, None),
                               privacy.policy.fields["benefit_regime"].category, "read", now)
    return (h.benefit_regime_from, decision.basis) if decision.permit else (None, None)


# A rejected or withdrawn handover's package is no longer the receiver's to read.
_CLOSED_TO_RECEIVER = {HandoverState.rejected.value, HandoverState.withdrawn.value}


def _involved_with_person(session: Session, actor: Actor, person_id: uuid.UUID) -> bool:
    return session.scalar(select(Person.id).where(Person.id == person_id, scope_clause(actor))) is not None


def chain_handovers(session: Session, actor: Actor, chain_id: uuid.UUID, now: datetime) -> list[HandoverSummary]:
    """Every handover of the chain in every state, oldest first: those the actor's organisation
    sends, receives or manages (the ones ``GET /handovers/{id}`` opens for it). Record scope
    first: a chain the organisation is not and was not involved with is 404 like a random id.
    The read is audited like the chain's timeline."""
    with unit_of_work(session):
        chains.require_chain_access(session, actor, chain_id)
        rows = session.execute(
            _with_orgs(select(*_LIST_COLUMNS))
            .where(handovers_t.c.chain_id == chain_id, _visible_clause(actor))
            .order_by(handovers_t.c.requested_at, handovers_t.c.id)).all()
        items = [HandoverSummary(**_summary(r, actor, now)) for r in rows]
        person_id = session.scalar(select(chains.chains_t.c.person_id).where(chains.chains_t.c.id == chain_id))
        write_audit(session, [AuditEntry(
            agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="R",
            subtype="chain.handovers", entity_type="chain", entity_id=str(chain_id), person_id=person_id,
            detail=f"{len(items)} handovers")], now)
    return items


# --- inboxes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxFilters:
    state: StateFilter = StateFilter.pending
    kind: HandoverKind | None = None
    overdue: bool | None = None
    chain_id: uuid.UUID | None = None


def _box_columns(box: Box) -> list:
    if box is Box.incoming:
        return [handovers_t.c.receiver_organisation_id]
    return [handovers_t.c.sender_organisation_id, handovers_t.c.case_management_organisation_id]


def inbox(session: Session, actor: Actor, box: Box, filters: InboxFilters, limit: int,
          cursor: str | None, now: datetime) -> HandoverPage:
    """Handovers to (incoming) or from (outgoing: sent, or of chains the organisation manages) the
    actor's organisation. Waiting ones come overdue first, then by due date; decided ones newest
    first. Each organisation column has its own index; the outgoing box merges two index scans."""
    params: dict[str, Any] = {"organisation_id": actor.organisation_id, "now": now, "limit": limit + 1}
    if filters.kind is not None:
        params["kind"] = filters.kind.value
    if filters.chain_id is not None:
        params["chain_id"] = filters.chain_id
    if cursor:
        params["cursor_at"], params["cursor_id"] = chains.decode_cursor(cursor)
    page_q = _inbox_page_statement(box, filters.state, filters.kind is not None, filters.overdue,
                                   filters.chain_id is not None, bool(cursor))
    page = session.execute(page_q, params).all()
    more = len(page) > limit
    page = page[:limit]
    items: list[HandoverSummary] = []
    if page:
        rows = {r.id: r for r in session.execute(_INBOX_ROWS, {"ids": [p.id for p in page]})}
        items = [HandoverSummary(**_summary(rows[p.id], actor, now)) for p in page]
    counts = _counts(session, actor, box, now)
    session.rollback()
    next_cursor = chains.encode_cursor(page[-1].sort, page[-1].id) if more else None
    return HandoverPage(items=items, next_cursor=next_cursor, counts=counts)


@functools.lru_cache(maxsize=512)
def _inbox_page_statement(box: Box, state: StateFilter, kind: bool, overdue: bool | None, chain: bool,
                          after_cursor: bool):
    """The ids and sort keys of one inbox page, for one combination of filters, with every value
    a bound parameter, built once: building it for each request cost more Python time than the
    database spends on it."""
    pending = state is StateFilter.pending
    waiting = pending or state in (StateFilter.requested, StateFilter.escalated)
    sort = handovers_t.c.due_at if waiting else handovers_t.c.responded_at
    now = bindparam("now")
    conds = []
    if pending:
        conds.append(handovers_t.c.state.in_(_PENDING))
    else:
        conds.append(handovers_t.c.state == state.value)
    if kind:
        conds.append(handovers_t.c.kind == bindparam("kind"))
    if overdue is not None:
        if waiting:
            conds.append(handovers_t.c.due_at <= now if overdue else handovers_t.c.due_at > now)
        elif overdue:
            conds.append(literal(False))  # a decided handover is never overdue
    if chain:
        conds.append(handovers_t.c.chain_id == bindparam("chain_id"))
    # A restricted or erased person's handovers are stored, not listed (casemgmt.rights).
    conds.append(active_person(handovers_t.c.person_id))
    if after_cursor:
        at, last_id = bindparam("cursor_at", type_=sort.type), bindparam("cursor_id", type_=handovers_t.c.id.type)
        if waiting:
            conds.append(or_(sort > at, and_(sort == at, handovers_t.c.id > last_id)))
        else:
            conds.append(or_(sort < at, and_(sort == at, handovers_t.c.id < last_id)))
    order = (sort.asc(), handovers_t.c.id.asc()) if waiting else (sort.desc(), handovers_t.c.id.desc())
    limit = bindparam("limit", type_=Integer)
    parts = [
        select(handovers_t.c.id, sort.label("sort")).where(column == bindparam("organisation_id"), *conds)
        .order_by(*order).limit(limit)
        for column in _box_columns(box)
    ]
    if len(parts) == 1:
        ids_q = parts[0].subquery()
    else:
        ids_q = union(*(p.subquery().select() for p in parts)).subquery()
    return select(ids_q.c.id, ids_q.c.sort).order_by(
        *((ids_q.c.sort.asc(), ids_q.c.id.asc()) if waiting else (ids_q.c.sort.desc(), ids_q.c.id.desc()))
    ).limit(limit)


_INBOX_ROWS = _with_orgs(select(*_LIST_COLUMNS)).where(handovers_t.c.id.in_(bindparam("ids", expanding=True)))


@functools.lru_cache(maxsize=2)
def _counts_statement(box: Box):
    """The counts of a box in one statement (see _counts), built once."""
    state = handovers_t.c.state
    org = bindparam("organisation_id")
    if box is Box.incoming:
        parts = [handovers_t.c.receiver_organisation_id == org]
    else:
        parts = [handovers_t.c.sender_organisation_id == org,
                 and_(handovers_t.c.case_management_organisation_id == org,
                      handovers_t.c.sender_organisation_id != org)]
    subqueries = []
    for part in parts:
        subqueries.append(select(
            func.count().filter(state == HandoverState.requested.value).label("requested"),
            func.count().filter(state == HandoverState.escalated.value).label("escalated"),
            func.count().filter(handovers_t.c.due_at <= bindparam("now")).label("overdue"),
        ).where(part, state.in_(_PENDING)).subquery())
        subqueries.append(select(
            *(func.count().filter(state == s.value).label(s.value) for s in _DECIDED),
        ).where(part, state.in_([s.value for s in _DECIDED]),
                handovers_t.c.responded_at >= bindparam("since")).subquery())
    # Each part is its own one-row aggregate (over its own index); joined on TRUE into one row.
    joined = subqueries[0]
    for sub in subqueries[1:]:
        joined = joined.join(sub, true())
    return select(*(c for sub in subqueries for c in sub.c)).select_from(joined)


_DECIDED = sorted(lc.ENDED, key=lambda s: s.value)


def _counts(session: Session, actor: Actor, box: Box, now: datetime) -> InboxCounts:
    """Direct aggregates over covering indexes: the partial index of waiting handovers (with
    ``state`` included) and the decided index limited to a window, so decided history does not
    add to the cost. The outgoing box adds "sent by me" and "managed by me, sent by another", which
    never overlap, instead of de-duplicating ids (that read every row again). One round trip."""
    row = session.execute(_counts_statement(box), {
        "organisation_id": actor.organisation_id, "now": now,
        "since": now - timedelta(days=DECIDED_WINDOW_DAYS)}).one()
    # Per part: requested, escalated, overdue, then one count per decided state (as built).
    names = ("requested", "escalated", "overdue", *(s.value for s in _DECIDED))
    totals = dict.fromkeys(names, 0)
    for i, value in enumerate(row):
        totals[names[i % len(names)]] += value
    return InboxCounts(
        requested=totals["requested"], escalated=totals["escalated"], overdue=totals["overdue"],
        acknowledged=totals.get("acknowledged", 0), rejected=totals.get("rejected", 0),
        withdrawn=totals.get("withdrawn", 0), decided_window_days=DECIDED_WINDOW_DAYS,
    )
