"""The policy decision point: may this organisation do this to this category of this person's
data, for this purpose, now? Pure: every input is passed in, nothing is read or written here.

Deny by default. A permit names the legal basis that applied, which the audit trail records:
``statute:<id>`` (the organisation kind's own task), ``agreement:<uuid>`` (a data-exchange
agreement) or ``consent:<uuid>`` (the person's consent).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from casemgmt.privacy.policy import DataPolicy


@dataclass(frozen=True, slots=True)
class Requester:
    """The organisation asking, as the token established it."""

    organisation_id: int
    organisation_kind: str
    jurisdiction_path: str


@dataclass(frozen=True, slots=True)
class RecipientKind:
    """Consent to 'every organisation of this kind for this place' (e.g. the Jobcenter for Wittmar)."""

    organisation_kind: str
    jurisdiction_path: str


@dataclass(frozen=True, slots=True)
class ConsentGrant:
    """What a recorded consent allows; the record itself is immutable."""

    id: uuid.UUID
    recipient_organisation_ids: frozenset[int]
    recipient_kinds: tuple[RecipientKind, ...]
    categories: frozenset[str]
    purpose: str
    explicit_special: bool
    valid_from: datetime
    valid_until: datetime | None
    withdrawn_at: datetime | None

    def in_force(self, now: datetime) -> bool:
        return (
            self.valid_from <= now
            and (self.valid_until is None or now < self.valid_until)
            and (self.withdrawn_at is None or now < self.withdrawn_at)
        )

    def names(self, requester: Requester) -> bool:
        if requester.organisation_id in self.recipient_organisation_ids:
            return True
        return any(
            rk.organisation_kind == requester.organisation_kind
            and serves(requester.jurisdiction_path, rk.jurisdiction_path)
            for rk in self.recipient_kinds
        )


@dataclass(frozen=True, slots=True)
class AgreementGrant:
    """A data-exchange agreement (Datenaustauschvereinbarung) between named organisations."""

    id: uuid.UUID
    organisation_ids: frozenset[int]
    categories: frozenset[str]
    purpose: str
    valid_from: datetime
    valid_until: datetime | None

    def in_force(self, now: datetime) -> bool:
        return self.valid_from <= now and (self.valid_until is None or now < self.valid_until)


@dataclass(frozen=True, slots=True)
class Decision:
    permit: bool
    basis: str | None
    reason: str  # why not, for a denial; the law cited, for a permit


def serves(organisation_path: str, place_path: str) -> bool:
    """An organisation serves a place in it or below it (the Kreis ABH serves its towns); an
    organisation inside the named place (a town office of the named Kreis) is covered too."""
    return place_path.startswith(organisation_path) or organisation_path.startswith(place_path)


def decide(
    policy: DataPolicy,
    requester: Requester,
    category: str,
    purpose: str,
    action: str,
    now: datetime,
    consents: Iterable[ConsentGrant],
    agreements: Iterable[AgreementGrant],
    data_holder_ids: frozenset[int],
) -> Decision:
    """Decide one (category, purpose, action) for one person.

    ``data_holder_ids`` are the organisations that hold the person's case (its case management):
    an agreement opens data only between parties that include one of them."""
    special = policy.categories[category].special
    for statute in policy.statutes:
        if (
            statute.organisation_kind == requester.organisation_kind
            and category in statute.categories
            and purpose in statute.purposes
            and action in statute.actions
        ):
            return Decision(True, f"statute:{statute.id}", statute.law)
    for agreement in agreements:
        if (
            not special
            and agreement.purpose == purpose
            and category in agreement.categories
            and requester.organisation_id in agreement.organisation_ids
            and agreement.organisation_ids & data_holder_ids
            and agreement.in_force(now)
        ):
            return Decision(True, f"agreement:{agreement.id}", "Datenaustauschvereinbarung")
    lapsed: set[str] = set()
    for consent in consents:
        if consent.purpose != purpose or category not in consent.categories:
            continue
        if not consent.names(requester):
            continue
        if special and not consent.explicit_special:
            lapsed.add("consent does not explicitly cover this special category")
            continue
        if not consent.in_force(now):
            if consent.withdrawn_at is not None and consent.withdrawn_at <= now:
                lapsed.add("consent withdrawn")
            elif consent.valid_until is not None and now >= consent.valid_until:
                lapsed.add("consent expired")
            else:
                lapsed.add("consent not yet valid")
            continue
        return Decision(True, f"consent:{consent.id}", "Einwilligung (Art. 6 Abs. 1 lit. a / Art. 9 Abs. 2 lit. a DSGVO)")
    if lapsed:
        return Decision(False, None, "; ".join(sorted(lapsed)))
    return Decision(False, None, f"no legal basis for {category} ({action}, purpose {purpose})")
