"""scripts/bench/batch_build.py on a small ledger, so that it never rots: it builds the bank's batch,
prints its statements' times, and leaves the database as it was. (Nothing asserts on time.)"""
from __future__ import annotations

from sqlalchemy import func, select

from ledger.schema import debit_batches, debits
from scripts.bench import batch_build
from test_engine_support import BANK, seed


def test_the_batch_build_bench_builds_and_rolls_back(pg_url, capsys):
    engine, numbers = seed(pg_url, 12)
    batch_build.main(["--url", pg_url, "--bank", BANK, "--due-days", "40", "--top", "3"])
    out = capsys.readouterr().out
    assert f"bank {BANK}: 12 debits, 0 skipped; build" in out and "rolled back" in out
    assert len([line for line in out.splitlines() if line.startswith("  ") and " s  " in line]) == 3
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(debits)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(debit_batches)).scalar_one() == 0
    engine.dispose()
