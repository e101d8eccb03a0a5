"""Sign of life while the demo seeds: one line on stderr saying how far the simulated year has
come and what was written so far (persons, chains, step transitions, handovers, conferences).

The line is drawn anew in place on a terminal (at most a few times a second) and written as a
new line at every tenth of the way otherwise (a log or CI output then shows progress without
hundreds of lines). ``render`` is plain text from the counters, without I/O."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

BAR_WIDTH = 24
# What the counters are called on the line, in the order they appear.
COUNTED = ("persons", "chains", "transitions", "handovers", "conferences")


@dataclass
class SeedProgress:
    """Counters of the seeding and the simulated time it has reached. ``totals`` holds what is
    known in advance (persons, conferences), shown as ``done/total``."""

    start: datetime
    end: datetime
    totals: dict[str, int] = field(default_factory=dict)
    stream: TextIO | None = None
    interval: float = 0.25
    clock: Callable[[], float] = time.monotonic
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTED, 0))
    simulated: datetime | None = None
    phase: str = "persons and chains"
    _drawn_at: float = field(default=-1e9, repr=False)
    _tenth: int = field(default=-1, repr=False)
    _started: float | None = field(default=None, repr=False)

    @property
    def share(self) -> float:
        """How much of the simulated time span has been walked, 0..1."""
        if self.simulated is None or self.end <= self.start:
            return 0.0
        return min(1.0, max(0.0, (self.simulated - self.start) / (self.end - self.start)))

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def at(self, when: datetime) -> None:
        """The walk has reached ``when`` (simulated time); redraws when it is time to."""
        when = min(when, self.end)  # the daily timers look one day past the end before they stop
        if self.simulated is None or when > self.simulated:
            self.simulated = when
        self._draw()

    def step(self, phase: str) -> None:
        """A phase after the walk (proposals, data subject rights, ...): always shown."""
        self.phase = phase
        self._draw(force=True)

    def finish(self) -> None:
        self.phase = "done"
        self.simulated = self.end
        self._draw(force=True)
        if self.stream is not None and self._tty():
            self.stream.write("\n")
            self.stream.flush()

    def render(self) -> str:
        """The progress line, e.g. ``[#########...............]  38%  2025-11-02  persons
        152/400  chains 152  transitions 2,310  handovers 401  conferences 3/8  (walk)``."""
        filled = round(self.share * BAR_WIDTH)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        day = f"{self.simulated:%Y-%m-%d}" if self.simulated else "----------"
        parts = []
        for what in COUNTED:
            done = f"{self.counts.get(what, 0):,}"
            parts.append(f"{what} {done}/{self.totals[what]:,}" if what in self.totals else f"{what} {done}")
        elapsed = "" if self._started is None else f"  {self.clock() - self._started:.0f} s"
        return f"seeding [{bar}] {self.share * 100:3.0f}%  {day}  " + "  ".join(parts) + f"  ({self.phase}){elapsed}"

    def _tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _draw(self, force: bool = False) -> None:
        if self.stream is None:
            return
        now = self.clock()
        if self._started is None:
            self._started = now
        if self._tty():
            if force or now - self._drawn_at >= self.interval:
                self._drawn_at = now
                self.stream.write("\r" + self.render() + "\x1b[K")
                self.stream.flush()
            return
        tenth = int(self.share * 10)
        if force or tenth > self._tenth:
            self._tenth = tenth
            self.stream.write(self.render() + "\n")
            self.stream.flush()


def stderr_progress(start: datetime, end: datetime, totals: dict[str, int]) -> SeedProgress:
    """Progress on the process's stderr."""
    return SeedProgress(start=start, end=end, totals=totals, stream=sys.stderr)
