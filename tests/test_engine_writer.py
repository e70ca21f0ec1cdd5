"""The engine's writer worker on a real database: a batch that fails is written as two halves,
each the same way, so one bad op fails alone and the rest commit in a handful of transactions."""
from __future__ import annotations

import math
import threading

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from engines.plans import build_batch
from engines.writer import Note, WriterWorker
from config.clock import Clock
from ledger.schema import debit_attempts, debits
from ledger_helpers import T0
from test_engine_support import BANK, seed


def test_a_bad_op_fails_alone_and_the_rest_commit_in_halves(db_url):
    engine, _ = seed(db_url, 63)
    with engine.begin() as conn:
        build_batch(conn, bank_code=BANK, at=T0, clock=Clock(), chunk_size=100)
    with engine.connect() as conn:
        ids = list(conn.execute(select(debits.c.debit_id).order_by(debits.c.debit_id)).scalars())
    ops = [Note(i, "late_answer", "0210", "00", "a late answer", "system:test") for i in ids]
    ops.insert(40, Note(10**9, "late_answer", "0210", "00", "no such debit", "system:test"))
    clock = Clock()
    worker = WriterWorker({"url": db_url, "statement_timeout_s": 5.0, "timezone": clock.timezone,
                           "cutoff": clock.cutoff})
    transactions = []
    real = worker._transaction
    worker._transaction = lambda batch, now: transactions.append(len(batch)) or real(batch, now)
    try:
        results = worker._process(ops, T0)
    finally:
        worker.close()
    assert [type(r).__name__ for r in results].count("Outcome") == 63
    assert isinstance(results[40], IntegrityError)
    # the whole batch, then at each level two halves of which one holds the bad op
    assert len(transactions) <= 2 * math.ceil(math.log2(len(ops))) + 1, transactions
    with engine.connect() as conn:
        noted = conn.execute(select(func.count()).where(debit_attempts.c.event == "late_answer")).scalar_one()
    assert noted == 63
    engine.dispose()


def test_renewing_skips_a_reversal_its_writer_has_locked_and_still_renews_the_chunks(pg_url):
    """The engine's writer updates its reversals' rows too: a renewal that finds one locked
    leaves it for the next second instead of waiting (or deadlocking) and failing the chunks'
    renewal with it."""
    from datetime import timedelta

    from sqlalchemy import insert, update

    from engines.store import register_instance, renew
    from engines.tables import debit_chunks, debit_reversals

    engine, _ = seed(pg_url, 2)
    with engine.begin() as conn:
        build_batch(conn, bank_code=BANK, at=T0, clock=Clock(), chunk_size=100)
        conn.execute(update(debit_chunks).values(state="claimed", owner="e1", lease_until=T0))
        ids = list(conn.execute(select(debits.c.debit_id).order_by(debits.c.debit_id)).scalars())
        conn.execute(insert(debit_reversals), [
            {"debit_id": d, "bank_code": BANK, "transmitted": "1123120000", "stan": f"{n:06d}", "state": "pending",
             "attempts": 1, "next_at": T0, "owner": "e1", "lease_until": T0, "created_at": T0, "updated_at": T0}
            for n, d in enumerate(ids, 1)])
        chunk_id = conn.execute(select(debit_chunks.c.chunk_id)).scalar_one()
    register_instance(engine, name="e1", banks=[BANK], now=T0, lease_s=10)
    writer = engine.connect()
    busy = writer.begin()
    writer.execute(update(debit_reversals).where(debit_reversals.c.debit_id == ids[0]).values(attempts=2))
    try:
        later = T0 + timedelta(seconds=5)
        chunks, revs = renew(engine, owner="e1", now=later, lease_s=10, chunk_ids={chunk_id},
                             reversal_ids=set(ids))
        assert chunks == {chunk_id} and revs == set(ids), "the locked one is still held"
    finally:
        busy.rollback()
        writer.close()
    with engine.connect() as conn:
        leases = dict(conn.execute(select(debit_reversals.c.debit_id, debit_reversals.c.lease_until)).all())
        chunk_lease = conn.execute(select(debit_chunks.c.lease_until)).scalar_one()
    assert chunk_lease == later + timedelta(seconds=10)
    assert leases[ids[0]] == T0 and leases[ids[1]] == later + timedelta(seconds=10)
    engine.dispose()


