"""Input types shared by every API schema, so bad input is a 422 and never reaches the database.

PostgreSQL text cannot hold NUL characters and its integer columns end at 2**31-1; both would
otherwise surface as database errors (500) instead of a clear validation problem."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field


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
