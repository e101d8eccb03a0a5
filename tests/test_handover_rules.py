"""Handover rules without a database: the NRW working-day calendar (casemgmt.handovers.calendar),
the handover lifecycle (casemgmt.handovers.lifecycle) and the handover policy loader
(casemgmt.handovers.policy).

The calendar facts are the ones a clerk in Nordrhein-Westfalen would check by hand; they are
written out as concrete dates here rather than computed, so that a wrong holiday table, a wrong
time zone or an off-by-one in the counting makes these tests fail.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casemgmt.handovers.calendar import WorkingDayCalendar
from casemgmt.handovers.lifecycle import (
    ENDED,
    PENDING,
    HandoverAction,
    HandoverKind,
    HandoverState,
    Parties,
    WaitingTime,
    allowed_actions,
    is_overdue,
    respond,
    should_escalate,
    waiting_time,
)
from casemgmt.handovers.policy import HandoverPolicy, load_handover_policy
from casemgmt.policy.loader import load_organisation_kinds
from casemgmt.policy.source import PolicyError
from casemgmt.problems import HandoverNotPending, Problem, ReasonRequired, WrongOrganisation

ROOT = Path(__file__).resolve().parent.parent
BERLIN = ZoneInfo("Europe/Berlin")
NRW = WorkingDayCalendar("DE", "NW", "Europe/Berlin")


def d(text: str) -> date:
    return date.fromisoformat(text)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- calendar: which days are holidays in NRW ------------------------------------------------

# Movable feasts, written out by hand (Easter Sunday: 2025-04-20, 2026-04-05, 2027-03-28,
# 2028-04-16, 2029-04-01, 2030-04-21).
MOVABLE_NW = {
    "Karfreitag": ["2025-04-18", "2026-04-03", "2027-03-26", "2028-04-14", "2029-03-30", "2030-04-19"],
    "Ostermontag": ["2025-04-21", "2026-04-06", "2027-03-29", "2028-04-17", "2029-04-02", "2030-04-22"],
    "Christi Himmelfahrt": ["2025-05-29", "2026-05-14", "2027-05-06", "2028-05-25", "2029-05-10",
                            "2030-05-30"],
    "Pfingstmontag": ["2025-06-09", "2026-05-25", "2027-05-17", "2028-06-05", "2029-05-21", "2030-06-10"],
    "Fronleichnam": ["2025-06-19", "2026-06-04", "2027-05-27", "2028-06-15", "2029-05-31", "2030-06-20"],
}
FIXED_NW = {
    "Neujahr": (1, 1),
    "Tag der Arbeit": (5, 1),
    "Tag der Deutschen Einheit": (10, 3),
    "Allerheiligen": (11, 1),
    "1. Weihnachtstag": (12, 25),
    "2. Weihnachtstag": (12, 26),
}
YEARS = range(2025, 2031)

HOLIDAYS_NW = [
    pytest.param(d(day), id=f"{name} {day}") for name, days in MOVABLE_NW.items() for day in days
] + [
    pytest.param(date(year, month, day), id=f"{name} {year}")
    for name, (month, day) in FIXED_NW.items() for year in YEARS
]

# Buß- und Bettag: the Wednesday before 23 November.
BUSS_UND_BETTAG = {2025: "2025-11-19", 2026: "2026-11-18", 2027: "2027-11-17", 2028: "2028-11-22",
                   2029: "2029-11-21", 2030: "2030-11-20"}
NOT_HOLIDAYS_NW = [
    pytest.param(date(year, 10, 31), id=f"Reformationstag {year}") for year in YEARS
] + [
    pytest.param(d(day), id=f"Buß- und Bettag {year}") for year, day in BUSS_UND_BETTAG.items()
] + [
    pytest.param(date(year, 12, 24), id=f"Heiligabend {year}") for year in YEARS
] + [
    pytest.param(date(year, 12, 31), id=f"Silvester {year}") for year in YEARS
] + [
    pytest.param(date(year, 8, 15), id=f"Mariä Himmelfahrt {year}") for year in YEARS
] + [
    pytest.param(date(year, 3, 8), id=f"Frauentag (Berlin only) {year}") for year in YEARS
] + [
    pytest.param(date(year, 9, 20), id=f"Weltkindertag (Thüringen only) {year}") for year in YEARS
]


@pytest.mark.parametrize("day", HOLIDAYS_NW)
def test_nrw_holiday(day: date) -> None:
    assert day in NRW.holidays_of(day.year)
    assert NRW.holiday_name(day)
    assert not NRW.is_working_day(day)


@pytest.mark.parametrize("day", NOT_HOLIDAYS_NW)
def test_not_a_holiday_in_nrw(day: date) -> None:
    assert day not in NRW.holidays_of(day.year)
    assert NRW.holiday_name(day) is None
    assert NRW.is_working_day(day) == (day.weekday() < 5)


def test_nrw_has_exactly_the_expected_holidays_in_2027() -> None:
    assert NRW.holidays_of(2027) == frozenset(map(d, [
        "2027-01-01", "2027-03-26", "2027-03-29", "2027-05-01", "2027-05-06", "2027-05-17",
        "2027-05-27", "2027-10-03", "2027-11-01", "2027-12-25", "2027-12-26",
    ]))


@pytest.mark.parametrize(
    ("subdivision", "day"),
    [
        pytest.param("NI", d("2025-10-31"), id="Reformationstag in Niedersachsen"),
        pytest.param("SN", d("2025-11-19"), id="Buß- und Bettag in Sachsen"),
        pytest.param("SL", d("2025-08-15"), id="Mariä Himmelfahrt im Saarland"),
    ],
)
def test_days_that_are_holidays_elsewhere_are_working_days_in_nrw(subdivision: str, day: date) -> None:
    assert day.weekday() < 5  # a weekday, so only the holiday table decides
    assert not WorkingDayCalendar("DE", subdivision).is_working_day(day)
    assert NRW.is_working_day(day)


def test_fronleichnam_and_allerheiligen_are_land_holidays_not_federal() -> None:
    # Berlin has neither, which shows the subdivision is really used.
    berlin = WorkingDayCalendar("DE", "BE")
    assert berlin.is_working_day(d("2026-06-04"))
    assert berlin.is_working_day(d("2027-11-01"))
    assert not NRW.is_working_day(d("2026-06-04"))
    assert not NRW.is_working_day(d("2027-11-01"))


def test_weekends_are_not_working_days() -> None:
    assert [NRW.is_working_day(d("2026-03-02") + timedelta(days=i)) for i in range(7)] == [
        True, True, True, True, True, False, False]


# --- calendar: counting working days ---------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "days", "due"),
    [
        pytest.param("2026-03-02", 0, "2026-03-02", id="zero days is the same day"),
        pytest.param("2026-03-02", 1, "2026-03-03", id="Monday plus one"),
        pytest.param("2026-03-06", 1, "2026-03-09", id="Friday plus one is Monday"),
        pytest.param("2026-03-07", 1, "2026-03-09", id="Saturday plus one is Monday"),
        pytest.param("2026-03-02", 5, "2026-03-09", id="a plain week"),
        pytest.param("2026-04-02", 5, "2026-04-13", id="Gründonnerstag skips Karfreitag and Ostermontag"),
        pytest.param("2026-04-02", 1, "2026-04-07", id="Gründonnerstag plus one is Easter Tuesday"),
        pytest.param("2026-12-18", 5, "2026-12-28", id="Christmas 2026 (24th counts, 25th is Friday)"),
        pytest.param("2027-12-17", 5, "2027-12-24", id="Christmas 2027 (Heiligabend is a working day)"),
        pytest.param("2026-12-23", 6, "2027-01-04", id="over Christmas and New Year"),
        pytest.param("2026-06-03", 1, "2026-06-05", id="skips Fronleichnam 2026"),
        pytest.param("2028-06-14", 1, "2028-06-16", id="skips Fronleichnam 2028"),
        pytest.param("2027-10-29", 1, "2027-11-02", id="skips weekend and Allerheiligen 2027"),
        pytest.param("2026-10-30", 1, "2026-11-02", id="Reformationstag is no holiday here"),
        pytest.param("2026-04-30", 1, "2026-05-04", id="skips 1 May (a Friday in 2026)"),
        pytest.param("2026-05-13", 1, "2026-05-15", id="skips Christi Himmelfahrt"),
        pytest.param("2026-05-22", 1, "2026-05-26", id="skips Pfingstmontag"),
        pytest.param("2026-10-02", 1, "2026-10-05", id="3 October on a Saturday changes nothing"),
    ],
)
def test_add_working_days(start: str, days: int, due: str) -> None:
    assert NRW.add_working_days(d(start), days) == d(due)


def test_add_working_days_refuses_negative_days() -> None:
    with pytest.raises(ValueError):
        NRW.add_working_days(d("2026-03-02"), -1)


@pytest.mark.parametrize(
    ("start", "end", "count"),
    [
        pytest.param("2026-03-04", "2026-03-04", 0, id="same day"),
        pytest.param("2026-03-05", "2026-03-04", 0, id="end before start"),
        pytest.param("2026-03-04", "2026-03-05", 1, id="next day"),
        pytest.param("2026-03-06", "2026-03-09", 1, id="Friday to Monday"),
        pytest.param("2026-03-06", "2026-03-08", 0, id="Friday to Sunday"),
        pytest.param("2026-03-07", "2026-03-08", 0, id="Saturday to Sunday"),
        pytest.param("2026-03-02", "2026-03-16", 10, id="two plain weeks"),
        pytest.param("2026-04-02", "2026-04-07", 1, id="over Easter"),
        pytest.param("2026-12-23", "2027-01-04", 6, id="over Christmas and New Year"),
        pytest.param("2026-06-03", "2026-06-05", 1, id="over Fronleichnam"),
        pytest.param("2026-01-01", "2026-12-31", 253, id="the year 2026 after New Year"),
    ],
)
def test_working_days_between(start: str, end: str, count: int) -> None:
    assert NRW.working_days_between(d(start), d(end)) == count


# --- calendar: deadlines in local time ---------------------------------------------------------


@pytest.mark.parametrize(
    ("requested_at", "days", "due_date", "due_at"),
    [
        pytest.param(utc(2026, 4, 2, 8, 0), 5, "2026-04-13", utc(2026, 4, 13, 22, 0),
                     id="Gründonnerstag, Easter skipped, summer time"),
        pytest.param(utc(2026, 12, 18, 9, 0), 5, "2026-12-28", utc(2026, 12, 28, 23, 0),
                     id="Friday before Christmas, winter time"),
        pytest.param(utc(2026, 6, 7, 23, 30), 5, "2026-06-15", utc(2026, 6, 15, 22, 0),
                     id="Sunday 23:30 UTC is Monday 01:30 in Berlin"),
        pytest.param(utc(2026, 6, 7, 21, 59), 5, "2026-06-12", utc(2026, 6, 12, 22, 0),
                     id="Sunday 23:59 in Berlin is still Sunday"),
        pytest.param(utc(2026, 1, 11, 23, 0), 5, "2026-01-19", utc(2026, 1, 19, 23, 0),
                     id="Sunday 23:00 UTC is Monday 00:00 in Berlin (winter)"),
        pytest.param(utc(2026, 1, 11, 22, 59), 5, "2026-01-16", utc(2026, 1, 16, 23, 0),
                     id="Sunday 22:59 UTC is still Sunday in Berlin (winter)"),
        pytest.param(utc(2026, 10, 19, 8, 0), 5, "2026-10-26", utc(2026, 10, 26, 23, 0),
                     id="requested in summer time, due after the change to winter time"),
        pytest.param(utc(2026, 10, 16, 8, 0), 5, "2026-10-23", utc(2026, 10, 23, 22, 0),
                     id="due on the Friday before the change to winter time"),
        pytest.param(utc(2026, 3, 24, 8, 0), 5, "2026-03-31", utc(2026, 3, 31, 22, 0),
                     id="requested in winter time, due after the change to summer time"),
        pytest.param(utc(2026, 3, 20, 8, 0), 5, "2026-03-27", utc(2026, 3, 27, 23, 0),
                     id="due on the Friday before the change to summer time"),
        pytest.param(utc(2026, 3, 28, 23, 30), 1, "2026-03-30", utc(2026, 3, 30, 22, 0),
                     id="requested in the night of the change to summer time"),
        pytest.param(utc(2026, 6, 3, 10, 0), 1, "2026-06-05", utc(2026, 6, 5, 22, 0),
                     id="Fronleichnam skipped"),
    ],
)
def test_deadline(requested_at: datetime, days: int, due_date: str, due_at: datetime) -> None:
    got_date, got_at = NRW.deadline(requested_at, days)
    assert got_date == d(due_date)
    assert got_at == due_at
    assert got_at.utcoffset() == timedelta(0)


def test_deadline_does_not_depend_on_the_time_zone_of_the_input() -> None:
    moment = utc(2026, 6, 7, 23, 30)
    assert NRW.deadline(moment.astimezone(BERLIN), 5) == NRW.deadline(moment, 5)
    assert NRW.deadline(moment.astimezone(ZoneInfo("America/New_York")), 5) == NRW.deadline(moment, 5)


def test_local_date() -> None:
    assert NRW.local_date(utc(2026, 6, 7, 21, 59)) == d("2026-06-07")
    assert NRW.local_date(utc(2026, 6, 7, 22, 0)) == d("2026-06-08")
    assert NRW.local_date(utc(2026, 12, 31, 22, 59)) == d("2026-12-31")
    assert NRW.local_date(utc(2026, 12, 31, 23, 0)) == d("2027-01-01")


# --- calendar and waiting time: properties -----------------------------------------------------

DATES = st.dates(min_value=date(2024, 1, 1), max_value=date(2032, 12, 31))
MOMENTS = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2032, 12, 31),
                       timezones=st.just(UTC))


@settings(max_examples=200, deadline=None)
@given(DATES, st.integers(min_value=1, max_value=80))
def test_add_working_days_lands_on_a_working_day_and_counts_back(start: date, n: int) -> None:
    due = NRW.add_working_days(start, n)
    assert due > start
    assert NRW.is_working_day(due)
    assert NRW.working_days_between(start, due) == n
    # No working day is skipped: the day before the due date is n - 1 working days away.
    assert NRW.working_days_between(start, due - timedelta(days=1)) == n - 1


@settings(max_examples=150, deadline=None)
@given(DATES, st.integers(min_value=0, max_value=40), st.integers(min_value=0, max_value=40))
def test_add_working_days_is_monotonic(start: date, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    first, second = NRW.add_working_days(start, lo), NRW.add_working_days(start, hi)
    assert first <= second
    assert (first < second) == (lo < hi)


@settings(max_examples=150, deadline=None)
@given(DATES, DATES)
def test_working_days_between_never_exceeds_calendar_days(start: date, end: date) -> None:
    count = NRW.working_days_between(start, end)
    assert 0 <= count <= max((end - start).days, 0)


@settings(max_examples=200, deadline=None)
@given(MOMENTS, st.integers(min_value=1, max_value=60))
def test_deadline_is_after_the_request_and_ends_at_local_midnight(requested_at: datetime, n: int) -> None:
    due_date, due_at = NRW.deadline(requested_at, n)
    assert due_at > requested_at
    assert NRW.is_working_day(due_date)
    assert due_date > NRW.local_date(requested_at)
    assert NRW.working_days_between(NRW.local_date(requested_at), due_date) == n
    local = due_at.astimezone(BERLIN)
    assert local.time() == time(0, 0)
    assert local.date() == due_date + timedelta(days=1)
    assert due_at.utcoffset() == timedelta(0)
    assert due_at.minute == 0 and due_at.hour in (22, 23)


@settings(max_examples=200, deadline=None)
@given(MOMENTS, MOMENTS)
def test_waiting_time_counts(requested_at: datetime, acknowledged_at: datetime) -> None:
    waited = waiting_time(NRW, requested_at, acknowledged_at)
    assert waited.calendar_days >= waited.working_days >= 0
    if acknowledged_at <= requested_at:
        assert waited == WaitingTime(0, 0)


@pytest.mark.parametrize(
    ("requested_at", "acknowledged_at", "expected"),
    [
        pytest.param(utc(2026, 4, 2, 8), utc(2026, 4, 2, 15), WaitingTime(0, 0), id="same day"),
        pytest.param(utc(2026, 4, 2, 8), utc(2026, 4, 7, 9), WaitingTime(5, 1), id="over Easter"),
        pytest.param(utc(2026, 6, 7, 23, 30), utc(2026, 6, 8, 9), WaitingTime(0, 0),
                     id="Sunday night UTC and Monday morning are the same local day"),
        pytest.param(utc(2026, 12, 18, 9), utc(2026, 12, 28, 9), WaitingTime(10, 5), id="over Christmas"),
        pytest.param(utc(2026, 4, 7, 9), utc(2026, 4, 2, 8), WaitingTime(0, 0), id="clock skew"),
    ],
)
def test_waiting_time_examples(requested_at: datetime, acknowledged_at: datetime,
                               expected: WaitingTime) -> None:
    assert waiting_time(NRW, requested_at, acknowledged_at) == expected


# --- lifecycle ---------------------------------------------------------------------------------

SENDER, RECEIVER, THIRD = 11, 22, 33
PARTIES = Parties(sender_organisation_id=SENDER, receiver_organisation_id=RECEIVER)
ORGS = {"sender": SENDER, "receiver": RECEIVER, "third": THIRD}

# Who may take each action, and where it leads (the lifecycle's module docstring).
ACTOR_OF = {"acknowledge": "receiver", "reject": "receiver", "withdraw": "sender"}
RESULT_OF = {"acknowledge": "acknowledged", "reject": "rejected", "withdraw": "withdrawn"}
STATES = [s.value for s in HandoverState]
ACTIONS = [a.value for a in HandoverAction]


def expected_outcome(state: str, action: str, who: str) -> str | type[Problem]:
    if who != ACTOR_OF[action]:
        return WrongOrganisation
    if state not in ("requested", "escalated"):
        return HandoverNotPending
    return RESULT_OF[action]


def test_state_sets() -> None:
    assert {s.value for s in PENDING} == {"requested", "escalated"}
    assert {s.value for s in ENDED} == {"acknowledged", "rejected", "withdrawn"}


@pytest.mark.parametrize("who", sorted(ORGS))
@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("state", STATES)
def test_respond_every_state_action_and_organisation(state: str, action: str, who: str) -> None:
    expected = expected_outcome(state, action, who)
    reason = "Zuständigkeit liegt beim Kreis"
    if isinstance(expected, str):
        assert respond(state, action, ORGS[who], PARTIES, reason) == HandoverState(expected)
        return
    with pytest.raises(expected) as info:
        respond(state, action, ORGS[who], PARTIES, reason)
    if expected is WrongOrganisation:
        assert info.value.extra["owner"] == ACTOR_OF[action]
    else:
        assert info.value.extra["state"] == state


def test_respond_spot_checks() -> None:
    # Written out once more without the helper, so a shared mistake cannot hide.
    assert respond("requested", "acknowledge", RECEIVER, PARTIES, None) is HandoverState.acknowledged
    assert respond("escalated", "acknowledge", RECEIVER, PARTIES, None) is HandoverState.acknowledged
    assert respond("escalated", "reject", RECEIVER, PARTIES, "not ours") is HandoverState.rejected
    assert respond("escalated", "withdraw", SENDER, PARTIES, None) is HandoverState.withdrawn
    with pytest.raises(WrongOrganisation):
        respond("requested", "acknowledge", SENDER, PARTIES, None)
    with pytest.raises(WrongOrganisation):
        respond("requested", "withdraw", RECEIVER, PARTIES, None)
    with pytest.raises(HandoverNotPending):
        respond("acknowledged", "reject", RECEIVER, PARTIES, "too late")
    with pytest.raises(HandoverNotPending):
        respond("withdrawn", "withdraw", SENDER, PARTIES, None)


@pytest.mark.parametrize("reason", [None, "", " ", "   ", "\t", "\n", " \t\r\n ", "\u00a0", "\u3000"])
@pytest.mark.parametrize("state", ["requested", "escalated"])
def test_reject_needs_a_reason_with_text(state: str, reason: str | None) -> None:
    with pytest.raises(ReasonRequired):
        respond(state, "reject", RECEIVER, PARTIES, reason)


@pytest.mark.parametrize("reason", [None, "", "   "])
@pytest.mark.parametrize("action", ["acknowledge", "withdraw"])
def test_only_reject_needs_a_reason(action: str, reason: str | None) -> None:
    who = ORGS[ACTOR_OF[action]]
    assert respond("requested", action, who, PARTIES, reason) == HandoverState(RESULT_OF[action])


def test_a_reason_with_surrounding_blanks_is_accepted() -> None:
    assert respond("requested", "reject", RECEIVER, PARTIES, "  falsche Stelle \n") is HandoverState.rejected


def test_unknown_action_or_state_is_not_a_problem_but_a_value_error() -> None:
    with pytest.raises(ValueError):
        respond("requested", "escalate", RECEIVER, PARTIES, None)
    with pytest.raises(ValueError):
        respond("lost", "acknowledge", RECEIVER, PARTIES, None)


@pytest.mark.parametrize(
    ("state", "who", "actions"),
    [
        ("requested", "receiver", ["acknowledge", "reject"]),
        ("requested", "sender", ["withdraw"]),
        ("requested", "third", []),
        ("escalated", "receiver", ["acknowledge", "reject"]),
        ("escalated", "sender", ["withdraw"]),
        ("escalated", "third", []),
        ("acknowledged", "receiver", []),
        ("rejected", "sender", []),
        ("withdrawn", "sender", []),
    ],
)
def test_allowed_actions(state: str, who: str, actions: list[str]) -> None:
    assert allowed_actions(state, ORGS[who], PARTIES) == actions


@pytest.mark.parametrize(
    "parties",
    [PARTIES, Parties(sender_organisation_id=SENDER, receiver_organisation_id=SENDER)],
    ids=["two organisations", "sender is receiver"],
)
@pytest.mark.parametrize("org", [SENDER, RECEIVER, THIRD])
@pytest.mark.parametrize("state", STATES)
def test_allowed_actions_agrees_with_respond(state: str, org: int, parties: Parties) -> None:
    listed = set(allowed_actions(state, org, parties))
    succeeds = set()
    for action in ACTIONS:
        try:
            respond(state, action, org, parties, "a reason")
        except Problem:
            continue
        succeeds.add(action)
    assert listed == succeeds


DUE_AT = utc(2026, 4, 13, 22, 0)  # end of Monday 13 April 2026 in Berlin
TICK = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("state", "now", "overdue", "escalate"),
    [
        ("requested", DUE_AT - TICK, False, False),
        ("requested", DUE_AT, True, True),
        ("requested", DUE_AT + TICK, True, True),
        ("requested", DUE_AT + timedelta(days=30), True, True),
        ("escalated", DUE_AT - TICK, False, False),
        ("escalated", DUE_AT, True, False),
        ("escalated", DUE_AT + timedelta(days=3), True, False),
        ("acknowledged", DUE_AT, False, False),
        ("acknowledged", DUE_AT + timedelta(days=3), False, False),
        ("rejected", DUE_AT + timedelta(days=3), False, False),
        ("withdrawn", DUE_AT + timedelta(days=3), False, False),
    ],
)
def test_overdue_and_escalation(state: str, now: datetime, overdue: bool, escalate: bool) -> None:
    assert is_overdue(state, DUE_AT, now) is overdue
    assert should_escalate(state, DUE_AT, now) is escalate
    # The same instant written in local time gives the same answer.
    assert is_overdue(state, DUE_AT, now.astimezone(BERLIN)) is overdue
    assert should_escalate(state, DUE_AT, now.astimezone(BERLIN)) is escalate


def test_overdue_exactly_at_local_midnight_after_the_due_date() -> None:
    due_date, due_at = NRW.deadline(utc(2026, 4, 2, 8), 5)
    assert due_date == d("2026-04-13")
    last_minute = datetime(2026, 4, 13, 23, 59, 59, tzinfo=BERLIN)
    midnight = datetime(2026, 4, 14, 0, 0, tzinfo=BERLIN)
    assert not is_overdue("requested", due_at, last_minute)
    assert is_overdue("requested", due_at, midnight)
    assert should_escalate("requested", due_at, midnight)
    assert not should_escalate("escalated", due_at, midnight)


# --- policy loader -----------------------------------------------------------------------------

ORG_KINDS = frozenset({"sozialamt", "jobcenter", "auslaenderbehoerde", "course_provider",
                       "kommunales_integrationszentrum", "wohlfahrtsverband", "schulamt"})

BASE = """\
# test policy
calendar:
  country: DE
  subdivision: NW
  timezone: Europe/Berlin

