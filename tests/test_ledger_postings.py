"""Inquiry, counter payment, reversal and duplicate rules (docs/spec/INTERFACE.md §4.3-§4.7), on SQLite and PostgreSQL."""
from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from sqlalchemy import func, insert, select

from config.clock import Clock
from ledger.inquiry import inquire
from ledger.posting import Outcome, apply_batch
from ledger.synchronous_posting import post
from ledger.schema import (
    allocations, audit_log, bank_requests, bills, business_day_closures, journal_entries, journal_lines, orphan_reversals,
    outbox, payments, prepaid_movements, reversals,
)
from ledger_helpers import (
    T0, add_banks, add_bill, add_bills, add_customer, assert_ledger_verifies, new_engine, payment, prepaid_of,
    reversal,
)

CAL = Clock()


@pytest.fixture
def ledger(db_url):
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, "0102", "0103", "102")
        add_customer(conn, "1001")                                   # two bills
        add_bills(conn, [("1001", "202609", 10_000, 100), ("1001", "202610", 20_000, 0)])
        add_customer(conn, "1002", prepay="N", mobile=None)          # one bill, no prepayment, no SMS
        add_bill(conn, "1002", "202610", 5_000)
        add_customer(conn, "1003")                                   # nothing billed
        add_customer(conn, "1004", status="S")
        add_bill(conn, "1004", "202610", 5_000)
        add_customer(conn, "1005", status="C")
        add_customer(conn, "1006", prepay="N")                       # nothing billed, no prepayment
    yield engine
    assert_ledger_verifies(engine)
    engine.dispose()


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def prepaid(engine, customer_no) -> int:
    with engine.connect() as conn:
        return prepaid_of(conn, customer_no)


def one(engine, posting) -> Outcome:
    return post(engine, [posting], CAL)[0]


# ------------------------------------------------------------------------------------- inquiry

def test_inquiry_lists_unpaid_bills_oldest_first_and_changes_nothing(ledger):
    before = count(ledger, audit_log), count(ledger, bank_requests)
    r = inquire(ledger, "1001", T0)
    assert r.response_code == "00"
    assert r.customer_name == "客户1001"
    assert r.bills == [("202609", 10_000, 100), ("202610", 20_000, 0)]
    assert r.total_due == 30_100 and r.prepaid_balance == 0
    assert r.business_date == date(2026, 11, 23)
    assert (count(ledger, audit_log), count(ledger, bank_requests)) == before


def test_inquiry_codes(ledger):
    assert inquire(ledger, "9999", T0).response_code == "14"
    assert inquire(ledger, "1004", T0).response_code == "B2"
    assert inquire(ledger, "1005", T0).response_code == "B2"
    r = inquire(ledger, "1003", T0)
    assert (r.response_code, r.bills, r.total_due) == ("00", [], 0)


def test_inquiry_worker_answers_a_batch_with_one_statement(ledger, db_url):
    """The gateway's reader answers the inquiries that arrive together with one statement - one
    snapshot for bills and prepaid balances - sent outside any transaction on PostgreSQL (no BEGIN
    and COMMIT round trips); each answer is the one a single inquiry gets."""
    from sqlalchemy import event

    from ledger.inquiry import InquiryWorker

    worker = InquiryWorker({"url": db_url, "timezone": CAL.timezone, "cutoff": CAL.cutoff})
    sent = []
    event.listen(worker.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: sent.append(
                     (statement, conn.connection.driver_connection.autocommit if conn.dialect.name == "postgresql"
                      else None)))
    try:
        wanted = ["1001", "9999", "1004", "1003", "1002", "1001"]
        got = worker.process(wanted)
    finally:
        worker.close()
    reads = [(statement, autocommit) for statement, autocommit in sent if statement != "BEGIN"]  # SQLite's own
    assert len(reads) == 1
    assert reads[0][1] is (True if db_url.startswith("postgresql") else None)
    singles = {c: inquire(ledger, c, T0) for c in set(wanted)}
    assert [r.response_code for r in got] == ["00", "14", "B2", "00", "00", "00"]
    assert [(r.bills, r.total_due, r.prepaid_balance, r.customer_name) for r in got] == [
        (singles[c].bills, singles[c].total_due, singles[c].prepaid_balance, singles[c].customer_name) for c in wanted]


