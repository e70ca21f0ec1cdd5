"""The group committer: one transaction per batch, outcomes only after the commit, failures and races."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import OperationalError

from ledger import migrate
from ledger.business_date import BusinessCalendar
from ledger.db import make_engine
from ledger.group_commit import GroupCommitter
from ledger.postings import inquire
from ledger.schema import allocations, bank_requests, payments
from ledger_helpers import (
    T0, add_banks, add_bills, add_customers, assert_ledger_verifies, customer_row, new_engine, payment, reversal,
)

CAL = BusinessCalendar()


def setup(engine, n: int, prepay: str = "Y", prefix: str = "K") -> list[str]:
    nos = [f"{prefix}{i:04d}" for i in range(n)]
    with engine.begin() as conn:
        add_banks(conn, "0102", "0103")
        add_customers(conn, [customer_row(c, prepay=prepay) for c in nos])
        add_bills(conn, [(c, "202610", 10_000, 0) for c in nos])
    return nos


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.fixture
def engine(db_url):
    e = new_engine(db_url)
    yield e
    e.dispose()


def test_batches_and_hook(engine):
    nos = setup(engine, 300)
    sizes = []
    gc = GroupCommitter(engine, CAL, max_batch=64, max_wait_s=0.005, on_commit=lambda n, s: sizes.append((n, s))).start()
    futs = [gc.submit(payment("0102", c, 10_000)) for c in nos]
    outs = [f.result(timeout=60) for f in futs]
    gc.stop()
    assert {o.response_code for o in outs} == {"00"}
    assert len({o.fields["receipt_no"] for o in outs}) == 300
    assert sum(n for n, _ in sizes) == 300 and max(n for n, _ in sizes) <= 64 and len(sizes) < 300
    assert all(s > 0 for _, s in sizes)
    assert_ledger_verifies(engine)


def test_outcome_only_after_commit(engine, db_url):
    nos = setup(engine, 20)
    other = make_engine(db_url)
    seen = []

    def check(fut):  # runs when the future resolves: another connection must see the payment already
        out = fut.result()
        with other.connect() as conn:
            seen.append(conn.execute(select(func.count()).select_from(payments)
                                     .where(payments.c.receipt_no == out.fields["receipt_no"])).scalar_one())

    gc = GroupCommitter(engine, CAL).start()
    futs = [gc.submit(payment("0102", c, 10_000)) for c in nos]
    for f in futs:
        f.add_done_callback(check)
    for f in futs:
        f.result(timeout=30)
    gc.stop()
    other.dispose()
    assert seen == [1] * 20


def test_stop_drains_and_later_submits_get_96(engine):
    nos = setup(engine, 200)
    gc = GroupCommitter(engine, CAL, max_batch=16).start()
    futs = [gc.submit(payment("0102", c, 10_000)) for c in nos]
    gc.stop(drain=True)
    assert all(f.done() and f.result().response_code == "00" for f in futs)
    assert gc.submit(payment("0102", nos[0], 1)).result().response_code == "96"
    assert_ledger_verifies(engine)


def test_stop_without_drain_answers_queue_96(engine):
    nos = setup(engine, 50)
    gc = GroupCommitter(engine, CAL, max_batch=1).start()
    futs = [gc.submit(payment("0102", c, 10_000)) for c in nos]
    gc.stop(drain=False)
    outs = [f.result(timeout=30) for f in futs]
    ok = sum(o.response_code == "00" for o in outs)
    assert all(o.response_code in ("00", "96") for o in outs)
    assert count(engine, payments) == ok
    assert_ledger_verifies(engine)


def test_database_failure_mid_batch_is_96_for_all_then_recovers(engine):
    nos = setup(engine, 40)
    fail = {"on": True}

    @event.listens_for(engine, "before_cursor_execute")
    def boom(conn, cursor, statement, params, context, executemany):
        if fail["on"] and "INSERT INTO allocations" in statement.replace('"', ""):
            raise OperationalError(statement, params, Exception("injected: database went away"))

    gc = GroupCommitter(engine, CAL, max_batch=64, max_wait_s=0.02).start()
    futs = [gc.submit(payment("0102", c, 10_000)) for c in nos[:20]]
    outs = [f.result(timeout=30) for f in futs]
    assert {o.response_code for o in outs} == {"96"}
    assert count(engine, payments) == 0 and count(engine, bank_requests) == 0   # nothing partly applied
    fail["on"] = False
    futs = [gc.submit(payment("0102", c, 10_000)) for c in nos]                 # recovery, same committer
    outs = [f.result(timeout=30) for f in futs]
    gc.stop()
    assert {o.response_code for o in outs} == {"00"}
    assert count(engine, payments) == 40
    assert_ledger_verifies(engine)


def test_a_bug_in_one_posting_costs_only_that_posting(engine):
    nos = setup(engine, 3)
    bad = payment("0102", nos[1], 10_000)
    object.__setattr__(bad, "received_at", None)     # will blow up while deciding
    gc = GroupCommitter(engine, CAL, max_wait_s=0.05).start()
    futs = [gc.submit(p) for p in (payment("0102", nos[0], 10_000), bad, payment("0102", nos[2], 10_000))]
    outs = [f.result(timeout=30) for f in futs]
    gc.stop()
    assert [o.response_code for o in outs] == ["00", "96", "00"]
    assert_ledger_verifies(engine)


def test_cancelled_while_queued_is_not_posted(sqlite_url):
    engine = new_engine(sqlite_url)
    nos = setup(engine, 3)
    blocker = make_engine(sqlite_url)
    conn = blocker.connect()
    conn.begin()                       # BEGIN IMMEDIATE: the committer's first batch waits for us
    gc = GroupCommitter(engine, CAL, max_batch=1).start()
    first = gc.submit(payment("0102", nos[0], 10_000))
    time.sleep(0.2)
    second = gc.submit(payment("0102", nos[1], 10_000))
    assert second.cancel()
    conn.rollback()
    conn.close()
    assert first.result(timeout=30).response_code == "00"
    gc.stop()
    assert count(engine, payments) == 1
    blocker.dispose()
    engine.dispose()


# ------------------------------------------------------------------------------------- PostgreSQL races

def _race(url, postings_a, postings_b):
    """Two committers, each on its own engine (own connections), fed at the same moment."""
    engines = [make_engine(url), make_engine(url)]
    committers = [GroupCommitter(e, CAL, max_batch=16, max_wait_s=0.002).start() for e in engines]
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def feed(i, postings):
        barrier.wait()
        futs = [committers[i].submit(p) for p in postings]
        results[i] = [f.result(timeout=60) for f in futs]

    threads = [threading.Thread(target=feed, args=(i, ps)) for i, ps in enumerate((postings_a, postings_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in committers:
        c.stop()
    for e in engines:
        e.dispose()
    return results


def test_two_committers_never_pay_a_bill_twice(pg_url):
    engine = new_engine(pg_url)
    nos = setup(engine, 60, prepay="N")
    a, b = _race(pg_url, [payment("0102", c, 10_000) for c in nos], [payment("0103", c, 10_000) for c in nos])
    for x, y in zip(a, b):
        assert sorted((x.response_code, y.response_code)) == ["00", "B1"], (x, y)
    with engine.connect() as conn:
        per_bill = conn.execute(select(allocations.c.bill_id, func.sum(allocations.c.amount))
                                .group_by(allocations.c.bill_id)).all()
    assert len(per_bill) == 60 and {int(s) for _, s in per_bill} == {10_000}
    assert_ledger_verifies(engine)
    engine.dispose()


def test_two_committers_with_prepay_second_becomes_prepaid(pg_url):
    engine = new_engine(pg_url)
    nos = setup(engine, 30, prepay="Y")
    a, b = _race(pg_url, [payment("0102", c, 10_000) for c in nos], [payment("0103", c, 10_000) for c in nos])
    assert all(o.response_code == "00" for o in a + b)
    for c, x, y in zip(nos, a, b):
        assert sorted((x.fields["prepaid_balance"], y.fields["prepaid_balance"])) == [0, 10_000]
        r = inquire(engine, c, T0)
        assert (r.total_due, r.prepaid_balance) == (0, 10_000)
    assert_ledger_verifies(engine)
    engine.dispose()


def test_same_request_on_two_committers_is_posted_once_and_replayed(pg_url):
    """A bank's repeat landing on another gateway process: the unique identity decides, the
    loser's batch is rerun posting by posting, and its repeat replays the winner's answer."""
    engine = new_engine(pg_url)
    nos = setup(engine, 50)
    ps = [payment("0102", c, 10_000) for c in nos[:40]]
    extra = [payment("0103", c, 10_000) for c in nos[40:]]   # innocent bystanders in the same batches
    a, b = _race(pg_url, ps, extra + ps)
    assert {o.response_code for o in b[:10]} == {"00"}
    b = b[10:]
    for x, y in zip(a, b):
        assert x.response_code == y.response_code == "00"
        assert x.fields == y.fields and (x.replayed or y.replayed)
    assert count(engine, payments) == 50
    assert_ledger_verifies(engine)
    engine.dispose()


def test_payment_and_its_reversal_racing_through_two_processes(pg_url):
    """Either the payment is first (posted, then reversed: 00 / 00) or the reversal is (remembered
    orphan 25, the payment declined 12): never a posted payment whose reversal was answered 25.
    The reversal locks its CN customer before looking, so the two serialize on the customer row."""
    engine = new_engine(pg_url)
    nos = setup(engine, 40)
    ps = [payment("0102", c, 10_000) for c in nos]
    a, b = _race(pg_url, ps, [reversal(p, at=p.received_at) for p in ps])
    pairs = {(x.response_code, y.response_code) for x, y in zip(a, b)}
    assert pairs <= {("00", "00"), ("12", "25")}, pairs
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(payments)).scalar_one() == \
            sum(x.response_code == "00" for x in a)
    for c in nos:
        assert inquire(engine, c, T0).total_due == 10_000     # every bill unpaid again, one way or the other
    assert_ledger_verifies(engine)
    engine.dispose()


def test_pg_schema_dropped_under_the_committer_then_restored(pg_server_url):
    schema = f"gp_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    url = f"{pg_server_url}{'&' if '?' in pg_server_url else '?'}options=-csearch_path%3D{schema}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'create schema "{schema}"'))
        engine = new_engine(url)
        nos = setup(engine, 10)
        gc = GroupCommitter(engine, CAL).start()
        assert gc.submit(payment("0102", nos[0], 10_000)).result(timeout=30).response_code == "00"
        with admin.connect() as conn:
            conn.execute(text(f'drop schema "{schema}" cascade'))
            conn.execute(text(f'create schema "{schema}"'))
        futs = [gc.submit(payment("0102", c, 10_000)) for c in nos[1:]]
        assert {f.result(timeout=30).response_code for f in futs} == {"96"}
        migrate.upgrade(url)                          # the database comes back
        setup(engine, 10)
        futs = [gc.submit(payment("0102", c, 10_000)) for c in nos]
        assert {f.result(timeout=30).response_code for f in futs} == {"00"}
        gc.stop()
        assert_ledger_verifies(engine)
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'drop schema if exists "{schema}" cascade'))
        admin.dispose()


def test_pg_connection_killed_mid_batch(pg_url):
    engine = new_engine(pg_url)
    nos = setup(engine, 20)
    admin = make_engine(pg_url)
    kills = {"left": 1}

    @event.listens_for(engine, "before_cursor_execute")
    def kill(conn, cursor, statement, params, context, executemany):
        if kills["left"] and "INSERT INTO allocations" in statement:
            kills["left"] -= 1
            pid = conn.connection.driver_connection.info.backend_pid  # no query: statements may be pipelined
            with admin.connect() as a:
                a.execute(text("select pg_terminate_backend(:p)"), {"p": pid})

    gc = GroupCommitter(engine, CAL, max_wait_s=0.02).start()
    futs = [gc.submit(payment("0102", c, 10_000)) for c in nos[:10]]
    first = [f.result(timeout=30) for f in futs]
    # the broken connection is retried once on a fresh one: nothing was applied by the first try
    assert {o.response_code for o in first} <= {"00", "96"}
    kills["left"] = 3                                 # the database stays broken: 96, nothing applied
    futs = [gc.submit(payment("0102", c, 10_000)) for c in nos[10:]]
    assert {f.result(timeout=30).response_code for f in futs} == {"96"}
    futs = [gc.submit(payment("0102", c, 10_000)) for c in nos[10:]]   # and back
    assert {f.result(timeout=30).response_code for f in futs} == {"00"}
    gc.stop()
    paid = sum(o.response_code == "00" for o in first) + 10
    assert count(engine, payments) == paid
    assert_ledger_verifies(engine)
    admin.dispose()
    engine.dispose()
