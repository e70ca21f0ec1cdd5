"""How a cell of each column kind reads as text: yuan with thousands separators, percentages, dates;
and how a report prints a local time."""
from __future__ import annotations

from datetime import date, datetime

from config.money import yuan  # noqa: F401  (the reports' money cells: config/money.py)
from ledger.reports.definition import Column, Label


# a local time as the console shows it; a report adds the zone's offset (``local_stamp``)
LOCAL_TIME = "%Y-%m-%d %H:%M:%S"


def local_stamp(local: datetime) -> str:
    """A local time as every report prints it: ``2026-11-24 09:30:00 UTC+08:00``, the zone written the
    way Windows' clock settings show it to a clerk in China ("(UTC+08:00) 北京"), not ISO's ``+0800``."""
    offset = local.strftime("%z")
    zone = f" UTC{offset[:3]}:{offset[3:5]}" if offset else ""
    return f"{local:{LOCAL_TIME}}{zone}"


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