kinds:
  step:
    title: Schritt
    working_days: 6
  rechtskreiswechsel:
    title: Rechtskreiswechsel
    working_days: 12
  relocation:
    title: Umzug
    working_days: 15

pairs:
  - kind: rechtskreiswechsel
    from: sozialamt
    working_days: 8
  - kind: rechtskreiswechsel
    to: jobcenter
    working_days: 9
  - kind: step
    to: jobcenter
    working_days: 4
  - kind: step
    from: sozialamt
    working_days: 3
  - kind: step
    from: sozialamt
    to: jobcenter
    working_days: 2

case_management_kinds:
  - kommunales_integrationszentrum
  - wohlfahrtsverband
"""


def line_with(text: str, fragment: str, occurrence: int = 1) -> int:
    """1-based number of the line holding the ``occurrence``-th match of ``fragment``."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if fragment in line]
    assert len(hits) >= occurrence, f"{fragment!r} not found {occurrence} times"
    return hits[occurrence - 1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "handovers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def edit(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def test_shipped_policy_loads() -> None:
    kinds = load_organisation_kinds(ROOT / "policies" / "organisation_kinds.yaml")
    policy = load_handover_policy(ROOT / "policies" / "handovers.yaml", kinds.keys())
    assert isinstance(policy, HandoverPolicy)
    assert (policy.calendar.country, policy.calendar.subdivision) == ("DE", "NW")
    assert policy.calendar.zone == BERLIN
    assert not policy.calendar.is_working_day(d("2026-06-04"))  # Fronleichnam counts
    assert set(policy.kind_days) == {k.value for k in HandoverKind}
    assert set(policy.kind_titles) == {k.value for k in HandoverKind}
    assert policy.case_management_kinds <= kinds.keys()
    assert policy.case_management_kinds
    for kind in HandoverKind:
        for sender in kinds:
            for receiver in kinds:
                assert 1 <= policy.working_days(kind.value, sender, receiver) <= 260
    # The documented pairs of the shipped file.
    assert policy.working_days("rechtskreiswechsel", "sozialamt", "jobcenter") == 10
    assert policy.working_days("step", "jobcenter", "course_provider") == 3


def test_working_days_resolution_order(tmp_path: Path) -> None:
    policy = load_handover_policy(write(tmp_path, BASE), ORG_KINDS)
    wd = policy.working_days
    # 1. the exact pair wins, although it is listed last
    assert wd("step", "sozialamt", "jobcenter") == 2
    # 2. a pair naming only the sender
    assert wd("step", "sozialamt", "schulamt") == 3
    # 3. a pair naming only the receiver
    assert wd("step", "auslaenderbehoerde", "jobcenter") == 4
    # from-only wins over to-only when both match (and no exact pair exists)
    assert wd("rechtskreiswechsel", "sozialamt", "jobcenter") == 8
    assert wd("rechtskreiswechsel", "schulamt", "jobcenter") == 9
    assert wd("rechtskreiswechsel", "sozialamt", "schulamt") == 8
    # 4. the kind's days
    assert wd("step", "schulamt", "auslaenderbehoerde") == 6
    assert wd("rechtskreiswechsel", "schulamt", "auslaenderbehoerde") == 12
    assert wd("relocation", "sozialamt", "jobcenter") == 15  # pairs are per kind
    assert policy.case_management_kinds == {"kommunales_integrationszentrum", "wohlfahrtsverband"}


def test_policy_without_pairs_uses_the_kinds(tmp_path: Path) -> None:
    text = BASE.split("pairs:")[0] + "case_management_kinds: [wohlfahrtsverband]\n"
    policy = load_handover_policy(write(tmp_path, text), ORG_KINDS)
    assert policy.pair_days == {}
    assert policy.working_days("step", "sozialamt", "jobcenter") == 6


def test_policy_calendar_is_used(tmp_path: Path) -> None:
    policy = load_handover_policy(write(tmp_path, edit("subdivision: NW", "subdivision: BE")), ORG_KINDS)
    assert policy.calendar.subdivision == "BE"
    assert policy.calendar.is_working_day(d("2026-06-04"))


POLICY_ERRORS = [
    pytest.param(
        "    working_days: 15\n\npairs:",
        "    working_days: 15\n  umzug:\n    title: Umzug\n    working_days: 3\n\npairs:",
        "kinds.umzug", "  umzug:", 1, "unknown handover kind",
        id="unknown kind under kinds",
    ),
    pytest.param(
        "  relocation:\n    title: Umzug\n    working_days: 15\n", "",
        "kinds", "kinds:", 1, "relocation",
        id="missing kind",
    ),
    pytest.param(
        "  - kind: step\n    from: sozialamt\n    working_days: 3",
        "  - kind: step\n    from: rathaus\n    working_days: 3",
        "pairs[3].from", "from: rathaus", 1, "unknown organisation kind 'rathaus'",
        id="unknown organisation kind in from",
    ),
    pytest.param(
        "  - kind: step\n    to: jobcenter\n    working_days: 4",
        "  - kind: step\n    to: rathaus\n    working_days: 4",
        "pairs[2].to", "to: rathaus", 1, "unknown organisation kind 'rathaus'",
        id="unknown organisation kind in to",
    ),
    pytest.param(
        "  - kind: step\n    to: jobcenter\n    working_days: 4",
        "  - kind: umzug\n    to: jobcenter\n    working_days: 4",
        "pairs[2].kind", "kind: umzug", 1, "unknown handover kind 'umzug'",
        id="unknown handover kind in a pair",
    ),
    pytest.param(
        "  - kind: step\n    to: jobcenter\n    working_days: 4",
        "  - kind: step\n    working_days: 4",
        "pairs[2]", "  - kind: step", 1, "at least one of 'from' and 'to'",
        id="pair naming neither from nor to",
    ),
    pytest.param(
        "\ncase_management_kinds:",
        "  - kind: step\n    to: jobcenter\n    working_days: 5\n\ncase_management_kinds:",
        "pairs[5]", "  - kind: step", 4, "duplicate pair",
        id="duplicate pair",
    ),
    pytest.param(
        "    from: sozialamt\n    to: jobcenter\n    working_days: 2",
        "    from: sozialamt\n    to: jobcenter\n    working_days: 0",
        "pairs[4].working_days", "working_days: 0", 1, "greater than or equal to 1",
        id="working_days 0 in a pair",
    ),
    pytest.param(
        "    title: Schritt\n    working_days: 6", "    title: Schritt\n    working_days: 0",
        "kinds.step.working_days", "working_days: 0", 1, "greater than or equal to 1",
        id="working_days 0 in a kind",
    ),
    pytest.param(
        "  subdivision: NW", '  subdivision: ""',
        "calendar.subdivision", 'subdivision: ""', 1, "at least 1 character",
        id="empty subdivision would drop the Land's holidays",
    ),
    pytest.param(
        "  - wohlfahrtsverband\n", "  - rathaus\n",
        "case_management_kinds[1]", "  - rathaus", 1, "unknown organisation kind 'rathaus'",
        id="unknown case_management_kinds entry",
    ),
]


@pytest.mark.parametrize(("old", "new", "field", "fragment", "occurrence", "message_part"), POLICY_ERRORS)
def test_broken_policy_names_file_line_and_field(
    tmp_path: Path, old: str, new: str, field: str, fragment: str, occurrence: int, message_part: str
) -> None:
    text = edit(old, new)
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_handover_policy(path, ORG_KINDS)
    err = info.value
    assert err.path == str(path)
    assert err.field == field
    assert err.line == line_with(text, fragment, occurrence)
    assert message_part in err.message
    assert f"{path}:{err.line}: {field}:" in str(err)


def test_unknown_subdivision_is_refused_within_the_calendar_block(tmp_path: Path) -> None:
    text = edit("subdivision: NW", "subdivision: XX")
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_handover_policy(path, ORG_KINDS)
    err = info.value
    assert err.path == str(path)
    assert err.field.startswith("calendar")
    assert line_with(text, "calendar:") <= err.line <= line_with(text, "subdivision: XX")
    assert "XX" in err.message


@pytest.mark.parametrize(
    ("old", "new", "field", "fragment"),
    [
        pytest.param("subdivision: NW", "subdivision: XX", "calendar.subdivision", "subdivision: XX",
                     id="subdivision"),
        pytest.param("timezone: Europe/Berlin", "timezone: Europe/Atlantis", "calendar.timezone",
                     "timezone: Europe/Atlantis", id="timezone"),
    ],
)
def test_unusable_calendar_names_the_exact_key(tmp_path: Path, old: str, new: str, field: str,
                                               fragment: str) -> None:
    text = edit(old, new)
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        load_handover_policy(path, ORG_KINDS)
    assert info.value.field == field
    assert info.value.line == line_with(text, fragment)
