"""The notifier's core against a real database (SQLite and PostgreSQL) and a loopback SMS gateway:
claim, send, record; backoff on the injected clock; dead letters; the sweep; requeue; gauges."""
from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from prometheus_client import generate_latest
from sqlalchemy import select
from sqlalchemy.dialects import oracle, postgresql, sqlite

from engines.notifier import (IN_FLIGHT, OUTCOME_UNKNOWN, Notifier, RequeueError, as_utc, claim_statement,
                              mask_digits, requeue)
from runtime.ratelimit import Backoff
from engines.sms import FileSender, HttpSender
from ledger.schema import audit_log, outbox
from ledger_helpers import new_engine
from test_notifier_support import FakeTime, Reply, SmsGateway, add_notices, rows_of, states


@pytest.fixture
def sink(tmp_path):
    return tmp_path / "sms.jsonl"


@pytest.fixture
def engine(db_url):
    engine = new_engine(db_url)
    yield engine
    engine.dispose()


def make(engine, sender, clock=None, **kw) -> Notifier:
    kw.setdefault("backoff", Backoff(10, 1000, jitter=0))
    kw.setdefault("send_timeout_s", 2.0)
    kw.setdefault("lease_s", 60.0)
    return Notifier(engine, sender, clock=clock or FakeTime(), **kw)


def metric(notifier, name: str, **labels) -> float | None:
    return notifier.metrics.registry.get_sample_value(name, labels or None)


def test_file_sender_sends_each_notice_once(engine, tmp_path):
    ids = add_notices(engine, 3)
    clock = FakeTime()
    path = tmp_path / "sms.jsonl"
    notifier = make(engine, FileSender(path), clock, name="n1")
    report = notifier.run_once()
    assert (report.claimed, report.sent) == (3, 3)
    assert notifier.run_once().claimed == 0
    notifier.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == ids
    first = next(line for line in lines if line["id"] == ids[0])  # sends are concurrent: file order is not id order
    assert first["mobile"] == "13800000001" and "375.35" in first["text"]
    for row in rows_of(engine).values():
        assert (row["state"], row["attempts"], row["claimed_by"]) == ("sent", 1, "n1")
        assert row["sent_at"] is not None and row["next_attempt_at"] is None
    assert metric(notifier, "gridpay_notices_sent_total") == 3


def test_http_success(engine):
    add_notices(engine, 2)
    with SmsGateway() as gw:
        notifier = make(engine, HttpSender(gw.url, headers={"X-App": "gridpay"}, timeout=2))
        assert notifier.run_once().sent == 2
        notifier.close()
    assert states(engine) == {"sent": 2}
    first = sorted(gw.seen, key=lambda s: s.ref)[0]
    assert first.method == "POST" and first.path == "/sms/send" and first.headers["X-App"] == "gridpay"
    assert first.fields == {"mobile": "13800000001", "ref": "payment:1",
                            "text": "您好，您(0100000001)2026年10月的电费为375.35元已缴，谢谢。"}


def test_http_500_is_retried_with_backoff_then_sent(engine):
    [nid] = add_notices(engine, 1)
    clock = FakeTime()
    t0 = clock()
    with SmsGateway(lambda seen, n: Reply(500, "busy") if n <= 2 else Reply()) as gw:
        notifier = make(engine, HttpSender(gw.url, timeout=2), clock, backoff=Backoff(10, 1000, jitter=0))
        assert notifier.run_once().retried == 1
        row = rows_of(engine)[nid]
        assert row["state"] == "pending" and row["attempts"] == 1 and row["claimed_by"] is None
        assert row["last_error"].startswith("http_5xx: HTTP 500")
        assert as_utc(row["next_attempt_at"]) == t0 + timedelta(seconds=10)

        clock.advance(9.9)
        assert notifier.run_once().claimed == 0           # not due yet
        clock.advance(0.1)
        assert notifier.run_once().retried == 1           # second failure: 20 s now
        row = rows_of(engine)[nid]
        assert as_utc(row["next_attempt_at"]) == clock() + timedelta(seconds=20)
        clock.advance(19)
        assert notifier.run_once().claimed == 0
        clock.advance(1)
        assert notifier.run_once().sent == 1
        notifier.close()
    assert gw.refs() == {"payment:1": 3}
    row = rows_of(engine)[nid]
    assert row["state"] == "sent" and row["attempts"] == 3
    assert metric(notifier, "gridpay_notices_failed_total", reason="http_5xx") == 2
    assert metric(notifier, "gridpay_notices_sent_total") == 1


