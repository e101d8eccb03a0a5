"""Handovers as their users meet them: the KI hands a step to the ABH, the Sozialamt hands the
benefits to the Jobcenter (Rechtskreiswechsel), a family moves from Hattenberg to Wittmar; the
receiver sees exactly the data package the law and consent allow, acknowledges or rejects, and
inboxes show what is waiting, overdue first.
"""

from __future__ import annotations

from typing import Any

from http_helpers import ok, problem, ts
from test_api import acted, new_person, started

KI = ("ennetal_ki", "case_manager")
ABH = ("ennetal_abh", "clerk")
JC = ("ennetal_jobcenter", "clerk")
SOZ = ("wittmar_sozialamt", "clerk")


def handover(client, headers, chain_id: str, **body: Any):
    return client.post(f"/chains/{chain_id}/handovers", json=body, headers=headers)


def respond(client, headers, handover_id: str, action: str, **body: Any):
    return client.post(f"/handovers/{handover_id}/actions", json={"action": action, **body}, headers=headers)


def walk_to(client, auth, chain_id: str, steps: list[tuple[str, str]]) -> None:
    """Start and complete each (owner org, step) in order."""
    for org, step in steps:
        h = auth(org, "clerk") if org != "ennetal_ki" else auth(*KI)
        acted(client, h, chain_id, step, "start")
        acted(client, h, chain_id, step, "complete")


def test_step_handover_package_and_acknowledgement(client, auth, world, clock):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Haddad",
                        given_names="Rana", birth_date="1990-04-01")
    chain = started(client, ki, person)
    h = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    assert h["state"] == "requested"
    assert h["receiver"]["id"] == world.organisations["ennetal_abh"]
    assert h["sender"]["id"] == world.organisations["ennetal_ki"]
    assert h["working_days"] == 5
    # Requested on Monday 2 March 2026: five working days later is Monday 9 March.
    assert h["due_date"] == "2026-03-09"
    assert not h["overdue"]
    # The ABH may see identity and residence by statute (§ 86 AufenthG); not the health notes.
    package = h["package"]
    assert {"family_name", "residence_status"} <= set(package["fields"])
    assert "health_notes" in {r["field"] for r in package["redacted"]}
    assert package["legal_bases"]["family_name"] == "statute:abh_residence"

    abh = auth(*ABH)
    inbox = ok(client.get("/handovers/incoming", headers=abh))
    assert [i["id"] for i in inbox["items"]] == [h["id"]]
    assert inbox["counts"]["requested"] == 1
    seen = ok(client.get(f"/handovers/{h['id']}", headers=abh))
    assert seen["package"]["values"]["family_name"] == "Haddad"
    assert "health_notes" not in seen["package"]["values"]

    clock.advance(days=2)
    done = ok(respond(client, abh, h["id"], "acknowledge"))
    assert done["state"] == "acknowledged"
    assert done["waiting_calendar_days"] == 2 and done["waiting_working_days"] == 2
    assert [e["action"] for e in done["events"]] == ["request", "acknowledge"]
    assert ok(client.get("/handovers/incoming", headers=abh))["items"] == []
    problem(respond(client, abh, h["id"], "acknowledge"), 409, "handover-not-pending")


