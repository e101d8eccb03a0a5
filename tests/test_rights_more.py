"""What the data protection officer relies on beyond tests/test_rights_api.py: the access report
(JSON and letter) lists the person's handovers with their package's fields, their conference
cases with the agreements, and their consent withdrawals, and never another person on the same
conference agenda nor any user; erasure empties the handover packages and the agreement texts of
the person, not those of the other person at the same conference; and the operator's commands
`retention run` (with --dry-run), `erasure replay --dry-run`, `keys status` and `keys rotate`
through ``casemgmt.cli.main``."""

from __future__ import annotations

import base64
import html
import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from http_helpers import ok, problem
from sqlalchemy import text
from test_api import started
from test_rights_api import NAMES, new_person, register

import conftest

CM = ("ennetal_ki", "case_manager")
DPO = ("ennetal_ki", "dpo")
MOD = ("ennetal_ki", "moderator")
ABH = ("ennetal_abh", "clerk")
USERS = ("cm-more-17", "dpo-more-23", "mod-fk-7", "abh-clerk-3")
OTHER = {"family_name": "Okonkwo", "given_names": "Chidera", "birth_date": "1987-11-09",
         "phone": "+49 2331 778899", "case_notes": "Sucht eine größere Wohnung."}
OWN_AGREEMENT = "ABH prüft die Verlängerung vorrangig"
OTHER_AGREEMENT = "Wohnungsamt meldet freie Wohnungen bis Monatsende"


def _scene(client, auth, world, clock) -> dict:
    """Two persons on the agenda of one Fallkonferenz (KI moderates, ABH at the table), each with
    an agreement and a handover of the residence step to the ABH (read and acknowledged); then the first
    person withdraws their conference consent three days later."""
    cm, mod, abh = auth(*CM, user=USERS[0]), auth(*MOD, user=USERS[2]), auth(*ABH, user=USERS[3])
    ki_id, abh_id = world.organisations["ennetal_ki"], world.organisations["ennetal_abh"]
    town = world.jurisdictions["wittmar"]
    conference_consent = {"recipients": [{"organisation_id": ki_id}, {"organisation_id": abh_id}],
                          "categories": ["case_notes"], "purpose": "case_conference",
                          "consequences_explained": True, "evidence_reference": "EW-FK-1", "language": "Arabisch"}
    p = new_person(client, cm, town, **NAMES)
    q = new_person(client, cm, town, **OTHER)
    consents = {x["id"]: ok(client.post(f"/persons/{x['id']}/consents", json=conference_consent, headers=cm), 201)
                for x in (p, q)}
    chains = {x["id"]: started(client, cm, x) for x in (p, q)}
    handovers = {}
    for x in (p, q):
        h = ok(client.post(f"/chains/{chains[x['id']]['id']}/handovers",
                           json={"kind": "step", "step_key": "residence_permit"}, headers=cm), 201)
        assert ok(client.get(f"/handovers/{h['id']}", headers=abh))["package"]["values"]  # the ABH reads it
        ok(client.post(f"/handovers/{h['id']}/actions", json={"action": "acknowledge"}, headers=abh))
        handovers[x["id"]] = h
    conf = ok(client.post("/conferences", json={
        "title": "Fallkonferenz Wittmar März", "scheduled_at": "2026-03-10T09:00:00Z", "jurisdiction_id": town,
        "participant_organisation_ids": [abh_id]}, headers=mod), 201)
    ok(client.post(f"/conferences/{conf['id']}/phase", json={"phase": "case_phase"}, headers=mod))
    cases = {}
    for x in (p, q):
        out = ok(client.post(f"/conferences/{conf['id']}/cases", json={"chain_id": chains[x["id"]]["id"]},
                             headers=mod))
        cases[x["id"]] = next(c["id"] for c in out["cases"] if c["person_id"] == x["id"])
    agreements = {}
    for x, words in ((p, OWN_AGREEMENT), (q, OTHER_AGREEMENT)):
        out = ok(client.post(f"/conferences/{conf['id']}/agreements", json={
            "conference_case_id": cases[x["id"]], "text": words, "owner_organisation_id": abh_id,
            "due_date": "2026-03-24"}, headers=mod))
        agreements[x["id"]] = next(a["id"] for a in out["agreements"] if a["conference_case_id"] == cases[x["id"]])
    clock.advance(days=3)
    withdrawn_at = clock.now
    ok(client.post(f"/consents/{consents[p['id']]['id']}/withdraw", json={"note": "per Telefon"}, headers=cm))
    return {"p": p, "q": q, "consents": consents, "chains": chains, "handovers": handovers, "conference": conf,
            "cases": cases, "agreements": agreements, "withdrawn_at": withdrawn_at}


