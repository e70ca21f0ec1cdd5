"""The group commit: one transaction per batch, outcomes only after the commit, failures and races.

Batching and answers-after-commit through the runner production uses (``BatchProcess`` with
``PostingWorker``, as ``gateway.ledger_port`` starts it); failures and races through the same
``Poster`` in the test's own process (``poster_thread``), where the test can reach the engine."""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import pytest_twisted
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.exc import OperationalError
from twisted.internet import defer, reactor

from ledger import migrate
from runtime.worker_process import BatchProcess, NotStarted
from config.clock import Clock
from ledger.db import make_engine
from ledger.inquiry import inquire
from ledger.schema import allocations, bank_requests, payments
from ledger_helpers import (
    T0, add_banks, add_bills, add_customers, assert_ledger_verifies, customer_row, new_engine, payment, reversal,
)
from poster_thread import PosterThread

CAL = Clock()


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


def posting_worker(url: str, **extra) -> BatchProcess:
    """The posting worker as the gateway starts it (gateway.ledger_port)."""
    config = {"url": url, "statement_timeout_s": 5.0, "timezone": "Asia/Shanghai", "cutoff": "23:00"}
    return BatchProcess(reactor, "ledger.group_commit:PostingWorker", config, name="test-committer",
                        **{"max_batch": 64, "max_wait_s": 0.002, **extra})


@pytest.fixture
def engine(db_url):
    e = new_engine(db_url)
    yield e
    e.dispose()


@pytest_twisted.ensureDeferred
async def test_batches_and_hook(engine, db_url):
    nos = setup(engine, 300)
    sizes = []
    gc = posting_worker(db_url, max_batch=64, max_wait_s=0.005, on_batch=lambda n, s: sizes.append((n, s)))
    await gc.start()
    try:
        outs = await defer.gatherResults([gc.submit(payment("0102", c, 10_000)) for c in nos])
    finally:
        await gc.stop()
    assert {o.response_code for o in outs} == {"00"}
    assert len({o.fields["receipt_no"] for o in outs}) == 300
    assert sum(n for n, _ in sizes) == 300 and max(n for n, _ in sizes) <= 64 and len(sizes) < 300
    assert all(s > 0 for _, s in sizes)
    assert_ledger_verifies(engine)


@pytest_twisted.ensureDeferred
async def test_outcome_only_after_commit(engine, db_url):
    nos = setup(engine, 20)
    other = make_engine(db_url)
    seen = []

    def check(out):  # runs when the outcome arrives: another connection must see the payment already
        with other.connect() as conn:
            seen.append(conn.execute(select(func.count()).select_from(payments)
                                     .where(payments.c.receipt_no == out.fields["receipt_no"])).scalar_one())
        return out

    gc = posting_worker(db_url, max_wait_s=0.001)
    await gc.start()
    try:
        await defer.gatherResults([gc.submit(payment("0102", c, 10_000)).addCallback(check) for c in nos])
    finally:
        await gc.stop()
    other.dispose()
    assert seen == [1] * 20


@pytest_twisted.ensureDeferred
async def test_stop_without_drain_answers_queue_96(engine, db_url):
    nos = setup(engine, 50)
    gc = posting_worker(db_url, max_batch=1)
    await gc.start()
    futs = [gc.submit(payment("0102", c, 10_000)) for c in nos]
    await gc.stop(drain=False)
    outs = []
    for ok, result in await defer.DeferredList(futs, consumeErrors=True):
        # the gateway answers 96 for a posting that never began (gateway.ledger_port)
        outs.append(result if ok else SimpleNamespace(response_code="96" if result.check(NotStarted) else "?"))
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

    gc = PosterThread(engine, CAL)
    futs = gc.submit([payment("0102", c, 10_000) for c in nos[:20]])
    outs = [f.result(timeout=30) for f in futs]
    assert {o.response_code for o in outs} == {"96"}
    assert count(engine, payments) == 0 and count(engine, bank_requests) == 0   # nothing partly applied
    fail["on"] = False
    futs = gc.submit([payment("0102", c, 10_000) for c in nos])                 # recovery, same committer
    outs = [f.result(timeout=30) for f in futs]
    gc.stop()
    assert {o.response_code for o in outs} == {"00"}
    assert count(engine, payments) == 40
    assert_ledger_verifies(engine)


def test_a_bug_in_one_posting_costs_only_that_posting(engine):
    nos = setup(engine, 3)
    bad = payment("0102", nos[1], 10_000)
    object.__setattr__(bad, "received_at", None)     # will blow up while deciding
    gc = PosterThread(engine, CAL)
    futs = gc.submit([payment("0102", nos[0], 10_000), bad, payment("0102", nos[2], 10_000)])
    outs = [f.result(timeout=30) for f in futs]
    gc.stop()
    assert [o.response_code for o in outs] == ["00", "96", "00"]
    assert_ledger_verifies(engine)


