"""A small ledger for the finance reports' tests, built through the posting paths (payments,
reversals, a bill correction, a refund), with bills of each category, districts, collection types
and customers without a mobile. Figures the tests expect are worked out in ``build_ledger``'s doc."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, update

from config.clock import ManualClock
from ledger.corrections import correct_bill
from ledger.journal import PENALTY_INCOME, RECEIVABLE, REVENUE, Entry
from ledger.refunds import request_refund
from ledger.schema import agreements, banks, bills, customers
from ledger.synchronous_posting import post
from ledger_helpers import add_customers, customer_row, new_engine, payment, reversal, write_entries

A, B = "01020000", "01030000"
T_JUL = datetime(2026, 7, 10, 2, 0, tzinfo=timezone.utc)
T_OCT = datetime(2026, 10, 12, 2, 0, tzinfo=timezone.utc)
T_NOV = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)      # business date 2026-11-23 in Shanghai
NOV23 = date(2026, 11, 23)
K1, K2, K3, K4, K5 = (f"0010000{i}" for i in range(1, 6))        # customer numbers with leading zeros


@dataclass
class Ledger:
    url: str
    engine: object
    bill_ids: dict = field(default_factory=dict)


def add_bill(conn, bill_id: str, customer_no: str, period: str, principal: int, penalty: int, due: date,
             category: str, at: datetime) -> None:
    """A billing system's bill as the import writes it: the bill and its entry (Dr receivable, Cr revenue
    and penalty income), dated at its import."""
    conn.execute(insert(bills), [{
        "bill_id": bill_id, "customer_no": customer_no, "period": period, "principal": principal, "penalty": penalty,
        "due_date": due, "kind": "O", "reverses_bill_id": None, "replaces_bill_id": None, "import_id": None,
        "created_at": at, "category": category}])
    entry = Entry("bill", "bill", bill_id, ManualClock(at).business_date(), "test:import")
    entry.debit(RECEIVABLE, principal + penalty, customer_no).credit(REVENUE, principal, customer_no)
    entry.credit(PENALTY_INCOME, penalty, customer_no)
    write_entries(conn, [entry], at)


def build_ledger(url: str) -> Ledger:
    """Banks A (工商银行) and B (农业银行). Customers (district, type, collection type, mobile):
    K1 01 R C yes; K2 01 R - no; K3 02 N B yes; K4 02 R - yes; K5 02 N - (active agreement: D) yes.

    July: K5 E 7,000 due 07-28. October 12: K1 E 10,000 + 100 penalty, K2 V 20,000, K3 F 30,000,
    K4 E 5,000, all due 10-28; K2 pays 25,000 cash at A (5,000 into prepaid).
    November 23: K1 E 12,000, K2 V 3,000, K4 E 8,000 (due 11-28), K5 E 4,000 (due 12-15); K3 pays
    30,000 by transfer at B, reversed the same day; K4 pays 13,000 by cheque at A; K1's October bill
    corrected to 9,000 (it was unpaid); K2 refunded 2,000 of its prepaid.

    Month-end November: start receivable 52,100, prepaid 5,000, net 47,100; billed E 24,000, V 3,000,
    F 0; corrections -1,100; collected 43,000; reversed 30,000; refunded 2,000; end net 62,000
    (receivable 65,000, prepaid 3,000)."""
    engine = new_engine(url)
    clock = ManualClock(T_NOV)
    people = [(K1, "01", "R", "C", "13800000001"), (K2, "01", "R", None, None), (K3, "02", "N", "B", "13800000003"),
              (K4, "02", "R", None, "13800000004"), (K5, "02", "N", None, "13800000005")]
    with engine.begin() as conn:
        conn.execute(insert(banks), [{"bank_code": A, "name": "工商银行", "created_at": T_JUL},
                                     {"bank_code": B, "name": "农业银行", "created_at": T_JUL}])
        add_customers(conn, [customer_row(no, ctype=ctype, mobile=mobile, at=T_JUL) for no, _, ctype, _, mobile in people])
        for no, district, _, collection, _ in people:
            conn.execute(update(customers).where(customers.c.customer_no == no)
                         .values(district=district, collection_type=collection))
        conn.execute(insert(agreements), [{"customer_no": K5, "bank_code": A, "account_no": "6222000000000005",
                                           "account_name": "K5", "status": "A", "debit_limit": 0, "version": 1,
                                           "updated_at": T_JUL}])
        add_bill(conn, "K5-07", K5, "202607", 7_000, 0, date(2026, 7, 28), "E", T_JUL)
        for bill_id, no, principal, penalty, category in (("K1-10", K1, 10_000, 100, "E"), ("K2-10", K2, 20_000, 0, "V"),
                                                          ("K3-10", K3, 30_000, 0, "F"), ("K4-10", K4, 5_000, 0, "E")):
            add_bill(conn, bill_id, no, "202610", principal, penalty, date(2026, 10, 28), category, T_OCT)
    assert post(engine, [payment(A, K2, 25_000, at=T_OCT)], ManualClock(T_OCT))[0].ok
    with engine.begin() as conn:
        for bill_id, no, principal, due, category in (("K1-11", K1, 12_000, date(2026, 11, 28), "E"),
                                                      ("K2-11", K2, 3_000, date(2026, 11, 28), "V"),
                                                      ("K4-11", K4, 8_000, date(2026, 11, 28), "E"),
                                                      ("K5-11", K5, 4_000, date(2026, 12, 15), "E")):
            add_bill(conn, bill_id, no, "202611", principal, 0, due, category, T_NOV)
    k3 = payment(B, K3, 30_000, at=T_NOV, method="02")
    out = post(engine, [k3, payment(A, K4, 13_000, at=T_NOV, method="03", cheque_no="CQ0001")], clock)
    assert all(o.ok for o in out), out
    assert post(engine, [reversal(k3, at=T_NOV + timedelta(minutes=5))], clock)[0].ok
    correct_bill(engine, "K1-10", principal=9_000, penalty=0, actor="clerk.li", reason="meter misread",
                 clock=clock, now=T_NOV)
    request_refund(engine, K2, 2_000, actor="clerk.li", reason="moving away", now=T_NOV)
    return Ledger(url, engine)


@pytest.fixture
def ledger(db_url):
    """``build_ledger`` on SQLite and on PostgreSQL (``db_url``), its engine closed after."""
    built = build_ledger(db_url)
    yield built
    built.engine.dispose()
