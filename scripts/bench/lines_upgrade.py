"""Migration 0023 on PostgreSQL: journal lines dated from their entries and partitioned by month,
timed on a ledger of ``--customers`` (the reports bench's fill: ~8.7 lines per customer).

    .venv/bin/python -m scripts.bench.lines_upgrade [--customers 25000]

The ledger is filled at the newest revision, taken down to 0021 (the lines undated, one plain
table, VACUUM ANALYZE: as a site's database is before the upgrade), then ``gridpay db upgrade``'s
upgrade is timed. Printed: lines, seconds, lines/s, and the minutes 10 million lines would take at
that rate (the lead's estimate for the full-size ledger; a maintenance window is the comparison).
PostgreSQL: GRIDPAY_BENCH_PG_URL (a schema is created and dropped).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from alembic import command

from ledger import migrate
from ledger.db import make_engine
from scripts.bench.reports import database, fill

FULL_SIZE_LINES = 10_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=25_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url, drop = database("postgresql", Path(tmp), None)
        try:
            migrate.upgrade(url)
            engine = make_engine(url)
            fill(engine, args.customers)
            engine.dispose()
            command.downgrade(migrate.alembic_config(url), "0021")
            engine = make_engine(url)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
                lines = conn.exec_driver_sql("SELECT count(*) FROM journal_lines").scalar_one()
            engine.dispose()
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            migrate.upgrade(url)
            seconds = time.perf_counter() - t0
        finally:
            drop()
    rate = lines / seconds
    print(f"0021 -> 0023: {lines:,} lines in {seconds:.2f} s, {rate:,.0f} lines/s (load average {load:.1f} "
          f"on {os.cpu_count()} CPUs); {FULL_SIZE_LINES:,} lines at that rate: {FULL_SIZE_LINES / rate / 60:.1f} min "
          f"(compare: a maintenance window)")


if __name__ == "__main__":
    main()
