"""The debit engine in the test's reactor against the in-process bank host, on real sockets and
real databases: approvals and declines, timeouts → unknown → 0420/0421 (injected clock), late
answers, the debit limit, dead-engine recovery, SQLite's single engine, the Oracle claim."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
import pytest_twisted
from sqlalchemy import func, select
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from engines.engine import DebitEngine
from engines.plans import build_batch
from engines.store import EngineConflict, claim_statement, register_instance
from engines.tables import debit_chunks, debit_reversals, debit_skips, engine_instances
from gateway.sim.bank import Account, BankHost, Behaviour
from iso8583_specs.dialects import get_dialect
from config.clock import Clock
from ledger.schema import bills, debit_attempts, debits, outbox
from ledger_helpers import T0, assert_ledger_verifies
from test_engine_support import (BANK, ZMK, FakeClock, accounts_for, bank_vs_ledger, make_settings, seed,
                                 states)

CAL = Clock()


def make_host(accounts, behaviour=None, clock=None):
    host = BankHost(reactor, BANK, get_dialect("ascii"), ZMK, accounts, behaviour or Behaviour(), clock=clock,
                    business_date=date(2026, 11, 23), seed=7)
    host.start()
    return host


def batch(engine, chunk_size=10, at=T0, **kw):
    with engine.begin() as conn:
        return build_batch(conn, bank_code=BANK, at=at, clock=CAL, chunk_size=chunk_size, **kw)


async def until(cond, timeout=20.0, step=0.02, show=None):
    waited = 0.0
    while not cond():
        if waited > timeout:
            raise AssertionError("condition not met in time" + (f": {show()}" if show else ""))
        await deferLater(reactor, step, lambda: None)
        waited += step


@pytest.fixture
def cleanup():
    items = []
    yield items
    for thing in reversed(items):
        try:
            pytest_twisted.blockon(defer.maybeDeferred(thing))
        except Exception:  # noqa: BLE001
            pass


@pytest_twisted.ensureDeferred
async def test_batch_approved_and_declined(db_url, cleanup):
    engine, numbers = seed(db_url, 40)
    accounts = accounts_for(numbers)
    accounts[f"A{numbers[0]}"] = Account(10)             # 51
    accounts[f"A{numbers[1]}"] = Account(10**9, 0, "C")  # 57
    host = make_host(accounts)
    cleanup.append(host.stop)
    s = batch(engine)
    assert s.debits == 40 and s.chunks == 4
    eng = DebitEngine(make_settings(db_url, host.port), reactor, engine, name="e1", poll_s=0.05)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: states(engine).get("pending", 0) + states(engine).get("sent", 0) == 0)
    await until(lambda: eng.idle and _chunk_states(engine) == {"done"})
    st = states(engine)
    assert st == {"approved": 38, "declined": 2}
    with engine.connect() as conn:
        codes = dict(conn.execute(select(debits.c.customer_no, debits.c.response_code)
                                  .where(debits.c.state == "declined")).all())
        assert codes == {numbers[0]: "51", numbers[1]: "57"}
        kinds = dict(conn.execute(select(outbox.c.kind, func.count()).group_by(outbox.c.kind)).all())
        assert kinds["debit_ok"] == 38 and kinds["debit_failed"] == 2
        chunk_states = set(conn.execute(select(debit_chunks.c.state)).scalars())
        assert chunk_states == {"done"}
    cmp = bank_vs_ledger(engine, host)
    assert cmp["bank_held"] == cmp["ledger_held"] and len(cmp["bank_held"]) == 38 and cmp["rrn_dupes"] == 0
    assert len(host.applied) == 38
    assert_ledger_verifies(engine)
    # nothing left to debit: a second batch finds no due bills except the declined customers'
    assert batch(engine).debits == 2
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_a_link_is_fed_as_its_window_frees_so_no_debit_waits_out_its_timeout_unsent(db_url, cleanup):
    """Two chunks of 40 against a window of 3 at 50 ms an answer: handed over at once, the last
    ~half would wait in the link's queue past its 0.5 s timeout and fail unsent. Fed as the window
    frees, none does; the reversals of the answers the bank drops share that window, and their
    answers feed it too (an engine fed only by its debits' answers stalled once its window was all
    reversals)."""
    engine, numbers = seed(db_url, 80)
    host = make_host(accounts_for(numbers), Behaviour(latency_ms=50, drop_before_apply=0.1))
    cleanup.append(host.stop)
    batch(engine, chunk_size=40)
    settings = make_settings(db_url, host.port, timeout_s=0.5, max_in_flight=3, reversal_interval_s=0.5)
    eng = DebitEngine(settings, reactor, engine, name="e1", poll_s=0.05, chunks_ahead=2)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: eng.idle and _chunk_states(engine) == {"done"} and not eng.reversals, timeout=60,
                show=lambda: (states(engine), dict(eng.stats)))
    link = eng.links[BANK]
    assert link.stats["not_sent_busy"] == 0 and eng.stats["not_sent_retry"] == 0, (dict(link.stats), dict(eng.stats))
    assert eng.stats["unknown"] > 0 and set(states(engine)) <= {"approved", "reversed"}, states(engine)
    assert states(engine).get("approved", 0) + states(engine).get("reversed", 0) == 80
    cmp = bank_vs_ledger(engine, host)
    assert cmp["bank_held"] == cmp["ledger_held"] and cmp["rrn_dupes"] == 0
    assert_ledger_verifies(engine)
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_debits_waiting_to_be_fed_to_the_link_are_not_sent_once_their_chunk_is_lost(sqlite_url, cleanup):
    """A chunk's lease lapsed and another engine took it over (what a poll learns from the
    database: the chunk is no longer among those held) while most of its debits still waited for
    the link's window: none of those goes, now or should the chunk come back."""
    engine, numbers = seed(sqlite_url, 20)
    host = make_host(accounts_for(numbers), Behaviour(latency_ms=300))
    cleanup.append(host.stop)
    batch(engine, chunk_size=20)
    eng = DebitEngine(make_settings(sqlite_url, host.port, max_in_flight=1), reactor, engine, name="e1",
                      poll_s=0.05)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: host.counters["received_0200"] == 1)
    assert len(eng.unsent[BANK]) == 19
    (chunk_id,) = eng.chunks
    eng._drop_lost(({chunk_id}, set()), held_chunks=set(), held_revs=set())
    assert not eng.unsent[BANK] and not eng.chunks
    await deferLater(reactor, 1.0, lambda: None)
    assert host.counters["received_0200"] == 1
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_debit_limit_is_skipped_with_reason(sqlite_url, cleanup):
    engine, numbers = seed(sqlite_url, 5, limit=5_000)  # each owes 10,050 > 5,000
    s = batch(engine)
    assert s.debits == 0 and len(s.skipped) == 5
    with engine.connect() as conn:
        reasons = list(conn.execute(select(debit_skips.c.reason)).scalars())
    assert len(reasons) == 5 and all("exceeds the agreement's debit limit 5000 fen" in r for r in reasons)
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_timeouts_reverse_with_0420_then_0421_on_injected_clock(sqlite_url, cleanup):
    """The bank applies but never answers: unknown → 0420 → 0421 … (interval and count from the
    config, driven by an injected clock), then a host that answers again gets the reversal
    through; a late 0210 changes nothing."""
    engine, numbers = seed(sqlite_url, 3)
    fc = FakeClock()
    host = make_host(accounts_for(numbers), Behaviour(drop_after_apply=1.0))
    cleanup.append(host.stop)
    batch(engine, chunk_size=10)
    settings = make_settings(sqlite_url, host.port, timeout_s=5.0, reversal_interval_s=10.0, reversal_max=2)
    eng = DebitEngine(settings, reactor, engine, name="e1", clock=fc.clock, poll_s=1.0)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: eng.links[BANK].ready)
    await eng.poll()
    await until(lambda: states(engine).get("sent") == 3)
    await until(lambda: len(host.applied) == 3)
    fc.advance(5.1)                                      # the debit timeout
    await until(lambda: states(engine).get("unknown") == 3)
    await until(lambda: host.counters["received_0420"] == 3)
    assert host.counters["received_0421"] == 0
    fc.advance(5.0)                                      # the 0420 times out (5 s), interval not yet
    await until(lambda: eng.stats["reversal_timeouts"] == 3)
    assert host.counters["received_0421"] == 0
    fc.advance(5.1)                                      # 10 s after the 0420: first 0421
    await until(lambda: host.counters["received_0421"] == 3)
    fc.advance(10.1)                                     # second 0421 (reversal_max = 2)
    await until(lambda: host.counters["received_0421"] == 6)
    with engine.connect() as conn:
        attempts = set(conn.execute(select(debit_reversals.c.attempts)).scalars())
        assert attempts == {3}
    fc.advance(10.1)                                     # no more: unanswered, open for reconciliation
    await until(lambda: eng.stats["reversal_unanswered"] == 3)
    await until(lambda: set(_rev_states(engine)) == {"unanswered"})
    assert host.counters["received_0421"] == 6
    assert states(engine) == {"unknown": 3}
    # the bank reversed on the first 0420 although it never said so: money back
    assert all(r.reversed for r in host.applied.values())
    assert_ledger_verifies(engine)
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_a_timeout_on_a_debit_another_engine_settled_meanwhile_is_not_written_again(db_url, cleanup):
    """The bank applies a debit and never answers; before this engine's timeout, another engine
    (it took the chunk over) has settled the debit. The ledger refuses "unknown" for it: that
    answer is final, so the engine neither writes it again every second nor starts a reversal."""
    from ledger.debits import debit_approved

    engine, numbers = seed(db_url, 1)
    fc = FakeClock()
    host = make_host(accounts_for(numbers), Behaviour(drop_after_apply=1.0))
    cleanup.append(host.stop)
    batch(engine)
    eng = DebitEngine(make_settings(db_url, host.port, timeout_s=5.0), reactor, engine, name="e1", clock=fc.clock,
                      poll_s=10.0)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: eng.links[BANK].ready)
    await eng.poll()
    await until(lambda: len(host.applied) == 1)
    with engine.connect() as conn:
        debit_id = conn.execute(select(debits.c.debit_id)).scalar_one()
    assert debit_approved(engine, debit_id, T0, "000001").ok     # the other engine's answer
    fc.advance(5.1)                                              # this engine's timeout
    await until(lambda: eng.stats["unknown_already_settled"] == 1, show=lambda: dict(eng.stats))
    for _ in range(3):
        fc.advance(1.0)
        await deferLater(reactor, 0.1, lambda: None)
    assert eng.stats["unknown_write_retries"] == 0 and not eng.reversals
    assert states(engine) == {"approved": 1} and host.counters.get("received_0420", 0) == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(debit_reversals)).scalar_one() == 0
    await until(lambda: eng.idle and _chunk_states(engine) == {"done"})
    assert_ledger_verifies(engine)
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_slow_claims_stop_at_a_third_of_the_lease_and_each_is_leased_from_its_own_moment(
        sqlite_url, cleanup, monkeypatch):
    """On a loaded database each claim takes seconds. A poll's claims stop once they have taken a
    third of the lease (the next poll renews the leases held before they lapse), the rest come
    on the next polls, and each chunk's lease runs from its own claim, not from the poll's start."""
    import time as time_module

    from engines import store

    engine, numbers = seed(sqlite_url, 10)
    host = make_host(accounts_for(numbers))
    cleanup.append(host.stop)
    batch(engine, chunk_size=2)                             # 5 chunks
    real_claim, nows = store.claim_chunks, []

    def slow_claim(*args, **kw):
        nows.append(kw["now"])
        time_module.sleep(0.3)
        return real_claim(*args, **kw)
    monkeypatch.setattr(store, "claim_chunks", slow_claim)
    eng = DebitEngine(make_settings(sqlite_url, host.port), reactor, engine, name="e1", poll_s=0.05, lease_s=1.5,
                      chunks_ahead=5)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: states(engine) == {"approved": 10}, show=lambda: (states(engine), dict(eng.stats)))
    await until(lambda: eng.idle and _chunk_states(engine) == {"done"})
    assert eng.stats["chunks"] == 5 and eng.stats["claims_deferred"] >= 1
    assert len(nows) >= 5 and all(b - a >= timedelta(seconds=0.29) for a, b in zip(nows, nows[1:]))
    assert_ledger_verifies(engine)
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_leases_are_renewed_while_a_claim_outlasts_them(sqlite_url, cleanup, monkeypatch):
    """A chunk is held from its own claim on, not from the end of its poll's claims, and the leases
    have a timer of their own: while the poll's next claim takes longer than the lease (a loaded
    database), the chunk claimed before it keeps its lease. Renewed after the poll's claims, it
    lapsed - and another engine would have taken it over and reversed its debits in flight."""
    import time as time_module

    from engines import store

    engine, numbers = seed(sqlite_url, 4)
    host = make_host(accounts_for(numbers), Behaviour(latency_ms=4000))    # the first chunk stays in flight
    cleanup.append(host.stop)
    batch(engine, chunk_size=2)                                             # 2 chunks
    real_claim, calls = store.claim_chunks, []

    def second_is_slow(*args, **kw):
        calls.append(True)
        if len(calls) == 2:
            time_module.sleep(2.5)
        return real_claim(*args, **kw)
    monkeypatch.setattr(store, "claim_chunks", second_is_slow)
    eng = DebitEngine(make_settings(sqlite_url, host.port, timeout_s=10.0), reactor, engine, name="e1",
                      poll_s=0.05, lease_s=1.5, chunks_ahead=2)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: len(calls) == 2)
    await until(lambda: len(eng.chunks) == 1, timeout=1.0)             # while the second claim runs
    (held,) = eng.chunks
    margins = []
    for _ in range(20):                                                 # 2 s of the 2.5 s claim
        with engine.connect() as conn:
            lease = conn.execute(select(debit_chunks.c.lease_until)
                                 .where(debit_chunks.c.chunk_id == held)).scalar_one()
        margins.append((lease.replace(tzinfo=None) - CAL.now().replace(tzinfo=None)).total_seconds())
        await deferLater(reactor, 0.1, lambda: None)
    assert min(margins) > 0, margins
    assert held in eng.chunks
    engine.dispose()


