"""``gridpay status``: the daily checks in one command, on real SQLite and PostgreSQL databases.

A healthy demo-like site (migrated, banks signed on, a live engine, a batch running, fresh work only)
is all well; a stopped engine, an old open reconciliation item, money left waiting, a database at an
old revision or unreachable are each named, with exit status 1."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from click.testing import CliRunner

from config.settings import environment_for
from engines.plans import build_batch
from engines.store import create_reversals, original_fields, register_instance
from gridpay.cli import gridpay
from gridpay.site_checks import Thresholds
from iso8583_specs.keys import generate_mak
from ledger import migrate
from config.clock import Clock, ManualClock
from ledger.debits import create_debit, debit_unknown, mark_debit_sent
from ledger.key_store import KeyStore
from ledger.key_store_db import DbKeyBackend
from ledger.recon.matching import reconcile_bank_file
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_banks, new_engine, payment, setup_customers
from process_harness import GatewayProcess
from test_engine_support import BANK, FILE_BANK, ZMK, seed, settings_tree
from test_recon_support import write_bank_file

ROOT = Path(__file__).resolve().parents[1]
SHANGHAI_OFFSET = timedelta(hours=8)


class WallClock:
    def seconds(self) -> float:
        return time.time()


def status(env: dict, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(gridpay, ["status", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.output


def line_of(out: str, name: str) -> str:
    """The check's line, its padding cut to two spaces: 'OK  name  detail' or 'FAIL  name  detail'."""
    found = [ln for ln in out.splitlines() if re.match(rf"^(OK|FAIL)\s+{re.escape(name)}\s", ln)]
    assert len(found) == 1, f"no single line for {name!r} in:\n{out}"
    return re.sub(r"\s{3,}", "  ", found[0])


def reconcile_day(engine, tmp_path: Path, now: datetime, customer_no: str, tag: str) -> None:
    """A bank day file of the day before ``now`` with one line the ledger does not have: one open
    bank_only item, created at ``now``."""
    day = (now + SHANGHAI_OFFSET).date() - timedelta(days=1)
    line = f"D|C|{day:%Y%m%d}101500|77700{tag}|BANKONLY000{tag}|{customer_no}|5000|S|T0000009"
    directory = tmp_path / f"day{tag}"
    directory.mkdir()
    result = reconcile_bank_file(engine, write_bank_file(directory, [line], bank=BANK, day=day), actor="test",
                                 now=now)
    assert result.status == "applied" and {k: n for k, n in result.counts.items() if n} == {"bank_only": 1}, \
        (result.status, result.message)


def healthy_site(url: str, tmp_path: Path):
    """Demo-like: banks BANK (counter + online debit) and FILE_BANK (file debit), both signed on the
    ways the gateway and an engine store it, a live engine serving both, a batch just made, a payment
    whose SMS is pending, a reconciliation exception found a moment ago."""
    engine, numbers = seed(url, 6)
    now = datetime.now(timezone.utc)
    keys = KeyStore(WallClock(), backend=DbKeyBackend(engine, lambda bank: ZMK))
    keys.issue(BANK, "counter", generate_mak())      # the bank's counter sign-on, as a gateway stores it
    keys.install(BANK, "debit", generate_mak())      # our engine's debit sign-on, as its link stores it
    register_instance(engine, name="eng-1", banks=[BANK, FILE_BANK], now=now, lease_s=3600)
    outcome = post(engine, [payment(BANK, numbers[0], 10_050, at=now)])[0]
    assert outcome.response_code == "00", outcome
    with engine.begin() as conn:
        batch = build_batch(conn, bank_code=BANK, at=now, clock=Clock(), chunk_size=1,
                            customers_only=numbers[1:3])
    assert batch.debits == 2
    reconcile_day(engine, tmp_path, now, numbers[5], "1")
    env = environment_for(settings_tree(url, drop_dir=str(tmp_path / "drop")))
    return engine, numbers, env, batch.batch_id


def test_healthy_site_is_all_well(db_url, tmp_path):
    engine, _, env, batch_id = healthy_site(db_url, tmp_path)
    try:
        code, out = status(env)
        assert code == 0, out
        assert out.rstrip().endswith("all well")
        assert "FAIL" not in out
        assert "at the head revision" in line_of(out, "schema")
        counter = line_of(out, f"bank {BANK} counter")
        assert "signed on at" in counter and "(database: bank_keys version 1)" in counter
        debit = line_of(out, f"bank {BANK} debit")
        assert "signed on" in debit and "served by eng-1" in debit
        assert "file mode: served by eng-1" in line_of(out, f"bank {FILE_BANK} debit")
        assert "1 live: eng-1" in line_of(out, "engines")
        assert "1 open" in line_of(out, "reconciliation")
        assert "1 pending" in line_of(out, "outbox")
        assert f"batch {batch_id} ({BANK} online): chunks 0/2 done, debits 0/2 done" in line_of(out, "batches")
    finally:
        engine.dispose()


