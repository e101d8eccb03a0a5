"""Person records, consents and agreements, and THE exit point for personal data.

:func:`disclose` is the only function that turns stored personal data into something that leaves
the service. It decides every category through the policy decision point, decrypts only what is
permitted, lists the rest as redacted, and writes the audit rows in the caller's transaction.
Responses, searches, and later exports and handover data packages all go through it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, bindparam, cast, delete, func, literal_column, null, or_, select, true
from sqlalchemy.orm import Session

from casemgmt.chains.engine import Actor, ChainLifecycle
from casemgmt.chains.models import Chain
from casemgmt.database import unit_of_work
from casemgmt.involvement.scope import Access, formerly_involved_with_person, person_involvement
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.conferences.scrubber import name_tokens
from casemgmt.persons.models import Person
from casemgmt.privacy import audit, texts
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.crypto import KeyRing, decrypt_field, encrypt_field
from casemgmt.privacy.decision import (
    AgreementGrant,
    ConsentGrant,
    Decision,
    RecipientKind,
    Requester,
    decide,
)
from casemgmt.privacy.models import (
    Consent,
    ConsentWithdrawal,
    DataExchangeAgreement,
    PersonField,
    PersonKey,
    PersonNameToken,
)
from casemgmt.privacy.policy import DataPolicy
from casemgmt.rights.gate import refuse_unless_active
from casemgmt.rights.models import DataSubjectRequest
from casemgmt.privacy.schemas import (
    AgreementIn,
    CatalogueOut,
    CategoryOut,
    FieldOut,
    PurposeOut,
    ConsentIn,
    ConsentOut,
    PersonCreateIn,
    PersonRecordOut,
    Redaction,
)
from casemgmt.problems import (
    RequestMismatch,
    ConsentAlreadyWithdrawn,
    InvalidConsent,
    InvolvementEnded,
    NoLegalBasis,
    NotConsentRecorder,
    NotFound,
    RechtskreisByHandover,
    ValidationFailed,
    WrongOrganisation,
)

# Residence attributes kept as plain pseudonymous columns (reports group by them); access to
# them is still decided per category like every other field.
PLAIN_FIELDS = ("residence_status", "bleibeperspektive", "benefit_regime")
IDENTITY_TRIPLE = ("family_name", "given_names", "birth_date")


@dataclass(frozen=True)
class Privacy:
    """The data policy and the keys, loaded once at start."""

    policy: DataPolicy
    keys: KeyRing


def requester_of(actor: Actor) -> Requester:
    return Requester(actor.organisation_id, actor.organisation_kind, actor.jurisdiction_path)


def audit_key(session: Session) -> bytes:
    """Sessions made by the service carry the audit key; without it nothing may be written."""
    key = session.info.get("audit_key")
    if not key:
        raise RuntimeError("this session has no audit key: make it with make_sessionmaker(..., audit_key=...)")
    return key


def write_audit(session: Session, entries: Iterable[AuditEntry], now: datetime) -> None:
    """Stage audit entries; they are written, chained, just before this session commits."""
    audit_key(session)  # fail now, not at commit, if this session cannot audit
    audit.stage(session, entries, now)


def deny_and_raise(session: Session, entry: AuditEntry, now: datetime, problem: Exception) -> None:
    """Record a refused attempt (in its own transaction: the refused change itself is rolled
    back, the record of the attempt is kept), then raise the problem."""
    session.rollback()
    write_audit(session, [entry], now)
    session.commit()
    raise problem


def check_free_text(session: Session, privacy: Privacy, text: str | None, field: str,
                    person_ids: Iterable[uuid.UUID], actor: Actor, now: datetime, *,
                    entity_type: str, entity_id: str | None,
                    extra_words: Iterable[str] = ()) -> None:
    """Refuse a free text that carries personal data before it is stored (see
    casemgmt.privacy.texts); the refusal is audited, the change rolled back. ``extra_words``:
    more words of the domain that are never a person's name, besides towns and organisations."""
    if text is None:
        return
    found = texts.refusal(session, privacy.keys, text, field, person_ids, actor,
                          entity_type=entity_type, entity_id=entity_id, extra_words=extra_words)
    if found is not None:
        deny_and_raise(session, found[0], now, found[1])


def check_free_text_hits(session: Session, hits, text: str, field: str, actor: Actor, now: datetime,
                         entity_type: str, entity_id: str | None) -> None:
    """Refuse a text whose hits were found by the caller (the patterns without the name check)."""
    entry, problem = texts.refusal_of(hits, field, actor, entity_type=entity_type, entity_id=entity_id)
    deny_and_raise(session, entry, now, problem)


# Refusals a user's request can meet; each is audited (no-legal-basis is audited where it arises).
AUDITED_REFUSALS = {"forbidden", "wrong-organisation", "not-found", "involvement-ended", "consent-recorder"}
AUDITED_RESOURCES = {"person", "chain", "consent", "step"}
_HTTP_ACTION = {"GET": "R", "POST": "C", "PATCH": "U", "PUT": "U", "DELETE": "D"}


def audit_refusal(factory, actor: Actor, method: str, path: str, slug: str, detail: str,
                  extra: dict[str, Any], now: datetime) -> None:
    """Record a refused request: who tried what, and why it was refused. A 404 counts when it
    concerns case data (the caller may have probed for a person outside its scope)."""
    if slug not in AUDITED_REFUSALS:
        return
    resource = extra.get("resource")
    if slug == "not-found" and resource not in AUDITED_RESOURCES:
        return
    person_id = None
    if resource == "person":
        try:
            person_id = uuid.UUID(str(extra.get("id")))
        except ValueError:
            person_id = None
    with factory() as session, unit_of_work(session):
        write_audit(session, [AuditEntry(
            agent_user=actor.user_id, agent_organisation_id=actor.organisation_id,
            action=_HTTP_ACTION.get(method, "E"), subtype=f"refused.{slug}",
            entity_type=resource or "endpoint", entity_id=str(extra.get("id") or path)[:64],
            person_id=person_id, outcome="denied", detail=f"{method} {path}: {detail}"[:2000],
        )], now)


# --- record scope ------------------------------------------------------------------------------


# The statements of a person read, built once: building the involvement clause and the grant
# queries anew for every read cost more Python time than the database spends on them.
_PERSON_IN_SCOPE = select(Person).where(Person.id == bindparam("person_id"),
                                        person_involvement(bindparam("organisation_id")))
# The read's scope check also brings the organisations managing the person's chains (the data
# holders of the decision point), so that they cost no round trip of their own.
_MANAGERS_COLUMN = (select(func.aggregate_strings(cast(Chain.case_management_organisation_id, String), ","))
                    .where(Chain.person_id == Person.id).scalar_subquery().label("managers"))