def _other_traces(s: dict) -> list[str]:
    """Everything that would identify the other person or their records."""
    q = s["q"]["id"]
    return [q, s["chains"][q]["id"], s["consents"][q]["id"], s["handovers"][q]["id"], s["agreements"][q],
            OTHER["family_name"], OTHER["given_names"], OTHER["phone"], OTHER["case_notes"], OTHER_AGREEMENT]


def test_access_report_lists_handovers_conference_cases_and_withdrawals_but_no_other_person_and_no_user(
        client, auth, world, clock, policies):
    s = _scene(client, auth, world, clock)
    p, dpo = s["p"], auth(*DPO, user=USERS[1])
    h = s["handovers"][p["id"]]
    r = register(client, dpo, p["id"], "access")
    report = ok(client.get(f"/persons/{p['id']}/access-report", params={"request_id": r["id"]}, headers=dpo))
    ki, abh = h["sender"]["name"], h["receiver"]["name"]

    # The handover, with the package's fields as the ABH received them.
    [shown] = report["handovers"]
    assert (shown["from"], shown["to"], shown["state"]) == (ki, abh, "acknowledged")
    assert h["package"]["fields"] and {"family_name", "residence_status"} <= set(h["package"]["fields"])
    assert [f["field"] for f in shown["package_fields"]] == h["package"]["fields"]
    assert [f["title"] for f in shown["package_fields"]] == [policies.data.fields[f].title for f in h["package"]["fields"]]
    assert shown["answered_at"] and shown["requested_at"]

    # The conference case with the person's agreement, the organisations at the table.
    [case] = report["conference_cases"]
    assert (case["conference"], case["date"]) == ("Fallkonferenz Wittmar März", "2026-03-10")
    assert case["organisations"] == sorted([ki, abh])
    assert case["agreements"] == [{"text": OWN_AGREEMENT, "owner": abh, "due_date": "2026-03-24", "state": "open"}]

    # Both consents, the conference consent withdrawn at the time it was withdrawn.
    by_purpose = {c["purpose"]: c for c in report["consents"]}
    withdrawn = by_purpose["case_conference"]
    assert withdrawn["status"] == "withdrawn"
    assert datetime.fromisoformat(withdrawn["withdrawn_at"]) == s["withdrawn_at"]
    assert sorted(withdrawn["recipients"]) == sorted([ki, abh])
    assert [c["withdrawn_at"] for c in report["consents"] if c["purpose"] != "case_conference"] == [None]

    # The ABH read the package: it is named as a recipient, by its organisation's name.
    assert any(x["organisation"] == abh for x in report["recipients"])

    dumped = json.dumps(report, ensure_ascii=False)
    for trace in _other_traces(s):
        assert trace not in dumped, trace
    for user in USERS:
        assert user not in dumped, user

    letter = client.get(f"/persons/{p['id']}/access-report.html", params={"request_id": r["id"]}, headers=dpo)
    assert letter.status_code == 200, letter.text
    body = letter.text
    titles = html.escape(", ".join(policies.data.fields[f].title for f in h["package"]["fields"]))
    assert titles in body  # the fields handed over, in words
    assert f"<td>{html.escape(ki)}</td><td>{html.escape(abh)}</td><td>angenommen</td>" in body
    assert "Fallkonferenz Wittmar März" in body and html.escape(OWN_AGREEMENT) in body
    assert f"widerrufen ({s['withdrawn_at']:%d.%m.%Y})" in body and "05.03.2026" in body
    for trace in _other_traces(s):
        assert html.escape(trace) not in body and trace not in body, trace
    for user in USERS:
        assert user not in body, user


