"""Metrics of the engine and the watcher: backlogs read from the database, database reachability."""
from datetime import datetime, timedelta, timezone

from sqlalchemy import insert

from engines.process_metrics import EngineMetrics
from ledger.recon.recon_metrics import ReconMetrics
from ledger.db import make_engine
from ledger.recon_tables import recon_items, recon_runs
from ledger_helpers import add_banks, new_engine


def value(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels)


def test_watcher_reports_open_items_and_the_oldest_age(db_url):
    engine = new_engine(db_url)
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        add_banks(conn, "01020000")
        run_id = conn.execute(insert(recon_runs).returning(recon_runs.c.run_id), [_run(conn, now)]).scalar_one()
        conn.execute(insert(recon_items), [_item(run_id, "bank_only", "open", now - timedelta(days=2)),
                                           _item(run_id, "bank_only", "open", now),
                                           _item(run_id, "ledger_only", "resolved", now)])
    metrics = ReconMetrics()
    metrics.poll(engine)
    assert value(metrics, "gridpay_db_up") == 1
    assert value(metrics, "gridpay_recon_open_items", bank="01020000", kind="bank_only") == 2
    assert value(metrics, "gridpay_recon_open_items", bank="01020000", kind="ledger_only") is None
    assert 2 * 86400 - 60 < value(metrics, "gridpay_recon_oldest_open_item_age_seconds", bank="01020000") < 2 * 86400 + 60
    engine.dispose()


def test_engine_metrics_and_an_unreachable_database(sqlite_url):
    engine = new_engine(sqlite_url)
    metrics = EngineMetrics()
    metrics.poll(engine)
    assert value(metrics, "gridpay_db_up") == 1
    engine.dispose()
    nobody_listens = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/test")
    metrics.poll(nobody_listens)
    assert value(metrics, "gridpay_db_up") == 0


def _run(conn, now):
    return {"kind": "bank", "bank_code": "01020000", "business_date": now.date(), "file_name": "x.txt",
            "file_sha256": "0" * 64, "file_format": "bank-7.1", "lines": 0, "bank_count": 0, "bank_sum": 0,
            "ledger_count": 0, "ledger_sum": 0, "matched_count": 0, "matched_sum": 0, "exception_count": 3,
            "actor": "test", "started_at": now, "finished_at": now}


def _item(run_id, kind, status, created_at):
    return {"run_id": run_id, "kind": kind, "status": status, "bank_code": "01020000", "channel": "C",
            "rrn": "000000000001", "bank_amount": 100, "created_at": created_at}
