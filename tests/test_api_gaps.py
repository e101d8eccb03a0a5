"""What a client (the web interface) needs and could not get before: who am I, the field
catalogue, a chain's handovers in one call, a paged list of my persons, and a step that shows its
new office once a handover of it is acknowledged."""

from __future__ import annotations

import uuid

from http_helpers import ok, problem
from test_api import get_chain, new_person, started, step
from test_handovers_api import handover, respond

KI = ("ennetal_ki", "case_manager")
ABH = ("ennetal_abh", "clerk")
DPO = ("ennetal_ki", "dpo")


def test_me_names_organisation_roles_purpose_and_permissions(client, auth, world):
    me = ok(client.get("/me", headers=auth(*KI, user="cm-1")))
    assert me["user_id"] == "cm-1"
    assert me["organisation"]["id"] == world.organisations["ennetal_ki"]
    assert me["organisation"]["name"] == "Kommunales Integrationszentrum Kreis Ennetal"
    assert me["organisation"]["jurisdiction_name"] == "Kreis Ennetal"
    assert me["roles"] == [{"key": "case_manager", "title": "Case-Manager/in"}]
    assert me["default_purpose"] == "case_management"
    assert {"persons.create", "chains.start", "consents.record"} <= set(me["permissions"])
    assert me["permissions"] == sorted(me["permissions"])
    steering = ok(client.get("/me", headers=auth("ennetal_ki", "steering", "made_up_role")))
    assert [r["key"] for r in steering["roles"]] == ["steering"]  # unknown roles are ignored
    assert "persons.read" not in steering["permissions"] and "reports.read" in steering["permissions"]
    problem(client.get("/me"), 401, "not-authenticated")


def test_catalogue_lists_fields_with_german_titles_and_categories(client, auth, policies):
    cat = ok(client.get("/catalogue", headers=auth("ennetal_ki", "steering")))
    fields = {f["key"]: f for f in cat["fields"]}
    assert list(fields) == list(policies.data.fields)
    assert fields["family_name"] == {"key": "family_name", "category": "identity", "type": "text",
                                     "title": "Familienname", "max_length": 200, "values": None,
                                     "min": None, "max": None}
    assert fields["gender"]["values"] == ["female", "male", "diverse", "unspecified"]
    categories = {c["key"]: c for c in cat["categories"]}
    assert categories["identity"]["title"] == "Identität"
    assert categories["health"]["special"] and not categories["identity"]["special"]
    assert "years after" in categories["contact"]["retention"]
    assert {f["category"] for f in cat["fields"]} <= set(categories)
    assert "case_management" in {p["key"] for p in cat["purposes"]}
    problem(client.get("/catalogue"), 401, "not-authenticated")


def test_chain_handovers_in_every_state_scope_first(client, auth, world, clock):
    ki, abh = auth(*KI), auth(*ABH)
    chain = started(client, ki, new_person(client, ki, world.jurisdictions["wittmar"]))
    rejected = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    ok(respond(client, abh, rejected["id"], "reject", reason="Zuständig ist Hagenau"))
    clock.advance(hours=1)
    acknowledged = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    ok(respond(client, abh, acknowledged["id"], "acknowledge"))
    clock.advance(hours=1)
    waiting = ok(handover(client, ki, chain["id"], kind="step", step_key="integration_course"), 201)

    listed = ok(client.get(f"/chains/{chain['id']}/handovers", headers=ki))
    assert [(h["id"], h["state"]) for h in listed] == [
        (rejected["id"], "rejected"), (acknowledged["id"], "acknowledged"), (waiting["id"], "requested")]
    assert "package" not in listed[0]  # the summary, as inboxes list it: no personal data
    # The ABH sees the handovers it received, not the one to the course provider.
    assert [h["id"] for h in ok(client.get(f"/chains/{chain['id']}/handovers", headers=abh))] == [
        rejected["id"], acknowledged["id"]]
    # Outsiders: the same 404 for the real chain and a random id.
    other = auth("hagenau_abh", "clerk")
    real = problem(client.get(f"/chains/{chain['id']}/handovers", headers=other), 404, "not-found")
    fake_id = str(uuid.uuid4())
    fake = problem(client.get(f"/chains/{fake_id}/handovers", headers=other), 404, "not-found")
    assert real["detail"].replace(chain["id"], "X") == fake["detail"].replace(fake_id, "X")
    problem(client.get(f"/chains/{chain['id']}/handovers", headers=auth("ennetal_ki", "steering")), 403, "forbidden")
    trail = ok(client.get("/audit", params={"person_id": chain["person_id"]}, headers=auth(*DPO)))["items"]
    assert "chain.handovers" in {e["subtype"] for e in trail}


