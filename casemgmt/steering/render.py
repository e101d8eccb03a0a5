"""The steering report as CSV for German Excel and as a readable HTML page with charts. Both are
renderings of the JSON document of :mod:`casemgmt.steering.report` and add nothing to it."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Mapping
from typing import Any

from casemgmt.steering.report import DIMENSION_TITLES, OUTCOME_TITLES, TOTAL

SUPPRESSED = "."
PERTURBED_MARK = "*"
HEADINGS = DIMENSION_TITLES
WAITING_TABLES = (("handover_waiting_times", "Wartezeit bis zur Bestätigung je Paar von Organisationsarten"),
                  ("handover_waiting_trend", "Wartezeit bis zur Bestätigung je Quartal"))
FIGURE_HEADINGS = ("Personen", "Median Arbeitstage", "90. Perzentil Arbeitstage", "Median Kalendertage",
                   "90. Perzentil Kalendertage")


def _number(value: Any) -> str:
    """German number format; "." for a suppressed cell, as in official statistics."""
    if value is None:
        return SUPPRESSED
    if isinstance(value, float):
        return f"{value:.1f}".replace(".", ",")
    return str(value)


def _label(dimension: str, cell: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    """The title the report carries beside the key (never the key itself)."""
    title = cell.get(f"{dimension}_title")
    if title is not None:
        return title
    value = cell[dimension]
    if value == TOTAL:
        return report["area"]["name"] if dimension == "town" else "insgesamt"
    return OUTCOME_TITLES.get(value, value) if dimension == "outcome" else value


def _dimensions(report: Mapping[str, Any]) -> list[str]:
    dims: list[str] = []
    for table in report["tables"]:
        dims += [d for d in table["dimensions"] if d not in dims]
    for d in ("sender_kind", "receiver_kind"):
        dims.append(d)
    return dims


def rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The report as one sheet: a heading row and rows of titles and figures (None = suppressed),
    shared by the CSV and the .xlsx."""
    dims = _dimensions(report)
    header = ["Tabelle", *(HEADINGS.get(d, d) for d in dims), *FIGURE_HEADINGS]
    out: list[list[Any]] = []
    for table in report["tables"]:
        for cell in table["cells"]:
            out.append([table["title"], *(_label(d, cell, report) if d in cell else "" for d in dims),
                        cell["value"], "", "", "", ""])
    for key, title in WAITING_TABLES:
        for row in report[key]:
            out.append([title, *(_label(d, row, report) if d in row else "" for d in dims),
                        row["persons"] if "persons" in row else "",
                        row["working_days_median"], row["working_days_p90"],
                        row["calendar_days_median"], row["calendar_days_p90"]])
    return header, out


