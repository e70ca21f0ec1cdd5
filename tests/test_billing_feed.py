"""The billing feed (docs/billing-feed.md), on SQLite and PostgreSQL: every kind of change writes its
row with the right sign, references and paid flag; declines write none and take no number; a rolled
back batch leaves no gap; the daily file round-trips and is the same when written again; ``ledger
verify`` fails on a planted gap or a missing row. Concurrent writers: test_billing_feed_concurrency."""
from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta

import pytest
from sqlalchemy import delete, func, insert, select, update

from config.settings import BusinessConfig
from ledger.billing_feed import read_feed, read_feed_file, write_feed_file
from ledger.billing_feed.tables import billing_feed, billing_feed_counter
from config.clock import Clock, ManualClock
from ledger.corrections import correct_bill
from ledger.db import read_only
from ledger.debits import create_debit, debit_approved, debit_reversed, mark_debit_sent
from ledger.errors import Refused
from ledger.imports import import_file
from ledger.posting import PrepaidRefund, apply_batch
from ledger.recon.ledger_ops import post_bank_payment, reverse_payment
from ledger.refunds import request_refund
from ledger.schema import audit_log, payments, refunds, reversals
from ledger.synchronous_posting import post as post_now
from ledger.verify import verify
from identity_helpers import operator_env
from ledger_helpers import T0, add_banks, add_bill, add_customer, assert_ledger_verifies, new_engine, payment, reversal

BANK = "0102"
CAL = Clock()
DAY = date(2026, 11, 23)          # T0's business date
DAY_END = T0.replace(hour=15)     # 23:00 in Shanghai


@pytest.fixture
def ledger(db_url):
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, BANK)
        add_customer(conn, "C1")
        add_customer(conn, "C2", prepay="N")
        add_bill(conn, "C1", "202609", 10_000, 100)
        add_bill(conn, "C1", "202610", 20_000, 0)
        add_bill(conn, "C2", "202610", 5_000, 0)
    yield engine
    assert_ledger_verifies(engine)
    engine.dispose()


def post(engine, postings, at=T0):
    """Posted as the ledger posts, the batch stamped T0 unless told."""
    return post_now(engine, postings, ManualClock(at))


def feed(engine, after: int = 0) -> list[dict]:
    with read_only(engine.connect()) as conn:
        return read_feed(conn, after, 10_000)[0]


def last_seq(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(billing_feed_counter.c.last_seq)).scalar_one()


def after_state(row: dict) -> tuple:
    return (row["customer_owing_fen"], row["prepaid_balance_fen"], row["customer_due_fen"], row["customer_paid"])


def test_counter_payment_and_its_reversal(ledger):
    p = payment(BANK, "C1", 35_000)
    assert post(ledger, [p])[0].ok
    assert post(ledger, [reversal(p)])[0].ok
    paid, undone = feed(ledger)
    with ledger.connect() as conn:
        payment_id = conn.execute(select(payments.c.payment_id)).scalar_one()
        reversal_id = conn.execute(select(reversals.c.reversal_id)).scalar_one()
    assert (paid["seq"], paid["kind"], paid["customer_no"], paid["amount_fen"], paid["payment_id"],
            paid["bank_code"], paid["channel"], paid["bill_id"]) == (1, "payment", "C1", 35_000, payment_id, BANK,
                                                                     "C", None)
    assert after_state(paid) == (0, 4_900, 0, "Y")     # both bills paid, the rest prepaid
    assert (undone["seq"], undone["kind"], undone["amount_fen"], undone["payment_id"], undone["reversal_id"]) == (
        2, "reversal", -35_000, payment_id, reversal_id)
    assert after_state(undone) == (30_100, 0, 30_100, "N")
    assert paid["business_date"] == undone["business_date"] == DAY and paid["at"] == T0
    assert last_seq(ledger) == 2


def test_declines_write_no_row_and_take_no_number(ledger):
    outcomes = post(ledger, [payment(BANK, "NOBODY", 100), payment(BANK, "C1", 100), payment("9999", "C1", 30_100)])
    assert [o.response_code for o in outcomes] == ["14", "13", "58"]
    assert feed(ledger) == [] and last_seq(ledger) == 0


def test_two_changes_of_one_customer_in_one_batch_each_show_the_state_after_them(ledger):
    p = payment(BANK, "C1", 30_100)
    assert all(o.ok for o in post(ledger, [p, payment(BANK, "C2", 5_000), reversal(p)]))
    rows = feed(ledger)
    assert [(r["seq"], r["kind"], r["customer_no"]) for r in rows] == [(1, "payment", "C1"), (2, "payment", "C2"),
                                                                       (3, "reversal", "C1")]
    assert [after_state(r) for r in rows] == [(0, 0, 0, "Y"), (0, 0, 0, "Y"), (30_100, 0, 30_100, "N")]


