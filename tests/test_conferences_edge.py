"""Fallkonferenzen and proposals at their edges, as the people who run them would check:

- the moderator: who sees a conference, who may change it, in which phase what is possible;
- the participants: agreements they can read, dots they can give;
- the data protection officer: no case without a legal basis for every organisation at the
  table, agreements encrypted and their reading audited, nothing personal in findings;
- the Lenkungsgruppe: bundling rules, the decision lifecycle, its history and audit trail.

Everything goes through HTTP; the database is only read to check what is stored at rest.
"""

from __future__ import annotations

from typing import Any

import pytest
from http_helpers import ok, problem, ts
from sqlalchemy import text
from test_api import new_person, started
from test_conferences_api import KI, LG, MOD, conference, conference_consent, finding, phase

MISSING = "00000000-0000-4000-8000-000000000000"
ABH_NAME = "Ausländerbehörde Kreis Ennetal"
JOBCENTER_NAME = "Jobcenter Ennetal"
KI_NAME = "Kommunales Integrationszentrum Kreis Ennetal"


# --- helpers ---------------------------------------------------------------------------------


_TOKENS: dict[tuple, dict[str, str]] = {}


@pytest.fixture
def auth(auth):
    """The conftest's ``auth``, each set of headers minted once for this module: minting loads
    the signing key, the slowest part of these tests. Tokens live for hours, the module a minute."""
    cache = _TOKENS

    def headers(org: str, *roles: str, user: str | None = None) -> dict[str, str]:
        key = (org, roles, user)
        if key not in cache:
            cache[key] = auth(org, *roles, user=user)
        return cache[key]

    return headers


