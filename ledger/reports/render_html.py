"""A report definition as one self-contained HTML page: inline CSS, inline SVG charts of money, no
scripts and no external resources (it opens offline, from a mail attachment or a file share), a
print layout for A4 (``@page``; the table header repeats on each page, rows and charts are not
split) and the sign-off block a clerk signs on paper.

Cells carry their column's kind as a class (``money``, ``count``, ``identifier`` ...; ``num`` for
figures, ``neg`` below zero); a section's ``row_classes`` mark its rows (``open``, ``resolved``, a
bridge's ``start``/``end``); the totals row is ``tfoot > tr.totals``. Columns not ``printed`` are
left out. ``write_html(doc, out, lang)`` streams the page to a text file (Jinja2's ``generate``), so
a long list never sits in memory as one string; ``html_text(doc, lang)`` returns it whole.
"""
from __future__ import annotations

from typing import TextIO

from jinja2 import Environment
from markupsafe import Markup, escape

from ledger.reports.cells import display, local_stamp, yuan
from ledger.reports.definition import Chart, ReportDoc, say

CSS = """
@page{size:A4 portrait;margin:12mm 10mm 14mm}
body{font-family:"Noto Sans CJK SC","Source Han Sans SC","WenQuanYi Micro Hei","Microsoft YaHei",Arial,sans-serif;
margin:20px;color:#1d1d1d;background:#fff}
h1{font-size:20px;margin:0 0 6px} h2{font-size:15px;margin:20px 0 6px;border-bottom:1px solid #bbb;padding-bottom:2px}
.meta{font-size:12px;color:#444;margin:0 0 2px} .note{font-size:11px;color:#555;margin:4px 0}
.ok{color:#1f7a1f;font-weight:600} .bad{color:#b3261e;font-weight:600}
table{border-collapse:collapse;font-size:12px;margin:4px 0 8px;width:100%}
th,td{border:1px solid #b9b9b9;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#e8eef6;font-weight:600} td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.identifier{font-family:"DejaVu Sans Mono",monospace;white-space:nowrap} td.date{white-space:nowrap}
tr.totals td,tr.end td{font-weight:700;background:#f3f3f3;border-top:2px solid #555} tr.subtotal td{font-style:italic}
tr.open td{background:#fff3f0} tr.resolved td{background:#f2f8f0}
td.neg{color:#a11d1d} figure{margin:10px 0} figcaption{font-size:13px;font-weight:600;margin-bottom:4px}
svg{max-width:100%;height:auto} svg text{font-family:Arial,"Noto Sans CJK SC",sans-serif;font-size:11px}
.sign{display:flex;gap:28px;margin-top:28px;font-size:13px}
.sign span{flex:1;border-bottom:1px solid #444;padding-bottom:18px}
@media print{body{margin:0;font-size:10px} table{font-size:9.5px} th,td{padding:1px 4px}
 thead{display:table-header-group} tr{break-inside:avoid;page-break-inside:avoid}
 h2{break-after:avoid;page-break-after:avoid} figure,.sign{break-inside:avoid;page-break-inside:avoid}}
"""

PALETTE = ("#1565c0", "#2e7d32", "#d9822b", "#b3261e", "#7a5cb8")
NUMERIC = ("money", "count", "percent")

TEMPLATE = """{% macro svg(chart) %}<figure id="{{ chart.key }}"><figcaption>{{ chart.title }}</figcaption>
<svg xmlns="http://www.w3.org/2000/svg" width="{{ chart.width }}" height="{{ chart.height }}" viewBox="0 0 {{ chart.width }} {{ chart.height }}" role="img">
<line x1="{{ chart.zero }}" y1="4" x2="{{ chart.zero }}" y2="{{ chart.height - 24 }}" stroke="#555"/>
{% for bar in chart.bars %}<text x="{{ chart.label_w - 6 }}" y="{{ bar.y + bar.h }}" text-anchor="end">{{ bar.label }}</text>
{% for r in bar.rects %}<rect x="{{ r.x }}" y="{{ r.y }}" width="{{ r.w }}" height="{{ r.h }}" fill="{{ r.colour }}"/>
<text x="{{ r.text_x }}" y="{{ r.y + r.h - 3 }}" text-anchor="start">{{ r.value }}</text>
{% endfor %}{% endfor %}{% for s in chart.legend %}<rect x="{{ s.x }}" y="{{ chart.height - 16 }}" width="10" height="10" fill="{{ s.colour }}"/>
<text x="{{ s.x + 14 }}" y="{{ chart.height - 7 }}">{{ s.label }}</text>
{% endfor %}</svg></figure>
{% endmacro %}<!DOCTYPE html>
<html lang="{{ 'en' if lang == 'en' else 'zh-CN' }}"><head><meta charset="utf-8">
<title>{{ say(doc.title) }}</title><style>{{ css|safe }}</style></head>
<body>
<h1>{{ say(doc.title) }}</h1>
{% for label, value in doc.parameters %}<p class="meta">{{ say(label) }}: {{ say(value) }}</p>
{% endfor %}<p class="meta">{{ generated }}: {{ stamp(doc.generated_at) }}</p>
{% for note in doc.notes %}<p class="note">{{ say(note) }}</p>
{% endfor %}{% if doc_chart %}{{ svg(doc_chart) }}{% endif %}
{% for section in doc.sections %}<h2 id="h-{{ section.key }}">{{ say(section.title) }}</h2>
{% if section.note %}<p class="note">{{ say(section.note) }}</p>
{% endif %}{% for text in section.paragraphs %}<p class="{{ section.status or 'note' }}" id="p-{{ section.key }}">{{ say(text) }}</p>
{% endfor %}{% set columns = printed(section) %}{% if columns %}<table id="{{ section.key }}"><thead><tr>{% for c in columns %}{{ header(c) }}{% endfor %}</tr></thead>
<tbody>
{% for row, cls in rows(section) %}<tr{% if cls %} class="{{ cls }}"{% endif %}>{% for c in columns %}{{ cell(c, row.get(c.key)) }}{% endfor %}</tr>
{% else %}<tr><td colspan="{{ columns|length }}">{{ nothing }}</td></tr>
{% endfor %}</tbody>{% if section.totals %}
<tfoot><tr class="totals">{% for c in columns %}{{ cell(c, section.totals.get(c.key)) }}{% endfor %}</tr></tfoot>{% endif %}
</table>
{% endif %}{% if section.chart and section.chart.bars %}{{ svg(chart(section.chart)) }}{% endif %}
{% endfor %}{% if doc.sign_off %}<div class="sign">{% for line in doc.sign_off %}<span>{{ say(line) }}</span>{% endfor %}</div>
{% endif %}</body></html>
"""

