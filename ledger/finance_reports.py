"""Finance reports: the daily collections report and the receivables report of a billing period.

Figures are SQL aggregates (SQLAlchemy Core) over integer fen; they are shown in yuan with two
decimals, converted with integer arithmetic (``divmod``), never through floats. Each report renders
as an aligned text table (``render_table``) or CSV (``render_csv``).

- ``daily_report(engine, business_date)``: the payments of that business date by bank, channel
  (C counter, D direct debit) and method (01 cash, 02 transfer/card, 03 cheque, 10 direct debit),
  count and sum; the reversals made on that business date, by the same keys of the payment they
  reverse, count and sum; and the net (payments less reversals). A reversal counts on the business
  date it was made, which may be later than its payment's.
- ``debits_report(engine, business_date, clock)``: the direct debits created on that business date
  by bank, channel (batch, or the channel of a single debit: call_centre, voice, online_banking,
  district_office, counter) and state, count and sum.
- ``receivables_report(engine, period)``: the bills of a billing period (YYYYMM) by customer type:
  number of bills in force, billed principal, penalty and total (corrections included: a reversing
  bill counts negative), collected (allocations to those bills, net of reversals and moves by
  corrections) and outstanding (billed less collected), as they stand now.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import Engine, func, select

from config.clock import Clock
from ledger.period_figures import billed_in_force, collected_on
from ledger.schema import customers, debits, payments, reversals

CHANNELS = {"C": "counter", "D": "direct debit"}
METHODS = {"01": "cash", "02": "transfer/card", "03": "cheque", "10": "direct debit"}
CUSTOMER_TYPES = {"R": "resident", "N": "non-resident"}


def yuan(fen: int) -> str:
    """Integer fen as yuan with two decimals: 123456 -> '1234.56', -5 -> '-0.05'."""
    assert isinstance(fen, int) and not isinstance(fen, bool), "money is integer fen"
    whole, cents = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}{whole}.{cents:02d}"


def yuan_grouped(fen: int) -> str:
    whole, cents = divmod(abs(fen), 100)
    return f"{'-' if fen < 0 else ''}{whole:,}.{cents:02d}"


@dataclass
class Report:
    title: str
    columns: list[str]
    money: set[str]                          # columns holding fen
    rows: list[dict] = field(default_factory=list)
    total: dict | None = None

    def as_text_rows(self, grouped: bool) -> list[list[str]]:
        fmt = yuan_grouped if grouped else yuan
        out = []
        for row in self.rows + ([self.total] if self.total else []):
            out.append([fmt(row[c]) if c in self.money else str(row[c]) for c in self.columns])
        return out


@dataclass
class DailyRow:
    bank_code: str
    channel: str
    method: str
    payments: int = 0
    collected: int = 0
    reversals: int = 0
    reversed: int = 0

    @property
    def net(self) -> int:
        return self.collected - self.reversed


@dataclass
class DailyReport:
    business_date: date
    rows: list[DailyRow]

    @property
    def total(self) -> DailyRow:
        t = DailyRow("total", "", "")
        for r in self.rows:
            t.payments += r.payments
            t.collected += r.collected
            t.reversals += r.reversals
            t.reversed += r.reversed
        return t

    def report(self) -> Report:
        columns = ["bank", "channel", "method", "payments", "collected", "reversals", "reversed", "net"]

        def as_dict(r: DailyRow) -> dict:
            return {"bank": r.bank_code, "channel": CHANNELS.get(r.channel, r.channel),
                    "method": METHODS.get(r.method, r.method), "payments": r.payments, "collected": r.collected,
                    "reversals": r.reversals, "reversed": r.reversed, "net": r.net}

        return Report(f"Daily collections, business date {self.business_date.isoformat()} (amounts in yuan)",
                      columns, {"collected", "reversed", "net"}, [as_dict(r) for r in self.rows],
                      as_dict(self.total))


def daily_report(engine: Engine, business_date: date) -> DailyReport:
    return DailyReport(business_date, collection_rows(engine, business_date, business_date))


def collection_rows(engine: Engine, first: date, last: date) -> list[DailyRow]:
    with engine.connect() as conn:
        return collection_rows_in(conn, first, last)


def collection_rows_in(conn, first: date, last: date) -> list[DailyRow]:
    """Payments of the business dates first..last and the reversals made on them, by bank, channel
    and method (a reversal by its own business date, under its payment's keys)."""
    keys = (payments.c.bank_code, payments.c.channel, payments.c.method)
    collected = (select(*keys, func.count(), func.coalesce(func.sum(payments.c.amount), 0))
                 .where(payments.c.business_date.between(first, last)).group_by(*keys))
    reversed_ = (select(*keys, func.count(), func.coalesce(func.sum(reversals.c.amount), 0))
                 .select_from(reversals.join(payments, payments.c.payment_id == reversals.c.payment_id))
                 .where(reversals.c.business_date.between(first, last)).group_by(*keys))
    rows: dict[tuple, DailyRow] = {}
    for bank, channel, method, count, total in conn.execute(collected):
        row = rows.setdefault((bank, channel, method), DailyRow(bank, channel, method))
        row.payments, row.collected = int(count), int(total)
    for bank, channel, method, count, total in conn.execute(reversed_):
        row = rows.setdefault((bank, channel, method), DailyRow(bank, channel, method))
        row.reversals, row.reversed = int(count), int(total)
    return [rows[k] for k in sorted(rows)]


@dataclass
class DebitsReport:
    business_date: date
    rows: dict[tuple[str, str, str], list[int]]        # (bank, channel, state) -> [count, sum]

    def report(self) -> Report:
        columns = ["bank", "channel", "state", "debits", "amount"]
        rows = [{"bank": bank, "channel": channel, "state": state, "debits": count, "amount": total}
                for (bank, channel, state), (count, total) in sorted(self.rows.items())]
        total = {"bank": "total", "channel": "", "state": "", "debits": sum(r["debits"] for r in rows),
                 "amount": sum(r["amount"] for r in rows)}
        return Report(f"Direct debits created on business date {self.business_date.isoformat()}, by channel "
                      "(amounts in yuan)", columns, {"amount"}, rows, total)


def debits_report(engine: Engine, business_date: date, clock: Clock) -> DebitsReport:
    """Debits whose creation falls on ``business_date`` (by the clock's zone and cut-off), counted by
    bank, channel and state. The rows of a two-day window around the date are read and each one's
    business date is the clock's: the cut-off makes the date's bounds no SQL expression."""
    d = debits.c
    midnight = datetime.combine(business_date, time(), tzinfo=timezone.utc)
    window = (select(d.created_at, d.bank_code, d.channel, d.state, d.amount)
              .where(d.created_at >= midnight - timedelta(days=2), d.created_at < midnight + timedelta(days=2)))
    rows: dict[tuple[str, str, str], list[int]] = {}
    with engine.connect() as conn:
        for at, bank, channel, state, amount in conn.execute(window):
            if at.tzinfo is None:                        # SQLite hands back naive UTC
                at = at.replace(tzinfo=timezone.utc)
            if clock.business_date(at) == business_date:
                row = rows.setdefault((bank, channel, state), [0, 0])
                row[0] += 1
                row[1] += int(amount)
    return DebitsReport(business_date, rows)


@dataclass
class ReceivablesRow:
    customer_type: str
    bills: int = 0
    principal: int = 0
    penalty: int = 0
    collected: int = 0

    @property
    def billed(self) -> int:
        return self.principal + self.penalty

    @property
    def outstanding(self) -> int:
        return self.billed - self.collected


@dataclass
class ReceivablesReport:
    period: str
    rows: list[ReceivablesRow]

    @property
    def total(self) -> ReceivablesRow:
        t = ReceivablesRow("total")
        for r in self.rows:
            t.bills += r.bills
            t.principal += r.principal
            t.penalty += r.penalty
            t.collected += r.collected
        return t

    def report(self) -> Report:
        columns = ["customer_type", "bills", "principal", "penalty", "billed", "collected", "outstanding"]

        def as_dict(r: ReceivablesRow) -> dict:
            return {"customer_type": CUSTOMER_TYPES.get(r.customer_type, r.customer_type), "bills": r.bills,
                    "principal": r.principal, "penalty": r.penalty, "billed": r.billed,
                    "collected": r.collected, "outstanding": r.outstanding}

        return Report(f"Receivables, billing period {self.period} (amounts in yuan)", columns,
                      {"principal", "penalty", "billed", "collected", "outstanding"},
                      [as_dict(r) for r in self.rows], as_dict(self.total))


def receivables_report(engine: Engine, period: str) -> ReceivablesReport:
    ctype = customers.c.customer_type
    billed = billed_in_force(period, ctype)
    collected = collected_on(period, ctype)
    rows: dict[str, ReceivablesRow] = {t: ReceivablesRow(t) for t in CUSTOMER_TYPES}
    with engine.connect() as conn:
        for t, count, principal, penalty in conn.execute(billed):
            row = rows.setdefault(t, ReceivablesRow(t))
            row.bills, row.principal, row.penalty = int(count), int(principal), int(penalty)
        for t, total in conn.execute(collected):
            rows.setdefault(t, ReceivablesRow(t)).collected = int(total)
    return ReceivablesReport(period, list(rows.values()))


def render_table(report: Report) -> str:
    """An aligned text table: text columns left-aligned, figures right-aligned, a rule before the total."""
    cells = report.as_text_rows(grouped=True)
    numeric = [c for c in report.columns if c in report.money or all(
        isinstance(r[c], int) for r in report.rows + ([report.total] if report.total else []))]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(report.columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if c in numeric else v.ljust(w)
                         for v, w, c in zip(values, widths, report.columns)).rstrip()

    out = [report.title, "", line(report.columns), line(["-" * w for w in widths])]
    body = cells[:-1] if report.total else cells
    out += [line(r) for r in body]
    if not report.rows:
        out.append("(nothing)")
    if report.total:
        out.append(line(["-" * w for w in widths]))
        out.append(line(cells[-1]))
    return "\n".join(out) + "\n"


def render_csv(report: Report) -> str:
    """CSV with a header line; amounts in yuan with two decimals (no thousands separators)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(report.columns)
    writer.writerows(report.as_text_rows(grouped=False))
    return buf.getvalue()


def spreadsheet_cell(value) -> str:
    """A text cell a spreadsheet keeps as text: ``="0102"`` keeps a bank code's leading zero, and
    a value starting with ``=``, ``+``, ``-`` or ``@`` stays a string, never a formula."""
    return '="' + str(value).replace('"', '""') + '"'


def render_csv_fen(report: Report) -> str:
    """CSV for spreadsheets: amounts and counts as integers (amounts in fen), every other column
    (identifiers: bank codes, channels, customer types) as text by ``spreadsheet_cell``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.rows + ([report.total] if report.total else []):
        writer.writerow([str(row[c]) if isinstance(row[c], int) and not isinstance(row[c], bool)
                         else spreadsheet_cell(row[c]) for c in report.columns])
    return buf.getvalue()
