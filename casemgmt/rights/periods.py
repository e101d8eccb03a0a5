"""Periods, pure: when a retention period ends and when a data subject's request is due.

Retention periods count in years from a start event in the local time of the municipality
(Europe/Berlin), as periods of German law do (BGB sections 187(1), 188(2) and (3)): the day of
the event does not count, the period ends at the end of the day of the last year that has the
same date as the event's day, and where that day does not exist (29 February) at the end of the
last day of that month. The data is deleted from the following day on.

The answer to a request is due one month after its receipt (GDPR Art. 12(3)), counted as the EU
counts periods (Regulation 1182/71 Art. 3): the month ends on the day with the same date as the
day of receipt (or the last day of a shorter month), and a period ending on a Saturday, Sunday or
public holiday ends on the next working day. An extension adds two further months.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")


def local_date(moment: datetime) -> date:
    """The date in Europe/Berlin of an aware moment."""
    return moment.astimezone(BERLIN).date()


def add_months(day: date, months: int) -> date:
    """The day with the same date ``months`` later, or the last day of a shorter month."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def add_years(day: date, years: int) -> date:
    return add_months(day, 12 * years)


def retention_ends(start: datetime, years: int) -> date:
    """The last day (Europe/Berlin) the data may be kept: the period's last day."""
    return add_years(local_date(start), years)


def deletion_due(start: datetime, years: int) -> date:
    """The first day (Europe/Berlin) on which the data is due for deletion."""
    return retention_ends(start, years) + timedelta(days=1)


def is_due(start: datetime | None, years: int, now: datetime) -> bool:
    """Whether the period that started at ``start`` has passed at ``now`` (None: not started)."""
    return start is not None and local_date(now) >= deletion_due(start, years)


def answer_due(received_at: datetime, is_working_day: Callable[[date], bool], months: int = 1) -> date:
    """The last day to answer a request received at ``received_at``: ``months`` after the day of
    receipt, moved to the next working day when it is a weekend day or a public holiday."""
    due = add_months(local_date(received_at), months)
    while not is_working_day(due):
        due += timedelta(days=1)
    return due


EXTENSION_MONTHS = 2  # GDPR Art. 12(3): "extended by two further months"


def extended_due(received_at: datetime, is_working_day: Callable[[date], bool]) -> date:
    """The due date after the one extension: three months after receipt, on a working day."""
    return answer_due(received_at, is_working_day, 1 + EXTENSION_MONTHS)
