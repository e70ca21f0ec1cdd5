"""Reads from a replica (``database.replica_url``, PostgreSQL): the reports, the report API route, the
console's reports and glance, and the collection rate read through a connection that cannot write,
their audit rows on the primary; a write through that connection fails, so nothing that writes was
routed there.

The "replica" is a connection opened with ``-c default_transaction_read_only=on``: it refuses every
write, as a hot standby does. Where a command runs in a process of its own (nothing in it can be
watched), the replica is a read-only connection to ANOTHER schema than the primary's, holding the
ledger while the primary's is empty: what the command prints shows which database it read.

A real streaming replica (pg_basebackup, a hot standby) is tests/test_replica_streaming.py (slow).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError

from api_harness import operator_name, running_service, signed_in_client
from config import ConfigError, load_settings
from config.clock import Clock
from config.settings import DatabaseConfig, Settings, environment_for
from conftest import fresh_schema
from ledger import migrate
from ledger.audit import audit_row, write_audit
from ledger.collection_metrics import CollectionRateMetrics
from ledger.collection_rate import billing_period, collection_figures
from ledger.db import make_engine
from ledger.schema import audit_log
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_bills, assert_ledger_verifies, payment
from report_ledger import build_ledger
from test_engine_support import BANK, seed, settings_tree
from test_process_ports import free_ports, scrape

READ_ONLY = "%20-cdefault_transaction_read_only%3Don"
WRITE_REFUSED = "read-only transaction"
EVERY_OTHER_REPORT = {"confirmed": {"date": "2026-11-23"}, "daily": {"date": "2026-11-23"},
                      "monthly": {"month": "2026-11"}, "aging": {"as_of": "2026-11-30"},
                      "receivables": {"period": "202611"}, "debits": {"date": "2026-11-23"},
                      "recon-day": {"date": "2026-11-23"}}


def read_only(url: str) -> str:
    """The same database (and schema) through a connection that refuses every write, as a hot standby does."""
    assert "options=" in url, "the test schema's URL carries its search_path in options"
    return url + READ_ONLY


@pytest.fixture
def other_pg_url(pg_server_url):
    """A second fresh schema: the "replica" of a process test, holding what the primary does not."""
    with fresh_schema(pg_server_url) as url:
        yield url


def statements_on(engine) -> list[str]:
    """Every statement ``engine`` runs from now on."""
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cur, statement, *_: seen.append(statement))
    return seen


def audited(engine, action: str) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(audit_log.c.actor, audit_log.c.object_id, audit_log.c.details)
                                 .where(audit_log.c.action == action).order_by(audit_log.c.id)))


def test_a_write_through_the_replica_connection_fails(pg_url):
    migrate.upgrade(pg_url)
    replica = make_engine(read_only(pg_url))
    try:
        with pytest.raises(DBAPIError, match=WRITE_REFUSED), replica.begin() as conn:
            write_audit(conn, [audit_row(T0, "tester", "replica.write", "test", 1)])
        with replica.connect() as conn:
            assert conn.execute(text("show transaction_read_only")).scalar() == "on"
    finally:
        replica.dispose()
    primary = make_engine(pg_url)
    assert audited(primary, "replica.write") == []
    primary.dispose()


def test_reports_and_the_glance_over_http_read_the_replica_and_audit_on_the_primary(pg_url):
    build_ledger(pg_url).engine.dispose()
    reads = make_engine(read_only(pg_url))
    on_replica = statements_on(reads)
    try:
        with running_service(pg_url, reads=reads) as service:
            with service.client(service.login(operator_name("finance"))) as http:
                month_end = http.get("/v1/reports/month-end", params={"month": "2026-11", "lang": "en"})
                assert month_end.status_code == 200, month_end.text
                rows = month_end.json()["sections"][0]["rows"]
                assert {r["key"]: r["amount"] for r in rows}["end_net"] == 62_000
                arrears = http.get("/v1/reports/arrears", params={"as_of": "2026-11-30", "format": "csv"})
                assert arrears.status_code == 200 and "21000" in arrears.text
                for name, params in EVERY_OTHER_REPORT.items():
                    answer = http.get(f"/v1/reports/{name}", params={**params, "format": "xlsx"})
                    assert answer.status_code == 200, (name, answer.text)
            after_api = len(on_replica)
            assert after_api > 0
            console = signed_in_client(service, operator_name("finance"))
            try:
                page = console.get("/console/reports/aging", params={"as_of": "2026-11-30", "format": "html"})
                assert page.status_code == 200 and "<svg" in page.text
                glance = console.get("/console/glance")
                assert glance.status_code == 200
            finally:
                console.close()
            assert len(on_replica) > after_api
            primary = service.engine
            requests = audited(primary, "report.read")
    finally:
        reads.dispose()
    finance = f"operator:{operator_name('finance')}"
    assert [(actor, name) for actor, name, _ in requests] == [
        (finance, "month-end"), (finance, "arrears"), *((finance, name) for name in EVERY_OTHER_REPORT),
        (finance, "aging")]
    assert '"format": "csv"' in requests[1][2] and '"as_of": "2026-11-30"' in requests[1][2]
    assert_ledger_verifies(pg_url)


def test_the_collection_rate_reads_through_the_replica_connection(pg_url):
    ledger = build_ledger(pg_url)
    ledger.engine.dispose()
    reads = make_engine(read_only(pg_url))
    try:
        with reads.connect() as conn:
            figures = collection_figures(conn, "202611")
    finally:
        reads.dispose()
    with make_engine(pg_url).connect() as conn:
        assert figures == collection_figures(conn, "202611")
    assert figures.total_billed > 0


def test_the_replica_lag_gauge_is_there_only_with_a_replica(pg_url):
    """A replica that is no standby (a read-only connection to the primary) is 0 s behind: the
    reports read what the primary holds. A real standby's lag: tests/test_replica_streaming.py."""
    migrate.upgrade(pg_url)
    reads = make_engine(read_only(pg_url))
    try:
        with_replica, without = CollectionRateMetrics(replica=True), CollectionRateMetrics()
        with_replica.poll(reads)
        without.poll(reads)
    finally:
        reads.dispose()
    assert with_replica.registry.get_sample_value("gridpay_db_up") == 1
    assert with_replica.registry.get_sample_value("gridpay_replica_replay_lag_seconds") == 0.0
    assert without.registry.get_sample_value("gridpay_replica_replay_lag_seconds") is None