def to_csv(report: Mapping[str, Any]) -> bytes:
    """Semicolon-separated, UTF-8 with BOM and CRLF, decimal comma: what German Excel opens
    correctly by double-click. Titles only, no internal keys. (No ``sep=;`` line: Excel then
    ignores the BOM and garbles the umlauts; the .xlsx download opens everywhere without a dialog.)"""
    header, body = rows(report)
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    for row in body:
        writer.writerow([_number(v) if isinstance(v, int | float) or v is None else v for v in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def to_xlsx(report: Mapping[str, Any], sheet_title: str = "Steuerungsbericht") -> bytes:
    """The same rows as an Excel workbook: numbers as numbers, "." for a suppressed cell, the
    heading row frozen; opens in Excel and LibreOffice without an import dialog."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font

    header, body = rows(report)
    book = Workbook()
    sheet = book.active
    sheet.title = sheet_title[:31]
    sheet.append(header)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    figures_from = len(header) - len(FIGURE_HEADINGS)
    for row in body:
        sheet.append([SUPPRESSED if (i >= figures_from and v is None) else v for i, v in enumerate(row)])
    sheet.freeze_panes = "B2"
    for i, heading in enumerate(header):
        letter = sheet.cell(row=1, column=i + 1).column_letter
        sheet.column_dimensions[letter].width = 48 if i == 0 else (14 if i >= figures_from else 30)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


# --- HTML ----------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ccc}
.box{max-width:100%;overflow-x:auto;margin:.5rem 0 1rem}
table{border-collapse:collapse;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:right;vertical-align:top}th{background:#f3f3f3}
td.l,th.l{text-align:left;max-width:22rem}.note{color:#555;font-size:.85rem}
svg{max-width:100%;height:auto}svg text{font-size:11px;font-family:system-ui,sans-serif}
"""
LABEL_CHARS = 40  # per line of a chart label; longer labels wrap, never cut


def wrap(label: str, width: int = LABEL_CHARS) -> list[str]:
    """Break a label at spaces (or, for a single long word, inside it) into lines of at most
    ``width`` characters; nothing is cut off."""
    lines: list[str] = []
    line = ""
    for word in label.split():
        while len(word) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= width:
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = word
    if line or not lines:
        lines.append(line)
    return lines


def _bars(items: list[tuple[str, float | None]], unit: str = "", targets: list[float | None] | None = None,
          scale: float | None = None, target_label: str = "Zielwert") -> str:
    """A horizontal bar chart as inline SVG; labels wrap onto as many lines as they need; a
    suppressed value is drawn as '.' without a bar; ``targets`` draws each row's target as a
    red mark with a legend."""
    if not items:
        return ""
    width, label_w, line_h = 720, 300, 13
    values = [v for _, v in items if v is not None]
    top = max(values + [t for t in (targets or []) if t is not None] + [scale or 0, 1])
    plot = width - label_w - 70
    parts: list[str] = []
    y = 4
    for i, (label, value) in enumerate(items):
        lines = wrap(label)
        row_h = max(18, line_h * len(lines) + 5)
        text = "".join(f'<tspan x="0" dy="{line_h if j else 0}">{html.escape(line)}</tspan>'
                       for j, line in enumerate(lines))
        parts.append(f'<text x="0" y="{y + 11}">{text}</text>')
        if value is None:
            parts.append(f'<text x="{label_w + 4}" y="{y + 11}">.</text>')
        else:
            w = plot * value / top
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="13" fill="#3b6ea5"/>')
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 11}">{_number(value)}{unit}</text>')
        target = targets[i] if targets else None
        if target is not None:
            x = label_w + plot * target / top
            parts.append(f'<line class="target" x1="{x:.1f}" x2="{x:.1f}" y1="{y - 2}" y2="{y + 15}" '
                         'stroke="#c0392b" stroke-width="2.5"/>')
        y += row_h
    if targets and any(t is not None for t in targets):
        parts.append(f'<line x1="{label_w}" x2="{label_w + 14}" y1="{y + 8}" y2="{y + 8}" stroke="#c0392b" '
                     f'stroke-width="2.5"/><text x="{label_w + 18}" y="{y + 12}">{html.escape(target_label)}</text>')
        y += 18
    return (f'<svg width="{width}" height="{y + 4}" viewBox="0 0 {width} {y + 4}" role="img">'
            + "".join(parts) + "</svg>")


def _box(inner: str) -> str:
    """Wide content scrolls inside its own box instead of widening the page."""
    return f'<div class="box">{inner}</div>'


def _table_html(table: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    dims = table["dimensions"]
    if "town" in dims:
        # Rows: the other dimensions; columns: the towns (and merged towns), the area's total last.
        others = [d for d in dims if d != "town"]
        rows_: dict[tuple, dict[str, Any]] = {}
        first: dict[tuple, Mapping[str, Any]] = {}
        columns: dict[str, str] = {}
        for cell in table["cells"]:
            key = tuple(cell[d] for d in others)
            rows_.setdefault(key, {})[cell["town"]] = cell["value"]
            first.setdefault(key, cell)
            if cell["town"] != TOTAL:
                columns.setdefault(cell["town"], _label("town", cell, report))
        order = [t for t in report["area"]["towns"] if t in columns] + sorted(set(columns) - set(report["area"]["towns"]))
        towns = [*order, TOTAL] if len(report["area"]["towns"]) > 1 else [TOTAL]
        head = "".join(f'<th class="l">{html.escape(HEADINGS.get(d, d))}</th>' for d in others)
        head += "".join(f"<th>{html.escape(columns.get(t) or report['area']['name'])}</th>" for t in towns)
        body = []
        for key, values in rows_.items():
            cells = "".join(f'<td class="l">{html.escape(_label(d, first[key], report))}</td>' for d in others)
            cells += "".join(f"<td>{_number(values.get(t))}</td>" if t in values else "<td></td>" for t in towns)
            body.append(f"<tr>{cells}</tr>")
    else:
        head = "".join(f'<th class="l">{html.escape(HEADINGS.get(d, d))}</th>' for d in dims) + "<th>Personen</th>"
        body = ["<tr>" + "".join(f'<td class="l">{html.escape(_label(d, c, report))}</td>' for d in dims)
                + f"<td>{_number(c['value'])}</td></tr>" for c in table["cells"]]
    if not body:
        return '<p class="note">Keine Daten.</p>'
    notes = ""
    if table.get("merged_breakdowns"):
        notes += (f'<p class="note">{len(table["merged_breakdowns"])} Aufgliederung(en) mit zusammengefassten '
                  "Nachbargemeinden, weil einzelne Personen sonst erkennbar wären.</p>")
    if table["dropped_breakdowns"]:
        notes += (f'<p class="note">{len(table["dropped_breakdowns"])} Aufgliederung(en) nicht veröffentlicht, '
                  "weil einzelne Personen sonst erkennbar wären.</p>")
    return _box(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>") + notes


def follows_figure(edges: list[Mapping[str, Any]], activities: list[str]) -> str:
    """The directly-follows graph as inline SVG: activities as boxes top to bottom in their
    fixed order, each edge of at least k chains as an arc labelled with its median waiting time
    in days; the width of an arc grows with its chains."""
    shown = [e for e in edges if e["chains"] is not None]
    names = [a for a in activities if any(a in (e["source"], e["target"]) for e in shown)]
    if not names:
        return '<p class="note">Kein Übergang wird von mindestens k Ketten genommen.</p>'
    row_h, box_w, left = 44, 260, 10
    pos = {name: i for i, name in enumerate(names)}
    most = max(e["chains"] for e in shown)
    width = left + box_w + 40 + 60 * min(len(shown), 12) + 120
    height = row_h * len(names) + 10
    parts = []
    for i, name in enumerate(names):
        y = 5 + i * row_h
        lines = wrap(name, 38)
        text = "".join(f'<tspan x="{left + 6}" dy="{12 if j else 0}">{html.escape(line)}</tspan>'
                       for j, line in enumerate(lines[:2]))
        parts.append(f'<rect x="{left}" y="{y}" width="{box_w}" height="{row_h - 12}" rx="4" fill="#eef3f9" '
                     f'stroke="#3b6ea5"/><text x="{left + 6}" y="{y + 13}">{text}</text>')
    x0 = left + box_w
    for n, e in enumerate(sorted(shown, key=lambda e: abs(pos[e["target"]] - pos[e["source"]]))):
        y1 = 5 + pos[e["source"]] * row_h + (row_h - 12) / 2
        y2 = 5 + pos[e["target"]] * row_h + (row_h - 12) / 2
        reach = 30 + 25 * abs(pos[e["target"]] - pos[e["source"]]) ** 0.8 + 6 * (n % 5)
        stroke = 1 + 5 * e["chains"] / most
        colour = "#3b6ea5" if y2 >= y1 else "#c0392b"
        parts.append(f'<path d="M{x0},{y1:.1f} C{x0 + reach:.1f},{y1:.1f} {x0 + reach:.1f},{y2:.1f} {x0 + 4},{y2:.1f}" '
                     f'fill="none" stroke="{colour}" stroke-opacity=".6" stroke-width="{stroke:.1f}" '
                     'marker-end="url(#arrow)"/>')
        label = f"{_number(e['median_days'])} T."
        parts.append(f'<text x="{x0 + reach * 0.75 + 2:.1f}" y="{(y1 + y2) / 2 + 4:.1f}">{html.escape(label)}</text>')
    marker = ('<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" markerUnits="userSpaceOnUse" '
              'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>')
    return (f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">{marker}'
            + "".join(parts) + "</svg>")


def _process_html(process: Mapping[str, Any], k: int) -> list[str]:
    edges = process["follows"]
    parts = ["<h2>Prozessverlauf: Übergänge zwischen Aktivitäten</h2>",
             f'<p class="note">Ketten, die im Quartal abgeschlossen oder beendet wurden ({process["chains"]}). '
             "Jeder Pfeil ist ein direkter Übergang, beschriftet mit der mittleren Wartezeit (Median, Tage); "
             f"Übergänge von weniger als {k} Ketten sind nur in der Tabelle mit „.“ aufgeführt.</p>",
             _box(follows_figure(edges, process["activities"]))]
    body = "".join(f'<tr><td class="l">{html.escape(e["source"])}</td><td class="l">{html.escape(e["target"])}</td>'
                   f'<td>{_number(e["chains"])}</td><td>{_number(e["median_days"])}</td></tr>' for e in edges)
    if body:
        parts.append(_box('<table><thead><tr><th class="l">von</th><th class="l">nach</th><th>Ketten</th>'
                          f"<th>Median Tage</th></tr></thead><tbody>{body}</tbody></table>"))
    return parts


def to_html(report: Mapping[str, Any]) -> str:
    area = html.escape(report["area"]["name"])
    k = report["k"]
    period = report.get("period")
    release = report.get("release")
    heading = f"Steuerungsbericht {area}"
    if period:
        heading += f", {html.escape(period['title'])}"
    parts = [f"<!doctype html><html lang=\"de\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width\"><title>{heading}</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>{heading}</h1>"]
    if release:
        parts.append(f'<p class="note">Veröffentlichung Nr. {release["number"]} vom '
                     f'{html.escape(release["released_at"][:10])}'
                     + (f' (Neufassung von Nr. {release["revises"]})' if release.get("revises") else "") + ".</p>")
    parts.append(f'<p class="note">Stand {html.escape(report["generated_at"][:16].replace("T", " "))} UTC. Alle Zahlen '
                 f"zählen verschiedene Personen. Felder mit weniger als {k} Personen und Felder, aus denen sich "
                 "solche berechnen ließen, sind mit „.“ gekennzeichnet.</p>")
    goals = report["goals"]
    if goals:
        parts.append("<h2>Zielerreichung</h2>")
        parts.append(_bars([(g["title"], None if g["share"] is None else round(100 * g["share"], 1)) for g in goals],
                           " %", targets=[100 * g["target_share"] for g in goals], scale=100))
        parts.append("<div class=\"box\"><table><thead><tr><th class=\"l\">Ziel</th><th>erreicht</th><th>verfehlt</th>"
                     "<th>Anteil</th><th>Zielwert</th></tr></thead><tbody>")
        for g in goals:
            share = SUPPRESSED if g["share"] is None else f"{100 * g['share']:.0f} %"
            parts.append(f'<tr><td class="l">{html.escape(g["title"])}</td><td>{_number(g["attained"])}</td>'
                         f'<td>{_number(g["missed"])}</td><td>{share}</td><td>{100 * g["target_share"]:.0f} %</td></tr>')
        parts.append("</tbody></table></div>")
    waiting = report["handover_waiting_times"]
    if waiting:
        parts.append("<h2>Wartezeit bei Übergaben (Arbeitstage bis zur Bestätigung)</h2>")
        parts.append(_bars([(f"{_label('sender_kind', w, report)} → {_label('receiver_kind', w, report)}",
                             w["working_days_median"]) for w in waiting], " AT"))
        parts.append("<div class=\"box\"><table><thead><tr><th class=\"l\">Abgebende Stelle</th>"
                     "<th class=\"l\">Aufnehmende Stelle</th><th>Personen</th><th>Median</th><th>90. Perzentil</th>"
                     "</tr></thead><tbody>")
        for w in waiting:
            parts.append(f'<tr><td class="l">{html.escape(_label("sender_kind", w, report))}</td><td class="l">'
                         f'{html.escape(_label("receiver_kind", w, report))}</td><td>{_number(w["persons"])}</td>'
                         f'<td>{_number(w["working_days_median"])}</td><td>{_number(w["working_days_p90"])}</td></tr>')
        parts.append("</tbody></table></div>")
    supply = report.get("offer_supply_demand") or []
    if supply:
        parts.append("<h2>Bestand und Bedarf: wartende Personen und freie Plätze je Angebotsart</h2>")
        parts.append('<p class="note">Wartende: Schritt bereit, noch in keinem Angebot angemeldet. Freie Plätze und '
                     "nächster Beginn: Stand der Angebotsdatenbank bei Erstellung.</p>")
        parts.append("<div class=\"box\"><table><thead><tr><th class=\"l\">Angebotsart</th><th class=\"l\">Gemeinde</th>"
                     "<th>Wartende</th><th>Median Wartetage</th><th>Angebote</th><th>Freie Plätze</th>"
                     "<th>Nächster Beginn</th><th>Bedarf über Bestand</th></tr></thead><tbody>")
        for row in supply:
            free = _number(row["free_places"]) + (f" + {row['unlimited_offers']} offen" if row["unlimited_offers"] else "")
            start = row["next_start"] or "–"
            if row["next_start"]:
                start = ".".join(reversed(row["next_start"].split("-")))
            exceeds = {True: "ja", False: "nein", None: SUPPRESSED}[row["demand_exceeds_supply"]]
            parts.append(f'<tr><td class="l">{html.escape(row.get("offer_kind_title", row["offer_kind"]))}</td>'
                         f'<td class="l">{html.escape(row.get("town_title", row["town"]))}</td>'
                         f'<td>{_number(row["waiting_persons"])}</td><td>{_number(row["waiting_days_median"])}</td>'
                         f'<td>{row["offers"]}</td><td>{free}</td><td>{start}</td><td>{exceeds}</td></tr>')
        parts.append("</tbody></table></div>")
    if report.get("process"):
        parts += _process_html(report["process"], k)
    for table in report["tables"]:
        parts.append(f"<h2>{html.escape(table['title'])}</h2>")
        totals = [(" / ".join(_label(d, c, report) for d in table["dimensions"] if d != "town"), c["value"])
                  for c in table["cells"] if c.get("town") == TOTAL]
        if totals and table["key"] != "conference_persons" and not table["key"].startswith("goal:"):
            parts.append(_bars(sorted(totals, key=lambda t: -(t[1] or 0))[:15]))
        parts.append(_table_html(table, report))
    parts.append("</body></html>")
    return "\n".join(parts)
