"""Handover policy (``policies/handovers.yaml``): working-day deadlines per kind and pair of
organisation kinds, the holiday calendar, and who may receive a relocation."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
from pydantic import BaseModel, ConfigDict, Field

from casemgmt.handovers.calendar import WorkingDayCalendar
from casemgmt.handovers.lifecycle import HandoverKind
from casemgmt.policy.source import PolicyError, line_of, load_yaml, validate

MAX_WORKING_DAYS = 260


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _CalendarDoc(_Strict):
    country: str = Field(min_length=2, max_length=3)
    # null: national holidays only. An empty string is refused: it would silently drop the Land's.
    subdivision: str | None = Field(min_length=1)
    timezone: str = Field(default="Europe/Berlin", min_length=1)


class _KindDoc(_Strict):
    title: str = Field(min_length=1)
    working_days: int = Field(ge=1, le=MAX_WORKING_DAYS)


class _PairDoc(_Strict):
    kind: str
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    working_days: int = Field(ge=1, le=MAX_WORKING_DAYS)


class _HandoverDoc(_Strict):
    calendar: _CalendarDoc
    kinds: dict[str, _KindDoc]
    pairs: list[_PairDoc] = []
    case_management_kinds: list[str] = Field(min_length=1)


@dataclass(frozen=True)
class HandoverPolicy:
    """Deadlines and the calendar they are counted in."""

    calendar: WorkingDayCalendar
    kind_titles: dict[str, str]
    kind_days: dict[str, int]
    # (kind, sender kind or None, receiver kind or None) -> working days
    pair_days: dict[tuple[str, str | None, str | None], int]
    case_management_kinds: frozenset[str]

    def working_days(self, kind: str, sender_kind: str, receiver_kind: str) -> int:
        for key in ((kind, sender_kind, receiver_kind), (kind, sender_kind, None),
                    (kind, None, receiver_kind)):
            if key in self.pair_days:
                return self.pair_days[key]
        return self.kind_days[kind]


def _calendar(path: Path, raw, doc: _CalendarDoc) -> WorkingDayCalendar:
    """Build the calendar; an unknown time zone, country or Land names its own key."""
    try:
        ZoneInfo(doc.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise PolicyError(path, line_of(raw, ["calendar", "timezone"]), "calendar.timezone",
                          f"unknown time zone '{doc.timezone}'") from None
    try:
        holidays.country_holidays(doc.country, years=[2000])
    except NotImplementedError:
        raise PolicyError(path, line_of(raw, ["calendar", "country"]), "calendar.country",
                          f"no holiday calendar for country '{doc.country}'") from None
    try:
        return WorkingDayCalendar(doc.country, doc.subdivision, doc.timezone)
    except NotImplementedError as exc:
        raise PolicyError(path, line_of(raw, ["calendar", "subdivision"]), "calendar.subdivision",
                          f"unknown subdivision: {exc}") from None


def load_handover_policy(path: Path, organisation_kinds: Collection[str]) -> HandoverPolicy:
    raw = load_yaml(path)
    doc: _HandoverDoc = validate(_HandoverDoc, raw, path)
    known_kinds = {k.value for k in HandoverKind}
    for name in doc.kinds:
        if name not in known_kinds:
            raise PolicyError(path, line_of(raw, ["kinds", name]), f"kinds.{name}",
                              f"unknown handover kind; the code knows {sorted(known_kinds)}")
    missing = known_kinds - doc.kinds.keys()
    if missing:
        raise PolicyError(path, line_of(raw, ["kinds"]), "kinds", f"missing handover kinds: {sorted(missing)}")
    pairs: dict[tuple[str, str | None, str | None], int] = {}
    for i, pair in enumerate(doc.pairs):
        if pair.kind not in known_kinds:
            raise PolicyError(path, line_of(raw, ["pairs", i, "kind"]), f"pairs[{i}].kind",
                              f"unknown handover kind '{pair.kind}'")
        for side, value in (("from", pair.from_), ("to", pair.to)):
            if value is not None and value not in organisation_kinds:
                raise PolicyError(path, line_of(raw, ["pairs", i, side]), f"pairs[{i}].{side}",
                                  f"unknown organisation kind '{value}'")
        if pair.from_ is None and pair.to is None:
            raise PolicyError(path, line_of(raw, ["pairs", i]), f"pairs[{i}]",
                              "name at least one of 'from' and 'to' (the kind's days apply otherwise)")
        key = (pair.kind, pair.from_, pair.to)
        if key in pairs:
            raise PolicyError(path, line_of(raw, ["pairs", i]), f"pairs[{i}]", "duplicate pair")
        pairs[key] = pair.working_days
    for i, kind in enumerate(doc.case_management_kinds):
        if kind not in organisation_kinds:
            raise PolicyError(path, line_of(raw, ["case_management_kinds", i]),
                              f"case_management_kinds[{i}]", f"unknown organisation kind '{kind}'")
    calendar = _calendar(path, raw, doc.calendar)
    return HandoverPolicy(
        calendar=calendar,
        kind_titles={k: v.title for k, v in doc.kinds.items()},
        kind_days={k: v.working_days for k, v in doc.kinds.items()},
        pair_days=pairs, case_management_kinds=frozenset(doc.case_management_kinds),
    )
