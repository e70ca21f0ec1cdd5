"""Direct-debit results as postings: approved, declined, unknown, reversed."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from config.clock import Clock
from ledger.debits import (
    create_debit, debit_approved, debit_declined, debit_reversed, debit_unknown, mark_debit_sent,
)
from ledger.inquiry import inquire
from ledger.posting import DebitResult
from ledger.schema import allocations, audit_log, debit_attempts, debits, outbox, payments, reversals
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_banks, add_bills, add_customer, assert_ledger_verifies, new_engine, payment, prepaid_of
from poster_thread import PosterThread

CAL = Clock()


@pytest.fixture
def ledger(db_url):
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, "0102")
        add_customer(conn, "2001")
        add_bills(conn, [("2001", "202609", 10_000, 100), ("2001", "202610", 20_000, 0)])
    yield engine
    assert_ledger_verifies(engine)
    engine.dispose()


def new_debit(engine, sent: bool = True, rrn: str = "DRRN00000001") -> int:
    with engine.begin() as conn:
        debit_id = create_debit(conn, bank_code="0102", customer_no="2001", account_no="6222000011112222",
                                bills_to_pay=[("B2001202609", 10_100), ("B2001202610", 20_000)], at=T0)
        if sent:
            mark_debit_sent(conn, debit_id, transmitted="1123100000", stan="900001", rrn=rrn,
                            business_date=date(2026, 11, 23), at=T0)
    return debit_id


def state(engine, debit_id):
    with engine.connect() as conn:
        return conn.execute(select(debits.c.state, debits.c.response_code).where(debits.c.debit_id == debit_id)).one()


def rows(engine, table, *where):
    with engine.connect() as conn:
        return conn.execute(select(table).where(*where)).all()


def test_create_debit_is_pending_with_its_bills(ledger):
    debit_id = new_debit(ledger, sent=False)
    assert tuple(state(ledger, debit_id)) == ("pending", None)
    with ledger.connect() as conn:
        assert conn.execute(select(debits.c.amount)).scalar_one() == 30_100
    with pytest.raises(ValueError):
        with ledger.begin() as conn:
            create_debit(conn, bank_code="0102", customer_no="2002", account_no="1",
                         bills_to_pay=[("B2001202609", 1)], at=T0)


def test_approved_pays_exactly_the_debits_bills(ledger):
    debit_id = new_debit(ledger)
    out = debit_approved(ledger, debit_id, T0, "123456")
    assert out.response_code == "00" and out.fields["receipt_no"].startswith("R2026")
    pay = rows(ledger, payments)[0]
    assert (pay.channel, pay.method, pay.debit_id, pay.amount, pay.rrn) == ("D", "10", debit_id, 30_100, "DRRN00000001")
    assert inquire(ledger, "2001", T0).bills == []
    assert tuple(state(ledger, debit_id)) == ("approved", "00")
    sms = rows(ledger, outbox)[0]
    assert sms.kind == "debit_ok" and sms.ref == f"debit:{debit_id}" and "代扣成功" in sms.text
    # the same result again changes nothing
    again = debit_approved(ledger, debit_id, T0, "123456")
    assert again.replayed and len(rows(ledger, payments)) == 1


def test_approved_for_bill_paid_meanwhile_puts_money_into_prepaid(ledger):
    debit_id = new_debit(ledger)
    assert post(ledger, [payment("0102", "2001", 30_100)], CAL)[0].response_code == "00"
    assert debit_approved(ledger, debit_id, T0).response_code == "00"
    with ledger.connect() as conn:
        assert prepaid_of(conn, "2001") == 30_100


def test_declined_keeps_bills_unpaid_and_records_reason(ledger):
    debit_id = new_debit(ledger)
    out = debit_declined(ledger, debit_id, T0, "51", "insufficient funds")
    assert out.response_code == "00"
    assert tuple(state(ledger, debit_id)) == ("declined", "51")
    assert inquire(ledger, "2001", T0).total_due == 30_100
    assert rows(ledger, payments) == []
    sms = rows(ledger, outbox)[0]
    assert sms.kind == "debit_failed" and "账户余额不足" in sms.text
    events = [r.event for r in rows(ledger, debit_attempts)]
    assert events == ["created", "sent", "declined"]
    assert rows(ledger, audit_log, audit_log.c.action == "debit.declined")[0].reason == "insufficient funds"
    assert debit_approved(ledger, debit_id, T0).response_code == "12"   # state only moves forward


def test_unknown_posts_nothing_then_reversed_posts_nothing(ledger):
    debit_id = new_debit(ledger)
    assert debit_unknown(ledger, debit_id, T0).response_code == "00"
    assert tuple(state(ledger, debit_id))[0] == "unknown"
    assert rows(ledger, payments) == [] and rows(ledger, outbox) == []
    assert debit_reversed(ledger, debit_id, T0).response_code == "00"
    assert tuple(state(ledger, debit_id))[0] == "reversed"
    assert rows(ledger, payments) == [] and rows(ledger, reversals) == []


def test_reversed_after_approval_is_a_red_reversal(ledger):
    debit_id = new_debit(ledger)
    debit_approved(ledger, debit_id, T0)
    out = debit_reversed(ledger, debit_id, T0, "bank reversed the debit")
    assert out.response_code == "00"
    rev = rows(ledger, reversals)[0]
    assert (rev.source, rev.amount, rev.reason) == ("D", 30_100, "bank reversed the debit")
    assert inquire(ledger, "2001", T0).total_due == 30_100
    with ledger.connect() as conn:
        assert conn.execute(select(func.sum(allocations.c.amount))).scalar_one() == 0


def test_debit_results_through_the_group_committer_with_counter_payments(ledger):
    debit_id = new_debit(ledger)
    gc = PosterThread(ledger, CAL)
    f1, f2 = gc.submit([DebitResult(debit_id, "approved", T0, "00", "654321"),
                        payment("0102", "2001", 30_100)])      # same customer, same batch: nothing due any more
    outs = [f1.result(timeout=30), f2.result(timeout=30)]
    gc.stop()
    assert outs[0].response_code == "00"
    assert outs[1].response_code == "00" and outs[1].fields["prepaid_balance"] == 30_100


def test_unknown_debit_id(ledger):
    assert debit_approved(ledger, 424242, T0).response_code == "25"


def test_mark_sent_identity_never_changes(ledger):
    debit_id = new_debit(ledger)
    with pytest.raises(ValueError):
        with ledger.begin() as conn:
            mark_debit_sent(conn, debit_id, transmitted="1123100001", stan="900002", rrn="X",
                            business_date=date(2026, 11, 23), at=T0)
    with ledger.begin() as conn:   # a resend with the same identity is recorded
        mark_debit_sent(conn, debit_id, transmitted="1123100000", stan="900001", rrn="DRRN00000001",
                        business_date=date(2026, 11, 23), at=T0, mti="0200")
    assert [r.event for r in rows(ledger, debit_attempts)] == ["created", "sent", "sent"]
