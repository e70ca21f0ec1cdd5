"""The rows a posting locks, and who else waits for them (PostgreSQL). Postings lock their
customers and debits FOR NO KEY UPDATE, and a bank's reconciliation its bank row the same way:
they wait for each other as they must (a reversal's FOR SHARE on the bank row still waits for the
reconciliation closing the bank's day), but no longer for every other transaction's foreign-key
check on those rows (FOR KEY SHARE) - a reconciliation held up all of its bank's payments, and an
uncommitted insert naming a customer (a batch build's debits, an import's bills) held up the
customer's postings."""
from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from config.clock import Clock
from ledger.posting import apply_batch
from ledger.recon.matching import lock_bank_for_closing
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_banks, add_bill, add_customer, assert_ledger_verifies, new_engine, payment, reversal

CAL = Clock()


@pytest.fixture
def ledger(pg_url):
    engine = new_engine(pg_url)
    with engine.begin() as conn:
        add_banks(conn, "0102", "0103")
        for c in ("1001", "1002"):
            add_customer(conn, c)
            add_bill(conn, c, "202610", 10_000)
    yield engine
    assert_ledger_verifies(engine)
    engine.dispose()


def _post_waiting_at_most_1s(engine, postings):
    """The postings in one transaction that gives up on any lock held longer than a second."""
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
        return apply_batch(conn, postings, CAL, T0)


def test_a_banks_reconciliation_holds_up_its_reversals_not_its_payments(ledger):
    first = payment("0102", "1001", 10_000)
    assert post(ledger, [first])[0].response_code == "00"
    closing = ledger.connect()
    tx = closing.begin()
    try:
        lock_bank_for_closing(closing, "0102")   # as reconcile_bank_file holds it while it matches
        out = _post_waiting_at_most_1s(ledger, [payment("0102", "1002", 10_000)])
        assert out[0].response_code == "00"
        with pytest.raises(OperationalError, match="lock timeout"):
            _post_waiting_at_most_1s(ledger, [reversal(first)])
    finally:
        tx.rollback()
        closing.close()
    assert post(ledger, [reversal(first)])[0].response_code == "00"


def test_an_uncommitted_row_naming_a_customer_does_not_hold_up_the_customers_payments(ledger):
    importing = ledger.connect()
    tx = importing.begin()
    try:
        add_bill(importing, "1001", "202611", 12_000)   # checks its customer's row FOR KEY SHARE
        out = _post_waiting_at_most_1s(ledger, [payment("0103", "1001", 10_000)])
        assert out[0].response_code == "00"   # the bill committed before it, the import's not seen
    finally:
        tx.commit()
        importing.close()
    assert post(ledger, [payment("0103", "1001", 12_000)])[0].response_code == "00"