# On PostgreSQL it also brings a digest of every agreement row version, the pairs (id, xmin): any
# INSERT, UPDATE or DELETE of an agreement changes it, so a worker reuses the agreements it read
# before only while they are exactly the rows the database holds (see _agreements). SQLite has
# no row versions: there the agreements are read every time.
_AGREEMENTS_DIGEST = literal_column(
    "(SELECT md5(coalesce(string_agg(a.id::text || ':' || a.xmin::text, ',' ORDER BY a.id), ''))"
    " FROM data_exchange_agreements AS a)").label("agreements_digest")
# And the head of the person's audit stream, so that the read's audit append at commit is one
# round trip instead of two (see casemgmt.privacy.audit.head_hint_column), and the person's
# consents as JSON (with the paths of the jurisdictions their recipients name), so that the
# decision point needs no statement of its own for them.
_CONSENTS_JSON = literal_column(
    "(SELECT json_agg(json_build_object("
    "'id', c.id, 'recipients', c.recipients, 'categories', c.categories, 'purpose', c.purpose,"
    " 'explicit_special', c.explicit_special, 'valid_from', c.valid_from, 'valid_until', c.valid_until,"
    " 'withdrawn_at', w.withdrawn_at, 'recipient_paths',"
    " (SELECT json_object_agg(j.id, j.path) FROM jurisdictions AS j WHERE j.id IN"
    "  (SELECT (r->>'jurisdiction_id')::int FROM json_array_elements(c.recipients) AS r))))"
    " FROM consents AS c LEFT OUTER JOIN consent_withdrawals AS w ON w.consent_id = c.id"
    " WHERE c.person_id = persons.id)").label("consents")
# And the stored fields with the wrapped data key (hex in JSON), which disclose would read next.
_STORED_JSON = literal_column(
    "(SELECT json_build_object('key', (SELECT json_build_object('wrapped', encode(k.wrapped_key, 'hex'),"
    " 'master_key_id', k.master_key_id) FROM person_keys AS k WHERE k.person_id = persons.id),"
    " 'fields', (SELECT json_agg(json_build_object('field', f.field, 'ciphertext', encode(f.ciphertext, 'hex'),"
    " 'by', f.updated_by_organisation_id)) FROM person_fields AS f WHERE f.person_id = persons.id)))"
).label("stored")
_PERSON_IN_SCOPE_WITH_GRANTS = {
    "postgresql": select(Person, _MANAGERS_COLUMN, _AGREEMENTS_DIGEST,
                         audit.head_hint_column(bindparam("audit_stream")), _CONSENTS_JSON, _STORED_JSON),
    "other": select(Person, _MANAGERS_COLUMN, null().label("agreements_digest"),
                    null().label("audit_head_hint"), null().label("consents"), null().label("stored")),
}
_PERSON_IN_SCOPE_WITH_GRANTS = {
    dialect: stmt.where(Person.id == bindparam("person_id"), person_involvement(bindparam("organisation_id")))
    for dialect, stmt in _PERSON_IN_SCOPE_WITH_GRANTS.items()
}
# What the decision point needs of a person's consents: the columns, not the entities (building
# the ORM objects cost more than the query). On PostgreSQL each row also brings the paths of the
# jurisdictions its recipients name (for recipients by organisation kind), one round trip less.
_CONSENT_GRANT_ROWS = (
    select(Consent.id, Consent.recipients, Consent.categories, Consent.purpose, Consent.explicit_special,
           Consent.valid_from, Consent.valid_until, ConsentWithdrawal.withdrawn_at)
    .outerjoin(ConsentWithdrawal, ConsentWithdrawal.consent_id == Consent.id)
    .where(Consent.person_id == bindparam("person_id"))
)
_CONSENT_GRANTS = {
    "postgresql": _CONSENT_GRANT_ROWS.add_columns(literal_column(
        "(SELECT json_object_agg(j.id, j.path) FROM jurisdictions AS j WHERE j.id IN"
        " (SELECT (r->>'jurisdiction_id')::int FROM json_array_elements(consents.recipients) AS r))"
    ).label("recipient_paths")),
    "other": _CONSENT_GRANT_ROWS.add_columns(null().label("recipient_paths")),
}
_JURISDICTION_PATHS = select(Jurisdiction.id, Jurisdiction.path).where(
    Jurisdiction.id.in_(bindparam("ids", expanding=True)))
_AGREEMENTS = select(DataExchangeAgreement)
_MANAGERS = select(Chain.case_management_organisation_id).where(Chain.person_id == bindparam("person_id"))
# The stored fields with the person's wrapped data key on each row: one round trip instead of two.
_STORED_FIELDS = (
    select(PersonField.field, PersonField.ciphertext, PersonField.updated_by_organisation_id,
           PersonKey.wrapped_key, PersonKey.master_key_id)
    .outerjoin(PersonKey, PersonKey.person_id == PersonField.person_id)
    .where(PersonField.person_id == bindparam("person_id"))
)
_PERSON_KEY = select(PersonKey.wrapped_key, PersonKey.master_key_id).where(PersonKey.person_id == bindparam("person_id"))


def scope_clause(actor: Actor):
    """Persons the actor's organisation is involved with now (see casemgmt.involvement.scope)."""
    return person_involvement(actor.organisation_id)


def _person_not_found(person_id: uuid.UUID) -> NotFound:
    return NotFound(f"no person {person_id}", resource="person", id=str(person_id))


def person_in_scope(session: Session, actor: Actor, person_id: uuid.UUID) -> Person:
    """The person, if the actor's organisation is involved now. A formerly involved organisation
    gets 403 involvement-ended (it knows the person), anybody else 404 (existence is not
    revealed)."""
    person = session.scalar(_PERSON_IN_SCOPE, {"person_id": person_id, "organisation_id": actor.organisation_id})
    if person is None:
        if formerly_involved_with_person(session, actor.organisation_id, person_id):
            refuse_unless_active(session.scalar(select(Person.processing).where(Person.id == person_id)),
                                 person_id)
            raise InvolvementEnded("your organisation's part in this person's case has ended; you "
                                   "may read what it wrote itself, not change anything",
                                   resource="person", id=str(person_id))
        raise _person_not_found(person_id)
    refuse_unless_active(person.processing, person.id)
    return person


def person_access(session: Session, actor: Actor, person_id: uuid.UUID) -> tuple[Person, Access]:
    """For reading: the person with (current) or (former) access; 404 for anybody else."""
    person, access, _ = _person_access(session, actor, person_id)
    return person, access