def test_erasure_empties_the_handover_packages_and_own_agreements_not_the_other_persons(
        client, auth, world, clock, owner_db, settings, tmp_path, app):
    app.state.settings = settings.model_copy(update={"erasure_tombstone_dir": tmp_path})
    s = _scene(client, auth, world, clock)
    p, q = s["p"], s["q"]
    cm, dpo, abh = auth(*CM, user=USERS[0]), auth(*DPO, user=USERS[1]), auth(*ABH, user=USERS[3])
    own, other = s["handovers"][p["id"]]["id"], s["handovers"][q["id"]]["id"]
    # Before: the receiver reads the person's values in the package.
    assert ok(client.get(f"/handovers/{own}", headers=abh))["package"]["values"]["family_name"] == "Haddad"
    ok(client.post(f"/chains/{s['chains'][p['id']]['id']}/close", json={"reason": "ended_by_person"}, headers=cm))
    r = register(client, dpo, p["id"], "erasure")
    ok(client.post(f"/persons/{p['id']}/erasure", headers=dpo,
                   json={"request_id": r["id"], "legal_assessment": "Einwilligung widerrufen, keine Aufbewahrungspflicht"}))

    with owner_db.connect() as conn:
        packages = dict(conn.execute(text("SELECT id::text, package_ciphertext FROM handovers")).all())
        texts = dict(conn.execute(text("SELECT id::text, text_ciphertext FROM conference_agreements")).all())
    assert packages[own] is None and packages[other] is not None
    assert texts[s["agreements"][p["id"]]] is None and texts[s["agreements"][q["id"]]] is not None

    # The receiver sees no value of the erased person: the handover answers 410, naming nothing.
    gone = client.get(f"/handovers/{own}", headers=abh)
    body = problem(gone, 410, "person-erased")
    assert "values" not in json.dumps(body) and "Haddad" not in gone.text and "Rania" not in gone.text
    # The other person's package and agreement read as before.
    assert ok(client.get(f"/handovers/{other}", headers=abh))["package"]["values"]["family_name"] == "Okonkwo"
    conf = ok(client.get(f"/conferences/{s['conference']['id']}", headers=abh))
    assert [a["text"] for a in conf["agreements"]] == [OTHER_AGREEMENT]
    assert p["id"] not in json.dumps(conf) and OWN_AGREEMENT not in json.dumps(conf)
    access = register(client, dpo, q["id"], "access")
    report = ok(client.get(f"/persons/{q['id']}/access-report", params={"request_id": access["id"]}, headers=dpo))
    assert [c["agreements"][0]["text"] for c in report["conference_cases"]] == [OTHER_AGREEMENT]
    [kept] = report["handovers"]
    assert {"family_name", "residence_status"} <= {f["field"] for f in kept["package_fields"]}


