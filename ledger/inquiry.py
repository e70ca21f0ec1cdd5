"""Bill inquiry (INTERFACE.md §4.3): what a customer owes. Reads only; never records anything."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import Engine, func, select

from ledger.business_date import BusinessCalendar
from ledger.schema import customers, prepaid_movements


@dataclass(frozen=True)
class InquiryResult:
    response_code: str                  # 00, 14 unknown customer, B2 suspended / closed
    customer_name: str = ""
    bills: list[tuple[str, int, int]] = field(default_factory=list)  # (period, principal, penalty) still owed, oldest first
    total_due: int = 0                  # owed on all unpaid bills minus the prepaid balance, never below 0
    prepaid_balance: int = 0
    business_date: date | None = None
    detail: str = ""


def inquire(engine_or_conn, customer_no: str, at: datetime,
            calendar: BusinessCalendar | None = None) -> InquiryResult:
    """The unpaid bills of a customer, oldest first, and the total due. A partly paid bill is
    listed with what it still owes (money paid on a bill goes to its penalty first)."""
    calendar = calendar or BusinessCalendar()
    if isinstance(engine_or_conn, Engine):
        conn = engine_or_conn.connect()
        if conn.dialect.name == "postgresql":  # one snapshot for bills and prepaid balance
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            with conn.begin():
                return _inquire(conn, customer_no, at, calendar)
        finally:
            conn.close()
    return _inquire(engine_or_conn, customer_no, at, calendar)


def _inquire(conn, customer_no: str, at: datetime, calendar: BusinessCalendar) -> InquiryResult:
    from ledger.postings import _Bill, open_bills_query

    bd = calendar.business_date(at)
    cust = conn.execute(select(customers.c.customer_name, customers.c.status)
                        .where(customers.c.customer_no == customer_no)).first()
    if cust is None:
        return InquiryResult("14", business_date=bd, detail=f"no customer {customer_no}")
    if cust.status != "A":
        return InquiryResult("B2", cust.customer_name, business_date=bd,
                             detail="customer suspended" if cust.status == "S" else "customer closed")
    open_bills = sorted((_Bill(r) for r in conn.execute(open_bills_query(conn.dialect.name), {"custs": [customer_no]})),
                        key=_Bill.sort_key)
    prepaid = int(conn.execute(select(func.coalesce(func.sum(prepaid_movements.c.amount), 0))
                               .where(prepaid_movements.c.customer_no == customer_no)).scalar_one())
    listed = [(b.period, *b.owing_split()) for b in open_bills if b.owing > 0]
    owing = sum(p + q for _, p, q in listed)
    return InquiryResult("00", cust.customer_name, listed, max(0, owing - prepaid), prepaid, bd)