def test_inquiry_worker_keeps_one_connection_and_takes_a_new_one_when_it_dies(ledger, db_url):
    """The reader answers batch after batch on one connection (taking one from the pool and giving
    it back each batch cost more than the statement), and sees what was committed between them. On
    PostgreSQL its backend terminated between two batches, the next batch is answered all the same,
    on a new connection."""
    from sqlalchemy import text

    from ledger.inquiry import InquiryWorker

    worker = InquiryWorker({"url": db_url, "timezone": CAL.timezone, "cutoff": CAL.cutoff})
    try:
        first = worker.process(["1003", "1002"])
        conn = worker.conn
        add_bill_later = new_engine(db_url)
        with add_bill_later.begin() as c:
            add_bill(c, "1003", "202610", 7_000)
        add_bill_later.dispose()
        second = worker.process(["1003"])
        assert worker.conn is conn
        assert [r.total_due for r in first] == [0, 5_000] and second[0].total_due == 7_000
        if db_url.startswith("postgresql"):
            pid = conn.connection.driver_connection.info.backend_pid
            admin = new_engine(db_url)
            with admin.connect() as c:
                assert c.execute(text("select pg_terminate_backend(:p)"), {"p": pid}).scalar() is True
            admin.dispose()
            third = worker.process(["1002", "1003"])
            assert [(r.response_code, r.total_due) for r in third] == [("00", 5_000), ("00", 7_000)]
            assert worker.conn is not None and worker.conn.connection.driver_connection.info.backend_pid != pid
    finally:
        worker.close()


def test_inquiry_total_due_subtracts_prepaid_never_below_zero(ledger):
    with ledger.begin() as conn:
        conn.execute(insert(prepaid_movements), [
            {"customer_no": "1001", "amount": 500, "kind": "excess", "created_at": T0},
            {"customer_no": "1003", "amount": 700, "kind": "excess", "created_at": T0}])
        conn.execute(insert(journal_entries), {"entry_id": 9_000, "business_date": T0.date(), "kind": "test",
                                               "ref_type": "test", "ref_id": "x", "actor": "t", "created_at": T0})
        conn.execute(insert(journal_lines), [
            {"entry_id": 9_000, "business_date": T0.date(), "account": "bank_clearing:0102", "amount": 1_200},
            {"entry_id": 9_000, "business_date": T0.date(), "account": "prepaid", "amount": -1_200}])
    assert inquire(ledger, "1001", T0).total_due == 29_600
    r = inquire(ledger, "1003", T0)
    assert (r.total_due, r.prepaid_balance) == (0, 700)
    with ledger.begin() as conn:  # keep verify() happy: the test money above came from no payment
        conn.execute(insert(journal_entries), {"entry_id": 9_001, "business_date": T0.date(), "kind": "test",
                                               "ref_type": "test", "ref_id": "y", "actor": "t", "created_at": T0})
        conn.execute(insert(journal_lines), [
            {"entry_id": 9_001, "business_date": T0.date(), "account": "bank_clearing:0102", "amount": -1_200},
            {"entry_id": 9_001, "business_date": T0.date(), "account": "prepaid", "amount": 1_200}])
        conn.execute(insert(prepaid_movements), [   # the set-up's own kind back out (a refund is in the billing feed)
            {"customer_no": "1001", "amount": -500, "kind": "excess", "created_at": T0},
            {"customer_no": "1003", "amount": -700, "kind": "excess", "created_at": T0}])


# ------------------------------------------------------------------------------------- payment

def test_payment_pays_all_bills_oldest_first_with_receipt_journal_sms_audit(ledger):
    p = payment("0102", "1001", 30_100)
    out = one(ledger, p)
    assert out.response_code == "00", out
    rn = out.fields["receipt_no"]
    assert rn.startswith("R20261123") and rn.isalnum() and len(rn) <= 20
    assert out.fields["prepaid_balance"] == 0 and out.fields["business_date"] == "2026-11-23"
    assert inquire(ledger, "1001", T0).bills == []
    with ledger.connect() as conn:
        allocs = conn.execute(select(allocations.c.bill_id, allocations.c.amount).order_by(allocations.c.id)).all()
        assert [tuple(a) for a in allocs] == [("B1001202609", 10_100), ("B1001202610", 20_000)]
        pay = conn.execute(select(payments)).one()
        assert (pay.channel, pay.method, pay.receipt_no, pay.amount) == ("C", "01", rn, 30_100)
        lines = conn.execute(select(journal_lines.c.account, journal_lines.c.amount)
                             .join(journal_entries, journal_entries.c.entry_id == journal_lines.c.entry_id)
                             .where(journal_entries.c.ref_type == "payment")).all()
        assert sorted(map(tuple, lines)) == [("bank_clearing:0102", 30_100), ("receivable", -30_100)]
        sms = conn.execute(select(outbox)).one()
        assert sms.kind == "payment" and sms.ref == f"payment:{pay.payment_id}" and "2026年9月、2026年10月" in sms.text
        audit = conn.execute(select(audit_log).where(audit_log.c.action == "payment.post")).one()
        assert audit.actor == "bank:0102"
        req = conn.execute(select(bank_requests)).one()
        assert (req.response_code, req.mti, req.processing_code) == ("00", "0200", "500000")