# --- the operator's commands ------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path, service_url, pg_url):
    """``cli("keys", "status", CASEMGMT_MASTER_KEY=...)`` -> (exit code, stdout, stderr), as the
    service role (the schema owner for `keys rotate`), with a tombstone directory."""
    from casemgmt.cli import main
    from casemgmt.config import get_settings

    for name in list(os.environ):
        if name.startswith(("CASEMGMT_AUDIT_CHECKPOINT", "CASEMGMT_RETIRED_MASTER", "CASEMGMT_ERASURE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CASEMGMT_DATABASE_URL", service_url)
    monkeypatch.setenv("CASEMGMT_MIGRATION_DATABASE_URL", pg_url)
    monkeypatch.setenv("CASEMGMT_MASTER_KEY", base64.b64encode(conftest.MASTER_KEY).decode())
    monkeypatch.setenv("CASEMGMT_POLICY_DIR", str(conftest.ROOT / "policies"))
    monkeypatch.setenv("CASEMGMT_ERASURE_TOMBSTONE_DIR", str(tmp_path / "tombstones"))

    def run(*argv: str, **env: str) -> tuple[int, str, str]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    yield run
    get_settings.cache_clear()


def _fields(owner_db, person_id: str) -> set[str]:
    with owner_db.connect() as conn:
        return set(conn.execute(text("SELECT field FROM person_fields WHERE person_id = :p"), {"p": person_id}).scalars())


def _state(owner_db, person_id: str) -> tuple[str, int]:
    with owner_db.connect() as conn:
        return (conn.execute(text("SELECT processing FROM persons WHERE id = :p"), {"p": person_id}).scalar(),
                conn.execute(text("SELECT count(*) FROM person_keys WHERE person_id = :p"), {"p": person_id}).scalar())


def test_retention_run_dry_run_then_run_then_replay_dry_run(cli, client, auth, world, owner_db, tmp_path):
    """The commands run on the wall clock, so the cases are aged relative to it."""
    from test_retention import _age_case

    from casemgmt.rights.tombstones import Tombstone, append, read

    cm = auth(*CM, user=USERS[0])
    town = world.jurisdictions["wittmar"]
    partial = new_person(client, cm, town, **NAMES)
    everything = new_person(client, cm, town, **(NAMES | {"given_names": "Nour"}))
    running = new_person(client, cm, town, **(NAMES | {"given_names": "Lina"}))
    for x in (partial, everything, running):
        started(client, cm, x)
    now = datetime.now(UTC)
    # Closed three years and two months ago: case notes (3 years) and the phone (2 years after the
    # last contact) are due, the name (10 years) and the German level (5 years) are not.
    _age_case(owner_db, partial["id"], now - timedelta(days=3 * 365 + 60))
    _age_case(owner_db, everything["id"], now - timedelta(days=12 * 365))  # every period has passed
    before = {x["id"]: _fields(owner_db, x["id"]) for x in (partial, everything, running)}
    assert {"case_notes", "phone", "family_name"} <= before[partial["id"]]

    code, out, err = cli("retention", "run", "--dry-run")
    assert code == 0, err
    assert "would delete per category (persons):" in out and "case_notes 2" in out and "contact 2" in out
    assert "would erase 1 persons" in out
    assert "due from " in out  # and what comes due in the next 30 days
    assert {x: _fields(owner_db, x) for x in before} == before  # the dry run changed nothing
    assert {_state(owner_db, x) for x in before} == {("active", 1)}
    assert not (tmp_path / "tombstones" / "erasures.tombstones").exists()

    code, out, err = cli("retention", "run")
    assert code == 0, err
    assert "deleted per category (persons):" in out and "case_notes 2" in out and "erased 1 persons" in out
    assert _fields(owner_db, partial["id"]) == {"family_name", "given_names", "birth_date", "german_level"}
    assert _fields(owner_db, everything["id"]) == set() and _state(owner_db, everything["id"]) == ("erased", 0)
    assert _fields(owner_db, running["id"]) == before[running["id"]]  # its case is still open
    assert [t.person_id for t in read(tmp_path / "tombstones")] == [uuid.UUID(everything["id"])]
    code, out, _ = cli("retention", "run")
    assert code == 0 and "nothing" in out and "erased 0 persons" in out  # a second run changes nothing

    # A backup restored from before `partial` was erased elsewhere: the file names them, this
    # database still holds their key. The dry run lists them and changes nothing.
    append(tmp_path / "tombstones", [Tombstone(uuid.UUID(partial["id"]), now, "request", None)])
    code, out, err = cli("erasure", "replay", "--dry-run")
    assert code == 0, err
    assert out.startswith("dry run: 2 tombstones: 1 persons erased again")
    assert f"would erase again: {partial['id']}" in out and everything["id"] not in out
    assert _state(owner_db, partial["id"]) == ("active", 1) and "family_name" in _fields(owner_db, partial["id"])
    code, out, err = cli("erasure", "replay")
    assert code == 0, err
    assert f"erased again: {partial['id']}" in out
    assert _state(owner_db, partial["id"]) == ("erased", 0) and _fields(owner_db, partial["id"]) == set()


def test_keys_status_fails_while_keys_remain_under_a_retired_master_key_until_rotated(
        cli, client, auth, world, clock, engine, policies):
    from casemgmt.database import make_sessionmaker
    from casemgmt.demo.seed import actor_of
    from casemgmt.jurisdictions.models import Organisation
    from casemgmt.privacy.crypto import KeyRing
    from casemgmt.privacy.service import Privacy, read_person

    cm = auth(*CM, user=USERS[0])
    people = [new_person(client, cm, world.jurisdictions["wittmar"], **(NAMES | {"given_names": g}))
              for g in ("Rania", "Samira")]
    old = base64.b64encode(conftest.MASTER_KEY).decode()
    new_master = os.urandom(32)
    rotating = {"CASEMGMT_MASTER_KEY": base64.b64encode(new_master).decode(), "CASEMGMT_RETIRED_MASTER_KEYS": old}
    code, out, err = cli("keys", "status")
    assert code == 0, err + out  # nothing to rotate under the key they were written with
    code, out, err = cli("keys", "status", **rotating)
    assert code == 1, err + out
    assert "2 person keys still under another master key" in out
    code, out, err = cli("keys", "rotate", **rotating)
    assert code == 0, err + out
    assert "rewrapped 2 person keys" in out and "rotation complete" in out
    code, out, err = cli("keys", "status", **rotating)
    assert code == 0, err + out
    assert out.rstrip().endswith("rotation complete")
    # Only the new master key is needed from now on: both persons read as before.
    only_new = KeyRing.from_master(new_master)
    factory = make_sessionmaker(engine, audit_key=only_new.audit_key, audit_key_id=only_new.key_id)
    privacy = Privacy(policies.data, only_new)
    for person in people:
        with factory() as s:
            ki = actor_of(s.get(Organisation, world.organisations["ennetal_ki"]), "cm", frozenset({"case_manager"}))
            got = read_person(s, privacy, ki, uuid.UUID(person["id"]), None, clock.now)
        assert got.fields["given_names"] == person["fields"]["given_names"]