def test_debit_approved_then_reversed(ledger):
    with ledger.begin() as conn:
        debit_id = create_debit(conn, bank_code=BANK, customer_no="C1", account_no="6222000011112222",
                                bills_to_pay=[("BC1202609", 10_100)], at=T0)
        mark_debit_sent(conn, debit_id, transmitted="1123100000", stan="900001", rrn="DRRN00000001",
                        business_date=DAY, at=T0)
    assert debit_approved(ledger, debit_id, T0).ok
    assert debit_reversed(ledger, debit_id, T0, "bank reversed it").ok
    paid, undone = feed(ledger)
    assert (paid["kind"], paid["amount_fen"], paid["debit_id"], paid["channel"]) == ("debit_payment", 10_100,
                                                                                    debit_id, "D")
    assert after_state(paid) == (20_000, 0, 20_000, "N")   # the other bill, not in the debit, still owes
    assert (undone["kind"], undone["amount_fen"], undone["debit_id"], undone["payment_id"]) == (
        "debit_reversal", -10_100, debit_id, paid["payment_id"])
    assert after_state(undone) == (30_100, 0, 30_100, "N")


def test_bank_file_payment_and_red_reversal(ledger):
    with ledger.begin() as conn:
        payment_id, _ = post_bank_payment(conn, bank_code=BANK, business_date=DAY, transmitted="20261123100000",
                                          stan="000123", rrn="RRN000000123", customer_no="C2", amount=5_000,
                                          actor="clerk.li", now=T0, clock=CAL)
    with ledger.begin() as conn:
        reversal_id = reverse_payment(conn, payment_id, actor="clerk.li", now=T0, reason="bank file", clock=CAL)
    paid, undone = feed(ledger)
    assert (paid["kind"], paid["amount_fen"], paid["payment_id"]) == ("bank_file_payment", 5_000, payment_id)
    assert after_state(paid) == (0, 0, 0, "Y")
    assert (undone["kind"], undone["amount_fen"], undone["reversal_id"]) == ("red_reversal", -5_000, reversal_id)
    assert after_state(undone) == (5_000, 0, 5_000, "N")


def test_refund_out_of_prepaid(ledger):
    assert post(ledger, [payment(BANK, "C1", 40_000)])[0].ok           # 9,900 prepaid
    refund = request_refund(ledger, "C1", 900, actor="clerk.li", reason="moved out", business=BusinessConfig(),
                            now=T0)
    row = feed(ledger, after=1)[0]
    assert (row["kind"], row["amount_fen"], row["refund_id"], row["bill_id"]) == ("refund", -900, refund.refund_id,
                                                                                 None)
    assert after_state(row) == (0, 9_000, 0, "Y")


def test_a_refund_in_a_mixed_batch_sees_what_the_batch_did_and_every_open_bill(ledger):
    """apply_batch takes any mix: a refund after an overpayment of the same customer in one batch
    refunds from the balance the payment left; one after a reversal that found nothing (its CN read,
    not its bills) still knows all the customer's bills."""
    with ledger.begin() as conn:
        ids = conn.execute(insert(refunds).returning(refunds.c.id), [
            {"customer_no": c, "amount": 100, "reason": "test", "requested_by": "clerk.li", "requested_at": T0,
             "needs_approval": "N"} for c in ("C1", "C1")]).scalars().all()
    over = payment(BANK, "C1", 30_600)                               # 500 into prepaid
    lost = reversal(payment(BANK, "C1", 5_000))                     # its payment never came: 25
    with ledger.begin() as conn:
        out = apply_batch(conn, [over, PrepaidRefund(ids[0], "C1", 100, "clerk.li", "test")], CAL, T0)
        assert [o.response_code for o in out] == ["00", "00"]
    with ledger.begin() as conn:
        add_bill(conn, "C1", "202611", 7_000)
    with ledger.begin() as conn:
        out = apply_batch(conn, [lost, PrepaidRefund(ids[1], "C1", 100, "clerk.li", "test")], CAL, T0)
        assert [o.response_code for o in out] == ["25", "00"]
    paid, first, second = feed(ledger)
    assert after_state(paid) == (0, 500, 0, "Y") and after_state(first) == (0, 400, 0, "Y")
    assert (second["kind"], second["amount_fen"]) == ("refund", -100)
    assert after_state(second) == (7_000, 300, 6_700, "N")