def test_payment_excess_becomes_prepaid_then_used_by_next_payment(ledger):
    out = one(ledger, payment("0102", "1001", 40_000))
    assert out.response_code == "00" and out.fields["prepaid_balance"] == 9_900
    with ledger.begin() as conn:
        add_bill(conn, "1001", "202611", 15_000)
    r = inquire(ledger, "1001", T0)
    assert (r.bills, r.total_due, r.prepaid_balance) == ([("202611", 15_000, 0)], 5_100, 9_900)
    assert one(ledger, payment("0102", "1001", 5_000)).response_code == "13"
    out = one(ledger, payment("0103", "1001", 5_100))
    assert out.response_code == "00" and out.fields["prepaid_balance"] == 0
    assert inquire(ledger, "1001", T0).bills == []
    with ledger.connect() as conn:
        kinds = conn.execute(select(prepaid_movements.c.kind, prepaid_movements.c.amount)
                             .order_by(prepaid_movements.c.id)).all()
    assert [tuple(k) for k in kinds] == [("excess", 9_900), ("applied", -9_900)]


def test_prepayment_with_nothing_due(ledger):
    out = one(ledger, payment("0102", "1003", 8_000))
    assert out.response_code == "00" and out.fields["prepaid_balance"] == 8_000
    with ledger.connect() as conn:
        assert "预存电费80.00元已到账" in conn.execute(select(outbox.c.text)).scalar_one()


@pytest.mark.parametrize("customer,amount,code", [
    ("9999", 100, "14"), ("1004", 5_000, "B2"), ("1005", 100, "B2"), ("1006", 100, "B1"),
    ("1001", 30_099, "13"), ("1003", 0, "13"), ("1002", 4_999, "13"),
])
def test_payment_declines(ledger, customer, amount, code):
    out = one(ledger, payment("0102", customer, amount))
    assert out.response_code == code, out
    assert out.detail
    assert count(ledger, payments) == 0 and count(ledger, allocations) == 0 and count(ledger, audit_log) == 0
    assert count(ledger, bank_requests, bank_requests.c.response_code == code) == 1


def test_payment_after_everything_paid_is_b1_without_prepay(ledger):
    assert one(ledger, payment("0102", "1002", 5_000)).response_code == "00"
    assert one(ledger, payment("0102", "1002", 5_000)).response_code == "B1"


def test_cheque_needs_cheque_number_and_method_checked(ledger):
    assert one(ledger, payment("0102", "1001", 30_100, method="03")).response_code == "30"
    assert one(ledger, payment("0102", "1001", 30_100, method="07")).response_code == "30"
    out = one(ledger, payment("0102", "1001", 30_100, method="03", cheque_no="CQ123456"))
    assert out.response_code == "00"
    with ledger.connect() as conn:
        assert conn.execute(select(payments.c.method, payments.c.cheque_no)).one() == ("03", "CQ123456")


def test_unknown_bank_is_58(ledger):
    assert one(ledger, payment("0999", "1001", 30_100)).response_code == "58"


# ------------------------------------------------------------------------------------- duplicates

def test_repeat_replays_and_changes_nothing(ledger):
    p = payment("0102", "1001", 30_100)
    first = one(ledger, p)
    rows = {t.name: count(ledger, t) for t in (payments, allocations, journal_lines, outbox, audit_log, bank_requests)}
    again = one(ledger, p)
    assert again.replayed and not first.replayed
    assert (again.response_code, again.fields, again.detail) == (first.response_code, first.fields, first.detail)
    assert {t.name: count(ledger, t) for t in (payments, allocations, journal_lines, outbox, audit_log,
                                                 bank_requests)} == rows


def test_repeat_of_a_decline_gets_the_same_decline(ledger):
    p = payment("0102", "1001", 100)
    first = one(ledger, p)
    assert first.response_code == "13"
    with ledger.begin() as conn:   # even though the same request would now be decided otherwise
        add_bill(conn, "1003", "202610", 100)
    again = one(ledger, p)
    assert again.replayed and (again.response_code, again.detail) == ("13", first.detail)


def test_same_identity_different_content_is_94(ledger):
    p = payment("0102", "1001", 30_100, stan="000777")
    assert one(ledger, p).response_code == "00"
    other = payment("0102", "1003", 500, stan="000777", transmitted=p.transmitted)
    out = one(ledger, other)
    assert out.response_code == "94" and not out.replayed
    assert count(ledger, payments) == 1 and count(ledger, bank_requests) == 1


def test_identity_is_per_bank_and_year(ledger):
    p = payment("0102", "1001", 30_100, stan="000777")
    assert one(ledger, p).response_code == "00"
    # another bank, same 7 and 11: a different request
    assert one(ledger, payment("0103", "1003", 500, stan="000777", transmitted=p.transmitted)).response_code == "00"
    # a year later, same 7 and 11: a different request
    later = payment("0102", "1003", 600, stan="000777", transmitted=p.transmitted, at=T0 + timedelta(days=365))
    assert one(ledger, later).response_code == "00"


