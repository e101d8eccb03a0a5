"""The Angebotsdatenbank and the Sprachenpass as their users meet them: a provider enters its
course, the public finds it without a token and learns nothing about who takes part, the case
manager sees the matching offers for a chain step and books one, concurrent enrolments never
overbook, and the Sprachenpass obeys the decision point like every other field."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from casemgmt.chains import service as chains
from casemgmt.chains.models import ChainEvent
from casemgmt.demo.seed import actor_of
from casemgmt.jurisdictions.models import Organisation
from casemgmt.languagepass.levels import Shown, derived_german_level
from casemgmt.offers import matching
from casemgmt.offers import service as offers
from casemgmt.offers.models import Offer, OfferBooking
from casemgmt.offers.schemas import BookingIn, OfferIn
from casemgmt.persons.models import Person
from casemgmt.problems import OfferFull, Problem
from http_helpers import ok, problem
from test_api import new_person, started

KI = ("ennetal_ki", "case_manager")
VHS = ("ennetal_vhs", "clerk")
SCHULE = ("ennetal_sprachschule", "clerk")
STEP = "integration_course"


# --- pure logic ------------------------------------------------------------------------------------

DAY = date(2026, 3, 2)


def _candidate(i, *, languages=("Deutsch",), free=5, start=10, kind="integration_course", towns=(1,)):
    return matching.Candidate(
        id=i, title=f"Kurs {i}", kind=kind, towns=frozenset(towns), languages=frozenset(languages),
        target_residence_statuses=frozenset(), age_min=None, age_max=None,
        starts_on=None if start is None else DAY + timedelta(days=start), free_places=free,
        valid_from=DAY - timedelta(days=30), valid_until=None)


NEED = matching.Need(kinds=frozenset({"integration_course"}), town_path=[1, 4, 9], language="Arabisch")


def test_matching_ranks_language_then_place_then_start_then_free_places():
    offers_ = [
        _candidate("late_arabic", languages=("Deutsch", "Arabisch"), start=60, free=9),
        _candidate("soon", start=3, free=2),
        _candidate("soon_more_places", start=3, free=8),
        _candidate("full_arabic", languages=("Arabisch",), start=1, free=0),
        _candidate("other_town", towns=(2,), start=1),
        _candidate("other_kind", kind="sports", start=1),
        _candidate("whole_kreis", towns=(4,), start=30, free=None),
    ]
    ranked = [c.id for c in matching.rank(offers_, NEED, DAY)]
    assert ranked == ["late_arabic", "full_arabic", "soon_more_places", "soon", "whole_kreis"]
    # Without a language, the earliest start with a place comes first.
    plain = [c.id for c in matching.rank(offers_, matching.Need(NEED.kinds, NEED.town_path), DAY)]
    assert plain[:3] == ["soon_more_places", "soon", "whole_kreis"] and plain[-1] == "full_arabic"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 12), st.integers(-20, 90)), min_size=1, max_size=12))
def test_ranking_never_puts_a_full_offer_before_one_with_a_place_in_the_same_language(specs):
    candidates = [_candidate(i, languages=("Arabisch",) if arabic else ("Deutsch",), free=free, start=start)
                  for i, (arabic, free, start) in enumerate(specs)]
    ranked = matching.rank(candidates, NEED, DAY)
    assert len(ranked) == len(candidates)
    keys = [(not matching.speaks(c, "Arabisch"), not matching.has_place(c)) for c in ranked]
    assert keys == sorted(keys)


def test_age_is_counted_in_completed_years_and_an_age_range_includes_both_ends():
    assert [matching.age_on(date(1998, 3, 2), DAY), matching.age_on(date(1998, 3, 3), DAY)] == [28, 27]
    leap = date(2008, 2, 29)  # in other years one more from 1 March on
    assert [matching.age_on(leap, date(2026, 2, 28)), matching.age_on(leap, date(2026, 3, 1))] == [17, 18]
    assert matching.age_on(leap, date(2028, 2, 29)) == 20
    youth = matching.Candidate(**(_candidate("youth").__dict__ | {"age_min": 16, "age_max": 27}))
    need = matching.Need(NEED.kinds, NEED.town_path)
    assert [matching.fits(youth, matching.Need(NEED.kinds, NEED.town_path, age=a), DAY)
            for a in (15, 16, 27, 28)] == [False, True, True, False]
    assert matching.fits(youth, need, DAY)  # age unknown: no range excludes


def test_places_band_hides_the_number():
    assert [matching.places_band(n, 5) for n in (None, 0, 1, 4, 5, 40)] == [
        "open", "full", "few", "few", "available", "available"]


def test_german_level_is_the_best_certificate_or_the_weakest_skill_of_a_course():
    assert derived_german_level([]) is None
    course = Shown("Deutsch", {"listening": "B1", "writing": "A2"}, [])
    assert derived_german_level([course]) == "A2"
    certified = Shown("Deutsch", {"listening": "A2"}, ["B1"])
    assert derived_german_level([course, certified]) == "B1"
    assert derived_german_level([Shown("Englisch", {}, ["C1"]), course]) == "A2"


# --- the API ---------------------------------------------------------------------------------------


def offer_body(world, **over):
    return {
        "offer_kind": "integration_course", "title": "Integrationskurs am Vormittag",
        "description": "Allgemeiner Integrationskurs mit Orientierungskurs.",
        "towns": [world.jurisdictions["wittmar"]], "address": "VHS-Haus, Marktplatz 3, Wittmar",
        "languages": ["Deutsch", "Arabisch"], "capacity": 20, "starts_on": "2026-03-16",
        "contacts": [{"name": "Petra Kurzmann", "role": "Kursleitung", "phone": "02302 1234"}],
        "valid_from": "2026-01-01",
    } | over


def _person_with_chain(client, auth, world, **fields):
    person = new_person(client, auth(*KI), world.jurisdictions["wittmar"], preferred_language="Arabisch", **fields)
    return person, started(client, auth(*KI), person)


def test_public_directory_needs_no_token_and_reveals_no_person_or_count(client, auth, world):
    big = ok(client.post("/offers", json=offer_body(world), headers=auth(*VHS)), 201)
    small = ok(client.post("/offers", json=offer_body(world, title="Alphabetisierungskurs", offer_kind="literacy_course",
                                                      capacity=3, languages=["Deutsch"]), headers=auth(*VHS)), 201)
    before = client.get("/public/offers", params={"town": world.jurisdictions["wittmar"]})
    listed = ok(before)
    assert {o["id"] for o in listed} == {big["id"], small["id"]}
    assert {o["id"]: o["places"] for o in listed} == {big["id"]: "available", small["id"]: "few"}
    for o in listed:
        assert not {"capacity", "free_places", "provider_organisation_id", "version"} & set(o)
    # Enrolling a person changes nothing the public sees: no count, no person, byte for byte.
    person, chain = _person_with_chain(client, auth, world)
    ok(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{big['id']}", json={"action": "enrol"},
                   headers=auth(*KI)))
    after = client.get("/public/offers", params={"town": world.jurisdictions["wittmar"]})
    assert after.content == before.content
    assert person["id"] not in after.text and chain["id"] not in after.text and "Rana" not in after.text
    # Filters: kind, language, start window, free places; other towns see none of it.
    assert [o["id"] for o in ok(client.get("/public/offers", params={"kind": "literacy_course"}))] == [small["id"]]
    assert [o["id"] for o in ok(client.get("/public/offers", params={"language": "Arabisch"}))] == [big["id"]]
    assert ok(client.get("/public/offers", params={"starts_within_days": 3})) == []
    running = ok(client.post("/offers", json=offer_body(world, title="Laufender Kurs", starts_on="2026-02-02"),
                             headers=auth(*VHS)), 201)  # started a month ago: no longer "starts within"
    assert running["id"] not in {o["id"] for o in ok(client.get("/public/offers", params={"starts_within_days": 30}))}
    assert {o["id"] for o in ok(client.get("/public/offers", params={"starts_within_days": 30, "free_places": "true"}))
            } == {big["id"], small["id"]}
    assert ok(client.get("/public/offers", params={"town": world.jurisdictions["hagenau"]})) == []
    problem(client.get("/public/offers", params={"kind": "no_such_kind"}), 422, "validation-error")


def _public_ids(client, **params) -> set[str]:
    return {o["id"] for o in ok(client.get("/public/offers", params=params))}


def test_public_search_by_target_group(client, auth, world):
    """An offer restricted to a residence status is found with that target group and not with
    another; an offer naming no target group is open to everybody and found for any."""
    protected = ok(client.post("/offers", json=offer_body(world, title="Kurs für Schutzberechtigte",
                                                          target_residence_statuses=["protection_granted"]),
                               headers=auth(*VHS)), 201)
    anyone = ok(client.post("/offers", json=offer_body(world, title="Kurs für alle"), headers=auth(*VHS)), 201)
    assert protected["target_residence_statuses"] == ["protection_granted"] and anyone["target_residence_statuses"] == []
    assert _public_ids(client, target_group="protection_granted") == {protected["id"], anyone["id"]}
    for other in ("tolerated", "asylum_pending", "eu_free_movement"):
        assert _public_ids(client, target_group=other) == {anyone["id"]}, other
    assert _public_ids(client) == {protected["id"], anyone["id"]}
    # Combined with the other filters, not instead of them.
    assert _public_ids(client, target_group="tolerated", town=world.jurisdictions["hagenau"]) == set()
    problem(client.get("/public/offers", params={"target_group": "refugee"}), 422, "validation-error")


def test_public_search_by_age(client, auth, world):
    """An offer with an age range is found only for ages inside it (both ends included); one with
    a single bound only on its side; one without a range for any age. The age is 0..120."""
    youth = ok(client.post("/offers", json=offer_body(world, title="Jugendintegrationskurs", age_min=16, age_max=27,
                                                      offer_kind="youth_integration_course"), headers=auth(*VHS)), 201)
    adults = ok(client.post("/offers", json=offer_body(world, title="Kurs ab 18", age_min=18), headers=auth(*VHS)), 201)
    anyone = ok(client.post("/offers", json=offer_body(world, title="Kurs für alle"), headers=auth(*VHS)), 201)
    every = {youth["id"], adults["id"], anyone["id"]}
    assert _public_ids(client) == every
    assert _public_ids(client, age=0) == {anyone["id"]}
    assert _public_ids(client, age=15) == {anyone["id"]}
    assert _public_ids(client, age=16) == {youth["id"], anyone["id"]}
    assert _public_ids(client, age=18) == every
    assert _public_ids(client, age=27) == every
    assert _public_ids(client, age=28) == {adults["id"], anyone["id"]}
    assert _public_ids(client, age=120) == {adults["id"], anyone["id"]}
    # With the other filters, not instead of them.
    assert _public_ids(client, age=20, kind="youth_integration_course") == {youth["id"]}
    assert _public_ids(client, age=20, town=world.jurisdictions["hagenau"]) == set()
    for bad in ("-1", "121", "zwanzig", "18.5"):
        body = problem(client.get("/public/offers", params={"age": bad}), 422, "validation-error")
        assert "age" in json.dumps(body), bad
    parameter = next(p for p in client.get("/openapi.json").json()["paths"]["/public/offers"]["get"]["parameters"]
                     if p["name"] == "age")
    assert parameter["in"] == "query" and not parameter["required"] and parameter["description"]
    schema = next(s for s in parameter["schema"].get("anyOf", [parameter["schema"]]) if s.get("type") == "integer")
    assert (schema["minimum"], schema["maximum"]) == (0, 120)


def _keys(value, path=""):
    """Every key of a JSON answer with its path (items of a list as ``[]``) and its value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}".lstrip("."), key, item
            yield from _keys(item, f"{path}.{key}".lstrip("."))
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item, f"{path}[]")