def test_correction_of_a_paid_bill_moves_the_money_and_prepaid_pays_the_replacement(ledger):
    assert post(ledger, [payment(BANK, "C1", 30_100)])[0].ok
    result = correct_bill(ledger, "BC1202610", principal=15_000, penalty=0, actor="clerk.li", reason="tariff",
                          now=T0, clock=CAL)
    moved, applied = feed(ledger, after=1)
    assert (moved["kind"], moved["bill_id"], moved["amount_fen"], moved["correction_bill_id"],
            moved["bill_owing_fen"], moved["bill_paid"]) == ("correction", "BC1202610", -20_000,
                                                             result.reversing_bill_id, 0, "Y")
    assert after_state(moved) == (15_000, 20_000, 0, "Y")   # the replacement owes; prepaid covers it
    assert (applied["kind"], applied["bill_id"], applied["amount_fen"], applied["bill_owing_fen"],
            applied["bill_paid"]) == ("prepaid_applied", result.new_bill_id, 15_000, 0, "Y")
    assert after_state(applied) == (0, 5_000, 0, "Y")


def test_an_import_whose_prepaid_pays_the_new_bill(ledger, tmp_path):
    assert post(ledger, [payment(BANK, "C1", 40_000)])[0].ok           # 9,900 prepaid
    bills = tmp_path / "bills.csv"
    bills.write_text("customer_no,period,bill_id,principal,penalty,due_date\n"
                     "C1,202611,BNEW1,9000,0,2026-12-20\nC1,202612,BNEW2,9000,0,2027-01-20\n", encoding="utf-8")
    assert not import_file(ledger, "bills", bills, "clerk.li", now=T0, clock=CAL).errors
    row, = feed(ledger, after=1)       # whole bills only: the second is not covered
    assert (row["kind"], row["bill_id"], row["amount_fen"], row["bill_paid"], row["payment_id"]) == (
        "prepaid_applied", "BNEW1", 9_000, "Y", None)
    assert after_state(row) == (9_000, 900, 8_100, "N")


def test_a_rolled_back_batch_leaves_no_gap(ledger):
    assert post(ledger, [payment(BANK, "C2", 5_000)])[0].ok
    with ledger.connect() as conn:
        conn.begin()
        assert apply_batch(conn, [payment(BANK, "C1", 30_100)], CAL, T0)[0].ok
        assert read_feed(conn, 1, 10)[0][0]["seq"] == 2        # numbered inside the transaction ...
        conn.rollback()                                       # ... and gone with it
    assert post(ledger, [payment(BANK, "C1", 30_100)])[0].ok
    assert [r["seq"] for r in feed(ledger)] == [1, 2] and last_seq(ledger) == 2



def test_a_callers_writes_go_before_the_feeds_numbered_rows(ledger):
    """A process with rows of its own (the debit engine's writer) hands ``apply_batch`` its writes:
    nothing is sent until its one ``flush``, and there the feed's numbered statement - the one that
    locks the counter to the COMMIT - is the last, though the caller's rows were added after it."""
    from sqlalchemy import event

    from runtime.bulk_sql import Writes

    sent = []
    with ledger.connect() as conn:
        conn.begin()
        writes = Writes(conn)
        event.listen(conn, "before_cursor_execute", lambda *a: sent.append(a[2]))
        assert apply_batch(conn, [payment(BANK, "C2", 5_000)], CAL, T0, writes)[0].ok
        assert not [sql for sql in sent if "INSERT" in sql.upper()], "nothing written before the caller's flush"
        writes.insert(audit_log, [{"at": T0, "actor": "system:test", "action": "test.note", "object_type": "test",
                                   "object_id": "1", "details": "{}", "reason": ""}])
        writes.flush()
        conn.commit()
    inserts = [sql for sql in sent if "INSERT" in sql.upper()]
    assert "billing_feed" in inserts[-1] and "audit_log" in inserts[-2], inserts
    assert [r["seq"] for r in feed(ledger)] == [1]


