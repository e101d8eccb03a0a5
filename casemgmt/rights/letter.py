"""The access report as a printable letter in plain German (HTML with print styles).

A PDF is left to the browser's "print to PDF": names in the records come in Arabic, Tigrinya,
Cyrillic and other scripts, and a PDF library would need fonts for each script and a text
shaper installed with it; the browser has both."""

from __future__ import annotations

import html
from datetime import date
from typing import Any

STATES = {"open": "läuft", "completed": "abgeschlossen", "closed": "beendet"}
STEP_STATES = {"planned": "geplant", "ready": "bereit", "in_progress": "in Arbeit", "completed": "erledigt",
               "blocked": "angehalten", "skipped": "entfallen", "cancelled": "abgebrochen"}
HANDOVER_STATES = {"requested": "angefragt", "escalated": "überfällig", "acknowledged": "angenommen",
                   "rejected": "abgelehnt", "withdrawn": "zurückgezogen"}
BOOKING_STATES = {"referred": "vermittelt", "enrolled": "angemeldet"}
SKILLS = {"listening": "Hören", "reading": "Lesen", "writing": "Schreiben", "speaking": "Sprechen"}
CONSENT_STATES = {"active": "gültig", "withdrawn": "widerrufen", "expired": "abgelaufen",
                  "not_yet_valid": "noch nicht gültig"}


