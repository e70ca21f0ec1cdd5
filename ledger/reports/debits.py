"""The direct debits created on a business date by bank, channel (a plan's batch, or the channel of a
single debit) and state (``ledger.finance_reports.debits_report``'s figures) as a definition."""
from __future__ import annotations

from datetime import date

from ledger.finance_reports import debits_report
from ledger.reports.context import TOTAL, ReportContext, label_of
from ledger.reports.definition import Label, ReportDoc, Section, col

DEBIT_CHANNELS = {"batch": Label("批量代扣", "batch"), "call_centre": Label("呼叫中心", "call centre"),
                  "voice": Label("语音系统", "voice system"), "online_banking": Label("网上银行", "online banking"),
                  "district_office": Label("供电所", "district office"), "counter": Label("柜台", "counter")}
DEBIT_STATES = {"pending": Label("待发送", "pending"), "sent": Label("已发送", "sent"),
                "approved": Label("成功", "approved"), "declined": Label("拒绝", "declined"),
                "unknown": Label("结果未知", "unknown"), "reversed": Label("已冲正", "reversed")}
COLUMNS = [col("bank_code", "银行代码", "bank code", "identifier"), col("bank_name", "银行", "bank"),
           col("channel", "渠道", "channel"), col("state", "状态", "state"), col("debits", "笔数", "debits", "count"),
           col("amount", "金额", "amount", "money")]


def debits_doc(ctx: ReportContext, business_date: date) -> ReportDoc:
    figures = debits_report(ctx.engine, business_date, ctx.clock)
    rows = [{"bank_code": bank, "bank_name": ctx.bank_name(bank), "channel": label_of(DEBIT_CHANNELS, channel),
             "state": label_of(DEBIT_STATES, state), "debits": count, "amount": total}
            for (bank, channel, state), (count, total) in sorted(figures.rows.items())]
    totals = {"bank_name": TOTAL, "debits": sum(r["debits"] for r in rows), "amount": sum(r["amount"] for r in rows)}
    return ReportDoc(
        "debits", Label("代扣报表（按渠道）", "Direct debits by channel"),
        [(Label("营业日", "business date"), business_date.isoformat())],
        [Section("by_channel", Label("按银行、渠道、状态", "By bank, channel and state"), COLUMNS, rows, totals)],
        ctx.clock.local(),
        notes=[Label("按代扣创建时间所属的营业日统计。", "Debits counted on the business date they were created.")])
