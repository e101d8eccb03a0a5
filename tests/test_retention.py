"""Retention deletes exactly what is due: the periods (pure, exhaustively with hypothesis,
including the boundary day in Europe/Berlin), and ``retention run`` on PostgreSQL: the due
categories go, the rest stays, a legal hold stops it, a second run changes nothing, and a person
whose every category has passed is erased."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st
from http_helpers import ok
from sqlalchemy import text
from test_rights_api import NAMES, new_person
from test_api import started

from casemgmt.rights import periods
from casemgmt.rights.erasure import Clocks, due_categories
from casemgmt.rights.retention import run, upcoming

moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31),
                       timezones=st.just(UTC))


def oracle_due(start: datetime, years: int) -> date:
    """Independently: the Berlin date of the start, the same month and day ``years`` on (28
    February for 29 February in a common year), plus one day."""
    local = start.astimezone(periods.BERLIN).date()
    year = local.year + years
    try:
        end = local.replace(year=year)
    except ValueError:  # 29 February
        end = date(year, 2, 28)
    return end + timedelta(days=1)


@given(moments, st.integers(min_value=0, max_value=30))
def test_deletion_day_follows_bgb_in_berlin(start, years):
    assert periods.deletion_due(start, years) == oracle_due(start, years)


@given(moments, st.integers(min_value=0, max_value=12), st.integers(min_value=-3, max_value=3))
def test_due_exactly_from_the_day_after_the_period_in_berlin(start, years, offset):
    due = periods.deletion_due(start, years)
    # Midnight in Berlin of a day around the boundary, one second before and at it.
    day = due + timedelta(days=offset)
    midnight = datetime(day.year, day.month, day.day, tzinfo=periods.BERLIN)
    assert periods.is_due(start, years, midnight) is (day >= due)
    assert periods.is_due(start, years, midnight - timedelta(seconds=1)) is (day - timedelta(days=1) >= due)


def test_the_boundary_is_berlin_midnight_not_utc():
    # Closed at 23:30 UTC on 15 March 2020 = 00:30 on 16 March in Berlin: kept through 16 March 2023.
    start = datetime(2020, 3, 15, 23, 30, tzinfo=UTC)
    assert periods.deletion_due(start, 3) == date(2023, 3, 17)
    assert not periods.is_due(start, 3, datetime(2023, 3, 16, 22, 59, 59, tzinfo=UTC))  # 23:59:59 Berlin
    assert periods.is_due(start, 3, datetime(2023, 3, 16, 23, 0, tzinfo=UTC))  # 00:00 Berlin (CET)
    assert periods.deletion_due(datetime(2020, 2, 29, 12, tzinfo=UTC), 1) == date(2021, 3, 1)


@given(st.dictionaries(st.sampled_from(["identity", "contact", "residence", "benefits", "education", "language",
                                        "family", "housing", "health", "case_notes", "feedback"]),
                       st.integers(min_value=0, max_value=15)),
       st.one_of(st.none(), moments), st.one_of(st.none(), moments), moments)
@settings(max_examples=200)
def test_exactly_the_categories_whose_period_passed_are_due(policies, years, closed, contact, now):
    from dataclasses import replace

    from casemgmt.privacy.policy import RetentionRule

    cats = {k: replace(c, retention=RetentionRule(years.get(k, c.retention.years), c.retention.after,
                                                  c.retention.source, c.retention.obligation))
            for k, c in policies.data.categories.items()}
    policy = replace(policies.data, categories=cats)
    clocks = Clocks(closed, contact)
    expected = {k for k, c in cats.items()
                if (start := getattr(clocks, c.retention.after)) is not None
                and periods.local_date(now) >= oracle_due(start, c.retention.years)}
    assert due_categories(policy, clocks, now) == expected


def _age_case(owner_db, person_id: str, closed_at: datetime) -> None:
    """Move a person's whole history back in time (as if the case had closed then)."""
    p = {"p": person_id, "t": closed_at}
    with owner_db.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("UPDATE persons SET created_at = :t - interval '400 days' WHERE id = :p"), p)
        conn.execute(text("UPDATE person_fields SET updated_at = :t - interval '400 days' WHERE person_id = :p"), p)
        conn.execute(text("UPDATE consents SET recorded_at = :t - interval '400 days' WHERE person_id = :p"), p)
        conn.execute(text("UPDATE chains SET lifecycle = 'closed', closed_reason = 'moved_away', closed_at = :t, "
                          "updated_at = :t WHERE person_id = :p"), p)
        conn.execute(text("UPDATE handovers SET updated_at = :t WHERE person_id = :p"), p)