def test_json_lists_every_check(db_url, tmp_path):
    engine, _, env, _ = healthy_site(db_url, tmp_path)
    try:
        code, out = status(env, "--json")
        assert code == 0, out
        doc = json.loads(out)
        assert doc["ok"] is True and doc["status"] == "all well" and doc["failing"] == []
        names = [c["name"] for c in doc["checks"]]
        assert names == ["database", "schema", "engines", f"bank {BANK} counter", f"bank {BANK} debit",
                         f"bank {FILE_BANK} debit", "reconciliation", "unknown debits", "reversals", "outbox",
                         "batches"]
        for check in doc["checks"]:
            assert set(check) == {"name", "ok", "detail", "figures"} and check["ok"] is True and check["detail"]
        by_name = {c["name"]: c for c in doc["checks"]}
        assert by_name[f"bank {BANK} counter"]["figures"]["source"] == "database"
        assert by_name["reconciliation"]["figures"]["open"] == 1
        assert by_name["batches"]["figures"]["running"] == 1
        assert doc["limits"]["recon"] == 86_400
    finally:
        engine.dispose()


def test_stopped_engine_is_named(db_url, tmp_path):
    engine, _, env, _ = healthy_site(db_url, tmp_path)
    try:
        # registered two hours ago with a 30 s lease and never heard of again
        register_instance(engine, name="gw1-2", banks=[BANK], now=datetime.now(timezone.utc) - timedelta(hours=2),
                          lease_s=30)
        code, out = status(env)
        assert code == 1, out
        engines = line_of(out, "engines")
        assert engines.startswith("FAIL") and "stopped: gw1-2" in engines \
            and re.search(r"lease over (1h 59m|2h) ago", engines)
        assert "live: eng-1" in engines
        assert "1 of 11 checks failing:" in out and "  - engines: stopped: gw1-2" in out
        assert "all well" not in out
    finally:
        engine.dispose()


def test_engine_whose_process_is_gone_is_stopped(sqlite_url, tmp_path):
    """Killed (no clean stop): the lease is still running, but its process on this host is gone."""
    engine, _, env, _ = healthy_site(sqlite_url, tmp_path)
    try:
        script = ("from datetime import datetime, timezone; from ledger.db import make_engine; "
                  "from engines.store import register_instance; "
                  f"register_instance(make_engine({sqlite_url!r}), name='gw2-1', banks=['{BANK}'], "
                  "now=datetime.now(timezone.utc), lease_s=3600)")
        subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=60)
        code, out = status(env)
        assert code == 1, out
        engines = line_of(out, "engines")
        assert engines.startswith("FAIL") and re.search(r"stopped: gw2-1 \(pid \d+ on .*: process \d+ on .* is gone\)",
                                                        engines), engines
    finally:
        engine.dispose()


def test_old_open_reconciliation_item_is_named(db_url, tmp_path):
    engine, numbers, env, _ = healthy_site(db_url, tmp_path)
    try:
        reconcile_day(engine, tmp_path, datetime.now(timezone.utc) - timedelta(days=3), numbers[4], "2")
        code, out = status(env)
        assert code == 1, out
        recon = line_of(out, "reconciliation")
        assert recon.startswith("FAIL")
        assert f"1 of 2 open items older than 24h ({BANK}: 1); oldest item" in recon
        assert f"(bank {BANK}, bank_only, business date" in recon and "open 3d" in recon
        assert "  - reconciliation: " in out
        # a Monday morning after a long weekend: the operator allows four days
        code, out = status(env, "--limit", "recon=4d")
        assert code == 0, out
    finally:
        engine.dispose()


