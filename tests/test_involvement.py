"""Record scope by involvement, tried as an outsider and as each office would meet it.

An organisation sees a person or chain only while it is involved (DOMAIN.md section 7): it runs
the case management, a step assigned to it is ready or later, a handover to it waits, the case is
on a conference agenda it takes part in, or it registered the person. Afterwards it reads only
what it wrote and did. Everybody else gets the same 404 for a real and a random id, on every
route, before any other check.
"""

from __future__ import annotations

from typing import Any

import pytest
from http_helpers import ok, problem, ts
from test_api import acted, events, get_chain, new_person, started, step

RANDOM_ID = "00000000-0000-4000-8000-00000000abcd"
KI = ("ennetal_ki", "case_manager")


def handover(client, headers, chain_id: str, **body: Any):
    return client.post(f"/chains/{chain_id}/handovers", json=body, headers=headers)


def respond(client, headers, handover_id: str, action: str, **body: Any):
    return client.post(f"/handovers/{handover_id}/actions", json={"action": action, **body}, headers=headers)


def finish(client, headers, chain_id: str, key: str) -> dict[str, Any]:
    acted(client, headers, chain_id, key, "start")
    return acted(client, headers, chain_id, key, "complete")


def listed(client, headers) -> list[str]:
    return [i["id"] for i in ok(client.get("/chains", params={"limit": 200}, headers=headers))["items"]]


def same_404(real, fake) -> None:
    """An outsider cannot tell an existing id from a random one."""
    a, b = problem(real, 404, "not-found"), problem(fake, 404, "not-found")
    strip = ("instance", "detail", "id", "request_id")
    assert {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}
    # The message names only the id that was asked for.
    asked = real.request.url.path + real.request.content.decode()
    assert a["id"] in asked and a["id"] in a["detail"]


@pytest.fixture
def ki(auth):
    return auth(*KI)


@pytest.fixture
def eu_chain(client, ki, world) -> dict[str, Any]:
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Nowak",
                        given_names="Ewa", birth_date="1991-02-03", phone="+49 2302 123456")
    return started(client, ki, person, "eu_newcomer")


# --- item 1: involvement, not organisation kind ----------------------------------------------


def test_a_language_school_sees_a_newcomer_only_once_the_course_step_is_assigned_to_it(
        client, auth, ki, world, eu_chain):
    vhs = auth("ennetal_vhs", "clerk")
    school = auth("ennetal_sprachschule", "clerk")
    cid, pid = eu_chain["id"], eu_chain["person_id"]
    # Planned course step: neither course provider is involved.
    for provider in (vhs, school):
        assert listed(client, provider) == []
        problem(client.get(f"/chains/{cid}", headers=provider), 404, "not-found")
        problem(client.get(f"/persons/{pid}", headers=provider), 404, "not-found")
        problem(client.get(f"/chains/{cid}/events", headers=provider), 404, "not-found")
        assert ok(client.post("/persons/search", json={"family_name": "Nowak", "given_names": "Ewa",
                                                       "birth_date": "1991-02-03"}, headers=provider)) == []
    assert step(eu_chain, "language_course")["assigned_organisation_id"] is None

    finish(client, auth("wittmar_buergerbuero", "clerk"), cid, "registration")
    c = finish(client, auth("bamf_ast", "clerk"), cid, "course_admission")
    course = step(c, "language_course")
    assert course["state"] == "ready"
    # The nearest course provider serving Wittmar (the Kreis's VHS before the language school).
    assert course["assigned_organisation_id"] == world.organisations["ennetal_vhs"]
    assert listed(client, vhs) == [cid]
    assert "start" in step(get_chain(client, vhs, cid), "language_course")["allowed_actions"]
    record = ok(client.get(f"/persons/{pid}", headers=vhs))
    assert record["fields"]["family_name"] == "Nowak"  # by statute for the course
    # The other course provider still learns nothing.
    assert listed(client, school) == []
    problem(client.get(f"/persons/{pid}", headers=school), 404, "not-found")
    # The assignment is recorded in the step's events.
    ready = [e for e in events(client, ki, cid) if e["step_key"] == "language_course"]
    assert ready[-1]["action"] == "make_ready"
    assert ready[-1]["organisation_id"] == world.organisations["ennetal_vhs"]