# Keys of the public answers that share a name with a field of the person catalogue and are the
# offer's own public data: the venue's address, and the staff named as contact persons.
OFFER_DATA_NAMED_LIKE_PERSON_FIELDS = {"address", "contacts[].phone", "contacts[].email",
                                       "[].address", "[].contacts[].phone", "[].contacts[].email"}


def test_public_answers_carry_no_person_field_and_places_only_as_the_documented_band(client, auth, world, privacy,
                                                                                     policies):
    """Whatever was enrolled, the public routes answer with no field of a person (the catalogue's
    fields, the ids and states of bookings) and no count: free places are one of the documented
    bands, `few` for 1..k-1 free, so capacity minus free places never gives a count under k."""
    k = policies.steering.k
    made = {}
    for name, capacity in (("open", None), ("available", k + 1), ("few", k), ("one_left", 2), ("full", 1)):
        made[name] = ok(client.post("/offers", json=offer_body(world, title=f"Kurs {name}", capacity=capacity,
                                                               age_min=18, age_max=65), headers=auth(*VHS)), 201)
    ok(client.post("/good-practices", json={"offer_id": made["few"]["id"], "title": "Lernpatenschaften",
                                            "text": "Ehrenamtliche begleiten den Kurs."}, headers=auth(*VHS)), 201)
    person, chain = _person_with_chain(client, auth, world, family_name="Haddad", given_names="Rana",
                                       birth_date="1994-07-21")
    for offer in made.values():  # one enrolment each: every count the public could see is 1
        ok(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{offer['id']}", json={"action": "enrol"},
                       headers=auth(*KI)))
    answers = {"/public/offers": ok(client.get("/public/offers")),
               "/public/good-practices": ok(client.get("/public/good-practices"))}
    answers |= {f"/public/offers/{o['id']}": ok(client.get(f"/public/offers/{o['id']}")) for o in made.values()}

    person_fields = set(privacy.policy.fields) | {
        "person", "person_id", "persons", "chain", "chain_id", "step_key", "booking", "bookings", "booking_id",
        "state", "referred_at", "enrolled_at", "participants", "enrolled", "enrolments", "capacity", "free_places"}
    for route, answer in answers.items():
        for path, key, _ in _keys(answer):
            assert key not in person_fields or path in OFFER_DATA_NAMED_LIKE_PERSON_FIELDS, (route, path)
            assert not any(word in key for word in ("count", "enrol", "booked", "person", "participant")), (route, path)
        text = json.dumps(answer, ensure_ascii=False)
        for value in (person["id"], chain["id"], "Haddad", "Rana", "1994-07-21", "21.07.1994"):
            assert value not in text, (route, value)

    documented = client.get("/openapi.json").json()["components"]["schemas"]["PublicOfferOut"]["properties"]["places"]
    assert documented["enum"] == ["open", "available", "few", "full"]
    listed = {o["id"]: o["places"] for o in answers["/public/offers"]}
    assert {name: listed[o["id"]] for name, o in made.items()} == {
        "open": "open", "available": "available", "few": "few", "one_left": "few", "full": "full"}
    for o in made.values():
        assert answers[f"/public/offers/{o['id']}"]["places"] == listed[o["id"]] in documented["enum"]
    # The band is all there is of the places: no number in an answer but an offer's age range and ids.
    numbers = {key for answer in answers.values() for _, key, value in _keys(answer)
               if isinstance(value, int | float) and not isinstance(value, bool)}
    assert numbers == {"age_min", "age_max", "organisation_id"}, numbers


