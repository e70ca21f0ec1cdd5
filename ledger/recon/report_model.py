"""A report as data: what the reconciliation reports hold, before any format is chosen.

A builder (``run_reports``) reads the database and fills a ``ReportDoc``; a renderer
(``report_render``) turns it into self-contained HTML, CSV or a text table. Nothing here knows of
HTML or CSV, and the renderers read nothing from the database, so the reports can move onto a
general report definition (HTML / CSV / XLSX from one definition) by mapping these types.

- ``Column``: a key (stable, English: the CSV header), a label in the report's language and a
  kind, which decides how each format shows a value:
  ``text`` (free text: names, details), ``identifier`` (codes and numbers that must stay text:
  bank codes, customer numbers, RRNs), ``money`` (integer fen: yuan with thousands separators in
  HTML and text, the integer under ``{key}_fen`` in CSV), ``count``, ``date``, ``datetime`` (a
  local time, already converted through the clock). A column not ``printed`` is for machines:
  the CSV has it, the HTML and the text leave it out (an A4 page has room for so many).
- ``Table``: columns, rows (dicts by key), an optional totals row, optional row classes (the
  HTML colours open and resolved items).
- ``Chart``: money by kind: groups of bars, each bar a series and an amount in fen.
- ``Section``: a heading and a table, a chart or paragraphs.
- ``ReportDoc``: title, language, facts about the run (label, value pairs), sections and the
  sign-off lines a clerk signs on paper.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["text", "identifier", "money", "count", "date", "datetime"]


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: Kind = "text"
    printed: bool = True      # False: in the machine-readable CSV only (HTML and text leave it out)

    @property
    def csv_key(self) -> str:
        return f"{self.key}_fen" if self.kind == "money" else self.key


@dataclass
class Table:
    id: str
    columns: list[Column]
    rows: list[dict] = field(default_factory=list)
    totals: dict | None = None
    row_classes: list[str] | None = None


@dataclass(frozen=True)
class Bar:
    series: str          # a key of the chart's legend
    fen: int


@dataclass
class Chart:
    id: str
    title: str
    legend: dict[str, str]                       # series key -> label
    groups: list[tuple[str, list[Bar]]] = field(default_factory=list)


@dataclass
class Section:
    id: str
    heading: str
    table: Table | None = None
    chart: Chart | None = None
    paragraphs: list[str] = field(default_factory=list)
    status: str = ""                             # "ok" | "bad" | "": how the paragraphs read


@dataclass
class ReportDoc:
    title: str
    lang: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    sign_off: list[str] = field(default_factory=list)

    def section(self, section_id: str) -> Section:
        return next(s for s in self.sections if s.id == section_id)

    def tables(self) -> list[Table]:
        return [s.table for s in self.sections if s.table is not None]
