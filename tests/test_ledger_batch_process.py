"""The ledger's worker processes (runtime.worker_process): batches in a child, answers after the
commit, cancels that apply nothing, a killed child replaced without losing or doubling a posting,
and a child that never outlives its parent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import pytest_twisted
from sqlalchemy import select
from twisted.internet import defer, reactor, task

from ledger.db import make_engine
from ledger.schema import payments
from ledger_helpers import assert_ledger_verifies, new_engine, payment
from runtime.worker_process import BatchProcess, NotStarted, TimedOut
from test_ledger_group_commit import posting_worker, setup


def payments_in(url: str) -> list[str]:
    engine = make_engine(url)
    with engine.connect() as conn:
        receipts = [r[0] for r in conn.execute(select(payments.c.receipt_no))]
    engine.dispose()
    return receipts


@pytest_twisted.ensureDeferred
async def test_postings_are_batched_in_the_child_and_answered_after_commit(db_url):
    nos = setup(new_engine(db_url), 300)
    sizes = []
    worker = posting_worker(db_url, on_batch=lambda n, s: sizes.append(n))
    await worker.start()
    assert worker.pid != os.getpid() and psutil.pid_exists(worker.pid)
    try:
        outcomes = await defer.gatherResults([worker.submit(payment("0102", c, 10_000)) for c in nos])
    finally:
        await worker.stop()
    assert {o.response_code for o in outcomes} == {"00"}
    assert sorted(o.fields["receipt_no"] for o in outcomes) == sorted(payments_in(db_url))
    assert sum(sizes) == 300 and len(sizes) < 300 and max(sizes) <= 64
    assert_ledger_verifies(db_url)


@pytest_twisted.ensureDeferred
async def test_a_killed_child_is_replaced_and_no_posting_is_lost_or_doubled(db_url):
    nos = setup(new_engine(db_url), 2000)
    worker = posting_worker(db_url, resend=True, restart_delay_s=0.2)
    await worker.start()
    first = worker.pid
    try:
        pending = [worker.submit(payment("0102", c, 10_000)) for c in nos]
        while worker.ops < 200:                      # in the middle of the load
            await task.deferLater(reactor, 0.01)
        os.kill(first, signal.SIGKILL)
        outcomes = await defer.gatherResults(pending)
    finally:
        await worker.stop()
    assert worker.restarts == 1
    assert {o.response_code for o in outcomes} == {"00"}     # the successor answered what the dead one had not
    receipts = [o.fields["receipt_no"] for o in outcomes]
    assert sorted(receipts) == sorted(payments_in(db_url))   # each payment once, and each answer is in the ledger
    assert_ledger_verifies(db_url)


@pytest_twisted.ensureDeferred
async def test_cancel_drops_what_has_not_begun_and_waits_for_what_has(sqlite_url):
    """The test holds SQLite's write lock: the first batch waits inside its transaction; the
    postings queued behind it are cancelled and apply nothing; the first one commits when the
    lock is released."""
    nos = setup(new_engine(sqlite_url), 3)
    config_engine = make_engine(sqlite_url)
    blocker = config_engine.raw_connection()
    blocker.execute("BEGIN IMMEDIATE")
    worker = posting_worker(sqlite_url, max_batch=1)
    await worker.start()
    try:
        first = worker.submit(payment("0102", nos[0], 10_000), cancel_after=0.5)
        await task.deferLater(reactor, 0.2)          # the child has begun the first batch
        queued = [worker.submit(payment("0102", c, 10_000), cancel_after=0.3) for c in nos[1:]]
        for d in queued:
            with pytest.raises(NotStarted):
                await d
        await task.deferLater(reactor, 0.5)          # past the first one's timeout: it is inside a commit
        assert not first.called
        blocker.rollback()
        assert (await first).response_code == "00"
    finally:
        blocker.close()
        config_engine.dispose()
        await worker.stop()
    assert len(payments_in(sqlite_url)) == 1
    assert_ledger_verifies(sqlite_url)


SLOW_WORKER = """
import time

