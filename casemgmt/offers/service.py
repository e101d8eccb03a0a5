"""Angebotsdatenbank use cases. Each public function is one transaction.

Providers maintain their own offers, the Kommunales Integrationszentrum every offer open to its
area; every change is kept as a version of the whole entry. The public directory reads offers
without a token and sees no person and no count of persons: places are a band, never a number.
A chain step is given an offer by referral or enrolment; an enrolment takes a place under a row
lock on the offer, in the same transaction as the step's event, so the free places never go
below zero however many enrol at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from casemgmt.chains import service as chains
from casemgmt.chains.agreed import LOCAL_TIMEZONE
from casemgmt.chains.engine import TERMINAL, Actor
from casemgmt.database import unit_of_work
from casemgmt.handovers.chain_hooks import pending_step_handover
from casemgmt.jurisdictions.models import Jurisdiction, Organisation
from casemgmt.offers import matching
from casemgmt.offers.models import GoodPractice, Offer, OfferBooking, OfferVersion
from casemgmt.offers.policy import OfferPolicy
from casemgmt.offers.schemas import (
    BookingIn,
    BookingOut,
    ContactOut,
    GoodPracticeIn,
    GoodPracticeOut,
    MatchingOfferOut,
    MatchingOut,
    OfferIn,
    OfferOut,
    OfferPatch,
    OfferVersionOut,
    PublicOfferOut,
)
from casemgmt.persons.models import Person
from casemgmt.privacy.audit import AuditEntry
from casemgmt.privacy.service import (
    Privacy,
    check_free_text,
    disclose,
    write_audit,
)
from casemgmt.problems import (
    AlreadyEnrolled,
    NotFound,
    OfferDoesNotFit,
    OfferFull,
    ValidationFailed,
    VersionConflict,
    WrongOrganisation,
)
from casemgmt.steering.models import WorkingGroup

KI_KIND = "kommunales_integrationszentrum"
EVENT_OFFER_REFERRED = "offer_referred"
EVENT_OFFER_ENROLLED = "offer_enrolled"
TOWN_LEVELS = ("gemeinde", "kreis", "kreisfreie_stadt")


def local_day(now: datetime) -> date:
    return now.astimezone(LOCAL_TIMEZONE).date()


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message, "type": "value_error"}])


class _Names:
    """Jurisdiction and organisation names and paths, read once per request."""

    def __init__(self, session: Session):
        rows = session.execute(select(Jurisdiction.id, Jurisdiction.name, Jurisdiction.path, Jurisdiction.level)).all()
        self.jurisdiction = {r.id: r.name for r in rows}
        self.path = {r.id: r.path for r in rows}
        self.level = {r.id: r.level for r in rows}
        self._orgs: dict[int, str] = {}
        self._session = session

    def organisation(self, organisation_id: int) -> str:
        if organisation_id not in self._orgs:
            self._orgs[organisation_id] = self._session.scalar(
                select(Organisation.name).where(Organisation.id == organisation_id)) or ""
        return self._orgs[organisation_id]

    def path_ids(self, jurisdiction_id: int) -> list[int]:
        """The jurisdiction and every one above it."""
        return [int(p) for p in self.path.get(jurisdiction_id, "").strip("/").split("/") if p]

    def around(self, jurisdiction_id: int) -> set[int]:
        """The jurisdiction, those above it and those below it: an offer naming any is open there."""
        own = self.path.get(jurisdiction_id, "")
        below = {j for j, p in self.path.items() if own and p.startswith(own)}
        return set(self.path_ids(jurisdiction_id)) | below


def _document(offer: Offer) -> dict[str, Any]:
    """The whole entry, as kept in the history."""
    return {
        "offer_kind": offer.kind, "title": offer.title, "description": offer.description,
        "provider_organisation_id": offer.provider_organisation_id, "towns": list(offer.towns),
        "address": offer.address, "languages": list(offer.languages),
        "target_residence_statuses": list(offer.target_residence_statuses), "age_min": offer.age_min,
        "age_max": offer.age_max, "accessibility": offer.accessibility, "cost": offer.cost,
        "starts_on": offer.starts_on.isoformat() if offer.starts_on else None, "evening": offer.evening,
        "part_time": offer.part_time, "schedule": offer.schedule, "capacity": offer.capacity,
        "free_places": offer.free_places, "contacts": list(offer.contacts), "links": list(offer.links),
        "valid_from": offer.valid_from.isoformat(),
        "valid_until": offer.valid_until.isoformat() if offer.valid_until else None,
    }


def _history(session: Session, offer: Offer, change: str, actor: Actor, now: datetime) -> None:
    session.add(OfferVersion(offer_id=offer.id, version=offer.version, change=change, document=_document(offer),
                             changed_by_user=actor.user_id, changed_by_organisation_id=actor.organisation_id,
                             changed_at=now))


def _practices(session: Session, offer_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[GoodPracticeOut]]:
    ids = list(offer_ids)
    out: dict[uuid.UUID, list[GoodPracticeOut]] = {}
    if not ids:
        return out
    for g in session.scalars(select(GoodPractice).where(GoodPractice.offer_id.in_(ids))
                             .order_by(GoodPractice.created_at, GoodPractice.id)):
        out.setdefault(g.offer_id, []).append(_practice_out(g))
    return out


def _practice_out(g: GoodPractice) -> GoodPracticeOut:
    return GoodPracticeOut(id=g.id, offer_id=g.offer_id, working_group_id=g.working_group_id, title=g.title,
                           text=g.text, organisation_id=g.organisation_id, created_at=g.created_at)


def _public_fields(offer: Offer, policy: OfferPolicy, names: _Names, k: int,
                   practices: list[GoodPracticeOut]) -> dict[str, Any]:
    kind = policy.kinds.get(offer.kind)
    return dict(
        id=offer.id, offer_kind=offer.kind, offer_kind_title=kind.title if kind else offer.kind, title=offer.title,
        description=offer.description, provider=names.organisation(offer.provider_organisation_id),
        towns=[names.jurisdiction.get(t, str(t)) for t in offer.towns], address=offer.address,
        languages=list(offer.languages), target_residence_statuses=list(offer.target_residence_statuses),
        age_min=offer.age_min, age_max=offer.age_max, accessibility=offer.accessibility, cost=offer.cost,
        starts_on=offer.starts_on, evening=offer.evening, part_time=offer.part_time, schedule=offer.schedule,
        places=matching.places_band(offer.free_places, k),
        contacts=[ContactOut(**c) for c in offer.contacts], links=list(offer.links), valid_from=offer.valid_from,
        valid_until=offer.valid_until, good_practices=practices)


def public_out(offer: Offer, policy: OfferPolicy, names: _Names, k: int,
               practices: list[GoodPracticeOut] | None = None) -> PublicOfferOut:
    return PublicOfferOut(**_public_fields(offer, policy, names, k, practices or []))


def offer_out(offer: Offer, policy: OfferPolicy, names: _Names, k: int,
              practices: list[GoodPracticeOut] | None = None) -> OfferOut:
    return OfferOut(**_public_fields(offer, policy, names, k, practices or []),
                    provider_organisation_id=offer.provider_organisation_id, town_ids=list(offer.towns),
                    capacity=offer.capacity, free_places=offer.free_places, version=offer.version,
                    updated_at=offer.updated_at)


# --- maintaining offers ---------------------------------------------------------------------------


def _may_manage(actor: Actor, offer_provider: int, towns: Iterable[int], names: _Names) -> bool:
    """Providers their own offers; the KI every offer open only to its area."""
    if actor.organisation_id == offer_provider:
        return True
    return actor.organisation_kind == KI_KIND and all(
        names.path.get(t, "").startswith(actor.jurisdiction_path) for t in towns)


def _check_body(session: Session, privacy: Privacy, policy: OfferPolicy, names: _Names, actor: Actor,
                body: OfferIn, now: datetime, offer_id: uuid.UUID | None, current_provider: int | None = None) -> int:
    """The provider organisation of a valid entry; 422 naming the first bad part, 403 when the
    actor may not enter offers for that provider."""
    if body.offer_kind not in policy.kinds:
        raise _invalid("offer_kind", f"one of {sorted(policy.kinds)}")
    for i, language in enumerate(body.languages):
        if language not in policy.languages:
            raise _invalid(f"languages[{i}]", f"one of {list(policy.languages)}")
    for i, town in enumerate(body.towns):
        if names.level.get(town) not in TOWN_LEVELS:
            raise _invalid(f"towns[{i}]", f"no town, Kreis or kreisfreie Stadt {town}")
    provider = body.provider_organisation_id or current_provider or actor.organisation_id
    if session.get(Organisation, provider) is None:
        raise _invalid("provider_organisation_id", f"no organisation {provider}")
    if not _may_manage(actor, provider, body.towns, names):
        raise WrongOrganisation("providers enter their own offers; the Kommunales Integrationszentrum "
                                "enters offers open to its area", owner="provider")
    for field in ("title", "description", "schedule", "accessibility", "cost"):
        check_free_text(session, privacy, getattr(body, field), field, [], actor, now, entity_type="offer",
                        entity_id=str(offer_id) if offer_id else None)
    return provider


def _apply(offer: Offer, body: OfferIn, provider: int) -> None:
    offer.kind, offer.title, offer.description = body.offer_kind, body.title, body.description
    offer.provider_organisation_id = provider
    offer.towns = sorted(set(body.towns))
    offer.address, offer.languages = body.address, list(dict.fromkeys(body.languages))
    offer.target_residence_statuses = sorted(set(body.target_residence_statuses))
    offer.age_min, offer.age_max = body.age_min, body.age_max
    offer.accessibility, offer.cost = body.accessibility, body.cost
    offer.starts_on, offer.evening, offer.part_time, offer.schedule = (body.starts_on, body.evening, body.part_time,
                                                                       body.schedule)
    offer.capacity = body.capacity
    offer.free_places = body.free_places if body.free_places is not None else body.capacity
    offer.contacts = [c.model_dump() for c in body.contacts]
    offer.links = list(body.links)
    offer.valid_from, offer.valid_until = body.valid_from, body.valid_until


def _audit(actor: Actor, offer_id: uuid.UUID, action: str, subtype: str, detail: str | None = None,
           person_id: uuid.UUID | None = None, entity_type: str = "offer") -> AuditEntry:
    return AuditEntry(agent_user=actor.user_id, agent_organisation_id=actor.organisation_id, action=action,
                      subtype=subtype, entity_type=entity_type, entity_id=str(offer_id), person_id=person_id,
                      detail=detail)


def create_offer(session: Session, privacy: Privacy, policy: OfferPolicy, k: int, actor: Actor, body: OfferIn,
                 now: datetime) -> OfferOut:
    with unit_of_work(session):
        names = _Names(session)
        offer_id = uuid.uuid4()
        provider = _check_body(session, privacy, policy, names, actor, body, now, offer_id)
        offer = Offer(id=offer_id, version=1, created_at=now, updated_at=now)
        _apply(offer, body, provider)
        session.add(offer)
        session.flush()
        _history(session, offer, "created", actor, now)
        write_audit(session, [_audit(actor, offer.id, "C", "offer.create")], now)
        out = offer_out(offer, policy, names, k)
    return out


def _managed_offer(session: Session, actor: Actor, offer_id: uuid.UUID, names: _Names, lock: bool) -> Offer:
    """An offer the actor maintains; others get the same 404 for a real and a random id."""
    stmt = select(Offer).where(Offer.id == offer_id)
    offer = session.scalar(stmt.with_for_update() if lock else stmt)
    if offer is None or not _may_manage(actor, offer.provider_organisation_id, offer.towns, names):
        raise NotFound(f"no offer {offer_id} that your organisation maintains", resource="offer", id=str(offer_id))
    return offer


def update_offer(session: Session, privacy: Privacy, policy: OfferPolicy, k: int, actor: Actor,
                 offer_id: uuid.UUID, body: OfferPatch, now: datetime) -> OfferOut:
    """Change an offer (the whole entry); a new version in its history. Free places that are
    not sent keep their count (enrolments since are not undone)."""
    with unit_of_work(session):
        names = _Names(session)
        offer = _managed_offer(session, actor, offer_id, names, lock=True)
        if body.expected_version != offer.version:
            raise VersionConflict(f"you changed version {body.expected_version}, the offer is at {offer.version}",
                                  current_version=offer.version)
        provider = _check_body(session, privacy, policy, names, actor, body, now, offer.id,
                               offer.provider_organisation_id)
        free = offer.free_places
        _apply(offer, body, provider)
        if body.free_places is None:
            offer.free_places = None if body.capacity is None else min(free if free is not None else body.capacity,
                                                                       body.capacity)
        offer.version += 1
        offer.updated_at = now
        _history(session, offer, "updated", actor, now)
        write_audit(session, [_audit(actor, offer.id, "U", "offer.update", f"version {offer.version}")], now)
        out = offer_out(offer, policy, names, k, _practices(session, [offer.id]).get(offer.id))
    return out


def list_managed(session: Session, policy: OfferPolicy, k: int, actor: Actor) -> list[OfferOut]:
    """The offers the actor's organisation maintains, with capacity and free places."""
    with unit_of_work(session):
        names = _Names(session)
        stmt = select(Offer).order_by(Offer.title, Offer.id)
        if actor.organisation_kind != KI_KIND:
            stmt = stmt.where(Offer.provider_organisation_id == actor.organisation_id)
        offers = [o for o in session.scalars(stmt) if _may_manage(actor, o.provider_organisation_id, o.towns, names)]
        practices = _practices(session, [o.id for o in offers])
        out = [offer_out(o, policy, names, k, practices.get(o.id)) for o in offers]
    return out