def test_retry_limit_makes_a_notice_dead(engine):
    [nid] = add_notices(engine, 1)
    clock = FakeTime()
    with SmsGateway(lambda seen, n: Reply(503, "down")) as gw:
        notifier = make(engine, HttpSender(gw.url, timeout=2), clock, max_attempts=3,
                        backoff=Backoff(5, 8, jitter=0))
        for _ in range(3):
            notifier.run_once()
            clock.advance(8)                               # capped at 8 s
        assert notifier.run_once().claimed == 0
        notifier.close()
    assert gw.refs() == {"payment:1": 3}
    row = rows_of(engine)[nid]
    assert row["state"] == "dead" and row["attempts"] == 3 and row["next_attempt_at"] is None
    assert row["last_error"].startswith("retry limit (3 attempts): http_5xx: HTTP 503")
    assert metric(notifier, "gridpay_notices_dead_total", cause="retry_limit") == 1


def test_4xx_is_dead_at_once_but_429_is_retried(engine):
    ids = add_notices(engine, 2)
    clock = FakeTime()

    def script(seen, n):
        if seen.ref == "payment:1":
            return Reply(400, '{"error": "bad mobile 13800000001"}')
        return Reply(429, "slow down", headers={"Retry-After": "120"}) if n == 1 else Reply()

    with SmsGateway(script) as gw:
        notifier = make(engine, HttpSender(gw.url, timeout=2), clock, backoff=Backoff(10, 1000, jitter=0))
        report = notifier.run_once()
        assert (report.dead, report.retried) == (1, 1)
        rows = rows_of(engine)
        assert rows[ids[0]]["state"] == "dead" and rows[ids[0]]["last_error"].startswith("http_4xx: HTTP 400")
        assert as_utc(rows[ids[1]]["next_attempt_at"]) == clock() + timedelta(seconds=120)  # Retry-After beats 10 s
        clock.advance(120)
        assert notifier.run_once().sent == 1
        notifier.close()
    assert gw.refs() == {"payment:1": 1, "payment:2": 2}
    assert metric(notifier, "gridpay_notices_dead_total", cause="permanent") == 1
    assert metric(notifier, "gridpay_notices_failed_total", reason="http_4xx") == 1
    assert metric(notifier, "gridpay_notices_failed_total", reason="http_429") == 1


def test_no_answer_is_outcome_unknown_and_not_retried(engine):
    [nid] = add_notices(engine, 1)
    with SmsGateway(lambda seen, n: Reply(delay_s=1.5)) as gw:
        notifier = make(engine, HttpSender(gw.url, timeout=0.3), send_timeout_s=0.3)
        assert notifier.run_once().dead == 1
        notifier.close()
    row = rows_of(engine)[nid]
    assert row["state"] == "dead" and row["last_error"].startswith("outcome unknown: timeout")
    assert metric(notifier, "gridpay_notices_dead_total", cause="outcome_unknown") == 1


def test_connection_refused_is_retried(engine):
    [nid] = add_notices(engine, 1)
    with SmsGateway() as gw:
        url = gw.url
    notifier = make(engine, HttpSender(url, timeout=1))           # nobody listens there any more
    assert notifier.run_once().retried == 1
    notifier.close()
    assert rows_of(engine)[nid]["last_error"].startswith("connect: ")
    assert metric(notifier, "gridpay_notices_failed_total", reason="connect") == 1


