"""Rendering a ``report_model.ReportDoc``: self-contained HTML, CSV for spreadsheets and machines, text.

HTML: inline CSS and inline SVG, no script and no external resource (it opens from a mail
attachment or a file share offline); amounts in yuan with thousands separators; a print layout
for A4 (``@page``: A4 portrait, table headers repeated on each page, rows and charts not split)
and a sign-off block. CSV (written UTF-8 with a BOM, so spreadsheet programs read the Chinese
right): one block per table, each row led by the table's id, money as integer fen in columns named
``*_fen``; identifier cells (bank codes, customer numbers, RRNs) written as ``="01020000"``,
which Excel and WPS keep as text with its leading zeros (``identifier_value`` reads one back);
a free-text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a
leading ``'`` so that no spreadsheet runs it as a formula.
"""
from __future__ import annotations

import csv
import html
import io
import re
import unicodedata
from datetime import date, datetime

from ledger.finance_reports import spreadsheet_cell
from ledger.recon.report_model import Chart, Column, ReportDoc, Table

CSS = """
@page{size:A4 portrait;margin:12mm 10mm}
body{font-family:"Noto Sans CJK SC","WenQuanYi Micro Hei","Microsoft YaHei",Arial,sans-serif;margin:20px;color:#222;
background:#fff;font-size:13px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:15px;margin:18px 0 6px;border-bottom:1px solid #ccc}
.meta{color:#444;font-size:12px;margin:2px 0} table{border-collapse:collapse;font-size:12px;margin:6px 0}
th,td{border:1px solid #bbb;padding:2px 6px;text-align:left;vertical-align:top} th{background:#e8eef6}
td.money,td.count,th.money,th.count{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.identifier{font-family:"DejaVu Sans Mono",monospace;white-space:nowrap}
tr.open td{background:#fff3f0} tr.resolved td{background:#f2f8f0} tr.total td,tr.end td{font-weight:bold;
border-top:2px solid #444} tr.subtotal td{font-style:italic} .ok{color:#1f7a1f;font-weight:bold}
.bad{color:#b3261e;font-weight:bold} svg{max-width:100%;height:auto} svg text{font-size:12px}
.sign{display:flex;gap:28px;margin-top:28px;font-size:13px} .sign span{flex:1;border-bottom:1px solid #444;
padding-bottom:18px}
@media print{body{margin:0;font-size:10px} table{font-size:10px} table#exceptions,table#banks{width:100%;font-size:9px}
th,td{padding:1px 4px}
thead{display:table-header-group} tr,svg,.sign{break-inside:avoid} h2{break-after:avoid}}
"""
COLOURS = ("#2e7d32", "#1565c0", "#c62828", "#6a1b9a", "#ef6c00")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
SAFE_IDENTIFIER = re.compile(r"^[0-9A-Za-z._/:\- ]{1,120}$")


def yuan(fen) -> str:
    """Integer fen as yuan with thousands separators and two decimals: -123456 -> '-1,234.56'."""
    if fen is None:
        return ""
    fen = int(fen)
    whole, cents = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}{whole:,}.{cents:02d}"


def shown(column: Column, value) -> str:
    """A value as HTML and text show it."""
    if value is None or value == "":
        return ""
    if column.kind == "money":
        return yuan(value)
    if column.kind == "count":
        return f"{int(value):,}"
    if column.kind == "datetime" and isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


# ---------------------------------------------------------------------------------------------- HTML

def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def html_table(table: Table) -> str:
    cols = [c for c in table.columns if c.printed]
    out = [f'<table id="{_e(table.id)}"><thead><tr>'
           + "".join(f'<th class="{c.kind}">{_e(c.label)}</th>' for c in cols) + "</tr></thead><tbody>"]
    classes = table.row_classes or [""] * len(table.rows)
    for row, cls in zip(table.rows, classes):
        out.append((f'<tr class="{_e(cls)}">' if cls else "<tr>")
                   + "".join(f'<td class="{c.kind}">{_e(shown(c, row.get(c.key)))}</td>' for c in cols) + "</tr>")
    if table.totals is not None:
        out.append('<tr class="total">' + "".join(f'<td class="{c.kind}">{_e(shown(c, table.totals.get(c.key)))}</td>'
                                                  for c in cols) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def svg_chart(chart: Chart) -> str:
    """Horizontal bars of money: per group one bar per series, length by |amount|, the signed
    amount in yuan written beside it; a negative amount is drawn hatched-light in the series colour."""
    width, bar_h, gap, label_w = 760, 15, 12, 220
    series = list(chart.legend)
    bars_per_group = max([1] + [len(bars) for _, bars in chart.groups])
    height = 44 + len(chart.groups) * (bars_per_group * bar_h + gap) + 24
    top = max([1] + [abs(b.fen) for _, bars in chart.groups for b in bars])
    scale = (width - label_w - 150) / top
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="{_e(chart.id)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{_e(chart.title)}">'
           f'<rect width="100%" height="100%" fill="#fafafa" stroke="#ccc"/>'
           f'<text x="10" y="20" font-weight="bold">{_e(chart.title)}</text>']
    y = 34
    for name, bars in chart.groups:
        out.append(f'<text x="10" y="{y + bar_h - 3}">{_e(name)}</text>')
        for i, bar in enumerate(bars):
            colour = COLOURS[series.index(bar.series) % len(COLOURS)]
            w = max(1.0, abs(bar.fen) * scale) if bar.fen else 0
            yy = y + i * bar_h
            opacity = "0.45" if bar.fen < 0 else "1"
            out.append(f'<rect x="{label_w}" y="{yy}" width="{w:.1f}" height="{bar_h - 2}" fill="{colour}" '
                       f'fill-opacity="{opacity}" stroke="{colour}"/>'
                       f'<text x="{label_w + w + 6:.1f}" y="{yy + bar_h - 4}">{_e(yuan(bar.fen))}</text>')
        y += bars_per_group * bar_h + gap
    x = 10
    for key in series:
        colour = COLOURS[series.index(key) % len(COLOURS)]
        out.append(f'<rect x="{x}" y="{height - 20}" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14}" y="{height - 11}">{_e(chart.legend[key])}</text>')
        x += 24 + 13 * len(chart.legend[key])
    out.append("</svg>")
    return "".join(out)


