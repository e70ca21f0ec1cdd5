"""Bill inquiry (docs/spec/INTERFACE.md §4.3): what a customer owes. Reads only; never records anything."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import Engine, func, select

from config.clock import SYSTEM_CLOCK, Clock
from ledger.db import read_only
from ledger.money import fits
from ledger.schema import customers, prepaid_movements
from runtime.bulk_sql import in_list, select_many


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
        with engine_or_conn.connect() as conn:
            return inquire(read_only(conn), customer_no, at, clock)   # SQLite: no write lock for a read
    return inquire_many(engine_or_conn, [customer_no], at, clock)[customer_no]


@functools.cache
def _statement(dialect_name: str):
    """One statement, so one snapshot, for the customers, their open bills and their prepaid
    balances: a row per (customer, open bill), or one with no bill. Each part filters by the
    customers itself, so the planner reads only theirs."""
    from ledger.posting import open_bills_query

    owed = open_bills_query(dialect_name).subquery("owed")
    prepaid = (select(prepaid_movements.c.customer_no, func.sum(prepaid_movements.c.amount).label("balance"))
               .where(in_list(dialect_name, prepaid_movements.c.customer_no, "custs"))
               .group_by(prepaid_movements.c.customer_no).subquery("prepaid"))
    c = customers.c
    return (select(c.customer_no, c.customer_name, c.status, prepaid.c.balance, owed.c.bill_id, owed.c.period,
                   owed.c.principal, owed.c.penalty, owed.c.due_date, owed.c.allocated, owed.c.cancelled)
            .select_from(customers.outerjoin(prepaid, prepaid.c.customer_no == c.customer_no)
                         .outerjoin(owed, owed.c.customer_no == c.customer_no))
            .where(in_list(dialect_name, c.customer_no, "custs")))


def inquire_many(conn, customer_nos, at: datetime, clock: Clock = SYSTEM_CLOCK) -> dict[str, InquiryResult]:
    """Inquiries for several customers at once, in one statement (the gateway batches them)."""
    from ledger.posting.model import Bill
    bd = clock.business_date(at)
    wanted = sorted(set(customer_nos))
    who, open_bills, prepaid = {}, {}, {}
    (rows,) = select_many(conn, [(_statement(conn.dialect.name), {"custs": wanted})])
    for row in rows:
        who[row.customer_no] = row
        prepaid[row.customer_no] = int(row.balance or 0)
        if row.bill_id is not None:
            open_bills.setdefault(row.customer_no, []).append(Bill(row))
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
            balance = prepaid[customer_no]
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
    are answered by one statement (``inquire_many``), on one connection kept open, outside any
    transaction on PostgreSQL: one round trip for the batch (a connection taken from the pool and
    given back for each batch cost more CPU than the statement). ``config``: url,
    statement_timeout_s, timezone, cutoff."""

    def __init__(self, config: dict):
        from ledger.db import make_engine

        self.engine = make_engine(config["url"], pool_size=1, statement_timeout_s=config.get("statement_timeout_s"),
                                  pre_ping=False)
        self.clock = Clock(config["timezone"], config["cutoff"])
        self.conn = None

    def process(self, customer_nos: list[str]) -> list[InquiryResult]:
        from sqlalchemy.exc import DBAPIError

        try:
            results = self._read(customer_nos)
        except Exception as exc:
            self._drop_connection()
            if not (isinstance(exc, DBAPIError) and exc.connection_invalidated):
                raise
            results = self._read(customer_nos)  # the connection had died: once more on a new one
        return [results[c] for c in customer_nos]

    def _read(self, customer_nos: list[str]) -> dict[str, InquiryResult]:
        if self.conn is None:
            conn = read_only(self.engine.connect())
            if conn.dialect.name == "postgresql":   # one statement: no BEGIN and COMMIT round trips
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            self.conn = conn
        with self.conn.begin():   # SQLite: one read transaction, one snapshot, ended after each batch
            return inquire_many(self.conn, customer_nos, self.clock.now(), self.clock)

    def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a dead connection's close may fail too; it is gone either way
                pass

    def close(self) -> None:
        self._drop_connection()
        self.engine.dispose()