def test_retention_run_deletes_what_is_due_and_nothing_else(client, auth, world, clock, owner_db, session_factory,
                                                           privacy, policies):
    cm = auth("ennetal_ki", "case_manager")
    dpo = auth("ennetal_ki", "dpo")
    conference_category = policies.steering.conference_category
    # Closed just over three years ago (Berlin): housing, health, case notes are due, and the
    # contact data (two years after the last contact); identity, language, residence stay.
    due_person = new_person(client, cm, world.jurisdictions["wittmar"], **NAMES)
    started(client, cm, due_person)
    boundary = new_person(client, cm, world.jurisdictions["wittmar"], **(NAMES | {"given_names": "Lina"}))
    started(client, cm, boundary)
    held = new_person(client, cm, world.jurisdictions["wittmar"], **(NAMES | {"given_names": "Omar"}))
    started(client, cm, held)
    everything = new_person(client, cm, world.jurisdictions["wittmar"], **(NAMES | {"given_names": "Nour"}))
    started(client, cm, everything)
    today = periods.local_date(clock.now)  # 2026-03-02
    _age_case(owner_db, due_person["id"], datetime(2023, 2, 20, 12, tzinfo=UTC))
    # Closed on 2 March 2023 (Berlin) at 00:30: kept through 2 March 2026, which is today.
    _age_case(owner_db, boundary["id"], datetime(2023, 3, 1, 23, 30, tzinfo=UTC))
    _age_case(owner_db, held["id"], datetime(2023, 2, 20, 12, tzinfo=UTC))
    _age_case(owner_db, everything["id"], datetime(2014, 2, 20, 12, tzinfo=UTC))
    ok(client.post(f"/persons/{held['id']}/legal-hold", json={"reason": "Klageverfahren"}, headers=dpo), 201)

    with session_factory() as session:
        soon = upcoming(session, privacy, conference_category, clock.now, 30)
    entries = {(e["person_id"], e["category"]): e for e in soon["persons"]}
    assert entries[(boundary["id"], "case_notes")]["due"] == (today + timedelta(days=1)).isoformat()
    assert entries[(held["id"], "case_notes")]["stopped_by"] == "legal_hold"
    api = ok(client.get("/retention/due", headers=dpo))
    assert {c["category"]: c["persons"] for c in api["categories"]}["case_notes"] == 3  # due_person, boundary, everything (not the held one)

    dry = run(session_factory, privacy, conference_category, clock.now, dry_run=True, batch=2)
    assert dry.categories_deleted["case_notes"] == 2 and len(dry.erased) == 1  # due_person, everything
    with owner_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM person_fields WHERE person_id = :p"),
                            {"p": due_person["id"]}).scalar() == len(NAMES) - 1  # dry run changed nothing

    report = run(session_factory, privacy, conference_category, clock.now, batch=2)
    assert report.batches >= 2 and report.erased == [uuid.UUID(everything["id"])]

    def fields(pid):
        with owner_db.connect() as conn:
            return set(conn.execute(text("SELECT field FROM person_fields WHERE person_id = :p"), {"p": pid}).scalars())

    assert fields(due_person["id"]) == {"family_name", "given_names", "birth_date", "german_level"}
    assert "case_notes" in fields(boundary["id"]) and "phone" not in fields(boundary["id"])  # contact: 2 years
    assert fields(held["id"]) == fields(boundary["id"]) | {"case_notes"} | {"phone"}
    assert fields(everything["id"]) == set()
    # The next day the boundary person's case notes go; running twice changes nothing more.
    clock.advance(days=1)
    again = run(session_factory, privacy, conference_category, clock.now)
    assert dict(again.categories_deleted) == {"case_notes": 1}
    assert "case_notes" not in fields(boundary["id"])
    third = run(session_factory, privacy, conference_category, clock.now)
    assert sum(third.categories_deleted.values()) == 0 and third.erased == []
    # The person keeps reading for the case manager what is left; the erased one answers 410.
    assert set(ok(client.get(f"/persons/{due_person['id']}", headers=cm))["fields"]) >= {"family_name", "german_level"}
    assert client.get(f"/persons/{everything['id']}", headers=cm).status_code == 410
