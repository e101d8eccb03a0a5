"""The demo's progress line: what it says, and how often it is drawn on a terminal and in a log."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from casemgmt.demo.progress import SeedProgress

START = datetime(2025, 6, 1, tzinfo=UTC)
END = START + timedelta(days=100)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_the_line_says_how_far_the_walk_is_and_what_was_written():
    p = SeedProgress(start=START, end=END, totals={"persons": 400, "conferences": 8})
    p.count("persons", 152)
    p.count("chains", 152)
    p.count("transitions", 2310)
    p.count("conferences", 3)
    p.at(START + timedelta(days=25))
    line = p.render()
    assert "[######..................]  25%" in line
    assert "2025-06-26" in line
    assert "persons 152/400" in line and "chains 152" in line and "transitions 2,310" in line
    assert "handovers 0" in line and "conferences 3/8" in line


def test_a_log_gets_a_line_per_tenth_not_per_action():
    log = io.StringIO()
    p = SeedProgress(start=START, end=END, stream=log)
    for hour in range(0, 100 * 24 + 30):  # the timers look past the end: shown as the end
        p.at(START + timedelta(hours=hour))
        p.count("transitions")
    p.step("proposals")
    p.finish()
    lines = log.getvalue().splitlines()
    assert len(lines) == 11 + 2
    assert [line.split("]")[1].split("%")[0].strip() for line in lines[:11]] == [str(10 * i) for i in range(11)]
    assert "(proposals)" in lines[-2] and "(done)" in lines[-1] and "2025-09-09" in lines[-1]


def test_a_terminal_line_is_redrawn_in_place_a_few_times_a_second():
    term, clock = Terminal(), Clock()
    p = SeedProgress(start=START, end=END, stream=term, clock=clock, interval=0.25)
    for i in range(1000):  # 1,000 actions in 2 s
        clock.t = i * 0.002
        p.at(START + timedelta(minutes=i))
    p.finish()
    text = term.getvalue()
    assert text.count("\r") in range(8, 11)  # every 0.25 s over 2 s, and the last line
    assert "\n" not in text[:-1] and text.endswith("\n")
