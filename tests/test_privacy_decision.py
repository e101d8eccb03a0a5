"""The policy decision point (casemgmt.privacy.decision.decide): pure, no database.

Unit tests of each kind of legal basis (statute, data-exchange agreement, consent) and their
time boundaries, then a property test that re-checks every decision against an independent
reading of the policy files and the grants."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemgmt.policy.loader import load_policies
from casemgmt.privacy.decision import (
    AgreementGrant,
    ConsentGrant,
    Decision,
    RecipientKind,
    Requester,
    decide,
)

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "policies"

# Jurisdiction paths as the database writes them (ids from the Land down, trailing slash).
# "/1/20/" (the kreisfreie Stadt) deliberately shares the text prefix "/1/2" with the Kreis.
NRW = "/1/"
KREIS = "/1/2/"
WITTMAR = "/1/2/3/"
HATTENBERG = "/1/2/4/"
HAGENAU = "/1/20/"
PATHS = (NRW, KREIS, WITTMAR, HATTENBERG, HAGENAU)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
US = timedelta(microseconds=1)

# Requesters (organisation ids are arbitrary but distinct)
KI = Requester(10, "kommunales_integrationszentrum", KREIS)
JOBCENTER_KREIS = Requester(11, "jobcenter", KREIS)
JOBCENTER_HAGENAU = Requester(12, "jobcenter", HAGENAU)
SOZIALAMT_WITTMAR = Requester(13, "sozialamt", WITTMAR)
SOZIALAMT_HAGENAU = Requester(14, "sozialamt", HAGENAU)
ABH_KREIS = Requester(15, "auslaenderbehoerde", KREIS)
GESUNDHEITSAMT = Requester(16, "gesundheitsamt", KREIS)
MSO = Requester(17, "migrantenorganisation", KREIS)
BAMF = Requester(18, "bamf", NRW)

POLICIES = load_policies(POLICY_DIR)
DATA = POLICIES.data


def consent(
    *,
    orgs: set[int] = frozenset(),
    kinds: tuple[RecipientKind, ...] = (),
    categories: set[str] = frozenset({"benefits"}),
    purpose: str = "case_management",
    explicit_special: bool = False,
    valid_from: datetime = T0,
    valid_until: datetime | None = None,
    withdrawn_at: datetime | None = None,
) -> ConsentGrant:
    return ConsentGrant(uuid.uuid4(), frozenset(orgs), tuple(kinds), frozenset(categories), purpose,
                        explicit_special, valid_from, valid_until, withdrawn_at)


def agreement(
    *,
    orgs: set[int],
    categories: set[str] = frozenset({"benefits"}),
    purpose: str = "case_management",
    valid_from: datetime = T0,
    valid_until: datetime | None = None,
) -> AgreementGrant:
    return AgreementGrant(uuid.uuid4(), frozenset(orgs), frozenset(categories), purpose, valid_from,
                          valid_until)


def run(requester: Requester, category: str, purpose: str, action: str = "read", now: datetime = T0,
        consents=(), agreements=(), holders: set[int] = frozenset({KI.organisation_id})) -> Decision:
    return decide(DATA, requester, category, purpose, action, now, list(consents), list(agreements),
                  frozenset(holders))


def assert_denied(d: Decision) -> None:
    assert not d.permit
    assert d.basis is None


# --- statutes ------------------------------------------------------------------------------------

STATUTE_CASES = [
    (st_["id"], st_["organisation_kind"], cat, purpose, action, st_["law"])
    for st_ in yaml.safe_load((POLICY_DIR / "legal_bases.yaml").read_text(encoding="utf-8"))["statutory"]
    for cat in st_["categories"]
    for purpose in st_["purposes"]
    for action in st_["actions"]
]


@pytest.mark.parametrize(("statute_id", "kind", "category", "purpose", "action", "law"), STATUTE_CASES,
                         ids=[f"{c[0]}-{c[2]}-{c[4]}" for c in STATUTE_CASES])
def test_statute_permits_its_own_task(statute_id, kind, category, purpose, action, law):
    requester = Requester(99, kind, WITTMAR)
    d = run(requester, category, purpose, action, holders=set())
    assert d == Decision(True, f"statute:{statute_id}", law)


def test_statute_examples():
    d = run(ABH_KREIS, "residence", "residence_procedure", "write")
    assert (d.permit, d.basis) == (True, "statute:abh_residence")
    assert "AufenthG" in d.reason
    d = run(JOBCENTER_KREIS, "benefits", "basic_income")
    assert (d.permit, d.basis) == (True, "statute:jobcenter_sgb2")
    # the Sozialamt has two statutes; each opens its own purpose
    assert run(SOZIALAMT_WITTMAR, "residence", "asylum_benefits").basis == "statute:sozialamt_asylblg"
    assert run(SOZIALAMT_WITTMAR, "benefits", "social_assistance").basis == "statute:sozialamt_sgb12"


def test_statute_limited_to_reading_does_not_permit_writing():
    """The shipped statutes all allow read and write; a read-only one must not open writing."""
    from dataclasses import replace

    from casemgmt.privacy.policy import Statute

    read_only = Statute("bamf_education_read", "bamf", frozenset({"integration_course"}),
                        frozenset({"education"}), frozenset({"read"}), "test law")
    policy = replace(DATA, statutes=(*DATA.statutes, read_only))
    d = decide(policy, BAMF, "education", "integration_course", "read", T0, [], [], frozenset())
    assert d == Decision(True, "statute:bamf_education_read", "test law")
    d = decide(policy, BAMF, "education", "integration_course", "write", T0, [], [], frozenset())
    assert_denied(d)
    assert "write" in d.reason and "education" in d.reason


@pytest.mark.parametrize(("requester", "category", "purpose"), [
    (ABH_KREIS, "residence", "basic_income"),  # the ABH's statute is for the residence procedure
    (ABH_KREIS, "residence", "case_management"),
    (ABH_KREIS, "health", "residence_procedure"),  # a category the statute does not list
    (JOBCENTER_KREIS, "benefits", "employment_promotion"),
    (JOBCENTER_KREIS, "health", "basic_income"),
    (SOZIALAMT_WITTMAR, "residence", "social_assistance"),  # SGB XII statute has no residence
    (KI, "benefits", "case_management"),  # intake covers identity and contact only
    (GESUNDHEITSAMT, "health", "case_management"),
    (MSO, "identity", "case_management"),  # no statute at all for this kind
])
def test_statute_does_not_reach_beyond_its_task(requester, category, purpose):
    assert_denied(run(requester, category, purpose))


# --- agreements ----------------------------------------------------------------------------------


def test_agreement_permits_a_party_when_a_data_holder_is_a_party():
    a = agreement(orgs={KI.organisation_id, JOBCENTER_KREIS.organisation_id},
                  categories={"education", "language"}, purpose="case_management")
    for requester in (KI, JOBCENTER_KREIS):
        d = run(requester, "education", "case_management", consents=[], agreements=[a],
                holders={KI.organisation_id})
        assert d == Decision(True, f"agreement:{a.id}", "Datenaustauschvereinbarung")
    # the agreement is read for its own purpose and categories only
    assert_denied(run(JOBCENTER_KREIS, "education", "schooling", agreements=[a]))
    assert_denied(run(JOBCENTER_KREIS, "housing", "case_management", agreements=[a]))


def test_agreement_does_not_open_data_to_a_non_party():
    a = agreement(orgs={KI.organisation_id, JOBCENTER_KREIS.organisation_id}, categories={"education"})
    for requester in (JOBCENTER_HAGENAU, SOZIALAMT_WITTMAR, MSO):
        assert_denied(run(requester, "education", "case_management", agreements=[a],
                          holders={KI.organisation_id}))


def test_agreement_needs_a_data_holder_among_its_parties():
    a = agreement(orgs={JOBCENTER_KREIS.organisation_id, SOZIALAMT_WITTMAR.organisation_id},
                  categories={"education"})
    # both parties ask, but the person's case is held by the KI, which is not a party
    for requester in (JOBCENTER_KREIS, SOZIALAMT_WITTMAR):
        assert_denied(run(requester, "education", "case_management", agreements=[a],
                          holders={KI.organisation_id}))
        assert_denied(run(requester, "education", "case_management", agreements=[a], holders=set()))
    # once a party holds the case, it works
    d = run(JOBCENTER_KREIS, "education", "case_management", agreements=[a],
            holders={KI.organisation_id, SOZIALAMT_WITTMAR.organisation_id})
    assert d.basis == f"agreement:{a.id}"


def test_agreement_never_opens_a_special_category():
    a = agreement(orgs={KI.organisation_id, JOBCENTER_KREIS.organisation_id},
                  categories={"health", "education"}, purpose="case_management")
    d = run(JOBCENTER_KREIS, "health", "case_management", agreements=[a])
    assert_denied(d)
    assert "health" in d.reason
    assert run(JOBCENTER_KREIS, "education", "case_management", agreements=[a]).permit


def test_agreement_only_while_in_force():
    start, end = T0, T0 + timedelta(days=365)
    a = agreement(orgs={KI.organisation_id, JOBCENTER_KREIS.organisation_id},
                  categories={"education"}, valid_from=start, valid_until=end)

    def at(now):
        return run(JOBCENTER_KREIS, "education", "case_management", now=now, agreements=[a])

    assert_denied(at(start - US))
    assert at(start).permit
    assert at(end - US).permit
    assert_denied(at(end))
    assert_denied(at(end + timedelta(days=1)))
    open_ended = agreement(orgs={KI.organisation_id, JOBCENTER_KREIS.organisation_id},
                           categories={"education"}, valid_from=start)
    assert run(JOBCENTER_KREIS, "education", "case_management", now=start + timedelta(days=9000),
               agreements=[open_ended]).permit


# --- consents ------------------------------------------------------------------------------------


def test_consent_naming_an_organisation_permits_that_organisation_only():
    c = consent(orgs={JOBCENTER_KREIS.organisation_id}, categories={"housing", "family"},
                purpose="case_management")
    d = run(JOBCENTER_KREIS, "housing", "case_management", consents=[c])
    assert (d.permit, d.basis) == (True, f"consent:{c.id}")
    assert "Einwilligung" in d.reason
    assert run(JOBCENTER_KREIS, "family", "case_management", consents=[c]).permit
    # another organisation of the same kind is not named
    assert_denied(run(JOBCENTER_HAGENAU, "housing", "case_management", consents=[c]))
    # only for the consent's purpose and categories
    assert_denied(run(JOBCENTER_KREIS, "housing", "schooling", consents=[c]))
    assert_denied(run(JOBCENTER_KREIS, "education", "case_management", consents=[c]))


def test_consent_for_a_kind_covers_the_kreis_organisation_serving_a_named_town():
    # "the Jobcenter for Wittmar": the Kreis Jobcenter serves Wittmar
    c = consent(kinds=(RecipientKind("jobcenter", WITTMAR),), categories={"housing"})
    d = run(JOBCENTER_KREIS, "housing", "case_management", consents=[c])
    assert (d.permit, d.basis) == (True, f"consent:{c.id}")
    # not the Jobcenter of another jurisdiction, not another kind in the Kreis
    assert_denied(run(JOBCENTER_HAGENAU, "housing", "case_management", consents=[c]))
    assert_denied(run(Requester(50, "sozialamt", KREIS), "housing", "case_management", consents=[c]))


def test_consent_for_a_kind_covers_a_town_office_inside_a_named_kreis():
    # "the Sozialamt in the Kreis Ennetal": the Wittmar Sozialamt is inside the Kreis
    c = consent(kinds=(RecipientKind("sozialamt", KREIS),), categories={"education"})
    d = run(SOZIALAMT_WITTMAR, "education", "case_management", consents=[c])
    assert (d.permit, d.basis) == (True, f"consent:{c.id}")
    assert run(Requester(51, "sozialamt", HATTENBERG), "education", "case_management", consents=[c]).permit


def test_consent_for_a_kind_does_not_reach_another_jurisdiction():
    c = consent(kinds=(RecipientKind("sozialamt", KREIS),), categories={"education"})
    # Hagenau ("/1/20/") is not in the Kreis ("/1/2/"), although the path text starts alike
    assert_denied(run(SOZIALAMT_HAGENAU, "education", "case_management", consents=[c]))
    c2 = consent(kinds=(RecipientKind("sozialamt", WITTMAR),), categories={"education"})
    assert_denied(run(Requester(51, "sozialamt", HATTENBERG), "education", "case_management", consents=[c2]))
    assert_denied(run(SOZIALAMT_HAGENAU, "education", "case_management", consents=[c2]))


def test_special_category_needs_explicit_consent():
    plain = consent(orgs={KI.organisation_id}, categories={"health", "housing"}, explicit_special=False)
    d = run(KI, "health", "case_management", consents=[plain])
    assert_denied(d)
    assert d.reason == "consent does not explicitly cover this special category"
    # the same consent still opens the ordinary category it names
    assert run(KI, "housing", "case_management", consents=[plain]).basis == f"consent:{plain.id}"
    explicit = consent(orgs={KI.organisation_id}, categories={"health"}, explicit_special=True)
    d = run(KI, "health", "case_management", consents=[plain, explicit])
    assert (d.permit, d.basis) == (True, f"consent:{explicit.id}")


def test_consent_valid_from_and_valid_until_boundaries():
    start, end = T0 + timedelta(days=1), T0 + timedelta(days=30)
    c = consent(orgs={KI.organisation_id}, valid_from=start, valid_until=end)

    def at(now):
        return run(KI, "benefits", "case_management", now=now, consents=[c])

    d = at(start - US)
    assert_denied(d)
    assert d.reason == "consent not yet valid"
    assert at(start).basis == f"consent:{c.id}"
    assert at(end - US).basis == f"consent:{c.id}"
    d = at(end)
    assert_denied(d)
    assert d.reason == "consent expired"
    assert at(end + timedelta(days=100)).reason == "consent expired"


def test_withdrawn_consent_permits_before_and_denies_at_and_after_withdrawal():
    t = T0 + timedelta(days=10)
    c = consent(orgs={KI.organisation_id}, withdrawn_at=t)

    def at(now):
        return run(KI, "benefits", "case_management", now=now, consents=[c])

    assert at(T0).basis == f"consent:{c.id}"
    assert at(t - US).basis == f"consent:{c.id}"
    for now in (t, t + US, t + timedelta(days=400)):
        d = at(now)
        assert_denied(d)
        assert d.reason == "consent withdrawn"


def test_withdrawal_is_named_even_next_to_an_expired_consent():
    t = T0 + timedelta(days=10)
    expired = consent(orgs={KI.organisation_id}, valid_until=T0 + timedelta(days=5))
    withdrawn = consent(orgs={KI.organisation_id}, withdrawn_at=t)
    for order in ([expired, withdrawn], [withdrawn, expired]):
        d = run(KI, "benefits", "case_management", now=t, consents=order)
        assert_denied(d)
        assert "consent withdrawn" in d.reason


def test_another_valid_consent_still_applies_after_a_withdrawal():
    t = T0 + timedelta(days=10)
    withdrawn = consent(orgs={KI.organisation_id}, withdrawn_at=t)
    other = consent(kinds=(RecipientKind("kommunales_integrationszentrum", KREIS),))
    d = run(KI, "benefits", "case_management", now=t, consents=[withdrawn, other])
    assert d.basis == f"consent:{other.id}"


def test_deny_by_default_names_the_category():
    d = run(MSO, "benefits", "case_management")
    assert_denied(d)
    assert "benefits" in d.reason
    assert "no legal basis" in d.reason
    d = run(KI, "health", "health_protection", action="write")
    assert_denied(d)
    assert "health" in d.reason


def test_statute_wins_over_consent_and_agreement():
    c = consent(orgs={ABH_KREIS.organisation_id}, categories={"residence"}, purpose="residence_procedure")
    a = agreement(orgs={KI.organisation_id, ABH_KREIS.organisation_id}, categories={"residence"},
                  purpose="residence_procedure")
    d = run(ABH_KREIS, "residence", "residence_procedure", consents=[c], agreements=[a])
    assert d.basis == "statute:abh_residence"


# --- property test -------------------------------------------------------------------------------

RAW_BASES = yaml.safe_load((POLICY_DIR / "legal_bases.yaml").read_text(encoding="utf-8"))
RAW_DATA = yaml.safe_load((POLICY_DIR / "data.yaml").read_text(encoding="utf-8"))
RAW_KINDS = yaml.safe_load((POLICY_DIR / "organisation_kinds.yaml").read_text(encoding="utf-8"))
KINDS = sorted(POLICIES.organisation_kinds)
CATEGORIES = sorted(DATA.categories)
PURPOSES = sorted(DATA.purposes)
SPECIAL = {k for k, v in RAW_DATA["categories"].items() if v.get("special")}
STATUTES = {s["id"]: s for s in RAW_BASES["statutory"]}
ORG_IDS = list(range(1, 6))
BASE = T0
DAY = timedelta(days=1)


def test_the_catalogue_read_by_hand_agrees_with_the_loader():
    assert KINDS == sorted(k["key"] for k in RAW_KINDS["kinds"])
    assert SPECIAL == {"health"}
    assert set(CATEGORIES) == set(RAW_DATA["categories"])


def _serves_oracle(org_path: str, place_path: str) -> bool:
    """Same or nested jurisdictions, compared segment by segment."""
    a = [s for s in org_path.split("/") if s]
    b = [s for s in place_path.split("/") if s]
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _in_force(valid_from, valid_until, withdrawn_at, now) -> bool:
    return (valid_from <= now and (valid_until is None or now < valid_until)
            and (withdrawn_at is None or now < withdrawn_at))


def _statute_covers(s: dict, req: Requester, category, purpose, action) -> bool:
    return (s["organisation_kind"] == req.organisation_kind and category in s["categories"]
            and purpose in s["purposes"] and action in s["actions"])


def _consent_names(c: ConsentGrant, req: Requester) -> bool:
    return req.organisation_id in c.recipient_organisation_ids or any(
        rk.organisation_kind == req.organisation_kind and _serves_oracle(req.jurisdiction_path, rk.jurisdiction_path)
        for rk in c.recipient_kinds)


def _consent_covers(c: ConsentGrant, req, category, purpose, now) -> bool:
    return (_in_force(c.valid_from, c.valid_until, c.withdrawn_at, now) and _consent_names(c, req)
            and category in c.categories and c.purpose == purpose
            and (category not in SPECIAL or c.explicit_special))


def _agreement_covers(a: AgreementGrant, req, category, purpose, now, holders) -> bool:
    return (_in_force(a.valid_from, a.valid_until, None, now) and req.organisation_id in a.organisation_ids
            and bool(a.organisation_ids & holders) and category in a.categories and a.purpose == purpose
            and category not in SPECIAL)


def _any_basis(req, category, purpose, action, now, consents, agreements, holders) -> bool:
    return (any(_statute_covers(s, req, category, purpose, action) for s in STATUTES.values())
            or any(_agreement_covers(a, req, category, purpose, now, holders) for a in agreements)
            or any(_consent_covers(c, req, category, purpose, now) for c in consents))


def _check_permit_basis(d, req, category, purpose, action, now, consents, agreements, holders) -> None:
    kind, _, ident = d.basis.partition(":")
    if kind == "statute":
        assert ident in STATUTES, d
        s = STATUTES[ident]
        assert _statute_covers(s, req, category, purpose, action), d
        assert d.reason == s["law"]
    elif kind == "agreement":
        matches = [a for a in agreements if str(a.id) == ident]
        assert len(matches) == 1, d
        assert _agreement_covers(matches[0], req, category, purpose, now, holders), d
    elif kind == "consent":
        matches = [c for c in consents if str(c.id) == ident]
        assert len(matches) == 1, d
        assert _consent_covers(matches[0], req, category, purpose, now), d
    else:
        raise AssertionError(f"unknown kind of basis: {d.basis}")


# A few days around BASE, so that `now` often falls exactly on a boundary (from, until, withdrawal).
days = st.integers(min_value=-4, max_value=4)
times = days.map(lambda n: BASE + n * DAY)
requesters = st.builds(Requester, st.sampled_from(ORG_IDS), st.sampled_from(KINDS), st.sampled_from(PATHS))


def leaning(value, pool, weight: int):
    """Mostly ``value``, sometimes anything from ``pool``."""
    return st.sampled_from([value] * weight + list(pool))


@st.composite
def scenarios(draw):
    req = draw(requesters)
    category = draw(st.sampled_from(CATEGORIES))
    purpose = draw(st.sampled_from(PURPOSES))
    action = draw(st.sampled_from(("read", "write")))
    now = draw(times)
    # grants lean towards the request so that they matter often, but range over everything
    g_purpose = leaning(purpose, PURPOSES, 3 * len(PURPOSES))
    covering = st.sets(st.sampled_from(CATEGORIES), max_size=2).map(lambda s: s | {category})
    g_cats = st.one_of(covering, covering, covering, st.sets(st.sampled_from(CATEGORIES), min_size=1, max_size=4))
    g_orgs = st.one_of(
        st.just(frozenset()),
        st.sets(st.sampled_from(ORG_IDS), max_size=2).map(lambda s: s | {req.organisation_id}),
        st.sets(st.sampled_from(ORG_IDS), max_size=3),
    )
    g_kind = leaning(req.organisation_kind, KINDS, 2 * len(KINDS))
    g_until = st.none() | st.integers(1, 5).map(lambda n: n * DAY)
    consents = []
    for _ in range(draw(st.integers(0, 3))):
        valid_from = draw(times)
        until = draw(g_until)
        consents.append(ConsentGrant(
            id=uuid.UUID(int=1000 + len(consents)),
            recipient_organisation_ids=frozenset(draw(g_orgs)),
            recipient_kinds=tuple(draw(st.lists(st.builds(RecipientKind, g_kind, st.sampled_from(PATHS)),
                                                max_size=2))),
            categories=frozenset(draw(g_cats)),
            purpose=draw(g_purpose),
            explicit_special=draw(st.booleans()),
            valid_from=valid_from,
            valid_until=None if until is None else valid_from + until,
            withdrawn_at=draw(st.none() | times),
        ))
    agreements = []
    for _ in range(draw(st.integers(0, 2))):
        valid_from = draw(times)
        until = draw(g_until)
        agreements.append(AgreementGrant(
            id=uuid.UUID(int=2000 + len(agreements)),
            organisation_ids=frozenset(draw(g_orgs.filter(bool))),
            categories=frozenset(draw(g_cats)),
            purpose=draw(g_purpose),
            valid_from=valid_from,
            valid_until=None if until is None else valid_from + until,
        ))
    holders = frozenset(draw(st.sets(st.sampled_from(ORG_IDS), max_size=3)))
    return req, category, purpose, action, now, consents, agreements, holders


def _rest_consent(c: ConsentGrant) -> tuple:
    return (c.recipient_organisation_ids, c.recipient_kinds, c.categories, c.purpose, c.explicit_special,
            c.valid_from, c.valid_until, c.withdrawn_at)


def _withdrawn(c: ConsentGrant, at: datetime) -> ConsentGrant:
    rest = list(_rest_consent(c))
    rest[-1] = at if c.withdrawn_at is None else min(c.withdrawn_at, at)
    return ConsentGrant(c.id, *rest)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(-6, 6))
def test_every_decision_is_explained_by_a_real_basis(scenario, withdraw_offset):
    req, category, purpose, action, now, consents, agreements, holders = scenario
    d = decide(DATA, req, category, purpose, action, now, consents, agreements, holders)
    assert isinstance(d.reason, str) and d.reason

    if d.permit:
        assert d.basis is not None
        _check_permit_basis(d, req, category, purpose, action, now, consents, agreements, holders)
    else:
        assert d.basis is None
        # deny by default only when nothing covers the request
        assert not _any_basis(req, category, purpose, action, now, consents, agreements, holders), d
        withdrawn_cover = any(
            c.withdrawn_at is not None and c.withdrawn_at <= now and _consent_names(c, req)
            and category in c.categories and c.purpose == purpose
            and (category not in SPECIAL or c.explicit_special)
            for c in consents)
        if withdrawn_cover:
            assert "consent withdrawn" in d.reason, d
    assert d.permit == _any_basis(req, category, purpose, action, now, consents, agreements, holders)

    # monotonicity: withdrawing any consent (at any time) never turns a deny into a permit
    withdraw_at = BASE + withdraw_offset * DAY
    for i, c in enumerate(consents):
        changed = [*consents[:i], _withdrawn(c, withdraw_at), *consents[i + 1:]]
        d2 = decide(DATA, req, category, purpose, action, now, changed, agreements, holders)
        if not d.permit:
            assert not d2.permit, (c, d2)
        if d2.permit:
            _check_permit_basis(d2, req, category, purpose, action, now, changed, agreements, holders)
    # ...and withdrawing all of them at once neither
    all_withdrawn = [_withdrawn(c, withdraw_at) for c in consents]
    d3 = decide(DATA, req, category, purpose, action, now, all_withdrawn, agreements, holders)
    assert d3.permit <= d.permit

    # without any consent or agreement only the statutes are left
    bare = decide(DATA, req, category, purpose, action, now, [], [], holders)
    statutory = [s for s in STATUTES.values() if _statute_covers(s, req, category, purpose, action)]
    assert bare.permit == bool(statutory)
    if bare.permit:
        assert bare.basis.startswith("statute:")
        assert bare.basis == f"statute:{statutory[0]['id']}"
    else:
        assert bare.basis is None
        assert category in bare.reason
    if d.permit and d.basis.startswith("statute:"):
        assert bare == d


# More places, with ids that share leading digits ("/1/2/3/" and "/1/2/31/", "/1/2/" and "/1/20/").
MANY_PATHS = (*PATHS, "/1/2/31/", "/1/21/", "/1/20/5/", "/2/", "/2/1/")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KINDS), st.sampled_from(MANY_PATHS), st.sampled_from(KINDS), st.sampled_from(MANY_PATHS),
       st.sampled_from(("read", "write")))
def test_a_kind_consent_names_exactly_the_organisations_serving_or_inside_the_place(
        req_kind, req_path, kind, place, action):
    """Only kind and place decide; 'serving' is by whole jurisdiction ids, both ways up the tree."""
    req = Requester(7, req_kind, req_path)
    c = consent(kinds=(RecipientKind(kind, place),), categories={"housing"}, purpose="case_management")
    d = run(req, "housing", "case_management", action=action, consents=[c], holders=set())
    assert not any(_statute_covers(s, req, "housing", "case_management", action) for s in STATUTES.values())
    expected = req_kind == kind and _serves_oracle(req_path, place)
    assert d.permit == expected, (req, place, d)
    assert d.basis == (f"consent:{c.id}" if expected else None)


@settings(max_examples=200, deadline=None)
@given(requesters, st.sampled_from(CATEGORIES), st.sampled_from(PURPOSES), st.sampled_from(("read", "write")),
       times, st.sets(st.sampled_from(ORG_IDS)))
def test_decisions_depend_only_on_statutes_without_grants(req, category, purpose, action, now, holders):
    """No grants: the decision does not depend on the time, the holders or the requester's id."""
    d = decide(DATA, req, category, purpose, action, now, [], [], frozenset(holders))
    other = Requester(req.organisation_id + 100, req.organisation_kind, HAGENAU)
    d2 = decide(DATA, other, category, purpose, action, now + 365 * DAY, [], [], frozenset())
    assert d == d2
    assert d.permit == any(_statute_covers(s, req, category, purpose, action) for s in STATUTES.values())