def offer_history(session: Session, actor: Actor, offer_id: uuid.UUID) -> list[OfferVersionOut]:
    with unit_of_work(session):
        _managed_offer(session, actor, offer_id, _Names(session), lock=False)
        rows = session.scalars(select(OfferVersion).where(OfferVersion.offer_id == offer_id)
                               .order_by(OfferVersion.version, OfferVersion.id)).all()
        out = [OfferVersionOut(version=r.version, change=r.change, document=r.document,
                               changed_by_user=r.changed_by_user,
                               changed_by_organisation_id=r.changed_by_organisation_id, changed_at=r.changed_at)
               for r in rows]
    return out


def add_good_practice(session: Session, privacy: Privacy, actor: Actor, body: GoodPracticeIn,
                      now: datetime) -> GoodPracticeOut:
    """A good-practice example linked to an offer the actor maintains and/or a working group; its
    texts are public, so they are checked for personal data."""
    with unit_of_work(session):
        names = _Names(session)
        if body.offer_id is not None:
            _managed_offer(session, actor, body.offer_id, names, lock=False)
        elif actor.organisation_kind != KI_KIND:
            raise WrongOrganisation("a good-practice entry without an offer is the KI's", owner=KI_KIND)
        if body.working_group_id is not None and session.get(WorkingGroup, body.working_group_id) is None:
            raise _invalid("working_group_id", f"no working group {body.working_group_id}")
        practice_id = uuid.uuid4()
        for field in ("title", "text"):
            check_free_text(session, privacy, getattr(body, field), field, [], actor, now,
                            entity_type="good_practice", entity_id=str(practice_id))
        practice = GoodPractice(id=practice_id, offer_id=body.offer_id, working_group_id=body.working_group_id,
                                title=body.title, text=body.text, organisation_id=actor.organisation_id,
                                created_at=now)
        session.add(practice)
        session.flush()
        write_audit(session, [_audit(actor, practice.id, "C", "good_practice.create", entity_type="good_practice")],
                    now)
        out = _practice_out(practice)
    return out