def test_only_the_receiver_acknowledges_and_reject_needs_reason(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    chain = started(client, ki, person)
    h = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    problem(respond(client, ki, h["id"], "acknowledge"), 403, "wrong-organisation")
    problem(respond(client, auth(*ABH), h["id"], "reject"), 422, "reason-required")
    problem(respond(client, auth(*ABH), h["id"], "withdraw"), 403, "wrong-organisation")
    problem(respond(client, auth("hagenau_abh", "clerk"), h["id"], "acknowledge"), 404, "not-found")
    rejected = ok(respond(client, auth(*ABH), h["id"], "reject", reason="Zuständig ist Hagenau"))
    assert rejected["state"] == "rejected" and rejected["response_reason"] == "Zuständig ist Hagenau"
    again = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
    problem(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 409,
            "handover-pending")
    assert ok(respond(client, ki, again["id"], "withdraw"))["state"] == "withdrawn"


def test_rechtskreiswechsel_completes_the_sending_step_only_on_acknowledgement(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"])
    chain = started(client, ki, person)
    walk_to(client, auth, chain["id"], [("wittmar_sozialamt", "arrival_assignment")])
    soz = auth(*SOZ)
    acted(client, soz, chain["id"], "asylblg_subsistence", "start")
    h = ok(handover(client, soz, chain["id"], kind="rechtskreiswechsel", step_key="asylblg_subsistence",
                    to_step_key="sgb2_application", benefit_regime="sgb_ii"), 201)
    assert h["receiver"]["id"] == world.organisations["ennetal_jobcenter"]
    assert h["working_days"] == 10
    # The Rechtskreis before and after, for the offices handing the benefits on (both may read
    # benefits by statute).
    assert h["benefit_regime_from"] == "asylblg" and h["benefit_regime_to"] == "sgb_ii"
    # The Sozialamt may not end its benefits while the Jobcenter has not taken over.
    problem(client.post(f"/chains/{chain['id']}/steps/asylblg_subsistence/actions",
                        json={"action": "complete"}, headers=soz), 409, "handover-pending")
    ok(respond(client, auth(*JC), h["id"], "acknowledge"))
    after = ok(client.get(f"/chains/{chain['id']}", headers=ki))
    steps = {s["key"]: s for s in after["steps"]}
    assert steps["asylblg_subsistence"]["state"] == "completed"
    person_now = ok(client.get(f"/persons/{person['id']}", headers=auth(*JC)))
    assert person_now["fields"]["benefit_regime"] == "sgb_ii"


def test_relocation_moves_the_lead_and_reevaluates_consent(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["hattenberg"])
    chain = started(client, ki, person)
    h = ok(handover(client, ki, chain["id"], kind="relocation",
                    to_jurisdiction_id=world.jurisdictions["wittmar"]), 201)
    assert h["receiver"]["id"] == world.organisations["wittmar_ki"]
    # The intake consent named the integration centres serving Hattenberg: not Wittmar's office.
    assert h["consent_review"] and not h["consent_review"][0]["covers_receiver"]
    assert h["consent_review"][0]["covered_sender"]
    assert "residence_status" in {r["field"] for r in h["package"]["redacted"]}
    wittmar_ki = auth("wittmar_ki", "case_manager")
    ok(respond(client, wittmar_ki, h["id"], "acknowledge"))
    moved = ok(client.get(f"/chains/{chain['id']}", headers=wittmar_ki))
    assert moved["lead_jurisdiction_id"] == world.jurisdictions["wittmar"]
    assert moved["case_management_organisation_id"] == world.organisations["wittmar_ki"]
    timeline = ok(client.get(f"/chains/{chain['id']}/events", headers=wittmar_ki))
    moved_event = next(e for e in timeline if e["kind"] == "lead_moved")
    assert "Hattenberg" in moved_event["reason"]
    assert moved_event["previous_organisation_id"] == world.organisations["ennetal_ki"]  # who handed over
    assert moved_event["organisation_id"] == world.organisations["wittmar_ki"]


def test_overdue_first_then_by_due_date(client, auth, world, clock):
    ki = auth(*KI)
    ids = []
    for _ in range(3):
        person = new_person(client, ki, world.jurisdictions["wittmar"])
        chain = started(client, ki, person)
        ids.append(ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)["id"])
        clock.advance(days=1)
    clock.advance(days=6)
    inbox = ok(client.get("/handovers/incoming", headers=auth(*ABH)))
    assert [i["id"] for i in inbox["items"]] == ids
    assert [i["overdue"] for i in inbox["items"]] == [True, True, False]
    assert inbox["counts"]["overdue"] == 2
    outgoing = ok(client.get("/handovers/outgoing?overdue=true", headers=ki))
    assert [i["id"] for i in outgoing["items"]] == ids[:2]
    first = ok(client.get("/handovers/incoming?limit=2", headers=auth(*ABH)))
    rest = ok(client.get(f"/handovers/incoming?limit=2&cursor={first['next_cursor']}", headers=auth(*ABH)))
    assert [i["id"] for i in first["items"] + rest["items"]] == ids
    assert ts(inbox["items"][0]["due_at"]) < ts(inbox["items"][2]["due_at"])


def test_report_waiting_times_in_sql_equal_the_python_percentiles(client, auth, world, clock, session_factory):
    """The steering report computes waiting-time percentiles in PostgreSQL; they must equal the
    documented interpolation of disclosure.percentile_or_none (used on SQLite)."""
    from casemgmt.steering import report

    ki = auth(*KI)
    for days in (0, 1, 3, 4, 9):
        person = new_person(client, ki, world.jurisdictions["wittmar"])
        chain = started(client, ki, person)
        h = ok(handover(client, ki, chain["id"], kind="step", step_key="residence_permit"), 201)
        clock.advance(days=days)
        ok(respond(client, auth(*ABH), h["id"], "acknowledge"))
    with session_factory() as session:
        area = report.resolve_area(session, world.jurisdictions["kreis_ennetal"])
        in_sql, quarters_sql = report.waiting_figures(session, area)
        pairs, quarters = report.waiting_times(session, area)
        in_python = {key: report._figures_of(group) for key, group in pairs.items()}
        assert in_sql == in_python
        assert quarters_sql == {q: report._figures_of(g) for q, g in quarters.items()}
        pair = in_sql[("kommunales_integrationszentrum", "auslaenderbehoerde")]
        assert pair.persons == 5 and pair.working_median is not None


def test_relocation_writes_a_person_audit_row_with_its_basis(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["hattenberg"])
    chain = started(client, ki, person)
    h = ok(handover(client, ki, chain["id"], kind="relocation",
                    to_jurisdiction_id=world.jurisdictions["wittmar"]), 201)
    ok(respond(client, auth("wittmar_ki", "case_manager"), h["id"], "acknowledge"))
    trail = ok(client.get("/audit", params={"person_id": person["id"]}, headers=auth("ennetal_ki", "dpo")))
    rows = trail["items"] if isinstance(trail, dict) else trail
    moved = [r for r in rows if r["subtype"] == "person.relocate"]
    assert len(moved) == 1
    assert moved[0]["fields"] == ["lead_jurisdiction_id"]
    assert moved[0]["legal_bases"] == {"lead_jurisdiction_id": f"handover:{h['id']}"}