def test_renewing_skips_a_chunk_its_writer_is_closing(pg_url):
    """The writer marks chunks done several to a transaction; a renewal of many chunks that waited
    for one of them could deadlock with it (run r18's PostgreSQL log). It skips the locked one,
    which still counts as held, and renews the others."""
    from datetime import timedelta

    from sqlalchemy import update

    from engines.store import register_instance, renew
    from engines.tables import debit_chunks

    engine, _ = seed(pg_url, 4)
    with engine.begin() as conn:
        build_batch(conn, bank_code=BANK, at=T0, clock=Clock(), chunk_size=2)
        conn.execute(update(debit_chunks).values(state="claimed", owner="e1", lease_until=T0))
        closing, other = conn.execute(select(debit_chunks.c.chunk_id).order_by(debit_chunks.c.chunk_id)).scalars()
    register_instance(engine, name="e1", banks=[BANK], now=T0, lease_s=10)
    writer = engine.connect()
    busy = writer.begin()
    writer.execute(update(debit_chunks).where(debit_chunks.c.chunk_id == closing).values(updated_at=T0))
    later, got = T0 + timedelta(seconds=5), []
    renewal = threading.Thread(target=lambda: got.append(
        renew(engine, owner="e1", now=later, lease_s=10, chunk_ids={closing, other})), daemon=True)
    try:
        renewal.start()
        renewal.join(timeout=10)
        assert got, "the renewal waited for the writer's lock"
        assert got[0][0] == {closing, other}, "the locked one is still held"
    finally:
        busy.rollback()
        writer.close()
        renewal.join(timeout=10)
    with engine.connect() as conn:
        leases = dict(conn.execute(select(debit_chunks.c.chunk_id, debit_chunks.c.lease_until)).all())
    assert leases == {closing: T0, other: later + timedelta(seconds=10)}
    engine.dispose()



def test_a_refused_reversal_waits_for_its_debit_before_locking_its_reversal(pg_url):
    """The writer locks a batch's debits (its postings read them FOR UPDATE) before their reversals
    (the flush). Giving a refused reversal a new identity took the other order - its reversal row,
    then the debit's through its history row's foreign key - and deadlocked with a writer posting
    the same debit (a 1/10-size run's PostgreSQL log). It now waits for the debit first, holding
    nothing the writer wants; once the writer is done it goes on."""
    from datetime import timedelta

    from sqlalchemy import text

    from engines.store import ReverseItem, create_reversals, reversal_again_after_refusal
    from engines.tables import debit_reversals

    engine, _ = seed(pg_url, 2)
    clock = Clock()
    with engine.begin() as conn:
        build_batch(conn, bank_code=BANK, at=T0, clock=clock, chunk_size=2)
        debit_id = conn.execute(select(debits.c.debit_id).order_by(debits.c.debit_id)).scalars().first()
        [item] = create_reversals(conn, [(debit_id, BANK, {})], owner="e1", now=T0,
                                  lease=T0 + timedelta(seconds=30), clock=clock)
    writer = engine.connect()
    busy = writer.begin()
    writer.execute(select(debits.c.debit_id).where(debits.c.debit_id == debit_id).with_for_update())
    got = []
    refusal = threading.Thread(target=lambda: got.append(reversal_again_after_refusal(
        engine, ReverseItem(debit_id, BANK, {}, item.transmitted, item.stan, 1, T0), "A0",
        now=T0 + timedelta(seconds=5), clock=clock)), daemon=True)
    try:
        refusal.start()
        refusal.join(timeout=1)
        assert not got, "it did not wait for the debit's lock"
        with engine.connect() as other:   # the reversal's row is free for the writer to take
            other.execute(text("SET lock_timeout = '2s'"))
            other.execute(select(debit_reversals.c.debit_id).where(debit_reversals.c.debit_id == debit_id)
                          .with_for_update())
            other.rollback()
    finally:
        busy.rollback()
        writer.close()
        refusal.join(timeout=10)
    assert got and got[0] != (item.transmitted, item.stan), "a new identity once the writer is done"
    with engine.connect() as conn:
        assert conn.execute(select(debit_reversals.c.stan).where(debit_reversals.c.debit_id == debit_id)
                            ).scalar_one() == got[0][1]
    engine.dispose()


