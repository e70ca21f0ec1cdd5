"""The figures behind the daily collections, direct debits and receivables reports: SQL aggregates
(SQLAlchemy Core) over integer fen. The reports themselves are report definitions
(ledger/reports: ``collections``, ``debits``, ``receivables``), rendered in every format there; the
console's glance, the collection rate and the bench read these figures directly.

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

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import Engine, func, select

from config.clock import Clock
from ledger.period_figures import billed_in_force, collected_on
from ledger.schema import customers, debits, payments, reversals

CUSTOMER_TYPES = ("R", "N")      # resident, non-resident: a receivables row for each even when empty


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