def test_rrn_reused_on_same_business_date_is_94(ledger):
    assert one(ledger, payment("0102", "1001", 30_100, rrn="RRN000000001")).response_code == "00"
    out = one(ledger, payment("0102", "1003", 500, rrn="RRN000000001"))
    assert out.response_code == "94" and "RRN" in out.detail
    # another business date, or another bank: fine
    assert one(ledger, payment("0102", "1003", 500, rrn="RRN000000001", at=T0 + timedelta(days=1))).response_code == "00"
    assert one(ledger, payment("0103", "1003", 500, rrn="RRN000000001")).response_code == "00"


def test_rrn_of_any_financial_request_answered_or_declined_is_94_for_another(ledger):
    """§4.7: payments and reversals, answered or declined, take their RRN for the bank and day; a
    reversal carries its own or its payment's (field 90): one of another payment gets 94."""
    declined = payment("0102", "1001", 1, rrn="RRN000000001")
    assert one(ledger, declined).response_code == "13"
    again = one(ledger, payment("0102", "1001", 30_100, rrn="RRN000000001"))
    assert again.response_code == "94" and "RRN" in again.detail
    p = payment("0102", "1001", 30_100, rrn="RRN000000002")
    q = payment("0102", "1002", 5_000, rrn="RRN000000003")
    assert [one(ledger, x).response_code for x in (p, q)] == ["00", "00"]
    assert one(ledger, reversal(q, rrn="RRN000000002")).response_code == "94"   # p's RRN
    assert one(ledger, reversal(p, rrn="RRN000000004")).response_code == "00"   # one of its own
    assert one(ledger, reversal(p, rrn="RRN000000002")).response_code == "00"   # its payment's: already reversed
    assert one(ledger, payment("0102", "1003", 500, rrn="RRN000000004")).response_code == "94"
    orphan = reversal(payment("0102", "1003", 500), rrn="RRN000000005")
    assert one(ledger, orphan).response_code == "25"
    assert one(ledger, reversal(q, rrn="RRN000000005")).response_code == "94"
    assert one(ledger, payment("0103", "1003", 500, rrn="RRN000000001")).response_code == "00"   # another bank
    assert count(ledger, payments) == 3 and count(ledger, reversals) == 1


def test_a_reversal_with_its_payments_rrn_before_the_payment_still_declines_it_with_12(ledger):
    """§4.5 over §4.7: the late original carries the RRN its reversal took; it is the same
    payment's, so the original gets the 12 of a payment reversed before it arrived, not 94."""
    p = payment("0102", "1001", 30_100, rrn="RRN000000001")
    assert one(ledger, reversal(p)).response_code == "25"
    late = one(ledger, p)
    assert late.response_code == "12" and "reversed" in late.detail


def test_repeats_replay_their_answer_whatever_their_rrn(ledger):
    declined = payment("0102", "1001", 1, rrn="RRN000000001")
    reused = payment("0102", "1003", 500, rrn="RRN000000001")
    p = payment("0102", "1001", 30_100, rrn="RRN000000002")
    r = reversal(p, rrn="RRN000000003")
    first = [one(ledger, x) for x in (declined, reused, p, r)]
    assert [o.response_code for o in first] == ["13", "94", "00", "00"]
    again = [one(ledger, x) for x in (declined, reused, p, r)]
    assert all(o.replayed for o in again)
    assert [(o.response_code, o.fields, o.detail) for o in again] == [(o.response_code, o.fields, o.detail) for o in first]


def test_rrn_checks_inside_one_batch(ledger):
    p = payment("0102", "1001", 30_100, rrn="RRN000000001")
    q = payment("0102", "1002", 5_000, rrn="RRN000000002")
    outs = post(ledger, [payment("0102", "1003", 0, rrn="RRN000000001"), p, q, reversal(q, rrn="RRN000000001"),
                         reversal(q), payment("0103", "1003", 500, rrn="RRN000000001")], CAL)
    assert [o.response_code for o in outs] == ["13", "94", "00", "94", "00", "00"]


def test_a_concurrent_request_with_the_same_rrn_is_94(pg_url):
    """PostgreSQL: a request whose RRN another transaction takes meanwhile (here a decline, which
    makes no payment row) waits for it, fails on request_rrns' key and is decided again: 94."""
    import threading
    import time as _time

    engine = new_engine(pg_url)
    with engine.begin() as conn:
        add_banks(conn, "0102")
        add_customer(conn, "C1")
        add_customer(conn, "C2")
        add_bill(conn, "C1", "202610", 10_000)
    first = engine.connect()
    tx = first.begin()
    assert apply_batch(first, [payment("0102", "C1", 1, rrn="RRN000000009")], CAL, T0)[0].response_code == "13"
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(
        r=post(engine, [payment("0102", "C2", 500, rrn="RRN000000009")], CAL)[0]))
    worker.start()
    _time.sleep(0.5)
    tx.commit()
    first.close()
    worker.join(30)
    assert outcome["r"].response_code == "94"
    assert count(engine, payments) == 0
    assert_ledger_verifies(engine)
    engine.dispose()