@dataclass(frozen=True)
class _ReadGrants:
    """What a person read's scope check brought along for the decision point (None: not
    brought, the decision point reads it itself)."""

    holders: frozenset[int] | None = None
    agreements_digest: str | None = None
    consents: list[ConsentGrant] | None = None
    stored: StoredFields | None = None


@dataclass(frozen=True)
class StoredFields:
    """A person's encrypted fields as stored: ciphertext and writing organisation per field, and
    the wrapped data key with its master key id (None when nothing is stored)."""

    ciphertexts: dict[str, bytes]
    writers: dict[str, int]
    wrapped: tuple[bytes, str | None] | None

    @classmethod
    def read(cls, session: Session, person_id: uuid.UUID) -> StoredFields:
        ciphertexts, writers, wrapped = {}, {}, None
        for row in session.execute(_STORED_FIELDS, {"person_id": person_id}):
            ciphertexts[row.field] = row.ciphertext
            writers[row.field] = row.updated_by_organisation_id
            wrapped = (row.wrapped_key, row.master_key_id)
        return cls(ciphertexts, writers, wrapped)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> StoredFields:
        """From the read's scope check (binary values as hex)."""
        fields = doc.get("fields") or ()
        key = doc.get("key")
        wrapped = (bytes.fromhex(key["wrapped"]), key["master_key_id"]) if key is not None and fields else None
        return cls({f["field"]: bytes.fromhex(f["ciphertext"]) for f in fields},
                   {f["field"]: f["by"] for f in fields}, wrapped)


def _person_access(session: Session, actor: Actor, person_id: uuid.UUID) -> tuple[Person, Access, _ReadGrants]:
    """:func:`person_access`, with the person's data holders, the agreements' digest and the
    consents when they came with the scope check."""
    bind = session.get_bind()
    stmt = _PERSON_IN_SCOPE_WITH_GRANTS["postgresql" if bind.dialect.name == "postgresql" else "other"]
    stream = audit.stream_of_person(person_id)
    row = session.execute(stmt, {"person_id": person_id, "organisation_id": actor.organisation_id,
                                 "audit_stream": stream}).first()
    if row is not None:
        person = row[0]
        audit.remember_head(session, stream, row.audit_head_hint)
        refuse_unless_active(person.processing, person.id)
        managers = {int(m) for m in row.managers.split(",")} if row.managers else set()
        consents = stored = None
        if bind.dialect.name == "postgresql":
            consents = [_consent_grant(c, {int(j): path for j, path in (c["recipient_paths"] or {}).items()})
                        for c in row.consents or ()]
            stored = StoredFields.from_json(row.stored)
        return person, Access.current, _ReadGrants(frozenset({person.created_by_organisation_id, *managers}),
                                                   row.agreements_digest, consents, stored)
    if formerly_involved_with_person(session, actor.organisation_id, person_id):
        person = session.get(Person, person_id)
        if person is not None:
            refuse_unless_active(person.processing, person.id)
            return person, Access.former, _ReadGrants()
    raise _person_not_found(person_id)


def in_area(actor: Actor, jurisdiction_path: str | None) -> bool:
    """The data protection officer's and the administrator's views cover the jurisdiction of
    their organisation and below, unless one of their roles is installation-wide."""
    return actor.installation_wide or (
        jurisdiction_path is not None and jurisdiction_path.startswith(actor.jurisdiction_path))


def person_area_clause(actor: Actor):
    """Persons living in the actor's area, or registered by one of its organisations."""
    if actor.installation_wide:
        return true()
    lead = select(Jurisdiction.id).where(Jurisdiction.path.startswith(actor.jurisdiction_path))
    registrars = (select(Organisation.id).join(Jurisdiction, Jurisdiction.id == Organisation.jurisdiction_id)
                  .where(Jurisdiction.path.startswith(actor.jurisdiction_path)))
    return or_(Person.lead_jurisdiction_id.in_(lead), Person.created_by_organisation_id.in_(registrars))


# --- grants ------------------------------------------------------------------------------------


def consent_grants(session: Session, person_id: uuid.UUID) -> list[ConsentGrant]:
    dialect = "postgresql" if session.get_bind().dialect.name == "postgresql" else "other"
    rows = session.execute(_CONSENT_GRANTS[dialect], {"person_id": person_id}).all()
    if dialect == "postgresql":
        paths = {int(j): path for row in rows for j, path in (row.recipient_paths or {}).items()}
    else:
        paths = _jurisdiction_paths(session, [r.get("jurisdiction_id") for row in rows for r in row.recipients])
    return [_consent_grant(row._mapping, paths) for row in rows]


def _consent_grant(consent: Mapping[str, Any], paths: Mapping[int, str]) -> ConsentGrant:
    """A consent row (or its JSON from the read's scope check: ids and times as text) as the
    decision point sees it; ``paths`` are the paths of the jurisdictions its recipients name."""
    recipients = consent["recipients"]
    named = frozenset(r["organisation_id"] for r in recipients if "organisation_id" in r)
    kinds = tuple(
        RecipientKind(r["organisation_kind"], paths[r["jurisdiction_id"]])
        for r in recipients
        if "organisation_kind" in r and r["jurisdiction_id"] in paths
    )
    return ConsentGrant(
        id=_uuid(consent["id"]), recipient_organisation_ids=named, recipient_kinds=kinds,
        categories=frozenset(consent["categories"]), purpose=consent["purpose"],
        explicit_special=consent["explicit_special"], valid_from=_utc(consent["valid_from"]),
        valid_until=_utc(consent["valid_until"]), withdrawn_at=_utc(consent["withdrawn_at"]),
    )


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment.astimezone(UTC)


