"""German names of the states, actions and keys the screens show (msgids of the catalogue), the
kind of status symbol each state gets, and German messages for form errors."""

from __future__ import annotations

from datetime import date

CHAIN_STATUS = {"active": ("Aktiv", "aktiv"), "stalled": ("Stockt", "warnung"),
                "completed": ("Abgeschlossen", "ok"), "closed": ("Geschlossen", "neutral")}
STEP_STATE = {"planned": ("Geplant", "neutral"), "ready": ("Bereit", "aktiv"),
              "in_progress": ("In Bearbeitung", "aktiv"), "completed": ("Erledigt", "ok"),
              "blocked": ("Blockiert", "fehler"), "skipped": ("Übersprungen", "neutral"),
              "cancelled": ("Abgebrochen", "neutral")}
ACTION = {"start": "Beginnen", "complete": "Erledigt melden", "block": "Blockieren", "resume": "Fortsetzen",
          "skip": "Überspringen"}
REASON_ACTIONS = frozenset({"block", "skip"})
HANDOVER_STATE = {"requested": ("Angefragt", "aktiv"), "escalated": ("Eskaliert", "fehler"),
                  "acknowledged": ("Bestätigt", "ok"), "rejected": ("Abgelehnt", "warnung"),
                  "withdrawn": ("Zurückgezogen", "neutral")}
HANDOVER_KIND = {"step": "Schrittübergabe", "rechtskreiswechsel": "Rechtskreiswechsel", "relocation": "Umzug"}
HANDOVER_ACTION = {"acknowledge": "Bestätigen", "reject": "Ablehnen", "withdraw": "Zurückziehen"}
CLOSE_REASON = {"moved_away": "Weggezogen", "ended_by_person": "Von der Person beendet",
                "naturalised": "Eingebürgert", "deceased": "Verstorben",
                "opened_in_error": "Irrtümlich angelegt", "other": "Anderer Grund"}
CONSENT_STATUS = {"active": ("Gültig", "ok"), "not_yet_valid": ("Noch nicht gültig", "neutral"),
                  "expired": ("Abgelaufen", "neutral"), "withdrawn": ("Widerrufen", "warnung")}


def redaction_reason(reason: str) -> str:
    """Why a field is withheld, in German (the decision point's reasons are technical)."""
    if reason.startswith("no legal basis"):
        return "Für Ihre Organisation und diesen Zweck gibt es keine Rechtsgrundlage (kein Gesetz, keine Vereinbarung, keine Einwilligung)."
    if "withdrawn" in reason:
        return "Die Einwilligung, auf der der Zugriff beruhte, ist widerrufen."
    if "expired" in reason:
        return "Die Einwilligung, auf der der Zugriff beruhte, ist abgelaufen."
    return reason
EVENT_KIND = {"chain_started": "Kette gestartet", "step": "Schritt geändert", "step_added": "Schritt vereinbart",
              "template_migrated": "Neue Vorlagenversion", "step_migrated": "Schritt übernommen",
              "chain_completed": "Kette abgeschlossen", "chain_closed": "Kette geschlossen",
              "step_assigned": "Schritt zugewiesen", "lead_moved": "Fallführung gewechselt"}


def parse_date(text: str) -> str | None:
    """TT.MM.JJJJ (or JJJJ-MM-TT) as ISO date; ``None`` when it is no date. Empty -> ""."""
    text = (text or "").strip()
    if not text:
        return ""
    try:
        if "." in text:
            day, month, year = (int(p) for p in text.split("."))
            return date(year, month, day).isoformat()
        return date.fromisoformat(text).isoformat()
    except ValueError:
        return None


_MESSAGES = {
    "missing": "Bitte geben Sie {title} an.",
    "too_short": "Bitte wählen oder nennen Sie mindestens eine Angabe für {title}.",
    "string_too_short": "Bitte geben Sie {title} an.",
    "string_too_long": "{title} ist zu lang.",
    "enum": "Bitte wählen Sie einen gültigen Wert für {title}.",
    "literal_error": "Bitte wählen Sie einen gültigen Wert für {title}.",
    "bool_parsing": "Bitte wählen Sie ja oder nein für {title}.",
}


def german_error(kind: str, title: str, fallback: str) -> str:
    template = _MESSAGES.get(kind)
    return template.format(title=title) if template else f"{title}: {fallback}"


# Titles of enumerated field values (the data catalogue keeps technical keys).
VALUE_TITLES = {
    "residence_status": {"asylum_pending": "Asylverfahren läuft", "protection_granted": "Schutz zuerkannt",
                         "tolerated": "Duldung", "eu_free_movement": "EU-Freizügigkeit",
                         "third_country_permit": "Aufenthaltstitel (Drittstaat)", "spaetaussiedler": "Spätaussiedler/in",
                         "naturalised": "Eingebürgert"},
    "bleibeperspektive": {"good": "Gut", "unclear": "Unklar", "safe_country_of_origin": "Sicheres Herkunftsland",
                          "unknown": "Unbekannt"},
    "benefit_regime": {"asylblg": "AsylbLG", "sgb_ii": "SGB II", "sgb_iii": "SGB III", "sgb_xii": "SGB XII",
                       "none": "Keine Leistungen"},
    "gender": {"female": "weiblich", "male": "männlich", "diverse": "divers", "unspecified": "keine Angabe"},
}


def value_title(field: str, value: object) -> str:
    """How a field's value reads on a screen: enum values by title, yes/no, dates TT.MM.JJJJ."""
    if isinstance(value, bool):
        return "ja" if value else "nein"
    if value is None:
        return "–"
    text = str(value)
    titles = VALUE_TITLES.get(field)
    if titles and text in titles:
        return titles[text]
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        try:
            return date.fromisoformat(text).strftime("%d.%m.%Y")
        except ValueError:
            return text
    return text
