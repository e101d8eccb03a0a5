"""German names of the states, actions and keys the screens show (msgids of the catalogue), the
kind of status symbol each state gets, and German messages for form errors."""

from __future__ import annotations

from datetime import date


def N_(message: str) -> str:
    """Marks a text for the catalogue; the template translates it where it is shown."""
    return message


CHAIN_STATUS = {"active": (N_("Aktiv"), "aktiv"), "stalled": (N_("Stockt"), "warnung"),
                "completed": (N_("Abgeschlossen"), "ok"), "closed": (N_("Geschlossen"), "neutral")}
STEP_STATE = {"planned": (N_("Geplant"), "neutral"), "ready": (N_("Bereit"), "aktiv"),
              "in_progress": (N_("In Bearbeitung"), "aktiv"), "completed": (N_("Erledigt"), "ok"),
              "blocked": (N_("Blockiert"), "fehler"), "skipped": (N_("Übersprungen"), "neutral"),
              "cancelled": (N_("Abgebrochen"), "neutral")}
ACTION = {"start": N_("Beginnen"), "complete": N_("Erledigt melden"), "block": N_("Blockieren"), "resume": N_("Fortsetzen"),
          "skip": N_("Überspringen")}
REASON_ACTIONS = frozenset({"block", "skip"})
HANDOVER_STATE = {"requested": (N_("Angefragt"), "aktiv"), "escalated": (N_("Eskaliert"), "fehler"),
                  "acknowledged": (N_("Bestätigt"), "ok"), "rejected": (N_("Abgelehnt"), "warnung"),
                  "withdrawn": (N_("Zurückgezogen"), "neutral")}
HANDOVER_KIND = {"step": N_("Schrittübergabe"), "rechtskreiswechsel": N_("Rechtskreiswechsel"), "relocation": N_("Umzug")}
HANDOVER_ACTION = {"acknowledge": N_("Bestätigen"), "reject": N_("Ablehnen"), "withdraw": N_("Zurückziehen")}
CLOSE_REASON = {"moved_away": N_("Weggezogen"), "ended_by_person": N_("Von der Person beendet"),
                "naturalised": N_("Eingebürgert"), "deceased": N_("Verstorben"),
                "opened_in_error": N_("Irrtümlich angelegt"), "other": N_("Anderer Grund")}
CONSENT_STATUS = {"active": (N_("Gültig"), "ok"), "not_yet_valid": (N_("Noch nicht gültig"), "neutral"),
                  "expired": (N_("Abgelaufen"), "neutral"), "withdrawn": (N_("Widerrufen"), "warnung")}


def redaction_reason(reason: str) -> str:
    """Why a field is withheld, in German (the decision point's reasons are technical)."""
    if "part in this case has ended" in reason:
        return "Der Teil Ihrer Organisation an diesem Fall ist beendet: sie sieht nur, was sie selbst erfasst hat."
    if reason.startswith("no legal basis"):
        return "Für Ihre Organisation und diesen Zweck gibt es keine Rechtsgrundlage (kein Gesetz, keine Vereinbarung, keine Einwilligung)."
    if "withdrawn" in reason:
        return "Die Einwilligung, auf der der Zugriff beruhte, ist widerrufen."
    if "expired" in reason:
        return "Die Einwilligung, auf der der Zugriff beruhte, ist abgelaufen."
    return reason
EVENT_KIND = {"chain_started": N_("Kette gestartet"), "step": N_("Schritt geändert"), "step_added": N_("Schritt vereinbart"),
              "template_migrated": N_("Neue Vorlagenversion"), "step_migrated": N_("Schritt übernommen"),
              "chain_completed": N_("Kette abgeschlossen"), "chain_closed": N_("Kette geschlossen"),
              "step_assigned": N_("Schritt zugewiesen"), "lead_moved": N_("Fallführung gewechselt")}


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


def legal_basis(basis: str | None, laws: dict[str, str] | None = None) -> str:
    """A legal basis as the decision point names it (``statute:<id>``, ``agreement:<id>``,
    ``consent:<id>``), in words; a statute by its law (``laws``: statute id -> law)."""
    if not basis:
        return "–"
    kind, _, ref = basis.partition(":")
    if kind == "statute":
        return (laws or {}).get(ref) or f"Gesetz ({ref})"
    if kind == "agreement":
        return "Datenaustauschvereinbarung"
    if kind == "consent":
        return "Einwilligung der Person"
    return basis