# --- the public directory -------------------------------------------------------------------------


def search_public(session: Session, policy: OfferPolicy, k: int, now: datetime, *, kind: str | None,
                  town: int | None, language: str | None, target_group: str | None,
                  starts_within_days: int | None, free_places: bool | None,
                  age: int | None = None) -> list[PublicOfferOut]:
    """Offers valid today, filtered; ordered by start, then title. A target group or an age keeps
    the offers open to it: those naming it (or an age range holding it) and those naming none.
    Reads no person data and writes no audit row (nothing personal is read)."""
    today = local_day(now)
    if kind is not None and kind not in policy.kinds:
        raise _invalid("query.kind", f"one of {sorted(policy.kinds)}")
    if language is not None and language not in policy.languages:
        raise _invalid("query.language", f"one of {list(policy.languages)}")
    if starts_within_days is not None and starts_within_days > policy.max_start_within_days:
        raise _invalid("query.starts_within_days", f"at most {policy.max_start_within_days}")
    with unit_of_work(session):
        names = _Names(session)
        if town is not None and town not in names.path:
            raise _invalid("query.town", f"no jurisdiction {town}")
        stmt = select(Offer).where(Offer.valid_from <= today, or_(Offer.valid_until.is_(None), Offer.valid_until >= today))
        if kind is not None:
            stmt = stmt.where(Offer.kind == kind)
        if starts_within_days is not None:
            stmt = stmt.where(Offer.starts_on >= today,
                              Offer.starts_on <= date.fromordinal(today.toordinal() + starts_within_days))
        if age is not None:
            stmt = stmt.where(or_(Offer.age_min.is_(None), Offer.age_min <= age),
                              or_(Offer.age_max.is_(None), Offer.age_max >= age))
        if free_places:
            stmt = stmt.where(or_(Offer.free_places.is_(None), Offer.free_places > 0))
        elif free_places is False:
            stmt = stmt.where(Offer.free_places == 0)
        around = names.around(town) if town is not None else None
        offers = [o for o in session.scalars(stmt)
                  if (around is None or around.intersection(o.towns))
                  and (language is None or language in o.languages)
                  and (target_group is None or not o.target_residence_statuses
                       or target_group in o.target_residence_statuses)]
        offers.sort(key=lambda o: (o.starts_on or date.max, o.title, str(o.id)))
        practices = _practices(session, [o.id for o in offers])
        out = [public_out(o, policy, names, k, practices.get(o.id)) for o in offers]
    return out


