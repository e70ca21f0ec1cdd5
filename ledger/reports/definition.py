"""A report as data: what the HTML, CSV and XLSX renderers (``ledger.reports.render_*``) draw.

A report builder returns a ``ReportDoc``; no renderer knows any report. Labels come in Chinese (the
default) and English; every cell's meaning is its column's ``kind``:

- ``text``: free text (names); spreadsheet exports neutralise a leading ``= + - @``
- ``identifier``: codes and numbers that must stay text (customer numbers, bank codes: leading zeros)
- ``count``: an integer
- ``money``: integer fen; shown in yuan, with the fen kept in machine-readable exports
- ``date``: a ``datetime.date``
- ``percent``: a fraction (0.25 is 25 %), or None when undefined (nothing to divide by)

A section's ``rows`` are dicts keyed by column key; they may be an iterator that is read once (a
long list streams from the database to the file). ``totals`` is a row like the others, or None.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable

KINDS = ("text", "identifier", "count", "money", "date", "percent")
LANGUAGES = ("zh", "en")


@dataclass(frozen=True)
class Label:
    zh: str
    en: str

    def __call__(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh


@dataclass(frozen=True)
class Column:
    key: str
    label: Label
    kind: str = "text"

    def __post_init__(self):
        assert self.kind in KINDS, f"column {self.key}: unknown kind {self.kind!r}"


def col(key: str, zh: str, en: str, kind: str = "text") -> Column:
    return Column(key, Label(zh, en), kind)


@dataclass
class Section:
    key: str
    title: Label
    columns: list[Column]
    rows: Iterable[dict]
    totals: dict | None = None
    note: Label | None = None


@dataclass(frozen=True)
class Chart:
    """Horizontal bars of money: each bar a label and one fen value per series (grouped bars)."""
    title: Label
    series: list[Label]
    bars: list[tuple[str | Label, list[int]]]


@dataclass
class ReportDoc:
    name: str                              # the file-name stem and the command's name, e.g. "aging"
    title: Label
    parameters: list[tuple[Label, str]]    # shown under the title, e.g. (as of, 2026-11-30)
    sections: list[Section]
    generated_at: datetime                 # local time (the clock's zone)
    chart: Chart | None = None
    notes: list[Label] = field(default_factory=list)