@pytest.mark.parametrize("keep_leases", [True, False])
@pytest_twisted.ensureDeferred
async def test_leases_are_kept_while_the_reactor_is_held_up_longer_than_the_lease(sqlite_url, cleanup,
                                                                                   keep_leases):
    """The reactor busy for twice the lease, as a niced engine's is with a burst of answers (runs
    r16, r17): the keeper's thread renews what the engine holds, so the chunk's lease never lapses
    and no other engine can take it over while its debits are in flight. Without the keeper it
    lapses."""
    import threading
    import time as time_module

    engine, numbers = seed(sqlite_url, 2)
    host = make_host(accounts_for(numbers), Behaviour(latency_ms=6000))    # the chunk stays in flight
    cleanup.append(host.stop)
    batch(engine, chunk_size=2)
    eng = DebitEngine(make_settings(sqlite_url, host.port, timeout_s=20.0), reactor, engine, name="e1",
                      poll_s=0.05, lease_s=1.5, keep_leases=keep_leases)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: len(eng.chunks) == 1)
    (held,) = eng.chunks
    margins, watching = [], threading.Event()

    def watch():
        while not watching.is_set():
            with engine.connect() as conn:
                lease = conn.execute(select(debit_chunks.c.lease_until)
                                     .where(debit_chunks.c.chunk_id == held)).scalar_one()
            margins.append((lease.replace(tzinfo=None) - CAL.now().replace(tzinfo=None)).total_seconds())
            time_module.sleep(0.1)
    watcher = threading.Thread(target=watch)
    watcher.start()
    busy_until = time_module.monotonic() + 3.0
    while time_module.monotonic() < busy_until:     # the reactor held up, holding the GIL as Python work does
        pass
    watching.set()
    watcher.join()
    assert len(margins) >= 10, margins
    if keep_leases:
        assert min(margins) > 0, margins
        await until(lambda: eng.stats["leases_renewed_off_reactor"] >= 1)
        assert held in eng.chunks
    else:
        assert min(margins) < 0, margins    # lapsed: another engine's claim would have taken it
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_a_settled_chunks_lease_is_renewed_until_its_done_commits(sqlite_url, cleanup):
    """Every debit of the chunk settled, its 'done' waits behind a busy writer longer than the
    lease: the lease is still renewed, so the other engine does not claim the chunk again and take
    over its unknown debits' reversals."""
    from engines.writer import ChunkDone

    engine, numbers = seed(sqlite_url, 2)
    host = make_host(accounts_for(numbers))
    cleanup.append(host.stop)
    batch(engine, chunk_size=2)
    eng = DebitEngine(make_settings(sqlite_url, host.port), reactor, engine, name="e1", poll_s=0.05, lease_s=1.5)
    real_submit, held_back = eng.writer.submit, []

    def submit(op, callback):
        if isinstance(op, ChunkDone):
            held_back.append((op, callback))         # the busy writer: 'done' commits 2.5 s later
            reactor.callLater(2.5, real_submit, op, callback)
            return
        real_submit(op, callback)
    eng.writer.submit = submit
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: held_back)
    ((done, _),) = held_back
    assert done.chunk_id in eng.closing and done.chunk_id not in eng.chunks
    margins = []
    for _ in range(20):
        with engine.connect() as conn:
            state, lease = conn.execute(select(debit_chunks.c.state, debit_chunks.c.lease_until)).one()
        if state == "done":
            break
        margins.append((lease.replace(tzinfo=None) - CAL.now().replace(tzinfo=None)).total_seconds())
        await deferLater(reactor, 0.1, lambda: None)
    assert len(margins) >= 15 and min(margins) > 0, margins
    await until(lambda: _chunk_states(engine) == {"done"} and not eng.closing)
    engine.dispose()