def test_acknowledged_step_handover_shows_the_new_office_on_the_step(client, auth, world):
    ki = auth(*KI)
    chain = started(client, ki, new_person(client, ki, world.jurisdictions["wittmar"]))
    assert step(chain, "integration_course")["assigned_organisation_id"] is None  # planned: nobody yet
    school = world.organisations["ennetal_sprachschule"]
    h = ok(handover(client, ki, chain["id"], kind="step", step_key="integration_course",
                    receiver_organisation_id=school), 201)
    ok(respond(client, auth("ennetal_sprachschule", "clerk"), h["id"], "acknowledge"))
    after = get_chain(client, ki, chain["id"])
    assert step(after, "integration_course")["assigned_organisation_id"] == school
    assert after["version"] == chain["version"] + 1
    timeline = ok(client.get(f"/chains/{chain['id']}/events", headers=ki))
    assigned = [e for e in timeline if e["kind"] == "step_assigned" and e["step_key"] == "integration_course"]
    assert len(assigned) == 1 and assigned[0]["organisation_id"] == school


def test_person_list_pages_filters_and_discloses_through_the_exit_point(client, auth, world, clock):
    ki = auth(*KI)
    wittmar, other_town = world.jurisdictions["wittmar"], world.jurisdictions["schwelbach"]
    first = new_person(client, ki, wittmar, family_name="Haddad", given_names="Rana", birth_date="1990-04-01")
    clock.advance(minutes=1)
    second = new_person(client, ki, wittmar, family_name="Yilmaz", given_names="Deniz", birth_date="1985-02-03")
    clock.advance(minutes=1)
    third = new_person(client, ki, other_town, family_name="Osman", given_names="Ayaan", birth_date="1979-11-30")
    chain = started(client, ki, first)

    page = ok(client.get("/persons", params={"limit": 2}, headers=ki))
    assert [p["id"] for p in page["items"]] == [third["id"], second["id"]]  # newest registration first
    rest = ok(client.get("/persons", params={"limit": 2, "cursor": page["next_cursor"]}, headers=ki))
    assert [p["id"] for p in rest["items"]] == [first["id"]] and rest["next_cursor"] is None
    # Each item as GET /persons/{id} shows it: the KI may see the name (it wrote it).
    assert rest["items"][0]["fields"]["family_name"] == "Haddad"
    in_town = ok(client.get("/persons", params={"jurisdiction_id": wittmar}, headers=ki))["items"]
    assert {p["id"] for p in in_town} == {first["id"], second["id"]}
    assert [p["id"] for p in ok(client.get("/persons", params={"status": "active"}, headers=ki))["items"]] == [first["id"]]
    no_chain = ok(client.get("/persons", params={"status": "no_chain"}, headers=ki))["items"]
    assert {p["id"] for p in no_chain} == {second["id"], third["id"]}

    # The ABH is involved only once a handover to it waits; it sees only what it may.
    abh = auth(*ABH)
    assert ok(client.get("/persons", headers=abh))["items"] == []
    ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    [seen] = ok(client.get("/persons", headers=abh))["items"]
    assert seen["id"] == first["id"] and seen["fields"]["residence_status"] == "protection_granted"
    assert "health_notes" in {r["field"] for r in seen["redacted"]}
    trail = ok(client.get("/audit", params={"person_id": first["id"]}, headers=auth(*DPO)))["items"]
    assert any(e["subtype"] == "person.list" and e["agent_organisation_id"] == world.organisations["ennetal_abh"]
               for e in trail)

    problem(client.get("/persons", params={"cursor": "not-a-cursor"}, headers=ki), 422, "validation-error")
    problem(client.get("/persons", params={"jurisdiction_id": 2**31 - 1}, headers=ki), 404, "not-found")
    problem(client.get("/persons", headers=auth("ennetal_ki", "steering")), 403, "forbidden")
