"""A report definition as CSV for spreadsheets (Excel, WPS, LibreOffice) and for machines.

- UTF-8 with a byte-order mark: Excel reads the Chinese labels right only with it.
- The title, the parameters and the time generated come first, one per line; then each section:
  its title line, its header line, its rows, its totals line, a blank line.
- Money: two columns, yuan (``1234.56``, no thousands separator: a number to a spreadsheet) and
  fen (the integer, exact, for machines), headed ``<label>（元）`` and ``<label>（分）``.
- Identifiers (customer numbers, bank codes, account numbers) as ``="01020000"``: spreadsheets
  keep such a cell as text, its leading zeros and all its digits (a bare ``01020000`` would become
  the number 1020000; an 18-digit number would lose digits). A program reading the file takes the
  value from between the quotes.
- Free text that a spreadsheet would take for a formula (starting ``=``, ``+``, ``-``, ``@``, tab
  or carriage return) gets a leading apostrophe (OWASP's CSV injection advice).
"""
from __future__ import annotations

import csv
from datetime import date
from typing import TextIO

from ledger.reports.cells import percent, resolved, yuan
from ledger.reports.definition import Column, ReportDoc

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
UNITS = {"zh": ("（元）", "（分）"), "en": (" (yuan)", " (fen)")}


def identifier_cell(value) -> str:
    return '="' + str(value).replace('"', '""') + '"'


def text_cell(value) -> str:
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def header(column: Column, lang: str) -> list[str]:
    label = column.label(lang)
    if column.kind == "money":
        return [label + UNITS[lang][0], label + UNITS[lang][1]]
    return [label]


def cells(column: Column, value, lang: str) -> list[str]:
    value = resolved(value, lang)
    if column.kind == "money":
        return ["", ""] if value is None else [yuan(value, grouped=False), str(value)]
    if value is None:
        return [""]
    if column.kind == "identifier":
        return [identifier_cell(value)]
    if column.kind == "count":
        return [str(value)]
    if column.kind == "percent":
        return [percent(value)]
    if column.kind == "date" and isinstance(value, date):
        return [value.isoformat()]
    return [text_cell(value)]


def write_csv(doc: ReportDoc, out: TextIO, lang: str = "zh") -> None:
    """Write to a text stream opened with ``newline=""`` (the BOM is written here: open it as utf-8)."""
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([text_cell(doc.title(lang))])
    for label, value in doc.parameters:
        writer.writerow([text_cell(label(lang)), text_cell(value)])
    writer.writerow(["generated" if lang == "en" else "生成时间", doc.generated_at.strftime("%Y-%m-%d %H:%M:%S %z")])
    for section in doc.sections:
        writer.writerow([])
        writer.writerow([text_cell(section.title(lang))])
        writer.writerow([h for c in section.columns for h in header(c, lang)])
        for row in section.rows:
            writer.writerow([v for c in section.columns for v in cells(c, row.get(c.key), lang)])
        if section.totals:
            writer.writerow([v for c in section.columns for v in cells(c, section.totals.get(c.key), lang)])