def _stan_row_is_free(engine, bank: str) -> None:
    """Take the bank's STAN rows' locks (failing after 2 s if another transaction holds one)."""
    from sqlalchemy import text

    from engines.tables import stan_counters

    with engine.connect() as other:
        other.execute(text("SET lock_timeout = '2s'"))
        other.execute(select(stan_counters.c.next_stan).where(stan_counters.c.bank_code == bank).with_for_update())
        other.rollback()


def _waits_for_the_debit_holding_no_stans(engine, debit_id: int, work):
    """Run ``work()`` in a thread while another transaction holds the debit's row: it must wait,
    holding no STAN row of the bank, and finish once the row is free. Returns its result."""
    from sqlalchemy import update

    holder = engine.connect()
    txn = holder.begin()
    holder.execute(update(debits).where(debits.c.debit_id == debit_id).values(updated_at=T0))
    got = []
    worker = threading.Thread(target=lambda: got.append(work()), daemon=True)
    try:
        worker.start()
        worker.join(timeout=1)
        assert not got, "it did not wait for the debit's lock"
        _stan_row_is_free(engine, BANK)
    finally:
        txn.rollback()
        holder.close()
        worker.join(timeout=10)
    assert got, "it did not finish once the debit was free"
    return got[0]


def test_a_debit_sent_again_after_a0_waits_for_its_row_before_the_banks_stans(pg_url):
    """Giving a debit a new identity after an A0 locks the debit before the bank's STAN row, the
    order a takeover of that debit takes them in: it had taken the STAN row first, so it could
    deadlock with the takeover, and held every claim for the bank while it waited for the debit."""
    from datetime import timedelta

    from engines.store import claim_chunks, send_again_after_a0

    engine, _ = seed(pg_url, 2)
    clock = Clock()
    with engine.begin() as conn:
        build_batch(conn, bank_code=BANK, at=T0, clock=clock, chunk_size=2)
    (claimed,) = claim_chunks(engine, owner="e1", banks=[BANK], now=T0, lease_s=30, clock=clock)
    item = claimed.to_send[0]
    fields = _waits_for_the_debit_holding_no_stans(engine, item.debit_id, lambda: send_again_after_a0(
        engine, item, now=T0 + timedelta(seconds=5), clock=clock))
    assert fields["11"] != item.fields["11"], "a new identity once the debit is free"
    engine.dispose()