def test_case_manager_books_a_matching_course_and_the_provider_writes_the_language_pass(client, auth, world):
    far = ok(client.post("/offers", json=offer_body(world, title="Abendkurs", starts_on="2026-05-04",
                                                    languages=["Deutsch"]), headers=auth(*VHS)), 201)
    near = ok(client.post("/offers", json=offer_body(world, capacity=2), headers=auth(*VHS)), 201)
    ok(client.post("/offers", json=offer_body(world, title="Sportgruppe", offer_kind="sports", capacity=None),
                   headers=auth(*SCHULE)), 201)
    person, chain = _person_with_chain(client, auth, world)
    found = ok(client.get(f"/chains/{chain['id']}/steps/{STEP}/offers", headers=auth(*KI)))
    assert found["language"] == "Arabisch"  # the person's preferred language, read with the KI's basis
    assert [o["offer"]["id"] for o in found["offers"]] == [near["id"], far["id"]]
    assert found["offers"][0]["language_match"] and not found["offers"][1]["language_match"]

    ok(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{near['id']}", json={"action": "refer"},
                   headers=auth(*KI)))
    booked = ok(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{near['id']}", json={"action": "enrol"},
                            headers=auth(*KI)))
    assert booked["state"] == "enrolled" and booked["free_places"] == 1
    problem(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{near['id']}", json={"action": "enrol"},
                        headers=auth(*KI)), 409, "already-enrolled")
    timeline = ok(client.get(f"/chains/{chain['id']}/events", headers=auth(*KI)))
    assert [e["kind"] for e in timeline if e["kind"].startswith("offer_")] == ["offer_referred", "offer_enrolled"]
    # The step goes to the provider of the course it was booked on (recorded as an assignment).
    assigned = [e for e in timeline if e["kind"] == "step_assigned" and e["step_key"] == STEP]
    assert assigned[-1]["organisation_id"] == world.organisations["ennetal_vhs"]
    course = next(s for s in ok(client.get(f"/chains/{chain['id']}", headers=auth(*KI)))["steps"] if s["key"] == STEP)
    assert course["assigned_organisation_id"] == world.organisations["ennetal_vhs"]
    # A step no offer kind serves, and an offer of a kind that does not serve the step.
    sports = ok(client.get("/offers", headers=auth(*SCHULE)))[0]
    problem(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{sports['id']}", json={"action": "refer"},
                        headers=auth(*KI)), 422, "offer-does-not-fit")
    # Outsiders get the same 404 for the real chain and a random one.
    for chain_id in (chain["id"], str(uuid.uuid4())):
        problem(client.get(f"/chains/{chain_id}/steps/{STEP}/offers", headers=auth("ennetal_jobcenter", "clerk")),
                404, "not-found")

    # The VHS ran the course: it writes the entry (statutory basis for `language`, § 8 IntV).
    entry = {"offer_id": near["id"], "from_date": "2026-03-16", "to_date": "2026-09-30", "hours": 700,
             "levels": {"listening": "B1", "reading": "B1", "writing": "A2", "speaking": "B1"},
             "certificates": [{"exam": "DTZ", "title": "Deutsch-Test für Zuwanderer", "level": "B1",
                               "date": "2026-09-25", "evidence_reference": "VHS-DTZ-2026-17"}]}
    written = ok(client.post(f"/persons/{person['id']}/language-pass", json=entry, headers=auth(*VHS)), 201)
    assert written["german_level"] == "B1" and written["entries"][0]["provider"] == "VHS Ennetal"
    # Another provider that ran nothing for the person: the same 404 as for a random id.
    for pid in (person["id"], str(uuid.uuid4())):
        problem(client.post(f"/persons/{pid}/language-pass", json=entry | {"offer_id": None, "course_title": "Kurs"},
                            headers=auth(*SCHULE)), 404, "not-found")
    # The KI has no basis for `language` (its intake consent names residence and benefits): withheld.
    withheld = ok(client.get(f"/persons/{person['id']}/language-pass", headers=auth(*KI)))
    assert withheld["entries"] == [] and withheld["german_level"] is None and withheld["redacted"]
    record = ok(client.get(f"/persons/{person['id']}", headers=auth(*KI)))
    assert "german_level" not in record["fields"]
    # ... until the person consents; then the derived level is on the record and the pass prints.
    ok(client.post(f"/persons/{person['id']}/consents", json={
        "recipients": [{"organisation_id": world.organisations["ennetal_ki"]}], "categories": ["language"],
        "purpose": "case_management", "consequences_explained": True, "evidence_reference": "EW-SP-1",
        "language": "Arabisch"}, headers=auth(*KI)), 201)
    assert ok(client.get(f"/persons/{person['id']}", headers=auth(*KI)))["fields"]["german_level"] == "B1"
    page = client.get(f"/persons/{person['id']}/language-pass.html", headers=auth(*KI))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Sprachenpass" in page.text and "Deutsch-Test für Zuwanderer (B1)" in page.text and "700 UE" in page.text


