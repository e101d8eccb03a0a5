"""The web interface's texts and formats: every text is in the German catalogue; dates, times
and numbers as German users read them (TT.MM.JJJJ, Europe/Berlin, decimal comma)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from casemgmt.web.catalogue import catalogue, extracted
from casemgmt.web.rendering import datum, translations, zahl, zeit
from casemgmt.web.texte import parse_date, value_title


def test_every_text_of_the_screens_is_in_the_german_catalogue():
    cat = catalogue()
    missing = sorted(m for m in extracted() if m not in cat or not cat[m].string)
    assert not missing, f"run `python -m casemgmt.web.catalogue`; missing: {missing[:10]}"
    assert translations("de").gettext("Meine Fälle") == "Meine Fälle"


def test_dates_and_times_are_german_and_in_berlin_time():
    # 23:30 UTC on 31 March is already 1 April in Berlin (summer time, UTC+2).
    late = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)
    assert datum(late) == "01.04.2026"
    assert zeit(late) == "01.04.2026, 01:30 Uhr"
    assert zeit(datetime(2026, 1, 15, 8, 5, tzinfo=UTC)) == "15.01.2026, 09:05 Uhr"  # winter, UTC+1
    assert datum(date(2026, 12, 24)) == "24.12.2026" and datum(None) == "–"


def test_numbers_have_a_decimal_comma():
    assert zahl(1234.5, 1) == "1.234,5"
    assert zahl(0.25, 2) == "0,25"
    assert zahl(12) == "12"


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31)))
def test_a_date_typed_as_tt_mm_jjjj_reads_back_as_entered(day):
    typed = day.strftime("%d.%m.%Y")
    assert parse_date(typed) == day.isoformat()
    assert value_title("birth_date", day.isoformat()) == typed


def test_impossible_dates_are_refused_not_guessed():
    assert parse_date("31.02.1990") is None
    assert parse_date("1990") is None
    assert parse_date("") == ""
