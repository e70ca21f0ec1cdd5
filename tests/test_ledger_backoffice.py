"""Bill corrections (冲红改单) and refunds of prepaid balances, on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date

import pytest
from sqlalchemy import func, insert, select

from config.settings import BusinessConfig
from ledger.corrections import correct_bill
from ledger.errors import Refused
from ledger.synchronous_posting import post
from ledger.refunds import approve_refund, list_refunds, pending_refunds, reject_refund, request_refund
from ledger.synchronous_posting import post
from ledger.schema import (
    allocations, audit_log, bills, journal_entries, journal_lines, outbox, prepaid_movements, refund_decisions,
    refunds,
)
from identity_helpers import operator_env
from ledger_helpers import (
    ENTRY_OF_LINE, T0, add_banks, add_bill, add_customer, assert_ledger_verifies, new_engine, payment, prepaid_of,
)

BANK = "01020000"


@pytest.fixture
def engine(db_url):
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, BANK)
        add_customer(conn, "C1", mobile="13800000001")
        add_customer(conn, "C2", ctype="N", mobile=None)
    yield engine
    engine.dispose()


def bill_rows(conn, customer_no: str = "C1") -> list[tuple]:
    return [tuple(r) for r in conn.execute(
        select(bills.c.bill_id, bills.c.kind, bills.c.principal, bills.c.penalty, bills.c.reverses_bill_id,
               bills.c.replaces_bill_id).where(bills.c.customer_no == customer_no).order_by(bills.c.created_at,
                                                                                            bills.c.bill_id))]


def owing(conn, bill_id: str) -> int:
    b = conn.execute(select(bills).where(bills.c.bill_id == bill_id)).one()
    paid = conn.execute(select(func.coalesce(func.sum(allocations.c.amount), 0))
                        .where(allocations.c.bill_id == bill_id)).scalar_one()
    return int(b.principal) + int(b.penalty) - int(paid)


def entry_lines(conn, kind: str, ref_id: str) -> list[tuple]:
    return sorted(tuple(r) for r in conn.execute(
        select(journal_lines.c.account, journal_lines.c.amount).select_from(journal_lines.join(journal_entries, ENTRY_OF_LINE))
        .where(journal_entries.c.kind == kind, journal_entries.c.ref_id == ref_id)))


# ------------------------------------------------------------------------------------------ corrections

def test_correcting_an_unpaid_bill_keeps_all_three_records(db_url, engine):
    with engine.begin() as conn:
        add_bill(conn, "C1", "202610", 10_000, 200, bill_id="B1")
    result = correct_bill(engine, "B1", principal=8_000, penalty=0, actor="clerk.li", reason="meter misread",
                          due_date=date(2026, 12, 5), now=T0)
    assert (result.reversing_bill_id, result.new_bill_id, result.moved_to_prepaid, result.new_bill_paid) == \
        ("B1R", "B1N1", 0, False)
    with engine.connect() as conn:
        assert bill_rows(conn) == [("B1", "O", 10_000, 200, None, None), ("B1N1", "N", 8_000, 0, None, "B1"),
                                   ("B1R", "R", -10_000, -200, "B1", None)]
        assert conn.execute(select(bills.c.due_date).where(bills.c.bill_id == "B1N1")).scalar_one() == date(2026, 12, 5)
        assert entry_lines(conn, "bill_reversal", "B1R") == [("penalty_income", 200), ("receivable", -10_200),
                                                             ("revenue", 10_000)]
        assert entry_lines(conn, "bill", "B1N1") == [("receivable", 8_000), ("revenue", -8_000)]
        audit = conn.execute(select(audit_log).where(audit_log.c.action == "bill.correct")).one()
        assert (audit.actor, audit.object_id, audit.reason) == ("clerk.li", "B1", "meter misread")
        details = json.loads(audit.details)
        assert details["old"]["principal"] == 10_000 and details["new"]["principal"] == 8_000
        assert conn.execute(select(outbox.c.text).where(outbox.c.ref == "bill:B1N1")).scalar_one().startswith(
            "您好，您(C1)2026年10月的电费为80.00元，请于2026年12月5日前缴纳")
        assert owing(conn, "B1N1") == 8_000
    # the replacement is what the customer owes now
    from ledger.inquiry import inquire
    assert inquire(engine, "C1", T0).total_due == 8_000
    # a bill already reversed, a reversing bill and an unknown bill are refused
    for bill_id, words in (("B1", "already reversed"), ("B1R", "reversing record"), ("NOPE", "no bill")):
        with pytest.raises(Refused, match=words):
            correct_bill(engine, bill_id, principal=1, penalty=0, actor="clerk.li", reason="again")
    # the replacement itself may be corrected; the chain keeps its first bill's name
    again = correct_bill(engine, "B1N1", principal=7_000, penalty=0, actor="clerk.wang", reason="second look")
    assert (again.reversing_bill_id, again.new_bill_id) == ("B1N1R", "B1N2")
    assert_ledger_verifies(db_url)


def _paid_bill(engine, amount: int = 10_000) -> None:
    with engine.begin() as conn:
        add_bill(conn, "C1", "202610", amount, 0, bill_id="B1")
    outcome = post(engine, [payment(BANK, "C1", amount, at=T0)])[0]
    assert outcome.ok, outcome


def test_correcting_a_paid_bill_to_less_pays_the_replacement_and_keeps_the_rest_prepaid(db_url, engine):
    _paid_bill(engine)
    result = correct_bill(engine, "B1", principal=7_000, penalty=0, actor="clerk.li", reason="tariff error", now=T0)
    assert (result.moved_to_prepaid, result.new_bill_paid, result.prepaid_balance) == (10_000, True, 3_000)
    with engine.connect() as conn:
        assert [r[:2] for r in bill_rows(conn)] == [("B1", "O"), ("B1N1", "N"), ("B1R", "R")]
        allocs = conn.execute(select(allocations.c.bill_id, allocations.c.amount, allocations.c.correction_bill_id,
                                     allocations.c.payment_id.is_not(None))
                              .order_by(allocations.c.id)).all()
        assert [tuple(a) for a in allocs] == [("B1", 10_000, None, True), ("B1", -10_000, "B1R", False),
                                              ("B1N1", 7_000, None, False)]
        moves = conn.execute(select(prepaid_movements.c.kind, prepaid_movements.c.amount, prepaid_movements.c.bill_id)
                             .order_by(prepaid_movements.c.id)).all()
        assert [tuple(m) for m in moves] == [("correction", 10_000, "B1"), ("applied", -7_000, "B1N1")]
        assert entry_lines(conn, "correction", "B1") == [("prepaid", -10_000), ("receivable", 10_000)]
        assert owing(conn, "B1N1") == 0 and prepaid_of(conn, "C1") == 3_000
        assert "已缴" in conn.execute(select(outbox.c.text).where(outbox.c.ref == "bill:B1N1")).scalar_one()
    assert_ledger_verifies(db_url)


def test_correcting_a_paid_bill_to_more_leaves_it_unpaid_and_the_money_prepaid(db_url, engine):
    _paid_bill(engine)
    result = correct_bill(engine, "B1", principal=12_000, penalty=100, actor="clerk.li", reason="tariff error",
                          new_bill_id="B1X")
    assert (result.new_bill_id, result.moved_to_prepaid, result.new_bill_paid, result.prepaid_balance) == \
        ("B1X", 10_000, False, 10_000)
    with engine.connect() as conn:
        assert owing(conn, "B1X") == 12_100 and prepaid_of(conn, "C1") == 10_000
        assert owing(conn, "B1") == 10_000  # the cancelled original; its reversal (-10,000) nets it out
    from ledger.inquiry import inquire
    assert inquire(engine, "C1", T0).total_due == 2_100
    with pytest.raises(Refused, match="already taken"):
        with engine.begin() as conn:
            add_bill(conn, "C1", "202611", 500, 0, bill_id="B2")
        correct_bill(engine, "B2", principal=400, penalty=0, actor="clerk.li", reason="x", new_bill_id="B1X")
    assert_ledger_verifies(db_url)


def test_a_bill_with_a_debit_in_flight_is_not_corrected(engine):
    from ledger.debits import create_debit

    with engine.begin() as conn:
        add_bill(conn, "C1", "202610", 5_000, 0, bill_id="B1")
        create_debit(conn, bank_code=BANK, customer_no="C1", account_no="6222000000000001",
                     bills_to_pay=[("B1", 5_000)], at=T0)
    with pytest.raises(Refused, match="direct debit"):
        correct_bill(engine, "B1", principal=4_000, penalty=0, actor="clerk.li", reason="x")


def test_correct_command(sqlite_url, tmp_path):
    engine = new_engine(sqlite_url)
    with engine.begin() as conn:
        add_banks(conn, BANK)
        add_customer(conn, "C1")
        add_bill(conn, "C1", "202610", 10_000, 0, bill_id="B1")
    env = operator_env(engine, "li", ["clerk"], {**os.environ, "GRIDPAY_CONFIG": ""})
    engine.dispose()
    cmd = [sys.executable, "-m", "gridpay", "ledger", "correct", "B1", "--principal", "9000", "--penalty", "50",
           "--reason", "meter misread", "--url", sqlite_url]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "bill B1 reversed by B1R, replaced by B1N1" in done.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 1 and "already reversed" in again.stderr
    assert_ledger_verifies(sqlite_url)


# ------------------------------------------------------------------------------------------ refunds

def _prepay(engine, customer_no: str, amount: int) -> None:
    assert post(engine, [payment(BANK, customer_no, amount, at=T0)])[0].ok


def test_small_refunds_are_paid_at_once(db_url, engine):
    _prepay(engine, "C1", 150_000)
    _prepay(engine, "C2", 1_500_000)
    r = request_refund(engine, "C1", 99_999, actor="clerk.li", reason="moving out", now=T0)
    n = request_refund(engine, "C2", 999_999, actor="clerk.li", reason="overpaid")
    assert (r.status, r.needs_approval, n.status, n.needs_approval) == ("paid", False, "paid", False)
    with engine.connect() as conn:
        assert prepaid_of(conn, "C1") == 50_001 and prepaid_of(conn, "C2") == 500_001
        move = conn.execute(select(prepaid_movements).where(prepaid_movements.c.kind == "refund",
                                                            prepaid_movements.c.customer_no == "C1")).one()
        assert (move.amount, move.refund_id) == (-99_999, r.refund_id)
        assert entry_lines(conn, "refund", str(r.refund_id)) == [("prepaid", 99_999), ("refunds_payable", -99_999)]
        actions = [a for a, in conn.execute(select(audit_log.c.action).where(audit_log.c.object_type == "refund",
                                                                            audit_log.c.object_id == str(r.refund_id))
                                            .order_by(audit_log.c.id))]
        assert actions == ["refund.request", "refund.pay"]
        assert conn.execute(select(func.count()).select_from(refund_decisions)).scalar_one() == 0
    assert pending_refunds(engine) == []
    assert_ledger_verifies(db_url)


def test_large_refunds_wait_for_two_approvals(db_url, engine):
    _prepay(engine, "C1", 300_000)
    _prepay(engine, "C2", 3_000_000)
    r = request_refund(engine, "C1", 100_000, actor="clerk.li", reason="moving out")   # exactly the threshold
    n = request_refund(engine, "C2", 1_000_000, actor="clerk.li", reason="overpaid")
    assert (r.status, r.needs_approval, n.status) == ("pending", True, "pending")
    assert [p.refund_id for p in pending_refunds(engine)] == [r.refund_id, n.refund_id]
    with engine.connect() as conn:
        assert prepaid_of(conn, "C1") == 300_000   # nothing paid yet
    with pytest.raises(Refused, match="another operator"):
        approve_refund(engine, r.refund_id, actor="clerk.li")
    first = approve_refund(engine, r.refund_id, actor="supervisor.zhao", note="checked")
    assert (first.status, first.approvals()) == ("pending", {"accounting": "supervisor.zhao"})
    with pytest.raises(Refused, match="two different people"):
        approve_refund(engine, r.refund_id, actor="supervisor.zhao")
    with pytest.raises(Refused, match="given already"):
        approve_refund(engine, r.refund_id, actor="supervisor.qian", level="accounting")
    approved = approve_refund(engine, r.refund_id, actor="director.sun", note="ok")
    assert (approved.status, approved.decided_by) == ("paid", "director.sun")
    with pytest.raises(Refused, match="already paid"):
        approve_refund(engine, r.refund_id, actor="supervisor.qian")
    with pytest.raises(Refused, match="reason"):
        reject_refund(engine, n.refund_id, actor="supervisor.zhao", reason="")
    rejected = reject_refund(engine, n.refund_id, actor="supervisor.zhao", reason="customer withdrew")
    assert rejected.status == "rejected"
    with pytest.raises(Refused, match="already rejected"):
        approve_refund(engine, n.refund_id, actor="supervisor.qian")
    with engine.connect() as conn:
        assert prepaid_of(conn, "C1") == 200_000 and prepaid_of(conn, "C2") == 3_000_000
        decisions = conn.execute(select(refund_decisions.c.refund_id, refund_decisions.c.level,
                                        refund_decisions.c.decision, refund_decisions.c.decided_by)
                                 .order_by(refund_decisions.c.id)).all()
        assert [tuple(d) for d in decisions] == [(r.refund_id, "accounting", "A", "supervisor.zhao"),
                                                 (r.refund_id, "director", "A", "director.sun"),
                                                 (n.refund_id, "accounting", "J", "supervisor.zhao")]
        reasons = sorted(conn.execute(select(audit_log.c.action, audit_log.c.reason)
                                      .where(audit_log.c.action.in_(["refund.approve", "refund.reject"]))).all())
        assert [tuple(x) for x in reasons] == [("refund.approve", "checked"), ("refund.approve", "ok"),
                                               ("refund.reject", "customer withdrew")]
    assert pending_refunds(engine) == []
    assert [x.status for x in list_refunds(engine, None)] == ["paid", "rejected"]
    assert_ledger_verifies(db_url)


def test_refunds_cannot_exceed_the_balance(db_url, engine):
    _prepay(engine, "C1", 150_000)
    with pytest.raises(Refused, match="150000 fen"):
        request_refund(engine, "C1", 150_001, actor="clerk.li", reason="x")
    big = request_refund(engine, "C1", 120_000, actor="clerk.li", reason="moving out")
    assert big.status == "pending"
    # what a pending refund asks for is not refundable again
    with pytest.raises(Refused, match="pending refunds"):
        request_refund(engine, "C1", 40_000, actor="clerk.li", reason="x")
    # the balance shrinks before approval (a new bill is paid from it): approval is refused
    with engine.begin() as conn:
        add_bill(conn, "C1", "202611", 50_000, 0, bill_id="B9")
    from ledger.posting import apply_prepaid
    with engine.begin() as conn:
        assert apply_prepaid(conn, ["C1"], at=T0, business_date=T0.date(), actor="test") == [("C1", "B9", 50_000)]
    with pytest.raises(Refused, match="cannot be paid"):
        approve_refund(engine, big.refund_id, actor="supervisor.zhao")
    assert pending_refunds(engine)[0].refund_id == big.refund_id
    with pytest.raises(Refused, match="no customer"):
        request_refund(engine, "NOBODY", 1, actor="clerk.li", reason="x")
    with pytest.raises(Refused, match="greater than 0"):
        request_refund(engine, "C1", 0, actor="clerk.li", reason="x")
    assert_ledger_verifies(db_url)


def test_thresholds_come_from_the_configuration(engine):
    _prepay(engine, "C1", 10_000)
    business = BusinessConfig(refund_approval_resident_fen=5_000, refund_approval_nonresident_fen=50_000)
    assert request_refund(engine, "C1", 4_999, actor="a", reason="x", business=business).status == "paid"
    assert request_refund(engine, "C1", 5_000, actor="a", reason="x", business=business).status == "pending"


def test_refund_commands(sqlite_url, tmp_path):
    engine = new_engine(sqlite_url)
    with engine.begin() as conn:
        add_banks(conn, BANK)
        add_customer(conn, "C1")
    _prepay(engine, "C1", 200_000)
    # li asks and may also approve (but not her own request); zhao (accounting) and sun (director) approve
    li = operator_env(engine, "li", ["clerk", "accounting-approver"], {**os.environ, "GRIDPAY_CONFIG": ""})
    zhao = operator_env(engine, "zhao", ["accounting-approver"], li)
    sun = operator_env(engine, "sun", ["director-approver"], li)
    engine.dispose()

    def gridpay(*args, env=li):
        return subprocess.run([sys.executable, "-m", "gridpay", *args, "--url", sqlite_url],
                              capture_output=True, text=True, env=env)

    asked = gridpay("ledger", "refund", "C1", "150000", "--reason", "moving out")
    assert asked.returncode == 0 and "1500.00 yuan" in asked.stdout and "pending" in asked.stdout, asked
    listed = gridpay("ledger", "refunds")
    assert "operator:li" in listed.stdout and "1500.00" in listed.stdout
    same = gridpay("ledger", "approve", "1")
    assert same.returncode == 1 and "asked for a refund cannot approve it" in same.stderr
    first = gridpay("ledger", "approve", "1", env=zhao)                 # the accounting approval
    assert first.returncode == 0 and "waits for the director approval" in first.stdout, first
    twice = gridpay("ledger", "approve", "1", env=zhao)
    assert twice.returncode == 1 and twice.stderr, twice
    ok = gridpay("ledger", "approve", "1", env=sun)                     # the director's: paid
    assert ok.returncode == 0 and "paid" in ok.stdout
    assert "no pending refunds" in gridpay("ledger", "refunds").stdout
    verified = gridpay("ledger", "verify")
    assert verified.returncode == 0 and "OK" in verified.stdout