def _matched(client, auth, chain, who=KI) -> set[str]:
    found = ok(client.get(f"/chains/{chain['id']}/steps/{STEP}/offers", headers=auth(*who)))
    assert all(o["offer"]["target_residence_statuses"] is not None for o in found["offers"])
    return {o["offer"]["id"] for o in found["offers"]}


def _target_group_offers(client, auth, world) -> dict[str, str]:
    def add(title, **over):
        return ok(client.post("/offers", json=offer_body(world, title=title, **over), headers=auth(*VHS)), 201)["id"]

    return {
        "protected": add("Kurs für Schutzberechtigte", target_residence_statuses=["protection_granted"]),
        "tolerated": add("Kurs für Geduldete und Gestattete", target_residence_statuses=["tolerated", "asylum_pending"]),
        "youth": add("Jugendintegrationskurs", offer_kind="youth_integration_course", age_min=16, age_max=27),
        "older": add("Kurs ab 28", age_min=28),
        "anyone": add("Kurs für alle"),
    }


def test_matching_offers_respect_the_persons_residence_status_and_age(client, auth, world):
    """An offer restricted to a residence status the person does not have, or to an age range
    their birth date is outside of (on today's date, 2026-03-02), is not offered for the step;
    an offer naming no target group is offered to everybody. Unknown parts exclude nothing."""
    o = _target_group_offers(client, auth, world)

    def matched(**fields):
        return {k for k, v in o.items() if v in _matched(client, auth, _person_with_chain(client, auth, world,
                                                                                         **fields)[1])}

    assert matched(birth_date="2004-01-10") == {"protected", "youth", "anyone"}  # 22, protection granted
    assert matched(residence_status="tolerated", birth_date="1980-06-15") == {"tolerated", "older", "anyone"}  # 45
    assert matched(residence_status="eu_free_movement", birth_date="1980-06-15") == {"older", "anyone"}
    # The birthday decides, to the day: 27 until tomorrow, 28 since today.
    assert matched(birth_date="1998-03-03") == {"protected", "youth", "anyone"}
    assert matched(birth_date="1998-03-02") == {"protected", "older", "anyone"}
    assert matched(residence_status="asylum_pending", birth_date="2010-03-03") == {"tolerated", "anyone"}  # 15
    assert matched(residence_status="asylum_pending", birth_date="2010-03-02") == {"tolerated", "youth", "anyone"}
    # Without a birth date the age is unknown: no age range excludes the person.
    assert matched(residence_status="asylum_pending") == {"tolerated", "youth", "older", "anyone"}


