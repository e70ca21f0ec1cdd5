"""The collection rate (回收率): its figures on a ledger built through the real posting paths (SQLite
and PostgreSQL), the exporter's gauges refreshed at most once a minute by its clock, `gridpay
collection-rate` serving them on its configured port, and the dashboard panel that shows them."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from config.clock import Clock, ManualClock
from config.settings import environment_for
from engines.plans import build_batch
from engines.realtime import create_single
from ledger.collection_metrics import CollectionRateMetrics
from ledger.collection_rate import billing_period, collection_figures
from ledger.corrections import correct_bill
from ledger.db import make_engine
from ledger.debits import debit_approved, mark_debit_sent
from ledger.finance_reports import receivables_report
from ledger.synchronous_posting import post
from ledger_helpers import T0, add_bills, assert_ledger_verifies, payment, reversal
from test_engine_support import BANK, make_settings, seed, set_district, settings_tree
from test_process_ports import free_ports, scrape

PERIOD = "202601"                       # the period of seed()'s bills
BILL = 10_050                           # each customer's bill: 10,000 principal + 50 penalty
IN_PERIOD = datetime(2026, 1, 26, 2, 0, tzinfo=timezone.utc)   # 10:00 in Shanghai, 26 January
DASHBOARD = Path(__file__).resolve().parent.parent / "config" / "grafana" / "gridpay-dashboard.json"


def _approve(engine, debit_id: int, stan: str) -> None:
    with engine.begin() as conn:
        mark_debit_sent(conn, debit_id, transmitted="1123100000", stan=stan, rrn=f"112310{stan}",
                        business_date=T0.date(), at=T0)
    assert debit_approved(engine, debit_id, T0 + timedelta(seconds=5)).ok


def build(url: str):
    """Eight customers, one bill each. East: c1 paid at a counter, c2 by a call-centre single
    debit, c3 by a plan's batch debit. West: c4 paid at a counter and reversed, c5 paid at a
    counter and then corrected to 8,000 (paid again from the prepaid balance), c6 unpaid. No
    district: c7 overpaid by 1,000 at a counter, c8 unpaid."""
    engine, numbers = seed(url, 8)
    c1, c2, c3, c4, c5, c6, c7, c8 = numbers
    set_district(engine, [c1, c2, c3], "east")
    set_district(engine, [c4, c5, c6], "west")
    bill = {c: f"B{c}{PERIOD}" for c in numbers}
    p4 = payment(BANK, c4, BILL, at=T0)
    outcomes = post(engine, [payment(BANK, c1, BILL, at=T0), p4, payment(BANK, c5, BILL, at=T0),
                             payment(BANK, c7, BILL + 1_000, at=T0)])
    assert all(o.ok for o in outcomes), outcomes
    assert post(engine, [reversal(p4)])[0].ok
    single = create_single(engine, make_settings(url), c2, bank_code=None, now=T0, actor="client:cc",
                           channel="call_centre")
    _approve(engine, single.debit_id, "000901")
    with engine.begin() as conn:
        batch = build_batch(conn, bank_code=BANK, at=T0, clock=Clock(), customers_only=[c3])
    _approve(engine, batch.debit_ids[0], "000902")
    correct_bill(engine, bill[c5], principal=8_000, penalty=0, actor="clerk.li", reason="tariff", now=T0)
    return engine


@pytest.fixture
def ledger(db_url):
    engine = build(db_url)
    yield db_url, engine
    engine.dispose()


def test_figures_by_district_and_channel_add_up_to_the_receivables_report(ledger):
    url, engine = ledger
    with engine.connect() as conn:
        f = collection_figures(conn, PERIOD)
    assert f.billed == {"east": 3 * BILL, "west": 2 * BILL + 8_000, "-": 2 * BILL}
    assert f.collected == {"east": 3 * BILL, "west": 8_000, "-": BILL}
    assert f.by_channel == {"counter": BILL + BILL + BILL,        # c1, c5 (before its correction), c7; c4 nets 0
                            "debit_call_centre": BILL, "debit_batch": BILL,
                            "correction": -BILL,                  # c5's payment moved off the corrected bill
                            "prepaid": 8_000}                     # ... and paying its replacement
    assert sum(f.by_channel.values()) == f.total_collected
    total = receivables_report(engine, PERIOD).total
    assert (f.total_billed, f.total_collected) == (total.billed, total.collected)
    assert f.district_rates() == {"east": 1.0, "west": 8_000 / (2 * BILL + 8_000), "-": 0.5}
    assert sum(f.channel_rates().values()) == pytest.approx(f.total_collected / f.total_billed)
    with engine.connect() as conn:
        assert collection_figures(conn, "202602").billed == {}
    assert_ledger_verifies(url)


def test_the_period_is_the_business_month_and_configurable():
    assert billing_period(ManualClock(IN_PERIOD)) == "202601"
    assert billing_period(ManualClock(IN_PERIOD), months_back=1) == "202512"
    # 23:30 on 31 January in Shanghai is past the cut-off: business date 1 February
    assert billing_period(ManualClock(datetime(2026, 1, 31, 15, 30, tzinfo=timezone.utc))) == "202602"


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels)


def test_gauges_are_read_at_most_once_a_minute(ledger):
    url, engine = ledger
    clock = ManualClock(IN_PERIOD)
    metrics = CollectionRateMetrics(clock=clock, target=0.9, alert_from_day=20)
    assert value(metrics, "gridpay_collection_collected_fen", period=PERIOD, district="east") is None
    metrics.poll(engine)
    assert value(metrics, "gridpay_db_up") == 1
    assert value(metrics, "gridpay_collection_billed_fen", period=PERIOD, district="west") == 2 * BILL + 8_000
    assert value(metrics, "gridpay_collection_collected_fen", period=PERIOD, district="-") == BILL
    assert value(metrics, "gridpay_collection_rate", period=PERIOD, district="-") == 0.5
    assert value(metrics, "gridpay_collection_channel_collected_fen", period=PERIOD, channel="prepaid") == 8_000
    assert value(metrics, "gridpay_collection_channel_rate", period=PERIOD, channel="debit_batch") == \
        pytest.approx(BILL / (7 * BILL + 8_000))
    assert value(metrics, "gridpay_collection_target_ratio") == 0.9
    assert value(metrics, "gridpay_collection_alert_from_day") == 20
    assert value(metrics, "gridpay_collection_day_of_month") == 26
    assert value(metrics, "gridpay_collection_refreshed_timestamp_seconds") == IN_PERIOD.timestamp()

    c8 = "C00000007"
    assert post(engine, [payment(BANK, c8, BILL, at=T0)])[0].ok       # the last unpaid customer without a district
    clock.advance(59)
    metrics.poll(engine)                                             # within the minute: the last figures
    assert value(metrics, "gridpay_collection_collected_fen", period=PERIOD, district="-") == BILL
    assert value(metrics, "gridpay_collection_refreshed_timestamp_seconds") == IN_PERIOD.timestamp()
    clock.advance(1)
    metrics.poll(engine)                                             # a minute on: read again
    assert value(metrics, "gridpay_collection_collected_fen", period=PERIOD, district="-") == 2 * BILL
    assert value(metrics, "gridpay_collection_rate", period=PERIOD, district="-") == 1.0
    assert value(metrics, "gridpay_collection_refreshed_timestamp_seconds") == IN_PERIOD.timestamp() + 60

    clock.advance(6 * 86400)                                         # 1 February: the next period, no bills yet
    metrics.poll(engine)
    assert value(metrics, "gridpay_collection_billed_fen", period=PERIOD, district="-") is None
    assert value(metrics, "gridpay_collection_day_of_month") == 1
    assert_ledger_verifies(url)


def test_a_failed_read_keeps_the_last_figures_and_says_the_database_is_down(sqlite_url):
    engine, (c1,) = seed(sqlite_url, 1)
    clock = ManualClock(IN_PERIOD)
    metrics = CollectionRateMetrics(clock=clock)
    metrics.poll(engine)
    assert value(metrics, "gridpay_collection_billed_fen", period=PERIOD, district="-") == BILL
    engine.dispose()
    clock.advance(60)
    nobody_listens = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/test")
    metrics.poll(nobody_listens)
    assert value(metrics, "gridpay_db_up") == 0
    assert value(metrics, "gridpay_collection_billed_fen", period=PERIOD, district="-") == BILL
    assert value(metrics, "gridpay_collection_refreshed_timestamp_seconds") == IN_PERIOD.timestamp()


def test_the_exporter_serves_the_gauges_on_its_configured_port(tmp_path, sqlite_url):
    """A process reads the system's clock: the bills are of the period it is in now."""
    engine, (c1, c2) = seed(sqlite_url, 2)
    set_district(engine, [c1, c2], "east")
    with engine.begin() as conn:
        add_bills(conn, [(c, billing_period(Clock()), 20_000, 0, f"N{c}") for c in (c1, c2)])
    assert post(engine, [payment(BANK, c1, 20_000 + BILL, at=T0)])[0].ok     # January's bill and this one
    engine.dispose()
    (port,) = free_ports(1)
    tree = settings_tree(sqlite_url) | {"collection_rate": {"metrics_port": port, "target": 0.97,
                                                            "alert_from_day": 28}}
    env = {**os.environ, **environment_for(tree)}
    once = subprocess.run([sys.executable, "-m", "gridpay", "collection-rate", "--once"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert once.returncode == 0, once.stderr
    assert "district east: 50.00% (200.00 of 400.00)" in once.stdout, once.stdout
    p = subprocess.Popen([sys.executable, "-m", "gridpay", "collection-rate"], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        text = scrape(port)
        assert "gridpay_db_up 1.0" in text
        assert "gridpay_collection_target_ratio 0.97" in text
        assert "gridpay_collection_alert_from_day 28.0" in text
        assert 'gridpay_collection_channel_collected_fen{channel="counter",period=' in text
        assert "gridpay_replica_replay_lag_seconds" not in text     # no database.replica_url
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-2000:]
    assert str(port) in out


def test_the_dashboard_has_a_collection_rate_panel():
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = [p for p in doc["panels"] if "collection rate" in p["title"].lower()]
    assert panels, "no collection rate panel"
    exprs = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    for name in ("gridpay_collection_rate", "gridpay_collection_channel_rate", "gridpay_collection_target_ratio"):
        assert name in exprs


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_the_alert_fires_below_target_from_the_configured_day_and_not_otherwise():
    rule_tests = Path(__file__).resolve().parent / "prometheus" / "collection-rate.test.yml"
    result = subprocess.run([PROMTOOL, "test", "rules", str(rule_tests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