def test_pg_a_value_the_database_refuses_fails_only_its_own_posting(pg_url):
    """A NUL byte that got past the checks (PostgreSQL refuses it in text): the batch is halved
    down to that posting, which alone gets 96; its neighbours, other banks' included, are posted."""
    engine = new_engine(pg_url)
    nos = setup(engine, 12)
    ps = [payment("0102" if i % 2 else "0103", c, 10_000) for i, c in enumerate(nos)]
    ps[5] = dataclasses.replace(ps[5], terminal_id="T\x0001")
    gc = PosterThread(engine, CAL)
    outs = gc.post(ps, timeout=30)
    gc.stop()
    assert [o.response_code for o in outs] == ["00"] * 5 + ["96"] + ["00"] * 6
    assert "refused this request's data" in outs[5].detail
    assert gc.batches == 1 and count(engine, payments) == 11
    assert_ledger_verifies(engine)
    engine.dispose()


def test_a_data_error_in_one_posting_costs_only_that_posting(engine):
    """The same rule in both dialects, with the database's refusal injected for one customer."""
    from sqlalchemy.exc import DataError

    nos = setup(engine, 9)

    @event.listens_for(engine, "before_cursor_execute")
    def refuse(conn, cursor, statement, params, context, executemany):
        if "INSERT INTO payments" in statement.replace('"', "") and nos[7] in str(params):
            raise DataError(statement, params, Exception("injected: value refused"))

    gc = PosterThread(engine, CAL)
    outs = gc.post([payment("0102", c, 10_000) for c in nos], timeout=30)
    gc.stop()
    assert [o.response_code for o in outs] == ["00"] * 7 + ["96", "00"]
    assert count(engine, payments) == 8
    assert_ledger_verifies(engine)


# ------------------------------------------------------------------------------------- PostgreSQL races

def _race(url, postings_a, postings_b):
    """Two committers, each on its own engine (own connections), fed at the same moment in batches of 16."""
    engines = [make_engine(url), make_engine(url)]
    committers = [PosterThread(e, CAL) for e in engines]
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def feed(i, postings):
        barrier.wait()
        futs = committers[i].submit(postings, max_batch=16)
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
        gc = PosterThread(engine, CAL)
        assert gc.submit([payment("0102", nos[0], 10_000)])[0].result(timeout=30).response_code == "00"
        with admin.connect() as conn:
            conn.execute(text(f'drop schema "{schema}" cascade'))
            conn.execute(text(f'create schema "{schema}"'))
        futs = gc.submit([payment("0102", c, 10_000) for c in nos[1:]])
        assert {f.result(timeout=30).response_code for f in futs} == {"96"}
        migrate.upgrade(url)                          # the database comes back
        setup(engine, 10)
        futs = gc.submit([payment("0102", c, 10_000) for c in nos])
        assert {f.result(timeout=30).response_code for f in futs} == {"00"}
        gc.stop()
        assert_ledger_verifies(engine)
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'drop schema if exists "{schema}" cascade'))
        admin.dispose()


def test_pg_connection_killed_mid_batch(pg_url):
    """The backend killed while the batch reads: no COMMIT was sent, so the batch runs again on a
    fresh connection. Killed while it writes, the COMMIT goes in the same round trip: if the driver
    finds the connection gone before sending it, the batch runs again; if after, the outcome is
    unknown and settled by lookup (nothing applied: 96), never run again blind."""
    engine = new_engine(pg_url)
    nos = setup(engine, 20)
    admin = make_engine(pg_url)
    kills = {"left": 0, "at": ""}

    @event.listens_for(engine, "before_cursor_execute")
    def kill(conn, cursor, statement, params, context, executemany):
        if kills["left"] and statement.lstrip().upper().startswith(kills["at"]):
            kills["left"] -= 1
            pid = conn.connection.driver_connection.info.backend_pid  # no query: statements may be pipelined
            with admin.connect() as a:
                a.execute(text("select pg_terminate_backend(:p)"), {"p": pid})

    gc = PosterThread(engine, CAL)
    kills.update(left=1, at="SELECT")
    futs = gc.submit([payment("0102", c, 10_000) for c in nos[:10]])
    assert {f.result(timeout=30).response_code for f in futs} == {"00"}
    assert kills["left"] == 0
    kills.update(left=1, at="INSERT INTO ALLOCATIONS")
    ps = [payment("0102", c, 10_000) for c in nos[10:]]
    codes = {f.result(timeout=30).response_code for f in gc.submit(ps)}
    assert kills["left"] == 0 and codes in ({"00"}, {"96"})
    assert count(engine, payments) == (20 if codes == {"00"} else 10)
    kills.update(left=3, at="SELECT")                 # the database stays broken: 96, nothing applied
    assert {f.result(timeout=30).response_code for f in gc.submit(ps)} == {"96"}
    kills.update(left=0)
    assert {f.result(timeout=30).response_code for f in gc.submit(ps)} == {"00"}   # and back: repeats
    gc.stop()
    assert count(engine, payments) == 20
    assert_ledger_verifies(engine)
    admin.dispose()
    engine.dispose()


