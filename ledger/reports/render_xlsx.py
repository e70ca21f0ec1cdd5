"""A report definition as an XLSX workbook (XlsxWriter), one worksheet per section, typed cells:
identifiers and text as strings (never a formula, never a number: leading zeros stay), counts as
integers, money as a number of yuan with the format ``#,##0.00``, dates as dates, percentages as
numbers formatted ``0.00%``. ``constant_memory`` mode: each row goes to disk as it is written, so a
million-row list takes the memory of one row. Every column is written, printed or not (a
workbook is for working with the figures); sections without a table (paragraphs, a chart) are left out.
"""
from __future__ import annotations

import re
from datetime import date
from typing import BinaryIO

import xlsxwriter

from ledger.reports.cells import local_stamp, resolved
from ledger.reports.definition import Column, ReportDoc, say

WIDTHS = {"text": 24, "identifier": 16, "count": 10, "money": 16, "date": 12, "percent": 10}


def _sheet_name(title: str, taken: set[str]) -> str:
    name = re.sub(r"[\[\]:*?/\\]", " ", title)[:28] or "sheet"
    base, n = name, 2
    while name.lower() in taken:
        name, n = f"{base[:26]}{n}", n + 1
    taken.add(name.lower())
    return name


def write_xlsx(doc: ReportDoc, out: BinaryIO | str, lang: str = "zh") -> None:
    """Write the workbook to a path or a binary stream."""
    book = xlsxwriter.Workbook(out, {"constant_memory": True, "strings_to_numbers": False,
                                     "strings_to_formulas": False, "strings_to_urls": False})
    formats = {"title": book.add_format({"bold": True, "font_size": 14}),
               "header": book.add_format({"bold": True, "bg_color": "#E6EDF5", "border": 1, "text_wrap": True}),
               "money": book.add_format({"num_format": "#,##0.00"}),
               "count": book.add_format({"num_format": "#,##0"}),
               "date": book.add_format({"num_format": "yyyy-mm-dd"}),
               "percent": book.add_format({"num_format": "0.00%"}),
               "text": book.add_format({"num_format": "@"})}
    bold = {k: book.add_format({"bold": True, "top": 2, "num_format": f.num_format}) for k, f in formats.items()
            if k in ("money", "count", "date", "percent", "text")}
    unit = "（元）" if lang != "en" else " (yuan)"
    taken: set[str] = set()
    for section in (s for s in doc.sections if s.columns):
        sheet = book.add_worksheet(_sheet_name(say(section.title, lang), taken))
        for i, c in enumerate(section.columns):
            sheet.set_column(i, i, WIDTHS[c.kind])
        sheet.write_string(0, 0, say(doc.title, lang), formats["title"])
        r = 1
        for label, value in doc.parameters:
            sheet.write_string(r, 0, say(label, lang))
            sheet.write_string(r, 1, say(value, lang))
            r += 1
        sheet.write_string(r, 0, "generated" if lang == "en" else "生成时间")
        sheet.write_string(r, 1, local_stamp(doc.generated_at))
        r += 2
        sheet.write_string(r, 0, say(section.title, lang), formats["title"])
        r += 1
        for i, c in enumerate(section.columns):
            sheet.write_string(r, i, say(c.label, lang) + (unit if c.kind == "money" else ""), formats["header"])
        sheet.freeze_panes(r + 1, 0)
        r += 1
        for row in section.rows:
            _write_row(sheet, r, section.columns, row, formats, lang)
            r += 1
        if section.totals:
            _write_row(sheet, r, section.columns, section.totals, bold, lang)
    book.close()


def _write_row(sheet, r: int, columns: list[Column], row: dict, formats: dict, lang: str) -> None:
    for i, c in enumerate(columns):
        value = resolved(row.get(c.key), lang)
        if value is None or value == "":
            continue
        if c.kind == "money":
            sheet.write_number(r, i, value / 100, formats["money"])
        elif c.kind == "count":
            sheet.write_number(r, i, value, formats["count"])
        elif c.kind == "percent":
            sheet.write_number(r, i, value, formats["percent"])
        elif c.kind == "date" and isinstance(value, date):
            sheet.write_datetime(r, i, value, formats["date"])
        else:
            sheet.write_string(r, i, str(value), formats["text"])