def test_a_chunks_lease_runs_from_the_end_of_its_claim(sqlite_url, monkeypatch):
    """A claim that took seconds (its debits' identities, the bank's STAN row waited for) leases its
    chunk from the moment it commits, not from its start."""
    from config.clock import Clock as BusinessClock
    from engines import store

    engine, _ = seed(sqlite_url, 2)
    batch(engine, chunk_size=2)
    fc = FakeClock()
    real_prepare = store._prepare

    def slow_prepare(*args, **kw):
        fc.advance(8.0)
        return real_prepare(*args, **kw)
    monkeypatch.setattr(store, "_prepare", slow_prepare)
    (claimed,) = store.claim_chunks(engine, owner="e1", banks=[BANK], now=fc.now(), lease_s=10,
                                    clock=BusinessClock(timer=fc.clock))
    with engine.connect() as conn:
        lease = conn.execute(select(debit_chunks.c.lease_until)).scalar_one()
    assert lease.replace(tzinfo=None) == (T0 + timedelta(seconds=18)).replace(tzinfo=None)
    engine.dispose()


def _chunk_states(engine):
    with engine.connect() as conn:
        return set(conn.execute(select(debit_chunks.c.state)).scalars())


def _rev_states(engine):
    with engine.connect() as conn:
        return list(conn.execute(select(debit_reversals.c.state)).scalars())