class SlowEcho:
    def __init__(self, config):
        self.delay_s = config["delay_s"]

    def process(self, ops):
        time.sleep(self.delay_s)
        return list(ops)
"""


@pytest_twisted.ensureDeferred
async def test_a_late_read_is_given_up_inside_its_batch_and_its_result_dropped(tmp_path, monkeypatch):
    """An op submitted with abandon_late (an inquiry: it changes nothing) fails when its time
    runs out even while the child is processing it; the child's late answer is dropped, and the
    next op is answered as usual."""
    (tmp_path / "slow_worker.py").write_text(SLOW_WORKER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    worker = BatchProcess(reactor, "slow_worker:SlowEcho", {"delay_s": 0.6}, name="slow")
    await worker.start()
    try:
        late = worker.submit("late", cancel_after=0.2, abandon_late=True)
        with pytest.raises(TimedOut):
            await late
        assert worker.ops == 0                           # failed before the child answered
        assert await worker.submit("next", cancel_after=5, abandon_late=True) == "next"
        waited = worker.submit("waited", cancel_after=0.2)  # a write inside its batch is waited for
        assert await waited == "waited"
    finally:
        await worker.stop()
    assert worker.ops == 3


@pytest_twisted.ensureDeferred
async def test_stop_answers_everything_sent_then_later_submits_are_not_started(sqlite_url):
    nos = setup(new_engine(sqlite_url), 200)
    worker = posting_worker(sqlite_url)
    await worker.start()
    pending = [worker.submit(payment("0102", c, 10_000)) for c in nos]
    await worker.stop()
    assert all(d.called for d in pending)
    assert {(await d).response_code for d in pending} == {"00"}
    with pytest.raises(NotStarted):
        await worker.submit(payment("0102", nos[0], 10_000))
    assert len(payments_in(sqlite_url)) == 200


@pytest_twisted.ensureDeferred
async def test_a_worker_that_cannot_start_says_why():
    worker = BatchProcess(reactor, "ledger.group_commit:NoSuchWorker", {}, name="broken")
    with pytest.raises(RuntimeError, match="NoSuchWorker"):
        await worker.start()


@pytest_twisted.ensureDeferred
async def test_a_database_failure_is_each_posting_96_and_the_worker_carries_on(sqlite_url, tmp_path):
    nos = setup(new_engine(sqlite_url), 5)
    worker = posting_worker(f"sqlite:///{tmp_path / 'no-such-dir' / 'x' / 'gridpay.db'}")
    await worker.start()
    try:
        outcomes = await defer.gatherResults([worker.submit(payment("0102", c, 10_000)) for c in nos])
    finally:
        await worker.stop()
    assert {o.response_code for o in outcomes} == {"96"}


def test_the_child_exits_when_its_parent_is_killed(tmp_path, sqlite_url):
    setup(new_engine(sqlite_url), 1)
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from twisted.internet import asyncioreactor
        asyncioreactor.install()
        from twisted.internet import reactor
        from runtime.worker_process import BatchProcess
        config = {{"url": {sqlite_url!r}, "timezone": "Asia/Shanghai", "cutoff": "23:00"}}
        worker = BatchProcess(reactor, "ledger.group_commit:PostingWorker", config, name="orphan-test")
        worker.start().addCallback(lambda w: print(w.pid, flush=True))
        reactor.run()
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and psutil.pid_exists(child) and psutil.Process(child).status() != "zombie":
        time.sleep(0.05)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


@pytest_twisted.ensureDeferred
async def test_the_configuration_is_not_on_the_child_command_line(sqlite_url):
    """The database URL (which may carry a password) travels over the socket, not argv."""
    worker = posting_worker(sqlite_url)
    await worker.start()
    try:
        command = " ".join(psutil.Process(worker.pid).cmdline())
    finally:
        await worker.stop()
    assert "runtime.worker_child" in command and sqlite_url not in command and "sqlite" not in command