def test_a_flush_that_commits_frees_the_counter_before_the_caller_hears_back(ledger):
    """The posting processes send the COMMIT with their last writes (``Writes.flush(commit=True)``):
    when the flush returns the batch is committed and the counter's lock free - another session
    takes it at once and sees the rows - though the caller's own commit is still to come (it finds
    nothing left to do). Before, the lock stayed held until the caller had read the answers and sent
    its COMMIT: as long as a niced process, or a thread waiting for the interpreter lock, took."""
    from runtime.bulk_sql import Writes

    with ledger.connect() as conn:
        conn.begin()
        writes = Writes(conn)
        assert apply_batch(conn, [payment(BANK, "C2", 5_000)], CAL, T0, writes)[0].ok
        writes.flush(commit=True)
        if ledger.dialect.name == "postgresql":
            with ledger.connect() as other:
                other.exec_driver_sql("SET lock_timeout = '2s'")   # held, this fails rather than waits
                assert other.execute(update(billing_feed_counter).values(last_seq=billing_feed_counter.c.last_seq)
                                     .returning(billing_feed_counter.c.last_seq)).scalar_one() == 1
                assert other.execute(select(func.count()).select_from(billing_feed)).scalar_one() == 1
                other.rollback()
        conn.commit()
    assert [r["seq"] for r in feed(ledger)] == [1] and last_seq(ledger) == 1


def test_verify_fails_on_a_gap_and_on_a_missing_row(ledger):
    assert all(o.ok for o in post(ledger, [payment(BANK, "C1", 30_100), payment(BANK, "C2", 5_000)]))
    with ledger.begin() as conn:
        conn.execute(update(billing_feed_counter).values(last_seq=3))
    assert any("numbers are missing" in f for f in verify(ledger))
    with ledger.begin() as conn:
        conn.execute(update(billing_feed_counter).values(last_seq=2))
        conn.execute(update(billing_feed).where(billing_feed.c.seq == 2).values(seq=3))
    failures = verify(ledger)
    assert any("seq 1..3, but the counter gave out 1..2" in f for f in failures), failures
    with ledger.begin() as conn:
        conn.execute(delete(billing_feed).where(billing_feed.c.seq == 3))
        conn.execute(update(billing_feed_counter).values(last_seq=1))
        missing = conn.execute(select(payments.c.payment_id).where(payments.c.customer_no == "C2")).scalar_one()
    assert verify(ledger) == [f"billing feed: payment {missing} (payment, customer C2, 5000 fen) has no feed row"]
    row = {**feed(ledger)[0], "seq": 2, "customer_no": "C2", "amount_fen": 5_000, "payment_id": missing}
    with ledger.begin() as conn:    # the test's planted damage undone, for the fixture's verify
        conn.execute(billing_feed.insert(), row)
        conn.execute(update(billing_feed_counter).values(last_seq=2))


def test_the_daily_file_round_trips_and_is_the_same_written_again(ledger, tmp_path):
    # a batch stamped just after the day's end commits first (seq 1), one stamped just before it
    # commits after (seq 2): both go with the day, in seq order; the next day starts at 3
    assert post(ledger, [payment(BANK, "C2", 5_000, at=DAY_END + timedelta(seconds=1))],
                DAY_END + timedelta(seconds=1))[0].ok
    assert post(ledger, [payment(BANK, "C1", 30_100)], DAY_END - timedelta(seconds=1))[0].ok
    assert post(ledger, [reversal(payment(BANK, "C1", 1))], DAY_END + timedelta(hours=2))
    p = payment(BANK, "C1", 5_000, at=DAY_END + timedelta(hours=2))
    assert post(ledger, [p], DAY_END + timedelta(hours=2))[0].ok
    with pytest.raises(Refused, match="not over yet"):
        write_feed_file(ledger, tmp_path, DAY, clock=CAL, now=DAY_END - timedelta(seconds=1), actor="ops")
    written = write_feed_file(ledger, tmp_path, DAY, clock=CAL, now=DAY_END + timedelta(hours=3), actor="ops")
    assert written.path == tmp_path / "outgoing" / "billing_feed_20261123_1-2.txt"
    assert (written.first, written.last, written.count, written.total) == (1, 2, 2, 35_100)
    data = written.path.read_bytes()
    assert data.startswith(b"H|BILLING_FEED|20261123|1|2\nD|1|") and data.endswith(b"\nT|2|35100\n")
    assert read_feed_file(written.path) == (DAY, 1, 2, feed(ledger)[:2])
    again = write_feed_file(ledger, tmp_path, DAY, clock=CAL, now=DAY_END + timedelta(days=2), actor="ops")
    assert again.path.read_bytes() == data and not again.superseded
    next_day = write_feed_file(ledger, tmp_path, DAY + timedelta(days=1), clock=CAL,
                               now=DAY_END + timedelta(days=2), actor="ops")
    assert (next_day.first, next_day.last, next_day.path.name) == (3, 3, "billing_feed_20261124_3-3.txt")
    empty = write_feed_file(ledger, tmp_path, DAY + timedelta(days=5), clock=CAL,
                            now=DAY_END + timedelta(days=6), actor="ops")
    assert (empty.first, empty.last, empty.count) == (4, 3, 0) and read_feed_file(empty.path)[3] == []
    assert not list((tmp_path / "outgoing").glob(".*"))       # no part file left behind
    with ledger.connect() as conn:
        audits = conn.execute(select(audit_log.c.actor, audit_log.c.object_id)
                              .where(audit_log.c.action == "feed.export")).all()
    assert [tuple(a) for a in audits] == [("ops", "2026-11-23")] * 2 + [("ops", "2026-11-24"), ("ops", "2026-11-28")]


