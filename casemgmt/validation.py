"""Input types shared by every API schema, so bad input is a 422 and never reaches the database.

PostgreSQL text cannot hold NUL characters and its integer columns end at 2**31-1; both would
otherwise surface as database errors (500) instead of a clear validation problem."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
"""A string that the database can store."""

def _not_blank(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


FilledText = Annotated[str, AfterValidator(_no_nul), AfterValidator(_not_blank)]
"""A storable string with something in it besides spaces (stored without surrounding space)."""

Key = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
"""A policy key (template, organisation kind, ...): snake_case."""

DbId = Annotated[int, Field(ge=1, le=2**31 - 1)]
"""An integer primary key."""


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_datetime_text(value: object) -> object:
    # Pydantic's lax mode reads a number (or "0.5") as seconds since 1970; the contract says
    # RFC 3339 date-time, so only that text is a date-time here.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("must be an RFC 3339 date-time with a time zone, e.g. 2026-03-02T09:00:00Z")
    return value


def _iso_date_text(value: object) -> object:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_datetime_text)]
"""An aware date-time given as RFC 3339 text (never a number of seconds)."""

IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]
"""A calendar date given as YYYY-MM-DD (never a number)."""
