"""API shapes of the Angebotsdatenbank: what providers and the KI send, what they read back,
and the public entry (no capacity, no enrolment count, places only as a band)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from casemgmt.offers.matching import MAX_AGE
from casemgmt.validation import DbId, FilledText, Key, Text

ResidenceStatus = Literal["asylum_pending", "protection_granted", "tolerated", "eu_free_movement",
                          "third_country_permit", "spaetaussiedler", "naturalised"]


class ContactIn(BaseModel):
    """A contact person of the provider: staff, named as public contact data (not case data)."""

    model_config = ConfigDict(extra="forbid")

    name: FilledText = Field(max_length=200)
    role: Text = Field(default="", max_length=200)
    phone: Text = Field(default="", max_length=50)
    email: Text = Field(default="", max_length=200)


class OfferIn(BaseModel):
    """An offer of the directory, as its provider (or the KI) enters it."""

    model_config = ConfigDict(extra="forbid")

    offer_kind: Key = Field(description="A kind of `policies/offers.yaml`.")
    title: FilledText = Field(max_length=200)
    description: Text = Field(default="", max_length=4000)
    provider_organisation_id: DbId | None = Field(
        default=None, description="The organisation running the offer; only the KI names another than its own.")
    towns: list[DbId] = Field(min_length=1, max_length=50,
                              description="Jurisdictions (towns, or a Kreis for all its towns) the offer is open to.")
    address: Text = Field(default="", max_length=400)
    languages: list[str] = Field(min_length=1, max_length=20,
                                 description="Languages it is held or supported in (`policies/offers.yaml`).")
    target_residence_statuses: list[ResidenceStatus] = Field(
        default_factory=list, max_length=10, description="Residence statuses it is open to; empty: everybody.")
    age_min: int | None = Field(default=None, ge=0, le=MAX_AGE)
    age_max: int | None = Field(default=None, ge=0, le=MAX_AGE)
    accessibility: Text = Field(default="", max_length=400)
    cost: Text = Field(default="", max_length=200)
    starts_on: date | None = Field(default=None, description="The next start.")
    evening: bool = False
    part_time: bool = False
    schedule: Text = Field(default="", max_length=400)
    capacity: int | None = Field(default=None, ge=0, le=100_000, description="Places in all; none: no limit.")
    free_places: int | None = Field(default=None, ge=0, le=100_000,
                                    description="Free places now (default: the capacity).")
    contacts: list[ContactIn] = Field(default_factory=list, max_length=10)
    links: list[Text] = Field(default_factory=list, max_length=10)
    valid_from: date
    valid_until: date | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OfferIn:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError("age_min is above age_max")
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        if self.free_places is not None and (self.capacity is None or self.free_places > self.capacity):
            raise ValueError("free_places needs a capacity at least as large")
        for link in self.links:
            if not link.startswith(("https://", "http://")):
                raise ValueError("links are http(s) addresses")
        return self


class OfferPatch(OfferIn):
    """A changed offer: the whole entry again, with the version you read."""

    expected_version: int = Field(ge=1, le=2**31 - 1)


class ContactOut(BaseModel):
    name: str
    role: str = ""
    phone: str = ""
    email: str = ""


class GoodPracticeOut(BaseModel):
    id: uuid.UUID
    offer_id: uuid.UUID | None
    working_group_id: int | None
    title: str
    text: str
    organisation_id: int
    created_at: datetime


class PublicOfferOut(BaseModel):
    """An offer as the public sees it: never a person, never a count of persons."""

    id: uuid.UUID
    offer_kind: str
    offer_kind_title: str
    title: str
    description: str
    provider: str
    towns: list[str] = Field(description="Names of the towns (or the Kreis) it is open to.")
    address: str
    languages: list[str]
    target_residence_statuses: list[str]
    age_min: int | None
    age_max: int | None
    accessibility: str
    cost: str
    starts_on: date | None
    evening: bool
    part_time: bool
    schedule: str
    places: Literal["open", "available", "few", "full"] = Field(
        description="`open`: no limit; `available`: at least k free; `few`: fewer than k free; `full`. "
                    "No number, so nobody can work out how many persons are enrolled.")
    contacts: list[ContactOut]
    links: list[str]
    valid_from: date
    valid_until: date | None
    good_practices: list[GoodPracticeOut] = Field(default_factory=list)


class OfferOut(PublicOfferOut):
    """An offer as its provider and the KI see it: with capacity, free places and version."""

    provider_organisation_id: int
    town_ids: list[int]
    capacity: int | None
    free_places: int | None
    version: int
    updated_at: datetime


class OfferVersionOut(BaseModel):
    version: int
    change: str
    document: dict
    changed_by_user: str
    changed_by_organisation_id: int
    changed_at: datetime


class GoodPracticeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offer_id: uuid.UUID | None = None
    working_group_id: DbId | None = None
    title: FilledText = Field(max_length=200)
    text: FilledText = Field(max_length=4000)

    @model_validator(mode="after")
    def _linked(self) -> GoodPracticeIn:
        if self.offer_id is None and self.working_group_id is None:
            raise ValueError("a good-practice entry is linked to an offer or a working group")
        return self


class MatchingOfferOut(BaseModel):
    """An offer that fits the step, with why it ranks where it does."""

    offer: OfferOut
    language_match: bool = Field(description="Held or supported in the person's language.")
    has_place: bool


class MatchingOut(BaseModel):
    chain_id: uuid.UUID
    step_key: str
    offer_kinds: list[str] = Field(description="The kinds of offer that serve this step.")
    language: str | None = Field(description="The language ranked first (yours, or the person's if you may read it).")
    offers: list[MatchingOfferOut]
    bookings: list[BookingOut]


class BookingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["refer", "enrol"] = Field(
        description="`refer`: the person is referred to the offer; `enrol`: a place is taken (the free places fall by one).")
    expected_version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="The chain version you read.")


class BookingOut(BaseModel):
    id: uuid.UUID
    offer_id: uuid.UUID
    offer_title: str
    chain_id: uuid.UUID
    step_key: str
    state: str
    referred_at: datetime | None
    enrolled_at: datetime | None
    organisation_id: int
    chain_version: int | None = None
    free_places: int | None = None


MatchingOut.model_rebuild()
