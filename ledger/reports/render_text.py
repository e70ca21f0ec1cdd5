"""A report definition as aligned plain text for a terminal: the title, the parameters, then each
section's heading, paragraphs and table (printed columns only; amounts in yuan with thousands
separators, right-aligned; Chinese characters counted two columns wide)."""
from __future__ import annotations

import unicodedata
from typing import TextIO

from ledger.reports.cells import display
from ledger.reports.definition import ReportDoc, Section, say


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


def text_table(section: Section, lang: str) -> list[str]:
    cols = [c for c in section.columns if c.printed]
    body = [[display(c, r.get(c.key), lang) for c in cols] for r in section.rows]
    totals = [display(c, section.totals.get(c.key), lang) for c in cols] if section.totals else None
    labels = [say(c.label, lang) for c in cols]
    widths = [max([_width(label)] + [_width(row[i]) for row in body + ([totals] if totals else [])])
              for i, label in enumerate(labels)]
    right = [c.kind in ("money", "count", "percent") for c in cols]

    def line(cells):
        return "  ".join(_pad(v, w, r) for v, w, r in zip(cells, widths, right)).rstrip()

    rule = line(["-" * w for w in widths])
    return [line(labels), rule] + [line(row) for row in body] + ([rule, line(totals)] if totals else [])


def text_lines(doc: ReportDoc, lang: str = "zh") -> list[str]:
    lines = [say(doc.title, lang)] + [f"{say(k, lang)}: {say(v, lang)}" for k, v in doc.parameters]
    lines += [say(note, lang) for note in doc.notes]
    for section in doc.sections:
        if not section.columns and not section.paragraphs:
            continue
        lines += ["", say(section.title, lang)] + [say(p, lang) for p in section.paragraphs]
        if section.columns:
            lines += text_table(section, lang)
    return lines


def write_text(doc: ReportDoc, out: TextIO, lang: str = "zh") -> None:
    out.write("\n".join(text_lines(doc, lang)) + "\n")