def test_matching_uses_only_the_target_group_facts_the_caller_may_read(client, auth, world, session_factory):
    """The residence status and the birth date narrow the offers only for a caller with a basis
    for their category, and each use is an audited read. The VHS doing the course step may read
    identity (§ 8 IntV) but not residence: it sees the age ranges applied, not the statuses, so
    the list it gets does not tell it the person's residence status."""
    from casemgmt.privacy.models import AuditEvent

    o = _target_group_offers(client, auth, world)
    person, chain = _person_with_chain(client, auth, world, residence_status="tolerated", birth_date="1980-06-15")
    by_ki = _matched(client, auth, chain)
    assert by_ki == {o["tolerated"], o["older"], o["anyone"]}
    ok(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{o['anyone']}", json={"action": "enrol"},
                   headers=auth(*KI)))  # the step goes to the VHS, the course's provider
    with session_factory() as s:  # and is ready (its entitlement done, set directly for speed)
        from casemgmt.chains.models import ChainStep

        step = s.scalar(select(ChainStep).where(ChainStep.chain_id == uuid.UUID(chain["id"]), ChainStep.key == STEP))
        assert step.assigned_organisation_id == world.organisations["ennetal_vhs"]
        step.state = "ready"
        s.commit()
    assert _matched(client, auth, chain, VHS) == {o["protected"], o["tolerated"], o["older"], o["anyone"]}

    with session_factory() as s:
        rows = s.execute(select(AuditEvent.agent_organisation_id, AuditEvent.fields, AuditEvent.legal_bases,
                                AuditEvent.outcome)
                         .where(AuditEvent.subtype == "offer.matching", AuditEvent.person_id == person["id"])
                         .order_by(AuditEvent.id)).all()
    read = {(r.agent_organisation_id, r.outcome): (set(json.loads(r.fields)), json.loads(r.legal_bases)) for r in rows}
    ki, vhs = world.organisations["ennetal_ki"], world.organisations["ennetal_vhs"]
    fields, bases = read[(ki, "success")]
    assert fields == {"preferred_language", "residence_status", "birth_date"} and all(bases[f] for f in fields)
    fields, bases = read[(vhs, "success")]
    assert fields == {"preferred_language", "birth_date"} and all(bases[f] for f in fields)
    assert read[(vhs, "denied")][0] == {"residence_status"}
    # A step whose offers name no target group reads neither fact.
    job = ok(client.post("/offers", json=offer_body(world, title="Berufssprachkurs B2", offer_kind="job_related_german"),
                         headers=auth(*VHS)), 201)
    found = ok(client.get(f"/chains/{chain['id']}/steps/job_related_german/offers", headers=auth(*KI),
                          params={"language": "Deutsch"}))
    assert [x["offer"]["id"] for x in found["offers"]] == [job["id"]]
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(AuditEvent).where(
            AuditEvent.subtype == "offer.matching", AuditEvent.person_id == person["id"])) == len(rows)