def public_offer(session: Session, policy: OfferPolicy, k: int, offer_id: uuid.UUID, now: datetime) -> PublicOfferOut:
    today = local_day(now)
    with unit_of_work(session):
        offer = session.get(Offer, offer_id)
        if offer is None or not (offer.valid_from <= today and (offer.valid_until is None or today <= offer.valid_until)):
            raise NotFound(f"no offer {offer_id}", resource="offer", id=str(offer_id))
        out = public_out(offer, policy, _Names(session), k, _practices(session, [offer.id]).get(offer.id))
    return out


def public_good_practices(session: Session, working_group_id: int | None) -> list[GoodPracticeOut]:
    """Every good-practice example (optionally those of one working group), newest first."""
    with unit_of_work(session):
        stmt = select(GoodPractice).order_by(GoodPractice.created_at.desc(), GoodPractice.id)
        if working_group_id is not None:
            stmt = stmt.where(GoodPractice.working_group_id == working_group_id)
        out = [_practice_out(g) for g in session.scalars(stmt)]
    return out


# --- offers on a chain step -----------------------------------------------------------------------


def _candidate(o: Offer) -> matching.Candidate:
    return matching.Candidate(
        id=o.id, title=o.title, kind=o.kind, towns=frozenset(o.towns), languages=frozenset(o.languages),
        target_residence_statuses=frozenset(o.target_residence_statuses), age_min=o.age_min, age_max=o.age_max,
        starts_on=o.starts_on, free_places=o.free_places, valid_from=o.valid_from, valid_until=o.valid_until)