def test_claim_statements():
    now = FakeTime()()
    pg = str(claim_statement("postgresql", 50, now).compile(dialect=postgresql.dialect()))
    assert "FOR UPDATE SKIP LOCKED" in pg and "LIMIT" in pg
    ora = str(claim_statement("oracle", 50, now).compile(dialect=oracle.dialect()))
    assert ora.rstrip().endswith("FOR UPDATE SKIP LOCKED")
    assert "FETCH FIRST" not in ora and "ROWNUM" not in ora.upper()    # ORA-02014 with FOR UPDATE
    lite = str(claim_statement("sqlite", 50, now).compile(dialect=sqlite.dialect()))
    assert "FOR UPDATE" not in lite and "LIMIT" in lite


def test_claimed_rows_are_not_claimed_again(engine, sink):
    add_notices(engine, 5)
    clock = FakeTime()
    a = make(engine, FileSender(sink), clock, name="a")
    b = make(engine, FileSender(sink), clock, name="b")
    mine = a.store.claim(clock(), 3, 60)
    theirs = b.store.claim(clock(), 10, 60)
    assert len(mine) == 3 and len(theirs) == 2
    assert not {n.id for n in mine} & {n.id for n in theirs}
    assert b.store.claim(clock(), 10, 60) == []
    a.close(), b.close()


def test_sweep_after_the_lease(engine, sink):
    ids = add_notices(engine, 3)
    clock = FakeTime()
    dead_one = make(engine, FileSender(sink), clock, name="dead-one")
    notices = dead_one.store.claim(clock(), 10, 60)
    assert dead_one.store.begin_attempt(notices[0], clock())    # in flight when it "died"
    dead_one.close()
    other = make(engine, FileSender(sink), clock, name="other")
    assert other.run_once().claimed == 0
    clock.advance(59)
    assert other.sweep() == ([], [])                           # lease not over
    clock.advance(1)
    assert other.sweep() == ([ids[0]], ids[1:])
    rows = rows_of(engine)
    assert rows[ids[0]]["state"] == "dead" and rows[ids[0]]["last_error"] == OUTCOME_UNKNOWN
    assert rows[ids[0]]["claimed_by"] == "dead-one" and rows[ids[0]]["attempts"] == 1
    assert [rows[i]["state"] for i in ids[1:]] == ["pending", "pending"]
    assert [rows[i]["attempts"] for i in ids[1:]] == [0, 0]
    assert other.run_once().sent == 2                          # never begun: sent now
    assert other.run_once().claimed == 0                       # the in-flight one is not resent
    assert metric(other, "gridpay_notices_dead_total", cause="outcome_unknown") == 1
    other.close()


def test_a_late_batch_puts_notices_back_unsent(engine, sink):
    ids = add_notices(engine, 3)
    clock = FakeTime()

    class SlowSender(FileSender):
        def send(self, notice):
            super().send(notice)
            clock.advance(50)       # lease 60, timeout 2: no attempt may begin after 56 s

    notifier = make(engine, SlowSender(sink), clock, concurrency=1)
    report = notifier.run_once()
    assert (report.sent, report.released) == (2, 1)
    row = rows_of(engine)[ids[2]]
    assert row["state"] == "pending" and row["attempts"] == 0 and row["claimed_by"] is None
    notifier.close()


def test_a_result_after_the_sweep_is_still_recorded(engine, sink):
    [nid] = add_notices(engine, 1)
    clock = FakeTime()

    class SweptWhileSending(FileSender):
        def send(self, notice):
            clock.advance(61)
            other = make(engine, FileSender(sink), clock, name="other")
            assert other.sweep() == ([nid], [])
            other.close()

    notifier = make(engine, SweptWhileSending(sink), clock, concurrency=1)
    assert notifier.run_once().sent == 1
    assert rows_of(engine)[nid]["state"] == "sent"
    notifier.close()