def test_offers_are_maintained_by_their_provider_and_the_ki_with_history(client, auth, world):
    offer = ok(client.post("/offers", json=offer_body(world), headers=auth(*VHS)), 201)
    changed = offer_body(world, title="Integrationskurs am Nachmittag", expected_version=1)
    problem(client.put(f"/offers/{offer['id']}", json=changed, headers=auth(*SCHULE)), 404, "not-found")
    problem(client.post("/offers", json=offer_body(world, provider_organisation_id=world.organisations["ennetal_vhs"]),
                        headers=auth(*SCHULE)), 403, "wrong-organisation")
    ok(client.put(f"/offers/{offer['id']}", json=changed, headers=auth(*VHS)))
    problem(client.put(f"/offers/{offer['id']}", json=changed, headers=auth(*KI)), 409, "version-conflict")
    ok(client.put(f"/offers/{offer['id']}", json=changed | {"expected_version": 2, "cost": "kostenfrei"},
                  headers=auth(*KI)))
    history = ok(client.get(f"/offers/{offer['id']}/history", headers=auth(*VHS)))
    assert [(h["version"], h["change"], h["document"]["title"]) for h in history] == [
        (1, "created", "Integrationskurs am Vormittag"), (2, "updated", "Integrationskurs am Nachmittag"),
        (3, "updated", "Integrationskurs am Nachmittag")]
    assert history[2]["changed_by_organisation_id"] == world.organisations["ennetal_ki"]
    # A description carrying a participant's name and phone number is refused like every free text.
    problem(client.post("/offers", json=offer_body(world, description="Frau Haddad ruft an: 0170 1234567"),
                        headers=auth(*VHS)), 422, "personal-data-in-text")
    practice = ok(client.post("/good-practices", json={
        "offer_id": offer["id"], "title": "Kinderbetreuung im Nebenraum",
        "text": "Eltern nehmen teil, weil die Kinder nebenan betreut werden."}, headers=auth(*VHS)), 201)
    public = ok(client.get(f"/public/offers/{offer['id']}"))
    assert public["good_practices"][0]["id"] == practice["id"] and public["cost"] == "kostenfrei"
    assert [g["id"] for g in ok(client.get("/public/good-practices"))] == [practice["id"]]
    # Without an offer, an example is the KI's, for a working group that exists.
    problem(client.post("/good-practices", json={"working_group_id": 99999, "title": "Lotsen", "text": "Gut."},
                        headers=auth(*KI)), 422, "validation-error")
    problem(client.post("/good-practices", json={"working_group_id": 1, "title": "Lotsen", "text": "Gut."},
                        headers=auth(*VHS)), 403, "wrong-organisation")