def test_duplicates_inside_one_batch(ledger):
    p = payment("0102", "1001", 30_100, stan="000001")
    clash = payment("0102", "1003", 100, stan="000001", transmitted=p.transmitted)
    rrn_clash = payment("0102", "1003", 100, rrn=p.rrn)
    outs = post(ledger, [p, p, clash, rrn_clash], CAL)
    assert [o.response_code for o in outs] == ["00", "00", "94", "94"]
    assert outs[1].replayed and outs[1].fields == outs[0].fields
    assert count(ledger, payments) == 1


def test_unique_constraints_back_the_identity(ledger):
    from sqlalchemy.exc import IntegrityError

    one(ledger, payment("0102", "1001", 30_100, stan="000123", rrn="R1"))
    with ledger.connect() as conn:
        row = dict(conn.execute(select(payments)).mappings().one())
    for change in ({"rrn": "R2", "receipt_no": "X1"}, {"stan": "000124", "receipt_no": "X2"},
                   {"stan": "000125", "rrn": "R3"}):
        dup = {k: v for k, v in row.items() if k != "payment_id"} | change
        with pytest.raises(IntegrityError):
            with ledger.begin() as conn:
                conn.execute(insert(payments), dup)


# ------------------------------------------------------------------------------------- reversal

def test_reversal_makes_bills_unpaid_again_by_new_records(ledger):
    p = payment("0102", "1001", 40_000)
    paid = one(ledger, p)
    with ledger.connect() as conn:
        pay_row = dict(conn.execute(select(payments)).mappings().one())
    out = one(ledger, reversal(p))
    assert out.response_code == "00", out
    assert out.fields["receipt_no"] == paid.fields["receipt_no"] and out.fields["prepaid_balance"] == 0
    r = inquire(ledger, "1001", T0)
    assert r.total_due == 30_100 and r.prepaid_balance == 0
    with ledger.connect() as conn:
        assert dict(conn.execute(select(payments)).mappings().one()) == pay_row  # untouched
        rev = conn.execute(select(reversals)).one()
        assert (rev.amount, rev.source, rev.payment_id) == (40_000, "B", pay_row["payment_id"])
        negs = conn.execute(select(allocations.c.amount).where(allocations.c.reversal_id == rev.reversal_id)).scalars()
        assert sorted(negs) == [-20_000, -10_100]
        assert conn.execute(select(prepaid_movements.c.amount).where(prepaid_movements.c.kind == "reversal")).scalar() == -9_900
        assert conn.execute(select(outbox.c.kind).where(outbox.c.ref == f"reversal:{rev.reversal_id}")).scalar() == "reversal"
        assert conn.execute(select(journal_entries.c.actor).where(journal_entries.c.kind == "reversal")).scalar() == "bank:0102"


def test_reversal_original_32_compared_as_number(ledger):
    p = payment("102", "1001", 30_100)
    assert one(ledger, p).response_code == "00"
    rev = reversal(p)
    assert rev.orig_bank_code == "00000000102"
    assert one(ledger, rev).response_code == "00"


def test_reversal_amount_must_match(ledger):
    p = payment("0102", "1001", 30_100)
    one(ledger, p)
    assert one(ledger, reversal(p, amount=30_000)).response_code == "13"
    assert count(ledger, reversals) == 0


def test_reversal_twice_answers_00_and_posts_once(ledger):
    p = payment("0102", "1001", 30_100)
    one(ledger, p)
    assert one(ledger, reversal(p)).response_code == "00"
    second = one(ledger, reversal(p))           # a different reversal request for the same payment
    assert second.response_code == "00" and not second.replayed
    assert count(ledger, reversals) == 1


def test_reversal_repeat_0421_replays(ledger):
    p = payment("0102", "1001", 30_100)
    one(ledger, p)
    r = reversal(p)
    first = one(ledger, r)
    again = one(ledger, r)  # 0421 normalised to the 0420's content by the caller
    assert again.replayed and again.fields == first.fields and count(ledger, reversals) == 1


def test_reversal_of_unknown_original_is_25_and_remembered(ledger):
    p = payment("0102", "1001", 30_100)
    rev = reversal(p)
    out = one(ledger, rev)
    assert out.response_code == "25"
    assert count(ledger, orphan_reversals) == 1
    late = one(ledger, p)
    assert late.response_code == "12" and "reversed" in late.detail
    assert count(ledger, payments) == 0 and count(ledger, allocations) == 0
    assert inquire(ledger, "1001", T0).total_due == 30_100
    assert one(ledger, p).replayed                          # a repeat of the late original: same 12
    assert one(ledger, rev).response_code == "25"           # a repeat of the reversal: same 25
    assert count(ledger, orphan_reversals) == 1