def person_case(client, auth, world, *org_keys: str, family_name: str = "Haddad",
                given_names: str = "Rana") -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(person, consent, chain): a person in Wittmar with a conference consent naming
    ``org_keys`` (none if empty) and a running chain."""
    ki = auth(*KI)
    person = new_person(client, ki, world.jurisdictions["wittmar"], family_name=family_name,
                        given_names=given_names, birth_date="1990-04-01")
    consent = None
    if org_keys:
        consent = ok(client.post(f"/persons/{person['id']}/consents",
                                 json=conference_consent(world, *org_keys), headers=ki), 201)
    return person, consent, started(client, ki, person)


def get_conf(client, headers, conf_id: str) -> dict[str, Any]:
    return ok(client.get(f"/conferences/{conf_id}", headers=headers))


def add_case(client, headers, conf_id: str, chain_id: str):
    return client.post(f"/conferences/{conf_id}/cases", json={"chain_id": chain_id}, headers=headers)


def add_finding(client, headers, conf_id: str, **over: Any):
    return client.post(f"/conferences/{conf_id}/findings", json=finding(**over), headers=headers)


def vote(client, headers, conf_id: str, finding_id: str, dots: int):
    return client.put(f"/conferences/{conf_id}/findings/{finding_id}/vote", json={"dots": dots}, headers=headers)


def agreement(case_id: int, owner: int, **over: Any) -> dict[str, Any]:
    return {"conference_case_id": case_id, "text": "Sprachmittlung für den Termin organisieren",
            "owner_organisation_id": owner, "due_date": "2026-03-24"} | over


def audit_items(client, headers, **params: Any) -> list[dict[str, Any]]:
    page = ok(client.get("/audit", params={"limit": 1000, **params}, headers=headers))
    assert page["next_cursor"] is None
    return page["items"]


def structural_conference(client, auth, world, *others: str, cases: int = 1,
                          family_name: str = "Haddad") -> tuple[dict[str, Any], list[int]]:
    """A conference of the KI with ``others``, ``cases`` consenting cases, in the structural phase."""
    conf = conference(client, auth, world, *others)
    phase(client, auth, conf["id"], "case_phase")
    case_ids = []
    for i in range(cases):
        _, _, chain = person_case(client, auth, world, "ennetal_ki", *others, family_name=f"{family_name}{'x' * i}")
        conf = ok(add_case(client, auth(*MOD), conf["id"], chain["id"]))
        case_ids.append(conf["cases"][-1]["id"])
    phase(client, auth, conf["id"], "structural_phase")
    return conf, case_ids


def proposal_act(client, headers, proposal_id: str, action: str, **body: Any):
    return client.post(f"/proposals/{proposal_id}/actions", json={"action": action, **body}, headers=headers)


# --- visibility and roles --------------------------------------------------------------------


def test_only_participants_see_a_conference_and_only_the_moderator_changes_it(client, auth, world):
    conf, (case_id,) = structural_conference(client, auth, world, "ennetal_abh")
    cid = conf["id"]
    conf = ok(add_finding(client, auth(*MOD), cid, conference_case_ids=[case_id]))
    fid = conf["findings"][0]["id"]
    version = conf["version"]
    _, _, other_chain = person_case(client, auth, world, "ennetal_ki", "ennetal_abh", "ennetal_jobcenter",
                                    family_name="Bakr")

    # An organisation that is not at the table: the conference does not exist for it.
    for outsider in (auth("ennetal_jobcenter", "clerk"), auth("ennetal_jobcenter", "moderator"),
                     auth("hagenau_ki", "moderator")):
        body = problem(client.get(f"/conferences/{cid}", headers=outsider), 404, "not-found")
        assert body["resource"] == "conference"
        assert cid not in {c["id"] for c in ok(client.get("/conferences", headers=outsider))}
        problem(vote(client, outsider, cid, fid, 1), 404, "not-found")
    jc_mod = auth("ennetal_jobcenter", "moderator")
    problem(add_case(client, jc_mod, cid, other_chain["id"]), 404, "not-found")
    problem(add_finding(client, jc_mod, cid, conference_case_ids=[case_id]), 404, "not-found")
    problem(client.post(f"/conferences/{cid}/phase", json={"phase": "closed"}, headers=jc_mod), 404, "not-found")
    problem(client.post(f"/conferences/{cid}/participants",
                        json={"organisation_ids": [world.organisations["ennetal_jobcenter"]]}, headers=jc_mod),
            404, "not-found")
    problem(client.post(f"/conferences/{cid}/agreements",
                        json=agreement(case_id, world.organisations["ennetal_jobcenter"]), headers=jc_mod),
            404, "not-found")

    problem(client.get(f"/conferences/{MISSING}", headers=auth(*MOD)), 404, "not-found")

    # A participant that does not moderate may read and vote, not change the conference.
    abh_mod = auth("ennetal_abh", "moderator")
    assert get_conf(client, abh_mod, cid)["id"] == cid
    attempts = [
        add_case(client, abh_mod, cid, other_chain["id"]),
        client.post(f"/conferences/{cid}/agreements",
                    json=agreement(case_id, world.organisations["ennetal_abh"]), headers=abh_mod),
        add_finding(client, abh_mod, cid, conference_case_ids=[case_id]),
        client.post(f"/conferences/{cid}/phase", json={"phase": "closed"}, headers=abh_mod),
        client.post(f"/conferences/{cid}/participants",
                    json={"organisation_ids": [world.organisations["ennetal_jobcenter"]]}, headers=abh_mod),
    ]
    for resp in attempts:
        assert problem(resp, 403, "wrong-organisation")["owner"] == "moderator"

    # Roles without conferences.manage, even in the moderating organisation.
    cm = auth(*KI)
    problem(client.post("/conferences", json={
        "title": "Fallkonferenz", "scheduled_at": "2026-03-10T09:00:00Z",
        "jurisdiction_id": world.jurisdictions["wittmar"], "participant_organisation_ids": []}, headers=cm),
        403, "forbidden")
    for resp in (add_case(client, cm, cid, other_chain["id"]),
                 add_finding(client, cm, cid, conference_case_ids=[case_id]),
                 client.post(f"/conferences/{cid}/phase", json={"phase": "closed"}, headers=cm),
                 client.post(f"/conferences/{cid}/agreements",
                             json=agreement(case_id, world.organisations["ennetal_abh"]), headers=cm),
                 client.post(f"/conferences/{cid}/participants",
                             json={"organisation_ids": [world.organisations["ennetal_vhs"]]}, headers=cm),
                 add_finding(client, auth("ennetal_abh", "clerk"), cid, conference_case_ids=[case_id])):
        problem(resp, 403, "forbidden")
    # The steering group and the data protection officer do not read conferences, nor vote.
    for role in ("steering", "dpo"):
        problem(client.get(f"/conferences/{cid}", headers=auth("ennetal_ki", role)), 403, "forbidden")
        problem(vote(client, auth("ennetal_ki", role), cid, fid, 1), 403, "forbidden")

    after = get_conf(client, auth(*MOD), cid)
    assert after["version"] == version
    assert len(after["cases"]) == 1 and len(after["findings"]) == 1
    assert [p["organisation_id"] for p in after["participants"]] == [
        world.organisations["ennetal_ki"], world.organisations["ennetal_abh"]]
    assert after["findings"][0]["dots"] == 0


# --- phases ----------------------------------------------------------------------------------


def test_phases_only_move_forward_and_gate_what_may_be_added(client, auth, world):
    mod = auth(*MOD)
    conf = conference(client, auth, world, "ennetal_abh")
    cid = conf["id"]
    assert conf["phase"] == "planned" and conf["version"] == 1
    _, _, chain = person_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    _, _, chain2 = person_case(client, auth, world, "ennetal_ki", "ennetal_abh", family_name="Bakr")

    # Planned: the agenda may be prepared; agreements and findings wait for their phase.
    conf = ok(add_case(client, mod, cid, chain["id"]))
    case_id = conf["cases"][0]["id"]
    body = problem(client.post(f"/conferences/{cid}/agreements",
                               json=agreement(case_id, world.organisations["ennetal_abh"]), headers=mod),
                   409, "conference-phase")
    assert body["phase"] == "planned"
    assert problem(add_finding(client, mod, cid, conference_case_ids=[case_id]), 409,
                   "conference-phase")["phase"] == "planned"
    assert problem(vote(client, auth("ennetal_abh", "clerk"), cid, MISSING, 1), 409,
                   "conference-phase")["phase"] == "planned"
    # A case is on the agenda once.
    problem(add_case(client, mod, cid, chain["id"]), 422, "validation-error")

    # Optimistic locking on the phase.
    version = get_conf(client, mod, cid)["version"]
    stale = problem(client.post(f"/conferences/{cid}/phase",
                                json={"phase": "case_phase", "expected_version": version - 1}, headers=mod),
                    409, "version-conflict")
    assert stale["current_version"] == version
    conf = ok(client.post(f"/conferences/{cid}/phase",
                          json={"phase": "case_phase", "expected_version": version}, headers=mod))
    assert conf["phase"] == "case_phase" and conf["version"] == version + 1

    # Case phase: cases and agreements; no findings; no way back, not even to the same phase.
    ok(add_case(client, mod, cid, chain2["id"]))
    # A chain outside the moderator's record scope (run by Hagenau's centre) does not exist for it.
    hagenau_cm = auth("hagenau_ki", "case_manager")
    foreign_chain = started(client, hagenau_cm, new_person(client, hagenau_cm, world.jurisdictions["hagenau"]))
    assert problem(add_case(client, mod, cid, foreign_chain["id"]), 404, "not-found")["resource"] == "chain"
    problem(add_case(client, mod, cid, MISSING), 404, "not-found")
    ok(client.post(f"/conferences/{cid}/agreements",
                   json=agreement(case_id, world.organisations["ennetal_abh"]), headers=mod))
    assert problem(add_finding(client, mod, cid, conference_case_ids=[case_id]), 409,
                   "conference-phase")["phase"] == "case_phase"
    problem(vote(client, auth("ennetal_abh", "clerk"), cid, MISSING, 1), 409, "conference-phase")
    for back in ("planned", "case_phase"):
        body = problem(client.post(f"/conferences/{cid}/phase", json={"phase": back}, headers=mod),
                       409, "conference-phase")
        assert body["phase"] == "case_phase"

    # Structural phase: findings and votes; the agenda and the agreements are closed.
    phase(client, auth, cid, "structural_phase")
    _, _, chain3 = person_case(client, auth, world, "ennetal_ki", "ennetal_abh", family_name="Chalabi")
    assert problem(add_case(client, mod, cid, chain3["id"]), 409, "conference-phase")["phase"] == "structural_phase"
    problem(client.post(f"/conferences/{cid}/agreements",
                        json=agreement(case_id, world.organisations["ennetal_abh"]), headers=mod),
            409, "conference-phase")
    problem(client.post(f"/conferences/{cid}/participants",
                        json={"organisation_ids": [world.organisations["ennetal_jobcenter"]]}, headers=mod),
            409, "conference-phase")
    conf = ok(add_finding(client, mod, cid, conference_case_ids=[case_id]))
    fid = conf["findings"][0]["id"]
    ok(vote(client, auth("ennetal_abh", "clerk"), cid, fid, 1))
    for back in ("planned", "case_phase", "structural_phase"):
        problem(client.post(f"/conferences/{cid}/phase", json={"phase": back}, headers=mod), 409, "conference-phase")

    # Closed: nothing changes any more.
    phase(client, auth, cid, "closed")
    before = get_conf(client, mod, cid)
    attempts = [
        add_case(client, mod, cid, chain3["id"]),
        client.post(f"/conferences/{cid}/agreements",
                    json=agreement(case_id, world.organisations["ennetal_abh"]), headers=mod),
        add_finding(client, mod, cid, conference_case_ids=[case_id]),
        vote(client, auth("ennetal_abh", "clerk"), cid, fid, 2),
        vote(client, auth("ennetal_abh", "clerk"), cid, fid, 0),
        client.post(f"/conferences/{cid}/participants",
                    json={"organisation_ids": [world.organisations["ennetal_jobcenter"]]}, headers=mod),
        *(client.post(f"/conferences/{cid}/phase", json={"phase": p}, headers=mod)
          for p in ("planned", "case_phase", "structural_phase", "closed")),
    ]
    for resp in attempts:
        assert problem(resp, 409, "conference-phase")["phase"] == "closed"
    after = get_conf(client, mod, cid)
    assert after["version"] == before["version"]
    assert (len(after["cases"]), len(after["agreements"]), len(after["findings"])) == (2, 1, 1)
    assert after["findings"][0]["dots"] == 1
    # Each phase change is audited once; the refused ones are not recorded as changes.
    rows = [r for r in audit_items(client, auth("ennetal_ki", "dpo"), user="user-ennetal_ki")
            if r["entity_id"] == cid and r["subtype"] == "conference.phase"]
    assert [(r["detail"], r["outcome"]) for r in reversed(rows)] == [
        ("planned -> case_phase", "success"), ("case_phase -> structural_phase", "success"),
        ("structural_phase -> closed", "success")]


# --- legal basis -----------------------------------------------------------------------------


def test_withdrawn_consent_keeps_the_case_off_the_agenda(client, auth, world):
    mod = auth(*MOD)
    conf = conference(client, auth, world, "ennetal_abh")
    phase(client, auth, conf["id"], "case_phase")
    person, consent, chain = person_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    ok(client.post(f"/consents/{consent['id']}/withdraw", json={"note": "zurückgezogen"}, headers=auth(*KI)))

    body = problem(add_case(client, mod, conf["id"], chain["id"]), 403, "no-legal-basis")
    assert KI_NAME in body["detail"] and ABH_NAME in body["detail"]
    assert {f["organisation_id"] for f in body["fields"]} == {
        world.organisations["ennetal_ki"], world.organisations["ennetal_abh"]}
    assert {f["category"] for f in body["fields"]} == {"case_notes"}
    assert all(f["reason"] for f in body["fields"])
    after = get_conf(client, mod, conf["id"])
    assert after["cases"] == [] and after["version"] == conf["version"] + 1  # only the phase moved


def test_a_consent_naming_only_some_participants_is_not_enough(client, auth, world):
    mod = auth(*MOD)
    conf = conference(client, auth, world, "ennetal_abh", "ennetal_jobcenter")
    phase(client, auth, conf["id"], "case_phase")
    _, _, chain = person_case(client, auth, world, "ennetal_ki", "ennetal_jobcenter")
    body = problem(add_case(client, mod, conf["id"], chain["id"]), 403, "no-legal-basis")
    assert ABH_NAME in body["detail"]
    assert JOBCENTER_NAME not in body["detail"] and KI_NAME not in body["detail"]
    assert [f["organisation_id"] for f in body["fields"]] == [world.organisations["ennetal_abh"]]
    # A consent for another purpose does not open the conference either.
    _, _, chain2 = person_case(client, auth, world, family_name="Bakr")
    ok(client.post(f"/persons/{chain2['person_id']}/consents", json=conference_consent(
        world, "ennetal_ki", "ennetal_abh", "ennetal_jobcenter") | {"purpose": "case_management"},
        headers=auth(*KI)), 201)
    body = problem(add_case(client, mod, conf["id"], chain2["id"]), 403, "no-legal-basis")
    assert {f["organisation_id"] for f in body["fields"]} == {
        world.organisations[k] for k in ("ennetal_ki", "ennetal_abh", "ennetal_jobcenter")}
    assert get_conf(client, mod, conf["id"])["cases"] == []


def test_a_late_participant_needs_a_basis_for_every_case_on_the_agenda(client, auth, world, clock):
    mod = auth(*MOD)
    ki_id, abh_id, jc_id = (world.organisations[k] for k in ("ennetal_ki", "ennetal_abh", "ennetal_jobcenter"))
    conf = conference(client, auth, world, "ennetal_abh")
    cid = conf["id"]
    phase(client, auth, cid, "case_phase")
    _, consent_a, chain_a = person_case(client, auth, world, "ennetal_ki", "ennetal_abh", "ennetal_jobcenter")
    person_b, consent_b, chain_b = person_case(client, auth, world, "ennetal_ki", "ennetal_abh", family_name="Bakr")
    ok(add_case(client, mod, cid, chain_a["id"]))
    before = ok(add_case(client, mod, cid, chain_b["id"]))
    assert before["cases"][0]["legal_bases"] == {str(ki_id): f"consent:{consent_a['id']}",
                                                 str(abh_id): f"consent:{consent_a['id']}"}
    assert before["cases"][1]["legal_bases"] == {str(ki_id): f"consent:{consent_b['id']}",
                                                 str(abh_id): f"consent:{consent_b['id']}"}

    # Case B has no basis for the Jobcenter: it may not join; nothing changes (not case A either).
    body = problem(client.post(f"/conferences/{cid}/participants", json={"organisation_ids": [jc_id]},
                               headers=mod), 403, "no-legal-basis")
    assert JOBCENTER_NAME in body["detail"]
    assert [f["organisation_id"] for f in body["fields"]] == [jc_id]
    after = get_conf(client, mod, cid)
    assert after["participants"] == before["participants"]
    assert after["cases"] == before["cases"] and after["version"] == before["version"]
    # ... nor may the conference invite an organisation that does not exist.
    problem(client.post(f"/conferences/{cid}/participants", json={"organisation_ids": [999999]},
                        headers=mod), 422, "validation-error")

    # With the person's consent for the Jobcenter too, it joins; the basis is recorded per case.
    clock.advance(minutes=5)
    consent_b2 = ok(client.post(f"/persons/{person_b['id']}/consents",
                                json=conference_consent(world, "ennetal_jobcenter"), headers=auth(*KI)), 201)
    joined = ok(client.post(f"/conferences/{cid}/participants", json={"organisation_ids": [jc_id, abh_id]},
                            headers=mod))
    assert [p["organisation_id"] for p in joined["participants"]] == [ki_id, abh_id, jc_id]
    assert joined["version"] == before["version"] + 1
    assert joined["cases"][0]["legal_bases"] == {str(ki_id): f"consent:{consent_a['id']}",
                                                 str(abh_id): f"consent:{consent_a['id']}",
                                                 str(jc_id): f"consent:{consent_a['id']}"}
    assert joined["cases"][1]["legal_bases"] == {str(ki_id): f"consent:{consent_b['id']}",
                                                 str(abh_id): f"consent:{consent_b['id']}",
                                                 str(jc_id): f"consent:{consent_b2['id']}"}
    assert get_conf(client, auth("ennetal_jobcenter", "clerk"), cid)["id"] == cid
    # The case put on the agenda is audited with its bases and the purpose.
    rows = [r for r in audit_items(client, auth("ennetal_ki", "dpo"), person_id=person_b["id"])
            if r["subtype"] == "conference.case"]
    assert len(rows) == 1 and rows[0]["entity_id"] == cid
    assert rows[0]["purpose"] == "case_conference"
    assert rows[0]["legal_bases"] == {str(ki_id): f"consent:{consent_b['id']}",
                                      str(abh_id): f"consent:{consent_b['id']}"}


# --- agreements ------------------------------------------------------------------------------

SECRET = "Frau Haddad bekommt bis zum 24.03. einen Termin bei der ABH wegen der Verlängerung"


def test_agreements_are_encrypted_shown_to_participants_only_and_their_reading_is_audited(
        client, auth, world, db):
    mod = auth(*MOD)
    conf = conference(client, auth, world, "ennetal_abh")
    cid = conf["id"]
    phase(client, auth, cid, "case_phase")
    person, _, chain = person_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    case_id = ok(add_case(client, mod, cid, chain["id"]))["cases"][0]["id"]
    out = ok(client.post(f"/conferences/{cid}/agreements",
                         json=agreement(case_id, world.organisations["ennetal_abh"], text=f"  {SECRET}  "),
                         headers=mod))
    (made,) = out["agreements"]
    assert made["text"] is None and SECRET not in str(out)
    assert made["handover_id"] is None and made["step_key"] is None and made["state"] == "open"
    assert made["due_date"] == "2026-03-24" and made["owner_organisation_id"] == world.organisations["ennetal_abh"]

    # At rest: ciphertext only, no trace of the words.
    with db.connect() as conn:
        rows = conn.execute(text("SELECT text_ciphertext, conference_agreements::text AS whole "
                                 "FROM conference_agreements")).all()
    assert len(rows) == 1
    ciphertext, whole = bytes(rows[0].text_ciphertext), rows[0].whole
    for word in (SECRET, "Haddad", "Verlängerung"):
        assert word.encode() not in ciphertext and word not in whole
        assert word.encode("utf-16-le") not in ciphertext

    # Participants read it (the moderator and the ABH), outsiders do not.
    abh = auth("ennetal_abh", "clerk", user="clerk.abh")
    assert get_conf(client, abh, cid)["agreements"][0]["text"] == SECRET
    assert get_conf(client, mod, cid)["agreements"][0]["text"] == SECRET
    outsider = client.get(f"/conferences/{cid}", headers=auth("ennetal_jobcenter", "clerk", user="clerk.jc"))
    problem(outsider, 404, "not-found")
    assert SECRET not in outsider.text and "Haddad" not in outsider.text

    # The data protection officer sees who read the conference about which person.
    dpo = auth("ennetal_ki", "dpo")
    rows = audit_items(client, dpo, person_id=person["id"])
    reads = [r for r in rows if r["subtype"] == "conference.read"]
    assert [(r["agent_user"], r["agent_organisation_id"], r["action"], r["outcome"], r["entity_id"])
            for r in reads] == [
        ("user-ennetal_ki", world.organisations["ennetal_ki"], "R", "success", cid),
        ("clerk.abh", world.organisations["ennetal_abh"], "R", "success", cid)]
    made_rows = [r for r in rows if r["subtype"] == "conference.agreement"]
    assert len(made_rows) == 1 and made_rows[0]["action"] == "C"
    # The refused outsider left no read about the person.
    assert not [r for r in rows if r["agent_user"] == "clerk.jc"]
    # Never the text itself in the trail.
    assert SECRET not in str(audit_items(client, dpo))


def test_conference_read_audit_names_basis_and_purpose(client, auth, world):
    """DOMAIN.md 7: every read of personal data is audited with the basis and the purpose."""
    mod = auth(*MOD)
    conf = conference(client, auth, world, "ennetal_abh")
    cid = conf["id"]
    phase(client, auth, cid, "case_phase")
    person, consent, chain = person_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    case_id = ok(add_case(client, mod, cid, chain["id"]))["cases"][0]["id"]
    ok(client.post(f"/conferences/{cid}/agreements",
                   json=agreement(case_id, world.organisations["ennetal_abh"]), headers=mod))
    get_conf(client, auth("ennetal_abh", "clerk", user="clerk.abh"), cid)
    (row,) = [r for r in audit_items(client, auth("ennetal_ki", "dpo"), person_id=person["id"])
              if r["subtype"] == "conference.read"]
    assert row["purpose"] == "case_conference", row
    assert f"consent:{consent['id']}" in row["legal_bases"].values(), row


def test_withdrawal_closes_later_reads_of_agreements(client, auth, world):
    """DOMAIN.md 7: withdrawal takes effect at once for every later read. The agreement about
    the person may no longer be shown to the organisations whose basis was the consent."""
    mod = auth(*MOD)
    conf = conference(client, auth, world, "ennetal_abh")
    cid = conf["id"]
    phase(client, auth, cid, "case_phase")
    _, consent, chain = person_case(client, auth, world, "ennetal_ki", "ennetal_abh")
    case_id = ok(add_case(client, mod, cid, chain["id"]))["cases"][0]["id"]
    ok(client.post(f"/conferences/{cid}/agreements",
                   json=agreement(case_id, world.organisations["ennetal_abh"], text=SECRET), headers=mod))
    abh = auth("ennetal_abh", "clerk")
    assert get_conf(client, abh, cid)["agreements"][0]["text"] == SECRET
    ok(client.post(f"/consents/{consent['id']}/withdraw", json={}, headers=auth(*KI)))
    wrong = []
    resp = client.get(f"/conferences/{cid}", headers=abh)
    if SECRET in resp.text:
        wrong.append("the ABH still reads the agreement text after the withdrawal")
    more = client.post(f"/conferences/{cid}/agreements", headers=mod, json=agreement(
        case_id, world.organisations["ennetal_abh"], text="Neue Absprache zur Person"))
    if more.status_code != 403:
        wrong.append(f"a new agreement about the person was recorded after the withdrawal ({more.status_code})")
    assert wrong == []


def test_an_agreement_with_a_step_hands_the_step_to_its_owner(client, auth, world, db):
    mod = auth(*MOD)
    abh_id = world.organisations["ennetal_abh"]
    conf = conference(client, auth, world, "ennetal_abh", "ennetal_jobcenter")
    cid = conf["id"]
    phase(client, auth, cid, "case_phase")
    _, _, chain = person_case(client, auth, world, "ennetal_ki", "ennetal_abh", "ennetal_jobcenter")
    case_id = ok(add_case(client, mod, cid, chain["id"]))["cases"][0]["id"]
    abh = auth("ennetal_abh", "clerk")
    assert ok(client.get("/handovers/incoming", headers=abh))["items"] == []

    out = ok(client.post(f"/conferences/{cid}/agreements",
                         json=agreement(case_id, abh_id, step_key="residence_permit"), headers=mod))
    (made,) = out["agreements"]
    assert made["step_key"] == "residence_permit" and made["handover_id"]
    (item,) = ok(client.get("/handovers/incoming", headers=abh))["items"]
    assert item["id"] == made["handover_id"]
    assert (item["kind"], item["state"], item["step_key"], item["chain_id"]) == (
        "step", "requested", "residence_permit", chain["id"])
    assert item["receiver"]["id"] == abh_id and item["sender"]["id"] == world.organisations["ennetal_ki"]
    version = out["version"]

    def refused(body: dict[str, Any], status: int, slug: str) -> dict[str, Any]:
        resp = client.post(f"/conferences/{cid}/agreements", json=body, headers=mod)
        return problem(resp, status, slug)

    # A step the chain does not have, one of another organisation kind, one of case management
    # itself, one already handed over: the proper handover problem, and no agreement.
    assert refused(agreement(case_id, abh_id, step_key="no_such_step"), 422, "invalid-handover")["field"] == "step_key"
    assert refused(agreement(case_id, abh_id, step_key="sgb2_application"), 422,
                   "invalid-handover")["field"] == "receiver_organisation_id"
    assert refused(agreement(case_id, abh_id, step_key="first_interview"), 422,
                   "invalid-handover")["field"] == "step_key"
    assert refused(agreement(case_id, abh_id, step_key="residence_permit"), 409,
                   "handover-pending")["handover_id"] == made["handover_id"]
    # Other invalid parts of the agreement.
    refused(agreement(case_id, abh_id, step_key="Residence Permit"), 422, "validation-error")
    refused(agreement(case_id, 999999), 422, "validation-error")
    refused(agreement(999999, abh_id), 422, "validation-error")
    refused(agreement(case_id, abh_id, due_date="24.03.2026"), 422, "validation-error")

    after = get_conf(client, mod, cid)
    assert after["version"] == version and len(after["agreements"]) == 1
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM conference_agreements")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM handovers")).scalar() == 1
    assert len(ok(client.get("/handovers/incoming", headers=abh))["items"]) == 1
    assert ok(client.get("/handovers/incoming", headers=auth("ennetal_jobcenter", "clerk")))["items"] == []


# --- findings --------------------------------------------------------------------------------


def test_findings_are_checked_against_the_taxonomy_and_the_agenda(client, auth, world):
    mod = auth(*MOD)
    conf, (case_id,) = structural_conference(client, auth, world, "ennetal_abh")
    other, (other_case,) = structural_conference(client, auth, world, "ennetal_abh", family_name="Bakr")
    cid = conf["id"]
    for over, field in (
        ({"barrier_category": "bad_weather"}, "body.barrier_category"),
        ({"field_of_action": "astronomy"}, "body.field_of_action"),
        ({"organisation_kinds": ["course_provider", "ministry_of_magic"]}, "body.organisation_kinds"),
        ({"conference_case_ids": [other_case]}, "body.conference_case_ids"),
        ({"conference_case_ids": [case_id, other_case]}, "body.conference_case_ids"),
        ({"conference_case_ids": [999999]}, "body.conference_case_ids"),
    ):
        body = problem(add_finding(client, mod, cid, **({"conference_case_ids": [case_id]} | over)),
                       422, "validation-error")
        assert body["errors"][0]["field"] == field, (over, body)
    for over in ({"level": "global"}, {"weather": "hagel"}, {"organisation_kinds": []},
                 {"conference_case_ids": []}, {"text": ""}, {"barrier_category": "Waiting Times"}):
        problem(add_finding(client, mod, cid, **({"conference_case_ids": [case_id]} | over)), 422, "validation-error")
    assert get_conf(client, mod, cid)["findings"] == []
    assert get_conf(client, mod, other["id"])["findings"] == []


DIRTY = [
    ("Frau Yilmaz wartet seit vier Monaten auf einen Kursplatz.", "name", "Yilmaz"),
    ("Herr Dr. Brenner vom Jobcenter ruft nicht zurück.", "name", "Brenner"),
    ("Haddad wartet seit vier Monaten auf einen Kursplatz.", "name", "Haddad"),
    ("Für Rana gibt es keinen Kitaplatz in Wittmar.", "name", "Rana"),
    ("Die Tochter von Haddads Nachbarin findet keinen Schulplatz.", "name", "Haddads"),
    ("Rückfragen bitte an familie.k@example.org, das Postfach wird selten gelesen.", "email",
     "familie.k@example.org"),
    ("Die Beratung ist nur unter 0171 2345678 zu erreichen.", "phone", "0171 2345678"),
    ("Die Unterkunft Lindenstraße 14 ist seit Monaten überbelegt.", "address", "Lindenstraße 14"),
    ("Eine Familie aus 58452 Wittmar wartet auf eine Wohnung.", "address", "58452 Wittmar"),
    ("Die Person, geb. 03.04.1990, erhält keinen Kursplatz.", "birth_date", "03.04.1990"),
    ("Der Antrag mit Az. 36202BG0012345 liegt seit Wochen unbearbeitet.", "file_number", "36202BG0012345"),
]
CLEAN = [
    "Wartezeiten auf Integrationskurse liegen bei über drei Monaten; Kinderbetreuung fehlt.",
    "Die Ausländerbehörde Kreis Ennetal und das Jobcenter Ennetal stimmen Termine nicht ab.",
    "In Wittmar fehlen Kitaplätze für Kinder unter drei Jahren; Sprachkurse mit Kinderbetreuung "
    "gibt es nur in Hattenberg.",
    "Seit dem 01.03.2025 dauert die Ausstellung der Fiktionsbescheinigung rund 8 Wochen.",
    "Das Ticket gilt nicht über die Stadtgrenze hinaus; Kurse in Hagenau sind kaum erreichbar.",
    "Frau Bürgermeisterin hat eine Arbeitsgruppe zu 1-2-Personen-Wohnungen angeregt.",
    "Ehrenamtliche Sprachmittler fehlen für Arabisch, Dari und Tigrinya, vor allem im Quartal Q1/2025.",
]


def test_the_scrubber_keeps_personal_data_out_of_findings(client, auth, world):
    mod = auth(*MOD)
    conf, (case_id,) = structural_conference(client, auth, world, "ennetal_abh")
    cid = conf["id"]
    # The closed-world check knows the names of the persons on this agenda (Rana Haddad), and no
    # others: a moderator cannot ask it whether a word is a name anywhere in the records.
    new_person(client, auth(*KI), world.jurisdictions["hattenberg"], family_name="Okonkwo", given_names="Chidi",
               birth_date="1985-02-02")
    elsewhere = add_finding(client, mod, cid, text="Okonkwo wartet seit vier Monaten auf einen Kursplatz.",
                            conference_case_ids=[case_id])
    assert elsewhere.status_code == 200, elsewhere.text
    client_fids = [f["id"] for f in elsewhere.json()["findings"]]
    for dirty, kind, excerpt in DIRTY:
        body = problem(add_finding(client, mod, cid, text=dirty, conference_case_ids=[case_id]),
                       422, "personal-data-in-text")
        assert body["field"] == "text"
        hits = body["hits"]
        assert hits, dirty
        assert kind in {h["kind"] for h in hits}, (dirty, hits)
        assert any(excerpt in h["excerpt"] for h in hits), (dirty, hits)
        for h in hits:
            assert dirty[h["start"]:h["end"]] == h["excerpt"] and h["message"]
    assert [f["id"] for f in get_conf(client, mod, cid)["findings"]] == client_fids

    for clean in CLEAN:
        resp = add_finding(client, mod, cid, text=f" {clean} ", conference_case_ids=[case_id])
        assert resp.status_code == 200, (clean, resp.text)
        assert clean in {f["text"] for f in resp.json()["findings"]}
    stored = [f["text"] for f in get_conf(client, mod, cid)["findings"]]
    assert sorted(stored) == sorted([*CLEAN, "Okonkwo wartet seit vier Monaten auf einen Kursplatz."])
    assert len(client_fids) == 1


def test_a_finding_counts_distinct_cases_and_never_links_them(client, auth, world):
    mod = auth(*MOD)
    conf, case_ids = structural_conference(client, auth, world, "ennetal_abh", cases=3)
    a, b, c = case_ids
    conf = ok(add_finding(client, mod, conf["id"], conference_case_ids=[a, b, a, b, a]))
    first_id = conf["findings"][0]["id"]
    conf = ok(add_finding(client, mod, conf["id"], conference_case_ids=[a, b, c],
                          organisation_kinds=["jobcenter", "jobcenter", "auslaenderbehoerde"]))
    by_id = {f["id"]: f for f in conf["findings"]}
    first = by_id.pop(first_id)
    (second,) = by_id.values()
    assert first["case_count"] == 2 and second["case_count"] == 3
    assert second["organisation_kinds"] == ["auslaenderbehoerde", "jobcenter"]
    expected_keys = {"id", "conference_id", "barrier_category", "field_of_action", "organisation_kinds", "level",
                     "weather", "text", "case_count", "dots", "proposal_id", "created_at"}
    secret_ids = {str(x) for case in conf["cases"] for x in (case["chain_id"], case["person_id"], case["id"])}
    for f in conf["findings"]:
        assert set(f) == expected_keys
        assert not any(v in str(f) for v in secret_ids if len(v) > 8)
    proposal = ok(client.post("/proposals", json={
        "title": "Wartezeiten verkürzen", "summary": "Kurse mit Kinderbetreuung ausbauen",
        "finding_ids": [first["id"], second["id"]]}, headers=mod), 201)
    seen = ok(client.get(f"/proposals/{proposal['id']}", headers=auth(*LG)))
    for f in seen["findings"]:
        assert set(f) == expected_keys
    assert not any(v in str(seen) for v in secret_ids if len(v) > 8)
    # Outside the conference a number of cases under k (5) is not shown: it is a count of persons.
    assert [f["case_count"] for f in seen["findings"]] == [None, None]


# --- votes -----------------------------------------------------------------------------------


def test_dot_votes_have_a_budget_replace_earlier_dots_and_order_findings(client, auth, world, policies):
    budget = policies.steering.dots_per_participant
    assert budget == 3
    mod = auth(*MOD)
    conf, (case_id,) = structural_conference(client, auth, world, "ennetal_abh")
    cid = conf["id"]
    for weather in ("gewitter", "wolke", "wind"):
        conf = ok(add_finding(client, mod, cid, weather=weather, conference_case_ids=[case_id]))
    f1, f2, f3 = (f["id"] for f in conf["findings"])
    assert conf["my_dots_left"] == budget
    abh1 = auth("ennetal_abh", "clerk", user="abh.one")
    abh2 = auth("ennetal_abh", "clerk", user="abh.two")

    def dots(out: dict[str, Any]) -> list[tuple[str, int]]:
        return [(f["id"], f["dots"]) for f in out["findings"]]

    out = ok(vote(client, abh1, cid, f2, 2))
    assert dots(out) == [(f2, 2), (f1, 0), (f3, 0)] and out["my_dots_left"] == 1
    body = problem(vote(client, abh1, cid, f3, 2), 422, "too-many-dots")
    assert body["dots_left"] == 1
    # Replacing: the earlier dots on the same finding are given back first.
    out = ok(vote(client, abh1, cid, f2, 3))
    assert dots(out)[0] == (f2, 3) and out["my_dots_left"] == 0
    out = ok(vote(client, abh1, cid, f2, 1))
    assert out["my_dots_left"] == 2
    out = ok(vote(client, abh1, cid, f3, 2))
    assert dots(out) == [(f3, 2), (f2, 1), (f1, 0)] and out["my_dots_left"] == 0
    assert problem(vote(client, abh1, cid, f1, 1), 422, "too-many-dots")["dots_left"] == 0
    # A refused replacement keeps the earlier dots.
    assert problem(vote(client, abh1, cid, f3, 4), 422, "too-many-dots")["dots_left"] == 2
    assert dict(dots(get_conf(client, abh1, cid)))[f3] == 2
    # 0 takes the dots back.
    out = ok(vote(client, abh1, cid, f2, 0))
    assert dict(dots(out))[f2] == 0 and out["my_dots_left"] == 1
    out = ok(vote(client, abh1, cid, f2, 0))  # taking back nothing is harmless
    assert out["my_dots_left"] == 1

    # Every participant has their own budget; dots add up per finding and order the findings.
    out = ok(vote(client, abh2, cid, f1, 3))
    assert dots(out) == [(f1, 3), (f3, 2), (f2, 0)] and out["my_dots_left"] == 0
    out = ok(vote(client, mod, cid, f3, 2))
    assert dots(out) == [(f3, 4), (f1, 3), (f2, 0)] and out["my_dots_left"] == 1
    assert get_conf(client, abh1, cid)["my_dots_left"] == 1

    # Out of range, unknown findings, findings of another conference.
    for bad in (-1, 21):
        problem(vote(client, abh1, cid, f1, bad), 422, "validation-error")
    problem(vote(client, abh1, cid, MISSING, 1), 404, "not-found")
    other, (other_case,) = structural_conference(client, auth, world, "ennetal_abh", family_name="Bakr")
    other = ok(add_finding(client, mod, other["id"], conference_case_ids=[other_case]))
    foreign = other["findings"][0]["id"]
    problem(vote(client, abh1, cid, foreign, 1), 404, "not-found")
    # The budget is per conference: the other conference starts full.
    out = ok(vote(client, abh1, other["id"], foreign, budget))
    assert out["my_dots_left"] == 0
    assert get_conf(client, abh1, cid)["my_dots_left"] == 1
    assert dots(get_conf(client, mod, cid)) == [(f3, 4), (f1, 3), (f2, 0)]

    rows = [r for r in audit_items(client, auth("ennetal_ki", "dpo"), user="abh.one")
            if r["subtype"] == "conference.vote" and r["outcome"] == "success"]
    assert len(rows) == 7 and all(r["person_id"] is None for r in rows)


# --- proposals -------------------------------------------------------------------------------


def _jobcenter_conference_finding(client, auth, world) -> str:
    """A finding of a conference the Jobcenter moderates, without the KI at the table."""
    jc = auth("ennetal_jobcenter", "moderator")
    conf = ok(client.post("/conferences", json={
        "title": "Fallkonferenz Jobcenter", "scheduled_at": "2026-03-11T09:00:00Z",
        "jurisdiction_id": world.jurisdictions["wittmar"],
        "participant_organisation_ids": [world.organisations["ennetal_abh"]]}, headers=jc), 201)
    ok(client.post(f"/conferences/{conf['id']}/phase", json={"phase": "case_phase"}, headers=jc))
    _, _, chain = person_case(client, auth, world, "ennetal_jobcenter", "ennetal_abh", family_name="Demir")
    # The moderating Jobcenter must be involved with the case: the KI hands it a step.
    ok(client.post(f"/chains/{chain['id']}/handovers", json={"kind": "step", "step_key": "sgb2_application"},
                   headers=auth(*KI)), 201)
    conf = ok(add_case(client, jc, conf["id"], chain["id"]))
    ok(client.post(f"/conferences/{conf['id']}/phase", json={"phase": "structural_phase"}, headers=jc))
    conf = ok(add_finding(client, jc, conf["id"], conference_case_ids=[conf["cases"][0]["id"]]))
    return conf["findings"][0]["id"]


def test_bundling_findings_into_proposals(client, auth, world):
    mod = auth(*MOD)
    conf, (case_id,) = structural_conference(client, auth, world, "ennetal_abh")
    cid = conf["id"]
    for _ in range(3):
        conf = ok(add_finding(client, mod, cid, conference_case_ids=[case_id]))
    fa1, fa2, fa3 = (f["id"] for f in conf["findings"])
    fb = _jobcenter_conference_finding(client, auth, world)

    def bundle(headers, ids, **over):
        return client.post("/proposals", json={"title": "Kursplätze mit Kinderbetreuung",
                                               "summary": "Mehr Kurse mit Kinderbetreuung im Kreis",
                                               "finding_ids": ids} | over, headers=headers)

    # Findings of a conference the caller's organisation did not take part in.
    body = problem(bundle(mod, [fa1, fb]), 422, "validation-error")
    assert fb in body["detail"] and body["errors"][0]["field"] == "body.finding_ids"
    problem(bundle(auth("ennetal_jobcenter", "moderator"), [fa1]), 422, "validation-error")
    problem(bundle(mod, [MISSING]), 422, "validation-error")
    # Titles and summaries leave the conference: no personal data.
    for over, field in (({"title": "Kursplatz für Frau Yilmaz"}, "title"),
                        ({"summary": "Rückfragen an 0171 2345678"}, "summary"),
                        ({"summary": "Wie bei Haddad fehlt die Kinderbetreuung"}, "summary")):
        body = problem(bundle(mod, [fa1], **over), 422, "personal-data-in-text")
        assert body["field"] == field and body["hits"]
    problem(bundle(auth(*KI), [fa1]), 403, "forbidden")
    problem(bundle(auth(*LG), [fa1]), 403, "forbidden")
    assert [f["proposal_id"] for f in get_conf(client, mod, cid)["findings"]] == [None, None, None]
    assert ok(client.get("/proposals", headers=auth(*LG))) == []

    p1 = ok(bundle(mod, [fa1, fa1]), 201)
    assert [f["id"] for f in p1["findings"]] == [fa1]
    # A finding belongs to one proposal only; a refused bundle takes none of the others.
    body = problem(bundle(mod, [fa2, fa1]), 422, "validation-error")
    assert fa1 in body["detail"] and p1["id"] in body["detail"]
    by_id = {f["id"]: f["proposal_id"] for f in get_conf(client, mod, cid)["findings"]}
    assert by_id == {fa1: p1["id"], fa2: None, fa3: None}
    p2 = ok(bundle(mod, [fa2, fa3]), 201)
    assert {f["id"] for f in p2["findings"]} == {fa2, fa3}
    # The participating ABH may bundle too, but the findings are taken.
    problem(bundle(auth("ennetal_abh", "moderator"), [fa3]), 422, "validation-error")
    assert {p["id"] for p in ok(client.get("/proposals", headers=auth(*LG)))} == {p1["id"], p2["id"]}


def test_proposal_lifecycle_defer_resubmit_delegate(client, auth, world, clock):
    mod = auth("ennetal_ki", "moderator", user="mod.lifecycle")
    lg = auth("ennetal_ki", "steering", user="lg.lifecycle")
    conf, (case_id,) = structural_conference(client, auth, world, "ennetal_abh")
    for _ in range(2):
        conf = ok(add_finding(client, auth(*MOD), conf["id"], conference_case_ids=[case_id]))
    f0, f1 = (f["id"] for f in conf["findings"])

    # An existing working group, set up by accepting an earlier proposal.
    p0 = ok(client.post("/proposals", json={"title": "Wohnraum", "summary": "Mehr kleine Wohnungen",
                                            "finding_ids": [f0]}, headers=auth(*MOD)), 201)
    ok(proposal_act(client, auth(*MOD), p0["id"], "submit"))
    group = ok(proposal_act(client, auth(*LG), p0["id"], "accept", working_group_name="AG Wohnen",
                            lead_organisation_id=world.organisations["ennetal_jobcenter"],
                            due_date="2026-12-31"))["working_group"]

    p = ok(client.post("/proposals", json={"title": "Kursplätze", "summary": "Kurse mit Kinderbetreuung",
                                           "finding_ids": [f1]}, headers=mod), 201)
    pid = p["id"]
    assert (p["state"], p["version"], p["allowed_actions"]) == ("bundled", 1, ["submit"])

    def step(headers, action, **body):
        clock.advance(minutes=1)
        return ok(proposal_act(client, headers, pid, action, **body))

    problem(proposal_act(client, lg, pid, "submit"), 403, "forbidden")
    p = step(mod, "submit", expected_version=1)
    assert p["state"] == "submitted" and p["version"] == 2
    problem(proposal_act(client, mod, pid, "defer", reason="intern klären"), 403, "forbidden")
    problem(proposal_act(client, lg, pid, "defer"), 422, "reason-required")
    problem(proposal_act(client, lg, pid, "defer", reason="   "), 422, "reason-required")
    p = step(lg, "defer", reason="Finanzierung intern klären")
    assert (p["state"], p["decision_reason"], p["allowed_actions"]) == (
        "deferred", "Finanzierung intern klären", ["submit"])
    assert problem(proposal_act(client, lg, pid, "delegate", working_group_id=group["id"], due_date="2026-10-01"),
                   409, "illegal-transition")["allowed_actions"] == ["submit"]
    p = step(mod, "submit")
    assert p["state"] == "submitted"
    assert sorted(p["allowed_actions"]) == ["accept", "defer", "delegate", "reject"]

    # Delegating needs an existing group and a due date, and the current version.
    problem(proposal_act(client, lg, pid, "delegate", due_date="2026-10-01"), 422, "validation-error")
    problem(proposal_act(client, lg, pid, "delegate", working_group_id=999999, due_date="2026-10-01"),
            422, "validation-error")
    problem(proposal_act(client, lg, pid, "delegate", working_group_id=group["id"]), 422, "validation-error")
    stale = problem(proposal_act(client, lg, pid, "delegate", working_group_id=group["id"], due_date="2026-10-01",
                                 expected_version=p["version"] - 1), 409, "version-conflict")
    assert stale["current_version"] == p["version"]
    problem(proposal_act(client, mod, pid, "delegate", working_group_id=group["id"], due_date="2026-10-01"),
            403, "forbidden")
    p = step(lg, "delegate", working_group_id=group["id"], due_date="2026-10-01", expected_version=p["version"])
    assert p["state"] == "delegated" and p["working_group"] == group and p["due_date"] == "2026-10-01"
    assert p["allowed_actions"] == ["start"]
    assert [g["name"] for g in ok(client.get("/working-groups", headers=lg))] == ["AG Wohnen"]

    for action in ("delegate", "accept", "complete", "make_permanent", "submit", "defer"):
        headers = mod if action == "submit" else lg
        body = problem(proposal_act(client, headers, pid, action, reason="x", working_group_id=group["id"],
                                    working_group_name="AG Neu", lead_organisation_id=group["lead_organisation_id"],
                                    due_date="2026-10-01"), 409, "illegal-transition")
        assert (body["state"], body["allowed_actions"]) == ("delegated", ["start"]), action
    p = step(lg, "start")
    assert (p["state"], p["allowed_actions"]) == ("in_implementation", ["complete"])
    p = step(lg, "complete")
    assert (p["state"], p["allowed_actions"]) == ("implemented", ["make_permanent"])
    problem(proposal_act(client, mod, pid, "make_permanent"), 403, "forbidden")
    p = step(lg, "make_permanent")
    assert (p["state"], p["allowed_actions"]) == ("made_permanent", [])
    for action in ("start", "complete", "make_permanent", "defer"):
        body = problem(proposal_act(client, lg, pid, action, reason="x"), 409, "illegal-transition")
        assert (body["state"], body["allowed_actions"]) == ("made_permanent", [])
    problem(proposal_act(client, lg, MISSING, "start"), 404, "not-found")

    # The history: complete, in order, with who, why, which group and by when.
    p = ok(client.get(f"/proposals/{pid}", headers=lg))
    events = p["events"]
    assert [(e["action"], e["from_state"], e["to_state"]) for e in events] == [
        ("bundle", None, "bundled"), ("submit", "bundled", "submitted"), ("defer", "submitted", "deferred"),
        ("submit", "deferred", "submitted"), ("delegate", "submitted", "delegated"),
        ("start", "delegated", "in_implementation"), ("complete", "in_implementation", "implemented"),
        ("make_permanent", "implemented", "made_permanent")]
    assert [e["actor_user"] for e in events] == ["mod.lifecycle"] * 2 + ["lg.lifecycle"] + ["mod.lifecycle"] + [
        "lg.lifecycle"] * 4
    assert {e["actor_organisation_id"] for e in events} == {world.organisations["ennetal_ki"]}
    times = [ts(e["occurred_at"]) for e in events]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert events[2]["reason"] == "Finanzierung intern klären"
    assert (events[4]["working_group_id"], events[4]["due_date"]) == (group["id"], "2026-10-01")
    assert all(e["working_group_id"] is None and e["due_date"] is None for i, e in enumerate(events) if i != 4)
    assert p["version"] == len(events) == 8
    assert ts(p["updated_at"]) == times[-1]

    # The audit trail: one success row per change, none for the refused attempts.
    dpo = auth("ennetal_ki", "dpo")
    rows = [r for r in audit_items(client, dpo, user="mod.lifecycle") + audit_items(client, dpo, user="lg.lifecycle")
            if r["entity_type"] == "proposal" and r["outcome"] == "success"]
    rows.sort(key=lambda r: r["id"])
    assert [(r["subtype"], r["entity_id"], r["agent_user"]) for r in rows] == [
        ("proposal.bundle", pid, "mod.lifecycle"), ("proposal.submit", pid, "mod.lifecycle"),
        ("proposal.defer", pid, "lg.lifecycle"), ("proposal.submit", pid, "mod.lifecycle"),
        ("proposal.delegate", pid, "lg.lifecycle"), ("proposal.start", pid, "lg.lifecycle"),
        ("proposal.complete", pid, "lg.lifecycle"), ("proposal.make_permanent", pid, "lg.lifecycle")]
    assert [r["detail"] for r in rows[1:]] == [f"{e['from_state']} -> {e['to_state']}" for e in events[1:]]
    assert all(r["person_id"] is None for r in rows)
    denied = [r for r in audit_items(client, dpo, user="mod.lifecycle", outcome="denied")]
    assert [r["subtype"] for r in denied] == ["refused.forbidden"] * 3


def test_deciding_rules_reject_accept_and_working_groups(client, auth, world):
    mod, lg = auth(*MOD), auth(*LG)
    conf, (case_id,) = structural_conference(client, auth, world, "ennetal_abh")
    for _ in range(2):
        conf = ok(add_finding(client, mod, conf["id"], conference_case_ids=[case_id]))
    f0, f1 = (f["id"] for f in conf["findings"])
    vhs = world.organisations["ennetal_vhs"]
    p0 = ok(client.post("/proposals", json={"title": "Sprache", "summary": "Kurse", "finding_ids": [f0]},
                        headers=mod), 201)
    ok(proposal_act(client, mod, p0["id"], "submit"))
    ok(proposal_act(client, lg, p0["id"], "accept", working_group_name="AG Sprache", lead_organisation_id=vhs,
                    due_date="2026-09-30"))

    p = ok(client.post("/proposals", json={"title": "Kita", "summary": "Kitaplätze", "finding_ids": [f1]},
                       headers=mod), 201)
    pid = p["id"]
    # Deciding before it is submitted.
    body = problem(proposal_act(client, lg, pid, "reject", reason="nein"), 409, "illegal-transition")
    assert (body["state"], body["allowed_actions"]) == ("bundled", ["submit"])
    p = ok(proposal_act(client, mod, pid, "submit"))
    problem(proposal_act(client, mod, pid, "submit"), 409, "illegal-transition")
    problem(proposal_act(client, lg, pid, "start"), 409, "illegal-transition")
    problem(proposal_act(client, lg, pid, "reject"), 422, "reason-required")
    problem(proposal_act(client, lg, pid, "reject", reason=" \t "), 422, "reason-required")
    accept = {"working_group_name": "AG Kita", "lead_organisation_id": vhs, "due_date": "2026-09-30"}
    for missing, field in (("due_date", "body.due_date"), ("lead_organisation_id", "body.lead_organisation_id"),
                           ("working_group_name", "body.working_group_name")):
        body = problem(proposal_act(client, lg, pid, "accept", **{k: v for k, v in accept.items() if k != missing}),
                       422, "validation-error")
        assert body["errors"][0]["field"] == field, (missing, body)
    problem(proposal_act(client, lg, pid, "accept", **(accept | {"lead_organisation_id": 999999})),
            422, "validation-error")
    problem(proposal_act(client, lg, pid, "accept", **(accept | {"working_group_name": "   "})),
            422, "validation-error")
    for name in ("AG Sprache", "  AG Sprache "):
        body = problem(proposal_act(client, lg, pid, "accept", **(accept | {"working_group_name": name})),
                       409, "duplicate-name")
        assert body["name"] == "AG Sprache"
    problem(proposal_act(client, mod, pid, "accept", **accept), 403, "forbidden")
    unchanged = ok(client.get(f"/proposals/{pid}", headers=lg))
    assert (unchanged["state"], unchanged["version"], len(unchanged["events"])) == ("submitted", p["version"], 2)
    assert unchanged["working_group"] is None and unchanged["due_date"] is None
    assert [g["name"] for g in ok(client.get("/working-groups", headers=lg))] == ["AG Sprache"]

    p = ok(proposal_act(client, lg, pid, "reject", reason="  Kein Bedarf im Kreis  "))
    assert (p["state"], p["decision_reason"], p["allowed_actions"]) == ("rejected", "Kein Bedarf im Kreis", [])
    assert p["events"][-1]["reason"] == "Kein Bedarf im Kreis"
    for action in ("start", "submit", "accept"):
        headers = mod if action == "submit" else lg
        body = problem(proposal_act(client, headers, pid, action, **accept), 409, "illegal-transition")
        assert (body["state"], body["allowed_actions"]) == ("rejected", [])
    # The refused duplicates left the one group alone.
    assert len(ok(client.get("/working-groups", headers=lg))) == 1
    # An unknown action or field is refused by validation.
    problem(proposal_act(client, lg, pid, "archive"), 422, "validation-error")
    problem(client.post(f"/proposals/{pid}/actions", json={"action": "start", "colour": "red"}, headers=lg),
            422, "validation-error")
    # Who reads proposals: moderators and the steering group; not case managers or clerks.
    problem(client.get(f"/proposals/{pid}", headers=auth(*KI)), 403, "forbidden")
    problem(client.get("/proposals", headers=auth("ennetal_abh", "clerk")), 403, "forbidden")
    assert ok(client.get(f"/proposals/{pid}", headers=mod))["state"] == "rejected"


def test_blank_texts_are_refused_not_stored_empty(client, auth, world):
    """Schemas demand non-empty texts; a text of blanks is stripped by the service, so it must be
    refused, not stored as an empty agreement, finding or proposal."""
    mod = auth(*MOD)
    conf, (case_id,) = structural_conference(client, auth, world, "ennetal_abh")
    cid = conf["id"]
    ok(add_finding(client, mod, cid, conference_case_ids=[case_id]))
    conf = ok(add_finding(client, mod, cid, conference_case_ids=[case_id]))
    fid, fid2 = (f["id"] for f in conf["findings"])
    case_conf = conference(client, auth, world, "ennetal_abh")
    phase(client, auth, case_conf["id"], "case_phase")
    _, _, chain = person_case(client, auth, world, "ennetal_ki", "ennetal_abh", family_name="Bakr")
    case2 = ok(add_case(client, mod, case_conf["id"], chain["id"]))["cases"][0]["id"]
    attempts = {
        "conference title": client.post("/conferences", json={
            "title": "   ", "scheduled_at": "2026-03-10T09:00:00Z",
            "jurisdiction_id": world.jurisdictions["wittmar"]}, headers=mod),
        "agreement text": client.post(f"/conferences/{case_conf['id']}/agreements",
                                      json=agreement(case2, world.organisations["ennetal_abh"], text="   "),
                                      headers=mod),
        "finding text": add_finding(client, mod, cid, text=" \n ", conference_case_ids=[case_id]),
        "proposal title": client.post("/proposals", json={"title": "  ", "summary": "Kurse ausbauen",
                                                          "finding_ids": [fid]}, headers=mod),
        "proposal summary": client.post("/proposals", json={"title": "Kurse", "summary": "\t",
                                                            "finding_ids": [fid2]}, headers=mod),
    }
    accepted = {what: resp.status_code for what, resp in attempts.items() if resp.status_code != 422}
    assert accepted == {}, f"blank texts accepted: {accepted}"