@pytest_twisted.ensureDeferred
async def test_late_0210_after_reversal_changes_nothing(sqlite_url, cleanup):
    engine, numbers = seed(sqlite_url, 1)
    fc = FakeClock()
    # the bank answers after 2 s of real time: the test's clock passes the 5 s timeout well before that
    host = make_host(accounts_for(numbers), Behaviour(latency_ms=2000))
    cleanup.append(host.stop)
    batch(engine)
    settings = make_settings(sqlite_url, host.port, timeout_s=5.0)
    eng = DebitEngine(settings, reactor, engine, name="e1", clock=fc.clock, poll_s=1.0)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: eng.links[BANK].ready)
    await eng.poll()
    await until(lambda: states(engine).get("sent") == 1)
    await until(lambda: host.counters["received_0200"] == 1)
    fc.advance(5.1)                                       # times out before the bank's answer
    await until(lambda: eng.stats["late_0210"] == 1 and states(engine) == {"reversed": 1}, timeout=30)
    assert states(engine) == {"reversed": 1}
    with engine.connect() as conn:
        events = list(conn.execute(select(debit_attempts.c.event).order_by(debit_attempts.c.id)).scalars())
    assert events[:4] == ["created", "sent", "unknown", "reversal_sent"]
    assert sorted(events[4:]) == ["late_answer", "reversal_answer", "reversed"]
    assert all(r.reversed for r in host.applied.values())
    assert_ledger_verifies(engine)
    engine.dispose()


