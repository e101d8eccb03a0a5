"""Steps agreed in a Fallkonferenz: an agreement adds a step to the case's chain, and the office
that owns it does it like any other step (assignment when ready, actions, deadline, handover),
while the template, the goal clocks and the other chains stay as they were."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from casemgmt.chains.models import Chain
from casemgmt.steering.goals import goal_clocks
from http_helpers import ok, problem
from test_api import acted, events, get_chain, step
from test_conferences_api import KI, MOD, conference, consenting_case, phase

SOZ = ("wittmar_sozialamt", "clerk")
VHS = ("ennetal_vhs", "clerk")


def agreed_case(client, auth, world, *others: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    conf = conference(client, auth, world, *others)
    phase(client, auth, conf["id"], "case_phase")
    chain = consenting_case(client, auth, world, "ennetal_ki", *others)
    conf = ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": chain["id"]}, headers=auth(*MOD)))
    return conf, chain, conf["cases"][0]["id"]


def agreement(case_id: int, owner: int, **over: Any) -> dict[str, Any]:
    return {"conference_case_id": case_id, "text": "Die VHS zieht den Einstufungstest vor",
            "owner_organisation_id": owner, "due_date": "2026-03-20",
            "add_step": {"title": "Einstufungstest vor Kursbeginn", "requires": "arrival_assignment"}} | over


def test_a_conference_adds_a_step_that_the_owning_office_completes(client, auth, world, clock, session_factory,
                                                                     policies):
    conf, chain, case_id = agreed_case(client, auth, world, "ennetal_abh")
    with session_factory() as session:
        clocks_before = {g: goal_clocks(session, policies.goals[g]) for g in policies.goals
                         if policies.goals[g].measure is not None}
    conf = ok(client.post(f"/conferences/{conf['id']}/agreements",
                          json=agreement(case_id, world.organisations["ennetal_vhs"]), headers=auth(*MOD)))
    assert conf["agreements"][0]["added_step_key"] == "agreed_1"
    # The conference ends; from now on the VHS is involved only through the step itself.
    phase(client, auth, conf["id"], "structural_phase")
    phase(client, auth, conf["id"], "closed")

    ki = auth(*KI)
    seen = get_chain(client, ki, chain["id"])
    added = step(seen, "agreed_1")
    assert added["state"] == "planned" and added["owner"] == "course_provider"
    assert added["requires"] == ["arrival_assignment"] and added["assigned_organisation_id"] is None
    assert added["agreed_in"]["conference_id"] == conf["id"]
    assert added["agreed_in"]["conference_title"] == "Fallkonferenz Wittmar November"
    assert added["due_at"] == "2026-03-20T22:59:59Z"  # the end of the day in Germany (CET)
    assert seen["template_version"] == chain["template_version"] and seen["version"] == chain["version"] + 1
    problem(client.get(f"/chains/{chain['id']}", headers=auth(*VHS)), 404, "not-found")

    acted(client, auth(*SOZ), chain["id"], "arrival_assignment", "start")
    after = acted(client, auth(*SOZ), chain["id"], "arrival_assignment", "complete")
    assert step(after, "agreed_1")["state"] == "ready"
    vhs = auth(*VHS)
    mine = get_chain(client, vhs, chain["id"])
    assert step(mine, "agreed_1")["assigned_organisation_id"] == world.organisations["ennetal_vhs"]
    assert step(mine, "agreed_1")["allowed_actions"] == ["start", "block"]
    problem(client.post(f"/chains/{chain['id']}/steps/agreed_1/actions", json={"action": "start"},
                        headers=auth(*SOZ)), 403, "wrong-organisation")
    acted(client, vhs, chain["id"], "agreed_1", "start")
    clock.advance(days=25)  # past the agreed date: the step is overdue and the chain stalled
    late = get_chain(client, vhs, chain["id"])
    assert step(late, "agreed_1")["overdue"] and late["status"] == "stalled"
    done = acted(client, vhs, chain["id"], "agreed_1", "complete")
    assert step(done, "agreed_1")["state"] == "completed"

    timeline = [(e["kind"], e["step_key"], e["action"], e["to_state"]) for e in events(client, ki, chain["id"])
                if e["step_key"] == "agreed_1"]
    assert timeline == [("step_added", "agreed_1", None, "planned"), ("step", "agreed_1", "make_ready", "ready"),
                        ("step", "agreed_1", "start", "in_progress"), ("step", "agreed_1", "complete", "completed")]
    added_event = next(e for e in events(client, ki, chain["id"]) if e["kind"] == "step_added")
    assert "Einstufungstest vor Kursbeginn" in added_event["reason"]
    # The template is unchanged and the goal clocks count as before.
    template = ok(client.get("/templates/refugee_recognised", headers=ki))
    assert "agreed_1" not in [s["key"] for s in template["steps"]]
    with session_factory() as session:
        assert {g: goal_clocks(session, policies.goals[g]) for g in clocks_before} == clocks_before


def test_an_agreed_step_is_handed_over_like_any_other(client, auth, world):
    conf, chain, case_id = agreed_case(client, auth, world, "ennetal_abh")
    ok(client.post(f"/conferences/{conf['id']}/agreements",
                   json=agreement(case_id, world.organisations["ennetal_vhs"], add_step={"title": "Kursplatz sichern"}),
                   headers=auth(*MOD)))
    ki = auth(*KI)
    ready = step(get_chain(client, ki, chain["id"]), "agreed_1")
    assert ready["state"] == "ready" and ready["assigned_organisation_id"] == world.organisations["ennetal_vhs"]
    handover = ok(client.post(f"/chains/{chain['id']}/handovers", json={
        "kind": "step", "step_key": "agreed_1",
        "receiver_organisation_id": world.organisations["ennetal_sprachschule"]}, headers=ki), 201)
    school = auth("ennetal_sprachschule", "clerk")
    ok(client.post(f"/handovers/{handover['id']}/actions", json={"action": "acknowledge"}, headers=school))
    taken = step(get_chain(client, school, chain["id"]), "agreed_1")
    assert taken["assigned_organisation_id"] == world.organisations["ennetal_sprachschule"]
    acted(client, school, chain["id"], "agreed_1", "start")
    # The VHS had the step until it was handed on: it reads its history, it acts no more.
    problem(client.post(f"/chains/{chain['id']}/steps/agreed_1/actions", json={"action": "complete"},
                        headers=auth(*VHS)), 403, "involvement-ended")


def test_agreed_steps_are_checked_before_anything_is_stored(client, auth, world, session_factory):
    conf, chain, case_id = agreed_case(client, auth, world, "ennetal_abh")
    url, vhs = f"/conferences/{conf['id']}/agreements", world.organisations["ennetal_vhs"]
    named = problem(client.post(url, json=agreement(case_id, vhs, add_step={"title": "Haddad zum Test einladen"}),
                                headers=auth(*MOD)), 422, "personal-data-in-text")
    assert named["hits"][0]["kind"] == "name"
    problem(client.post(url, json=agreement(case_id, world.organisations["hagenau_abh"]), headers=auth(*MOD)),
            422, "validation-error")
    problem(client.post(url, json=agreement(case_id, vhs, add_step={"title": "Test", "requires": "no_such_step"}),
                        headers=auth(*MOD)), 422, "validation-error")
    problem(client.post(url, json=agreement(case_id, vhs, due_date="2026-03-01"), headers=auth(*MOD)),
            422, "validation-error")
    problem(client.post(url, json=agreement(case_id, vhs, step_key="integration_course"), headers=auth(*MOD)),
            422, "validation-error")
    seen = ok(client.get(f"/conferences/{conf['id']}", headers=auth(*MOD)))
    assert seen["agreements"] == []
    with session_factory() as session:
        stored = session.scalars(select(Chain).where(Chain.id == chain["id"])).one()
        assert stored.version == chain["version"] and stored.agreed_steps is None


def test_template_keys_cannot_take_the_agreed_prefix(tmp_path):
    from pathlib import Path

    from casemgmt.chains.spec import load_template
    from casemgmt.policy.source import PolicyError

    path = Path(tmp_path) / "t.yaml"
    path.write_text("key: t\nversion: 1\ntitle: T\nsteps:\n  - key: first\n    title: Eins\n    owner: jobcenter\n"
                    "  - key: agreed_2\n    title: Zwei\n    owner: jobcenter\n", encoding="utf-8")
    try:
        load_template(path, ["jobcenter"])
    except PolicyError as exc:
        assert exc.line == 8 and exc.field == "steps[1].key" and "reserved" in exc.message
    else:
        raise AssertionError("a template step took a reserved key")


def test_the_process_mining_export_knows_agreed_steps(client, auth, world, session_factory):
    from casemgmt.steering.ocel import export_ocel

    conf, chain, case_id = agreed_case(client, auth, world, "ennetal_abh")
    ok(client.post(f"/conferences/{conf['id']}/agreements",
                   json=agreement(case_id, world.organisations["ennetal_vhs"], add_step={"title": "Kursplatz sichern"}),
                   headers=auth(*MOD)))
    with session_factory() as session:
        doc, _ = export_ocel(session, min_variant_chains=1)
    types = [e["type"] for e in doc["events"]]
    assert "step added" in types and "step ready" in types
    assert "Kursplatz" not in str(doc)  # titles are free text: they stay out of the log
