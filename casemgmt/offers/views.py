"""Angebotsdatenbank endpoints. Thin: parse, call the service, return."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session

from casemgmt.auth.dependencies import get_session, require
from casemgmt.chains.engine import Actor
from casemgmt.clock import request_now
from casemgmt.offers import service
from casemgmt.offers.matching import MAX_AGE
from casemgmt.offers.schemas import (
    BookingIn,
    BookingOut,
    GoodPracticeIn,
    GoodPracticeOut,
    MatchingOut,
    OfferIn,
    OfferOut,
    OfferPatch,
    OfferVersionOut,
    PublicOfferOut,
)
from casemgmt.validation import DbId, Key

public_router = APIRouter(prefix="/public", tags=["public"])
router = APIRouter(tags=["offers"])

ResidenceStatus = Literal["asylum_pending", "protection_granted", "tolerated", "eu_free_movement",
                          "third_country_permit", "spaetaussiedler", "naturalised"]


def _context(request: Request):
    state = request.app.state
    return state.policies.offers, state.policies.steering.k


@public_router.get("/offers", response_model=list[PublicOfferOut])
def search_offers(
    request: Request,
    kind: Key | None = Query(default=None, description="An offer kind of `policies/offers.yaml`."),
    town: DbId | None = Query(default=None, description="A jurisdiction id: offers open to it (a town, or a Kreis)."),
    language: str | None = Query(default=None, max_length=50, description="Held or supported in this language."),
    target_group: ResidenceStatus | None = Query(default=None, description="Open to this residence status."),
    age: int | None = Query(default=None, ge=0, le=MAX_AGE,
                            description="Open to a person of this age in years: offers with an age range that "
                                        "includes it, and offers without one."),
    starts_within_days: int | None = Query(default=None, ge=0, le=3660, description="Starts within N days from today."),
    free_places: bool | None = Query(default=None, description="true: only offers with a free place; false: only full ones."),
    session: Session = Depends(get_session),
    now: datetime = Depends(request_now),
):
    """The public directory of integration offers (no token). Never a person, never a count of
    persons: places are shown as `open`, `available`, `few` or `full`."""
    policy, k = _context(request)
    return service.search_public(session, policy, k, now, kind=kind, town=town, language=language,
                                 target_group=target_group, age=age, starts_within_days=starts_within_days,
                                 free_places=free_places)


@public_router.get("/offers/{offer_id}", response_model=PublicOfferOut)
def public_offer(request: Request, offer_id: uuid.UUID, session: Session = Depends(get_session),
                 now: datetime = Depends(request_now)):
    """One offer of the public directory (valid today)."""
    policy, k = _context(request)
    return service.public_offer(session, policy, k, offer_id, now)


@public_router.get("/good-practices", response_model=list[GoodPracticeOut])
def good_practices(working_group_id: DbId | None = Query(default=None, description="Only those of this working group."),
                   session: Session = Depends(get_session)):
    """Good-practice examples of the directory (no token), linked to offers and to working
    groups of the Lenkungsgruppe; their texts were checked for personal data."""
    return service.public_good_practices(session, working_group_id)


@router.post("/offers", response_model=OfferOut, status_code=201)
def create_offer(request: Request, body: OfferIn, actor: Actor = Depends(require("offers.manage")),
                 session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """Enter an offer: providers their own, the Kommunales Integrationszentrum any offer open to its area."""
    policy, k = _context(request)
    return service.create_offer(session, request.app.state.privacy, policy, k, actor, body, now)


@router.get("/offers", response_model=list[OfferOut])
def list_offers(request: Request, actor: Actor = Depends(require("offers.manage")),
                session: Session = Depends(get_session)):
    """The offers your organisation maintains, with capacity and free places."""
    policy, k = _context(request)
    return service.list_managed(session, policy, k, actor)


@router.put("/offers/{offer_id}", response_model=OfferOut)
def update_offer(request: Request, offer_id: uuid.UUID, body: OfferPatch,
                 actor: Actor = Depends(require("offers.manage")), session: Session = Depends(get_session),
                 now: datetime = Depends(request_now)):
    """Change an offer you maintain (the whole entry, with the version you read); the history keeps each version."""
    policy, k = _context(request)
    return service.update_offer(session, request.app.state.privacy, policy, k, actor, offer_id, body, now)


@router.get("/offers/{offer_id}/history", response_model=list[OfferVersionOut])
def offer_history(offer_id: uuid.UUID, actor: Actor = Depends(require("offers.manage")),
                  session: Session = Depends(get_session)):
    """Every version of an offer you maintain, by whom and when."""
    return service.offer_history(session, actor, offer_id)


@router.post("/good-practices", response_model=GoodPracticeOut, status_code=201)
def add_good_practice(request: Request, body: GoodPracticeIn, actor: Actor = Depends(require("offers.manage")),
                      session: Session = Depends(get_session), now: datetime = Depends(request_now)):
    """A good-practice example, linked to an offer you maintain and/or a working group of the Lenkungsgruppe."""
    return service.add_good_practice(session, request.app.state.privacy, actor, body, now)


@router.get("/chains/{chain_id}/steps/{step_key}/offers", response_model=MatchingOut)
def matching_offers(request: Request, chain_id: uuid.UUID, step_key: Key,
                    language: str | None = Query(default=None, max_length=50,
                                                 description="Rank offers in this language first (default: the "
                                                             "person's preferred language, if you may read it)."),
                    actor: Actor = Depends(require("chains.read")), session: Session = Depends(get_session),
                    now: datetime = Depends(request_now)):
    """Offers that serve the step, open to the chain's town, ranked: the person's language first,
    then those with a place, then by start date and free places."""
    policy, k = _context(request)
    return service.matching_offers(session, request.app.state.catalog, request.app.state.privacy, policy, k, actor,
                                   chain_id, step_key, language, now)


@router.post("/chains/{chain_id}/steps/{step_key}/offers/{offer_id}", response_model=BookingOut)
def book_offer(request: Request, chain_id: uuid.UUID, step_key: Key, offer_id: uuid.UUID, body: BookingIn,
               actor: Actor = Depends(require("steps.act")), session: Session = Depends(get_session),
               now: datetime = Depends(request_now)):
    """Refer the step's person to an offer, or enrol them (one place fewer, in the same
    transaction as the step's event; 409 `offer-full` when none is left)."""
    policy, _ = _context(request)
    return service.book_offer(session, request.app.state.catalog, policy, actor, chain_id, step_key, offer_id,
                              body, now)
