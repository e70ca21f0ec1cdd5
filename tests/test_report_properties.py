"""The month-end identity on generated ledgers (hypothesis): bills of every category, payments with
excess into prepaid, reversals, bill corrections and refunds, posted through the posting paths over
October and November 2026 into one database (each example adds new customers to it). For each
month: start + billed + corrections − collected + reversed + refunded = end, nothing unclassified,
October's end is November's start, and each figure agrees with the tables it sums (payments,
reversals, refunds; bills owing and prepaid balances at the end)."""
from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select

from config.clock import ManualClock
from ledger.corrections import correct_bill
from ledger.errors import Refused
from ledger.refunds import request_refund
from ledger.reports.catalogue import ReportParams, build
from ledger.reports.context import ReportContext
from ledger.reports.month_end import by_key
from ledger.schema import allocations, banks, bills, payments, prepaid_movements, refunds, reversals
from ledger.synchronous_posting import post
from ledger_helpers import add_customers, assert_ledger_verifies, customer_row, new_engine, payment, prepaid_of, reversal
from report_ledger import add_bill

BANK = "01020000"
OCT, NOV = date(2026, 10, 1), date(2026, 11, 1)
MONTH_ENDS = {OCT: date(2026, 10, 31), NOV: date(2026, 11, 30)}
_customers = itertools.count(1)

operation = st.one_of(
    st.tuples(st.just("bill"), st.sampled_from("EVF"), st.integers(1, 50_000), st.integers(0, 500)),
    st.tuples(st.just("pay"), st.integers(0, 20_000)),          # what is owed plus this much into prepaid
    st.tuples(st.just("reverse"), st.just(0)),
    st.tuples(st.just("correct"), st.integers(1, 40_000)),
    st.tuples(st.just("refund"), st.integers(1, 10_000)))
day = st.integers(0, 55)                                         # days after October 3


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    engine = new_engine(f"sqlite:///{tmp_path_factory.mktemp('identity') / 'gridpay.db'}")
    with engine.begin() as conn:
        conn.execute(insert(banks), [{"bank_code": BANK, "name": "工商银行", "created_at": datetime(2026, 9, 1, tzinfo=timezone.utc)}])
    yield engine
    engine.dispose()


def owing(engine, customer_no: str) -> int:
    with engine.connect() as conn:
        billed = conn.execute(select(func.coalesce(func.sum(bills.c.principal + bills.c.penalty), 0))
                              .where(bills.c.customer_no == customer_no)).scalar_one()
        paid = conn.execute(select(func.coalesce(func.sum(allocations.c.amount), 0))
                            .select_from(allocations.join(bills, bills.c.bill_id == allocations.c.bill_id))
                            .where(bills.c.customer_no == customer_no)).scalar_one()
    return int(billed) - int(paid)


def apply(engine, no: str, step: int, op: tuple, at: datetime, state: dict) -> None:
    clock = ManualClock(at)
    kind = op[0]
    if kind == "bill":
        with engine.begin() as conn:
            bill_id = f"G{no}-{step}"
            add_bill(conn, bill_id, no, f"{at:%Y%m}", op[2], op[3], at.date() + timedelta(days=15), op[1], at)
        state["bills"].append(bill_id)
    elif kind == "pay":
        out = post(engine, [pay := payment(BANK, no, max(1, owing(engine, no) + op[1]), at=at)], clock)[0]
        if out.ok:
            state["payments"].append(pay)
    elif kind == "reverse" and state["payments"]:
        post(engine, [reversal(state["payments"].pop(), at=at)], clock)
    elif kind == "correct" and state["bills"]:
        try:
            correct_bill(engine, state["bills"].pop(0), principal=op[1], penalty=0, actor="clerk", reason="re-read",
                         clock=clock, now=at)
        except Refused:
            pass
    elif kind == "refund":
        with engine.connect() as conn:
            amount = min(op[1], prepaid_of(conn, no))
        if amount > 0:
            request_refund(engine, no, amount, actor="clerk", reason="asked", now=at)


def table_sum(engine, table, first: date, last: date, date_column) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(table.c.amount), 0))
                                .where(date_column.between(first, last))).scalar_one())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.lists(st.tuples(day, operation), min_size=1, max_size=14))
def test_month_end_identity_holds(shared, ops):
    engine = shared
    no = f"9{next(_customers):07d}"
    with engine.begin() as conn:
        add_customers(conn, [customer_row(no, at=datetime(2026, 9, 1, tzinfo=timezone.utc))])
    state = {"bills": [], "payments": []}
    start = datetime(2026, 10, 3, 2, 0, tzinfo=timezone.utc)
    for step, (offset, op) in enumerate(sorted(ops, key=lambda o: o[0])):
        apply(engine, no, step, op, start + timedelta(days=offset, minutes=step), state)
    ctx = ReportContext(engine, ManualClock(datetime(2026, 12, 1, tzinfo=timezone.utc)), {})
    figures = {m: by_key(build("month-end", ctx, ReportParams(month=m))) for m in (OCT, NOV)}
    for month, f in figures.items():
        assert f["check"] == 0 and f["other"] == 0, f
        assert f["end_net"] == (f["start_net"] + f["billed_E"] + f["billed_V"] + f["billed_F"] + f["corrections"]
                                + f["collected"] + f["reversed"] + f["refunded"] + f["other"])
        last = MONTH_ENDS[month]
        assert -f["collected"] == table_sum(engine, payments, month, last, payments.c.business_date)
        assert f["reversed"] == table_sum(engine, reversals, month, last, reversals.c.business_date)
    assert figures[OCT]["end_net"] == figures[NOV]["start_net"]
    assert figures[OCT]["end_receivable"] == figures[NOV]["start_receivable"]
    with engine.connect() as conn:
        all_refunded = int(conn.execute(select(func.coalesce(func.sum(refunds.c.amount), 0))).scalar_one())
        held = int(conn.execute(select(func.coalesce(func.sum(prepaid_movements.c.amount), 0))).scalar_one())
        all_billed = conn.execute(select(func.coalesce(func.sum(bills.c.principal + bills.c.penalty), 0))).scalar_one()
        all_paid = conn.execute(select(func.coalesce(func.sum(allocations.c.amount), 0))).scalar_one()
    assert figures[OCT]["refunded"] + figures[NOV]["refunded"] == all_refunded
    assert figures[NOV]["end_receivable"] == int(all_billed) - int(all_paid)
    assert figures[NOV]["end_prepaid"] == held
    assert_ledger_verifies(engine)
