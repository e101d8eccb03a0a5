"""Every refused request of an authenticated user leaves a denied row in the audit trail: a
probe for a person outside the record scope, a role without the permission, an action on
another organisation's step."""

from __future__ import annotations

from test_api import act, new_person, problem, started


def _denied(client, auth, **params):
    dpo = auth("ennetal_ki", "dpo")
    page = client.get("/audit", params={"outcome": "denied", "limit": 1000, **params}, headers=dpo)
    assert page.status_code == 200, page.text
    return [row for row in page.json()["items"] if row["subtype"].startswith("refused.")]


def test_probing_a_person_outside_the_scope_is_audited(client, auth, world):
    person = new_person(client, auth("ennetal_ki", "case_manager"), world.jurisdictions["wittmar"])
    prober = auth("hagenau_abh", "clerk", user="clerk.hagenau")
    problem(client.get(f"/persons/{person['id']}", headers=prober), 404, "not-found")
    rows = _denied(client, auth, person_id=person["id"])
    assert [(r["agent_user"], r["subtype"], r["action"]) for r in rows] == [
        ("clerk.hagenau", "refused.not-found", "R")]
    assert rows[0]["agent_organisation_id"] == world.organisations["hagenau_abh"]
    assert rows[0]["fields"] == [] and rows[0]["legal_bases"] == {}


def test_a_role_without_the_permission_is_audited(client, auth, world):
    steering = auth("ennetal_ki", "steering", user="lg.member")
    problem(client.get("/chains", headers=steering), 403, "forbidden")
    rows = _denied(client, auth, user="lg.member")
    assert [(r["subtype"], r["entity_type"]) for r in rows] == [("refused.forbidden", "endpoint")]
    assert "chains.read" in rows[0]["detail"]


def test_acting_on_another_organisations_step_is_audited(client, auth, world):
    cm = auth("ennetal_ki", "case_manager")
    chain = started(client, cm, new_person(client, cm, world.jurisdictions["wittmar"]))
    # Involved (the Bürgerbüro's step of an EU chain would be; here the case management itself),
    # but the step is another organisation's.
    nosy = auth("ennetal_ki", "case_manager", user="cm.nosy")
    problem(act(client, nosy, chain["id"], "arrival_assignment", "start"), 403, "wrong-organisation")
    rows = _denied(client, auth, user="cm.nosy")
    assert [r["subtype"] for r in rows] == ["refused.wrong-organisation"]
    assert chain["id"] in rows[0]["detail"]
    # Not involved at all: refused as not found, and audited as a probe of the chain.
    intruder = auth("ennetal_jobcenter", "clerk", user="jc.clerk")
    problem(act(client, intruder, chain["id"], "arrival_assignment", "start"), 404, "not-found")
    rows = _denied(client, auth, user="jc.clerk")
    assert [(r["subtype"], r["entity_type"], r["entity_id"]) for r in rows] == [
        ("refused.not-found", "chain", chain["id"])]


def test_unknown_reference_data_is_not_case_data(client, auth):
    cm = auth("ennetal_ki", "case_manager", user="cm.curious")
    problem(client.get("/templates/no_such_template", headers=cm), 404, "not-found")
    assert _denied(client, auth, user="cm.curious") == []