def _another_engine_signed_on_twice(engine, host, clock, store: bool = True):
    """What another engine's two sign-ons do: the bank holds a key two past the one this engine
    MACs with (so it answers A0, §4.2), and the shared key store has the bank's current key
    (with ``store=False``, once the returned handle's ``store()`` is called)."""
    from types import SimpleNamespace

    from iso8583_specs.keys import generate_mak
    from ledger.key_store import KeyStore
    from ledger.key_store_db import DbKeyBackend

    other = KeyStore(clock, backend=DbKeyBackend(engine, lambda bank: ZMK))
    maks = [generate_mak() for _ in range(2)]
    for mak in maks:
        host.keys.install(BANK, "debit", mak)

    def stored():
        for mak in maks:
            other.install(BANK, "debit", mak)
    if store:
        stored()
    return SimpleNamespace(store=stored)


async def _debits_refused_with_A0(url, count, cleanup, **settings):
    """An engine whose first try of each of ``count`` debits the bank answered A0: it MACs with a
    key two behind the bank's. Returns (engine, fake clock, bank host, debit engine)."""
    engine, numbers = seed(url, count)
    fc = FakeClock()
    host = make_host(accounts_for(numbers))
    cleanup.append(host.stop)
    eng = DebitEngine(make_settings(url, host.port, **settings), reactor, engine, name="e1", clock=fc.clock, poll_s=10.0)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: eng.links[BANK].ready)
    await eng.poll()   # its first housekeeping (which reloads MAC keys) done before the other engine signs on
    _another_engine_signed_on_twice(engine, host, fc.clock)
    batch(engine)
    await eng.poll()
    await until(lambda: host.counters["mac_failures"] == count,
                show=lambda: (dict(host.counters), dict(eng.stats), states(engine)))
    return engine, fc, host, eng