def _person_facts(session: Session, privacy: Privacy, actor: Actor, person: Person, fields: tuple[str, ...],
                  now: datetime) -> dict[str, Any]:
    """The person's fields the ranking uses, each only if the actor may read its category (read
    and audited like any other read, as ``offer.matching``); a field withheld or not held is
    missing and the ranking goes without it."""
    purpose = privacy.policy.default_purpose.get(actor.organisation_kind)
    if purpose is None or purpose not in privacy.policy.purposes:
        return {}
    return disclose(session, privacy, actor, person, purpose, now, subtype="offer.matching", only=fields).fields


def _booking_out(b: OfferBooking, title: str, chain_version: int | None = None,
                 free_places: int | None = None) -> BookingOut:
    return BookingOut(id=b.id, offer_id=b.offer_id, offer_title=title, chain_id=b.chain_id, step_key=b.step_key,
                      state=b.state, referred_at=b.referred_at, enrolled_at=b.enrolled_at,
                      organisation_id=b.organisation_id, chain_version=chain_version, free_places=free_places)


def _bookings(session: Session, chain_id: uuid.UUID, step_key: str) -> list[BookingOut]:
    rows = session.execute(select(OfferBooking, Offer.title).join(Offer, Offer.id == OfferBooking.offer_id)
                           .where(OfferBooking.chain_id == chain_id, OfferBooking.step_key == step_key)
                           .order_by(OfferBooking.updated_at, OfferBooking.id)).all()
    return [_booking_out(b, title) for b, title in rows]


