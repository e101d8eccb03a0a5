"""The steering report as CSV for German Excel and as a readable HTML page with charts. Both are
renderings of the JSON document of :mod:`casemgmt.steering.report` and add nothing to it."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Mapping
from typing import Any

from casemgmt.steering.report import TOTAL

SUPPRESSED = "."
HEADINGS = {
    "barrier_category": "Barriere", "field_of_action": "Handlungsfeld", "organisation_kind": "Organisationsart",
    "step_key": "Schritt", "quarter": "Quartal", "town": "Gebiet", "outcome": "Ergebnis",
    "sender_kind": "Abgebende Stelle", "receiver_kind": "Aufnehmende Stelle",
}
OUTCOME_TITLES = {"attained": "erreicht", "missed": "verfehlt", TOTAL: "entschieden"}


def _number(value: Any) -> str:
    """German number format; "." for a suppressed cell, as in official statistics."""
    if value is None:
        return SUPPRESSED
    if isinstance(value, float):
        return f"{value:.1f}".replace(".", ",")
    return str(value)


def _label(dimension: str, value: str, report: Mapping[str, Any]) -> str:
    if value == TOTAL:
        return report["area"]["name"] if dimension == "town" else "insgesamt"
    taxonomy = report["taxonomy"]
    if dimension == "barrier_category":
        return taxonomy["barrier_categories"].get(value, value)
    if dimension == "field_of_action":
        return taxonomy["fields_of_action"].get(value, value)
    if dimension == "outcome":
        return OUTCOME_TITLES.get(value, value)
    return value


def to_csv(report: Mapping[str, Any]) -> bytes:
    """Semicolon-separated, UTF-8 with BOM and CRLF, decimal comma: what German Excel opens
    correctly by double-click."""
    dims: list[str] = []
    for table in report["tables"]:
        dims += [d for d in table["dimensions"] if d not in dims]
    for d in ("sender_kind", "receiver_kind"):
        dims.append(d)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["Tabelle", "Titel", *(HEADINGS.get(d, d) for d in dims), "Personen",
                     "Median Arbeitstage", "90. Perzentil Arbeitstage", "Median Kalendertage",
                     "90. Perzentil Kalendertage"])
    for table in report["tables"]:
        for cell in table["cells"]:
            writer.writerow([table["key"], table["title"],
                             *(_label(d, cell[d], report) if d in cell else "" for d in dims),
                             _number(cell["value"]), "", "", "", ""])
    for key, title, rows in (("handover_waiting_times", "Wartezeit bis zur Bestätigung je Paar", report["handover_waiting_times"]),
                             ("handover_waiting_trend", "Wartezeit bis zur Bestätigung je Quartal", report["handover_waiting_trend"])):
        for row in rows:
            writer.writerow([key, title, *(row.get(d, "") for d in dims),
                             _number(row["persons"]) if "persons" in row else "",
                             _number(row["working_days_median"]), _number(row["working_days_p90"]),
                             _number(row["calendar_days_median"]), _number(row["calendar_days_p90"])])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


# --- HTML ----------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:right}th{background:#f3f3f3}
td.l,th.l{text-align:left}.note{color:#555;font-size:.85rem}
svg text{font-size:11px;font-family:system-ui,sans-serif}
"""


def _bars(items: list[tuple[str, float | None]], unit: str = "", target: float | None = None,
          scale: float | None = None) -> str:
    """A horizontal bar chart as inline SVG; a suppressed value is drawn as '.' without a bar."""
    if not items:
        return ""
    width, label_w, row_h = 640, 260, 18
    top = max([v for _, v in items if v is not None] + [target or 0, scale or 0, 1])
    parts = [f'<svg width="{width}" height="{row_h * len(items) + 8}" role="img">']
    for i, (label, value) in enumerate(items):
        y = i * row_h + 4
        parts.append(f'<text x="0" y="{y + 12}">{html.escape(label[:42])}</text>')
        if value is None:
            parts.append(f'<text x="{label_w + 4}" y="{y + 12}">.</text>')
            continue
        w = (width - label_w - 60) * value / top
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{row_h - 5}" fill="#3b6ea5"/>')
        parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 12}">{_number(value)}{unit}</text>')
    if target is not None:
        x = label_w + (width - label_w - 60) * target / top
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{row_h * len(items) + 8}" '
                     'stroke="#c0392b" stroke-dasharray="4 3"/>')
    parts.append("</svg>")
    return "".join(parts)


