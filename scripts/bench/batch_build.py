"""One bank's debit batch build, timed statement by statement (a profiling aid for the batch's
critical path, not a target): ``engines.plans.build_batch`` on an existing ledger - the full-size
bench's imported database, say - in a transaction that is rolled back after, so the database is
left as it was.

    .venv/bin/python -m scripts.bench.batch_build --url URL [--schema fs] --bank 01020000 [--due-days 60]

Prints the machine's speed, the build's wall time and its client CPU, and the statements that took
longest (their server time as the client saw it).
"""
from __future__ import annotations

import argparse
import collections
import time
from urllib.parse import quote

from sqlalchemy import event

from config.clock import SYSTEM_CLOCK
from engines.plans import build_batch
from ledger.db import make_engine
from scripts.bench.machine import describe, speed


def timed_statements(engine) -> collections.Counter:
    """Seconds per statement text (its first 90 characters), filled as the engine runs them."""
    spent: collections.Counter = collections.Counter()

    @event.listens_for(engine, "before_cursor_execute")
    def _start(conn, cursor, statement, params, context, executemany):
        conn.info["gridpay_bench_t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _end(conn, cursor, statement, params, context, executemany):
        spent[" ".join(statement.split())[:90]] += time.perf_counter() - conn.info.pop("gridpay_bench_t0")

    return spent


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the ledger's database URL")
    ap.add_argument("--schema", default=None, help="PostgreSQL schema holding the ledger (the bench's --keep-schema)")
    ap.add_argument("--bank", required=True)
    ap.add_argument("--due-days", type=int, default=60, help="bills due up to this many days after today")
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args(argv)
    url = args.url
    if args.schema:
        url += ("&" if "?" in url else "?") + "options=" + quote(f"-csearch_path={args.schema}")
    print(describe(speed()))
    engine = make_engine(url, pool_size=1)
    spent = timed_statements(engine)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with engine.connect() as conn:
        transaction = conn.begin()
        summary = build_batch(conn, bank_code=args.bank, at=SYSTEM_CLOCK.now(), clock=SYSTEM_CLOCK,
                              due_days=args.due_days, chunk_size=1000)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        transaction.rollback()
    engine.dispose()
    print(f"bank {args.bank}: {summary.debits:,} debits, {len(summary.skipped):,} skipped; build {wall:.1f} s wall, "
          f"{cpu:.1f} s of it the client's CPU (rolled back)")
    for statement, seconds in spent.most_common(args.top):
        print(f"  {seconds:7.2f} s  {statement}")


if __name__ == "__main__":
    main()