def matching_offers(session: Session, catalog, privacy: Privacy, policy: OfferPolicy, k: int, actor: Actor,
                    chain_id: uuid.UUID, step_key: str, language: str | None, now: datetime) -> MatchingOut:
    """The offers that fit the step for the chain's town and the person's language, best first
    (see casemgmt.offers.matching), and what the step is booked on so far."""
    if language is not None and language not in policy.languages:
        raise _invalid("query.language", f"one of {list(policy.languages)}")
    with unit_of_work(session):
        chains.require_chain_involvement(session, actor, chain_id)
        loaded = chains.load_chain(session, catalog, chain_id, lock=False)
        if step_key not in loaded.steps:
            raise NotFound(f"chain {chain_id} has no step '{step_key}'", resource="step", id=step_key)
        kinds = policy.kinds_for_step(step_key)
        person = session.get(Person, loaded.row.person_id)
        offers = {o.id: o for o in session.scalars(select(Offer).where(Offer.kind.in_(kinds)))} if kinds else {}
        # Only what the ranking can use: the residence status only when some offer names target
        # statuses, the birth date only when some offer names an age range.
        wanted = (() if language is not None else ("preferred_language",)) + (
            ("residence_status",) if any(o.target_residence_statuses for o in offers.values()) else ()) + (
            ("birth_date",) if any(o.age_min is not None or o.age_max is not None for o in offers.values()) else ())
        facts = _person_facts(session, privacy, actor, person, wanted, now) if person is not None and wanted else {}
        language = language if language is not None else facts.get("preferred_language")
        birth = facts.get("birth_date")
        today = local_day(now)
        names = _Names(session)
        need = matching.Need(kinds=frozenset(kinds), town_path=names.path_ids(loaded.row.lead_jurisdiction_id),
                             language=language, residence_status=facts.get("residence_status"),
                             age=matching.age_on(date.fromisoformat(birth), today) if birth else None)
        ranked = matching.rank((_candidate(o) for o in offers.values()), need, today)
        practices = _practices(session, [c.id for c in ranked])
        out = MatchingOut(
            chain_id=chain_id, step_key=step_key, offer_kinds=kinds, language=language,
            offers=[MatchingOfferOut(offer=offer_out(offers[c.id], policy, names, k, practices.get(c.id)),
                                     language_match=matching.speaks(c, language), has_place=matching.has_place(c))
                    for c in ranked],
            bookings=_bookings(session, chain_id, step_key))
        write_audit(session, [chains._audit(actor, chain_id, loaded.row.person_id, "R", "chain.step.offers",
                                            f"{step_key}: {len(ranked)} matching offers")], now)
    return out


def _give_step_to_provider(session: Session, loaded, step, offer: Offer, actor: Actor, now: datetime) -> list[dict]:
    """An enrolment by the case management in another provider's course gives the step to that
    provider (a ``step_assigned`` event), as ``POST .../assignment`` would: when the provider is
    of the step's owner kind, serves the chain's place and no handover of the step waits."""
    provider = session.get(Organisation, offer.provider_organisation_id)
    if (provider is None or step.assigned_organisation_id == provider.id or step.owner_kind != provider.kind
            or not loaded.jurisdiction_path.startswith(provider.jurisdiction.path)
            or pending_step_handover(session, loaded.row.id, step.key) is not None):
        return []
    before = step.assigned_organisation_id
    step.assigned_organisation_id, step.dirty = provider.id, True
    chains.write_steps(session, loaded, now)
    return [chains.chain_event_row(
        loaded.row.id, chains.EVENT_STEP_ASSIGNED, actor, now, step_key=step.key, organisation_id=provider.id,
        previous_organisation_id=before,
        reason=f"assigned to organisation {provider.id}" + (f" (was {before})" if before else "") + " by enrolment")]


