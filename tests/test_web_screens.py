"""The screens without a browser (TestClient): the main walk of the case manager and the clerks,
what each screen shows, refusals as pages, and record scope by URL."""

from __future__ import annotations

import re

from web_helpers import INTAKE, browser_of, csrf_of, demo_app, form_post  # noqa: F401 (fixtures)


def _id_from(location: str, prefix: str) -> str:
    found = re.match(rf"{prefix}/([0-9a-f-]{{36}})", location)
    assert found, location
    return found.group(1)


def register_and_start(cm, world) -> tuple[str, str]:
    data = {**INTAKE, "lead_jurisdiction_id": str(world.jurisdictions["wittmar"])}
    resp = form_post(cm, "/ui/personen/neu", "/ui/personen/neu", data)
    person_id = _id_from(resp.headers["location"], "/ui/personen")
    resp = form_post(cm, f"/ui/personen/{person_id}", f"/ui/personen/{person_id}/ketten",
                     {"template_key": "refugee_recognised"})
    return person_id, _id_from(resp.headers["location"], "/ui/ketten")


def step_action(client, chain_id: str, step: str, action: str, **extra: str):
    page = client.get(f"/ui/ketten/{chain_id}").text
    version = re.search(r'name="expected_version" value="(\d+)"', page).group(1)
    return client.post(f"/ui/ketten/{chain_id}/schritte/{step}",
                       data={"csrf_token": csrf_of(page), "action": action, "expected_version": version, **extra},
                       follow_redirects=False)


def test_case_manager_and_clerks_walk_the_main_flow(browser_of, world):
    cm = browser_of("cm.ennetal")
    person_id, chain_id = register_and_start(cm, world)
    person = cm.get(f"/ui/personen/{person_id}").text
    assert "Beispiel" in person and "01.04.1990" in person and "EW-2026-001" in person
    assert "Was Ihnen vorenthalten wird" in person
    assert "Meine Fälle" in cm.get("/ui/faelle").text

    soz = browser_of("soz.wittmar")
    # The Sozialamt finds the first step in "Meine Schritte", with what it may do.
    steps = soz.get("/ui/schritte").text
    assert f"/ui/ketten/{chain_id}#schritt-arrival_assignment" in steps and "Beginnen" in steps
    assert step_action(soz, chain_id, "arrival_assignment", "start").status_code == 303
    assert step_action(soz, chain_id, "arrival_assignment", "complete").status_code == 303
    assert step_action(soz, chain_id, "asylblg_subsistence", "start").status_code == 303
    # Blocking needs a reason: refused with the error summary at the field, nothing changed.
    refused = step_action(soz, chain_id, "asylblg_subsistence", "block")
    assert refused.status_code == 422 and 'href="#feld-schritt-asylblg_subsistence-block-reason"' in refused.text
    resp = form_post(soz, f"/ui/ketten/{chain_id}", f"/ui/ketten/{chain_id}/uebergaben",
                     {"kind": "rechtskreiswechsel", "step_key": "asylblg_subsistence",
                      "to_step_key": "sgb2_application", "benefit_regime": "sgb_ii"})
    handover_id = _id_from(resp.headers["location"], "/ui/uebergaben")

    jc = browser_of("jc.ennetal")
    inbox = jc.get("/ui/posteingang").text
    assert f"/ui/uebergaben/{handover_id}" in inbox and "Rechtskreiswechsel" in inbox
    page = jc.get(f"/ui/uebergaben/{handover_id}").text
    assert "Datenpaket" in page and "Beispiel" in page
    resp = form_post(jc, f"/ui/uebergaben/{handover_id}", f"/ui/uebergaben/{handover_id}",
                     {"action": "acknowledge"})
    assert "Bestätigt" in jc.get(resp.headers["location"]).text
    chain = cm.get(f"/ui/ketten/{chain_id}").text
    assert "Rechtskreiswechsel" in chain and "Erledigt" in chain
    # The Sozialamt's step is completed by the acknowledgement, so it left its list.
    assert f"/ui/ketten/{chain_id}#schritt-asylblg_subsistence" not in soz.get("/ui/schritte").text


def test_intake_form_errors_are_summarised_and_linked_to_fields(browser_of, world):
    cm = browser_of("cm.ennetal")
    data = {**INTAKE, "lead_jurisdiction_id": str(world.jurisdictions["wittmar"]), "birth_date": "31.02.1990",
            "recipients": [], "consequences_explained": ""}
    resp = form_post(cm, "/ui/personen/neu", "/ui/personen/neu", data, expect=422)
    for field in ("birth_date", "recipients", "consequences_explained"):
        assert f'href="#feld-{field}"' in resp.text and f'id="feld-{field}"' in resp.text
    assert "TT.MM.JJJJ" in resp.text
    assert cm.get("/ui/faelle").status_code == 200


def test_clerk_of_another_organisation_gets_404_by_url(browser_of, world):
    cm = browser_of("cm.ennetal")
    person_id, chain_id = register_and_start(cm, world)
    abh = browser_of("abh.ennetal")  # not involved yet: the Sozialamt acts first
    jc = browser_of("jc.ennetal")
    for path in (f"/ui/personen/{person_id}", f"/ui/ketten/{chain_id}",
                 "/ui/ketten/00000000-0000-4000-8000-000000000000", "/ui/personen/not-a-uuid"):
        for other in (jc,):
            resp = other.get(path)
            assert resp.status_code == 404 and "Nicht gefunden" in resp.text, path
    assert abh.get(f"/ui/personen/{person_id}").status_code == 404


def test_steering_member_sees_no_case_screens(browser_of, world):
    lg = browser_of("lg.ennetal")
    assert lg.get("/ui/faelle").status_code == 403
    assert lg.get("/ui/posteingang").status_code == 403
