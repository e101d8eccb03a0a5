"""The Erstgespräch with a Gesprächsleitfaden: the guide as policy data (checked with file and
line), the suggestions its rules make, and the interview as the case management meets it: answers
written with their fields' legal bases, a suggested chain started in one request with its
first_interview step completed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from casemgmt.interviews.guide import load_guide
from casemgmt.policy.loader import load_policies
from casemgmt.policy.source import PolicyError
from http_helpers import ok, problem
from test_api import acted, events, get_chain, new_person, started, states, step

ROOT = Path(__file__).resolve().parent.parent
POLICIES = load_policies(ROOT / "policies")
GUIDE = POLICIES.interview
KI = ("ennetal_ki", "case_manager")


def interview_consent(world, *categories: str) -> dict[str, Any]:
    """The Schweigepflichtentbindung signed in the interview: the case management and the offices
    it works with (a consent naming only the recorder is refused before a chain runs)."""
    return {"recipients": [{"organisation_id": world.organisations[k]} for k in ("ennetal_ki", "ennetal_agentur")],
            "categories": list(categories), "purpose": "case_management", "consequences_explained": True,
            "evidence_reference": "EW-EG-7", "language": "Französisch", "interpreter_used": True}


def interview(world, answers: dict[str, Any], *categories: str, **over: Any) -> dict[str, Any]:
    body = {"held_on": "2026-03-02", "language": "Französisch", "interpreter_used": True, "answers": answers}
    if categories:
        body["consents"] = [interview_consent(world, *categories)]
    return body | over


EU_ANSWERS = {"residence_status": "eu_free_movement", "children": 2, "vocational_qualification": "Elektriker",
              "german_level": "A2", "own_goals": "Als Elektriker arbeiten und eine Wohnung für die Familie finden."}


# --- the guide -----------------------------------------------------------------------------------


def test_the_shipped_guide_covers_the_topics_of_the_field() -> None:
    assert [key for key, _ in GUIDE.topics] == ["residence", "family", "health", "education_work", "language",
                                                "housing", "benefits", "own_goals"]
    assert GUIDE.questions["own_goals"].field == "own_goals"
    assert POLICIES.data.fields["own_goals"].category == "own_goals"
    assert POLICIES.data.categories["own_goals"].retention_years == 3


def test_rules_suggest_a_template_and_optional_steps() -> None:
    eu = GUIDE.suggest(EU_ANSWERS)
    assert eu.template is not None and eu.template.key == "eu_newcomer" and eu.alternatives == ()
    assert [s.key for s in eu.steps] == ["kita_place", "school_place", "recognition_of_qualifications"]
    family = GUIDE.suggest({"residence_status": "tolerated", "children": 3, "housing_situation": "central_shelter"})
    assert family.template is not None and family.template.key == "tolerated_family"
    assert {s.key for s in family.steps} >= {"family_support", "housing_search"}
    alone = GUIDE.suggest({"residence_status": "tolerated", "children": 0})
    assert alone.template is None and alone.steps == ()
    assert GUIDE.suggest({"psychosocial_support": False}).steps == ()
    assert GUIDE.reason("schutz_anerkannt") == "Schutzstatus anerkannt"


@pytest.mark.parametrize("change, field, message", [
    (("field: children", "field: kinder"), "topics[1].questions[1].field", "'kinder' is not a field"),
    (("answer: integer\n        field: children", "answer: text\n        field: children"),
     "topics[1].questions[1].answer", "takes a integer answer"),
    (("{children: {min: 1}}\n    suggest: {step: kita_place}", "{children: {in: [viele]}}\n    suggest: {step: kita_place}"),
     "rules[3].when.children", "'in' is for answers from a list"),
    (("{residence_status: {in: [eu_free_movement]}}", "{residence_status: {in: [eu]}}"),
     "rules[2].when.residence_status", "'eu' is not an answer"),
    (("suggest: {template: eu_newcomer}", "suggest: {template: uma}"), "rules[2].suggest.template",
     "has no 'first_interview' step"),
    (("suggest: {step: kita_place}", "suggest: {step: work_placement}"), "rules[3].suggest.step",
     "not an optional step"),
    (("when: {vocational_qualification: {answered: true}}", "when: {beruf: {answered: true}}"),
     "rules[5].when.beruf", "not a question of the guide"),
])
def test_a_broken_guide_names_file_line_and_field(tmp_path: Path, change, field, message) -> None:
    path = tmp_path / "interview.yaml"
    text = (ROOT / "policies" / "interview.yaml").read_text(encoding="utf-8")
    assert change[0] in text
    path.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_guide(path, POLICIES.data.fields, POLICIES.templates)
    assert caught.value.path == str(path)
    assert caught.value.line == text[:text.index(change[0])].count("\n") + 1  # the line that was changed
    assert caught.value.field == field and message in caught.value.message


def test_check_policies_refuses_a_broken_guide(tmp_path: Path, monkeypatch, capsys) -> None:
    from casemgmt.cli import main
    from casemgmt.config import get_settings

    copy = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", copy)
    guide = copy / "interview.yaml"
    guide.write_text(guide.read_text(encoding="utf-8").replace("field: own_goals", "field: ziele"), encoding="utf-8")
    monkeypatch.setenv("CASEMGMT_POLICY_DIR", str(copy))
    get_settings.cache_clear()
    try:
        assert main(["check-policies"]) == 2
    finally:
        get_settings.cache_clear()
    assert "interview.yaml:" in capsys.readouterr().err


# --- the interview -------------------------------------------------------------------------------


def test_an_interview_leads_to_a_started_chain(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Mbeki", given_names="Awa",
                        birth_date="1988-06-12")
    held = ok(client.post(f"/persons/{person['id']}/interviews", json=interview(
        world, EU_ANSWERS, "family", "education", "language", "own_goals"), headers=ki), 201)
    assert held["suggested_template"] == {"key": "eu_newcomer", "title": POLICIES.templates["eu_newcomer"].title,
                                          "reasons": ["EU-Freizügigkeit"]}
    assert [(s["key"], s["reasons"]) for s in held["suggested_steps"]] == [
        ("kita_place", ["Kinder im Haushalt"]), ("school_place", ["Kinder im Haushalt"]),
        ("recognition_of_qualifications", ["Im Herkunftsland erworbener Berufsabschluss"])]
    assert held["answered_fields"] == ["children", "german_level", "own_goals", "residence_status",
                                       "vocational_qualification"]
    # The answers are the person's fields, read back through the exit point.
    assert held["record"]["fields"]["own_goals"] == EU_ANSWERS["own_goals"]
    assert ok(client.get(f"/persons/{person['id']}", headers=ki))["fields"]["children"] == 2
    assert held["language"] == "Französisch" and held["interpreter_used"] and held["chain_id"] is None

    chain = ok(client.post(f"/persons/{person['id']}/interviews/{held['id']}/chain", json={}, headers=ki), 201)
    assert chain["template_key"] == "eu_newcomer"
    assert step(chain, "first_interview")["state"] == "completed"
    assert step(chain, "health_insurance")["state"] == "ready"  # it waited for the interview
    timeline = [(e["step_key"], e["action"]) for e in events(client, ki, chain["id"]) if e["kind"] == "step"]
    assert ("first_interview", "start") in timeline and ("first_interview", "complete") in timeline
    listed = ok(client.get(f"/persons/{person['id']}/interviews", headers=ki))
    assert [i["chain_id"] for i in listed] == [chain["id"]] and listed[0]["record"] is None
    problem(client.post(f"/persons/{person['id']}/interviews/{held['id']}/chain", json={}, headers=ki),
            409, "interview-used")


def test_no_basis_no_write_and_nothing_of_the_interview_is_stored(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Okafor", given_names="Ben",
                        birth_date="1992-01-20")
    answers = {"residence_status": "eu_free_movement", "health_notes": "Diabetes", "own_goals": "Pflegefachkraft werden"}
    refused = problem(client.post(f"/persons/{person['id']}/interviews", json=interview(world, answers, "family"),
                                  headers=ki), 403, "no-legal-basis")
    assert {f["field"] for f in refused["fields"]} == {"health_notes", "own_goals"}
    assert ok(client.get(f"/persons/{person['id']}/interviews", headers=ki)) == []
    consents = ok(client.get(f"/persons/{person['id']}/consents", headers=ki))
    assert [sorted(c["categories"]) for c in consents] == [["benefits", "residence"]]  # the interview's was not kept
    record = ok(client.get(f"/persons/{person['id']}", headers=ki))
    assert "own_goals" not in record["fields"]


def test_answers_and_dates_are_checked(client, auth, world, clock):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Sow", given_names="Ida",
                        birth_date="1979-09-09")
    url = f"/persons/{person['id']}/interviews"
    bad = problem(client.post(url, json=interview(world, {"kinderzahl": 2, "children": "zwei"}), headers=ki),
                  422, "validation-error")
    assert {e["field"] for e in bad["errors"]} == {"body.answers.kinderzahl", "body.answers.children"}
    problem(client.post(url, json=interview(world, {"residence_status": "eu_free_movement"}, held_on="2026-03-03"),
                        headers=ki), 422, "validation-error")
    problem(client.post(url, json=interview(world, {}), headers=ki), 422, "validation-error")
    problem(client.post(url, json=interview(world, {"residence_status": "eu_free_movement"}),
                        headers=auth("ennetal_abh", "clerk")), 403, "forbidden")
    # Without a suggestion the case manager names the template.
    held = ok(client.post(url, json=interview(world, {"residence_status": "third_country_permit"}), headers=ki), 201)
    assert held["suggested_template"] is None
    problem(client.post(f"{url}/{held['id']}/chain", json={}, headers=ki), 422, "validation-error")
    problem(client.post(f"{url}/{held['id']}/chain", json={"template_key": "uma"}, headers=ki), 422,
            "validation-error")
    chain = ok(client.post(f"{url}/{held['id']}/chain", json={"template_key": "young_adult"}, headers=ki), 201)
    assert step(chain, "first_interview")["state"] == "completed"


def test_the_interview_completes_the_step_of_a_running_chain_once_it_is_ready(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Haile", given_names="Selam",
                        birth_date="1990-02-02")
    held = ok(client.post(f"/persons/{person['id']}/interviews", json=interview(
        world, {"residence_status": "protection_granted"}), headers=ki), 201)
    assert held["suggested_template"]["key"] == "refugee_recognised"
    url = f"/persons/{person['id']}/interviews/{held['id']}/chain"
    waits = problem(client.post(url, json={}, headers=ki), 409, "illegal-transition")
    assert "waits for registration" in waits["detail"]
    assert ok(client.get("/chains", params={"person_id": person["id"]}, headers=ki))["items"] == []  # nothing started
    chain = started(client, ki, person)
    soz, bb = auth("wittmar_sozialamt", "clerk"), auth("wittmar_buergerbuero", "clerk")
    for key, who in (("arrival_assignment", soz), ("accommodation", soz), ("registration", bb)):
        acted(client, who, chain["id"], key, "start")
        acted(client, who, chain["id"], key, "complete")
    taken = ok(client.post(url, json={}, headers=ki), 201)
    assert taken["id"] == chain["id"] and step(taken, "first_interview")["state"] == "completed"


def test_optional_steps_the_interview_did_not_suggest_can_be_skipped_with_it(client, auth, world):
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name="Mbeki", given_names="Jo",
                        birth_date="1985-05-05")
    held = ok(client.post(f"/persons/{person['id']}/interviews", json=interview(
        world, EU_ANSWERS, "family", "education", "language", "own_goals"), headers=ki), 201)
    chain = ok(client.post(f"/persons/{person['id']}/interviews/{held['id']}/chain",
                           json={"skip_unsuggested_optional_steps": True}, headers=ki), 201)
    skipped = {k for k, v in states(chain).items() if v == "skipped"}
    assert skipped == {"school_health_check", "job_related_german", "sgb2_check", "participation"}
    assert "not suggested by the Erstgespräch of 2026-03-02" == step(chain, "participation")["reason"]
    assert {step(chain, k)["state"] for k in ("kita_place", "school_place", "recognition_of_qualifications")} \
        <= {"planned", "ready"}
    assert get_chain(client, ki, chain["id"])["version"] == chain["version"]