def test_erasure_and_retention_of_language_take_the_sprachenpass(client, auth, world, session_factory, clock,
                                                                  privacy, policies):
    from casemgmt.rights.erasure import delete_categories, destroy

    offer = ok(client.post("/offers", json=offer_body(world), headers=auth(*VHS)), 201)
    person, chain = _person_with_chain(client, auth, world)
    ok(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{offer['id']}", json={"action": "enrol"},
                   headers=auth(*KI)))
    ok(client.post(f"/persons/{person['id']}/language-pass", json={
        "offer_id": offer["id"], "from_date": "2026-03-16", "levels": {"speaking": "A2"}}, headers=auth(*VHS)), 201)
    from casemgmt.languagepass.models import LanguagePassEntry

    with session_factory() as s:
        count = select(func.count()).select_from(LanguagePassEntry)
        assert s.scalar(count) == 1
        destroy(s, uuid.UUID(person["id"]), clock())
        assert s.scalar(count) == 0
        s.rollback()
        subject = s.get(Person, uuid.UUID(person["id"]))
        kept = delete_categories(s, privacy, policies.steering.conference_category, subject, {"housing"}, clock(), "t")
        assert s.scalar(count) == 1 and "language_pass" not in kept
        gone = delete_categories(s, privacy, policies.steering.conference_category, subject, {"language"}, clock(), "t")
        assert s.scalar(count) == 0 and "language_pass" in gone and "german_level" in gone
        s.rollback()