def _jurisdiction_paths(session: Session, ids: Iterable[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return dict(session.execute(_JURISDICTION_PATHS, {"ids": sorted(wanted)}).all())


# The agreements a worker read last: (database URL, digest of their row versions, grants).
_AGREEMENTS_READ: tuple[str, str, list[AgreementGrant]] | None = None


def _agreements(session: Session, digest: str | None) -> list[AgreementGrant]:
    """The agreements, reused from the last read while ``digest`` (taken in this transaction,
    see _AGREEMENTS_DIGEST) says the rows are still the same; read otherwise. They are read after
    the digest was taken, so a newer version can only be stored under an older digest, which
    the next read finds changed and reads again: never the other way round."""
    global _AGREEMENTS_READ
    if digest is None:
        return agreement_grants(session)
    url = str(session.get_bind().url)
    last = _AGREEMENTS_READ
    if last is not None and last[0] == url and last[1] == digest:
        return last[2]
    grants = agreement_grants(session)
    _AGREEMENTS_READ = (url, digest, grants)
    return grants


def agreement_grants(session: Session) -> list[AgreementGrant]:
    return [
        AgreementGrant(a.id, frozenset(a.organisation_ids), frozenset(a.categories), a.purpose,
                       a.valid_from, a.valid_until)
        for a in session.scalars(_AGREEMENTS)
    ]


def data_holders(session: Session, person: Person) -> frozenset[int]:
    """Organisations holding the person's case: who registered them and who manages a chain."""
    managers = session.scalars(_MANAGERS, {"person_id": person.id})
    return frozenset({person.created_by_organisation_id, *managers})


def resolve_purpose(privacy: Privacy, actor: Actor, purpose: str | None) -> str:
    purpose = purpose or privacy.policy.default_purpose.get(actor.organisation_kind)
    if purpose is None or purpose not in privacy.policy.purposes:
        raise ValidationFailed(
            f"purpose: unknown purpose '{purpose}'",
            errors=[{"field": "purpose", "message": f"one of {sorted(privacy.policy.purposes)}",
                     "type": "enum"}],
        )
    return purpose


def data_catalogue(policy: DataPolicy) -> CatalogueOut:
    """The catalogue of personal data as clients show it: categories, fields and purposes with
    their titles, so no client hard-codes the policy file."""
    return CatalogueOut(
        categories=[CategoryOut(key=c.key, title=c.title, description=c.description, special=c.special,
                                portable=c.portable,
                                retention=c.retention.describe() if c.retention else f"{c.retention_years} years")
                    for c in policy.categories.values()],
        fields=[FieldOut(key=f.key, category=f.category, type=f.type, title=f.title, max_length=f.max_length,
                         values=list(f.values) if f.values is not None else None, min=f.min, max=f.max)
                for f in policy.fields.values()],
        purposes=[PurposeOut(key=k, title=t) for k, t in policy.purposes.items()],
    )


@dataclass
class _Decider:
    """Decides categories for one person and request, each at most once."""

    privacy: Privacy
    requester: Requester
    purpose: str
    now: datetime
    consents: list[ConsentGrant]
    agreements: list[AgreementGrant]
    holders: frozenset[int]

    def __post_init__(self) -> None:
        self._cache: dict[tuple[str, str], Decision] = {}

    def __call__(self, category: str, action: str) -> Decision:
        key = (category, action)
        if key not in self._cache:
            self._cache[key] = decide(self.privacy.policy, self.requester, category, self.purpose,
                                      action, self.now, self.consents, self.agreements, self.holders)
        return self._cache[key]


def _decider(session: Session, privacy: Privacy, actor: Actor, person: Person, purpose: str,
             now: datetime, holders: frozenset[int] | None = None,
             agreements: list[AgreementGrant] | None = None,
             consents: list[ConsentGrant] | None = None) -> _Decider:
    return _Decider(privacy, requester_of(actor), purpose, now,
                    consents if consents is not None else consent_grants(session, person.id),
                    agreements if agreements is not None else agreement_grants(session),
                    holders if holders is not None else data_holders(session, person))


FORMER_REASON = ("your organisation's part in this case has ended: it reads only values it wrote "
                 "itself")


# --- the exit point ------------------------------------------------------------------------------


def disclose(
    session: Session,
    privacy: Privacy,
    actor: Actor,
    person: Person,
    purpose: str,
    now: datetime,
    subtype: str = "person.read",
    only: Iterable[str] | None = None,
    recipient: Actor | None = None,
    access: Access = Access.current,
    data_subject_request: tuple[str, uuid.UUID] | None = None,
    holders: frozenset[int] | None = None,
    agreements: list[AgreementGrant] | None = None,
    consents: list[ConsentGrant] | None = None,
    stored: StoredFields | None = None,
) -> PersonRecordOut:
    """Everything of the person the actor may see for this purpose, and nothing else.

    Every catalogue field the caller may not see is listed as redacted, whether or not it holds a
    value, so a redaction does not reveal that a value exists. Writes one audit row for what was
    shown (with the basis of each field) and one for what was withheld.

    With ``recipient`` (a handover's data package), every field is decided for the recipient's
    organisation, not the actor's: the actor sends, the recipient will see it.

    With ``access=former`` (the organisation's part in the case has ended), only values whose
    current version the organisation wrote itself are shown, each still decided by the decision
    point; every other field is redacted alike, held or not.

    With ``data_subject_request`` (the GDPR article and the registered request's id), the values
    are given to the data protection officer for the person themselves (Art. 15 access or Art. 20
    portability): the person's own right is the basis of every field, and the audit says so.

    ``holders`` are the person's data holders (:func:`data_holders`), ``agreements`` the
    data-exchange agreements, ``consents`` the person's consents and ``stored`` the stored fields
    when the caller already has them: ``read_person`` gets the holders, consents and stored
    fields with its scope check and reuses the agreements while they are unchanged."""
    if data_subject_request is not None:
        article, request_id = data_subject_request
        subject_basis = f"gdpr_art{article}:request {request_id}"

        def decide_for(category: str, action: str) -> Decision:
            return Decision(True, subject_basis, "")
    else:
        decide_for = _decider(session, privacy, recipient or actor, person, purpose, now, holders, agreements,
                              consents)
    for_whom = None if recipient is None else f"for organisation {recipient.organisation_id}"
    wanted = list(only) if only is not None else list(privacy.policy.fields)
    held = stored if stored is not None else StoredFields.read(session, person.id)
    writers: dict[str, int] = dict(person.plain_field_writers or {}) | held.writers
    own_only = access is Access.former
    data_key: bytes | None = None
    values: dict[str, Any] = {}
    bases: dict[str, str] = {}
    redacted: list[Redaction] = []
    for name in wanted:
        spec = privacy.policy.fields[name]
        if own_only and writers.get(name) != actor.organisation_id:
            redacted.append(Redaction(field=name, category=spec.category, reason=FORMER_REASON))
            continue
        decision = decide_for(spec.category, "read")
        if not decision.permit:
            redacted.append(Redaction(field=name, category=spec.category, reason=decision.reason))
            continue
        assert decision.basis is not None
        bases[name] = decision.basis
        if name in PLAIN_FIELDS:
            if getattr(person, name) is not None:
                values[name] = getattr(person, name)
        elif name in held.ciphertexts:
            if data_key is None:
                data_key = _unwrapped(privacy, person.id, held.wrapped)
            values[name] = decrypt_field(data_key, person.id, name, held.ciphertexts[name])
    entries = [AuditEntry(
        agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="R",
        subtype=subtype, entity_type="person", entity_id=str(person.id), person_id=person.id,
        fields=tuple(sorted(values)), legal_bases={f: bases[f] for f in sorted(values)},
        purpose=purpose, detail=for_whom,
    )]
    if redacted:
        entries.append(AuditEntry(
            agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="R",
            subtype=subtype, entity_type="person", entity_id=str(person.id), person_id=person.id,
            fields=tuple(r.field for r in redacted), purpose=purpose, outcome="denied",
            detail="withheld: no legal basis" + (f" {for_whom}" if for_whom else ""),
        ))
    write_audit(session, entries, now)
    return PersonRecordOut(
        id=person.id, lead_jurisdiction_id=person.lead_jurisdiction_id, created_at=person.created_at,
        purpose=purpose, fields=values, legal_bases={f: bases[f] for f in values}, redacted=redacted,
    )


def decide_category(session: Session, privacy: Privacy, actor: Actor, person: Person, purpose: str,
                    category: str, action: str, now: datetime) -> Decision:
    """One decision of the policy decision point for this person, as ``disclose`` would make it."""
    return _decider(session, privacy, actor, person, purpose, now)(category, action)


def current_bases(session: Session, privacy: Privacy, actor: Actor, person: Person, purpose: str,
                  now: datetime, fields: Iterable[str]) -> tuple[dict[str, str], list[Redaction]]:
    """For fields disclosed earlier: the basis on which the actor may read each now, and the
    ones it may not (a withdrawn or expired consent closes them at once)."""
    decide_for = _decider(session, privacy, actor, person, purpose, now)
    bases: dict[str, str] = {}
    refused: list[Redaction] = []
    for name in fields:
        spec = privacy.policy.fields[name]
        decision = decide_for(spec.category, "read")
        if decision.permit:
            assert decision.basis is not None
            bases[name] = decision.basis
        else:
            refused.append(Redaction(field=name, category=spec.category, reason=decision.reason))
    return bases, refused


def person_data_key(session: Session, privacy: Privacy, person_id: uuid.UUID) -> bytes:
    row = session.execute(_PERSON_KEY, {"person_id": person_id}).first()
    return _unwrapped(privacy, person_id, None if row is None else (row.wrapped_key, row.master_key_id))


def _unwrapped(privacy: Privacy, person_id: uuid.UUID, wrapped: tuple[bytes | None, str | None] | None) -> bytes:
    """The person's data key from its wrapped form; 404 once it is gone (crypto-shredded)."""
    if wrapped is None or wrapped[0] is None:
        raise NotFound(f"the data of person {person_id} has been erased", resource="person", id=str(person_id))
    return privacy.keys.unwrap(person_id, wrapped[0], wrapped[1])


def person_data_key_for_writing(session: Session, privacy: Privacy, person_id: uuid.UUID,
                                now: datetime) -> bytes:
    """The person's data key, made on first use."""
    key_row = session.get(PersonKey, person_id)
    if key_row is None:
        data_key = privacy.keys.new_data_key()
        session.add(PersonKey(person_id=person_id, wrapped_key=privacy.keys.wrap(person_id, data_key),
                              created_at=now, master_key_id=privacy.keys.key_id))
        return data_key
    return privacy.keys.unwrap(person_id, key_row.wrapped_key, key_row.master_key_id)


# --- writing -------------------------------------------------------------------------------------


def _parse_fields(privacy: Privacy, values: dict[str, Any]) -> dict[str, Any]:
    errors = []
    parsed: dict[str, Any] = {}
    for name, raw in values.items():
        spec = privacy.policy.fields.get(name)
        if spec is None:
            errors.append({"field": f"fields.{name}", "message": "not a field of the person record",
                           "type": "unknown_field"})
            continue
        try:
            parsed[name] = spec.parse(raw)
        except ValueError as exc:
            errors.append({"field": f"fields.{name}", "message": str(exc), "type": "value_error"})
    if errors:
        raise ValidationFailed(f"{errors[0]['field']}: {errors[0]['message']}", errors=errors)
    return parsed


RECHTSKREISWECHSEL = "handover.rechtskreiswechsel"


def write_fields(
    session: Session,
    privacy: Privacy,
    actor: Actor,
    person: Person,
    values: dict[str, Any],
    purpose: str,
    now: datetime,
    subtype: str,
) -> None:
    """Decide, encrypt and store; on any field without a basis store nothing and record the denial.

    Whatever the route, the Rechtskreis of a person with a running chain changes only by an
    acknowledged Rechtskreiswechsel (``subtype`` handover.rechtskreiswechsel), so that no moment
    passes without a responsible office."""
    if "benefit_regime" in values and subtype != RECHTSKREISWECHSEL and _has_open_chain(session, person.id):
        raise RechtskreisByHandover(
            "the person has a running chain: the Rechtskreis changes when the receiving office "
            "acknowledges a Rechtskreiswechsel (POST /chains/{id}/handovers, kind "
            "rechtskreiswechsel)", field="benefit_regime")
    decide_for = _decider(session, privacy, actor, person, purpose, now)
    refused, bases = [], {}
    for name in values:
        spec = privacy.policy.fields[name]
        decision = decide_for(spec.category, "write")
        if decision.permit:
            bases[name] = decision.basis
        else:
            refused.append({"field": name, "category": spec.category, "reason": decision.reason})
    if refused:
        deny_and_raise(
            session,
            AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id,
                       action="U", subtype=subtype, entity_type="person", entity_id=str(person.id),
                       person_id=person.id, fields=tuple(r["field"] for r in refused),
                       purpose=purpose, outcome="denied", detail="write refused: no legal basis"),
            now,
            NoLegalBasis(
                "no legal basis to write " + ", ".join(r["field"] for r in refused), fields=refused
            ),
        )
    data_key = person_data_key_for_writing(session, privacy, person.id, now)
    existing = {
        f.field: f for f in session.scalars(select(PersonField).where(PersonField.person_id == person.id))
    }
    plain_writers = dict(person.plain_field_writers or {})
    for name, value in values.items():
        if name in PLAIN_FIELDS:
            setattr(person, name, value)
            plain_writers[name] = actor.organisation_id
            person.plain_field_writers = plain_writers  # a new dict, so the change is saved
            continue
        row = existing.get(name)
        if value is None:
            if row is not None:
                session.delete(row)
                del existing[name]
            continue
        blob = encrypt_field(data_key, person.id, name, value)
        if row is None:
            row = PersonField(person_id=person.id, field=name, ciphertext=blob, updated_at=now,
                              updated_by_organisation_id=actor.organisation_id)
            session.add(row)
            existing[name] = row
        else:
            row.ciphertext, row.updated_at = blob, now
            row.updated_by_organisation_id = actor.organisation_id
    if any(name in values for name in IDENTITY_TRIPLE):
        triple = {}
        for name in IDENTITY_TRIPLE:
            if name in values:
                triple[name] = values[name]
            elif name in existing:
                triple[name] = decrypt_field(data_key, person.id, name, existing[name].ciphertext)
        person.blind_index = (
            privacy.keys.blind_index(triple["family_name"], triple["given_names"], triple["birth_date"])
            if all(triple.get(n) for n in IDENTITY_TRIPLE) else None
        )
        if "family_name" in values or "given_names" in values:
            _index_name_tokens(session, privacy, person.id,
                               [triple.get("family_name") or "", triple.get("given_names") or ""])
    write_audit(session, [AuditEntry(
        agent_user=actor.user_id, agent_organisation_id=actor.organisation_id,
        action="C" if subtype == "person.create" else "U", subtype=subtype, entity_type="person",
        entity_id=str(person.id), person_id=person.id, fields=tuple(sorted(values)),
        legal_bases=dict(sorted(bases.items())), purpose=purpose,
    )], now)


def _index_name_tokens(session: Session, privacy: Privacy, person_id: uuid.UUID, names: list[str]) -> None:
    """Replace the person's name-token digests (closed-world check of finding texts)."""
    session.execute(delete(PersonNameToken).where(PersonNameToken.person_id == person_id))
    digests = {privacy.keys.name_token(t) for name in names for t in name_tokens(name)}
    session.add_all(PersonNameToken(person_id=person_id, digest=d) for d in sorted(digests))


def create_person(session: Session, privacy: Privacy, actor: Actor, body: PersonCreateIn,
                  now: datetime) -> PersonRecordOut:
    """Register a person, record the consents signed at intake, then write the fields."""
    with unit_of_work(session):
        purpose = resolve_purpose(privacy, actor, body.purpose)
        values = _parse_fields(privacy, body.fields)
        jurisdiction_id = body.lead_jurisdiction_id or session.scalar(
            select(Jurisdiction.id).where(Jurisdiction.path == actor.jurisdiction_path))
        jurisdiction = session.get(Jurisdiction, jurisdiction_id)
        if jurisdiction is None:
            raise ValidationFailed(
                f"lead_jurisdiction_id: no jurisdiction {jurisdiction_id}",
                errors=[{"field": "body.lead_jurisdiction_id", "message": "no such jurisdiction",
                         "type": "not_found"}],
            )
        if not jurisdiction.path.startswith(actor.jurisdiction_path):
            raise WrongOrganisation(f"your organisation does not serve {jurisdiction.name}",
                                    owner=f"an organisation serving {jurisdiction.name}")
        person = Person(id=uuid.uuid4(), lead_jurisdiction_id=jurisdiction.id,
                        created_by_organisation_id=actor.organisation_id, created_at=now)
        session.add(person)
        session.flush()
        for consent in body.consents:
            _record_consent(session, privacy, actor, person, consent, now, registering=True)
        write_fields(session, privacy, actor, person, values, purpose, now, "person.create")
        out = disclose(session, privacy, actor, person, purpose, now)
    return out


def read_person(session: Session, privacy: Privacy, actor: Actor, person_id: uuid.UUID,
                purpose: str | None, now: datetime) -> PersonRecordOut:
    with unit_of_work(session):
        person, access, grants = _person_access(session, actor, person_id)
        out = disclose(session, privacy, actor, person, resolve_purpose(privacy, actor, purpose), now,
                       subtype="person.read" if access is Access.current else "person.read.former",
                       access=access, holders=grants.holders, consents=grants.consents, stored=grants.stored,
                       agreements=_agreements(session, grants.agreements_digest))
    return out


def update_person(session: Session, privacy: Privacy, actor: Actor, person_id: uuid.UUID,
                  fields: dict[str, Any], purpose: str | None, now: datetime,
                  rectification_request_id: uuid.UUID | None = None) -> PersonRecordOut:
    with unit_of_work(session):
        person = person_in_scope(session, actor, person_id)
        subtype = "person.update"
        if rectification_request_id is not None:
            subtype = _rectification(session, actor, person, rectification_request_id, fields, now)
        purpose = resolve_purpose(privacy, actor, purpose)
        values = _parse_fields(privacy, fields)
        write_fields(session, privacy, actor, person, values, purpose, now, subtype)
        out = disclose(session, privacy, actor, person, purpose, now)
    return out


def _rectification(session: Session, actor: Actor, person: Person, request_id: uuid.UUID,
                   fields: dict[str, Any], now: datetime) -> str:
    """A correction for a registered rectification request (GDPR Art. 16): the audit keeps that
    each old value existed (since when, written by which organisation), never the value."""
    request = session.get(DataSubjectRequest, request_id)
    if request is None or request.person_id != person.id or request.kind != "rectification" \
            or request.state not in ("received", "in_progress", "extended"):
        raise RequestMismatch(f"request {request_id} is not an open rectification request of this person",
                              request_id=str(request_id), expected_kind=["rectification"])
    old = {r.field: r for r in session.scalars(select(PersonField).where(
        PersonField.person_id == person.id, PersonField.field.in_(list(fields))))}
    existed = [f"{f} (since {old[f].updated_at.isoformat()}, written by organisation {old[f].updated_by_organisation_id})"
               for f in sorted(old)]
    existed += [f"{f} (written by organisation {(person.plain_field_writers or {}).get(f)})"
                for f in sorted(fields) if f in PLAIN_FIELDS and getattr(person, f) is not None]
    write_audit(session, [AuditEntry(
        agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="U",
        subtype="person.rectify.replaced", entity_type="person", entity_id=str(person.id),
        person_id=person.id, fields=tuple(sorted(fields)),
        detail=(f"request {request_id}: replaced values that existed: " + ("; ".join(existed) or "none"))[:2000],
    )], now)
    return "person.rectify"


def _has_open_chain(session: Session, person_id: uuid.UUID) -> bool:
    return session.scalar(select(Chain.id).where(Chain.person_id == person_id,
                                                 Chain.lifecycle == ChainLifecycle.open.value).limit(1)) is not None


def find_persons(session: Session, privacy: Privacy, actor: Actor, family_name: str,
                 given_names: str, birth_date: str, purpose: str | None,
                 now: datetime) -> list[PersonRecordOut]:
    """Look a person up by name and birth date through the blind index, within the record scope."""
    with unit_of_work(session):
        purpose = resolve_purpose(privacy, actor, purpose)
        # Under every known master key: during a rotation some indexes are still of the old one.
        digests = privacy.keys.blind_indexes(family_name, given_names, birth_date)
        persons = session.scalars(
            select(Person).where(Person.blind_index.in_(digests), scope_clause(actor)).order_by(Person.created_at)
        ).all()
        for p in persons:
            refuse_unless_active(p.processing, p.id)
        out = [disclose(session, privacy, actor, p, purpose, now, subtype="person.search") for p in persons]
    return out


# --- consents ------------------------------------------------------------------------------------


# Evidence references that name no document.
_PLACEHOLDER_EVIDENCE = {"", "-", "--", "n/a", "na", "none", "keine", "kein", "ohne", "x", "xx", "xxx",
                         "?", "tbd", "todo", "folgt", "liegt vor", "mündlich", "muendlich", "unbekannt"}


def _names_only_recorder(session: Session, actor: Actor, body: ConsentIn) -> bool:
    """Every recipient of the consent is the recording organisation itself."""
    for r in body.recipients:
        if r.organisation_id is not None:
            if r.organisation_id != actor.organisation_id:
                return False
            continue
        if r.organisation_kind != actor.organisation_kind:
            return False
        place = session.get(Jurisdiction, r.jurisdiction_id)
        others = session.scalar(select(Organisation.id).where(
            Organisation.kind == r.organisation_kind, Organisation.id != actor.organisation_id).limit(1))
        if place is None or others is not None:
            return False
    return True


def _may_record_consent(session: Session, privacy: Privacy, actor: Actor, person: Person,
                        registering: bool) -> None:
    """Consent is recorded by the case management (which took the signed form): an organisation
    of a kind the policy lists, running the case management of an open chain of the person, or
    registering the person (in the same request, or while no chain has been started yet)."""
    if actor.organisation_kind not in privacy.policy.consent_recorders:
        raise NotConsentRecorder(
            f"organisations of kind {actor.organisation_kind} do not record consents; the case "
            "management records the signed form", resource="person", id=str(person.id))
    if registering:
        return
    manages = session.scalar(select(Chain.id).where(
        Chain.person_id == person.id, Chain.lifecycle == ChainLifecycle.open.value,
        Chain.case_management_organisation_id == actor.organisation_id).limit(1))
    if manages is not None:
        return
    no_chain_yet = session.scalar(select(Chain.id).where(Chain.person_id == person.id).limit(1)) is None
    if no_chain_yet and person.created_by_organisation_id == actor.organisation_id:
        return
    raise NotConsentRecorder("only the case management of the person's chain records a consent",
                             resource="person", id=str(person.id))


def _record_consent(session: Session, privacy: Privacy, actor: Actor, person: Person,
                    body: ConsentIn, now: datetime, registering: bool = False) -> Consent:
    """Check and store a consent as signed by the person. It takes effect when it is recorded,
    never earlier: ``signed_at`` keeps the date on the form as evidence."""
    _may_record_consent(session, privacy, actor, person, registering)
    policy = privacy.policy
    problems = []
    fields: list[str] = []
    unknown = [c for c in body.categories if c not in policy.categories]
    if unknown:
        problems.append(f"unknown categories {unknown}")
    if body.purpose not in policy.purposes:
        problems.append(f"unknown purpose '{body.purpose}'")
    special = [c for c in body.categories if c in policy.categories and policy.categories[c].special]
    if special and not body.explicit_special:
        problems.append(f"special categories {special} need explicit consent (explicit_special)")
    if special and body.collection_method == "oral_documented":
        problems.append(f"special categories {special} need a written or electronic consent")
        fields.append("collection_method")
    if special and _placeholder_evidence(body.evidence_reference):
        problems.append(f"special categories {special} need the reference of the signed form "
                        "(evidence_reference)")
        fields.append("evidence_reference")
    if not body.consequences_explained:
        problems.append("the person must have been told the consequences of refusing")
    valid_from = body.valid_from or now
    if valid_from < now:
        problems.append("valid_from lies before now: a consent takes effect when it is recorded, "
                        "never earlier (put the date on the form in signed_at)")
        fields.append("valid_from")
    if body.signed_at is not None and body.signed_at > now:
        problems.append("signed_at lies in the future")
        fields.append("signed_at")
    if body.valid_until is not None and body.valid_until <= valid_from:
        problems.append("valid_until must be after valid_from")
        fields.append("valid_until")
    recipients: list[dict[str, Any]] = []
    for r in body.recipients:
        if r.organisation_id is not None:
            if session.get(Organisation, r.organisation_id) is None:
                problems.append(f"no organisation {r.organisation_id}")
            recipients.append({"organisation_id": r.organisation_id})
        else:
            if session.get(Jurisdiction, r.jurisdiction_id) is None:
                problems.append(f"no jurisdiction {r.jurisdiction_id}")
            if session.scalar(select(Organisation.id).where(Organisation.kind == r.organisation_kind).limit(1)) is None:
                problems.append(f"no organisation of kind '{r.organisation_kind}'")
            recipients.append({"organisation_kind": r.organisation_kind, "jurisdiction_id": r.jurisdiction_id})
    if not problems and _names_only_recorder(session, actor, body) and not registering and \
            session.scalar(select(Chain.id).where(
                Chain.person_id == person.id, Chain.lifecycle == ChainLifecycle.open.value,
                Chain.case_management_organisation_id == actor.organisation_id).limit(1)) is None:
        problems.append("the recording organisation cannot be the only recipient of a consent it "
                        "records unless it runs the case management")
        fields.append("recipients")
    if problems:
        raise InvalidConsent("; ".join(problems), problems=problems, fields=sorted(set(fields)))
    consent = Consent(
        id=uuid.uuid4(), person_id=person.id, recipients=recipients, categories=sorted(set(body.categories)),
        purpose=body.purpose, explicit_special=body.explicit_special,
        consequences_explained=body.consequences_explained, mutual=body.mutual,
        collection_method=body.collection_method, evidence_reference=body.evidence_reference,
        language=body.language, interpreter_used=body.interpreter_used, signed_at=body.signed_at,
        valid_from=valid_from, valid_until=body.valid_until, recorded_at=now, recorded_by_user=actor.user_id,
        recorded_by_organisation_id=actor.organisation_id,
    )
    session.add(consent)
    session.flush()
    write_audit(session, [AuditEntry(
        agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="C",
        subtype="consent.record", entity_type="consent", entity_id=str(consent.id),
        person_id=person.id, purpose=body.purpose,
        detail="categories: " + ", ".join(consent.categories),
    )], now)
    return consent


def record_signed_consent(session: Session, privacy: Privacy, actor: Actor, person: Person,
                          body: ConsentIn, now: datetime) -> Consent:
    """Record a consent in the caller's transaction (signed in an Erstgespräch, say), by the same
    rules as :func:`record_consent`."""
    return _record_consent(session, privacy, actor, person, body, now)


def _placeholder_evidence(reference: str) -> bool:
    text = " ".join(reference.split()).casefold()
    return text in _PLACEHOLDER_EVIDENCE or not any(ch.isalnum() for ch in text) or len(text) < 3


def consent_out(consent: Consent, withdrawn_at: datetime | None, now: datetime,
                recorder_name: str | None = None) -> ConsentOut:
    if withdrawn_at is not None and withdrawn_at <= now:
        status = "withdrawn"
    elif consent.valid_from > now:
        status = "not_yet_valid"
    elif consent.valid_until is not None and consent.valid_until <= now:
        status = "expired"
    else:
        status = "active"
    return ConsentOut(
        id=consent.id, person_id=consent.person_id, recipients=consent.recipients,
        categories=consent.categories, purpose=consent.purpose,
        explicit_special=consent.explicit_special,
        consequences_explained=consent.consequences_explained, mutual=consent.mutual,
        collection_method=consent.collection_method, evidence_reference=consent.evidence_reference,
        language=consent.language, interpreter_used=consent.interpreter_used,
        signed_at=consent.signed_at, valid_from=consent.valid_from, valid_until=consent.valid_until,
        recorded_at=consent.recorded_at, recorded_by_user=consent.recorded_by_user,
        recorded_by_organisation_id=consent.recorded_by_organisation_id,
        recorded_by_organisation_name=recorder_name,
        withdrawn_at=withdrawn_at, status=status,
    )


def record_consent(session: Session, privacy: Privacy, actor: Actor, person_id: uuid.UUID,
                   body: ConsentIn, now: datetime) -> ConsentOut:
    with unit_of_work(session):
        person = person_in_scope(session, actor, person_id)
        consent = _record_consent(session, privacy, actor, person, body, now)
        result = consent_out(consent, None, now)
    return result


def withdraw_consent(session: Session, privacy: Privacy, actor: Actor, consent_id: uuid.UUID,
                     note: str | None, now: datetime) -> ConsentOut:
    """Withdrawal takes effect now for every later access; earlier access stays lawful."""
    with unit_of_work(session):
        # Scope in the same statement: a consent of a person outside the caller's scope is as
        # unknown as a random id, and the answer names only the consent asked for.
        consent = session.scalar(
            select(Consent).where(Consent.id == consent_id,
                                  Consent.person_id.in_(select(Person.id).where(scope_clause(actor)))))
        if consent is None:
            raise NotFound(f"no consent {consent_id}", resource="consent", id=str(consent_id))
        # A restriction does not stop a withdrawal: it only narrows what may be done, and must
        # stay as easy as giving the consent was (GDPR Art. 7(3)).
        refuse_unless_active(session.scalar(select(Person.processing).where(Person.id == consent.person_id)),
                             consent.person_id, allow_restricted=True)
        # Withdrawals queue behind the person's row: consents are append-only, and the service's
        # database role may not lock their rows (FOR UPDATE needs the UPDATE privilege).
        session.execute(select(Person.id).where(Person.id == consent.person_id).with_for_update())
        check_free_text(session, privacy, note, "note", [consent.person_id], actor, now,
                        entity_type="consent", entity_id=str(consent_id))
        if session.get(ConsentWithdrawal, consent_id) is not None:
            raise ConsentAlreadyWithdrawn(f"consent {consent_id} was already withdrawn")
        session.add(ConsentWithdrawal(consent_id=consent_id, withdrawn_at=now,
                                      recorded_by_user=actor.user_id,
                                      recorded_by_organisation_id=actor.organisation_id, note=note))
        write_audit(session, [AuditEntry(
            agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="U",
            subtype="consent.withdraw", entity_type="consent", entity_id=str(consent_id),
            person_id=consent.person_id, purpose=consent.purpose,
        )], now)
        result = consent_out(consent, now, now)
    return result


def list_consents(session: Session, actor: Actor, person_id: uuid.UUID, now: datetime,
                  officer: bool = False) -> list[ConsentOut]:
    """A person's consent history, newest first. The data protection officer sees every person's."""
    with unit_of_work(session):
        if officer:
            found = session.scalar(select(Person.id).where(Person.id == person_id, person_area_clause(actor)))
            if found is None:
                raise _person_not_found(person_id)
        else:
            person_in_scope(session, actor, person_id)
        rows = session.execute(
            select(Consent, ConsentWithdrawal.withdrawn_at, Organisation.name)
            .outerjoin(ConsentWithdrawal, ConsentWithdrawal.consent_id == Consent.id)
            .join(Organisation, Organisation.id == Consent.recorded_by_organisation_id)
            .where(Consent.person_id == person_id)
            .order_by(Consent.recorded_at.desc())
        ).all()
        write_audit(session, [AuditEntry(
            agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="R",
            subtype="consent.list", entity_type="person", entity_id=str(person_id), person_id=person_id,
        )], now)
        result = [consent_out(c, w, now, name) for c, w, name in rows]
    return result


# --- agreements ----------------------------------------------------------------------------------


def record_agreement(session: Session, privacy: Privacy, actor: Actor, body: AgreementIn,
                     now: datetime) -> DataExchangeAgreement:
    with unit_of_work(session):
        problems = []
        parties = {i: session.get(Organisation, i) for i in body.organisation_ids}
        missing = [i for i, org in parties.items() if org is None]
        if missing:
            problems.append(f"no organisations {missing}")
        outside = [i for i, org in parties.items() if org is not None and not in_area(actor, org.jurisdiction.path)]
        if outside:
            problems.append(f"organisations {outside} lie outside your area")
        unknown = [c for c in body.categories if c not in privacy.policy.categories]
        if unknown:
            problems.append(f"unknown categories {unknown}")
        special = [c for c in body.categories if c in privacy.policy.categories and privacy.policy.categories[c].special]
        if special:
            problems.append(f"special categories {special} cannot be opened by an agreement; they need consent")
        if body.purpose not in privacy.policy.purposes:
            problems.append(f"unknown purpose '{body.purpose}'")
        if body.valid_until is not None and body.valid_until <= body.valid_from:
            problems.append("valid_until must be after valid_from")
        if problems:
            raise ValidationFailed("; ".join(problems),
                                   errors=[{"field": "body", "message": p, "type": "value_error"} for p in problems])
        agreement = DataExchangeAgreement(
            id=uuid.uuid4(), title=body.title, organisation_ids=sorted(set(body.organisation_ids)),
            categories=sorted(set(body.categories)), purpose=body.purpose, valid_from=body.valid_from,
            valid_until=body.valid_until, document_reference=body.document_reference,
            recorded_at=now, recorded_by_user=actor.user_id,
        )
        session.add(agreement)
        session.flush()
        write_audit(session, [AuditEntry(
            agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action="C",
            subtype="agreement.record", entity_type="agreement", entity_id=str(agreement.id),
            purpose=body.purpose, detail=body.title,
        )], now)
    return agreement