def _table_html(table: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    dims = table["dimensions"]
    if "town" in dims:
        # Rows: the other dimensions; columns: the towns, Kreis total last.
        others = [d for d in dims if d != "town"]
        rows: dict[tuple, dict[str, Any]] = {}
        for cell in table["cells"]:
            rows.setdefault(tuple(cell[d] for d in others), {})[cell["town"]] = cell["value"]
        towns = [*report["area"]["towns"], TOTAL] if len(report["area"]["towns"]) > 1 else [TOTAL]
        head = "".join(f'<th class="l">{HEADINGS.get(d, d)}</th>' for d in others)
        head += "".join(f"<th>{html.escape(_label('town', t, report))}</th>" for t in towns)
        body = []
        for key, values in rows.items():
            cells = "".join(f'<td class="l">{html.escape(_label(d, v, report))}</td>' for d, v in zip(others, key))
            cells += "".join(f"<td>{_number(values.get(t))}</td>" if t in values else "<td></td>" for t in towns)
            body.append(f"<tr>{cells}</tr>")
    else:
        head = "".join(f'<th class="l">{HEADINGS.get(d, d)}</th>' for d in dims) + "<th>Personen</th>"
        body = ["<tr>" + "".join(f'<td class="l">{html.escape(_label(d, c[d], report))}</td>' for d in dims)
                + f"<td>{_number(c['value'])}</td></tr>" for c in table["cells"]]
    if not body:
        return '<p class="note">Keine Daten.</p>'
    dropped = ""
    if table["dropped_breakdowns"]:
        dropped = (f'<p class="note">{len(table["dropped_breakdowns"])} Aufgliederung(en) nicht veröffentlicht, '
                   "weil einzelne Personen sonst erkennbar wären.</p>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{dropped}"


def to_html(report: Mapping[str, Any]) -> str:
    area = html.escape(report["area"]["name"])
    k = report["k"]
    parts = [f"<!doctype html><html lang=\"de\"><head><meta charset=\"utf-8\"><title>Steuerungsbericht {area}</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>Steuerungsbericht {area}</h1>",
             f'<p class="note">Stand {html.escape(report["generated_at"][:16].replace("T", " "))} UTC. Alle Zahlen '
             f"zählen verschiedene Personen. Felder mit weniger als {k} Personen und Felder, aus denen sich "
             "solche berechnen ließen, sind mit „.“ gekennzeichnet.</p>"]
    goals = report["goals"]
    if goals:
        parts.append("<h2>Zielerreichung</h2>")
        parts.append(_bars([(g["title"], None if g["share"] is None else round(100 * g["share"], 1)) for g in goals],
                           " %", scale=100))
        parts.append("<table><thead><tr><th class=\"l\">Ziel</th><th>erreicht</th><th>verfehlt</th><th>Anteil</th>"
                     "<th>Zielwert</th></tr></thead><tbody>")
        for g in goals:
            share = SUPPRESSED if g["share"] is None else f"{100 * g['share']:.0f} %"
            parts.append(f'<tr><td class="l">{html.escape(g["title"])}</td><td>{_number(g["attained"])}</td>'
                         f'<td>{_number(g["missed"])}</td><td>{share}</td><td>{100 * g["target_share"]:.0f} %</td></tr>')
        parts.append("</tbody></table>")
    waiting = report["handover_waiting_times"]
    if waiting:
        parts.append("<h2>Wartezeit bei Übergaben (Arbeitstage bis zur Bestätigung)</h2>")
        parts.append(_bars([(f"{w['sender_kind']} → {w['receiver_kind']}", w["working_days_median"]) for w in waiting],
                           " AT"))
        parts.append("<table><thead><tr><th class=\"l\">Abgebende Stelle</th><th class=\"l\">Aufnehmende Stelle</th>"
                     "<th>Personen</th><th>Median</th><th>90. Perzentil</th></tr></thead><tbody>")
        for w in waiting:
            parts.append(f'<tr><td class="l">{html.escape(w["sender_kind"])}</td><td class="l">'
                         f'{html.escape(w["receiver_kind"])}</td><td>{_number(w["persons"])}</td>'
                         f'<td>{_number(w["working_days_median"])}</td><td>{_number(w["working_days_p90"])}</td></tr>')
        parts.append("</tbody></table>")
    for table in report["tables"]:
        parts.append(f"<h2>{html.escape(table['title'])}</h2>")
        totals = [(" / ".join(_label(d, c[d], report) for d in table["dimensions"] if d != "town"), c["value"])
                  for c in table["cells"] if c.get("town") == TOTAL]
        if totals and table["key"] != "conference_persons" and not table["key"].startswith("goal:"):
            parts.append(_bars(sorted(totals, key=lambda t: -(t[1] or 0))[:15]))
        parts.append(_table_html(table, report))
    parts.append("</body></html>")
    return "\n".join(parts)
