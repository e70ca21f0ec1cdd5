"""A real streaming replica: a PostgreSQL cluster of the test's own (initdb in a temporary
directory, not the shared test server, whose pg_hba.conf takes no replication connections), its
copy by ``pg_basebackup -R`` started as a hot standby, and the API serving the reports from the
standby while the audit rows go to the primary. A write on the standby is refused by PostgreSQL
itself ("cannot execute ... in a read-only transaction").

Skipped where PostgreSQL's server programs are not installed (``pg_config --bindir``, else
Debian's /usr/lib/postgresql/15/bin). Run as root, the programs run as the ``postgres`` user (the
server refuses root)."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from api_harness import operator_name, running_service
from ledger import migrate
from ledger.audit import audit_row, write_audit
from ledger.collection_metrics import CollectionRateMetrics
from ledger.db import make_engine
from report_ledger import build_ledger
from test_process_ports import free_ports
from test_replica import WRITE_REFUSED, audited, replica_check

pytestmark = pytest.mark.slow
CATCH_UP_S = 300          # a guard against a standby that never replays, not a speed figure


def server_programs() -> Path | None:
    found = shutil.which("pg_config")
    candidates = [Path(subprocess.run([found, "--bindir"], capture_output=True, text=True).stdout.strip())] if found else []
    candidates.append(Path("/usr/lib/postgresql/15/bin"))
    return next((bindir for bindir in candidates if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists()), None)


class Cluster:
    """Runs the server's programs, as ``postgres`` when the test runs as root."""

    def __init__(self, bindir: Path, root: Path):
        self.bindir, self.root = bindir, root
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self.as_postgres, str(self.bindir / program), *args], capture_output=True, text=True,
                              timeout=600, cwd=self.root)
        assert done.returncode == 0, f"{program}: {done.stdout}{done.stderr}"

    def configure(self, data: Path, port: int) -> None:
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                       "max_wal_senders = 4\nfsync = off\nshared_buffers = 16MB\n")

    def start(self, data: Path) -> None:
        self.run("pg_ctl", "-D", str(data), "-l", str(data / "server.log"), "-w", "-t", "300", "start")

    def stop(self, data: Path) -> None:
        if (data / "postmaster.pid").exists():
            subprocess.run([*self.as_postgres, str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "stop"], capture_output=True, timeout=300, cwd=self.root)


@pytest.fixture
def primary_and_standby():
    """(primary URL, standby URL) of a fresh cluster and its hot standby."""
    bindir = server_programs()
    if bindir is None:
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
    root = Path(tempfile.mkdtemp(prefix="gridpay-replica-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
    cluster, primary, standby = Cluster(bindir, root), root / "primary", root / "standby"
    primary_port, standby_port = free_ports(2)
    try:
        cluster.run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C")
        cluster.configure(primary, primary_port)
        cluster.start(primary)
        cluster.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary_port), "-U", "postgres",
                    "-D", str(standby), "-X", "stream", "-R")        # -R: standby.signal and primary_conninfo
        cluster.configure(standby, standby_port)
        cluster.start(standby)
        url = "postgresql+psycopg://postgres@127.0.0.1:{}/postgres"
        yield url.format(primary_port), url.format(standby_port)
    finally:
        cluster.stop(standby)
        cluster.stop(primary)
        shutil.rmtree(root, ignore_errors=True)


def caught_up(primary, standby) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    with primary.connect() as conn:
        written = conn.execute(text("select pg_current_wal_lsn()")).scalar()
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        with standby.connect() as conn:
            behind = conn.execute(text("select pg_wal_lsn_diff(:lsn, pg_last_wal_replay_lsn()) > 0"),
                                  {"lsn": written}).scalar()
        if not behind:
            return
        assert time.monotonic() < deadline, "the standby did not replay the primary's WAL"
        time.sleep(0.05)


def test_reports_served_from_a_hot_standby_with_the_audit_on_the_primary(primary_and_standby):
    primary_url, standby_url = primary_and_standby
    build_ledger(primary_url).engine.dispose()
    standby = make_engine(standby_url)
    try:
        with standby.connect() as conn:
            assert conn.execute(text("select pg_is_in_recovery()")).scalar() is True
        with running_service(primary_url, reads=standby) as service:
            caught_up(service.engine, standby)           # the ledger and the operators the service added
            with service.client(service.login(operator_name("finance"))) as http:
                month_end = http.get("/v1/reports/month-end", params={"month": "2026-11", "lang": "en"})
                assert month_end.status_code == 200, month_end.text
                rows = month_end.json()["sections"][0]["rows"]
                assert {r["key"]: r["amount"] for r in rows}["end_net"] == 62_000
            assert [name for _, name, _ in audited(service.engine, "report.read")] == ["month-end"]
            caught_up(service.engine, standby)
            assert [name for _, name, _ in audited(standby, "report.read")] == ["month-end"]   # replayed there
        status = replica_check(primary_url, standby_url)
        assert status.ok and status.figures["standby"] is True and status.figures["behind_bytes"] >= 0
        assert status.figures["replay_lag_s"] >= 0
        with pytest.raises(DBAPIError, match=WRITE_REFUSED), standby.begin() as conn:
            conn.execute(text("delete from audit_log"))
    finally:
        standby.dispose()


def settled_lag(metrics: CollectionRateMetrics, standby) -> float:
    """The exporter's lag once the standby has replayed all it received (an idle primary may still
    send a checkpoint's WAL: read again until it is replayed)."""
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        metrics.poll(standby)
        lag = metrics.registry.get_sample_value("gridpay_replica_replay_lag_seconds")
        if lag == 0 or time.monotonic() > deadline:
            return lag
        time.sleep(0.05)


def received(primary, standby) -> None:
    """Wait until the standby has received (not necessarily replayed) what the primary has written."""
    with primary.connect() as conn:
        written = conn.execute(text("select pg_current_wal_lsn()")).scalar()
    deadline = time.monotonic() + CATCH_UP_S
    with standby.connect() as conn:
        while conn.execute(text("select pg_wal_lsn_diff(:lsn, pg_last_wal_receive_lsn()) > 0"), {"lsn": written}).scalar():
            assert time.monotonic() < deadline, "the standby did not receive the primary's WAL"
            time.sleep(0.05)


def test_the_exporter_reports_the_standbys_replay_lag(primary_and_standby):
    """Caught up, the standby is 0 s behind however long ago the last commit was; with its replay
    paused while the primary commits, it is behind by the time since the last commit it replayed."""
    primary_url, standby_url = primary_and_standby
    migrate.upgrade(primary_url)
    primary, standby = make_engine(primary_url), make_engine(standby_url)
    metrics = CollectionRateMetrics(replica=True)
    try:
        caught_up(primary, standby)
        assert settled_lag(metrics, standby) == 0
        with standby.connect() as conn:
            conn.execute(text("select pg_wal_replay_pause()"))
        with primary.begin() as conn:
            write_audit(conn, [audit_row(datetime.now(timezone.utc), "test", "replica.lag", "database", "standby")])
        received(primary, standby)
        metrics.poll(standby)
        assert metrics.registry.get_sample_value("gridpay_db_up") == 1
        assert metrics.registry.get_sample_value("gridpay_replica_replay_lag_seconds") > 0
        with standby.connect() as conn:
            conn.execute(text("select pg_wal_replay_resume()"))
        caught_up(primary, standby)
        assert settled_lag(metrics, standby) == 0
        assert [name for _, name, _ in audited(standby, "replica.lag")] == ["standby"]
    finally:
        primary.dispose()
        standby.dispose()