def test_the_drop_watcher_writes_each_ended_days_file_once(ledger, tmp_path):
    """Nobody has to run the export: the drop directory's watcher writes the file of each business
    date that ended (from the feed's first day on, catching up a week), once."""
    from ledger.recon.watch import DropWatcher

    clock = ManualClock(DAY_END - timedelta(hours=1))
    watcher = DropWatcher(ledger, tmp_path / "drop", actor="system:test-watch", clock=clock)
    outgoing = tmp_path / "drop" / "outgoing"
    watcher.poll_once()
    assert not outgoing.exists() or not list(outgoing.iterdir())      # no feed rows yet: no files
    assert post(ledger, [payment(BANK, "C1", 30_100)], clock.now())[0].ok
    watcher.poll_once()
    assert not list(outgoing.glob("*.txt"))                           # its day is not over
    clock.set(DAY_END + timedelta(days=2, minutes=5))                  # the watcher was down two days
    watcher.poll_once()
    watcher.poll_once()
    assert sorted(p.name for p in outgoing.glob("*.txt")) == ["billing_feed_20261123_1-1.txt",
                                                             "billing_feed_20261124_2-1.txt",
                                                             "billing_feed_20261125_2-1.txt"]
    assert read_feed_file(outgoing / "billing_feed_20261123_1-1.txt")[3] == feed(ledger)
    with ledger.connect() as conn:
        audits = conn.execute(select(audit_log.c.actor, audit_log.c.object_id)
                              .where(audit_log.c.action == "feed.export")).all()
    assert [tuple(a) for a in audits] == [("system:test-watch", day) for day in ("2026-11-23", "2026-11-24",
                                                                             "2026-11-25")]


def test_a_damaged_file_is_refused(tmp_path):
    path = tmp_path / "billing_feed_20261123_1-1.txt"
    path.write_bytes(b"H|BILLING_FEED|20261123|1|1\nT|1|100\n")
    with pytest.raises(Refused, match="trailer does not agree"):
        read_feed_file(path)
    path.write_bytes(b"H|BILLING_FEED|20261123|1|1\n")
    with pytest.raises(Refused, match="not a whole billing feed file"):
        read_feed_file(path)


def test_read_feed_refuses_bad_arguments(ledger):
    with ledger.connect() as conn:
        for after, limit in ((-1, 10), (0, 0), (0, 10_001), ("5", 10), (True, 10)):
            with pytest.raises(Refused):
                read_feed(conn, after, limit)


def gridpay(*args, env=None):
    return subprocess.run([sys.executable, "-m", "gridpay", "ledger", "feed", *args], capture_output=True, text=True,
                          env=env)


def test_operator_commands(db_url, ledger, tmp_path):
    assert all(o.ok for o in post(ledger, [payment(BANK, "C1", 30_100), payment(BANK, "C2", 5_000)]))
    shown = gridpay("show", "--url", db_url, "--after", "1")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("D|2|") and shown.stdout.count("\n") == 1 and "next after: 2" in shown.stderr
    bad = gridpay("show", "--url", db_url, "--limit", "0")
    assert bad.returncode == 1 and "limit must be a whole number >= 1" in bad.stderr
    out = gridpay("export", "2026-11-23", "--url", db_url, "--dir", str(tmp_path),
                  env=operator_env(ledger, "zhang", ["operations"]))
    assert out.returncode == 0, out.stderr
    assert "billing_feed_20261123_1-2.txt" in out.stdout and "2 rows, 35100 fen" in out.stdout
    assert read_feed_file(tmp_path / "outgoing" / "billing_feed_20261123_1-2.txt")[3] == feed(ledger)
    with ledger.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)
                            .where(audit_log.c.action == "feed.export", audit_log.c.actor == "operator:zhang")).scalar() == 1