# ------------------------------------------------------------------ a COMMIT whose outcome is unknown

def _by_identity(engine, p):
    """The payments posted under p's request identity (fields 32, 7, 11)."""
    with engine.connect() as conn:
        return conn.execute(select(payments.c.receipt_no).where(
            payments.c.bank_code == p.bank_code, payments.c.transmitted == p.transmitted,
            payments.c.stan == p.stan)).scalars().all()


@pytest.fixture
def proxy(pg_url):
    from pg_fault_proxy import PgFaultProxy

    p = PgFaultProxy(pg_url)
    yield p
    p.close()


def test_pg_commit_answer_lost_is_settled_by_the_stored_answer(pg_url, proxy):
    """The COMMIT reaches the server and commits; its answer never comes back and the database is
    unreachable for a second. The committer reconnects until it can look the postings up: each one
    gets the answer stored with it (it landed), not 96."""
    engine = new_engine(pg_url)
    nos = setup(engine, 5)
    through = make_engine(proxy.url, pre_ping=False)
    gc = PosterThread(through, CAL, settle_s=10)
    proxy.arm("answer_lost", down_s=1.0)
    ps = [payment("0102", c, 10_000) for c in nos]
    outs = gc.post(ps, timeout=30)
    assert proxy.fired.is_set()
    gc.stop()
    through.dispose()
    for p, o in zip(ps, outs):
        assert o.response_code == "00", o             # not 96: the payment is in the ledger
        assert _by_identity(engine, p) == [o.fields["receipt_no"]]
    assert_ledger_verifies(engine)
    engine.dispose()


def test_pg_commit_never_sent_is_96_and_the_repeat_is_posted(pg_url, proxy):
    """The connection breaks as the COMMIT is sent and the server never gets it: the lookup finds
    nothing, so 96, and the bank's repeat is processed as a new request."""
    engine = new_engine(pg_url)
    nos = setup(engine, 3)
    through = make_engine(proxy.url, pre_ping=False)
    gc = PosterThread(through, CAL, settle_s=10)
    proxy.arm("never_sent", down_s=0.5)
    ps = [payment("0102", c, 10_000) for c in nos]
    outs = gc.post(ps, timeout=30)
    assert proxy.fired.is_set()
    assert {o.response_code for o in outs} == {"96"}
    assert count(engine, payments) == 0 and count(engine, bank_requests) == 0
    while proxy.down():
        time.sleep(0.1)
    again = gc.post(ps, timeout=30)
    gc.stop()
    through.dispose()
    assert {o.response_code for o in again} == {"00"} and not any(o.replayed for o in again)
    assert count(engine, payments) == 3
    assert_ledger_verifies(engine)
    engine.dispose()


def test_pg_commit_answer_lost_past_the_deadline_is_unknown_and_the_repeat_gets_the_truth(pg_url, proxy):
    """The database stays away past the postings' deadline: neither 00 nor 96 can be told, so the
    outcome is unknown (the gateway sends no answer). The bank's repeat, once the database is back,
    gets the stored answer."""
    engine = new_engine(pg_url)
    nos = setup(engine, 2)
    through = make_engine(proxy.url, pre_ping=False)
    gc = PosterThread(through, CAL, settle_s=1.0)
    proxy.arm("answer_lost", down_s=2.5)
    ps = [payment("0102", c, 10_000) for c in nos]
    started = time.monotonic()
    outs = gc.post(ps, timeout=30)
    assert proxy.fired.is_set()
    assert {o.response_code for o in outs} == {""}, outs      # neither 00 nor 96
    assert time.monotonic() - started < 2.5                     # by the deadline, not when the database is back
    from ledger.answers import UnknownOutcome

    assert all(isinstance(o, UnknownOutcome) and not o.ok for o in outs)
    while proxy.down():
        time.sleep(0.1)
    again = gc.post(ps, timeout=30)
    gc.stop()
    through.dispose()
    for p, o in zip(ps, again):
        assert o.response_code == "00" and o.replayed
        assert _by_identity(engine, p) == [o.fields["receipt_no"]]
    assert_ledger_verifies(engine)
    engine.dispose()


