"""The billing feed under concurrent writers: several committers (each its own engine, as the
gateway's, the engines' and the back office's processes are) post payments and reversals through
the real posting path at once (the group committer's ``Poster``; reconciliation's bank-file
payments and red reversals in transactions of their own), another keeps numbering batches and
rolling them back, and a reader
polls ``read_feed(after=...)`` all along. The reader must see every seq exactly once, in order, never
a gap (a page always starts right after the last seq it saw and runs on without a hole), and in the
end exactly what was committed; ``ledger verify`` holds."""
from __future__ import annotations

import random
import threading

from sqlalchemy import select

from ledger.billing_feed import read_feed
from ledger.billing_feed.tables import billing_feed_counter
from config.clock import Clock, ManualClock
from ledger.db import make_engine, read_only
from ledger.posting import apply_batch
from ledger.recon.ledger_ops import post_bank_payment, reverse_payment
from ledger.schema import payments, reversals
from ledger_helpers import T0, add_banks, add_bills, add_customers, assert_ledger_verifies, customer_row, new_engine
from ledger_helpers import payment, reversal
from poster_thread import PosterThread

BANK = "0102"
CAL = Clock()
WRITERS = 4
CUSTOMERS = 25          # per writer
ROLLBACKS = 30          # batches numbered and rolled back
OFFICE = [f"BO{i:03d}" for i in range(12)]   # the back office's customers


def customers_of(writer) -> list[str]:
    return [f"W{writer}C{i:03d}" for i in range(CUSTOMERS)]


def write(url: str, writer: int, start: threading.Barrier, posted: list) -> None:
    """Pay every customer of this writer's in batches of 1-5, reversing every third payment in a
    later batch; ``posted``: (kind, payment_id) of what was answered 00."""
    engine = make_engine(url)
    poster = PosterThread(engine, ManualClock(T0))
    rng = random.Random(writer)
    todo = [payment(BANK, c, 10_000) for c in customers_of(writer)]
    undo = []
    try:
        start.wait()
        while todo or undo:
            revs = rng.randint(0 if todo else 1, 2)
            batch = [todo.pop() for _ in range(min(len(todo), rng.randint(1, 5)))] + undo[:revs]
            undo = undo[revs:]
            for p, outcome in zip(batch, poster.post(batch)):
                assert outcome.response_code == "00", (p, outcome)
                is_reversal = hasattr(p, "orig_stan")
                posted.append(("reversal" if is_reversal else "payment", p.customer_no))
                if not is_reversal and int(p.customer_no[-3:]) % 3 == 0:
                    undo.append(reversal(p))
    finally:
        poster.stop()
        engine.dispose()


def roll_back(url: str, start: threading.Barrier) -> None:
    """Batches that take numbers from the counter and are rolled back: they must leave no gap."""
    engine = make_engine(url)
    try:
        start.wait()
        for i in range(ROLLBACKS):
            with engine.connect() as conn:
                conn.begin()
                outcomes = apply_batch(conn, [payment(BANK, f"RB{i % 5}", 10_000)], CAL, T0)
                assert outcomes[0].ok, outcomes
                conn.rollback()
    finally:
        engine.dispose()


def back_office(url: str, start: threading.Barrier, posted: list) -> None:
    """Reconciliation's kinds in transactions of their own, as an operator's commands post them:
    a bank-file payment (补账) of each back-office customer, every other one reversed (red)."""
    engine = make_engine(url)
    try:
        start.wait()
        for i, customer_no in enumerate(OFFICE):
            with engine.begin() as conn:
                payment_id, _ = post_bank_payment(conn, bank_code=BANK, business_date=T0.date(),
                                                  transmitted=f"2026112310{i:04d}", stan=f"{700_000 + i:06d}",
                                                  rrn=f"BO{i:010d}", customer_no=customer_no, amount=10_000,
                                                  actor="clerk.li", now=T0, clock=CAL)
            posted.append(("bank_file_payment", customer_no))
            if i % 2:
                with engine.begin() as conn:
                    reverse_payment(conn, payment_id, actor="clerk.li", now=T0, reason="test", clock=CAL)
                posted.append(("red_reversal", customer_no))
    finally:
        engine.dispose()


def read(url: str, done: threading.Event, seen: list, problems: list) -> None:
    """Poll the feed after the last seq seen until the writers are done and it is read to the end."""
    engine = make_engine(url)
    after = 0
    try:
        while True:
            finished = done.is_set()      # looked at before the read: a read after it sees everything
            with read_only(engine.connect()) as conn, conn.begin():
                rows, after_next = read_feed(conn, after, 7)
            seqs = [r["seq"] for r in rows]
            if seqs != list(range(after + 1, after + 1 + len(rows))):
                problems.append(f"after {after} the reader got {seqs}")
                return
            seen.extend(rows)
            after = after_next
            if finished and not rows:
                return
    finally:
        engine.dispose()


def thread(target, problems: list, *args) -> threading.Thread:
    """A thread whose failure is kept in ``problems`` (an assertion in a thread fails no test by itself)."""
    def run():
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            problems.append(f"{target.__name__}: {exc!r}")
    return threading.Thread(target=run, name=target.__name__)


def test_concurrent_writers_and_a_reader_see_every_change_once_in_order(db_url):
    engine = new_engine(db_url)
    with engine.begin() as conn:
        add_banks(conn, BANK)
        numbers = [c for w in range(WRITERS) for c in customers_of(w)] + [f"RB{i}" for i in range(5)] + OFFICE
        add_customers(conn, [customer_row(c) for c in numbers])
        add_bills(conn, [(c, "202610", 10_000, 0) for c in numbers])
    start, done = threading.Barrier(WRITERS + 2), threading.Event()
    posted: list = []
    seen: list = []
    problems: list = []
    reader = thread(read, problems, db_url, done, seen, problems)
    reader.start()
    workers = [thread(write, problems, db_url, w, start, posted) for w in range(WRITERS)]
    workers.append(thread(roll_back, problems, db_url, start))
    workers.append(thread(back_office, problems, db_url, start, posted))
    for t in workers:
        t.start()
    for t in workers:
        t.join(600)
    done.set()
    reader.join(600)
    assert not reader.is_alive() and not any(t.is_alive() for t in workers)
    assert problems == []
    expected_reversals = WRITERS * len(range(0, CUSTOMERS, 3))
    assert len(posted) == WRITERS * CUSTOMERS + expected_reversals + len(OFFICE) + len(OFFICE) // 2
    with engine.connect() as conn:
        last_seq = conn.execute(select(billing_feed_counter.c.last_seq)).scalar_one()
        payment_ids = set(conn.execute(select(payments.c.payment_id)).scalars())
        reversal_ids = set(conn.execute(select(reversals.c.reversal_id)).scalars())
    assert [r["seq"] for r in seen] == list(range(1, last_seq + 1)) and last_seq == len(posted)
    assert {r["payment_id"] for r in seen if r["kind"] in ("payment", "bank_file_payment")} == payment_ids
    assert {r["reversal_id"] for r in seen if r["kind"] in ("reversal", "red_reversal")} == reversal_ids
    assert sorted((r["kind"], r["customer_no"]) for r in seen) == sorted(posted)
    assert not any(r["customer_no"].startswith("RB") for r in seen)   # rolled back: not there
    assert_ledger_verifies(engine)
    engine.dispose()