def test_owning_a_kind_of_step_somewhere_reveals_nothing(client, auth, ki, world, eu_chain):
    """The Gesundheitsamt, the BAMF, the Jobcenter and the Schulamt own steps of this template;
    none of them is involved at the start."""
    cid, pid = eu_chain["id"], eu_chain["person_id"]
    for org in ("ennetal_gesundheitsamt", "bamf_ast", "ennetal_jobcenter", "ennetal_schulamt",
                "ennetal_abh", "ennetal_agentur", "ennetal_mso", "ennetal_anerkennung"):
        headers = auth(org, "clerk")
        assert listed(client, headers) == [], org
        same_404(client.get(f"/chains/{cid}", headers=headers), client.get(f"/chains/{RANDOM_ID}", headers=headers))
        same_404(client.get(f"/persons/{pid}", headers=headers), client.get(f"/persons/{RANDOM_ID}", headers=headers))
    # The Bürgerbüro's step is ready: it is involved.
    assert listed(client, auth("wittmar_buergerbuero", "clerk")) == [cid]


def outsider_requests(client, headers, real: dict[str, str], fake: dict[str, str]):
    """Every route that takes the id of a person, chain, handover or consent, with a body that
    would fail a later check (stale version, wrong state) if scope were not checked first."""
    def calls(ids):
        c, p = ids["chain"], ids["person"]
        yield client.get(f"/persons/{p}", headers=headers)
        yield client.patch(f"/persons/{p}", json={"fields": {"phone": "+49 2302 999999"}}, headers=headers)
        yield client.get(f"/persons/{p}/consents", headers=headers)
        yield client.post(f"/persons/{p}/consents", json={
            "recipients": [{"organisation_id": 1}], "categories": ["residence"], "purpose": "case_management",
            "consequences_explained": True, "evidence_reference": "EW-X-1", "language": "Deutsch"}, headers=headers)
        yield client.post("/chains", json={"person_id": p, "template_key": "eu_newcomer"}, headers=headers)
        yield client.get(f"/chains/{c}", headers=headers)
        yield client.get(f"/chains/{c}/events", headers=headers)
        yield client.post(f"/chains/{c}/steps/registration/actions",
                          json={"action": "start", "expected_version": 99}, headers=headers)
        yield client.post(f"/chains/{c}/steps/registration/actions",
                          json={"action": "complete", "expected_version": 1}, headers=headers)
        yield client.post(f"/chains/{c}/close", json={"reason": "other", "expected_version": 99}, headers=headers)
        yield client.post(f"/chains/{c}/steps/language_course/assignment",
                          json={"organisation_id": 1, "expected_version": 99}, headers=headers)
        yield client.post(f"/chains/{c}/handovers", json={"kind": "step", "step_key": "registration"},
                          headers=headers)
        yield client.get("/handovers/incoming", params={"chain_id": c}, headers=headers)
        yield client.get(f"/handovers/{ids['handover']}", headers=headers)
        yield client.post(f"/handovers/{ids['handover']}/actions",
                          json={"action": "acknowledge", "expected_version": 99}, headers=headers)
        yield client.post(f"/consents/{ids['consent']}/withdraw", json={}, headers=headers)
    return zip(calls(real), calls(fake), strict=True)


@pytest.mark.parametrize("org, roles", [
    ("hagenau_ki", ("case_manager",)),
    ("ennetal_caritas", ("case_manager",)),
    ("ennetal_gesundheitsamt", ("case_manager", "clerk")),
    ("hattenberg_sozialamt", ("case_manager", "clerk")),
    ("ennetal_sprachschule", ("clerk", "case_manager")),
])
def test_every_route_with_an_id_answers_an_outsider_like_a_random_id(client, auth, ki, world, eu_chain,
                                                                     org, roles):
    cid, pid = eu_chain["id"], eu_chain["person_id"]
    h = ok(handover(client, ki, cid, kind="step", step_key="language_course"), 201)
    consent = ok(client.get(f"/persons/{pid}/consents", headers=ki))[0]["id"]
    real = {"chain": cid, "person": pid, "handover": h["id"], "consent": consent}
    fake = {"chain": RANDOM_ID, "person": RANDOM_ID, "handover": RANDOM_ID, "consent": RANDOM_ID}
    headers = auth(org, *roles)
    for a, b in outsider_requests(client, headers, real, fake):
        if a.request.url.path.startswith("/handovers/incoming"):
            assert ok(a)["items"] == [] and ok(b)["items"] == []
            continue
        assert a.status_code == b.status_code, (a.request.method, a.request.url.path, a.text, b.text)
        if a.status_code == 404:
            same_404(a, b)
        else:  # refused before scope by the role alone, alike for both
            assert a.status_code == 403 and a.json()["type"] == b.json()["type"] == "/problems/forbidden"
    # Nothing changed.
    after = get_chain(client, ki, cid)
    assert after["version"] == eu_chain["version"]


