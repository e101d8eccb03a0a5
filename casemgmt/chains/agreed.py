"""Steps agreed in a Fallkonferenz (ad-hoc steps): added to one person's chain, not to its template.

The template stays the spec. A conference agreement may add a step to the chain of a case on its
agenda (DOMAIN.md section 8, case phase); its definition is kept on the chain
(``chains.agreed_steps``) and its state in an ordinary ``chain_steps`` row marked with the
agreement. When the chain is loaded, the definitions are appended to the template version
(:meth:`ChainTemplate.with_steps`), so the engine moves the step like any other: it becomes ready
when its prerequisite has ended, is assigned, started, blocked, handed over and completed, and its
dependants do not exist (nothing in the template waits for it).

This module is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from casemgmt.chains.spec import AGREED_STEP_PREFIX, ChainTemplate, StepSpec


@dataclass(frozen=True, slots=True)
class AgreedStep:
    """The definition of one step agreed in a conference, as stored on the chain.

    ``owner`` is the owner organisation's kind (or ``case_management`` when the chain's own case
    management took it on); ``owner_organisation_id`` the organisation the conference named, which
    gets the step when it becomes ready if it still serves the chain's place.
    """

    key: str
    title: str
    owner: str
    owner_organisation_id: int
    requires: tuple[str, ...]
    due_at: datetime
    agreement_id: str
    conference_id: str
    conference_title: str
    conference_scheduled_at: datetime
    added_at: datetime

    def spec(self) -> StepSpec:
        return StepSpec(key=self.key, title=self.title, owner=self.owner, requires=self.requires,
                        optional=False, due=None,
                        description=f"Vereinbart in der Fallkonferenz „{self.conference_title}“")

    def to_document(self) -> dict[str, Any]:
        return {
            "key": self.key, "title": self.title, "owner": self.owner,
            "owner_organisation_id": self.owner_organisation_id, "requires": list(self.requires),
            "due_at": self.due_at.isoformat(), "agreement_id": self.agreement_id,
            "conference_id": self.conference_id, "conference_title": self.conference_title,
            "conference_scheduled_at": self.conference_scheduled_at.isoformat(),
            "added_at": self.added_at.isoformat(),
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> AgreedStep:
        return cls(
            key=doc["key"], title=doc["title"], owner=doc["owner"],
            owner_organisation_id=int(doc["owner_organisation_id"]), requires=tuple(doc["requires"]),
            due_at=datetime.fromisoformat(doc["due_at"]), agreement_id=doc["agreement_id"],
            conference_id=doc["conference_id"], conference_title=doc["conference_title"],
            conference_scheduled_at=datetime.fromisoformat(doc["conference_scheduled_at"]),
            added_at=datetime.fromisoformat(doc["added_at"]),
        )


def agreed_steps(documents: Iterable[Mapping[str, Any]] | None) -> dict[str, AgreedStep]:
    """The chain's agreed steps by key, in the order they were added."""
    return {d["key"]: AgreedStep.from_document(d) for d in documents or ()}


def with_agreed_steps(template: ChainTemplate, agreed: Mapping[str, AgreedStep]) -> ChainTemplate:
    """The template version the chain runs on, with the chain's agreed steps appended."""
    return template.with_steps([a.spec() for a in agreed.values()])


# Days people name (an agreement's due date, the day of an interview, --where dates) are days
# in German local time.
LOCAL_TIMEZONE = ZoneInfo("Europe/Berlin")


def end_of_day(day: date) -> datetime:
    """An agreement "due on 24 March" is due until the end of that day, local time."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=LOCAL_TIMEZONE) - timedelta(seconds=1)


def next_agreed_key(agreed: Mapping[str, AgreedStep]) -> str:
    """``agreed_1``, ``agreed_2``, ... per chain: a template key can never take it (reserved
    prefix), and numbering per chain keeps the keys the same shape in every chain."""
    return f"{AGREED_STEP_PREFIX}{len(agreed) + 1}"
