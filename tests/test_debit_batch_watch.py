"""``gridpay debit batch ID --watch``: progress while the batch's debits get their outcomes, then the summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from sqlalchemy import select

from config.settings import environment_for
from engines.plans import build_batch
from config.clock import SYSTEM_CLOCK, Clock
from ledger.debits import debit_approved, debit_declined, debit_unknown, mark_debit_sent
from ledger.schema import debits
from ledger_helpers import assert_ledger_verifies
from test_engine_support import BANK, ZMK_ENV, ZMK_HEX, seed, settings_tree


def test_watch_shows_progress_until_every_debit_has_an_outcome(db_url):
    engine, _ = seed(db_url, 30)
    now = SYSTEM_CLOCK.now()
    with engine.begin() as conn:
        batch = build_batch(conn, bank_code=BANK, at=now, clock=Clock(), chunk_size=10)
        ids = list(conn.execute(select(debits.c.debit_id).where(debits.c.batch_id == batch.batch_id)).scalars())
    env = {**os.environ, **environment_for(settings_tree(db_url)), ZMK_ENV: ZMK_HEX}
    watch = subprocess.Popen([sys.executable, "-m", "gridpay", "debit", "batch", str(batch.batch_id), "--watch",
                              "--interval", "0.2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for n, debit_id in enumerate(ids):
            with engine.begin() as conn:
                mark_debit_sent(conn, debit_id, transmitted=now.strftime("%m%d%H%M%S"), stan=f"{n + 1:06d}",
                                rrn=f"{n + 1:012d}", business_date=now.date(), at=now)
            if n % 10 == 9:
                debit_unknown(engine, debit_id, now)
            elif n % 5 == 4:
                debit_declined(engine, debit_id, now, "51")
            else:
                debit_approved(engine, debit_id, now)
            time.sleep(0.05)
        out, err = watch.communicate(timeout=60)
    finally:
        if watch.poll() is None:
            watch.kill()
    assert watch.returncode == 0, err
    shown = json.loads(out)
    assert shown["debits"] == {"approved": 24, "declined": 3, "unknown": 3}
    assert "batch" in err and "debits" in err  # progress lines on stderr (not a terminal)
    assert err.strip().splitlines()[-1] == (f"batch {batch.batch_id}: 30 of 30 debits have an outcome "
                                            "(24 approved, 3 declined, 3 unknown)")
    assert_ledger_verifies(engine)
    engine.dispose()


def test_an_unknown_batch_is_refused(sqlite_url):
    engine, _ = seed(sqlite_url, 1)
    env = {**os.environ, **environment_for(settings_tree(sqlite_url))}
    out = subprocess.run([sys.executable, "-m", "gridpay", "debit", "batch", "999", "--watch"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no batch 999" in out.stderr
