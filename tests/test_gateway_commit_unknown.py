"""A COMMIT whose outcome is unknown, at the counter (docs/spec/INTERFACE.md §6, §4.7).

The gateway answers the stored answer if the posting landed, 96 if it did not (a committer that
died is replaced, and its successor processes the postings it held as repeats), and nothing at all
when it cannot know by the bank's timeout; a later repeat or reversal then finds the truth. Real
faults, in the middle of a commit:
- the committer worker process killed with SIGKILL just before or just after its COMMIT
  (``commit_faults.KilledAtCommit``), on SQLite and PostgreSQL;
- on PostgreSQL, a proxy between the gateway and the server that loses the COMMIT, or the server's
  answer to it, and leaves the database unreachable for a while (``pg_fault_proxy``).
Every answer the bank gets is checked against the ledger: 00 ⇒ the payment is there (its RN), 96 ⇒
nothing is there, no answer ⇒ either, and the repeat afterwards tells which.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import reactor, task

from gateway.ledger_port import LedgerPort
from gateway_harness import answer_or_none, code_of, connected_bank, make_settings, start_gateway, stop_all, tags
from ledger.db import make_engine
from ledger.schema import payments, reversals
from ledger_helpers import assert_ledger_verifies
from test_gateway_codes import CUSTOMER, DUE
from test_gateway_counter import STANDARD, seed

TESTS = str(Path(__file__).resolve().parent)
BANK = "01020000"


@pytest.fixture
def kill_at_commit(monkeypatch, tmp_path) -> Path:
    """The gateway's committer is ``commit_faults.KilledAtCommit``; write 'before' or 'after' to the
    returned file to have it killed at its next write COMMIT."""
    monkeypatch.setattr(LedgerPort, "POSTING_WORKER", "commit_faults:KilledAtCommit")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    trigger = tmp_path / "kill-at-commit"
    monkeypatch.setenv("GRIDPAY_TEST_KILL_AT_COMMIT", str(trigger))
    return trigger


async def gateway_with(url: str, timeout_s: float):
    seed(url, STANDARD)
    gw = await start_gateway(reactor, url, settings=make_settings(url, **{BANK: {"request_timeout_s": timeout_s}}))
    return gw, await connected_bank(reactor, gw, BANK)


def paid(url: str, fields: dict) -> list[tuple[str, bool]]:
    """(receipt number, reversed) of each payment posted under the request's identity."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(payments.c.receipt_no, payments.c.payment_id).where(
                payments.c.bank_code == fields["32"], payments.c.transmitted == fields["7"],
                payments.c.stan == fields["11"])).all()
            done = set(conn.execute(select(reversals.c.payment_id)).scalars())
    finally:
        engine.dispose()
    return [(r.receipt_no, r.payment_id in done) for r in rows]


def assert_agrees(url: str, fields: dict, answer) -> None:
    """What the bank was told agrees with the ledger."""
    if answer is None:
        return
    if code_of(answer) == "00":
        assert [rn for rn, _ in paid(url, fields)] == [tags(answer)["RN"]]
    else:
        assert code_of(answer) == "96" and paid(url, fields) == []


def unanswered(gw) -> float:
    return gw.metrics.registry.get_sample_value("gridpay_unanswered_requests_total", {"bank": BANK}) or 0.0


async def worker_ready(gw, restarts: int = 1) -> None:
    poster = gw.ledger.poster
    for _ in range(300):
        if poster.restarts >= restarts and poster._ready:
            return
        await task.deferLater(reactor, 0.05)
    raise AssertionError("the committer was not restarted")


# --- the committer killed at its COMMIT: SQLite and PostgreSQL ---------------------------------

@pytest_twisted.ensureDeferred
async def test_killed_after_commit_answers_the_stored_answer(db_url, kill_at_commit):
    gw, bank = await gateway_with(db_url, timeout_s=6)
    try:
        kill_at_commit.write_text("after")
        fields = bank.payment_fields(CUSTOMER, DUE)
        answer = await answer_or_none(bank, "0200", fields, within=7)
        assert not kill_at_commit.exists() and gw.ledger.poster.restarts == 1
        assert answer is not None and code_of(answer) == "00"    # it landed: its stored answer
        assert_agrees(db_url, fields, answer)
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(db_url)


@pytest_twisted.ensureDeferred
async def test_killed_before_commit_is_posted_by_the_successor(db_url, kill_at_commit):
    """The successor processes the resent payment as a repeat: it had not landed, so it is posted."""
    gw, bank = await gateway_with(db_url, timeout_s=6)
    try:
        kill_at_commit.write_text("before")
        fields = bank.payment_fields(CUSTOMER, DUE)
        answer = await answer_or_none(bank, "0200", fields, within=7)
        assert not kill_at_commit.exists() and gw.ledger.poster.restarts == 1
        assert answer is not None and code_of(answer) == "00"
        assert_agrees(db_url, fields, answer)
        repeat = await bank.send("0200", fields)                  # the bank's repeat: the same answer
        assert code_of(repeat) == "00" and tags(repeat)["RN"] == tags(answer)["RN"]
        assert_agrees(db_url, fields, repeat)
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(db_url)