# Refusals of the services (problem details) as the screens say them, by their stable ``type``
# (casemgmt/problems.py). A type without an entry is shown with the service's own text.
PROBLEM_TEXTS = {
    "not-authenticated": N_("Bitte melden Sie sich an."),
    "forbidden": N_("Ihre Rolle erlaubt diese Aktion nicht."),
    "wrong-organisation": N_("Dieser Schritt gehört einer anderen Organisation; Ihre Organisation kann ihn nicht bearbeiten."),
    "unknown-organisation": N_("Ihre Organisation ist in dieser Installation nicht bekannt."),
    "not-found": N_("Nicht gefunden."),
    "validation-error": N_("Die Eingabe ist nicht gültig. Bitte prüfen Sie die markierten Angaben."),
    "illegal-transition": N_("Diese Aktion ist im jetzigen Stand nicht möglich."),
    "transition-guard-failed": N_("Diese Aktion ist hier nicht möglich, zum Beispiel weil der Schritt nicht übersprungen werden darf."),
    "reason-required": N_("Bitte geben Sie eine Begründung an."),
    "version-conflict": N_("Der Datensatz wurde inzwischen geändert. Bitte laden Sie die Seite neu."),
    "chain-not-active": N_("Die Integrationskette ist abgeschlossen oder geschlossen; ihre Schritte ändern sich nicht mehr."),
    "duplicate-chain": N_("Für diese Person läuft bereits eine Integrationskette nach dieser Vorlage."),
    "no-legal-basis": N_("Für diese Angaben hat Ihre Organisation keine Rechtsgrundlage (kein Gesetz, keine Vereinbarung, keine Einwilligung)."),
    "invalid-consent": N_("Die Einwilligung kann so nicht erfasst werden. Bitte prüfen Sie die Angaben."),
    "consent-already-withdrawn": N_("Die Einwilligung ist bereits widerrufen."),
    "release-exists": N_("Dieses Quartal ist bereits freigegeben."),
    "period-not-closed": N_("Das Quartal ist noch nicht abgeschlossen und kann noch nicht freigegeben werden."),
    "no-release": N_("Für diesen Bereich ist noch kein Bericht freigegeben."),
    "database-unavailable": N_("Die Datenbank ist vorübergehend nicht erreichbar. Es wurde nichts geändert."),
    "not-ready": N_("Der Dienst ist vorübergehend nicht bereit. Bitte versuchen Sie es später erneut."),
    "internal-error": N_("Ein Fehler ist aufgetreten. Es wurde nichts geändert."),
    "handover-not-pending": N_("Die Übergabe ist bereits entschieden (bestätigt, abgelehnt oder zurückgezogen)."),
    "handover-pending": N_("Für diesen Schritt oder diese Kette wartet noch eine Übergabe. Bitte schließen Sie sie zuerst ab oder ziehen Sie sie zurück."),
    "invalid-handover": N_("Die Übergabe ist so nicht möglich, zum Beispiel weil der Empfänger für diesen Schritt oder Ort nicht zuständig ist."),
    "handover-step-state": N_("Ein Rechtskreiswechsel übergibt nur einen Schritt, der in Bearbeitung ist."),
    "conference-phase": N_("Das ist in dieser Phase der Fallkonferenz nicht möglich."),
    "personal-data-in-text": N_("Der Text enthält personenbezogene Daten. Bitte entfernen Sie sie."),
    "too-many-dots": N_("Sie haben nicht mehr genug Punkte."),
    "duplicate-name": N_("Dieser Name ist bereits vergeben."),
    "involvement-ended": N_("Der Teil Ihrer Organisation an diesem Fall ist beendet."),
    "rechtskreis-by-handover": N_("Der Rechtskreis ändert sich nur durch einen Rechtskreiswechsel, den das aufnehmende Amt bestätigt."),
    "consent-recorder": N_("Einwilligungen erfasst die Stelle, die das Case Management der Person führt."),
    "webhook-secret-missing": N_("Für Webhooks ist kein Signaturschlüssel eingerichtet; bitte wählen Sie E-Mail."),
    "payload-too-large": N_("Die Eingabe ist zu groß."),
    "rate-limited": N_("Zu viele Anfragen in kurzer Zeit. Bitte warten Sie einen Moment."),
    "person-erased": N_("Die Daten dieser Person sind gelöscht."),
    "person-restricted": N_("Die Verarbeitung der Daten dieser Person ist eingeschränkt (Art. 18 DSGVO)."),
    "erasure-refused": N_("Die Daten können jetzt nicht gelöscht werden (Löschsperre oder laufende Aufbewahrungspflicht)."),
    "request-mismatch": N_("Dazu fehlt eine offene Betroffenenanfrage der passenden Art für diese Person."),
    "request-state": N_("Im jetzigen Stand der Anfrage ist das nicht möglich; eine beantwortete oder abgelehnte Anfrage ändert sich nicht mehr."),
    "restriction-state": N_("Eine Löschsperre oder Einschränkung ist bereits gesetzt, oder es ist keine gesetzt, die aufgehoben werden könnte."),
    "interview-used": N_("Dieses Erstgespräch ist bereits in eine Integrationskette eingegangen."),
    "offer-full": N_("Das Angebot hat keinen freien Platz mehr. Es wurde nichts gebucht."),
    "already-enrolled": N_("Für diesen Schritt ist das Angebot bereits gebucht."),
    "offer-does-not-fit": N_("Das Angebot passt nicht zu diesem Schritt (Art, Gültigkeit, Ort oder Stand des Schritts)."),
}

# Errors of single fields in a service's ``validation-error`` by their type.
FIELD_ERROR_TEXTS = {
    "missing": N_("Bitte füllen Sie dieses Feld aus."),
    "string_too_long": N_("Der Text ist zu lang."),
    "string_too_short": N_("Bitte füllen Sie dieses Feld aus."),
}
