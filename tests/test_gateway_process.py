"""``gridpay serve`` as operators run it: HTTP endpoints, the transaction log, SIGTERM, kill -9."""
import csv
import json
import os
import signal
import time

import psutil

import pytest
from sqlalchemy import select

from ledger.db import make_engine
from ledger.schema import payments, reversals
from ledger_helpers import add_banks, assert_ledger_verifies, new_engine, setup_customers
from process_harness import GatewayProcess


def prepare(tmp_path, url, n=3000):
    engine = new_engine(url)
    with engine.begin() as conn:
        add_banks(conn, "01020000", "01030000", "01050000")
    numbers = setup_customers(engine, n, bills_each=2)
    engine.dispose()
    customers = tmp_path / "customers.txt"
    customers.write_text("\n".join(numbers))
    return customers


def client_view(receipts_file):
    with open(receipts_file) as fh:
        rows = list(csv.DictReader(fh))
    return {r["receipt"] for r in rows if r["kind"] == "paid"}, {r["receipt"] for r in rows if r["kind"] == "reversed"}


def wait_for_payments(url, n=100, timeout=60.0):
    """Until the ledger holds n payments: the load is really under way."""
    engine = make_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if len(conn.execute(select(payments.c.payment_id).limit(n)).all()) >= n:
                    return
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError(f"fewer than {n} payments after {timeout} s")


def ledger_view(url):
    engine = make_engine(url)
    with engine.connect() as conn:
        paid = {r.receipt_no for r in conn.execute(select(payments.c.receipt_no))}
        reversed_ = {r.receipt_no for r in conn.execute(
            select(payments.c.receipt_no).join(reversals, reversals.c.payment_id == payments.c.payment_id))}
    engine.dispose()
    return paid, reversed_


def test_metrics_health_and_transaction_log(tmp_path, sqlite_url):
    customers = prepare(tmp_path, sqlite_url, n=50)
    gw = GatewayProcess(tmp_path, sqlite_url).start()
    try:
        run = gw.sim("ascii", "01020000", "ascii", customers, tmp_path / "r.csv", "--count", "20",
                     "--mix", "pay=80,malformed=20")
        assert json.loads(run.stdout)["mismatches"] == 0, run.stdout + run.stderr
        status, body = gw.http("/metrics")
        assert status == 200
        for name in ("gridpay_transactions_total", "gridpay_transaction_seconds_bucket", "gridpay_in_flight_requests",
                     "gridpay_connections", "gridpay_bank_signed_on", "gridpay_format_errors_total",
                     "gridpay_db_commit_seconds_bucket", "gridpay_db_batch_size_bucket"):
            assert name in body, name
        assert 'gridpay_transactions_total{bank="01020000",mti="0200",processing_code="500000",response_code="00"}' in body
        status, body = gw.http("/healthz")
        assert status == 200 and json.loads(body)["status"] == "up"
        status, body = gw.http("/readyz")
        assert status == 200 and json.loads(body) == {"status": "ready", "database": "ok", "commits": "ok",
                                                      "listeners": {"up": 2, "configured": 2}}
        assert gw.terminate() == 0
    finally:
        if gw.proc.poll() is None:
            gw.kill9()
    lines = [json.loads(line.split(" gridpay.tx ", 1)[1]) for line in gw.log.read_text().splitlines()
             if " gridpay.tx " in line]
    payment = next(x for x in lines if x["mti"] == "0200" and x["rc"] == "00")
    assert set(payment) >= {"bank", "mti", "pc", "stan", "rrn", "rc", "latency_ms", "customer"}
    assert "*" in payment["customer"]
    raw = gw.log.read_text()
    first_customer = customers.read_text().split()[0]
    assert first_customer not in raw  # customer numbers never appear unmasked


@pytest.mark.parametrize("listener,bank,dialect", [("ascii", "01020000", "ascii"), ("bcd", "01050000", "bcd")])
def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path, db_url, listener, bank, dialect):
    customers = prepare(tmp_path, db_url)
    gw = GatewayProcess(tmp_path, db_url).start()
    sim = gw.sim(listener, bank, dialect, customers, tmp_path / "r.csv", "--count", "3000", "--connections", "4",
                 "--mix", "pay=95,reverse=5", background=True)
    wait_for_payments(db_url)
    assert gw.terminate() == 0
    out, err = sim.communicate(timeout=120)
    client_paid, client_reversed = client_view(tmp_path / "r.csv")
    ledger_paid, ledger_reversed = ledger_view(db_url)
    assert client_paid, f"the simulator got no payment through before SIGTERM: {out} {err}"
    # drained: every payment committed was answered, and every answer was committed
    assert ledger_paid == client_paid
    assert ledger_reversed == client_reversed
    assert_ledger_verifies(db_url)


