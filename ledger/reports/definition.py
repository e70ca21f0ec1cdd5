"""A report as data: what every renderer (``ledger.reports.render_*``) draws, for every report.

A report builder returns a ``ReportDoc``; no renderer knows any report. Words are ``Label``s, Chinese
(the default) and English, resolved when the report is rendered, so one document renders in either
language (a plain ``str`` is a word the same in both: a file name, a customer's name). Every cell's
meaning is its column's ``kind``:

- ``text``: free text (names); spreadsheet exports neutralise a leading ``= + - @``
- ``identifier``: codes and numbers that must stay text (customer numbers, bank codes: leading zeros)
- ``count``: an integer
- ``money``: integer fen; shown in yuan, with the fen kept in machine-readable exports
- ``date``: a ``datetime.date``
- ``percent``: a fraction (0.25 is 25 %), or None when undefined (nothing to divide by)

A column not ``printed`` is for machines: CSV, XLSX and JSON have it, the HTML page and the text
leave it out (an A4 page has room for so many).

A section is a heading with any of: paragraphs (``status`` ``ok``/``bad`` says how they read: a
bridge that adds up or not), a table (``columns``, ``rows``, ``totals``; ``row_classes`` mark rows
for the page, e.g. ``open``/``resolved`` items, a bridge's ``start``/``end``) and a chart of money.
``rows`` are dicts keyed by column key; they may be an iterator that is read once (a long list
streams from the database to the file). ``totals`` is a row like the others, or None.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Sequence, Union

KINDS = ("text", "identifier", "count", "money", "date", "percent")
LANGUAGES = ("zh", "en")


@dataclass(frozen=True)
class Label:
    zh: str
    en: str

    def __call__(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh


Words = Union[Label, str]


def say(words: Words | None, lang: str) -> str:
    """Words in the report's language: a ``Label`` resolved, a plain string as it is."""
    if words is None:
        return ""
    return words(lang) if isinstance(words, Label) else words


@dataclass(frozen=True)
class Column:
    key: str
    label: Words
    kind: str = "text"
    printed: bool = True

    def __post_init__(self):
        assert self.kind in KINDS, f"column {self.key}: unknown kind {self.kind!r}"


def col(key: str, zh: str, en: str, kind: str = "text") -> Column:
    return Column(key, Label(zh, en), kind)


def machine(key: str, kind: str = "text") -> Column:
    """A column for machines only (CSV, XLSX, JSON): its key is its label."""
    return Column(key, key, kind, printed=False)


@dataclass(frozen=True)
class Chart:
    """Horizontal bars of money: each bar a label and one fen value per series (grouped bars).
    ``key`` is the chart's id on the page."""
    title: Words
    series: list[Words]
    bars: list[tuple[Words, list[int]]]
    key: str = "chart"


@dataclass
class Section:
    key: str
    title: Words
    columns: list[Column] = field(default_factory=list)
    rows: Iterable[dict] = ()
    totals: dict | None = None
    note: Words | None = None
    chart: Chart | None = None
    paragraphs: list[Words] = field(default_factory=list)
    status: str = ""                         # "ok" | "bad" | "": how the paragraphs read
    row_classes: list[str] | None = None     # one per row, for the page


@dataclass
class ReportDoc:
    name: str                              # the file-name stem and the command's name, e.g. "aging"
    title: Words
    parameters: list[tuple[Words, Words]]  # shown under the title, e.g. (as of, 2026-11-30)
    sections: list[Section]
    generated_at: datetime                 # local time (the clock's zone)
    chart: Chart | None = None
    notes: list[Words] = field(default_factory=list)
    sign_off: Sequence[Words] = ()                     # the lines a clerk signs on paper

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)