_env = Environment(autoescape=True, trim_blocks=False)
_template = _env.from_string(TEMPLATE)


def _chart_geometry(chart: Chart, lang: str) -> dict:
    """Bar positions: one row per bar label, a bar per series, scaled to the widest value; a
    negative value is drawn left of the zero line, its figure right of it (clear of the labels)."""
    width, label_w, bar_h, gap = 720, 170, 13, 10
    values = [v for _, vs in chart.bars for v in vs]
    low, high = min([0, *values]), max([0, *values])
    span = (high - low) or 1
    plot_w = width - label_w - 90
    zero = label_w + round(plot_w * (-low) / span)
    bars, y = [], 8
    for label, vs in chart.bars:
        rects = []
        for i, v in enumerate(vs):
            w = max(1, round(plot_w * abs(v) / span)) if v else 0
            x = zero if v >= 0 else zero - w
            rects.append({"x": x, "y": y + i * bar_h, "w": w, "h": bar_h - 2, "colour": PALETTE[i % len(PALETTE)],
                          "value": yuan(v), "text_x": x + w + 4 if v >= 0 else zero + 4})
        bars.append({"label": say(label, lang), "y": y, "h": bar_h * len(vs) // 2 + 4, "rects": rects})
        y += bar_h * len(vs) + gap
    legend = [{"x": label_w + i * 160, "label": say(s, lang), "colour": PALETTE[i % len(PALETTE)]}
              for i, s in enumerate(chart.series)]
    return {"key": chart.key, "title": say(chart.title, lang), "width": width, "height": y + 26, "label_w": label_w,
            "zero": zero, "bars": bars, "legend": legend}


def _stream(doc: ReportDoc, lang: str):
    unit = {"zh": "（元）", "en": " (yuan)"}[lang]

    def header(c) -> Markup:
        num = ' class="num"' if c.kind in NUMERIC else ""
        return Markup(f"<th{num}>{escape(say(c.label, lang) + (unit if c.kind == 'money' else ''))}</th>")

    def cell(c, value) -> Markup:
        text = escape(display(c, value, lang))
        classes = [c.kind] + (["num"] if c.kind in NUMERIC else [])
        if c.kind in NUMERIC and isinstance(value, (int, float)) and value < 0:
            classes.append("neg")
        return Markup(f'<td class="{" ".join(classes)}">{text}</td>')

    def rows(section):
        classes = iter(section.row_classes or ())
        for row in section.rows:
            yield row, next(classes, "")

    chart = _chart_geometry(doc.chart, lang) if doc.chart and doc.chart.bars else None
    return _template.generate(
        doc=doc, lang=lang, css=CSS, doc_chart=chart, header=header, cell=cell, rows=rows,
        say=lambda words: say(words, lang), chart=lambda c: _chart_geometry(c, lang),
        printed=lambda section: [c for c in section.columns if c.printed],
        generated="generated" if lang == "en" else "生成时间", stamp=local_stamp, nothing="(nothing)" if lang == "en" else "（无）")


def write_html(doc: ReportDoc, out: TextIO, lang: str = "zh") -> None:
    for chunk in _stream(doc, lang):
        out.write(chunk)


def html_text(doc: ReportDoc, lang: str = "zh") -> str:
    return "".join(_stream(doc, lang))