def _history(engine, debit_id):
    with engine.connect() as conn:
        return [(r.event, r.response_code, r.detail) for r in conn.execute(
            select(debit_attempts).where(debit_attempts.c.debit_id == debit_id).order_by(debit_attempts.c.id))]


@pytest_twisted.ensureDeferred
async def test_a_debit_answered_A0_goes_again_under_a_new_identity(db_url, cleanup):
    """docs/spec/INTERFACE.md §4.7: after A0 (nothing applied, §4.2) the debit is sent again under
    a new identity - new 7 and 11, and a new 37 (the bank counts the refused request's RRN as
    used) - never as the same identity again: a bank following §4.7 to the letter answers that
    from its cache (A0 again), and a different request under it, or under its RRN, with 94. The
    history keeps both identities."""
    engine, fc, host, eng = await _debits_refused_with_A0(db_url, 3, cleanup)
    with engine.connect() as conn:
        first = {r.debit_id: (r.transmitted, r.stan, r.rrn) for r in conn.execute(select(debits))}
    fc.advance(1.0)                   # field 7 is new too: the next second
    await until(lambda: states(engine) == {"approved": 3}, show=lambda: (states(engine), dict(host.counters)))
    assert eng.stats["resent_after_A0"] == 3
    assert host.counters["received_0200"] == 6 and host.counters["mac_failures"] == 3
    assert host.counters["duplicate_identity_94"] == host.counters["duplicate_rrn_94"] == 0
    with engine.connect() as conn:
        now = {r.debit_id: (r.transmitted, r.stan, r.rrn, r.business_date) for r in conn.execute(select(debits))}
    for debit_id, (t, s_, r) in first.items():
        t2, s2, r2, bd = now[debit_id]
        assert t2 != t and s2 != s_ and r2 != r and r2 == f"1{debit_id:011d}" and bd == date(2026, 11, 23)
        history = _history(engine, debit_id)
        assert [(e, c) for e, c, _ in history] == [("created", None), ("sent", None), ("mac_refused", "A0"),
                                                   ("sent", None), ("approved", "00")]
        assert f"{t}/{s_}/{r}" in history[2][2] and f"{t2}/{s2}/{r2}" in history[3][2]
    applied = {rec.identity[1:]: rec.rrn for rec in host.applied.values()}
    assert applied == {(t, s_): r for t, s_, r, _ in now.values()}    # applied once, under the new identity
    cmp = bank_vs_ledger(engine, host)
    assert cmp["bank_held"] == cmp["ledger_held"] and len(cmp["bank_held"]) == 3 and cmp["rrn_dupes"] == 0
    assert_ledger_verifies(engine)
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_a_reversal_after_A0_refers_to_the_identity_the_bank_saw_last(sqlite_url, cleanup):
    """The debit sent again after A0 is applied and not answered: its 0420 (field 90) names the
    new identity, the one the bank applied, and the bank credits it back."""
    engine, fc, host, eng = await _debits_refused_with_A0(sqlite_url, 1, cleanup, timeout_s=5.0)
    host.behaviour = Behaviour(drop_after_apply=1.0)
    fc.advance(1.0)
    await until(lambda: len(host.applied) == 1)
    (key,) = host.applied
    host.behaviour = Behaviour()
    fc.advance(5.1)                                       # the timeout: unknown, 0420
    await until(lambda: states(engine) == {"reversed": 1}, show=lambda: (states(engine), dict(host.counters)))
    assert list(host.reversals) == [key] and host.reversals[key].credited
    with engine.connect() as conn:
        (row,) = conn.execute(select(debits)).all()
    assert (BANK, row.transmitted, row.stan) == key and host.applied[key].rrn == row.rrn
    assert host.counters["duplicate_identity_94"] == host.counters["duplicate_rrn_94"] == 0
    assert_ledger_verifies(engine)
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_a_reversal_answered_A0_goes_again_under_a_new_identity(db_url, cleanup):
    """A debit applied and unanswered; before its 0420 another engine signs the bank on twice, so
    the 0420 is MACed two keys back and the bank answers A0: nothing applied (§4.2). The reversal
    is not over: with the current key it goes again as a 0420 under a new identity (§4.7, as a
    debit after A0), and the bank credits the customer back."""
    engine, numbers = seed(db_url, 1)
    fc = FakeClock()
    host = make_host(accounts_for(numbers), Behaviour(drop_after_apply=1.0))
    cleanup.append(host.stop)
    eng = DebitEngine(make_settings(db_url, host.port, timeout_s=5.0, reversal_interval_s=10.0, reversal_max=2),
                      reactor, engine, name="e1", clock=fc.clock, poll_s=10.0)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: eng.links[BANK].ready)
    await eng.poll()
    batch(engine)
    await eng.poll()
    await until(lambda: len(host.applied) == 1)
    (key,) = host.applied
    host.behaviour = Behaviour()
    # the other engine's sign-ons reach the bank now, its key store a moment later
    keys = _another_engine_signed_on_twice(engine, host, fc.clock, store=False)
    fc.advance(5.1)                                       # the timeout: unknown, 0420
    # A0, MACed with a key this engine cannot find yet: not taken, as if unanswered
    await until(lambda: host.counters["mac_failures"] == 1 and eng.links[BANK].stats["bad_mac"] == 1,
                show=lambda: (dict(host.counters), dict(eng.stats), dict(eng.links[BANK].stats)))
    keys.store()
    fc.advance(5.1)                                       # the 0420's timeout
    await until(lambda: eng.stats["reversal_timeouts"] == 1)
    fc.advance(5.0)                                       # the 0421: A0 again (the bank's cache), now verified
    await until(lambda: states(engine) == {"reversed": 1}, show=lambda: (states(engine), dict(host.counters),
                                                                         dict(eng.stats)))
    assert host.reversals[key].credited and host.applied[key].reversed
    assert host.counters["received_0420"] == 2 and host.counters["received_0421"] == 1
    assert host.counters["mac_failures"] == 1 and host.counters["duplicate_identity_94"] == 0
    assert eng.stats["reversal_resent_after_A0"] == 1
    with engine.connect() as conn:
        rev = conn.execute(select(debit_reversals)).one()
    assert rev.state == "answered" and rev.response_code == "00" and rev.attempts == 3
    assert host.reversals[key].reversal_identity == (BANK, rev.transmitted, rev.stan)
    history = _history(engine, rev.debit_id)
    assert [(e, c) for e, c, _ in history] == [
        ("created", None), ("sent", None), ("unknown", None), ("reversal_sent", None), ("reversal_sent", None),
        ("reversal_refused", "A0"), ("reversal_sent", None), ("reversed", "00"), ("reversal_answer", "00")]
    assert f"{rev.transmitted}/{rev.stan}" in history[5][2]
    cmp = bank_vs_ledger(engine, host)
    assert cmp["bank_held"] == cmp["ledger_held"] == set()
    assert_ledger_verifies(engine)
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_every_poll_claims_but_leases_are_renewed_once_housekeeping_is_due(sqlite_url, cleanup):
    """A poll claims work; the heartbeat (leases; and in the polls a dead engine's reversals, keys)
    comes every housekeeping_s (1 s with a 30 s lease) on the engine's clock, however often it polls."""
    engine, numbers = seed(sqlite_url, 5)
    fc = FakeClock()
    host = make_host(accounts_for(numbers))
    cleanup.append(host.stop)
    eng = DebitEngine(make_settings(sqlite_url, host.port), reactor, engine, name="e1", clock=fc.clock,
                      poll_s=10.0, lease_s=30)
    assert eng.housekeeping_s == 1.0
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: eng.links[BANK].ready)

    def heartbeat():
        with engine.connect() as conn:
            return conn.execute(select(engine_instances.c.heartbeat_at)).scalar_one().replace(tzinfo=None)

    await eng.poll()
    await until(lambda: heartbeat() == T0.replace(tzinfo=None))
    batch(engine, chunk_size=5)
    fc.advance(0.5)
    await eng.poll()                                   # claims the new chunk; no heartbeat yet
    assert heartbeat() == T0.replace(tzinfo=None)
    assert eng.stats["chunks"] == 1
    await until(lambda: states(engine) == {"approved": 5})
    fc.advance(0.6)                                    # 1.1 s since the last: the leases' timer
    await until(lambda: heartbeat() == (T0 + timedelta(seconds=1.1)).replace(tzinfo=None))
    assert_ledger_verifies(engine)
    engine.dispose()


