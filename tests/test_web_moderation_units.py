"""Pure helpers of the moderation and steering screens: the scrubber's objections cut the text
into pieces without losing or changing a character, and the report dashboard keeps a suppressed
cell suppressed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from casemgmt.problems import PersonalDataInText, ValidationFailed
from casemgmt.web.conferences import form_errors, iso_day, text_with_objections
from casemgmt.web.steering import _dashboard


@st.composite
def text_and_hits(draw):
    text = draw(st.text(min_size=1, max_size=80))
    spans = draw(st.lists(st.tuples(st.integers(0, len(text)), st.integers(0, len(text))), max_size=5))
    hits = [{"kind": "name", "start": min(a, b), "end": max(a, b), "excerpt": text[min(a, b):max(a, b)],
             "message": f"Bitte '{text[min(a, b):max(a, b)]}' entfernen."} for a, b in spans]
    return text, hits


@given(text_and_hits())
def test_objection_pieces_rebuild_the_text_and_mark_only_hits(case):
    text, hits = case
    pieces = text_with_objections(text, PersonalDataInText("text: remove", field="text", hits=hits))
    assert "".join(p["text"] for p in pieces) == text
    # Exactly the characters some hit covers are marked, each once, in reading order.
    at, marked_positions, numbers = 0, set(), []
    for p in pieces:
        assert p["text"]
        if "number" in p:
            marked_positions |= set(range(at, at + len(p["text"])))
            numbers.append(p["number"])
        at += len(p["text"])
    assert marked_positions == {i for h in hits for i in range(h["start"], h["end"])}
    assert numbers == sorted(numbers)


def test_objections_only_for_the_scrubbers_refusal():
    assert text_with_objections("x", ValidationFailed("nope")) is None
    pieces = text_with_objections("Frau Haddad wartet.", PersonalDataInText(
        "text: remove", field="text", hits=[{"kind": "name", "start": 5, "end": 11, "excerpt": "Haddad",
                                             "message": "Bitte den Namen 'Haddad' entfernen."}]))
    assert pieces == [{"text": "Frau "}, {"text": "Haddad", "number": 1, "message": "Bitte den Namen 'Haddad' entfernen."},
                      {"text": " wartet."}]
    [error] = form_errors(PersonalDataInText("text: remove ...", field="text", hits=[pieces[1] | {"start": 5}]))
    assert error["field"] == "text" and error["message"].startswith("Der Text enthält personenbezogene Daten")


def test_days_typed_by_hand_become_iso_days():
    assert iso_day("30.06.2026") == "2026-06-30"
    assert iso_day("2026-06-30") == "2026-06-30"
    assert iso_day("30.6.2026") == "30.6.2026"  # left for the model to refuse, in German
    assert iso_day(None) is None


def test_dashboard_keeps_suppressed_cells_and_shows_titles():
    report = {
        "area": {"name": "Kreis Ennetal", "towns": ["wittmar"]}, "k": 5, "period": {"title": "1. Quartal 2026"},
        "goals": [{"title": "Erstgespräch in 28 Tagen", "attained": 9, "missed": 8, "share": 9 / 17, "target_share": 0.9},
                  {"title": "SGB-II-Antrag in 14 Tagen", "attained": None, "missed": None, "share": None,
                   "target_share": 0.9}],
        "handover_waiting_times": [
            {"sender_kind": "sozialamt", "sender_kind_title": "Sozialamt", "receiver_kind": "jobcenter",
             "receiver_kind_title": "Jobcenter", "persons": None, "working_days_median": None,
             "working_days_p90": None, "calendar_days_median": None, "calendar_days_p90": None}],
        "tables": [{"key": "barriers", "title": "Personen je Barriere", "dimensions": ["town", "barrier"],
                    "cells": [{"town": "wittmar", "town_title": "Wittmar", "barrier": "waiting_times",
                               "barrier_title": "Wartezeiten", "value": None}],
                    "dropped_breakdowns": ["x"], "merged_breakdowns": []}],
    }
    board = _dashboard(report)
    assert [g["percent"] for g in board["goals"]] == [52.9, None]
    assert board["waiting"] == [{"from": "Sozialamt", "to": "Jobcenter", "persons": None, "median": None, "p90": None}]
    [table] = board["tables"]
    assert table["rows"] == [(["Wittmar", "Wartezeiten"], None)] and table["dropped"] == 1
