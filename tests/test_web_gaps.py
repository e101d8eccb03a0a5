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