def test_money_left_waiting_is_named(db_url, tmp_path):
    """A debit unknown for two days with its reversal pending for two hours, a batch whose chunks
    nobody took for an hour, an SMS notice pending for an hour."""
    engine, numbers, env, _ = healthy_site(db_url, tmp_path)
    now = datetime.now(timezone.utc)
    cal = Clock()
    try:
        then = now - timedelta(days=2)
        with engine.begin() as conn:
            debit_id = create_debit(conn, bank_code=BANK, customer_no=numbers[3], account_no=f"A{numbers[3]}",
                                    bills_to_pay=[(f"B{numbers[3]}202601", 10_050)], at=then)
            mark_debit_sent(conn, debit_id, transmitted=f"{then + SHANGHAI_OFFSET:%m%d%H%M%S}", stan="400001",
                            rrn=f"{debit_id:012d}", business_date=cal.business_date(then), at=then)
        assert debit_unknown(engine, debit_id, then, clock=ManualClock(then)).ok
        with engine.begin() as conn:
            original = original_fields(BANK, f"{then + SHANGHAI_OFFSET:%m%d%H%M%S}", "400001", f"{debit_id:012d}",
                                       10_050, numbers[3])
            create_reversals(conn, [(debit_id, BANK, original)], owner="eng-1", now=now - timedelta(hours=2),
                             lease=now + timedelta(minutes=5), clock=cal)
            stuck = build_batch(conn, bank_code=BANK, at=now - timedelta(hours=1), clock=cal,
                                customers_only=[numbers[4]])
        an_hour_ago = now - timedelta(hours=1)
        post(engine, [payment(BANK, numbers[4], 10_050, at=an_hour_ago)], clock=ManualClock(an_hour_ago))
        code, out = status(env)
        assert code == 1, out
        unknown = line_of(out, "unknown debits")
        assert unknown.startswith("FAIL") and f"oldest debit {debit_id} (bank {BANK}" in unknown and "2d" in unknown
        reversals = line_of(out, "reversals")
        assert reversals.startswith("FAIL") and f"1 pending longer than 1h (oldest: debit {debit_id}" in reversals
        batches = line_of(out, "batches")
        assert batches.startswith("FAIL") and f"batch {stuck.batch_id} ({BANK} online)" in batches
        assert "waiting 60m for an engine (limit 15m)" in batches or "waiting 1h for an engine" in batches
        outbox = line_of(out, "outbox")
        assert outbox.startswith("FAIL") and "oldest pending notice 1h old" in outbox
        assert "4 of 11 checks failing:" in out
    finally:
        engine.dispose()


def test_database_at_an_old_revision(db_url):
    for revision in ("0002", "0003", "0004"):
        migrate.upgrade(db_url, revision)
    env = environment_for(settings_tree(db_url))
    code, out = status(env)
    assert code == 1, out
    assert line_of(out, "schema") == (f"FAIL  schema  at revision 0002,0003,0004, the head is {migrate.newest()}: "
                                      "run `gridpay db upgrade`")
    assert "Traceback" not in out


def test_unreachable_database_is_a_clear_line(tmp_path, pg_server_url):
    for url, expected in ((re.sub(r"@[^/]+/", "@127.0.0.1:1/", pg_server_url), "unreachable: OperationalError: "),
                          (f"sqlite:///{tmp_path / 'nowhere' / 'gridpay.db'}", "no database file there")):
        code, out = status(environment_for(settings_tree(url)))
        assert code == 1, out
        assert line_of(out, "database").startswith("FAIL  database") and expected in out
        assert "Traceback" not in out and "1 of 1 checks failing:" in out
    assert not (tmp_path / "nowhere").exists()   # the check creates no database


def test_config_and_usage_errors_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[banks.01020000]\nchanels = ["counter"]\n')
    result = CliRunner().invoke(gridpay, ["status", "--config", str(bad)])
    assert result.exit_code == 2 and "config error: banks.01020000.chanels: unknown key" in result.output
    result = CliRunner().invoke(gridpay, ["status", "--limit", "recon=soon"])
    assert result.exit_code == 2 and "a duration such as 30m" in result.output