def test_withdrawing_a_foreign_consent_names_only_the_consent(client, auth, ki, world, eu_chain):
    consent = ok(client.get(f"/persons/{eu_chain['person_id']}/consents", headers=ki))[0]["id"]
    body = problem(client.post(f"/consents/{consent}/withdraw", json={},
                               headers=auth("hagenau_ki", "case_manager")), 404, "not-found")
    assert body["resource"] == "consent" and body["id"] == consent
    assert eu_chain["person_id"] not in body["detail"]


def test_a_step_handover_receiver_is_involved_while_it_waits(client, auth, ki, world, eu_chain):
    cid, pid = eu_chain["id"], eu_chain["person_id"]
    abh = auth("ennetal_abh", "clerk")
    problem(client.get(f"/persons/{pid}", headers=abh), 404, "not-found")
    h = ok(handover(client, ki, cid, kind="step", step_key="freizuegigkeit"), 201)
    assert ok(client.get(f"/persons/{pid}", headers=abh))["fields"]["family_name"] == "Nowak"
    assert listed(client, abh) == [cid]
    rejected = ok(respond(client, abh, h["id"], "reject", reason="Zuständigkeit liegt bei der Stadt"))
    assert rejected["state"] == "rejected"
    # It answered: its part ended. It still reads its own handover, but nothing of the person's.
    again = ok(client.get(f"/handovers/{h['id']}", headers=abh))
    assert again["package"]["values"] is None
    assert listed(client, abh) == []
    record = ok(client.get(f"/persons/{pid}", headers=abh))
    assert record["fields"] == {}
    assert all("ended" in r["reason"] for r in record["redacted"])
    problem(client.patch(f"/persons/{pid}", json={"fields": {"phone": "1"}}, headers=abh), 403,
            "involvement-ended")


def test_an_acknowledged_step_handover_assigns_the_step(client, auth, ki, world, eu_chain):
    cid = eu_chain["id"]
    school = auth("ennetal_sprachschule", "clerk")
    finish(client, auth("wittmar_buergerbuero", "clerk"), cid, "registration")
    h = ok(handover(client, ki, cid, kind="step", step_key="language_course",
                    receiver_organisation_id=world.organisations["ennetal_sprachschule"]), 201)
    ok(respond(client, school, h["id"], "acknowledge"))
    c = get_chain(client, ki, cid)
    assert step(c, "language_course")["assigned_organisation_id"] == world.organisations["ennetal_sprachschule"]
    assert step(c, "language_course")["state"] == "planned"
    # Assigned but still planned: not involved yet (involvement starts when the step is ready).
    assert listed(client, school) == []
    finish(client, auth("bamf_ast", "clerk"), cid, "course_admission")
    assert listed(client, school) == [cid]
    assert listed(client, auth("ennetal_vhs", "clerk")) == []
    kinds = [(e["kind"], e["organisation_id"]) for e in events(client, ki, cid) if e["step_key"] == "language_course"]
    assert ("step_assigned", world.organisations["ennetal_sprachschule"]) in kinds


def test_only_the_case_management_assigns_a_step_and_only_to_an_office_that_may_do_it(
        client, auth, ki, world, eu_chain):
    cid = eu_chain["id"]
    buergerbuero = auth("wittmar_buergerbuero", "clerk")
    c = acted(client, buergerbuero, cid, "registration", "start")
    assert step(c, "registration")["assigned_organisation_id"] == world.organisations["wittmar_buergerbuero"]

    def assign(headers, org_key: str, **extra: Any):
        return client.post(f"/chains/{cid}/steps/registration/assignment",
                           json={"organisation_id": world.organisations[org_key], **extra}, headers=headers)

    problem(assign(buergerbuero, "ennetal_vhs"), 403, "wrong-organisation")
    for wrong in ("ennetal_vhs",  # another kind
                  "hattenberg_buergerbuero",  # the right kind, not serving Wittmar
                  "hagenau_buergerbuero",  # another Kreis
                  "wittmar_buergerbuero"):  # already assigned
        body = problem(assign(ki, wrong), 422, "validation-error")
        assert body["errors"][0]["field"] == "body.organisation_id"
    problem(assign(ki, "wittmar_buergerbuero", expected_version=1), 409, "version-conflict")
    body = problem(client.post(f"/chains/{cid}/steps/first_interview/assignment",
                               json={"organisation_id": world.organisations["ennetal_caritas"]}, headers=ki),
                   422, "validation-error")
    assert "case management" in body["detail"]
    assert get_chain(client, ki, cid)["version"] == c["version"]