@pytest_twisted.ensureDeferred
async def test_killed_after_commit_past_the_timeout_is_not_answered_and_reversal_and_repeat_find_it(
        db_url, kill_at_commit):
    """The worker's successor is not up before the bank's timeout: the gateway cannot know, so it
    sends nothing: a 96 would deny a payment that landed. The bank's 0420 then reverses
    the payment, and a repeat of the 0200 gets the stored answer."""
    gw, bank = await gateway_with(db_url, timeout_s=0.8)
    try:
        kill_at_commit.write_text("after")
        fields = bank.payment_fields(CUSTOMER, DUE)
        answer = await answer_or_none(bank, "0200", fields, within=2.0)
        assert not kill_at_commit.exists()
        assert [r for _, r in paid(db_url, fields)] == [False]    # it had landed
        assert_agrees(db_url, fields, answer)
        assert answer is None, f"answered {code_of(answer)} though the outcome was unknown"
        assert unanswered(gw) == 1
        await worker_ready(gw)
        reversal = await bank.send("0420", bank.reversal_fields(fields))
        assert code_of(reversal) == "00"
        assert [r for _, r in paid(db_url, fields)] == [True]
        repeat = await bank.send("0200", fields)
        assert code_of(repeat) == "00"
        assert [rn for rn, _ in paid(db_url, fields)] == [tags(repeat)["RN"]]
        assert unanswered(gw) == 1
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(db_url)


@pytest_twisted.ensureDeferred
async def test_killed_before_commit_past_the_timeout_is_not_answered_and_the_reversal_is_an_orphan(
        db_url, kill_at_commit):
    gw, bank = await gateway_with(db_url, timeout_s=0.8)
    try:
        kill_at_commit.write_text("before")
        fields = bank.payment_fields(CUSTOMER, DUE)
        assert await answer_or_none(bank, "0200", fields, within=2.0) is None
        assert paid(db_url, fields) == []
        await worker_ready(gw)
        reversal = await bank.send("0420", bank.reversal_fields(fields))
        assert code_of(reversal) == "25"                          # nothing to reverse, remembered
        repeat = await bank.send("0200", fields)
        assert code_of(repeat) == "12"                            # reversed before it arrived
        assert paid(db_url, fields) == []
    finally:
        await stop_all(gw, bank)
    assert_ledger_verifies(db_url)


# --- PostgreSQL: the COMMIT or its answer lost between the gateway and the server ---------------

@pytest.fixture
def proxy(pg_url):
    from pg_fault_proxy import PgFaultProxy

    seed(pg_url, STANDARD)
    p = PgFaultProxy(pg_url)
    yield p
    p.close()


async def proxied_gateway(pg_url, proxy, timeout_s: float):
    from ledger import migrate

    migrate.upgrade(pg_url)
    gw = await start_gateway(reactor, proxy.url, upgrade=False, settings=make_settings(
        proxy.url, **{BANK: {"request_timeout_s": timeout_s}}))
    bank = await connected_bank(reactor, gw, BANK)
    warm = bank.payment_fields(CUSTOMER, DUE)                   # the committer's connection is open
    assert code_of(await bank.send("0200", warm)) == "00"
    return gw, bank


async def back_up(proxy) -> None:
    while proxy.down():
        await task.deferLater(reactor, 0.1)


@pytest_twisted.ensureDeferred
async def test_pg_commit_answer_lost_and_database_back_in_time_answers_the_stored_answer(pg_url, proxy):
    gw, bank = await proxied_gateway(pg_url, proxy, timeout_s=6)
    try:
        proxy.arm("answer_lost", down_s=1.5)
        fields = bank.payment_fields(CUSTOMER, DUE)
        answer = await answer_or_none(bank, "0200", fields, within=7)
        assert proxy.fired.is_set()
        assert answer is not None and code_of(answer) == "00", answer and code_of(answer)
        assert_agrees(pg_url, fields, answer)
    finally:
        await back_up(proxy)
        await stop_all(gw, bank)
    assert_ledger_verifies(pg_url)


@pytest_twisted.ensureDeferred
async def test_pg_commit_answer_lost_and_database_gone_past_the_timeout_is_not_answered(pg_url, proxy):
    gw, bank = await proxied_gateway(pg_url, proxy, timeout_s=2)
    try:
        proxy.arm("answer_lost", down_s=4)
        fields = bank.payment_fields(CUSTOMER, DUE)
        answer = await answer_or_none(bank, "0200", fields, within=3)
        assert proxy.fired.is_set()
        assert [r for _, r in paid(pg_url, fields)] == [False]   # it had landed
        assert_agrees(pg_url, fields, answer)
        assert answer is None, f"answered {code_of(answer)} though the outcome was unknown"
        assert unanswered(gw) == 1
        await back_up(proxy)
        repeat = await bank.send("0200", fields)
        assert code_of(repeat) == "00"                            # the stored answer
        assert_agrees(pg_url, fields, repeat)
        reversal = await bank.send("0420", bank.reversal_fields(fields))
        assert code_of(reversal) == "00" and [r for _, r in paid(pg_url, fields)] == [True]
    finally:
        await back_up(proxy)
        await stop_all(gw, bank)
    assert_ledger_verifies(pg_url)


@pytest_twisted.ensureDeferred
async def test_pg_commit_never_sent_answers_96_and_the_repeat_is_posted(pg_url, proxy):
    gw, bank = await proxied_gateway(pg_url, proxy, timeout_s=6)
    try:
        proxy.arm("never_sent", down_s=1.5)
        fields = bank.payment_fields(CUSTOMER, DUE)
        answer = await answer_or_none(bank, "0200", fields, within=7)
        assert proxy.fired.is_set()
        assert answer is not None and code_of(answer) == "96"
        assert_agrees(pg_url, fields, answer)
        await back_up(proxy)
        repeat = await bank.send("0200", fields)
        assert code_of(repeat) == "00"
        assert_agrees(pg_url, fields, repeat)
    finally:
        await back_up(proxy)
        await stop_all(gw, bank)
    assert_ledger_verifies(pg_url)
