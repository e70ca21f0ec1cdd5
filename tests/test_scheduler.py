"""The scheduler: cron times → batches, each missed run once, never two batches for one run
(two schedulers racing), paused plans, weekends. Time is injected (``now``), never slept."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select

from engines.plans import add_plan, set_status
from engines.scheduler import batches_of, due_times, run_once
from ledger.schema import debit_batches, debits
from ledger_helpers import T0, add_bills
from test_engine_support import BANK, make_settings, seed

UTC = timezone.utc


def test_due_times_in_the_plan_time_zone():
    # 09:00 Shanghai daily = 01:00 UTC; T0 is 02:00 UTC (10:00 Shanghai) on Monday 2026-11-23
    times = due_times("0 9 * * *", "Asia/Shanghai", T0, T0 + timedelta(days=3))
    assert times == [datetime(2026, 11, d, 1, 0, tzinfo=UTC) for d in (24, 25, 26)]
    assert due_times("0 9 * * *", "Asia/Shanghai", T0, T0 + timedelta(hours=1)) == []


def test_catch_up_makes_each_missed_run_once(db_url):
    engine, numbers = seed(db_url, 20)
    settings = make_settings(db_url)
    plan_id = add_plan(engine, name="hourly", bank_code=BANK, cron="30 * * * *", now=T0, actor="test")
    # the scheduler was down for 5 h 45 min: 6 runs were missed (02:30 … 07:30 UTC)
    runs = run_once(engine, settings, T0 + timedelta(hours=5, minutes=45))
    assert [r.outcome for r in runs] == ["made"] * 6
    made = batches_of(engine, plan_id)
    assert [t for _, t in made] == [T0 + timedelta(hours=h, minutes=30) for h in range(6)]
    # the first run took every due bill; the later ones found them in open debits
    assert [r.batch.debits for r in runs] == [20, 0, 0, 0, 0, 0]
    # running again at the same time makes nothing; later, only the new run
    assert run_once(engine, settings, T0 + timedelta(hours=5, minutes=45)) == []
    with engine.begin() as conn:
        add_bills(conn, [(numbers[0], "202610", 500, 0)])   # due 2026-10-28
    runs = run_once(engine, settings, T0 + timedelta(hours=6, minutes=31))
    assert len(runs) == 1 and runs[0].batch.debits == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(debits)).scalar_one() == 21
    engine.dispose()


def test_two_schedulers_racing_make_one_batch_per_run(db_url):
    engine, _ = seed(db_url, 200)
    settings = make_settings(db_url)
    plan_id = add_plan(engine, name="race", bank_code=BANK, cron="*/10 * * * *", now=T0, actor="test", chunk_size=50)
    now = T0 + timedelta(minutes=95)                     # 9 runs due
    results, errors = [], []
    barrier = threading.Barrier(3)

    def scheduler():
        try:
            barrier.wait()
            results.append(run_once(engine, settings, now))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=scheduler) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    made = [r for runs in results for r in runs if r.outcome == "made"]
    assert len(made) == 9                                 # each run made by exactly one scheduler
    assert len(batches_of(engine, plan_id)) == 9
    with engine.connect() as conn:
        per_run = conn.execute(select(debit_batches.c.scheduled_for, func.count()).where(
            debit_batches.c.plan_id == plan_id).group_by(debit_batches.c.scheduled_for)).all()
        assert all(n == 1 for _, n in per_run)
        # no bill in two debits
        assert conn.execute(select(func.count()).select_from(debits)).scalar_one() == 200
    engine.dispose()


def test_paused_plans_are_skipped_and_resume_from_now(sqlite_url):
    engine, _ = seed(sqlite_url, 3)
    settings = make_settings(sqlite_url)
    plan_id = add_plan(engine, name="p", bank_code=BANK, cron="0 * * * *", now=T0, actor="test")
    set_status(engine, "p", "P", now=T0, actor="test")
    assert run_once(engine, settings, T0 + timedelta(hours=5)) == []
    set_status(engine, "p", "A", now=T0 + timedelta(hours=5, minutes=10), actor="test")
    runs = run_once(engine, settings, T0 + timedelta(hours=6, minutes=5))
    assert [r.scheduled_for for r in runs] == [T0 + timedelta(hours=6)]
    assert len(batches_of(engine, plan_id)) == 1
    engine.dispose()


def test_runs_on_weekends_and_holidays(sqlite_url):
    engine, _ = seed(sqlite_url, 2)
    settings = make_settings(sqlite_url)
    add_plan(engine, name="saturday", bank_code=BANK, cron="0 9 * * 6", now=T0, actor="test")   # Saturdays 09:00
    add_plan(engine, name="newyear", bank_code=BANK, cron="0 9 1 1 *", now=T0, actor="test")    # 1 January
    runs = run_once(engine, settings, datetime(2027, 1, 2, 2, 0, tzinfo=UTC))
    by_plan = {}
    for r in runs:
        by_plan.setdefault(r.plan, []).append(r.scheduled_for.astimezone(timezone(timedelta(hours=8))))
    assert [d.weekday() for d in by_plan["saturday"]] == [5] * 6
    assert [(d.month, d.day, d.hour) for d in by_plan["newyear"]] == [(1, 1, 9)]
    engine.dispose()