def test_reassignment_moves_involvement(client, auth, ki, world, clock):
    """UMA in Wittmar: the Jugendamt step goes to Wittmar's Jugendamt; the case management gives
    it to the Kreisjugendamt, which is involved from then on; Wittmar's keeps only its history."""
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Rahimi", given_names="Ali",
                        birth_date="2010-05-06")
    chain = started(client, ki, person, "uma")
    key = next(s["key"] for s in chain["steps"] if s["owner"] == "jugendamt" and s["state"] == "ready")
    town, kreis = auth("wittmar_jugendamt", "clerk"), auth("ennetal_jugendamt", "clerk")
    assert step(chain, key)["assigned_organisation_id"] == world.organisations["wittmar_jugendamt"]
    acted(client, town, chain["id"], key, "start")
    assert listed(client, kreis) == []
    clock.advance(hours=1)
    moved = ok(client.post(f"/chains/{chain['id']}/steps/{key}/assignment",
                           json={"organisation_id": world.organisations["ennetal_jugendamt"],
                                 "expected_version": get_chain(client, ki, chain["id"])["version"]}, headers=ki))
    assert step(moved, key)["assigned_organisation_id"] == world.organisations["ennetal_jugendamt"]
    assert listed(client, kreis) == [chain["id"]]
    assert step(get_chain(client, kreis, chain["id"]), key)["allowed_actions"] == ["complete", "block"]
    # Wittmar's Jugendamt: its part has ended.
    assert listed(client, town) == []
    former = get_chain(client, town, chain["id"])
    assert former["access"] == "former"
    assert all(s["allowed_actions"] == [] for s in former["steps"])
    problem(act_on(client, town, chain["id"], key, "complete"), 403, "involvement-ended")
    clock.advance(hours=1)
    acted(client, kreis, chain["id"], key, "block", reason="Dolmetscher fehlt")
    acted(client, kreis, chain["id"], key, "resume")
    seen = events(client, town, chain["id"])
    assert len(seen) < len(events(client, ki, chain["id"]))
    # Its history ends with the event that gave its step to the Kreis.
    assert seen[-1]["kind"] == "step_assigned" and seen[-1]["step_key"] == key
    assert seen[-1]["previous_organisation_id"] == world.organisations["wittmar_jugendamt"]
    assert step(former, key)["assigned_organisation_id"] == world.organisations["ennetal_jugendamt"]
    done = acted(client, kreis, chain["id"], key, "complete")
    # The next Jugendamt step is again the nearest office's: Wittmar's is involved anew.
    following = next(s for s in done["steps"] if s["owner"] == "jugendamt" and s["state"] == "ready")
    assert following["assigned_organisation_id"] == world.organisations["wittmar_jugendamt"]
    assert get_chain(client, town, chain["id"])["access"] == "current"


def act_on(client, headers, chain_id, key, action, **body):
    return client.post(f"/chains/{chain_id}/steps/{key}/actions", json={"action": action, **body}, headers=headers)


