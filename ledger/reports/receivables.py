"""The receivables of a billing period by customer type (``ledger.finance_reports.receivables_report``'s
figures) as a definition: bills in force, billed principal, penalty and total (a correction's
reversing bill counts negative), collected (net of reversals and corrections' moves) and
outstanding, as they stand now."""
from __future__ import annotations

from collections.abc import Iterable

from ledger.finance_reports import ReceivablesRow, receivables_report
from ledger.reports.context import CUSTOMER_TYPES, SIGN_OFF, TOTAL, ReportContext, label_of
from ledger.reports.definition import Chart, Label, ReportDoc, Section, col

COLUMNS = [col("customer_type", "用户类别", "customer type"), col("bills", "账单数", "bills", "count"),
           col("principal", "电费本金", "principal", "money"), col("penalty", "违约金", "penalty", "money"),
           col("billed", "应收金额", "billed", "money"), col("collected", "已收金额", "collected", "money"),
           col("outstanding", "欠费金额", "outstanding", "money")]


def _row(r: ReceivablesRow, customer_type) -> dict:
    return {"customer_type": customer_type, "bills": r.bills, "principal": r.principal, "penalty": r.penalty,
            "billed": r.billed, "collected": r.collected, "outstanding": r.outstanding}


def _chart(rows: Iterable[dict]) -> Chart:
    return Chart(Label("各用户类别应收与已收金额", "Billed and collected, by customer type"),
                 [Label("应收", "billed"), Label("已收", "collected")],
                 [(r["customer_type"], [r["billed"], r["collected"]]) for r in rows])


def receivables_doc(ctx: ReportContext, period: str) -> ReportDoc:
    """``period`` is YYYYMM (ValueError if not)."""
    figures = receivables_report(ctx.engine, period)
    rows = [_row(r, label_of(CUSTOMER_TYPES, r.customer_type)) for r in figures.rows]
    return ReportDoc(
        "receivables", Label("应收账款报表（按账期）", "Receivables of a billing period"),
        [(Label("账期", "billing period"), period)],
        [Section("by_customer_type", Label("按用户类别", "By customer type"), COLUMNS, rows,
                 _row(figures.total, TOTAL))],
        ctx.clock.local(), _chart(rows),
        [Label("账单含更正（红冲账单计负数）；已收为分配到这些账单的金额，扣除冲正和更正转出。",
               "Bills include corrections (a reversing bill counts negative); collected is what was allocated "
               "to these bills, net of reversals and of what corrections moved.")], SIGN_OFF)
