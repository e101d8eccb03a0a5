"""API shapes of the Sprachenpass."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from casemgmt.validation import FilledText, Key, Text

Level = Literal["A1", "A2", "B1", "B2", "C1", "C2"]
Skill = Literal["listening", "reading", "writing", "speaking"]
Exam = Literal["DTZ", "telc", "Goethe", "TestDaF", "ÖSD", "DSH", "other"]


class CertificateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exam: Exam = Field(description="DTZ (Deutsch-Test für Zuwanderer), telc, Goethe, TestDaF, ÖSD, DSH, other.")
    title: Text = Field(default="", max_length=200, description="As printed, e.g. 'telc Deutsch B1'.")
    level: Level
    date: date
    evidence_reference: FilledText = Field(max_length=200, description="Where the certificate is kept (scan, file).")


class EntryIn(BaseModel):
    """A course the writing organisation ran for the person, with the levels reached and the
    certificates gained in it."""

    model_config = ConfigDict(extra="forbid")

    offer_id: uuid.UUID | None = Field(default=None, description="The offer of the directory (one of yours).")
    course_title: Text = Field(default="", max_length=200, description="Default: the offer's title.")
    language: FilledText = Field(default="Deutsch", max_length=50)
    from_date: date
    to_date: date | None = None
    hours: int | None = Field(default=None, ge=0, le=5000, description="Teaching units attended.")
    levels: dict[Skill, Level] = Field(default_factory=dict, description="Level reached per skill.")
    certificates: list[CertificateIn] = Field(default_factory=list, max_length=10)
    purpose: Key | None = Field(default=None, description="Defaults to your organisation kind's.")

    @model_validator(mode="after")
    def _consistent(self) -> EntryIn:
        if self.to_date is not None and self.to_date < self.from_date:
            raise ValueError("to_date is before from_date")
        if not self.offer_id and not self.course_title.strip():
            raise ValueError("name the course: offer_id or course_title")
        return self


class CertificateOut(BaseModel):
    exam: str
    title: str
    level: str
    date: date
    evidence_reference: str


class EntryOut(BaseModel):
    id: uuid.UUID
    organisation_id: int
    provider: str
    offer_id: uuid.UUID | None
    course_title: str
    language: str
    from_date: date
    to_date: date | None
    hours: int | None
    levels: dict[str, str]
    certificates: list[CertificateOut]
    recorded_at: datetime


class LanguagePassOut(BaseModel):
    person_id: uuid.UUID
    german_level: str | None = Field(description="Derived from the entries (the highest level shown in German).")
    entries: list[EntryOut]
    legal_basis: str | None = Field(description="The basis on which you read the category `language`.")
    redacted: str | None = Field(default=None, description="Why the entries are withheld, if they are.")