def test_after_a_relocation_the_former_case_management_reads_the_history_up_to_the_move(
        client, auth, world, clock):
    ki = auth("ennetal_ki", "case_manager")
    wittmar_ki = auth("wittmar_ki", "case_manager")
    person = new_person(client, ki, world.jurisdictions["hattenberg"], family_name="Haddad",
                        given_names="Rana", birth_date="1990-04-01")
    chain = started(client, ki, person)
    cid, pid = chain["id"], person["id"]
    acted(client, auth("hattenberg_sozialamt", "clerk"), cid, "arrival_assignment", "start")
    h = ok(handover(client, ki, cid, kind="relocation", to_jurisdiction_id=world.jurisdictions["wittmar"]), 201)
    clock.advance(days=1)
    ok(respond(client, wittmar_ki, h["id"], "acknowledge"))
    moved_at = clock.now
    clock.advance(days=1)
    # The new case management writes something new; the old one must not see it.
    ok(client.patch(f"/persons/{pid}", json={"fields": {"phone": "+49 2302 777777"}}, headers=wittmar_ki))
    c = get_chain(client, wittmar_ki, cid)
    assert c["access"] == "current"
    assert c["case_management_organisation_id"] == world.organisations["wittmar_ki"]
    # The Sozialamt step moved to Wittmar's Sozialamt; Hattenberg's keeps only its history.
    assert step(c, "arrival_assignment")["assigned_organisation_id"] == world.organisations["wittmar_sozialamt"]
    acted(client, auth("wittmar_sozialamt", "clerk"), cid, "arrival_assignment", "complete")

    old = get_chain(client, ki, cid)
    assert old["access"] == "former" and ts(old["history_until"]) == moved_at
    assert old["lead_jurisdiction_id"] == world.jurisdictions["hattenberg"]
    assert old["case_management_organisation_id"] == world.organisations["ennetal_ki"]
    assert step(old, "arrival_assignment")["state"] == "in_progress"
    assert all(s["allowed_actions"] == [] for s in old["steps"])
    timeline = events(client, ki, cid)
    assert "lead_moved" in [e["kind"] for e in timeline]
    assert all(ts(e["occurred_at"]) <= moved_at for e in timeline)
    assert len(events(client, wittmar_ki, cid)) > len(timeline)
    # The person: only what the former case management wrote itself, nothing new.
    record = ok(client.get(f"/persons/{pid}", headers=ki))
    assert record["fields"]["family_name"] == "Haddad"
    assert "phone" not in record["fields"]
    assert ok(client.get(f"/persons/{pid}", headers=wittmar_ki))["fields"]["phone"] == "+49 2302 777777"
    # And it changes nothing any more.
    problem(client.patch(f"/persons/{pid}", json={"fields": {"phone": "+49 2302 1"}}, headers=ki), 403,
            "involvement-ended")
    problem(client.post(f"/chains/{cid}/close", json={"reason": "other"}, headers=ki), 403, "involvement-ended")
    assert cid not in listed(client, ki)
    # Hattenberg's Sozialamt never wrote anything: it reads nothing of the person.
    hat = ok(client.get(f"/persons/{pid}", headers=auth("hattenberg_sozialamt", "clerk")))
    assert hat["fields"] == {}


def test_a_conference_participant_is_involved_while_the_case_is_on_its_open_agenda(client, auth, world):
    ki = auth(*KI)
    mod = auth("ennetal_ki", "moderator")
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Osman",
                        given_names="Amina", birth_date="1988-01-01")
    ok(client.post(f"/persons/{person['id']}/consents", json={
        "recipients": [{"organisation_id": world.organisations[k]} for k in ("ennetal_ki", "ennetal_jobcenter")],
        "categories": ["case_notes"], "purpose": "case_conference", "consequences_explained": True,
        "evidence_reference": "EW-FK-7", "language": "Somali"}, headers=ki), 201)
    chain = started(client, ki, person)
    jc = auth("ennetal_jobcenter", "clerk")
    conf = ok(client.post("/conferences", json={
        "title": "Fallkonferenz Wittmar", "scheduled_at": "2026-03-10T09:00:00Z",
        "jurisdiction_id": world.jurisdictions["wittmar"],
        "participant_organisation_ids": [world.organisations["ennetal_jobcenter"]]}, headers=mod), 201)
    ok(client.post(f"/conferences/{conf['id']}/phase", json={"phase": "case_phase"}, headers=mod))
    problem(client.get(f"/chains/{chain['id']}", headers=jc), 404, "not-found")
    ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": chain["id"]}, headers=mod))
    assert get_chain(client, jc, chain["id"])["access"] == "current"
    ok(client.post(f"/conferences/{conf['id']}/phase", json={"phase": "closed"}, headers=mod))
    assert get_chain(client, jc, chain["id"])["access"] == "former"
    assert listed(client, jc) == []


# --- areas of officers and administrators ----------------------------------------------------


