"""Finance reports (``report.read``): ``GET /v1/reports/{name}?format=json|csv`` for the reports of
``gridpay report``: ``daily`` (``date=YYYY-MM-DD``: collections by bank, channel and method,
reversals, net), ``receivables`` (``period=YYYYMM``: billed, collected, outstanding by customer
type) and ``recon`` (``date=YYYY-MM-DD``: each bank's reconciliation of the day, ``gridpay recon report``). Amounts are integer fen in both formats; CSV keeps identifiers as text (spreadsheet-safe)."""
from __future__ import annotations

from datetime import date
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from api.deps import ApiContext, context, require
from api.problems import Problem, problem_responses
from ledger.finance_reports import Report, daily_report, receivables_report, render_csv_fen
from ledger.identity import Principal
from ledger.recon.day_reports import day_report

router = APIRouter(tags=["reports"], responses=problem_responses(400, 401, 403, 422))
CSV = "text/csv; charset=utf-8"


def _report(ctx: ApiContext, name: str, business_date: date | None, period: str | None) -> Report:
    if name in ("daily", "recon"):
        if business_date is None:
            raise Problem("invalid-request", f"the {name} report needs date=YYYY-MM-DD")
        return (daily_report if name == "daily" else day_report)(ctx.engine, business_date).report()
    if period is None:
        raise Problem("invalid-request", "the receivables report needs period=YYYYMM")
    try:
        return receivables_report(ctx.engine, period).report()
    except ValueError as exc:
        raise Problem("invalid-request", str(exc)) from None


@router.get("/v1/reports/{name}", response_model=dict[str, Any],
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}})
def get_report(name: Literal["daily", "receivables", "recon"] = Path(),
               format: Literal["json", "csv"] = Query("json", description="json, or csv for a spreadsheet"),
               business_date: date | None = Query(None, alias="date", description="daily: the business date"),
               period: str | None = Query(None, pattern=r"^[0-9]{6}$", description="receivables: YYYYMM"),
               principal: Principal = Depends(require("report.read")), ctx: ApiContext = Depends(context)):
    """A finance report: its title, columns, which columns are amounts (fen), rows and total."""
    report = _report(ctx, name, business_date, period)
    if format == "csv":
        suffix = business_date.isoformat() if business_date else period
        return Response(render_csv_fen(report), media_type=CSV,
                        headers={"Content-Disposition": f'attachment; filename="{name}-{suffix}.csv"'})
    return {"title": report.title.replace("(amounts in yuan)", "(amounts in fen)"), "columns": report.columns,
            "amount_columns": sorted(report.money), "rows": report.rows, "total": report.total}
