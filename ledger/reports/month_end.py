"""The month-end summary finance compares, read from the journal (ledger/journal.py's accounts).

What customers owe net is ``receivable`` (bills not yet paid) less ``prepaid`` (money held for
them): in journal terms the sum of both accounts' lines (``prepaid``, a liability, is negative).
Every entry that moves it is one of these, by the entry's kind (ledger/posting):

    net at end = net at start
               + billed (kind ``bill`` of an original bill, by the bill's category E, V, F)
               + corrections (``bill_reversal``; ``bill`` of a replacement bill; ``correction``)
               - collected (``payment``: the whole payment, on bills and into prepaid)
               + reversed (``reversal``)
               + refunded (``refund``: prepaid moved to refunds payable)
               + other (any other kind; ``prepaid_applied`` moves money between the two accounts
                 and nets to 0)

Months are business dates (``journal_entries.business_date``). The figures are sums over journal
lines in SQL: one query for the balances at the start, one for the month's movements by kind.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import func, select

from ledger.journal import PREPAID, RECEIVABLE
from ledger.reports.collections import month_bounds
from ledger.reports.context import CATEGORIES, ReportContext
from ledger.reports.definition import Chart, Label, ReportDoc, Section, col
from ledger.schema import bills, journal_entries, journal_lines

E, L, B = journal_entries.c, journal_lines.c, bills.c
LINES = journal_lines.join(journal_entries, E.entry_id == L.entry_id)
CUSTOMER_ACCOUNTS = (RECEIVABLE, PREPAID)


def balances_before(conn, first: date) -> dict[str, int]:
    """receivable and prepaid (journal signs) over every entry dated before ``first``."""
    rows = conn.execute(select(L.account, func.sum(L.amount)).select_from(LINES)
                        .where(L.account.in_(CUSTOMER_ACCOUNTS), E.business_date < first).group_by(L.account))
    out = dict.fromkeys(CUSTOMER_ACCOUNTS, 0)
    out.update({account: int(total) for account, total in rows})
    return out


def refunded(conn, first: date, last: date) -> int:
    """Refunds of the month: prepaid moved out to refunds payable (entry kind ``refund``). One
    function, so that when refunds move differently (paid out through another account) only this
    changes."""
    return int(conn.execute(select(func.coalesce(func.sum(L.amount), 0)).select_from(LINES).where(
        E.kind == "refund", L.account == PREPAID, E.business_date.between(first, last))).scalar_one())


def movements(conn, first: date, last: date) -> dict:
    """The month's movements of receivable + prepaid, classified as the module doc says."""
    query = (select(E.kind, B.category, B.kind, func.sum(L.amount))
             .select_from(LINES.outerjoin(bills, (E.ref_type == "bill") & E.kind.in_(("bill", "bill_reversal"))
                                          & (B.bill_id == E.ref_id)))
             .where(L.account.in_(CUSTOMER_ACCOUNTS), E.business_date.between(first, last), E.kind != "refund")
             .group_by(E.kind, B.category, B.kind))
    out = {"billed": dict.fromkeys(CATEGORIES, 0), "corrections": 0, "collected": 0, "reversed": 0, "other": 0}
    for kind, category, bill_kind, total in conn.execute(query):
        total = int(total)
        if kind == "bill" and bill_kind == "O":
            out["billed"][category] += total
        elif kind in ("bill", "bill_reversal", "correction"):
            out["corrections"] += total
        elif kind == "payment":
            out["collected"] -= total
        elif kind == "reversal":
            out["reversed"] += total
        else:
            out["other"] += total
    out["refunded"] = refunded(conn, first, last)
    return out


def month_end_figures(engine, month: date) -> dict:
    """start and end (receivable, prepaid held, net) and the month's movements, in fen."""
    first, last = month_bounds(month)
    following = date.fromordinal(last.toordinal() + 1)
    with engine.connect() as conn:
        start, end, moved = balances_before(conn, first), balances_before(conn, following), movements(conn, first, last)
    net = lambda b: b[RECEIVABLE] + b[PREPAID]   # noqa: E731 - one line, read twice
    return {"first": first, "last": last, "start_receivable": start[RECEIVABLE], "start_prepaid": -start[PREPAID],
            "start_net": net(start), "end_receivable": end[RECEIVABLE], "end_prepaid": -end[PREPAID],
            "end_net": net(end), **moved}


def month_end_summary(ctx: ReportContext, month: date) -> ReportDoc:
    f = month_end_figures(ctx.engine, month)
    moves = [(f"billed_{c}", Label(f"本月应收：{label.zh}", f"billed: {label.en}"), f["billed"][c])
             for c, label in CATEGORIES.items()]
    moves += [("corrections", Label("账单更正（红冲与重开）", "bill corrections (reversing and replacement bills)"),
               f["corrections"]),
              ("collected", Label("减：本月收款", "less: collected"), -f["collected"]),
              ("reversed", Label("加：收款冲正", "add: payments reversed"), f["reversed"]),
              ("refunded", Label("加：预收退款", "add: prepaid refunded"), f["refunded"]),
              ("other", Label("其他变动", "other movements"), f["other"])]
    rows = [_line("start_receivable", Label("期初应收账款（未缴账单）", "receivables at start (bills unpaid)"),
                  f["start_receivable"]),
            _line("start_prepaid", Label("期初预收余额", "prepaid held at start"), f["start_prepaid"]),
            _line("start_net", Label("期初净应收（应收减预收）", "net owed at start (receivables less prepaid)"),
                  f["start_net"]),
            *[_line(*m) for m in moves],
            _line("end_net", Label("期末净应收", "net owed at end"), f["end_net"]),
            _line("end_receivable", Label("期末应收账款（未缴账单）", "receivables at end (bills unpaid)"),
                  f["end_receivable"]),
            _line("end_prepaid", Label("期末预收余额", "prepaid held at end"), f["end_prepaid"])]
    difference = f["end_net"] - f["start_net"] - sum(m[2] for m in moves)
    check = _line("check", Label("核对差额（应为 0）", "difference (must be 0)"), difference)
    columns = [col("line", "项目", "line"), col("amount", "金额", "amount", "money")]
    chart = Chart(Label("本月变动", "The month's movements"), [Label("金额", "amount")],
                  [(m[1], [m[2]]) for m in moves if m[2]])
    identity = Label("期末净应收 = 期初净应收 + 本月应收 + 账单更正 − 本月收款 + 收款冲正 + 预收退款 + 其他变动",
                     "net at end = net at start + billed + corrections − collected + reversed + refunded + other")
    return ReportDoc("month-end", Label("月末应收汇总表", "Month-end receivables summary"),
                     [(Label("月份", "month"), f"{f['first']:%Y-%m}")],
                     [Section("summary", Label("应收变动", "Receivables movement"), columns, rows, check)],
                     ctx.clock.local(), chart, [identity])


def _line(key: str, label: Label, amount: int) -> dict:
    return {"key": key, "line": label, "amount": amount}


def by_key(doc: ReportDoc) -> dict[str, int]:
    """A month-end summary's figures by line key (tests, the API's JSON)."""
    section = doc.sections[0]
    out = defaultdict(int, {row["key"]: row["amount"] for row in section.rows})
    out["check"] = section.totals["amount"]
    return dict(out)