def book_offer(session: Session, catalog, policy: OfferPolicy, actor: Actor, chain_id: uuid.UUID, step_key: str,
               offer_id: uuid.UUID, body: BookingIn, now: datetime) -> BookingOut:
    """Refer the step's person to an offer, or enrol them (a place taken). The chain is locked
    first (record scope before anything else), then the offer row: an enrolment into the last
    free place and a second one at the same moment give one success and one 409 offer-full."""
    with unit_of_work(session):
        chains.lock_involved_chain(session, actor, chain_id)
        loaded = chains.load_chain(session, catalog, chain_id, lock=False)
        chains._check_open(loaded, body.expected_version)
        step = loaded.steps.get(step_key)
        if step is None:
            raise NotFound(f"chain {chain_id} has no step '{step_key}'", resource="step", id=step_key)
        if actor.organisation_id not in (loaded.row.case_management_organisation_id, step.assigned_organisation_id):
            raise WrongOrganisation("the chain's case management or the organisation doing the step books an offer",
                                    owner="case_management")
        offer = session.scalar(select(Offer).where(Offer.id == offer_id).with_for_update())
        if offer is None:
            raise NotFound(f"no offer {offer_id}", resource="offer", id=str(offer_id))
        names = _Names(session)
        today = local_day(now)
        if step.state in {s.value for s in TERMINAL}:
            raise OfferDoesNotFit(f"step '{step_key}' has ended ({step.state})", reason="step_ended")
        if offer.kind not in policy.kinds_for_step(step_key):
            raise OfferDoesNotFit(f"an offer of kind '{offer.kind}' does not serve step '{step_key}'", reason="kind")
        candidate = _candidate(offer)
        if not matching.valid_on(candidate, today):
            raise OfferDoesNotFit("the offer is not valid today", reason="not_valid")
        if not matching.serves_town(candidate, names.path_ids(loaded.row.lead_jurisdiction_id)):
            raise OfferDoesNotFit("the offer is not open to the chain's town", reason="town")
        booking = session.scalar(select(OfferBooking).where(
            OfferBooking.chain_id == chain_id, OfferBooking.step_key == step_key, OfferBooking.offer_id == offer.id))
        if booking is not None and booking.state == "enrolled":
            raise AlreadyEnrolled(f"step '{step_key}' is already enrolled in this offer", booking_id=str(booking.id))
        if booking is None:
            booking = OfferBooking(id=uuid.uuid4(), offer_id=offer.id, chain_id=chain_id, step_key=step_key,
                                   person_id=loaded.row.person_id, state="referred", organisation_id=actor.organisation_id)
            session.add(booking)
        if body.action == "enrol":
            if offer.free_places is not None:
                if offer.free_places <= 0:
                    raise OfferFull(f"'{offer.title}' has no free place left", offer_id=str(offer.id), free_places=0)
                offer.free_places -= 1
            booking.state, booking.enrolled_at = "enrolled", now
            event = EVENT_OFFER_ENROLLED
        else:
            booking.referred_at = now
            event = EVENT_OFFER_REFERRED
        booking.organisation_id, booking.updated_at = actor.organisation_id, now
        session.flush()
        # The event concerns the step's assignee, not the provider: owning an offer is no
        # involvement in a case (the provider becomes involved when the step is given to it).
        events = [chains.chain_event_row(chain_id, event, actor, now, step_key=step_key,
                                         organisation_id=step.assigned_organisation_id, action=body.action,
                                         reason=f"offer {offer.id}")]
        if body.action == "enrol" and actor.organisation_id == loaded.row.case_management_organisation_id:
            events += _give_step_to_provider(session, loaded, step, offer, actor, now)
        session.execute(chains.INSERT_EVENTS, events)
        version = chains.bump_chain(session, loaded, now)
        write_audit(session, [chains._audit(actor, chain_id, loaded.row.person_id, "U", f"chain.step.offer.{body.action}",
                                            f"{step_key}: offer {offer.id}")], now)
        out = _booking_out(booking, offer.title, version, offer.free_places)
    return out
