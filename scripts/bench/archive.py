"""The archive of an old month (``gridpay ledger archive``'s ``ledger.archive.archive``) on a ledger
built through the posting path.

    .venv/bin/python -m scripts.bench.archive [--customers 10000] [--db sqlite|postgresql|both]

Run at two sizes (e.g. --customers 20000, then 100000) to see that the archive's peak RSS does not
grow with the month: it marks the rows on the database and streams them to the files.

Set-up (not timed, reported): a fresh database (an SQLite file, or a PostgreSQL schema of its own on
GRIDPAY_BENCH_PG_URL), migrated; ``--customers`` customers, each with a September 2026 bill paid in
September at a counter (one in ten paying 10 % more: prepaid) and an October bill, 80 % paid in
October. Every payment goes through ``ledger.synchronous_posting.post`` (journal entries, feed rows),
so the ledger verifies.

Timed: archiving September (its bills, payments, allocations, prepaid movements, journal entries and
lines, feed rows, the audit log: files written and fsynced, rows removed, openings written) in a
process of its own, whose peak RSS (``VmHWM``: this process's own, not the set-up's) is reported,
then ``ledger verify`` on what remains, per database, with its slowest invariants
(``scripts.bench.verify_parts``). Judged by: rows archived per second, read against the utility's
month (4.3 M bills and their payments: about 30 M rows, with journal lines and feed rows) in a
maintenance window of a few hours; no target is asserted.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config.clock import ManualClock  # noqa: E402
from ledger.archive import archive  # noqa: E402
from ledger.synchronous_posting import post  # noqa: E402
from scripts.bench import imports, machine  # noqa: E402
from scripts.bench.verify_parts import describe, timed_verify  # noqa: E402
from tests.ledger_helpers import add_banks, add_bills, add_customers, customer_row, new_engine, payment  # noqa: E402

BANK = "01020000"
SEP_BILLED, SEP_PAID = datetime(2026, 9, 10, 2, tzinfo=timezone.utc), datetime(2026, 9, 20, 2, tzinfo=timezone.utc)
OCT_BILLED, OCT_PAID = datetime(2026, 10, 10, 2, tzinfo=timezone.utc), datetime(2026, 10, 20, 2, tzinfo=timezone.utc)
NOW = datetime(2026, 12, 6, 2, tzinfo=timezone.utc)
CHUNK = 2_000


def build(engine, n: int) -> None:
    numbers = [f"A{i:08d}" for i in range(n)]
    with engine.begin() as conn:
        add_banks(conn, BANK, at=SEP_BILLED)
    for start in range(0, n, CHUNK):
        part = numbers[start:start + CHUNK]
        with engine.begin() as conn:
            add_customers(conn, [customer_row(c, at=SEP_BILLED) for c in part])
            add_bills(conn, [(c, "202609", 10_000, 0) for c in part], at=SEP_BILLED)
        post(engine, [payment(BANK, c, 11_000 if i % 10 == 0 else 10_000, at=SEP_PAID) for i, c in enumerate(part)],
             ManualClock(SEP_PAID))
        with engine.begin() as conn:
            add_bills(conn, [(c, "202610", 12_000, 0) for c in part], at=OCT_BILLED)
        post(engine, [payment(BANK, c, 12_000, at=OCT_PAID) for i, c in enumerate(part) if i % 5],
             ManualClock(OCT_PAID))


def bench(url: str, args) -> dict:
    engine = new_engine(url)
    started = time.perf_counter()
    build(engine, args.customers)
    setup_s = time.perf_counter() - started
    engine.dispose()
    with tempfile.TemporaryDirectory(prefix="gridpay-bench-archive-") as where:
        child = subprocess.run([sys.executable, "-m", "scripts.bench.archive", "--archive-only", url, where],
                               cwd=ROOT, capture_output=True, text=True, check=True)
    archived = json.loads(child.stdout.splitlines()[-1])
    engine = new_engine(url)
    failures, verify_s, parts = timed_verify(engine)
    engine.dispose()
    return {"setup_s": round(setup_s, 1), **archived, "verify_s": round(verify_s, 2), "verify_failures": len(failures),
            "verify_parts_s": {n: round(s, 2) for n, s in parts.items()}}


def _rss_mb(field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` of this process, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def archive_only(url: str, where: str) -> dict:
    """The timed archive, in this (child) process: its figures and peak RSS."""
    engine = new_engine(url)
    with engine.connect():
        pass
    before_mb = _rss_mb("VmRSS")
    started = time.perf_counter()
    results = archive(engine, "2026-10", directory=where, actor="bench:archive", clock=ManualClock(NOW),
                      retention_months=1)
    archive_s = time.perf_counter() - started
    engine.dispose()
    rows = {t: n for r in results for t, n in r.rows.items() if n}
    return {"archive_s": round(archive_s, 2), "rows": rows, "rows_per_s": round(sum(rows.values()) / archive_s),
            "rss_before_mb": before_mb, "peak_rss_mb": _rss_mb("VmHWM")}


def report(db: str, r: dict) -> None:
    total = sum(r["rows"].values())
    print(f"{db}: archived {total} rows in {r['archive_s']} s ({r['rows_per_s']} rows/s; set-up {r['setup_s']} s); "
          f"ledger verify afterwards {r['verify_s']} s, {r['verify_failures']} failure(s)")
    print(f"  ledger verify's slowest invariants: {describe(r['verify_parts_s'])}")
    print("  " + ", ".join(f"{t} {n}" for t, n in sorted(r["rows"].items())))
    print(f"  the utility's month, ~30 M rows, at this rate: ~{30_000_000 / r['rows_per_s'] / 3600:.1f} h")
    print(f"  peak RSS of the archiving process: {r['peak_rss_mb']} MB ({r['rss_before_mb']} MB before it began; "
          f"target: the same at every size)")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--archive-only"]:
        print(json.dumps(archive_only(argv[1], argv[2])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args(argv)
    print(machine.describe(machine.speed()))
    results = imports.for_each_db(args, lambda url: bench(url, args), report)
    print(machine.describe(machine.speed()))
    print(json.dumps({"bench": "archive", "customers": args.customers, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