def render_html(doc: ReportDoc) -> str:
    body = [f"<h1>{_e(doc.title)}</h1>"]
    body += [f'<p class="meta">{_e(k)}：{_e(v)}</p>' if doc.lang == "zh" else f'<p class="meta">{_e(k)}: {_e(v)}</p>'
             for k, v in doc.facts]
    for section in doc.sections:
        body.append(f'<h2 id="h-{_e(section.id)}">{_e(section.heading)}</h2>')
        for text in section.paragraphs:
            body.append(f'<p class="{section.status}" id="p-{_e(section.id)}">{_e(text)}</p>')
        if section.table is not None:
            body.append(html_table(section.table))
        if section.chart is not None:
            body.append(svg_chart(section.chart))
    if doc.sign_off:
        body.append('<div class="sign">' + "".join(f"<span>{_e(s)}</span>" for s in doc.sign_off) + "</div>")
    lang = "zh-CN" if doc.lang == "zh" else "en"
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{_e(doc.title)}</title>'
            f'<style>{CSS}</style></head><body>{"".join(body)}</body></html>')


# ---------------------------------------------------------------------------------------------- CSV

def text_cell(value: str) -> str:
    """Free text that no spreadsheet takes for a formula."""
    return "'" + value if value.startswith(FORMULA_START) else value


def identifier_cell(value: str) -> str:
    """An identifier a spreadsheet keeps as text (``="0102"``); one that is not a plain code is
    written as neutralised free text instead."""
    return spreadsheet_cell(value) if SAFE_IDENTIFIER.match(value) else text_cell(value)


def identifier_value(cell: str) -> str:
    """An identifier cell read back: ``="0102"`` -> ``0102``."""
    if cell.startswith('="') and cell.endswith('"'):
        return cell[2:-1].replace('""', '"')
    return cell


def csv_value(column: Column, value):
    if value is None or value == "":
        return ""
    if column.kind in ("money", "count"):
        return int(value)
    if column.kind in ("date", "datetime") and isinstance(value, (date, datetime)):
        return value.isoformat()
    if column.kind == "identifier":
        return identifier_cell(str(value))
    return text_cell(str(value))


def render_csv(doc: ReportDoc) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "label", "value"])
    w.writerow(["report", "title", text_cell(doc.title)])
    for k, v in doc.facts:
        w.writerow(["report", text_cell(k), text_cell(str(v))])
    for table in doc.tables():
        w.writerow([])
        w.writerow(["table"] + [c.csv_key for c in table.columns])
        for row in table.rows + ([table.totals] if table.totals is not None else []):
            w.writerow([table.id] + [csv_value(c, row.get(c.key)) for c in table.columns])
    return buf.getvalue()


def csv_tables(text: str) -> dict[str, list[dict]]:
    """A report's CSV read back: table id -> rows (dicts by CSV column key)."""
    out: dict[str, list[dict]] = {}
    for block in text.lstrip("\ufeff").split("\n\n"):
        rows = list(csv.reader(block.strip("\n").splitlines()))
        header = rows[0][1:]
        for row in rows[1:]:
            out.setdefault(row[0], []).append(dict(zip(header, row[1:])))
    return out


# ---------------------------------------------------------------------------------------------- text

def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


def text_table(table: Table) -> list[str]:
    cols = [c for c in table.columns if c.printed]
    body = [[shown(c, r.get(c.key)) for c in cols] for r in table.rows + ([table.totals] if table.totals else [])]
    widths = [max([_width(c.label)] + [_width(row[i]) for row in body]) for i, c in enumerate(cols)]
    right = [c.kind in ("money", "count") for c in cols]

    def line(cells):
        return "  ".join(_pad(v, w, r) for v, w, r in zip(cells, widths, right)).rstrip()

    out = [line([c.label for c in cols]), line(["-" * w for w in widths])]
    out += [line(row) for row in body[:len(table.rows)]]
    if table.totals:
        out += [line(["-" * w for w in widths]), line(body[-1])]
    return out


def render_text(doc: ReportDoc) -> str:
    lines = [doc.title] + [f"{k}: {v}" for k, v in doc.facts]
    for section in doc.sections:
        if section.table is None and not section.paragraphs:
            continue
        lines += ["", section.heading] + section.paragraphs
        if section.table is not None:
            lines += text_table(section.table)
    return "\n".join(lines) + "\n"