def test_orphan_then_original_inside_one_batch(ledger):
    p = payment("0102", "1001", 30_100)
    outs = post(ledger, [reversal(p, at=p.received_at), p], CAL)
    assert [o.response_code for o in outs] == ["25", "12"]
    assert count(ledger, payments) == 0


def test_reversal_after_business_date_closed_is_12(ledger):
    p = payment("0102", "1001", 30_100)
    one(ledger, p)
    with ledger.begin() as conn:
        conn.execute(insert(business_day_closures), {"bank_code": "0102", "business_date": date(2026, 11, 23),
                                                     "closed_at": T0, "closed_by": "recon"})
    out = one(ledger, reversal(p, at=T0 + timedelta(days=1)))
    assert out.response_code == "12" and "reconciled" in out.detail
    assert count(ledger, reversals) == 0


def test_reversal_in_the_batch_of_its_payment_on_a_closed_day_is_12_as_apart(ledger):
    """A closed business date is closed to reversals whether the payment was committed before or
    is in the same batch (found by the posting simulation, seed 6018 with today closed)."""
    with ledger.begin() as conn:
        conn.execute(insert(business_day_closures), {"bank_code": "0102", "business_date": date(2026, 11, 23),
                                                     "closed_at": T0, "closed_by": "recon"})
    apart = payment("0102", "1001", 30_100)
    assert one(ledger, apart).response_code == "00"
    assert one(ledger, reversal(apart)).response_code == "12"
    together = payment("0102", "1002", 5_000)
    outs = post(ledger, [together, reversal(together)], CAL)
    assert [o.response_code for o in outs] == ["00", "12"] and "reconciled" in outs[1].detail
    assert count(ledger, reversals) == 0
    assert_ledger_verifies(ledger)


def test_reversal_closure_of_another_bank_or_date_does_not_matter(ledger):
    p = payment("0102", "1001", 30_100)
    one(ledger, p)
    with ledger.begin() as conn:
        conn.execute(insert(business_day_closures), [
            {"bank_code": "0103", "business_date": date(2026, 11, 23), "closed_at": T0, "closed_by": "recon"},
            {"bank_code": "0102", "business_date": date(2026, 11, 22), "closed_at": T0, "closed_by": "recon"}])
    assert one(ledger, reversal(p)).response_code == "00"


def test_reversal_when_its_prepaid_was_consumed_is_12(ledger):
    """The rule where the spec is silent: the prepaid balance a payment created may not be taken
    back once later bills consumed it; the reversal is declined (12 + ER) and left to reconciliation."""
    p = payment("0102", "1001", 40_000)      # 9,900 into prepaid
    one(ledger, p)
    with ledger.begin() as conn:
        add_bill(conn, "1001", "202611", 15_000)
    one(ledger, payment("0102", "1001", 5_100))   # consumes the 9,900
    out = one(ledger, reversal(p))
    assert out.response_code == "12" and "prepaid" in out.detail
    assert count(ledger, reversals) == 0
    # a payment whose excess is still there reverses fine
    q = payment("0102", "1003", 1_000)
    one(ledger, q)
    assert one(ledger, reversal(q)).response_code == "00"
    assert prepaid(ledger, "1003") == 0


def positions(engine) -> dict:
    """What a payment and its reversal may change: what each bill has been paid, each customer's
    prepaid balance and each journal account's balance per customer (zeros left out)."""
    paid = select(func.coalesce(func.sum(allocations.c.amount), 0)).where(allocations.c.bill_id == bills.c.bill_id)
    with engine.connect() as conn:
        return {
            "bills": dict(conn.execute(select(bills.c.bill_id, paid.scalar_subquery())).all()),
            "prepaid": {c: s for c, s in conn.execute(select(prepaid_movements.c.customer_no, func.sum(
                prepaid_movements.c.amount)).group_by(prepaid_movements.c.customer_no)).all() if s},
            "journal": {(a, c): s for a, c, s in conn.execute(select(
                journal_lines.c.account, journal_lines.c.customer_no, func.sum(journal_lines.c.amount))
                .group_by(journal_lines.c.account, journal_lines.c.customer_no)).all() if s},
        }


def records(engine) -> dict[str, set]:
    with engine.connect() as conn:
        return {t.name: set(map(tuple, conn.execute(select(t)).all()))
                for t in (payments, allocations, prepaid_movements, journal_entries, journal_lines)}


PRIOR_PREPAID = {  # customer 1001 has 9,900 prepaid and a new bill of 15,000 (5,100 due) before the payment
    "used all of its money on bills": ("1001", 5_100, 0),
    "used prepaid and made prepaid": ("1001", 8_000, 2_900),
    "only made prepaid": ("1003", 1_000, 1_000),
    "used no prepaid": ("1002", 5_000, 0),
}