def _process_env(primary: str, replica: str) -> dict:
    tree = settings_tree(primary)
    tree["database"]["replica_url"] = replica
    return {**os.environ, **environment_for(tree)}


def gridpay(tmp_path, env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "gridpay", *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_report_command_reads_the_replica(tmp_path, pg_url, other_pg_url):
    """The primary's ledger is empty, the replica's is not: the report prints the replica's figures;
    ``--url`` still names the database a report reads."""
    migrate.upgrade(pg_url)
    build_ledger(other_pg_url).engine.dispose()
    env = _process_env(pg_url, read_only(other_pg_url))
    end_net = "620.00"                                # the month-end's end net, yuan
    month_end = ("report", "month-end", "--month", "2026-11", "--format", "csv")
    assert end_net in gridpay(tmp_path, env, *month_end)
    assert end_net not in gridpay(tmp_path, env, *month_end, "--url", pg_url)


def test_the_collection_rate_command_reads_the_replica(tmp_path, pg_url, other_pg_url):
    migrate.upgrade(pg_url)
    engine, (c1, c2) = seed(other_pg_url, 2)          # bills of the period the collection rate watches now
    with engine.begin() as conn:
        add_bills(conn, [(c, billing_period(Clock()), 20_000, 0, f"N{c}") for c in (c1, c2)])
    assert post(engine, [payment(BANK, c1, 20_000 + 10_050, at=T0)])[0].ok   # seed's own bill and this one
    engine.dispose()
    env = _process_env(pg_url, read_only(other_pg_url))
    rate = gridpay(tmp_path, env, "collection-rate", "--once")
    assert "50.00% (200.00 of 400.00 yuan)" in rate, rate
    (port,) = free_ports(1)
    exporter = subprocess.Popen([sys.executable, "-m", "gridpay", "collection-rate", "--metrics-port", str(port)],
                                env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        metrics, deadline = scrape(port), time.monotonic() + 120     # a guard, not a speed figure
        while "gridpay_db_up 1.0" not in metrics:                      # the first read may not be done yet
            assert exporter.poll() is None and time.monotonic() < deadline, metrics
            time.sleep(0.2)
            metrics = scrape(port)
    finally:
        exporter.send_signal(signal.SIGTERM)
        _, err = exporter.communicate(timeout=60)
    assert exporter.returncode == 0, err[-2000:]
    assert "gridpay_db_up 1.0" in metrics and "gridpay_replica_replay_lag_seconds 0.0" in metrics, metrics
    assert_ledger_verifies(other_pg_url)


def test_the_replica_url_is_refused_with_sqlite_and_holds_no_password(monkeypatch):
    with pytest.raises(ValueError, match="SQLite has no replicas"):
        DatabaseConfig(url="sqlite:///var/gridpay.db", replica_url="postgresql+psycopg://gridpay@standby/gridpay")
    with pytest.raises(ValueError, match="the URL holds a password"):
        DatabaseConfig(url="postgresql+psycopg://gridpay@db/gridpay",
                       replica_url="postgresql+psycopg://gridpay:secret@standby/gridpay")
    monkeypatch.setenv("GRIDPAY_TEST_DB_PASSWORD", "s3cret")
    settings = Settings(database=DatabaseConfig(url="postgresql+psycopg://gridpay@db/gridpay",
                                                replica_url="postgresql+psycopg://gridpay@standby:5433/gridpay",
                                                password_env="GRIDPAY_TEST_DB_PASSWORD"))
    assert settings.replica_url() == "postgresql+psycopg://gridpay:s3cret@standby:5433/gridpay"
    assert Settings().replica_url() is None
    monkeypatch.setenv("GRIDPAY_DATABASE__REPLICA_URL", "postgresql+psycopg://gridpay@standby/gridpay")
    with pytest.raises(ConfigError, match="SQLite has no replicas"):
        load_settings(None)


def replica_check(primary: str, replica: str):
    """``gridpay status``'s check of the replica."""
    from gridpay.site_checks import run_checks

    settings = Settings(database=DatabaseConfig(url=primary, replica_url=replica))
    (check,) = [c for c in run_checks(settings, use_configured_metrics=False) if c.name == "replica"]
    return check


def test_status_says_whether_the_replica_answers(pg_url):
    migrate.upgrade(pg_url)
    answers = replica_check(pg_url, read_only(pg_url))
    assert answers.ok and answers.figures["standby"] is False and "no standby" in answers.detail
    (port,) = free_ports(1)
    gone = replica_check(pg_url, f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")
    assert not gone.ok and "unreachable" in gone.detail


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_the_lag_alert_fires_after_ten_minutes_over_five_and_not_otherwise():
    rule_tests = Path(__file__).resolve().parent / "prometheus" / "replica-lag.test.yml"
    result = subprocess.run([shutil.which("promtool"), "test", "rules", str(rule_tests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
