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

Months are business dates (``journal_entries.business_date``; each line has its entry's). The figures
are sums over journal lines in SQL: the whole journal's balance of both accounts (no join), less what
is dated from the month on and from the next month on (found by the index on the entries' business
date; on PostgreSQL the lines' own dates keep the read to those months' partitions: ``lines_dated``),
gives the balances at the start and at the end; one query sums the month's movements by kind.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date

from sqlalchemy import func, literal_column, select

from ledger.archive.openings import openings
from ledger.journal import PREPAID, RECEIVABLE
from ledger.reports.collections import month_bounds
from ledger.reports.context import CATEGORIES, SIGN_OFF, ReportContext
from ledger.reports.definition import Chart, Label, ReportDoc, Section, col
from ledger.schema import bills, journal_entries, journal_lines

E, L, B = journal_entries.c, journal_lines.c, bills.c
LINES = journal_lines.join(journal_entries, E.entry_id == L.entry_id)
# a line and its entry share a date (``ledger verify``)
DATED_LINES = journal_lines.join(journal_entries, (E.entry_id == L.entry_id) & (E.business_date == L.business_date))
CUSTOMER_ACCOUNTS = (RECEIVABLE, PREPAID)


def lines_dated(conn, dated) -> tuple:
    """The lines joined to their entries, and the conditions ``dated(date column)`` keeping those of
    the dates asked for. PostgreSQL: on the lines' own date too (it carries an equality across a
    join, not a range), so that it reads those months' partitions of both tables only. SQLite: the
    entries' date alone, so that the read starts from the entries' date index and reaches each
    entry's lines through the covering index on (entry_id, account, amount), which holds no date
    (the lines' date in the query turned that into a scan of every line)."""
    if conn.dialect.name != "postgresql":
        return LINES, [dated(E.business_date)]
    return DATED_LINES, [dated(E.business_date), dated(L.business_date)]


def dated_account(conn):
    """The line's account where the entries' dates narrow the read. On SQLite an expression, not
    the bare column: its planner (without statistics) would otherwise start from the account index,
    which reaches every line of the journal, instead of from the entries of the dates asked for.
    PostgreSQL's planner estimates the bare column right (an expression it would misjudge)."""
    return func.coalesce(L.account, literal_column("''")) if conn.dialect.name == "sqlite" else L.account


def account_totals(conn) -> dict[str, int]:
    """receivable and prepaid over the whole journal (journal signs): no join, one pass; with what
    archived months carried forward (``ledger.archive``)."""
    rows = conn.execute(select(L.account, func.sum(L.amount)).where(L.account.in_(CUSTOMER_ACCOUNTS))
                        .group_by(L.account))
    carried = openings(conn, "account")
    totals = {account: carried.get(account, 0) for account in CUSTOMER_ACCOUNTS}
    for account, total in rows:
        totals[account] += int(total)
    return totals


def dated_from(conn, first: date) -> dict[str, int]:
    """receivable and prepaid over the entries dated ``first`` or later (the index on the entries'
    business date finds them; at a month's end, after the month there is little or nothing)."""
    account = dated_account(conn)
    lines, dates = lines_dated(conn, lambda day: day >= first)
    rows = conn.execute(select(account, func.sum(L.amount)).select_from(lines)
                        .where(account.in_(CUSTOMER_ACCOUNTS), *dates).group_by(account))
    return {account: int(total) for account, total in rows}


def month_lines(conn, first: date, last: date) -> list[tuple[str, str | None, str | None, str, int]]:
    """The month's lines on receivable and prepaid: (entry kind, bill category, bill kind, account,
    sum); the bill's for an entry of a bill (``bill``, ``bill_reversal``) only."""
    lines, dates = lines_dated(conn, lambda day: day.between(first, last))
    query = (select(E.kind, B.category, B.kind, L.account, func.sum(L.amount))
             .select_from(lines.outerjoin(bills, (E.ref_type == "bill") & E.kind.in_(("bill", "bill_reversal"))
                                          & (B.bill_id == E.ref_id)))
             .where(dated_account(conn).in_(CUSTOMER_ACCOUNTS), *dates)
             .group_by(E.kind, B.category, B.kind, L.account))
    return [(kind, category, bill_kind, account, int(total)) for kind, category, bill_kind, account, total
            in conn.execute(query)]


def refunded(lines) -> int:
    """Refunds of the month: prepaid moved out to refunds payable (entry kind ``refund``). One
    function, so that when refunds move differently (paid out through another account) only this
    changes."""
    return sum(total for kind, _, _, account, total in lines if kind == "refund" and account == PREPAID)


def movements(lines) -> dict:
    """The month's movements of receivable + prepaid, classified as the module doc says."""
    out = {"billed": dict.fromkeys(CATEGORIES, 0), "corrections": 0, "collected": 0, "reversed": 0, "other": 0,
           "refunded": refunded(lines)}
    for kind, category, bill_kind, _, total in lines:
        if kind == "refund":
            out["other"] += total
        elif kind == "bill" and bill_kind == "O":
            out["billed"][category] += total
        elif kind in ("bill", "bill_reversal", "correction"):
            out["corrections"] += total
        elif kind == "payment":
            out["collected"] -= total
        elif kind == "reversal":
            out["reversed"] += total
        else:
            out["other"] += total
    out["other"] -= out["refunded"]    # what of a refund's entry ``refunded`` does not count stays other
    return out


def month_end_figures(engine, month: date) -> dict:
    """start and end (receivable, prepaid held, net) and the month's movements, in fen."""
    first, last = month_bounds(month)
    following = date.fromordinal(last.toordinal() + 1)
    with engine.connect() as conn:
        totals, lines, later = account_totals(conn), month_lines(conn, first, last), dated_from(conn, following)
    end = {a: totals.get(a, 0) - later.get(a, 0) for a in CUSTOMER_ACCOUNTS}
    start = {a: end[a] - sum(t for _, _, _, account, t in lines if account == a) for a in CUSTOMER_ACCOUNTS}
    moved = movements(lines)
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
                     ctx.clock.local(), chart, [identity], SIGN_OFF)


def _line(key: str, label: Label, amount: int) -> dict:
    return {"key": key, "line": label, "amount": amount}


def by_key(doc: ReportDoc) -> dict[str, int]:
    """A month-end summary's figures by line key (tests, the API's JSON)."""
    section = doc.sections[0]
    out = defaultdict(int, {row["key"]: row["amount"] for row in section.rows})
    out["check"] = section.totals["amount"]
    return dict(out)
