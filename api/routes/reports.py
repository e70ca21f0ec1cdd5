"""Finance reports (``report.read``): ``GET /v1/reports/{name}?format=json|csv|xlsx|html|text``.

The report definition's reports (ledger/reports, docs/reports.md): ``confirmed`` (实收: ``date`` or
``from`` and ``to``), ``daily`` (``date``), ``monthly`` and ``month-end`` (``month=YYYY-MM``),
``aging`` (``as_of``) and ``arrears`` (``as_of``, ``district``, ``min_days``), ``receivables``
(``period=YYYYMM``), ``debits`` (``date``), ``recon`` (or
``recon-day``: ``date``, each bank's reconciliation of the day, ``gridpay recon report``) and
``recon-run`` (``run_id``: one reconciliation run's report); ``lang=zh|en``. JSON
has amounts in integer fen; CSV has each amount in yuan and in fen, identifiers as text
(spreadsheet-safe); XLSX typed cells; HTML a self-contained page; text aligned tables. The file is written to a
spooled temporary file first (a long list goes to disk, not to memory) and then streamed.

A report is read from the replica where there is one (``database.replica_url``: ``ApiContext.reads``);
its request is audited (``report.read``) on the primary, which alone takes writes."""
from __future__ import annotations

import tempfile
from dataclasses import asdict
from datetime import date, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import ApiContext, context, require, source_of
from api.problems import Problem, problem_responses
from ledger.audit import audit_row, write_audit
from ledger.errors import Refused
from ledger.identity import Principal
from ledger.reports.catalogue import MEDIA_TYPES, REPORTS, ParameterError, ReportParams, build, file_name, json_chunks, write
from ledger.reports.context import report_context

router = APIRouter(tags=["reports"], responses=problem_responses(400, 401, 403, 422))
ALIASES = {"recon": "recon-day"}
NAMES = Literal["confirmed", "daily", "monthly", "month-end", "aging", "arrears", "receivables", "debits", "recon",
                "recon-day", "recon-run"]
SPOOL_BYTES = 8 * 1024 * 1024


def _month(text: str | None) -> date | None:
    try:
        return None if text is None else datetime.strptime(text, "%Y-%m").date()
    except ValueError:     # the pattern lets year 0000 through; no calendar has it
        raise Problem("invalid-request", f"month {text!r} is not a month (YYYY-MM)") from None


def chunks(spool, size: int = 64 * 1024):
    """A spooled file's bytes, piece by piece; the file closed at the end."""
    try:
        while chunk := spool.read(size):
            yield chunk
    finally:
        spool.close()


def built(ctx: ApiContext, name: str, params: ReportParams, actor: str, fmt: str, source: str):
    """The catalogue's report read from ``ctx.reads`` (ParameterError for parameters it cannot use, Refused
    for no such run), its request audited on the primary (``ctx.engine``) first: a report's rows are read
    as it is written, and on SQLite a write beside that read would wait for it."""
    given = {key: value for key, value in asdict(params).items() if value is not None}
    with ctx.engine.begin() as conn:
        write_audit(conn, [audit_row(ctx.now(), actor, "report.read", "report", name, format=fmt, source=source,
                                     **given)])
    return build(name, report_context(ctx.reads, ctx.clock, ctx.settings.banks), params)


def spooled(doc, fmt: str, lang: str):
    """The report written in ``fmt`` to a spooled temporary file (a long list goes to disk), rewound."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    write(doc, fmt, spool, lang)
    spool.seek(0)
    return spool


def _defined(ctx: ApiContext, name: str, fmt: str, lang: str, params: ReportParams, actor: str, source: str):
    try:
        doc = built(ctx, name, params, actor, fmt, source)
    except ParameterError as exc:
        raise Problem("invalid-request", str(exc)) from None
    except Refused as exc:
        raise Problem("not-found", str(exc)) from None
    if fmt == "json":
        return StreamingResponse(json_chunks(doc, lang), media_type=MEDIA_TYPES["json"])
    disposition = "inline" if fmt == "html" else "attachment"
    return StreamingResponse(chunks(spooled(doc, fmt, lang)), media_type=MEDIA_TYPES[fmt],
                             headers={"Content-Disposition": f'{disposition}; filename="{file_name(doc, fmt)}"'})


@router.get("/v1/reports/{name}", response_model=dict[str, Any],
            responses={200: {"content": {media: {"schema": {"type": "string"}}
                                         for fmt, media in MEDIA_TYPES.items() if fmt != "json"}}})
def get_report(request: Request, name: NAMES = Path(),
               format: Literal["json", "csv", "xlsx", "html", "text"] = Query("json", description="json, csv, xlsx, html or text"),
               business_date: date | None = Query(None, alias="date", description="daily, debits, confirmed, recon: the business date"),
               first: date | None = Query(None, alias="from", description="confirmed: first business date"),
               last: date | None = Query(None, alias="to", description="confirmed: last business date"),
               month: str | None = Query(None, pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$", description="monthly, month-end: YYYY-MM"),
               as_of: date | None = Query(None, description="aging, arrears: YYYY-MM-DD (default today's business date)"),
               district: str | None = Query(None, max_length=20, description="arrears: one district"),
               min_days: int = Query(1, ge=1, le=100_000, description="arrears: at least days past due"),
               period: str | None = Query(None, pattern=r"^[0-9]{6}$", description="receivables: YYYYMM"),
               run_id: int | None = Query(None, ge=1, description="recon-run: the reconciliation run"),
               lang: Literal["zh", "en"] = Query("zh", description="labels in Chinese or English"),
               principal: Principal = Depends(require("report.read")), ctx: ApiContext = Depends(context)):
    """A finance report in JSON (amounts in fen), CSV, XLSX or HTML."""
    name = ALIASES.get(name, name)
    assert name in REPORTS
    params = ReportParams(date=business_date, first=first, last=last, month=_month(month), as_of=as_of,
                          district=district, min_days=min_days, run_id=run_id, period=period)
    return _defined(ctx, name, format, lang, params, principal.actor, source_of(request))