def _e(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "ja" if value else "nein"
    return html.escape(str(value))


def _day(value: str | None) -> str:
    if not value:
        return "–"
    try:
        return date.fromisoformat(value[:10]).strftime("%d.%m.%Y")
    except ValueError:
        return _e(value)


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f"<p>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_letter(report: dict[str, Any]) -> str:
    fields = [[_e(f["title"]), _e(f["value"]), _e(f["category_title"]), _e(f.get("purpose_title") or f.get("purpose")),
               _e(f.get("legal_basis_text")), _e(f.get("written_by_organisation"))] for f in report["fields"]]
    reads = [[_day(r["date"]), _e(r["organisation"]), _e(", ".join(r["category_titles"])),
              _e("; ".join(t or "" for t in r["legal_basis_texts"]))] for r in report["recipients"]]
    consents = [[_day(c["recorded_at"]), _e(", ".join(c["categories"])), _e(", ".join(x or "" for x in c["recipients"])),
                 _e(CONSENT_STATES.get(c["status"], c["status"])) + (f" ({_day(c['withdrawn_at'])})" if c["withdrawn_at"] else "")]
                for c in report["consents"]]
    chains = "".join(
        f"<h3>{_e(c['title'])}</h3><p>Begonnen am {_day(c['started_at'])}, begleitet von {_e(c['case_management'])}; "
        f"Stand: {_e(STATES.get(c['status'], c['status']))}.</p>"
        + _table(["Schritt", "Stand", "Zuständig", "Erledigt am"],
                 [[_e(s["step"]), _e(STEP_STATES.get(s["state"], s["state"])), _e(s["organisation"]),
                   _day(s["completed_at"])] for s in c["steps"]], "Keine Schritte.")
        for c in report["chains"]) or "<p>Keine.</p>"
    handovers = [[_day(h["requested_at"]), _e(h["from"]), _e(h["to"]), _e(HANDOVER_STATES.get(h["state"], h["state"])),
                  _e(", ".join(f["title"] for f in h["package_fields"]) or "keine Daten")] for h in report["handovers"]]
    courses = [[_e(c["course_title"]) + (f"<br><small>{_e(c['language'])}</small>" if c.get("language") else ""),
                _e(c["provider"]),
                _day(c["from_date"]) + " – " + (_day(c["to_date"]) if c["to_date"] else "laufend"),
                _e(f"{c['hours']} UE") if c["hours"] is not None else "–",
                _e(", ".join(f"{SKILLS.get(k, k)} {v}" for k, v in c["levels"].items())) or "–",
                "<br>".join(f"{_e(x.get('title') or x['exam'])} ({_e(x['level'])}), {_day(x['date'])}"
                            for x in c["certificates"]) or "–"]
               for c in report.get("language_pass", [])]
    offers = [[_e(o["offer"]), _e(o["provider"]), _e(BOOKING_STATES.get(o["state"], o["state"])),
               _day(o["referred_at"]), _day(o["enrolled_at"])] for o in report.get("offers", [])]
    conferences = [[_day(c["date"]), _e(c["conference"]), _e(", ".join(c["organisations"])),
                    "<br>".join(_e(a["text"]) for a in c["agreements"]) or "–"] for c in report["conference_cases"]]
    retention = [[_e(r["title"]), _e(r["rule"]), _day(r["kept_until"]) if r["kept_until"] else _e(
        "solange Ihr Fall läuft, danach nach der Regel"), _e(r["source"])] for r in report["retention"]]
    rights = "".join(f"<li><strong>{_e(r['right'])}</strong> ({_e(r['article'])}): {_e(r['text'])}</li>"
                     for r in report["rights"])
    return f"""<!DOCTYPE html>
<html lang="de"><head><meta charset="utf-8"><title>Auskunft nach Art. 15 DSGVO</title>
<style>
body {{ font-family: sans-serif; font-size: 11pt; line-height: 1.4; margin: 2cm; color: #111; }}
h1 {{ font-size: 16pt; }} h2 {{ font-size: 13pt; margin-top: 1.5em; border-bottom: 1px solid #999; }}
h3 {{ font-size: 11pt; }}
table {{ border-collapse: collapse; width: 100%; margin: .5em 0; }}
th, td {{ border: 1px solid #bbb; padding: 3px 6px; text-align: left; vertical-align: top; }}
th {{ background: #eee; }}
@media print {{ body {{ margin: 0; }} h2 {{ page-break-after: avoid; }} tr {{ page-break-inside: avoid; }} }}
</style></head><body>
<h1>Auskunft über Ihre Daten (Art. 15 DSGVO)</h1>
<p>Sie haben gefragt, welche Daten wir über Sie speichern. Hier ist unsere Antwort. Sie zeigt alle
Daten, die wir im Integrationsmanagement über Sie gespeichert haben, wer sie bekommen hat, warum wir
sie speichern und wie lange. Stand: {_day(report["generated_at"])}. Zeichen Ihres Antrags:
{_e(report["request_id"])}.</p>
<h2>1. Ihre Daten</h2>
{_table(["Angabe", "Wert", "Art der Daten", "Zweck", "Rechtsgrundlage", "Gespeichert von"], fields, "Wir speichern keine Angaben zu Ihrer Person.")}
<h2>2. Wer Ihre Daten bekommen hat</h2>
<p>Diese Stellen haben Daten über Sie gelesen. Wir nennen die Stelle, nicht die einzelne Person dort.</p>
{_table(["Datum", "Stelle", "Art der Daten", "Rechtsgrundlage"], reads, "Niemand außer der Stelle, die Sie betreut.")}
<h2>3. Ihre Einwilligungen</h2>
{_table(["Erteilt am", "Für welche Daten", "An wen", "Stand"], consents, "Sie haben keine Einwilligung erteilt.")}
<h2>4. Ihr Weg durch die Ämter</h2>
{chains}
<h2>5. Ihre Sprachkurse (Sprachenpass)</h2>
<p>Niveaus nach dem Gemeinsamen Europäischen Referenzrahmen (GER); UE = Unterrichtseinheiten.</p>
{_table(["Kurs", "Träger", "Zeitraum", "Umfang", "Erreichte Niveaus", "Zertifikate"], courses, "Es sind keine Sprachkurse eingetragen.")}
<h2>6. Angebote, in die Sie vermittelt wurden</h2>
{_table(["Angebot", "Träger", "Stand", "Vermittelt am", "Angemeldet am"], offers, "Sie wurden in kein Angebot vermittelt.")}
<h2>7. Übergaben zwischen Stellen</h2>
{_table(["Datum", "Von", "An", "Stand", "Mitgegebene Daten"], handovers, "Es gab keine Übergaben.")}
<h2>8. Fallkonferenzen</h2>
<p>Ihr Fall wurde in diesen Konferenzen besprochen. Daten anderer Personen sind hier nicht aufgeführt.</p>
{_table(["Datum", "Konferenz", "Teilnehmende Stellen", "Vereinbarungen"], conferences, "Ihr Fall wurde in keiner Fallkonferenz besprochen.")}
<h2>9. Wie lange wir Ihre Daten speichern</h2>
{_table(["Art der Daten", "Regel", "Gespeichert bis", "Grundlage"], retention, "–")}
<h2>10. Ihre Rechte</h2>
<ul>{rights}</ul>
<p>Für Fragen erreichen Sie unsere Datenschutzbeauftragte oder unseren Datenschutzbeauftragten über die
Stelle, die Sie betreut.</p>
</body></html>
"""