def test_twenty_concurrent_enrolments_into_five_places_give_five(session_factory, catalog, world, clock, policies,
                                                                 privacy):
    """Real PostgreSQL connections, released at the same moment: exactly five enrolments, fifteen
    clear 409 offer-full, and the offer at zero free places."""
    with session_factory() as s:
        ki = actor_of(s.get(Organisation, world.organisations["ennetal_ki"]), "u-ki", frozenset({"case_manager"}))
        vhs = actor_of(s.get(Organisation, world.organisations["ennetal_vhs"]), "u-vhs", frozenset({"clerk"}))
        chain_ids = []
        for _ in range(20):
            person = Person(id=uuid.uuid4(), residence_status="protection_granted", bleibeperspektive="good",
                            benefit_regime="asylblg", lead_jurisdiction_id=world.jurisdictions["wittmar"],
                            created_by_organisation_id=ki.organisation_id, created_at=clock())
            s.add(person)
            s.commit()
            chain_ids.append(chains.start_chain(s, catalog, ki, person.id, "refugee_recognised", clock()).id)
    with session_factory() as s:
        body = OfferIn.model_validate(offer_body(world, capacity=5))
        offer = offers.create_offer(s, privacy, policies.offers, 5, vhs, body, clock())
    barrier = threading.Barrier(20)

    def enrol(i):
        with session_factory() as s:
            barrier.wait()
            try:
                return offers.book_offer(s, catalog, policies.offers, ki, chain_ids[i], STEP, offer.id,
                                         BookingIn(action="enrol"), clock())
            except Problem as exc:
                return exc

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(enrol, range(20)))
    won = [r for r in results if not isinstance(r, Problem)]
    lost = [r for r in results if isinstance(r, Problem)]
    assert len(won) == 5 and len(lost) == 15
    assert all(isinstance(r, OfferFull) and r.status == 409 for r in lost)
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(ChainEvent).where(ChainEvent.kind == "offer_enrolled")) == 5
        assert s.get(Offer, offer.id).free_places == 0
        assert s.scalar(select(func.count()).select_from(OfferBooking)) == 5  # nothing of the losers stayed


def test_demand_of_waiting_persons_is_in_the_steering_report(client, auth, world, session_factory, policies, clock):
    """Persons whose course step is ready and not enrolled count as demand for every kind that
    serves it; an enrolment takes them out. Fewer than k persons are shown as '.'."""
    from casemgmt.steering import report as steering_report

    offer = ok(client.post("/offers", json=offer_body(world, capacity=3), headers=auth(*VHS)), 201)
    made = []
    for _ in range(6):
        person, chain = _person_with_chain(client, auth, world)
        made.append(chain)
    with session_factory() as s:
        # Make the course steps ready as the chain would (the entitlement completed); the report
        # reads the step states, so set them directly for the test's speed.
        from sqlalchemy import update

        from casemgmt.chains.models import ChainStep
        s.execute(update(ChainStep).where(ChainStep.key == STEP).values(state="ready"))
        s.commit()

    def demand():
        with session_factory() as s:
            doc = steering_report.build_report(s, policies.steering, policies.goals,
                                               steering_report.resolve_area(s, world.jurisdictions["kreis_ennetal"]),
                                               clock())
        doc = json.loads(json.dumps(doc))
        table = next(t for t in doc["tables"] if t["key"] == "offer_demand")
        return ({(c["offer_kind"], c["town"]): c["value"] for c in table["cells"]},
                {(r["offer_kind"], r["town"]): r for r in doc["offer_supply_demand"]})

    cells, rows = demand()
    assert cells[("integration_course", "_total")] == 6 and cells[("literacy_course", "_total")] == 6
    row = rows[("integration_course", "_total")]
    assert row["free_places"] == 3 and row["offers"] == 1 and row["demand_exceeds_supply"] is True
    for chain in made[:2]:
        ok(client.post(f"/chains/{chain['id']}/steps/{STEP}/offers/{offer['id']}", json={"action": "enrol"},
                       headers=auth(*KI)))
    cells, rows = demand()
    assert cells[("integration_course", "_total")] is None  # 4 persons: under k
    assert rows[("integration_course", "_total")]["waiting_days_median"] is None
    assert rows[("integration_course", "_total")]["demand_exceeds_supply"] is None


def test_a_broken_offer_taxonomy_stops_start_naming_file_and_line(tmp_path, policies):
    import shutil

    import pytest

    from casemgmt.policy.loader import load_policies
    from casemgmt.policy.source import PolicyError

    shutil.copytree(policies.directory, tmp_path / "p")
    path = tmp_path / "p" / "offers.yaml"
    text = path.read_text()
    path.write_text(text.replace("serves_steps: [job_related_german]", "serves_steps: [job_related_germna]"))
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path / "p")
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if "job_related_germna" in row)
    assert str(caught.value).startswith(f"{path}:{line}:") and "job_related_germna" in str(caught.value)