def test_signed_on_from_engine_metrics(sqlite_url, tmp_path):
    """Where an engine's /metrics answers, the debit channel's sign-on is its ready connections: an
    engine of this host named HOST-N (gridpay-engine@N) is asked at engines.metrics_port_base + N."""
    from prometheus_client import start_http_server

    from engines.process_metrics import EngineMetrics

    engine, _, _, _ = healthy_site(sqlite_url, tmp_path)
    metrics = EngineMetrics()
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    port = server.server_port
    url = f"http://127.0.0.1:{port}/metrics"
    name = f"{socket.gethostname()}-3"
    register_instance(engine, name=name, banks=[BANK], now=datetime.now(timezone.utc), lease_s=3600)
    env = environment_for({**settings_tree(sqlite_url, drop_dir=str(tmp_path / "drop")),
                           "engines": {"metrics_host": "0.0.0.0", "metrics_port_base": port - 3}})
    try:
        metrics.link.connections(BANK, 2, 2)
        code, out = status(env)
        assert code == 0, out
        assert line_of(out, f"metrics {url}").startswith(f"OK  metrics {url}  engine {name}: answers")
        assert line_of(out, f"bank {BANK} debit") == (f"OK  bank {BANK} debit  signed on: 2 ready connections "
                                                      f"(engine metrics {url}); served by eng-1, {name}")
        metrics.link.connections(BANK, 2, 0)        # connected, not signed on
        code, out = status(env)
        assert code == 1 and line_of(out, f"bank {BANK} debit").startswith(f"FAIL  bank {BANK} debit  not signed on")
    finally:
        server.shutdown()
        server.server_close()
    try:
        code, out = status(env)                     # the engine's port does not answer: noted, the database decides
        assert code == 0, out
        assert "not answering here" in line_of(out, f"metrics {url}")
        assert "(database: bank_keys version" in line_of(out, f"bank {BANK} debit")
        code, out = status(env, "--metrics", url)   # asked for by name: it must answer
        assert code == 1 and line_of(out, f"metrics {url}").startswith(f"FAIL  metrics {url}  --metrics: not answering")
    finally:
        engine.dispose()


def test_gridpay_status_process_reads_the_gateway_metrics(tmp_path, sqlite_url):
    """As operators run it: `python -m gridpay status` next to a real `gridpay serve` whose banks
    signed on through the counter simulator."""
    engine = new_engine(sqlite_url)
    with engine.begin() as conn:
        add_banks(conn, "01020000", "01030000", "01050000")
    numbers = setup_customers(engine, 30)
    engine.dispose()
    customers = tmp_path / "customers.txt"
    customers.write_text("\n".join(numbers))
    gw = GatewayProcess(tmp_path, sqlite_url).start()
    try:
        for bank, listener, dialect in (("01020000", "ascii", "ascii"), ("01030000", "ascii", "ascii"),
                                        ("01050000", "bcd", "bcd")):
            run = gw.sim(listener, bank, dialect, customers, tmp_path / f"r{bank}.csv", "--count", "2")
            assert run.returncode == 0, run.stdout + run.stderr
        url = f"http://127.0.0.1:{gw.metrics_port}/metrics"
        proc = subprocess.run([sys.executable, "-m", "gridpay", "status", "--metrics", url], env=gw.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.rstrip().endswith("all well")
        for bank in ("01020000", "01030000", "01050000"):
            assert line_of(proc.stdout, f"bank {bank} counter") == \
                f"OK  bank {bank} counter  signed on (gateway metrics {url})"
        assert gw.terminate() == 0
        proc = subprocess.run([sys.executable, "-m", "gridpay", "status", "--metrics", url, "--json"], env=gw.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["failing"] == [f"metrics {url}"]
        banks = [c for c in doc["checks"] if c["name"].startswith("bank ")]
        assert [c["figures"]["source"] for c in banks] == ["database"] * 3 and all(c["ok"] for c in banks)
    finally:
        if gw.proc.poll() is None:
            gw.kill9()


def test_limits_are_the_alert_rules():
    """status and the alerts agree: the default limits are the alert rules' thresholds."""
    rules = yaml.safe_load((ROOT / "config" / "prometheus" / "gridpay-alerts.yml").read_text(encoding="utf-8"))
    threshold = {r["alert"]: float(m[1]) for g in rules["groups"] for r in g["rules"]
                 if (m := re.search(r">\s*([\d.]+)\s*$", r["expr"].strip()))}
    th = Thresholds()
    assert th.recon == threshold["GridpayReconciliationExceptionsOpen"]
    assert th.outbox == threshold["GridpayOutboxBacklog"]
    assert th.outbox_backlog == threshold["GridpayOutboxBacklogLarge"]
    assert th.chunk == threshold["GridpayDebitBatchStuck"]
    assert threshold["GridpayDebitReversalsOpen"] == 0   # any unanswered reversal fails the check too


def test_debit_now_leftovers_are_not_engines(sqlite_url, tmp_path):
    """A `gridpay debit now` that died leaves an instance row that is never an engine of its own."""
    engine, _, env, _ = healthy_site(sqlite_url, tmp_path)
    try:
        register_instance(engine, name="debit-now:4242", banks=[BANK], now=T0, lease_s=30)
        code, out = status(env, "--json")
        assert code == 0, out
        figures = {c["name"]: c for c in json.loads(out)["checks"]}["engines"]["figures"]
        assert figures["stale_debit_now"] == ["debit-now:4242"] and figures["live"] == ["eng-1"]
    finally:
        engine.dispose()