@pytest_twisted.ensureDeferred
async def test_dead_engine_chunks_are_taken_over_and_sent_debits_reversed(db_url, cleanup):
    """An engine claimed a chunk, committed the identities ('sent') and died before any answer
    was posted: after its lease expires another engine reverses those debits (never resends
    them) and sends the chunks nobody claimed."""
    engine, numbers = seed(db_url, 30)
    fc = FakeClock()
    host = make_host(accounts_for(numbers))
    cleanup.append(host.stop)
    batch(engine, chunk_size=10)
    from engines.store import claim_chunks
    dead = claim_chunks(engine, owner="dead", banks=[BANK], now=fc.now(), lease_s=30, clock=Clock(timer=fc.clock))
    assert len(dead) == 1 and len(dead[0].to_send) == 10
    # the dead engine wrote 4 of them to the bank (applied there), then died
    assert states(engine) == {"sent": 10, "pending": 20}
    settings = make_settings(db_url, host.port)
    eng = DebitEngine(settings, reactor, engine, name="e2", clock=fc.clock, poll_s=1.0, lease_s=30)
    await eng.start()
    cleanup.append(eng.stop)
    await until(lambda: eng.links[BANK].ready)
    await eng.poll()
    await until(lambda: states(engine).get("pending", 0) == 0 and eng.idle,
                show=lambda: (states(engine), dict(eng.stats), eng.chunks))
    assert states(engine) == {"approved": 20, "sent": 10}, (dict(eng.stats), dict(host.counters))  # the dead engine's chunk is still leased
    fc.advance(31)                                             # its lease expires
    await eng.poll()
    await until(lambda: states(engine).get("reversed") == 10, timeout=10)
    assert host.counters["received_0200"] == 20               # never resent
    assert host.counters["received_0420"] == 10
    cmp = bank_vs_ledger(engine, host)
    assert cmp["bank_held"] == cmp["ledger_held"] and len(cmp["ledger_held"]) == 20
    assert_ledger_verifies(engine)
    engine.dispose()


