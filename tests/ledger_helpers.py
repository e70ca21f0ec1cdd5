"""Setup helpers for ledger tests and the ledger bench: banks, customers, bills (with their
journal entries, consistent with the chart in ledger/schema.py), postings, and the verify check."""
from __future__ import annotations

import hashlib
import itertools
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import func, insert, select

from ledger import migrate
from ledger.db import make_engine
from ledger.journal import PENALTY_INCOME, RECEIVABLE, REVENUE, Entry
from ledger.posting import CounterPayment, PaymentReversal
from ledger.schema import banks, bills, customer_history, customers, journal_entries, journal_lines, prepaid_movements
from ledger.verify import verify

T0 = datetime(2026, 11, 23, 2, 0, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai, business date 2026-11-23
ACTOR = "test:setup"
ENTRY_OF_LINE = journal_entries.c.entry_id == journal_lines.c.entry_id  # a join without a foreign key (migration 0005)


def new_engine(url: str):
    migrate.upgrade(url)
    return make_engine(url)


def add_banks(conn, *codes: str, at: datetime = T0) -> None:
    conn.execute(insert(banks), [{"bank_code": c, "name": f"bank {c}", "created_at": at} for c in codes])


def customer_row(customer_no: str, *, name: str | None = None, status: str = "A", prepay: str = "Y",
                 mobile: str | None = "13800000000", ctype: str = "R", at: datetime = T0) -> dict:
    return {"customer_no": customer_no, "customer_name": name or f"客户{customer_no}", "customer_type": ctype,
            "status": status, "prepay_allowed": prepay, "mobile": mobile, "district": None, "version": 1,
            "updated_at": at}


def add_customers(conn, rows: list[dict]) -> None:
    if not rows:
        return
    conn.execute(insert(customers), rows)
    conn.execute(insert(customer_history), [
        {k: r[k] for k in ("customer_no", "version", "customer_name", "customer_type", "status", "prepay_allowed",
                           "mobile")} | {"recorded_at": r["updated_at"]} for r in rows])


def add_customer(conn, customer_no: str, **kw) -> None:
    add_customers(conn, [customer_row(customer_no, **kw)])


def add_bills(conn, items: list[tuple], at: datetime = T0) -> list[str]:
    """items: (customer_no, period, principal, penalty[, bill_id]); writes bills and their journal
    entries (Dr receivable; Cr revenue, Cr penalty_income). Returns the bill ids."""
    rows, entries = [], []
    for item in items:
        customer_no, period, principal, penalty = item[:4]
        bill_id = item[4] if len(item) > 4 else f"B{customer_no}{period}"
        rows.append({"bill_id": bill_id, "customer_no": customer_no, "period": period, "principal": principal,
                     "penalty": penalty, "due_date": date(int(period[:4]), int(period[4:]), 28), "kind": "O",
                     "reverses_bill_id": None, "replaces_bill_id": None, "import_id": None, "created_at": at})
        e = Entry("bill", "bill", bill_id, at.date(), ACTOR)
        e.debit(RECEIVABLE, principal + penalty, customer_no).credit(REVENUE, principal, customer_no)
        e.credit(PENALTY_INCOME, penalty, customer_no)
        entries.append(e)
    if rows:
        conn.execute(insert(bills), rows)
        write_entries(conn, entries, at)
    return [r["bill_id"] for r in rows]


def write_entries(conn, entries: list[Entry], created_at: datetime) -> None:
    """Set-up rows: journal entries and their lines, as the ledger writes them (ledger.posting.writes)."""
    ids = conn.execute(insert(journal_entries).returning(journal_entries.c.entry_id, sort_by_parameter_order=True),
                       [e.entry_row(created_at) for e in entries]).scalars().all()
    lines = [line for e, entry_id in zip(entries, ids) for line in e.line_rows(entry_id)]
    if lines:
        conn.execute(insert(journal_lines), lines)


@contextmanager
def lines_dated(engine):
    """Today's postings date each journal line (0023): a ledger at an older revision has the column
    while they post and loses it after (the upgrade fills it again from the entries)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE journal_lines ADD COLUMN business_date DATE")
    yield
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE journal_lines DROP COLUMN business_date")


def add_bill(conn, customer_no: str, period: str, principal: int, penalty: int = 0, bill_id: str | None = None) -> str:
    return add_bills(conn, [(customer_no, period, principal, penalty) + ((bill_id,) if bill_id else ())])[0]


def setup_customers(engine, n: int, bills_each: int = 1, prefix: str = "C", principal: int = 10_000,
                    penalty: int = 50, chunk: int = 5_000) -> list[str]:
    """n active customers (prepay allowed, with a mobile) with bills_each bills; direct Core inserts."""
    numbers = [f"{prefix}{i:08d}" for i in range(n)]
    for start in range(0, n, chunk):
        part = numbers[start:start + chunk]
        with engine.begin() as conn:
            add_customers(conn, [customer_row(c) for c in part])
            add_bills(conn, [(c, f"2026{m:02d}", principal, penalty) for c in part for m in range(1, bills_each + 1)])
    return numbers


def digest(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


_stan = itertools.count(1)


def next_stan() -> str:
    return f"{next(_stan) % 1_000_000:06d}"


def transmitted_of(at: datetime) -> str:
    local = at + timedelta(hours=8)
    return f"{local:%m%d%H%M%S}"


def payment(bank: str, customer_no: str, amount: int, *, stan: str | None = None, rrn: str | None = None,
            at: datetime = T0, method: str = "01", cheque_no: str | None = None,
            transmitted: str | None = None) -> CounterPayment:
    stan = stan or next_stan()
    transmitted = transmitted or transmitted_of(at)
    rrn = rrn or f"{transmitted[4:]}{stan}"
    return CounterPayment(bank, transmitted, stan, rrn, customer_no, amount, method, cheque_no, "T0000001",
                          "BR0000000000001", digest("0200", bank, transmitted, stan, rrn, customer_no, amount,
                                                    method, cheque_no), at)


def reversal(pay: CounterPayment, *, amount: int | None = None, stan: str | None = None,
             at: datetime | None = None, customer_no: str | None = None, bank: str | None = None,
             rrn: str | None = None) -> PaymentReversal:
    at = at or pay.received_at + timedelta(seconds=30)
    stan = stan or next_stan()
    transmitted = transmitted_of(at)
    rrn = rrn or pay.rrn   # a reversal may carry its payment's RRN (docs/spec/INTERFACE.md §4.7)
    amount = pay.amount if amount is None else amount
    bank = bank or pay.bank_code
    customer_no = customer_no or pay.customer_no
    return PaymentReversal(bank, transmitted, stan, f"{int(pay.bank_code):011d}", pay.transmitted, pay.stan,
                           amount, customer_no,
                           digest("0420", bank, transmitted, stan, rrn, pay.transmitted, pay.stan, amount, customer_no),
                           at, rrn=rrn)


def prepaid_of(conn, customer_no: str) -> int:
    return int(conn.execute(select(func.coalesce(func.sum(prepaid_movements.c.amount), 0))
                            .where(prepaid_movements.c.customer_no == customer_no)).scalar_one())


def assert_ledger_verifies(url_or_engine) -> None:
    if isinstance(url_or_engine, str):
        engine = make_engine(url_or_engine)
        try:
            failures = verify(engine)
        finally:
            engine.dispose()
    else:
        failures = verify(url_or_engine)
    assert failures == [], "ledger does not verify:\n" + "\n".join(failures)
