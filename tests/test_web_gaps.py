"""The gaps closed in the screens after the first two rounds: the chain page's handovers in one
audited call, names on "Meine Fälle" through the exit point, the data protection officer's
request register and legal hold as forms, and refusals in German."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from test_web_screens import _id_from, register_and_start
from web_helpers import browser_of, csrf_of, demo_app, form_post  # noqa: F401 (fixtures)

from casemgmt.privacy.models import AuditEvent


def audited(db, subtype: str, entity_id: str | None = None) -> int:
    """How many audit rows of ``subtype`` (for ``entity_id``) the trail holds."""
    stmt = select(func.count()).select_from(AuditEvent).where(AuditEvent.subtype == subtype)
    if entity_id is not None:
        stmt = stmt.where(AuditEvent.entity_id == entity_id)
    with db.connect() as conn:
        return conn.scalar(stmt)


def test_chain_page_lists_its_handovers_in_one_audited_read(browser_of, world, db):
    cm = browser_of("cm.ennetal")
    _person_id, chain_id = register_and_start(cm, world)
    resp = form_post(cm, f"/ui/ketten/{chain_id}", f"/ui/ketten/{chain_id}/uebergaben",
                     {"kind": "step", "step_key": "residence_permit"})
    handover_id = _id_from(resp.headers["location"], "/ui/uebergaben")
    abh = browser_of("abh.ennetal")
    form_post(abh, f"/ui/uebergaben/{handover_id}", f"/ui/uebergaben/{handover_id}",
              {"action": "reject", "reason": "Zuständig ist die Stadt Hagenau"})
    before = audited(db, "chain.handovers", chain_id)
    page = cm.get(f"/ui/ketten/{chain_id}").text
    # The rejected handover is listed with its state, read once as GET /chains/{id}/handovers reads it.
    assert f"/ui/uebergaben/{handover_id}" in page and "Abgelehnt" in page
    assert audited(db, "chain.handovers", chain_id) == before + 1
    # The ABH (receiver) sees it on the chain page too; another office's page stays 404.
    assert f"/ui/uebergaben/{handover_id}" in abh.get(f"/ui/ketten/{chain_id}").text
    assert browser_of("jc.ennetal").get(f"/ui/ketten/{chain_id}").status_code == 404


def test_my_cases_show_the_name_the_case_manager_may_see(browser_of, world, db):
    cm = browser_of("cm.ennetal")
    _person_id, chain_id = register_and_start(cm, world)
    before = audited(db, "person.list")
    page = cm.get("/ui/faelle").text
    row = re.search(rf'<tr>\s*<td>([^<]*)</td>\s*<td><a href="/ui/ketten/{chain_id}"', page)
    assert row and row.group(1) == "Beispiel, Nora", page[-3000:]
    # Read through the exit point as GET /persons reads, once for the page (the chain is in both
    # tables, stalled and all), and only the name fields are read and audited.
    with db.connect() as conn:
        rows = conn.execute(select(AuditEvent.fields, AuditEvent.outcome).where(
            AuditEvent.subtype == "person.list").order_by(AuditEvent.id)).all()[before:]
    assert [(r.fields, r.outcome) for r in rows] == [('["family_name","given_names"]', "success")]


def test_a_withheld_name_reads_as_not_released():
    from casemgmt.privacy.schemas import PersonRecordOut, Redaction
    from casemgmt.web.faelle import shown_name

    def record(**fields):
        return PersonRecordOut(id=uuid.uuid4(), lead_jurisdiction_id=4, created_at=datetime.now(UTC),
                               purpose="case_management", fields=fields, legal_bases={}, redacted=[
                                   Redaction(field=f, category="identity", reason="no legal basis")
                                   for f in ("family_name", "given_names") if f not in fields])

    assert shown_name(record(family_name="Haddad", given_names="Rana")) == "Haddad, Rana"
    assert shown_name(record(family_name="Haddad")) == "Haddad"
    assert shown_name(record()) is None and shown_name(None) is None


def test_dpo_registers_a_request_moves_it_and_sets_and_lifts_a_legal_hold(browser_of, world, db):
    person_id, _chain_id = register_and_start(browser_of("cm.ennetal"), world)
    dsb = browser_of("dsb.ennetal")
    register = {"person_id": person_id, "kind": "access", "received_at": "",
                "identity_checked_by": "Bürgerbüro Wittmar", "identity_check_method": "Personalausweis vorgelegt"}
    # The scrubber refuses the person's name in a text that stays in the register for years:
    # the error summary links to the field, nothing is registered.
    refused = form_post(dsb, "/ui/datenschutz/anfragen", "/ui/datenschutz/anfragen",
                        {**register, "identity_checked_by": "Nora Beispiel selbst"}, expect=422)
    assert 'href="#feld-identity_checked_by"' in refused.text and 'id="feld-identity_checked_by"' in refused.text
    assert "Der Text enthält personenbezogene Daten" in refused.text and "remove personal data" not in refused.text
    assert audited(db, "request.register") == 0
    missing = form_post(dsb, "/ui/datenschutz/anfragen", "/ui/datenschutz/anfragen",
                        {**register, "kind": "", "person_id": "00000000-0000-4000-8000-000000000000"}, expect=422)
    assert 'href="#feld-kind"' in missing.text and 'href="#feld-person_id"' not in missing.text  # kind first
    resp = form_post(dsb, "/ui/datenschutz/anfragen", "/ui/datenschutz/anfragen", register)
    request_id = _id_from(resp.headers["location"], "/ui/datenschutz/anfragen")
    page = f"/ui/datenschutz/anfragen/{request_id}"
    assert "eingegangen" in dsb.get(page).text

    form_post(dsb, page, page, {"action": "start", "expected_version": "1"})
    # Extending needs the reason, at its field.
    no_reason = form_post(dsb, page, page, {"action": "extend", "expected_version": "2", "reason": ""}, expect=422)
    assert 'href="#feld-extend-reason"' in no_reason.text
    form_post(dsb, page, page, {"action": "extend", "expected_version": "2",
                                "reason": "Umfangreiche Akten bei drei Stellen"})
    form_post(dsb, page, page, {"action": "answer", "expected_version": "3", "reason": "Auskunft versandt"})
    done = dsb.get(page).text
    assert "beantwortet" in done and "Auskunft versandt" in done and "Umfangreiche Akten" in done
    assert "Bearbeitung beginnen" not in done  # an answered request has no actions left

    # A second request, refused with its reason; a stale form is refused in German, nothing changed.
    resp = form_post(dsb, "/ui/datenschutz/anfragen", "/ui/datenschutz/anfragen", {**register, "kind": "erasure"})
    second = _id_from(resp.headers["location"], "/ui/datenschutz/anfragen")
    page = f"/ui/datenschutz/anfragen/{second}"
    stale = form_post(dsb, page, page, {"action": "refuse", "expected_version": "7", "reason": "Aufbewahrungspflicht"},
                      expect=409)
    assert "inzwischen geändert" in stale.text and "eingegangen" in stale.text
    form_post(dsb, page, page, {"action": "refuse", "expected_version": "1", "reason": "Aufbewahrungspflicht SGB X"})
    assert "Aufbewahrungspflicht SGB X" in dsb.get(page).text and "abgelehnt" in dsb.get(page).text

    hold = f"/ui/datenschutz/loeschsperre?person_id={person_id}"
    assert "Keine Löschsperre" in dsb.get(hold).text
    form_post(dsb, hold, f"/ui/datenschutz/loeschsperre/{person_id}",
              {"action": "set", "reason": "Verfahren VG Arnsberg 3 K 12/26"})
    assert "Löschsperre gesetzt" in dsb.get(hold).text
    # The same form posted again (a second tab): the service's refusal, said in German.
    again = dsb.post(f"/ui/datenschutz/loeschsperre/{person_id}", follow_redirects=False,
                     data={"csrf_token": csrf_of(dsb.get(hold).text), "action": "set", "reason": "Zweites Verfahren"})
    assert again.status_code == 409 and "bereits gesetzt" in again.text and "already set" not in again.text
    form_post(dsb, hold, f"/ui/datenschutz/loeschsperre/{person_id}", {"action": "lift", "reason": "Verfahren beendet"})
    lifted = dsb.get(hold).text
    assert "Keine Löschsperre" in lifted and "Verfahren beendet" in lifted
    # A person outside the officer's area is answered at the field, as for a random id.
    other = dsb.get("/ui/datenschutz/loeschsperre?person_id=00000000-0000-4000-8000-000000000000")
    assert other.status_code == 422 and 'href="#feld-person_id"' in other.text


def test_every_refusal_of_the_services_has_a_german_text():
    import inspect

    from casemgmt import problems
    from casemgmt.web.routing import problem_text
    from casemgmt.web.texte import PROBLEM_TEXTS

    slugs = {c.slug for c in vars(problems).values()
             if inspect.isclass(c) and issubclass(c, problems.Problem) and c is not problems.Problem}
    # Every stable type has its German text (add one with a new problem type), none is invented.
    assert slugs - set(PROBLEM_TEXTS) == {"route-not-found", "method-not-allowed"}
    assert set(PROBLEM_TEXTS) <= slugs
    assert problem_text(problems.VersionConflict("the chain is at version 4")).startswith("Der Datensatz")
    # A refusal whose type has no German text keeps the service's own words.
    assert problem_text(problems.RouteNotFound("no such endpoint /x")) == "no such endpoint /x"


def test_an_office_without_a_part_in_the_case_gets_the_same_404_for_real_and_random_ids(browser_of, world):
    """Every screen with the id of a case record, opened by URL by offices that have no part in
    the case (the Jobcenter, a welfare association's case management, the course provider): the
    same German 404 for a real and a random id, naming neither the person nor the chain."""
    cm = browser_of("cm.ennetal")
    person_id, chain_id = register_and_start(cm, world)
    resp = form_post(cm, f"/ui/ketten/{chain_id}", f"/ui/ketten/{chain_id}/uebergaben",
                     {"kind": "step", "step_key": "residence_permit"})
    handover_id = _id_from(resp.headers["location"], "/ui/uebergaben")
    random = "00000000-0000-4000-8000-0000000000aa"

    def screens(p: str, c: str, h: str) -> list[str]:
        return [f"/ui/personen/{p}", f"/ui/ketten/{c}", f"/ui/uebergaben/{h}", f"/ui/personen/{p}/sprachenpass",
                f"/ui/ketten/{c}/schritte/integration_course/angebote"]

    for user in ("jc.ennetal", "cm.caritas", "vhs.ennetal"):
        outsider = browser_of(user)
        for real, fake in zip(screens(person_id, chain_id, handover_id), screens(random, random, random),
                              strict=True):
            a, b = outsider.get(real), outsider.get(fake)
            assert (a.status_code, b.status_code) == (404, 404), (user, real, a.status_code, b.status_code)
            assert "Nicht gefunden" in a.text
            assert a.text.replace(real, "").count(person_id) == 0 and chain_id not in a.text.replace(real, "")
            strip = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|csrf_token\" value=\"[^\"]+")
            assert strip.sub("", a.text) == strip.sub("", b.text), (user, real)
        # A form posted to the handover as an outsider changes nothing and is answered alike.
        page = outsider.get("/ui/")
        for h in (handover_id, random):
            posted = outsider.post(f"/ui/uebergaben/{h}", data={"csrf_token": csrf_of(page.text),
                                                                "action": "acknowledge"}, follow_redirects=False)
            assert posted.status_code == 404, (user, h, posted.status_code)
    assert "Angefragt" in browser_of("abh.ennetal").get(f"/ui/uebergaben/{handover_id}").text


def test_the_chain_page_marks_a_step_agreed_in_a_fallkonferenz(browser_of, client, auth, world):
    """A step a Fallkonferenz added to the chain says so on the chain page, with the conference
    (the template stays the spec; the chain records where the step comes from)."""
    from test_agreed_steps import agreed_case, agreement

    conf, chain, case_id = agreed_case(client, auth, world, "ennetal_abh")
    resp = client.post(f"/conferences/{conf['id']}/agreements",
                       json=agreement(case_id, world.organisations["ennetal_vhs"]),
                       headers=auth("ennetal_ki", "moderator"))
    assert resp.status_code == 200, resp.text
    page = browser_of("cm.ennetal").get(f"/ui/ketten/{chain['id']}").text
    step = page[page.index("Einstufungstest vor Kursbeginn"):]
    step = step[:step.index("</li>")]
    assert "vereinbart in der Fallkonferenz „Fallkonferenz Wittmar November“ vom 10.03.2026" in step
    # Template steps carry no such mark.
    first = page[page.index('id="schritt-arrival_assignment"'):]
    assert "Herkunft" not in first[:first.index("</li>")]
