"""How a cell of each column kind reads as text: yuan with thousands separators, percentages, dates."""
from __future__ import annotations

from datetime import date

from ledger.reports.definition import Column, Label


def yuan(fen: int, grouped: bool = True) -> str:
    """Integer fen as yuan, exactly (``divmod``, no float): 123456 -> '1,234.56' ('1234.56' ungrouped)."""
    assert isinstance(fen, int) and not isinstance(fen, bool), f"money is integer fen, not {fen!r}"
    whole, cents = divmod(abs(fen), 100)
    digits = f"{whole:,}" if grouped else str(whole)
    return f"{'-' if fen < 0 else ''}{digits}.{cents:02d}"


def percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{fraction * 100:.2f}%"


def resolved(value, lang: str):
    """A cell's value: a ``Label`` (a code's meaning, e.g. a channel) in the report's language."""
    return value(lang) if isinstance(value, Label) else value


def display(column: Column, value, lang: str = "zh") -> str:
    """A cell as a person reads it (HTML)."""
    value = resolved(value, lang)
    if value is None:
        return ""
    if column.kind == "money":
        return yuan(value)
    if column.kind == "count":
        return f"{value:,}"
    if column.kind == "percent":
        return percent(value)
    if column.kind == "date" and isinstance(value, date):
        return value.isoformat()
    return str(value)


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