def test_ctrl_c_to_the_whole_group_drains_like_sigterm(tmp_path, sqlite_url):
    """SIGINT reaches the gateway and its worker processes at once (a terminal's Ctrl-C): the
    workers leave their life to the gateway, which drains, so every answer is in the ledger."""
    customers = prepare(tmp_path, sqlite_url)
    gw = GatewayProcess(tmp_path, sqlite_url).start(own_group=True)
    sim = gw.sim("ascii", "01020000", "ascii", customers, tmp_path / "r.csv", "--count", "3000", "--connections", "4",
                 background=True)
    wait_for_payments(sqlite_url)
    workers = workers_of(gw)
    assert gw.interrupt_group() == 0
    sim.communicate(timeout=120)
    assert gone(workers)
    client_paid, _ = client_view(tmp_path / "r.csv")
    ledger_paid, _ = ledger_view(sqlite_url)
    assert client_paid and ledger_paid == client_paid
    assert "worker process lost" not in gw.log.read_text()
    assert_ledger_verifies(sqlite_url)


def workers_of(gw) -> list[psutil.Process]:
    return [p for p in psutil.Process(gw.proc.pid).children() if "runtime.worker_child" in " ".join(p.cmdline())]


def gone(procs: list[psutil.Process], timeout: float = 15.0) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not alive


def test_kill_9_loses_no_acknowledged_payment(tmp_path, db_url):
    customers = prepare(tmp_path, db_url)
    gw = GatewayProcess(tmp_path, db_url).start()
    sim = gw.sim("ascii", "01020000", "ascii", customers, tmp_path / "r.csv", "--count", "3000",
                 "--connections", "4", "--mix", "pay=95,reverse=5", background=True)
    wait_for_payments(db_url)
    workers = workers_of(gw)
    assert len(workers) == 2  # the committer and the reader
    gw.kill9()
    assert gone(workers), "the gateway's database workers outlived it"
    out, err = sim.communicate(timeout=120)
    client_paid, client_reversed = client_view(tmp_path / "r.csv")
    ledger_paid, ledger_reversed = ledger_view(db_url)
    assert client_paid, f"the simulator got no payment through before the kill: {out} {err}"
    assert client_paid <= ledger_paid            # every 00 the bank received is in the ledger
    assert client_reversed <= ledger_reversed
    assert_ledger_verifies(db_url)
    restarted = GatewayProcess(tmp_path, db_url).start()  # and it serves again on the same database
    try:
        run = restarted.sim("ascii", "01020000", "ascii", customers, tmp_path / "r2.csv", "--count", "10")
        assert json.loads(run.stdout)["codes"]["00"] >= 10
    finally:
        assert restarted.terminate() == 0
    assert_ledger_verifies(db_url)


def test_a_killed_committer_is_replaced_and_every_answer_matches_the_ledger(tmp_path, db_url):
    """kill -9 of the committer process in the middle of the load: the gateway starts another,
    which answers the batch the dead one had not (replaying what had committed). The bank sees
    no error and no payment is lost or doubled."""
    customers = prepare(tmp_path, db_url)
    gw = GatewayProcess(tmp_path, db_url).start()
    try:
        committer = next(p for p in workers_of(gw) if "committer" in committer_name(gw, p))
        sim = gw.sim("ascii", "01020000", "ascii", customers, tmp_path / "r.csv", "--count", "3000",
                     "--connections", "4", "--mix", "pay=95,reverse=5", background=True)
        wait_for_payments(db_url)
        os.kill(committer.pid, signal.SIGKILL)
        out, err = sim.communicate(timeout=180)
        report = json.loads(out.strip().splitlines()[-1])
        assert report["mismatches"] == 0, out + err
        assert len(workers_of(gw)) == 2 and committer.pid not in [p.pid for p in workers_of(gw)]
        assert gw.terminate() == 0
    finally:
        if gw.proc.poll() is None:
            gw.kill9()
    client_paid, client_reversed = client_view(tmp_path / "r.csv")
    ledger_paid, ledger_reversed = ledger_view(db_url)
    assert ledger_paid == client_paid and ledger_reversed == client_reversed
    assert "worker process lost; restarting it" in gw.log.read_text()
    assert_ledger_verifies(db_url)


def committer_name(gw, proc: psutil.Process) -> str:
    """Which worker a child is, from the gateway's log line naming its pid when it became ready."""
    for line in gw.log.read_text().splitlines():
        if f"worker process {proc.pid} ready" in line:
            return line
    return ""