@pytest.mark.parametrize("case", PRIOR_PREPAID)
@pytest.mark.parametrize("together", [False, True], ids=["apart", "one batch"])
def test_reversal_restores_bills_prepaid_and_journal_exactly(ledger, case, together):
    """§4.5: prepaid the payment used comes back, prepaid it made goes; bills, prepaid balance and
    journal are as before the payment, by records added (none edited or deleted)."""
    one(ledger, payment("0102", "1001", 40_000))                 # 9,900 prepaid
    with ledger.begin() as conn:
        add_bill(conn, "1001", "202611", 15_000)
    customer, amount, excess = PRIOR_PREPAID[case]
    before, kept = positions(ledger), records(ledger)
    p = payment("0103", customer, amount)
    outs = post(ledger, [p, reversal(p)], CAL) if together else [one(ledger, p), one(ledger, reversal(p))]
    assert [o.response_code for o in outs] == ["00", "00"], outs
    assert outs[0].fields["prepaid_balance"] == excess
    assert outs[1].fields["prepaid_balance"] == before["prepaid"].get(customer, 0)
    assert positions(ledger) == before
    after = records(ledger)
    assert all(kept[name] <= after[name] for name in kept)
    with ledger.connect() as conn:
        rev = conn.execute(select(reversals.c.reversal_id)).scalar_one()
        moved = conn.execute(select(func.sum(prepaid_movements.c.amount))
                             .where(prepaid_movements.c.reversal_id == rev)).scalar()
    used = 9_900 if customer == "1001" else 0
    assert (moved or 0) == used - excess


def test_reconciliations_red_reversal_gives_back_the_prepaid_used_too(ledger):
    from ledger.recon.ledger_ops import reverse_payment

    one(ledger, payment("0102", "1001", 40_000))                 # 9,900 prepaid
    with ledger.begin() as conn:
        add_bill(conn, "1001", "202611", 15_000)
    before = positions(ledger)
    assert one(ledger, payment("0103", "1001", 5_100)).response_code == "00"
    with ledger.connect() as conn:
        paid = conn.execute(select(func.max(payments.c.payment_id))).scalar_one()
    with ledger.begin() as conn:
        reverse_payment(conn, paid, actor="op", now=T0, reason="bank file shows it reversed", clock=CAL)
    assert positions(ledger) == before
    r = inquire(ledger, "1001", T0)
    assert (r.bills, r.total_due, r.prepaid_balance) == ([("202611", 15_000, 0)], 5_100, 9_900)


def test_reversal_by_another_bank_or_for_another_customer_is_12(ledger):
    p = payment("0102", "1001", 30_100)
    one(ledger, p)
    assert one(ledger, reversal(p, bank="0103")).response_code == "12"
    assert one(ledger, reversal(p, customer_no="1003")).response_code == "12"
    assert count(ledger, reversals) == 0


def test_reversal_naming_another_banks_payment_that_never_arrived_is_25_and_not_kept(ledger):
    """§4.5: no original found is 25, whoever asks; the 12 for another bank needs the original."""
    p = payment("0102", "1001", 30_100)
    out = one(ledger, reversal(p, bank="0103"))
    assert out.response_code == "25", out
    assert count(ledger, orphan_reversals) == 0        # it could not have reversed 0102's payment
    assert one(ledger, p).response_code == "00"


def test_reversal_when_its_prepaid_was_used_and_made_up_since_is_12(ledger):
    """The prepaid a payment made paid a bill; a later prepayment brought the balance back above it:
    it has still been used (§4.5), and taking it away would leave that bill paid by other money."""
    p = payment("0102", "1001", 40_000)                # 9,900 prepaid
    one(ledger, p)
    with ledger.begin() as conn:
        add_bill(conn, "1001", "202611", 15_000)
    assert one(ledger, payment("0102", "1001", 5_100)).response_code == "00"    # uses the 9,900
    assert one(ledger, payment("0103", "1001", 20_000)).fields["prepaid_balance"] == 20_000
    out = one(ledger, reversal(p))
    assert out.response_code == "12" and "prepaid" in out.detail
    assert count(ledger, reversals) == 0


def test_reversal_when_prepaid_was_used_only_above_what_it_made_is_00(ledger):
    one(ledger, payment("0102", "1003", 500))          # 500 prepaid before
    p = payment("0102", "1003", 300)                    # 800
    one(ledger, p)
    with ledger.begin() as conn:
        add_bill(conn, "1003", "202611", 100)
    assert one(ledger, payment("0103", "1003", 1)).fields["prepaid_balance"] == 701    # uses 100 of it
    out = one(ledger, reversal(p))
    assert out.response_code == "00" and out.fields["prepaid_balance"] == 401


def test_reversal_after_the_payment_that_used_its_prepaid_was_reversed_is_00(ledger):
    """A reversal undoes its payment exactly, so a use of prepaid that was reversed never counts."""
    p = payment("0102", "1003", 1_000)
    one(ledger, p)
    with ledger.begin() as conn:
        add_bill(conn, "1003", "202611", 800)
    q = payment("0103", "1003", 1)                      # uses 800 of p's 1,000
    one(ledger, q)
    assert one(ledger, reversal(q)).fields["prepaid_balance"] == 1_000
    out = one(ledger, reversal(p))
    assert out.response_code == "00" and out.fields["prepaid_balance"] == 0
    assert inquire(ledger, "1003", T0).bills == [("202611", 800, 0)]