def test_pg_backend_terminated_at_commit_is_settled_not_retried_blind(pg_url):
    """pg_terminate_backend of the committer's own backend just before its COMMIT (the driver's
    commit, sent in the pipeline after the last writes): the COMMIT fails on a dead connection, an
    unknown outcome. The lookup finds nothing (the backend rolled back), so 96 - not the result of
    running the batch again - and nothing is applied."""
    engine = new_engine(pg_url)
    nos = setup(engine, 4)
    admin = make_engine(pg_url)
    through = make_engine(pg_url, pre_ping=False)
    kills = {"left": 1}
    commit = through.dialect.do_commit

    def killed_first(dbapi_connection):
        raw = dbapi_connection.driver_connection
        if kills["left"] and raw.info.transaction_status != 0:
            kills["left"] -= 1
            pid = raw.info.backend_pid
            with admin.connect() as a:
                a.execute(text("select pg_terminate_backend(:p)"), {"p": pid})
                for _ in range(100):   # until it is gone: the COMMIT then meets a closed connection
                    if not a.execute(text("select 1 from pg_stat_activity where pid = :p"), {"p": pid}).first():
                        break
                    time.sleep(0.02)
        return commit(dbapi_connection)

    through.dialect.do_commit = killed_first

    gc = PosterThread(through, CAL, settle_s=10)
    ps = [payment("0102", c, 10_000) for c in nos]
    outs = gc.post(ps, timeout=30)
    assert kills["left"] == 0
    assert {o.response_code for o in outs} == {"96"}, outs
    assert count(engine, payments) == 0
    again = gc.post(ps, timeout=30)
    gc.stop()
    assert {o.response_code for o in again} == {"00"}
    assert count(engine, payments) == 4
    assert_ledger_verifies(engine)
    for e in (admin, through, engine):
        e.dispose()


def test_pg_half_open_lost_commit_is_settled_without_waiting_for_the_deadline(pg_url, proxy):
    """The COMMIT never reaches the server and the server never learns the client is gone: the old
    backend sits idle in its transaction, holding the customers' locks. The lookup terminates it
    (its own role's backend), so the transaction rolls back and the answer is a prompt 96, not a
    wait for its locks until the deadline."""
    engine = new_engine(pg_url)
    nos = setup(engine, 2)
    through = make_engine(proxy.url, pre_ping=False)
    gc = PosterThread(through, CAL, settle_s=8)
    proxy.arm("never_sent", down_s=0.3, keep_server=True)
    started = time.monotonic()
    outs = gc.post([payment("0102", c, 10_000) for c in nos], timeout=30)
    assert proxy.fired.is_set()
    assert {o.response_code for o in outs} == {"96"}
    assert time.monotonic() - started < 4
    (kept,) = proxy.kept                              # the lost transaction's backend: terminated
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from pg_stat_activity where client_port = :port"),
                            {"port": kept.getsockname()[1]}).scalar_one() == 0
    assert count(engine, payments) == 0
    gc.stop()
    through.dispose()
    assert_ledger_verifies(engine)
    engine.dispose()


def test_a_resent_posting_whose_retry_fails_is_settled_never_a_blind_96(db_url):
    """A posting its dead worker had given to the database is run again by the successor. When that
    run fails before its COMMIT, the dead worker's attempt may still have landed: the posting is
    looked up - its stored answer (it had landed), 96 (it had not), or unknown at its deadline."""
    from ledger.answers import UnknownOutcome
    from ledger.group_commit import NOT_APPLIED, Poster

    engine = new_engine(db_url)
    nos = setup(engine, 3)
    landed, lost = payment("0102", nos[0], 10_000), payment("0102", nos[1], 10_000)
    first = Poster(engine, CAL).process([landed])[0]              # the dead worker's commit
    failures = {"left": 0}

    @event.listens_for(engine, "before_cursor_execute")
    def boom(conn, cursor, statement, params, context, executemany):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError(statement, params, Exception("injected: database went away"))

    poster = Poster(engine, CAL)
    failures["left"] = 1                                            # the run fails, the lookup works
    soon = time.monotonic() + 10
    outs = poster.process([landed, lost], [soon, soon], [True, True])
    assert outs[0] == first                                         # its stored answer
    assert outs[1].response_code == "96" and outs[1].detail == NOT_APPLIED   # looked up: not there
    assert poster.process([lost], [soon], [True])[0].response_code == "00"   # it works now: posted
    failures["left"] = 10 ** 6                                      # nothing works until the deadline
    gone = poster.process([landed], [time.monotonic() + 0.3], [True])[0]
    assert isinstance(gone, UnknownOutcome)
    failures["left"] = 0
    event.remove(engine, "before_cursor_execute", boom)
    assert count(engine, payments) == 2
    assert_ledger_verifies(engine)
    engine.dispose()
