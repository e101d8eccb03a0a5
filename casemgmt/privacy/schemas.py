"""API shapes for the person record, consents, agreements and the officer's views."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from casemgmt.validation import DbId, IsoDateTime, Key, Text


class Redaction(BaseModel):
    """A field the caller may not see: named with the reason, never with its value."""

    field: str
    category: str
    reason: str


class PersonRecordOut(BaseModel):
    """A person as the caller may see them. ``legal_bases`` names the basis of each field shown."""

    id: uuid.UUID
    lead_jurisdiction_id: int
    created_at: datetime
    purpose: str
    fields: dict[str, Any]
    legal_bases: dict[str, str]
    redacted: list[Redaction]


class RecipientIn(BaseModel):
    """A named organisation, or every organisation of a kind serving a jurisdiction."""

    model_config = ConfigDict(extra="forbid")

    organisation_id: DbId | None = None
    organisation_kind: Key | None = None
    jurisdiction_id: DbId | None = None

    @model_validator(mode="after")
    def _one_form(self) -> RecipientIn:
        named = self.organisation_id is not None
        by_kind = self.organisation_kind is not None and self.jurisdiction_id is not None
        if named == by_kind or (named and (self.organisation_kind or self.jurisdiction_id)):
            raise ValueError("give either organisation_id, or organisation_kind with jurisdiction_id")
        return self


class ConsentIn(BaseModel):
    """A consent (Einwilligung / Schweigepflichtentbindung) as signed by the person."""

    model_config = ConfigDict(extra="forbid")

    recipients: list[RecipientIn] = Field(min_length=1, max_length=50)
    categories: list[Key] = Field(min_length=1, max_length=20)
    purpose: Key
    explicit_special: bool = Field(
        default=False, description="The person explicitly consented to special categories (health)."
    )
    consequences_explained: bool = Field(
        description="The person was told what refusing means (cooperation duties, § 60 SGB I)."
    )
    mutual: bool = Field(default=False, description="The recipients may also exchange among themselves.")
    collection_method: Literal["written", "electronic", "oral_documented"] = "written"
    evidence_reference: Text = Field(min_length=1, max_length=200, description="Reference of the signed form.")
    language: Text = Field(min_length=2, max_length=50)
    interpreter_used: bool = False
    signed_at: IsoDateTime | None = Field(
        default=None, description="When the person signed the form (evidence). The consent still "
                                  "takes effect only when it is recorded.")
    valid_from: IsoDateTime | None = Field(
        default=None, description="Defaults to now; may not lie before now (no backdating).")
    valid_until: IsoDateTime | None = None


class ConsentOut(BaseModel):
    id: uuid.UUID
    person_id: uuid.UUID
    recipients: list[dict[str, Any]]
    categories: list[str]
    purpose: str
    explicit_special: bool
    consequences_explained: bool
    mutual: bool
    collection_method: str
    evidence_reference: str
    language: str
    interpreter_used: bool
    signed_at: datetime | None = None
    valid_from: datetime
    valid_until: datetime | None
    recorded_at: datetime
    recorded_by_user: str
    recorded_by_organisation_id: int
    recorded_by_organisation_name: str | None = Field(
        default=None, description="The organisation that recorded the consent (the DPO's history).")
    withdrawn_at: datetime | None
    status: Literal["active", "not_yet_valid", "expired", "withdrawn"]


class WithdrawalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Text | None = Field(default=None, max_length=2000)


class PersonCreateIn(BaseModel):
    """Register a person. Consents signed at intake are recorded first, so the fields they
    cover can be written in the same request."""

    model_config = ConfigDict(extra="forbid")

    lead_jurisdiction_id: DbId | None = Field(
        default=None, description="Where the person lives; defaults to your organisation's jurisdiction."
    )
    purpose: Key | None = Field(default=None, description="Defaults to your organisation kind's purpose.")
    fields: dict[Key, Any] = Field(default_factory=dict)
    consents: list[ConsentIn] = Field(default_factory=list, max_length=20)


class PersonUpdateIn(BaseModel):
    """Set (or, with null, clear) individual fields."""

    model_config = ConfigDict(extra="forbid")

    purpose: Key | None = None
    fields: dict[Key, Any] = Field(min_length=1)
    rectification_request_id: uuid.UUID | None = Field(
        default=None, description="The registered rectification request (GDPR Art. 16) this change answers: "
                                  "the audit records that the old values existed, never the values.")


class PersonSearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family_name: Text = Field(min_length=1, max_length=200)
    given_names: Text = Field(min_length=1, max_length=200)
    birth_date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    purpose: Key | None = None


class AgreementIn(BaseModel):
    """A Datenaustauschvereinbarung between named organisations."""

    model_config = ConfigDict(extra="forbid")

    title: Text = Field(min_length=1, max_length=200)
    organisation_ids: list[DbId] = Field(min_length=2, max_length=50)
    categories: list[Key] = Field(min_length=1, max_length=20)
    purpose: Key
    valid_from: IsoDateTime
    valid_until: IsoDateTime | None = None
    document_reference: Text = Field(min_length=1, max_length=200)


class AgreementOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str
    organisation_ids: list[int]
    categories: list[str]
    purpose: str
    valid_from: datetime
    valid_until: datetime | None
    document_reference: str
    recorded_at: datetime
    recorded_by_user: str


class AuditEventOut(BaseModel):
    id: int
    recorded_at: datetime
    agent_user: str
    agent_organisation_id: int | None
    action: str
    subtype: str
    entity_type: str
    entity_id: str | None
    person_id: uuid.UUID | None
    fields: list[str]
    legal_bases: dict[str, str]
    purpose: str | None
    outcome: str
    detail: str | None


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: int | None


class CategoryOut(BaseModel):
    """A category of personal data; access is decided per category."""

    key: str
    title: str
    description: str
    special: bool = Field(description="GDPR Art. 9: only an explicit consent opens it.")
    portable: bool = Field(description="Provided by the person; handed over on request (GDPR Art. 20).")
    retention: str = Field(description="How long the category is kept, in words.")


class FieldOut(BaseModel):
    """A field of the person record as a form would need it."""

    key: str
    category: str
    type: str = Field(description="text, date, enum, integer or boolean.")
    title: str
    max_length: int | None = None
    values: list[str] | None = Field(default=None, description="The allowed values of an enum field.")
    min: int | None = None
    max: int | None = None


class PurposeOut(BaseModel):
    key: str
    title: str


class CatalogueOut(BaseModel):
    """The field catalogue of this installation (``policies/data.yaml``), in the file's order."""

    categories: list[CategoryOut]
    fields: list[FieldOut]
    purposes: list[PurposeOut]