def test_reversal_of_a_payment_whose_prepaid_paid_bill_was_corrected_is_12(ledger):
    from ledger.corrections import correct_bill

    one(ledger, payment("0102", "1001", 40_000))       # 9,900 prepaid
    with ledger.begin() as conn:
        add_bill(conn, "1001", "202611", 5_000)
    p = payment("0103", "1001", 1_000)                  # the bill paid from prepaid, 1,000 more prepaid
    one(ledger, p)
    correct_bill(ledger, "B1001202611", principal=4_000, penalty=0, actor="op", reason="meter misread",
                 clock=CAL, now=T0)
    out = one(ledger, reversal(p))
    assert out.response_code == "12" and "corrected" in out.detail
    assert count(ledger, reversals) == 0


def test_payment_and_its_reversal_in_one_batch_and_payment_again(ledger):
    p = payment("0102", "1001", 30_100)
    q = payment("0103", "1001", 30_100)
    outs = post(ledger, [p, reversal(p), q], CAL)
    assert [o.response_code for o in outs] == ["00", "00", "00"]
    assert outs[1].fields["receipt_no"] == outs[0].fields["receipt_no"]
    assert inquire(ledger, "1001", T0).total_due == 0 and prepaid(ledger, "1001") == 0


def test_same_customer_twice_in_one_batch(ledger):
    a = payment("0102", "1001", 30_100)
    b = payment("0103", "1001", 30_100)
    c = payment("0102", "1002", 5_000)
    d = payment("0103", "1002", 5_000)
    outs = post(ledger, [a, b, c, d], CAL)
    assert [o.response_code for o in outs] == ["00", "00", "00", "B1"]
    assert outs[1].fields["prepaid_balance"] == 30_100     # nothing due any more: all of b is prepaid
    with ledger.connect() as conn:
        per_bill = dict(conn.execute(select(allocations.c.bill_id, func.sum(allocations.c.amount))
                                     .group_by(allocations.c.bill_id)).all())
    assert per_bill == {"B1001202609": 10_100, "B1001202610": 20_000, "B1002202610": 5_000}


def test_stored_response_is_json_with_er(ledger):
    one(ledger, payment("0102", "1001", 1))
    with ledger.connect() as conn:
        stored = json.loads(conn.execute(select(bank_requests.c.response_fields)).scalar_one())
    assert stored["ER"].startswith("amount 1 is less") and stored["business_date"] == "2026-11-23"


def test_business_date_rolls_at_cutoff(ledger):
    late = T0.replace(hour=15, minute=30)      # 23:30 in Shanghai: next business date
    out = one(ledger, payment("0102", "1001", 30_100, at=late))
    assert out.fields["business_date"] == "2026-11-24" and out.fields["receipt_no"].startswith("R20261124")


def test_apply_batch_is_all_in_callers_transaction(ledger):
    with pytest.raises(RuntimeError):
        with ledger.begin() as conn:
            outs = apply_batch(conn, [payment("0102", "1001", 30_100)], CAL, T0)
            assert outs[0].response_code == "00"
            raise RuntimeError("roll back")
    assert count(ledger, payments) == 0 and count(ledger, bank_requests) == 0


def test_reversal_waits_for_a_reconciliation_closing_its_day(pg_url):
    """PostgreSQL: a reversal arriving while reconciliation closes the day is decided after the
    closure commits (12), never accepted into a day already being reconciled."""
    import threading
    import time as _time

    from sqlalchemy import insert as _insert, select as _select

    from ledger.schema import banks as _banks, business_day_closures as _closures
    from ledger.synchronous_posting import post as _post
    from ledger_helpers import T0, add_banks, add_bill, add_customer, new_engine, payment, reversal

    engine = new_engine(pg_url)
    with engine.begin() as conn:
        add_banks(conn, "0102")
        add_customer(conn, "C1")
        add_bill(conn, "C1", "202610", 10_000)
    pay = payment("0102", "C1", 10_000)
    assert _post(engine, [pay])[0].response_code == "00"
    closing = engine.connect()
    tx = closing.begin()
    closing.execute(_select(_banks.c.bank_code).where(_banks.c.bank_code == "0102").with_for_update()).all()
    closing.execute(_insert(_closures), {"bank_code": "0102", "business_date": T0.date(), "closed_at": T0,
                                         "closed_by": "recon", "recon_run_id": None})
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(r=_post(engine, [reversal(pay)])[0]))
    worker.start()
    _time.sleep(0.5)  # let the reversal reach the bank row while the day is being closed
    tx.commit()
    closing.close()
    worker.join(30)
    assert outcome["r"].response_code == "12"
    engine.dispose()