def test_data_protection_officers_see_their_own_area(client, auth, world):
    ki = auth(*KI)
    hagenau = auth("hagenau_ki", "case_manager")
    kreis_person = new_person(client, ki, world.jurisdictions["wittmar"])
    city_person = new_person(client, hagenau, world.jurisdictions["hagenau"])
    kreis_dpo, city_dpo = auth("ennetal_ki", "dpo"), auth("hagenau_ki", "dpo")
    ok(client.get(f"/persons/{kreis_person['id']}/consents", headers=kreis_dpo))
    problem(client.get(f"/persons/{city_person['id']}/consents", headers=kreis_dpo), 404, "not-found")
    ok(client.get(f"/persons/{city_person['id']}/consents", headers=city_dpo))
    problem(client.get(f"/persons/{kreis_person['id']}/consents", headers=city_dpo), 404, "not-found")
    # The Kreis's officer sees what the Kreis's organisations did (its own probe of the city's
    # person included) and what anybody did with the Kreis's persons (the city officer's probe).
    kreis_orgs = {i for k, i in world.organisations.items() if not k.startswith("hagenau") and k != "bamf_ast"}
    kreis_rows = ok(client.get("/audit", params={"limit": 1000}, headers=kreis_dpo))["items"]
    assert kreis_rows
    for r in kreis_rows:
        assert r["agent_organisation_id"] in kreis_orgs or r["person_id"] == kreis_person["id"], r
    assert not any(r["person_id"] == city_person["id"] and r["agent_organisation_id"] not in kreis_orgs
                   for r in kreis_rows)
    assert any(r["subtype"] == "refused.not-found" and r["agent_organisation_id"] == world.organisations["hagenau_ki"]
               for r in kreis_rows)
    city_rows = ok(client.get("/audit", params={"person_id": kreis_person["id"]}, headers=city_dpo))["items"]
    assert [r["subtype"] for r in city_rows] == ["refused.not-found"]  # its own probe only
    assert ok(client.get("/audit", params={"person_id": city_person["id"]}, headers=city_dpo))["items"]
    # A role declared installation-wide sees both.
    wide = auth("ennetal_ki", "dpo_installation")
    ok(client.get(f"/persons/{city_person['id']}/consents", headers=wide))
    rows = ok(client.get("/audit", params={"person_id": city_person["id"]}, headers=wide))["items"]
    assert rows


def test_administrators_manage_contacts_of_their_own_area(client, auth, world):
    kreis_admin, city_admin = auth("ennetal_ki", "admin"), auth("hagenau_ki", "admin")
    org = world.organisations["wittmar_sozialamt"]
    contact = {"role": "lead", "channel": "email", "address": "leitung@soz-wittmar.example.org"}
    ok(client.post(f"/organisations/{org}/contacts", json=contact, headers=kreis_admin), 201)
    same_404(client.get(f"/organisations/{org}/contacts", headers=city_admin),
             client.get("/organisations/999999/contacts", headers=city_admin))
    problem(client.post(f"/organisations/{org}/contacts", json=contact, headers=city_admin), 404, "not-found")
    assert len(ok(client.get(f"/organisations/{org}/contacts", headers=kreis_admin))) == 1


def test_an_involved_office_hands_on_only_its_own_step(client, auth, ki, world, eu_chain):
    """The Bürgerbüro is involved (its registration step is ready), but who does the other steps
    is for the case management to decide."""
    cid = eu_chain["id"]
    bb = auth("wittmar_buergerbuero", "clerk")
    body = problem(handover(client, bb, cid, kind="step", step_key="language_course"), 403, "wrong-organisation")
    assert body["owner"] == "case_management"
    # Its own step it may hand on (here: to nobody else of its kind serving Wittmar).
    problem(handover(client, bb, cid, kind="step", step_key="registration"), 422, "invalid-handover")
    ok(handover(client, ki, cid, kind="step", step_key="language_course"), 201)


def test_refusals_to_former_organisations_are_audited(client, auth, ki, world, eu_chain):
    cid, pid = eu_chain["id"], eu_chain["person_id"]
    bb = auth("wittmar_buergerbuero", "clerk", user="bb.clerk")
    finish(client, bb, cid, "registration")
    problem(client.patch(f"/persons/{pid}", json={"fields": {"phone": "1"}}, headers=bb), 403, "involvement-ended")
    rows = ok(client.get("/audit", params={"user": "bb.clerk", "outcome": "denied"},
                         headers=auth("ennetal_ki", "dpo")))["items"]
    assert [(r["subtype"], r["entity_type"], r["person_id"]) for r in rows] == [
        ("refused.involvement-ended", "person", pid)]
