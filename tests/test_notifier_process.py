"""``gridpay notifier`` as real processes: two at once, kill -9 while sending, SIGTERM mid-batch,
/metrics /healthz /readyz, ``--once``, ``status`` and ``requeue``."""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from engines.notifier import OUTCOME_UNKNOWN
from ledger.schema import audit_log
from gridpay.operator_auth import os_login
from identity_helpers import operator_env
from ledger_helpers import new_engine
from test_notifier_support import (NotifierProcess, Reply, SmsGateway, add_notices, gridpay, notifier_env, rows_of,
                                   states)


@pytest.fixture
def engine(db_url):
    engine = new_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def procs():
    started: list[NotifierProcess] = []
    yield started
    for p in started:
        p.stop_quietly()


def wait_until(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sample(metrics_text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics_text, re.M)
    return float(match[1]) if match else None


def test_two_notifier_processes_send_each_notice_once(db_url, engine, tmp_path, procs):
    with SmsGateway(lambda seen, n: Reply(delay_s=0.002)) as gw:
        env = notifier_env(db_url, tmp_path, sender="http", http_url=gw.url, batch_size=10, concurrency=4)
        for i in range(2):
            procs.append(NotifierProcess(env, tmp_path / f"notifier{i}.log").start())
        add_notices(engine, 500)           # both are polling by now
        wait_until(lambda: states(engine) == {"sent": 500}, 120, "500 notices sent")
        time.sleep(0.5)                    # room for a duplicate to show
        assert [p.terminate() for p in procs] == [0, 0]
    refs = gw.refs()
    assert len(refs) == 500 and set(refs.values()) == {1}
    by = {}
    for row in rows_of(engine).values():
        by[row["claimed_by"]] = by.get(row["claimed_by"], 0) + 1
    assert set(by) == {p.name for p in procs} and min(by.values()) > 0, by


def test_a_notice_in_flight_when_its_notifier_dies_is_not_resent(db_url, engine, tmp_path, procs):
    ids = add_notices(engine, 3)
    hold = threading.Event()
    with SmsGateway(lambda seen, n: Reply(hold=hold) if (seen.ref, n) == ("payment:1", 1) else Reply()) as gw:
        env = notifier_env(db_url, tmp_path, sender="http", http_url=gw.url, batch_size=3, concurrency=1,
                           http_timeout_s=2.0, lease_s=6.0, sweep_interval_s=0.5)
        victim = NotifierProcess(env, tmp_path / "victim.log").start()
        procs.append(victim)
        gw.wait_for(lambda seen: any(s.ref == "payment:1" for s in seen))
        victim.kill9()
        rows = rows_of(engine)
        assert rows[ids[0]]["state"] == "sending" and rows[ids[0]]["attempts"] == 1
        assert [rows[i]["state"] for i in ids[1:]] == ["sending", "sending"]      # claimed, never begun

        other = NotifierProcess(env, tmp_path / "other.log").start()
        procs.append(other)
        wait_until(lambda: rows_of(engine)[ids[0]]["state"] == "dead", 30, "the lease to end")
        wait_until(lambda: states(engine) == {"dead": 1, "sent": 2}, 30, "the others to be sent")
        time.sleep(1.0)
        assert gw.refs() == {"payment:1": 1, "payment:2": 1, "payment:3": 1}      # not resent
        row = rows_of(engine)[ids[0]]
        assert (row["last_error"], row["claimed_by"]) == (OUTCOME_UNKNOWN, victim.name)

        status = subprocess.run(gridpay("notifier", "status", "--json"), env=env, capture_output=True, text=True,
                                timeout=60)
        report = json.loads(status.stdout)
        assert report["counts"] == {"dead": 1, "sent": 2}
        assert report["dead"][0]["id"] == ids[0] and report["dead"][0]["mobile"] == "*********01"

        wang = operator_env(engine, "wang", ["operations"], env)
        done = subprocess.run(gridpay("notifier", "requeue", str(ids[0]), "--reason", "customer called"), env=wang,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"requeued 1 notice(s): {ids[0]}" in done.stdout
        wait_until(lambda: states(engine) == {"sent": 3}, 30, "the requeued notice to be sent")
        assert gw.refs()["payment:1"] == 2
        _, metrics = other.http("/metrics")
        assert sample(metrics, 'gridpay_notices_dead_total{cause="outcome_unknown"}') == 1.0
        assert other.terminate() == 0
        hold.set()
    with engine.connect() as conn:
        [audit] = conn.execute(select(audit_log).where(audit_log.c.action == "notice_requeue")).all()
    assert (audit.actor, audit.action, audit.object_id, audit.reason) == \
        ("operator:wang", "notice_requeue", str(ids[0]), "customer called")
    assert json.loads(audit.details)["os_login"] == os_login()
    again = subprocess.run(gridpay("notifier", "requeue", str(ids[0])), env=wang,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "only dead notices" in again.stderr


def test_sigterm_finishes_the_batch_in_hand(sqlite_url, tmp_path, procs):
    engine = new_engine(sqlite_url)
    add_notices(engine, 20)
    with SmsGateway(lambda seen, n: Reply(delay_s=0.3)) as gw:
        env = notifier_env(sqlite_url, tmp_path, sender="http", http_url=gw.url, batch_size=5, concurrency=1)
        proc = NotifierProcess(env, tmp_path / "notifier.log").start()
        procs.append(proc)
        gw.wait_for(lambda seen: len(seen) >= 1)
        assert proc.terminate() == 0
    assert states(engine) == {"sent": 5, "pending": 15}
    assert len(gw.seen) == 5
    assert "finishing the batch in hand" in proc.log_path.read_text()
    engine.dispose()


def test_metrics_health_and_backlog(sqlite_url, tmp_path, procs):
    engine = new_engine(sqlite_url)
    created = datetime.now(timezone.utc) - timedelta(seconds=100)
    add_notices(engine, 3, at=created)
    with SmsGateway(lambda seen, n: Reply(500, "down")) as gw:
        env = notifier_env(sqlite_url, tmp_path, sender="http", http_url=gw.url, backoff_base_s=3600,
                           sweep_interval_s=0.2)
        proc = NotifierProcess(env, tmp_path / "notifier.log").start()
        procs.append(proc)
        gw.wait_for(lambda seen: len(seen) >= 3)

        def settled():
            text = proc.http("/metrics")[1]
            failed = sample(text, 'gridpay_notices_failed_total{reason="http_5xx"}')
            return text if failed == 3.0 and sample(text, "gridpay_outbox_backlog") == 3.0 else None

        text = wait_until(settled, 30, "metrics")
        assert sample(text, "gridpay_notices_sent_total") == 0.0
        assert sample(text, "gridpay_outbox_sending") == 0.0
        assert sample(text, "gridpay_outbox_dead") == 0.0
        age = sample(text, "gridpay_outbox_oldest_age_seconds")
        assert 100 <= age < 160, age
        assert "gridpay_notices_dead_total" in text and "gridpay_notice_send_seconds_bucket" in text
        status, body = proc.http("/healthz")
        assert status == 200 and json.loads(body)["status"] == "up"
        status, body = proc.http("/readyz")
        ready = json.loads(body)
        assert status == 200 and ready["status"] == "ready" and ready["database"] == "ok"
        assert ready["name"] == proc.name and ready["sender"] == "http"
        assert proc.terminate() == 0
    log = proc.log_path.read_text()
    assert "13800000001" not in log and "0100000001" not in log and "*********01" in log
    engine.dispose()


def test_once_with_the_file_sender(sqlite_url, tmp_path):
    engine = new_engine(sqlite_url)
    add_notices(engine, 3)
    path = tmp_path / "sms.jsonl"
    env = notifier_env(sqlite_url, tmp_path, sender="file", file_path=str(path), batch_size=2)
    done = subprocess.run(gridpay("notifier", "--once"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["claimed"], summary["sent"], summary["backlog"]) == (3, 3, 0)
    assert sorted(json.loads(line)["ref"] for line in path.read_text().splitlines()) == \
        ["payment:1", "payment:2", "payment:3"]
    assert states(engine) == {"sent": 3}
    again = subprocess.run(gridpay("notifier", "--once"), env=env, capture_output=True, text=True, timeout=60)
    assert json.loads(again.stdout.strip().splitlines()[-1])["claimed"] == 0
    engine.dispose()
