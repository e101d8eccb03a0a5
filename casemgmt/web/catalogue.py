"""Keeps the German catalogue complete: ``python -m casemgmt.web.catalogue`` extracts every text
of the screens (``_()`` in templates, ``N_()`` in code) and adds the new ones to
``locale/de/LC_MESSAGES/messages.po``; German is the source language, so a German entry repeats
its msgid. tests/test_web_catalogue.py fails when a text is missing."""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

HERE = Path(__file__).resolve().parent
PO = HERE / "locale" / "de" / "LC_MESSAGES" / "messages.po"
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
KEYWORDS = {"_": None, "gettext": None, "N_": None}


def extracted() -> set[str]:
    """Every msgid the screens use."""
    found = set()
    for _filename, _line, message, _comments, _context in extract_from_dir(
            str(HERE), METHODS, keywords=KEYWORDS, options_map=OPTIONS):
        if isinstance(message, str) and message:
            found.add(message)
    return found


def catalogue() -> Catalog:
    with PO.open("rb") as fh:
        return read_po(fh, locale="de")


def update() -> int:
    cat = catalogue()
    added = 0
    for message in sorted(extracted()):
        if message not in cat:
            cat.add(message, message)
            added += 1
    with PO.open("wb") as fh:
        write_po(fh, cat, width=100, omit_header=False, sort_output=True, no_location=True)
    return added


if __name__ == "__main__":
    print(f"{update()} new texts added to {PO}")
