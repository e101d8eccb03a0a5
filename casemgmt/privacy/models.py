"""Encrypted person fields, per-person keys, consents, data-exchange agreements, audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from casemgmt.database import Base, UTCDateTime


class PersonKey(Base):
    """A person's data key, wrapped by the master key. Deleting it erases the person's fields."""

    __tablename__ = "person_keys"

    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Which master key wrapped it (``KeyRing.key_id``); empty for keys wrapped before key ids.
    master_key_id: Mapped[str | None] = mapped_column(String(32), index=True)


class PersonField(Base):
    """One encrypted field value (AES-256-GCM; person and field bound in as associated data)."""

    __tablename__ = "person_fields"

    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))


class PersonNameToken(Base):
    """Keyed digests of the words of a person's names (see ``KeyRing.name_token``), so a finding
    text can be checked against the people in the records without a list of names in clear."""

    __tablename__ = "person_name_tokens"

    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Consent(Base):
    """An Einwilligung / Schweigepflichtentbindung, immutable once recorded (append-only on
    PostgreSQL). Field names follow ISO/IEC TS 27560 and the Kantara consent receipt where they
    have a counterpart: the person is the PII principal, recipients the PII recipients."""

    __tablename__ = "consents"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    person_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("persons.id"), index=True)
    # [{"organisation_id": 5} | {"organisation_kind": "jobcenter", "jurisdiction_id": 4}, ...]
    recipients: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    categories: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(64))
    explicit_special: Mapped[bool] = mapped_column(Boolean)
    consequences_explained: Mapped[bool] = mapped_column(Boolean)
    mutual: Mapped[bool] = mapped_column(Boolean)
    collection_method: Mapped[str] = mapped_column(String(32))
    evidence_reference: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(50))
    interpreter_used: Mapped[bool] = mapped_column(Boolean)
    # When the person signed the form (evidence only; the consent takes effect when recorded).
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_by_user: Mapped[str] = mapped_column(String(200))
    recorded_by_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))


class ConsentWithdrawal(Base):
    """The withdrawal of a consent (GDPR Art. 7(3)); effective for every access from ``withdrawn_at``."""

    __tablename__ = "consent_withdrawals"

    consent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("consents.id"), primary_key=True)
    withdrawn_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_by_user: Mapped[str] = mapped_column(String(200))
    recorded_by_organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    note: Mapped[str | None] = mapped_column(Text)


class DataExchangeAgreement(Base):
    """A Datenaustauschvereinbarung between named organisations, for categories, one purpose and
    a period."""

    __tablename__ = "data_exchange_agreements"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(200))
    organisation_ids: Mapped[list[int]] = mapped_column(JSON)
    categories: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    document_reference: Mapped[str] = mapped_column(String(200))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_by_user: Mapped[str] = mapped_column(String(200))


class AuditEvent(Base):
    """One audited access or change, modelled on FHIR AuditEvent.

    Rows form hash chains, one per stream (see casemgmt.privacy.audit): within its stream a row
    has the next ``seq`` and ``hash`` is an HMAC over the previous row's hash and this row's
    canonical encoding, which holds pseudonyms, field names and legal bases but never a
    personal value. ``id`` only orders rows for reading. Append-only on PostgreSQL."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("stream", "seq", name="uq_audit_events_stream_seq"),
        Index("ix_audit_events_person_id", "person_id", "id"),
        Index("ix_audit_events_agent_user", "agent_user", "id"),
        Index("ix_audit_events_agent_organisation_id", "agent_organisation_id", "id"),
        Index("ix_audit_events_recorded_at", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    stream: Mapped[int] = mapped_column(SmallInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    agent_user: Mapped[str] = mapped_column(String(200))
    agent_organisation_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))  # C R U D E (FHIR AuditEvent.action)
    subtype: Mapped[str] = mapped_column(String(64))  # what happened, e.g. person.read
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    # Stored as text exactly as hashed: the person's pseudonym, the field names and the
    # legal basis per field as canonical JSON (see audit.json_text).
    person_id: Mapped[str | None] = mapped_column(String(36))
    fields: Mapped[str] = mapped_column(Text)
    legal_bases: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))  # success | denied
    detail: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # The audit key that made ``hash`` (see AuditKey); empty for rows written before key ids.
    key_id: Mapped[str | None] = mapped_column(String(32))


class AuditHead(Base):
    """The end of one audit stream; its row lock serialises appends to that stream only."""

    __tablename__ = "audit_head"

    stream: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))


class AuditKey(Base):
    """An audit key of an earlier master key, wrapped by the current one, so rows written before
    a master key rotation still verify. Written by ``casemgmt keys rotate`` (the schema owner);
    the service role only reads it."""

    __tablename__ = "audit_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_under: Mapped[str] = mapped_column(String(32))
    # The key of the rows written before key ids existed (their ``key_id`` is empty).
    covers_unlabelled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
