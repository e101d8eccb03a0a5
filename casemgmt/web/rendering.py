"""Templates, the message catalogue and German formats.

Texts in templates go through ``_()`` (gettext); the catalogue ``locale/de/LC_MESSAGES/messages.po``
is read with Babel at start (no compiled file in the repository). Dates are shown as
``TT.MM.JJJJ`` and times as ``TT.MM.JJJJ, HH:MM Uhr``, both in Europe/Berlin; numbers with a
decimal comma.
"""

from __future__ import annotations

import io
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import Translations
from jinja2 import Environment, FileSystemLoader, select_autoescape

from casemgmt.chains.agreed import LOCAL_TIMEZONE

HERE = Path(__file__).resolve().parent
LOCALE = "de_DE"


@lru_cache(maxsize=4)
def translations(language: str = "de") -> Translations:
    """The catalogue of ``language`` (German first), compiled in memory from its .po file."""
    po_path = HERE / "locale" / language / "LC_MESSAGES" / "messages.po"
    with po_path.open("rb") as fh:
        catalog = read_po(fh, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


def datum(value: date | datetime | None) -> str:
    """A date as TT.MM.JJJJ; a point in time by its day in Europe/Berlin."""
    if value is None:
        return "–"
    if isinstance(value, datetime):
        value = value.astimezone(LOCAL_TIMEZONE).date()
    return value.strftime("%d.%m.%Y")


def zeit(value: datetime | None) -> str:
    """A point in time as TT.MM.JJJJ, HH:MM Uhr (Europe/Berlin)."""
    if value is None:
        return "–"
    local = value.astimezone(LOCAL_TIMEZONE)
    return local.strftime("%d.%m.%Y, %H:%M Uhr")


def zahl(value: float | int | None, stellen: int | None = None) -> str:
    """A number with decimal comma (and a dot between thousands)."""
    if value is None:
        return "–"
    if stellen is not None:
        return format_decimal(value, format="#,##0." + "0" * stellen if stellen else "#,##0", locale=LOCALE)
    return format_decimal(value, locale=LOCALE)


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_translations(translations("de"), newstyle=True)
    env.filters.update(datum=datum, zeit=zeit, zahl=zahl)
    return env