def test_requeue_is_audited_and_all_or_nothing(engine):
    ids = add_notices(engine, 2)
    clock = FakeTime()
    with SmsGateway(lambda seen, n: Reply(400) if n == 1 else Reply()) as gw:
        notifier = make(engine, HttpSender(gw.url, timeout=2), clock)
        notifier.run_once()
        assert states(engine) == {"dead": 2}
        with pytest.raises(RequeueError, match="no such notice: 999"):
            requeue(engine, [ids[0], 999], "ops:li")
        with engine.begin() as conn:
            conn.execute(outbox.update().where(outbox.c.id == ids[1]).values(state="sent"))
        with pytest.raises(RequeueError, match=f"{ids[1]} is sent"):
            requeue(engine, ids, "ops:li")
        assert states(engine) == {"dead": 1, "sent": 1}
        assert requeue(engine, [ids[0]], "ops:li", "customer asked", now=clock()) == [ids[0]]
        row = rows_of(engine)[ids[0]]
        assert (row["state"], row["attempts"], row["last_error"]) == ("pending", 0, None)
        assert notifier.run_once().sent == 1
        notifier.close()
    assert gw.refs()["payment:1"] == 2
    with engine.connect() as conn:
        [audit] = conn.execute(select(audit_log)).all()
    assert (audit.actor, audit.action, audit.object_type, audit.object_id, audit.reason) == \
        ("ops:li", "notice_requeue", "outbox", str(ids[0]), "customer asked")
    assert json.loads(audit.details)["last_error"].startswith("http_4xx")


def test_backlog_and_oldest_age(engine, sink):
    clock = FakeTime()
    now = clock()
    old = add_notices(engine, 2, at=now - timedelta(seconds=100), prefix="bill_notice")
    new = add_notices(engine, 3, at=now - timedelta(seconds=40))
    with engine.begin() as conn:
        conn.execute(outbox.update().where(outbox.c.id == old[0]).values(state="sent"))
        conn.execute(outbox.update().where(outbox.c.id == old[1]).values(state="dead"))
        conn.execute(outbox.update().where(outbox.c.id == new[0]).values(
            state="pending", next_attempt_at=now + timedelta(hours=1)))       # waiting for a retry: counts
        conn.execute(outbox.update().where(outbox.c.id == new[1]).values(
            state="sending", next_attempt_at=now + timedelta(minutes=5)))
    notifier = make(engine, FileSender(sink), clock)
    stats = notifier.refresh_gauges()
    assert (stats.backlog, stats.sending, stats.dead) == (2, 1, 1)
    assert stats.oldest_age_s == pytest.approx(40)
    text = generate_latest(notifier.metrics.registry).decode()
    assert "gridpay_outbox_backlog 2.0" in text
    assert "gridpay_outbox_oldest_age_seconds 40.0" in text
    clock.advance(60)
    assert notifier.refresh_gauges().oldest_age_s == pytest.approx(100)
    with engine.begin() as conn:
        conn.execute(outbox.update().where(outbox.c.state == "pending").values(state="sent"))
    stats = notifier.refresh_gauges()
    assert (stats.backlog, stats.oldest_age_s) == (0, 0)
    notifier.close()


