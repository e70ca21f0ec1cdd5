"""Bill inquiry (docs/spec/INTERFACE.md §4.3): what a customer owes. Reads only; never records anything."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import Engine, func, select

from config.clock import SYSTEM_CLOCK, Clock
from ledger.money import fits
from ledger.schema import customers, prepaid_movements
from runtime.bulk_sql import select_many


@dataclass(frozen=True)
class InquiryResult:
    response_code: str                  # 00, 14 unknown customer, B2 suspended / closed, 13 amounts past 12 digits
    customer_name: str = ""
    bills: list[tuple[str, int, int]] = field(default_factory=list)  # (period, principal, penalty) still owed, oldest first
    total_due: int = 0                  # owed on all unpaid bills minus the prepaid balance, never below 0
    prepaid_balance: int = 0
    business_date: date | None = None
    detail: str = ""


def inquire(engine_or_conn, customer_no: str, at: datetime,
            clock: Clock = SYSTEM_CLOCK) -> InquiryResult:
    """The unpaid bills of a customer, oldest first, and the total due. A partly paid bill is
    listed with what it still owes (money paid on a bill goes to its penalty first)."""
    if isinstance(engine_or_conn, Engine):
        conn = engine_or_conn.connect()
        if conn.dialect.name == "postgresql":  # one snapshot for bills and prepaid balance
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            with conn.begin():
                return _inquire(conn, customer_no, at, clock)
        finally:
            conn.close()
    return _inquire(engine_or_conn, customer_no, at, clock)


def _inquire(conn, customer_no: str, at: datetime, clock: Clock) -> InquiryResult:
    return inquire_many(conn, [customer_no], at, clock)[customer_no]


@functools.cache
def _statements(dialect_name: str):
    from ledger.posting import open_bills_query
    from runtime.bulk_sql import in_list

    who = (select(customers.c.customer_no, customers.c.customer_name, customers.c.status)
           .where(in_list(dialect_name, customers.c.customer_no, "custs")))
    prepaid = (select(prepaid_movements.c.customer_no, func.sum(prepaid_movements.c.amount).label("balance"))
               .where(in_list(dialect_name, prepaid_movements.c.customer_no, "custs"))
               .group_by(prepaid_movements.c.customer_no))
    return who, open_bills_query(dialect_name), prepaid


def inquire_many(conn, customer_nos, at: datetime, clock: Clock = SYSTEM_CLOCK) -> dict[str, InquiryResult]:
    """Inquiries for several customers at once, with one query per table (the gateway batches them)."""
    from ledger.posting.model import Bill

    bd = clock.business_date(at)
    wanted = sorted(set(customer_nos))
    params = {"custs": wanted}
    who_rows, bill_rows, prepaid_rows = select_many(conn, [(q, params) for q in _statements(conn.dialect.name)])
    who = {r.customer_no: r for r in who_rows}
    open_bills: dict[str, list] = {}
    for row in bill_rows:
        open_bills.setdefault(row.customer_no, []).append(Bill(row))
    prepaid = {r.customer_no: int(r.balance) for r in prepaid_rows}
    results = {}
    for customer_no in wanted:
        cust = who.get(customer_no)
        if cust is None:
            results[customer_no] = InquiryResult("14", business_date=bd, detail="no such customer")
        elif cust.status != "A":
            results[customer_no] = InquiryResult(
                "B2", cust.customer_name, business_date=bd,
                detail="customer suspended" if cust.status == "S" else "customer closed")
        else:
            bills_owed = sorted(open_bills.get(customer_no, ()), key=Bill.sort_key)
            listed = [(b.period, *b.owing_split()) for b in bills_owed if b.owing > 0]
            owing = sum(p + q for _, p, q in listed)
            balance = prepaid.get(customer_no, 0)
            due = max(0, owing - balance)
            if not (fits(due) and fits(balance)):   # field 4 and PB carry 12 digits
                results[customer_no] = InquiryResult(
                    "13", cust.customer_name, business_date=bd,
                    detail=f"amount due {due} or prepaid balance {balance} does not fit in 12 digits")
                continue
            results[customer_no] = InquiryResult("00", cust.customer_name, listed, due, balance, bd)
    return results


class InquiryWorker:
    """Inquiries as a ``runtime.worker_process`` worker: the customer numbers that arrive together
    are answered from one read transaction (one snapshot on PostgreSQL). ``config``: url,
    statement_timeout_s, timezone, cutoff."""

    def __init__(self, config: dict):
        from ledger.db import make_engine

        self.engine = make_engine(config["url"], pool_size=1, statement_timeout_s=config.get("statement_timeout_s"),
                                  pre_ping=False)
        self.clock = Clock(config["timezone"], config["cutoff"])

    def process(self, customer_nos: list[str]) -> list[InquiryResult]:
        from sqlalchemy.exc import DBAPIError

        try:
            results = self._read(customer_nos)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            results = self._read(customer_nos)  # the pooled connection had died: once more on a new one
        return [results[c] for c in customer_nos]

    def _read(self, customer_nos: list[str]) -> dict[str, InquiryResult]:
        from ledger.db import read_only

        with read_only(self.engine.connect()) as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return inquire_many(conn, customer_nos, self.clock.now(), self.clock)

    def close(self) -> None:
        self.engine.dispose()
