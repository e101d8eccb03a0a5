"""Working days for handover deadlines: Monday to Friday without the public holidays of one
German Land. Pure: dates in, dates out.

Holidays come from the ``holidays`` package (maintained, covers movable feasts and the
Land-specific days such as Fronleichnam in NRW) rather than a table someone must keep current.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from threading import Lock
from zoneinfo import ZoneInfo

import holidays


class WorkingDayCalendar:
    """Working days of one country subdivision in its local time zone."""

    def __init__(self, country: str = "DE", subdivision: str | None = "NW",
                 timezone: str = "Europe/Berlin") -> None:
        self.country = country
        self.subdivision = subdivision
        self.zone = ZoneInfo(timezone)
        # Validates country and subdivision now, so a bad policy fails at start.
        holidays.country_holidays(country, subdiv=subdivision, years=[2000])
        self._years: dict[int, holidays.HolidayBase] = {}
        self._lock = Lock()

    def _table(self, year: int) -> holidays.HolidayBase:
        table = self._years.get(year)
        if table is None:
            with self._lock:  # the holidays object fills itself lazily; build each year once
                table = self._years.get(year)
                if table is None:
                    table = holidays.country_holidays(self.country, subdiv=self.subdivision, years=[year])
                    self._years[year] = table
        return table

    def holidays_of(self, year: int) -> frozenset[date]:
        return frozenset(self._table(year).keys())

    def holiday_name(self, day: date) -> str | None:
        return self._table(day.year).get(day)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self._table(day.year)

    def local_date(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()

    def add_working_days(self, start: date, days: int) -> date:
        """The ``days``-th working day after ``start`` (``start`` itself never counts)."""
        if days < 0:
            raise ValueError("days must not be negative")
        day = start
        left = days
        while left > 0:
            day += timedelta(days=1)
            if self.is_working_day(day):
                left -= 1
        return day

    def working_days_between(self, start: date, end: date) -> int:
        """Working days after ``start`` up to and including ``end`` (0 when end <= start)."""
        if end <= start:
            return 0
        count = 0
        day = start
        while day < end:
            day += timedelta(days=1)
            if self.is_working_day(day):
                count += 1
        return count

    def deadline(self, requested_at: datetime, working_days: int) -> tuple[date, datetime]:
        """Due date of a request made at ``requested_at``, and the moment it is overdue: the end
        of the due date in local time (as UTC)."""
        due_date = self.add_working_days(self.local_date(requested_at), working_days)
        end = datetime.combine(due_date + timedelta(days=1), time.min, tzinfo=self.zone)
        return due_date, end.astimezone(UTC)