def test_two_notifiers_in_threads_send_each_notice_once(db_url):
    engines = [new_engine(db_url), new_engine(db_url)]
    add_notices(engines[0], 500)
    with SmsGateway(lambda seen, n: Reply(delay_s=0.001)) as gw:
        notifiers = [Notifier(e, HttpSender(gw.url, timeout=5), name=f"t{i}", batch_size=20, concurrency=4)
                     for i, e in enumerate(engines)]
        start = threading.Barrier(2)

        def work(n):
            start.wait()
            while n.run_once().claimed:
                pass

        threads = [threading.Thread(target=work, args=(n,)) for n in notifiers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for n in notifiers:
            n.close()
    refs = gw.refs()
    assert len(refs) == 500 and set(refs.values()) == {1}
    rows = rows_of(engines[0])
    assert {r["state"] for r in rows.values()} == {"sent"}
    by = {name: sum(1 for r in rows.values() if r["claimed_by"] == name) for name in ("t0", "t1")}
    assert by["t0"] > 0 and by["t1"] > 0, by
    for e in engines:
        e.dispose()


def test_logs_mask_numbers(engine, caplog):
    add_notices(engine, 1)
    with SmsGateway(lambda seen, n: Reply(400, "bad number 13800000001")) as gw:
        notifier = make(engine, HttpSender(gw.url, timeout=2))
        with caplog.at_level("INFO", logger="gridpay.notifier"):
            notifier.run_once()
        notifier.close()
    assert "13800000001" not in caplog.text and "0100000001" not in caplog.text
    assert "*********01" in caplog.text
    assert mask_digits("call 13800000001 re 6222021001122334455") == "call *********01 re 6222***********4455"


def test_in_flight_marker_is_what_the_sweep_reads(engine, sink):
    [nid] = add_notices(engine, 1)
    clock = FakeTime()
    notifier = make(engine, FileSender(sink), clock, name="x")
    [n] = notifier.store.claim(clock(), 1, 60)
    notifier.store.begin_attempt(n, clock())
    row = rows_of(engine)[nid]
    assert row["state"] == "sending" and row["last_error"].startswith(IN_FLIGHT) and row["attempts"] == 1
    notifier.close()


def test_an_idle_loop_polls_without_spinning_and_stops_promptly(engine, sink):
    from engines.notifier import NotifierLoop

    notifier = make(engine, FileSender(sink))
    claims = []
    real_claim = notifier.store.claim
    notifier.store.claim = lambda *a: claims.append(1) or real_claim(*a)
    started = time.monotonic()
    loop = NotifierLoop(notifier, poll_interval_s=0.1, sweep_interval_s=10).start()
    while len(claims) < 3:     # it polls again and again (a loaded machine may take its time)...
        assert time.monotonic() - started < 60, "the idle loop stopped polling"
        threading.Event().wait(0.05)
    assert loop.stop(5)
    # ... but idle it waits its interval between polls: never more than one claim per 0.1 s
    assert len(claims) <= (time.monotonic() - started) / 0.1 + 2, len(claims)
    assert loop.last_cycle is not None and loop.last_error is None
    notifier.close()


def test_a_loop_survives_database_errors(sqlite_url, sink):
    from engines.notifier import NotifierLoop
    from ledger.db import make_engine

    engine = make_engine(sqlite_url)                  # no schema: every query fails
    notifier = make(engine, FileSender(sink))
    loop = NotifierLoop(notifier, poll_interval_s=0.05, sweep_interval_s=0.05, max_error_wait_s=0.1).start()
    threading.Event().wait(0.5)
    assert loop.running and "no such table" in loop.last_error
    assert metric(notifier, "gridpay_db_up") == 0
    assert loop.stop(5)
    notifier.close()
    engine.dispose()


def test_a_result_the_database_refused_is_recorded_later(engine, sink):
    [nid] = add_notices(engine, 1)
    clock = FakeTime()
    notifier = make(engine, FileSender(sink), clock)
    real = notifier.store.record_sent
    calls = []

    def flaky(notice, now):
        calls.append(now)
        if len(calls) == 1:
            raise ConnectionError("database went away")
        return real(notice, now)

    notifier.store.record_sent = flaky
    assert notifier.run_once().unrecorded == 1
    assert rows_of(engine)[nid]["state"] == "sending"
    assert metric(notifier, "gridpay_db_up") == 0
    clock.advance(5)
    assert notifier.run_once().claimed == 0             # settles what it owes first
    row = rows_of(engine)[nid]
    assert row["state"] == "sent" and as_utc(row["sent_at"]) == calls[0]
    assert len(sink.read_text().splitlines()) == 1
    notifier.close()
