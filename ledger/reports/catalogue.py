"""The reports by name, their parameters, and writing one in a format: what ``gridpay report <name>``
and ``GET /v1/reports/{name}`` share.

| name | parameters | report |
| --- | --- | --- |
| ``confirmed`` | ``date``, or ``first`` and ``last`` | 实收: confirmed by the second reconciliation, beside not yet confirmed |
| ``daily`` | ``date`` | collections of a business date by bank, channel and method |
| ``monthly`` | ``month`` | a month's collections by business date and by bank, channel and method |
| ``month-end`` | ``month`` | the month-end receivables summary (its identity: ledger/reports/month_end.py) |
| ``aging`` | ``as_of`` | open bills by age, by district and customer type |
| ``arrears`` | ``as_of``, ``district``, ``min_days`` | customers with overdue bills, for follow-up |
| ``receivables`` | ``period`` | a billing period's billed, collected and outstanding by customer type |
| ``debits`` | ``date`` | the direct debits created on a business date by bank, channel and state |
| ``recon-day`` | ``date`` | each bank's reconciliation of a business date (ledger/recon/day_reports.py) |
| ``recon-run`` | ``run_id`` | one reconciliation run: its bridge, differences, exceptions (ledger/recon/run_reports.py) |

Formats: ``html``, ``csv`` (the sheet layout), ``xlsx``, ``text`` (aligned, for a terminal) and JSON
(``json_chunks``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import BinaryIO, Callable, Iterator

from ledger.recon.day_reports import day_doc
from ledger.recon.run_reports import run_doc
from ledger.reports.aging import aging_report, arrears_list
from ledger.reports.cells import resolved
from ledger.reports.collections import confirmed_report, daily_collections, monthly_collections
from ledger.reports.context import ReportContext
from ledger.reports.debits import debits_doc
from ledger.reports.definition import ReportDoc, say
from ledger.reports.month_end import month_end_summary
from ledger.reports.receivables import receivables_doc
from ledger.reports.render_csv import write_csv
from ledger.reports.render_html import write_html
from ledger.reports.render_text import write_text
from ledger.reports.render_xlsx import write_xlsx

FORMATS = ("html", "csv", "xlsx", "text")
TEXT_WRITERS = {"html": write_html, "csv": write_csv, "text": write_text}
MEDIA_TYPES = {"html": "text/html; charset=utf-8", "csv": "text/csv; charset=utf-8",
               "text": "text/plain; charset=utf-8",
               "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
               "json": "application/json"}


class ParameterError(ValueError):
    """A report asked for without a parameter it needs, or with one it cannot use."""


@dataclass
class ReportParams:
    date: date | None = None          # daily, confirmed (one business date)
    first: date | None = None         # confirmed: a range of business dates
    last: date | None = None
    month: date | None = None         # monthly, month-end: any day of the month
    as_of: date | None = None         # aging, arrears (default: today's business date)
    district: str | None = None       # arrears
    min_days: int = 1                 # arrears
    run_id: int | None = None         # recon-run
    period: str | None = None         # receivables: the billing period YYYYMM

    def need(self, name: str, what: str):
        value = getattr(self, what)
        if value is None:
            raise ParameterError(f"the {name} report needs {what}")
        return value


def _confirmed(ctx: ReportContext, p: ReportParams) -> ReportDoc:
    first, last = (p.date, p.date) if p.date else (p.first, p.last)
    if first is None or last is None:
        raise ParameterError("the confirmed report needs date, or first and last")
    if last < first:
        raise ParameterError("last is before first")
    return confirmed_report(ctx, first, last)


def _as_of(ctx: ReportContext, p: ReportParams) -> date:
    return p.as_of or ctx.clock.business_date()


def _arrears(ctx: ReportContext, p: ReportParams) -> ReportDoc:
    if p.min_days < 1:
        raise ParameterError("min_days is at least 1")
    return arrears_list(ctx, _as_of(ctx, p), p.district, p.min_days)


def _receivables(ctx: ReportContext, p: ReportParams) -> ReportDoc:
    try:
        return receivables_doc(ctx, p.need("receivables", "period"))
    except ValueError as exc:             # a period that is not YYYYMM
        raise ParameterError(str(exc)) from None


REPORTS: dict[str, Callable[[ReportContext, ReportParams], ReportDoc]] = {
    "confirmed": _confirmed,
    "daily": lambda ctx, p: daily_collections(ctx, p.need("daily", "date")),
    "monthly": lambda ctx, p: monthly_collections(ctx, p.need("monthly", "month")),
    "month-end": lambda ctx, p: month_end_summary(ctx, p.need("month-end", "month")),
    "aging": lambda ctx, p: aging_report(ctx, _as_of(ctx, p)),
    "arrears": _arrears,
    "receivables": _receivables,
    "debits": lambda ctx, p: debits_doc(ctx, p.need("debits", "date")),
    "recon-day": lambda ctx, p: day_doc(ctx, p.need("recon-day", "date")),
    "recon-run": lambda ctx, p: run_doc(ctx, p.need("recon-run", "run_id")),
}


def build(name: str, ctx: ReportContext, params: ReportParams) -> ReportDoc:
    if name not in REPORTS:
        raise ParameterError(f"no report {name!r} (reports: {', '.join(REPORTS)})")
    return REPORTS[name](ctx, params)


def write(doc: ReportDoc, fmt: str, out: BinaryIO, lang: str = "zh") -> None:
    """Write the report to a binary stream in ``fmt`` (html, csv, xlsx, text; the text formats as UTF-8)."""
    if fmt == "xlsx":
        write_xlsx(doc, out, lang)
        return
    import io

    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        TEXT_WRITERS[fmt](doc, text, lang)
        text.flush()
    finally:
        text.detach()


def file_name(doc: ReportDoc, fmt: str) -> str:
    stem = "-".join([doc.name] + [say(v, "en").replace(" – ", "_") for _, v in doc.parameters[:1]])
    return f"{stem}.{'txt' if fmt == 'text' else fmt}"


def json_chunks(doc: ReportDoc, lang: str = "zh") -> Iterator[str]:
    """The report as JSON, streamed section by section and row by row: amounts in integer fen,
    dates ISO, codes' meanings in ``lang``; ``columns`` give each key's label and kind."""
    def plain(row: dict | None):
        if row is None:
            return None
        return {k: (v.isoformat() if isinstance(v, date) else resolved(v, lang)) for k, v in row.items()}

    head = {"name": doc.name, "title": say(doc.title, lang),
            "parameters": [{"label": say(label, lang), "value": say(value, lang)} for label, value in doc.parameters],
            "generated_at": doc.generated_at.isoformat(), "notes": [say(n, lang) for n in doc.notes],
            "sign_off": [say(s, lang) for s in doc.sign_off]}
    yield json.dumps(head, ensure_ascii=False)[:-1] + ', "sections": ['
    for i, section in enumerate(doc.sections):
        columns = [{"key": c.key, "label": say(c.label, lang), "kind": c.kind} for c in section.columns]
        head = {"key": section.key, "title": say(section.title, lang), "columns": columns,
                "paragraphs": [say(p, lang) for p in section.paragraphs]}
        yield ("," if i else "") + json.dumps(head, ensure_ascii=False)[:-1] + ', "rows": ['
        for j, row in enumerate(section.rows):
            yield ("," if j else "") + json.dumps(plain(row), ensure_ascii=False)
        yield '], "totals": ' + json.dumps(plain(section.totals), ensure_ascii=False) + "}"
    yield "]}"