def test_a_takeover_with_debits_to_send_locks_the_orphans_before_the_banks_stans(pg_url):
    """A chunk taken over with debits still to send and debits left sent: the sent ones (orphans)
    are locked before the bank's STAN row is taken for the others, as everywhere else."""
    from datetime import timedelta

    from sqlalchemy import update

    from engines.store import claim_chunks
    from engines.tables import debit_chunks, debit_reversals

    engine, _ = seed(pg_url, 2)
    clock = Clock()
    with engine.begin() as conn:
        build_batch(conn, bank_code=BANK, at=T0, clock=clock, chunk_size=2)
    (claimed,) = claim_chunks(engine, owner="dead", banks=[BANK], now=T0, lease_s=30, clock=clock)
    orphan, unsent = (i.debit_id for i in claimed.to_send)
    with engine.begin() as conn:   # the dead engine had sent one of the two
        conn.execute(update(debits).where(debits.c.debit_id == unsent).values(
            state="pending", transmitted=None, stan=None, rrn=None))
        conn.execute(update(debit_chunks).values(lease_until=T0))
    (taken,) = _waits_for_the_debit_holding_no_stans(engine, orphan, lambda: claim_chunks(
        engine, owner="e2", banks=[BANK], now=T0 + timedelta(seconds=60), lease_s=30, clock=clock))
    assert [i.debit_id for i in taken.to_send] == [unsent] and [i.debit_id for i in taken.to_reverse] == [orphan]
    with engine.connect() as conn:
        assert conn.execute(select(debit_reversals.c.owner)).scalars().all() == ["e2"]
    engine.dispose()


def test_stans_come_in_consecutive_blocks_per_bank_and_day_and_run_out_reserving_nothing(db_url):
    """``reserve_stans``: each bank's STANs per day in consecutive blocks from 000001
    (docs/spec/INTERFACE.md §3), and a block past 999999 refused with nothing reserved (on
    PostgreSQL one statement makes or moves the row; elsewhere three)."""
    import pytest
    from sqlalchemy import update

    from engines.store import StanExhausted, reserve_stans
    from engines.tables import stan_counters

    engine, _ = seed(db_url, 0)
    day, next_day = "20261207", "20261208"
    with engine.begin() as conn:
        assert reserve_stans(conn, BANK, day, 3) == 1
        assert reserve_stans(conn, BANK, day, 2) == 4
        assert reserve_stans(conn, BANK, next_day, 1) == 1
        assert reserve_stans(conn, "01030000", day, 1) == 1
    with engine.begin() as conn:
        conn.execute(update(stan_counters).where(stan_counters.c.bank_code == BANK, stan_counters.c.day == day)
                     .values(next_stan=999_999))
    with pytest.raises(StanExhausted, match="999998 used"):
        with engine.begin() as conn:
            reserve_stans(conn, BANK, day, 2)
    with engine.begin() as conn:
        assert reserve_stans(conn, BANK, day, 1) == 999_999
        assert conn.execute(select(stan_counters.c.next_stan).where(
            stan_counters.c.bank_code == BANK, stan_counters.c.day == next_day)).scalar_one() == 2
    engine.dispose()


def test_a_claim_holds_the_banks_stans_only_for_its_writes(pg_url, monkeypatch):
    """A claim builds its debits' 0200s after it commits, not while it holds the bank's STAN row
    (every other claim for the bank waits for that row): here building them takes a second, and
    the row is free throughout."""
    import time

    import engines.store as store
    from engines.store import claim_chunks, reserve_stans, transmission_of

    engine, _ = seed(pg_url, 2)
    clock = Clock()
    with engine.begin() as conn:
        build_batch(conn, bank_code=BANK, at=T0, clock=clock, chunk_size=2)
        reserve_stans(conn, BANK, transmission_of(T0, clock)[1], 1)   # the day's row, there to be locked
    building, real = [], store.debit_message_fields

    def slow_build(*args, **kw):
        building.append(1)
        _stan_row_is_free(engine, BANK)
        time.sleep(0.5)
        return real(*args, **kw)

    monkeypatch.setattr(store, "debit_message_fields", slow_build)
    (claimed,) = claim_chunks(engine, owner="e1", banks=[BANK], now=T0, lease_s=30, clock=clock)
    assert len(building) == 2 and [i.fields["11"] for i in claimed.to_send] == ["000002", "000003"]
    with engine.connect() as conn:
        assert sorted(conn.execute(select(debits.c.stan).where(debits.c.state == "sent")).scalars()) == \
            ["000002", "000003"]
    engine.dispose()
