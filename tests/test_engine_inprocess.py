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


def _another_engine_signed_on_twice(engine, host, clock):
    """What another engine's two sign-ons do: the bank holds a key two past the one this engine
    MACs with (so it answers A0, §4.2), and the shared key store has the bank's current key."""
    from iso8583_specs.keys import generate_mak
    from ledger.key_store import KeyStore
    from ledger.key_store_db import DbKeyBackend

    other = KeyStore(clock, backend=DbKeyBackend(engine, lambda bank: ZMK))
    for _ in range(2):
        mak = generate_mak()
        host.keys.install(BANK, "debit", mak)
        other.install(BANK, "debit", mak)


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
async def test_every_poll_claims_but_leases_are_renewed_once_housekeeping_is_due(sqlite_url, cleanup):
    """A poll claims work; the heartbeat (leases, a dead engine's reversals, keys) waits for
    housekeeping_s (1 s with a 30 s lease) on the engine's clock, however often it polls."""
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
    assert heartbeat() == T0.replace(tzinfo=None)
    batch(engine, chunk_size=5)
    fc.advance(0.5)
    await eng.poll()                                   # claims the new chunk; no heartbeat yet
    assert heartbeat() == T0.replace(tzinfo=None)
    assert eng.stats["chunks"] == 1
    await until(lambda: states(engine) == {"approved": 5})
    fc.advance(0.6)
    await eng.poll()                                   # 1.1 s since the last: housekeeping
    assert heartbeat() == (T0 + timedelta(seconds=1.1)).replace(tzinfo=None)
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
    dead = claim_chunks(engine, owner="dead", banks=[BANK], now=fc.now(), lease_s=30, clock=CAL)
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
