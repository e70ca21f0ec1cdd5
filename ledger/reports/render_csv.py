"""A report definition as CSV for spreadsheets (Excel, WPS, LibreOffice) and for machines.

- UTF-8 with a byte-order mark: Excel reads the Chinese labels right only with it.
- Money: two columns, yuan (``1234.56``, no thousands separator: a number to a spreadsheet) and
  fen (the integer, exact, for machines).
- Identifiers (customer numbers, bank codes, account numbers, RRNs) as ``="01020000"``:
  spreadsheets keep such a cell as text, its leading zeros and all its digits (a bare ``01020000``
  would become the number 1020000; an 18-digit number would lose digits). A program reading the
  file takes the value from between the quotes (``identifier_value``).
- Free text that a spreadsheet would take for a formula (starting ``=``, ``+``, ``-``, ``@``, tab
  or carriage return) gets a leading apostrophe (OWASP's CSV injection advice).
- Sections without a table (paragraphs, a chart) are left out; every column is written, printed or not.

Two layouts of the same cells. The sheet (``keyed=False``: ``gridpay report``, the HTTP service):
the title, the parameters and the time generated first, one per line; then each section: its
title line, a header of labels in the report's language (money ``<label>（元）``, ``<label>（分）``),
its rows, its totals line. Keyed (``keyed=True``: the files the reconciliation writes into the
reports directory, read by programs): every line led by its table (``report`` for the title and
parameters, then each section's key), headers of stable column keys (money ``<key>_yuan``,
``<key>_fen``), the totals as the table's last row; ``csv_tables`` reads it back.
"""
from __future__ import annotations

import csv
import io
from datetime import date
from typing import TextIO

from ledger.reports.cells import local_stamp, percent, resolved, yuan
from ledger.reports.definition import Column, ReportDoc, say

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
UNITS = {"zh": ("（元）", "（分）"), "en": (" (yuan)", " (fen)")}


def identifier_cell(value) -> str:
    return '="' + str(value).replace('"', '""') + '"'


def identifier_value(cell: str) -> str:
    """An identifier cell read back: ``="0102"`` -> ``0102``."""
    if cell.startswith('="') and cell.endswith('"'):
        return cell[2:-1].replace('""', '"')
    return cell


def text_cell(value) -> str:
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def header(column: Column, lang: str, keyed: bool = False) -> list[str]:
    if keyed:
        return [f"{column.key}_yuan", f"{column.key}_fen"] if column.kind == "money" else [column.key]
    label = say(column.label, lang)
    if column.kind == "money":
        return [label + UNITS[lang][0], label + UNITS[lang][1]]
    return [label]


def cells(column: Column, value, lang: str) -> list[str]:
    value = resolved(value, lang)
    if column.kind == "money":
        return ["", ""] if value is None else [yuan(value, grouped=False), str(value)]
    if value is None or value == "":
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


def write_csv(doc: ReportDoc, out: TextIO, lang: str = "zh", keyed: bool = False) -> None:
    """Write to a text stream opened with ``newline=""`` (the BOM is written here: open it as utf-8)."""
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    lead = (lambda table: [table]) if keyed else (lambda table: [])
    generated = ("generated" if lang == "en" else "生成时间", local_stamp(doc.generated_at))
    if keyed:
        writer.writerow(["table", "label", "value"])
        writer.writerow(["report", "title", text_cell(say(doc.title, lang))])
    else:
        writer.writerow([text_cell(say(doc.title, lang))])
    for label, value in [*doc.parameters, generated]:
        writer.writerow(lead("report") + [text_cell(say(label, lang)), text_cell(say(value, lang))])
    for section in doc.sections:
        if not section.columns:
            continue
        writer.writerow([])
        if not keyed:
            writer.writerow([text_cell(say(section.title, lang))])
        writer.writerow(lead("table") + [h for c in section.columns for h in header(c, lang, keyed)])
        rows = section.rows if not section.totals else _and(section.rows, section.totals)
        for row in rows:
            writer.writerow(lead(section.key) + [v for c in section.columns for v in cells(c, row.get(c.key), lang)])


def _and(rows, last: dict):
    yield from rows
    yield last


def csv_text(doc: ReportDoc, lang: str = "zh", keyed: bool = False) -> str:
    out = io.StringIO(newline="")
    write_csv(doc, out, lang, keyed)
    return out.getvalue()


def csv_tables(text: str) -> dict[str, list[dict]]:
    """A keyed CSV read back: table (``report``, or a section's key) -> rows (dicts by column key)."""
    out: dict[str, list[dict]] = {}
    keys = None
    for row in csv.reader(io.StringIO(text.lstrip("\ufeff"), newline="")):
        if not row:
            keys = None
        elif keys is None:
            keys = row[1:]
        else:
            out.setdefault(row[0], []).append(dict(zip(keys, row[1:])))
    return out