def test_the_engines_links_answer_with_the_utilitys_business_date(sqlite_url):
    """Field 15 of the 0810s an engine's link sends is the business date of the engine's settings
    (time zone and cut-off), on the engine's clock."""
    from config.settings import Settings
    from test_engine_support import settings_tree

    engine, _ = seed(sqlite_url, 1)
    settings = Settings.model_validate({**settings_tree(sqlite_url), "business": {"cutoff": "22:00"}})
    fc = FakeClock(T0 + timedelta(hours=11, minutes=59, seconds=59))   # 21:59:59 in Shanghai
    eng = DebitEngine(settings, reactor, engine, name="e1", clock=fc.clock)
    link = eng.make_link(BANK)
    assert link.settlement_date() == "1123"
    fc.advance(1.0)
    assert link.settlement_date() == "1124"
    engine.dispose()


def test_sqlite_allows_one_engine(sqlite_url):
    engine, _ = seed(sqlite_url, 1)
    register_instance(engine, name="first", banks=[BANK], now=T0, lease_s=30, single=True)
    with pytest.raises(EngineConflict, match="SQLite allows one engine"):
        register_instance(engine, name="second", banks=[BANK], now=T0 + timedelta(seconds=10), lease_s=30, single=True)
    with pytest.raises(EngineConflict, match="named 'first' is running"):
        register_instance(engine, name="first", banks=[BANK], now=T0 + timedelta(seconds=10), lease_s=30, single=True)
    # once the first one's lease has expired (it died), another may start
    register_instance(engine, name="second", banks=[BANK], now=T0 + timedelta(seconds=31), lease_s=30, single=True)
    engine.dispose()


def test_claim_statement_compiles_for_oracle_and_postgresql():
    from sqlalchemy.dialects import oracle, postgresql

    ora = str(claim_statement("oracle", [BANK], T0, "e1", False).compile(dialect=oracle.dialect()))
    assert "FOR UPDATE SKIP LOCKED" in ora and "FETCH FIRST" not in ora and "ROWNUM" not in ora
    pg = str(claim_statement("postgresql", [BANK], T0, "e1", False, limit=2).compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE SKIP LOCKED" in pg and "LIMIT" in pg
    lite = str(claim_statement("sqlite", [BANK], T0, "e1", False).compile())
    assert "FOR UPDATE" not in lite
