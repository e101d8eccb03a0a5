"""The demo seeding works on PostgreSQL (as on the SQLite default) and shows chains in every
state a user should see: active, stalled by a blocked or an overdue step, completed, closed; and
handovers of every kind in every state, with overdue and escalated ones in the inboxes."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select

from casemgmt.auth.tokens import TokenVerifier
from casemgmt.chains.models import ChainEvent, ChainStep
from casemgmt.config import Settings
from casemgmt.database import make_engine, make_sessionmaker
from casemgmt.demo import seed_demo
from casemgmt.demo.seed import actor_of
from casemgmt.handovers import service as handovers_service
from casemgmt.handovers.models import Handover
from casemgmt.handovers.schemas import Box
from casemgmt.jurisdictions.models import Organisation
from casemgmt.conferences.models import Finding
from casemgmt.jurisdictions.models import Jurisdiction
from casemgmt.languagepass.models import LanguagePassEntry
from casemgmt.notifications.models import OutboxMessage
from casemgmt.offers.models import Offer
from casemgmt.policy.loader import load_policies
from casemgmt.steering.models import Proposal, WorkingGroup
from casemgmt.steering.proposals import ProposalState
from casemgmt.steering.report import build_report, cells_of, resolve_area
from conftest import ROOT, create_database, drop_database


def test_demo_seeds_a_kreis_with_chains_in_every_state(tmp_path):
    name = f"casemgmt_demo_{uuid.uuid4().hex[:8]}"
    drop_database(name)
    url = create_database(name)
    settings = Settings(database_url=url, policy_dir=ROOT / "policies", dev_key_dir=tmp_path)
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    try:
        shown = io.StringIO()
        summary = seed_demo(settings, persons=120, seed=7, now=now, progress=shown)
        # Not a terminal: a line at every tenth of the simulated time span, the last one with all
        # the persons and conferences there are.
        lines = shown.getvalue().splitlines()
        assert 10 <= len(lines) <= 16, lines
        assert "100%" in lines[-1] and "persons 120/120" in lines[-1] and "conferences 8/8" in lines[-1]
        assert "handovers 0" not in lines[-1] and "transitions 0" not in lines[-1]
        # 120 persons walked through a year, and five for the officer's desk (four old closed
        # cases reaching the end of retention, one erased).
        assert summary.created and summary.persons == 125
        assert set(summary.chains_by_template) == {
            "refugee_recognised", "tolerated_family", "eu_newcomer", "uma", "young_adult"}
        assert {"active", "stalled", "completed"} <= set(summary.chains_by_status)
        assert sum(summary.chains_by_status.values()) == 125
        engine = make_engine(url)
        with make_sessionmaker(engine)() as s:
            states = dict(s.execute(select(ChainStep.state, func.count()).group_by(ChainStep.state)).all())
            overdue = s.scalar(select(func.count()).select_from(ChainStep).where(
                ChainStep.due_at < now, ChainStep.state.in_(["planned", "ready", "in_progress", "blocked"])))
            handovers = dict(s.execute(select(Handover.state, func.count()).group_by(Handover.state)).all())
            kinds = set(s.scalars(select(Handover.kind).distinct()))
            moves = s.scalars(select(ChainEvent.reason).where(ChainEvent.kind == "lead_moved")).all()
            outbox = s.scalar(select(func.count()).select_from(OutboxMessage))
            abh = s.get(Organisation, s.scalar(select(Organisation.id).where(Organisation.key == "ennetal_abh")))
            inbox = handovers_service.inbox(s, actor_of(abh, "abh.ennetal"), Box.incoming,
                                            handovers_service.InboxFilters(), 50, None, now)
            findings = s.scalar(select(func.count()).select_from(Finding))
            groups = s.scalar(select(func.count()).select_from(WorkingGroup))
            proposal_states = set(s.scalars(select(Proposal.state).distinct()))
            policies = load_policies(ROOT / "policies")
            area = resolve_area(s, s.scalar(select(Jurisdiction.id).where(Jurisdiction.key == "kreis_ennetal")))
            document = build_report(s, policies.steering, policies.goals, area, now)
            directory = s.scalars(select(Offer)).all()
            passes = s.scalar(select(func.count(func.distinct(LanguagePassEntry.person_id))))
            enrolled = s.scalar(select(func.count()).select_from(ChainEvent).where(ChainEvent.kind == "offer_enrolled"))
        engine.dispose()
        # The Angebotsdatenbank: about 60 offers over the towns, some full, some starting within
        # two weeks, some in other languages; enrolments made on chains, Sprachenpass entries.
        assert len(directory) == 60 and len({t for o in directory for t in o.towns}) >= 6
        assert any(o.free_places == 0 for o in directory)
        assert any(o.starts_on and 0 <= (o.starts_on - now.date()).days <= 14 for o in directory)
        assert any(set(o.languages) - {"Deutsch"} for o in directory)
        assert enrolled > 0 and passes > 0
        assert any(t["key"] == "offer_demand" and t["cells"] for t in document["tables"])
        assert {"planned", "ready", "in_progress", "completed", "skipped"} <= set(states)
        assert overdue > 0
        assert {"requested", "escalated", "acknowledged", "rejected"} <= set(handovers)
        assert kinds == {"step", "rechtskreiswechsel", "relocation"}
        assert any("to Wittmar" in m or "from Wittmar" in m for m in moves), moves
        assert outbox > 0  # escalations queued their notifications
        # The ABH clerk's inbox opens with overdue, escalated handovers.
        assert inbox.items and inbox.items[0].overdue and inbox.items[0].state.value == "escalated"
        assert inbox.counts.escalated > 0
        # Conferences with findings, proposals resting in every state, a working group, and a
        # steering report with both published and suppressed cells.
        assert findings > 0 and groups >= 1
        assert proposal_states == {s.value for s in ProposalState}
        values = [cell["value"] for _, cell in cells_of(document)]
        assert any(v is None for v in values) and any(v for v in values)
        rights_are_seeded(url, now)
        # Releases of every closed quarter; their process logs keep most ended chains at k = 5.
        from casemgmt.steering.releases import run_releases

        engine = make_engine(url)
        with make_sessionmaker(engine)() as s:
            made = run_releases(s, policies.steering, policies.goals, now)
            logs = [r.document["process"]["log"] for r in made]
        engine.dispose()
        total, published = sum(g["chains_total"] for g in logs), sum(g["chains_published"] for g in logs)
        print(f"demo (120 persons): {published} of {total} ended chains in the process logs")
        assert made and total >= 10 and published >= 0.6 * total
        # Seeding again keeps the data and only prints fresh tokens.
        involvement_follows_the_facts(url, now)
        again = seed_demo(settings, persons=120, seed=7, now=now)
        assert not again.created and again.persons == 125
        verifier = TokenVerifier(settings)
        roles = {verifier.verify(token).roles[0] for *_, token in again.tokens}
        assert roles == {"case_manager", "clerk", "moderator", "steering", "dpo", "admin"}
    finally:
        drop_database(name)


def involvement_follows_the_facts(url: str, now: datetime) -> None:
    """For every organisation of the demo Kreis, the chains it lists are exactly those the facts
    make it involved with, worked out here in plain Python from the rows (the case management of
    an open chain, an assigned step that is ready, in progress or blocked, a waiting handover to
    it, an open conference with the case), plus the finished chains it managed to the end; and
    it can read exactly the persons of the chains it is involved with now."""
    from collections import defaultdict

    from casemgmt.chains import service as chains
    from casemgmt.conferences.models import Conference, ConferenceCase, ConferenceParticipant
    from casemgmt.chains.models import Chain
    from casemgmt.persons.models import Person
    from casemgmt.privacy.service import scope_clause

    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            all_chains = {c.id: c for c in s.scalars(select(Chain))}
            not_active = set(s.scalars(select(Person.id).where(Person.processing != "active")))
            expected: dict[int, set] = defaultdict(set)
            listed_extra: dict[int, set] = defaultdict(set)
            for c in all_chains.values():
                if c.lifecycle == "open":
                    expected[c.case_management_organisation_id].add(c.id)
                else:
                    listed_extra[c.case_management_organisation_id].add(c.id)
            for st in s.scalars(select(ChainStep)):
                if st.assigned_organisation_id and st.state in ("ready", "in_progress", "blocked") \
                        and all_chains[st.chain_id].lifecycle == "open":
                    expected[st.assigned_organisation_id].add(st.chain_id)
            for h in s.scalars(select(Handover)):
                if h.state in ("requested", "escalated"):
                    expected[h.receiver_organisation_id].add(h.chain_id)
            phase = {c.id: c.phase for c in s.scalars(select(Conference))}
            members = defaultdict(set)
            for p in s.scalars(select(ConferenceParticipant)):
                members[p.conference_id].add(p.organisation_id)
            for case in s.scalars(select(ConferenceCase)):
                if phase[case.conference_id] != "closed":
                    for org in members[case.conference_id]:
                        expected[org].add(case.chain_id)
            organisations = list(s.scalars(select(Organisation)))
            checked = 0
            for org in organisations:
                actor = actor_of(org, f"check.{org.key}")
                seen, cursor = set(), None
                while True:
                    page = chains.list_chains(s, chains.ChainFilters(), 200, cursor, now, actor=actor)
                    seen |= {i.id for i in page.items}
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                # A restricted or erased person's chains are stored, not listed.
                hidden = {c.id for c in all_chains.values() if c.person_id in not_active}
                assert seen == (expected[org.id] | listed_extra[org.id]) - hidden, org.key
                persons = set(s.scalars(select(Person.id).where(scope_clause(actor))))
                registered_alone = {p.id for p in s.scalars(select(Person).where(
                    Person.created_by_organisation_id == org.id))
                    if all(c.case_management_organisation_id == org.id
                           for c in all_chains.values() if c.person_id == p.id)}
                assert persons == {all_chains[c].person_id for c in expected[org.id]} | registered_alone, org.key
                checked += bool(seen)
            # Offices that own a kind of step in every template but have nothing ready see nothing:
            # the demo has such offices, and every office with a case is checked above.
            assert checked >= 10
            assert any(not expected[o.id] for o in organisations if o.kind in ("gesundheitsamt", "course_provider"))
    finally:
        engine.dispose()


def rights_are_seeded(url: str, now: datetime) -> None:
    """Requests in every state, one erased, one restricted person, a legal hold, and persons
    whose retention ends within 30 days."""
    from casemgmt.persons.models import Person
    from casemgmt.policy.loader import load_policies
    from casemgmt.privacy.crypto import KeyRing
    from casemgmt.privacy.service import Privacy
    from casemgmt.rights.models import DataSubjectRequest, ErasureTombstone, LegalHold
    from casemgmt.rights.retention import upcoming

    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as s:
            states = set(s.scalars(select(DataSubjectRequest.state).distinct()))
            assert states == {"received", "in_progress", "extended", "answered", "refused"}
            processing = dict(s.execute(select(Person.processing, func.count()).group_by(Person.processing)).all())
            assert processing["erased"] == 1 and processing["restricted"] == 1
            assert s.scalar(select(func.count()).select_from(ErasureTombstone)) == 1
            assert s.scalar(select(func.count()).select_from(LegalHold).where(LegalHold.lifted_at.is_(None))) == 1
            policies = load_policies(ROOT / "policies")
            privacy = Privacy(policies.data, KeyRing.from_master(bytes(32)))
            soon = upcoming(s, privacy, policies.steering.conference_category, now, 30)
            assert sum(c["persons"] for c in soon["categories"]) >= 3
    finally:
        engine.dispose()
