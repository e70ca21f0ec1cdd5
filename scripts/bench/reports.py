"""The finance reports at scale: month-end summary, 实收 (confirmed) and aging (and the arrears list)
on a million customers and three million bills.

    .venv/bin/python -m scripts.bench.reports [--customers 1000000] [--db sqlite|postgresql|both] [--keep DIR]
        [--reports month-end,confirmed,aging,arrears]

``--keep DIR`` keeps the databases (the SQLite file in DIR, the PostgreSQL schema
``bench_reports_<customers>``) and the reports written, and a later run with the same DIR and size
reads them again instead of filling anew (the fill of a million customers is the slow part).

Set-up (not timed, reported): a fresh database (an SQLite file in a temporary directory, or a
PostgreSQL schema of its own on GRIDPAY_BENCH_PG_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test), migrated, filled by INSERT ... SELECT over a
number series: 5 banks; ``--customers`` customers (20 districts, both types, a quarter without a
mobile); three bills each (periods 202609-202611, categories E, V, F, with their journal entries);
two thirds of the customers pay their September and October bills (a payment each, its allocation
and its journal entry), 1 % of those payments reversed; each bank's October days reconciled and
half of them matched to a remittance. The rows are the ledger's shapes (ledger/schema.py), written
directly for speed: the posting paths are tested elsewhere, this measures the reads.

Timed: ``gridpay report month-end --month 2026-11``, ``confirmed --from 2026-10-01 --to
2026-11-30``, ``aging --as-of 2026-11-30`` and ``arrears --as-of 2026-11-30``, each written as CSV
by a child process of its own (wall time, its CPU time and peak RSS from wait4; on PostgreSQL the
server's time is not in the CPU figure). The machine's speed against the reference machine
(scripts/bench/machine.py) and the load average are printed before and after: on a shared machine
the wall time follows the load. Targets (the issue): each <= 10 s and <= 1 GiB peak RSS. Nothing
asserts on time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from scripts.bench.imports import gridpay, run_child

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BANKS = ["01020000", "01030000", "01040000", "01050000", "03010000"]
TARGET_S, TARGET_RSS_MIB = 10.0, 1024
REPORTS = [("month-end", ["--month", "2026-11"]), ("confirmed", ["--from", "2026-10-01", "--to", "2026-11-30"]),
           ("aging", ["--as-of", "2026-11-30"]), ("arrears", ["--as-of", "2026-11-30"])]


class Sql:
    """The few expressions that differ between SQLite and PostgreSQL in the fill statements."""

    def __init__(self, dialect: str):
        self.pg = dialect == "postgresql"

    def series(self, n: int) -> tuple[str, str]:
        """(prefix, FROM source) giving rows i = 1..n."""
        if self.pg:
            return "", f"generate_series(1, {n}) AS n(i)"
        return f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) ", "n"

    def pad(self, expr: str, width: int) -> str:
        return f"lpad(({expr})::text, {width}, '0')" if self.pg else f"printf('%0{width}d', {expr})"

    def day(self, month: str, expr: str) -> str:
        """The date 2026-<month>-(1 + expr % 28)."""
        value = f"'2026-{month}-' || {self.pad(f'1 + ({expr}) % 28', 2)}"
        return f"({value})::date" if self.pg else value

    def ts(self, literal: str) -> str:
        return f"'{literal}+00'::timestamptz" if self.pg else f"'{literal}.000000'"

    def date(self, literal: str) -> str:
        return f"'{literal}'::date" if self.pg else f"'{literal}'"


def fill(engine, customers: int) -> None:
    q = Sql(engine.dialect.name)
    pre, src = q.series(customers)
    n = customers
    bank = "CASE i % 5 " + " ".join(f"WHEN {k} THEN '{b}'" for k, b in enumerate(BANKS)) + " END"
    cust_no = q.pad("i", 10)
    statements = [
        f"INSERT INTO customers (customer_no, customer_name, customer_type, status, prepay_allowed, mobile, district, "
        f"collection_type, version, updated_at) {pre}SELECT {cust_no}, '客户' || i, CASE WHEN i % 3 = 0 THEN 'N' ELSE 'R' END, "
        f"'A', 'Y', CASE WHEN i % 4 = 0 THEN NULL ELSE '138' || {q.pad('i % 100000000', 8)} END, "
        f"{q.pad('i % 20', 2)}, CASE WHEN i % 7 = 0 THEN 'B' ELSE NULL END, 1, {q.ts('2026-09-01 00:00:00')} FROM {src}"]
    for m, (month, created, due) in enumerate((("09", "2026-09-10 02:00:00", "2026-09-28"),
                                              ("10", "2026-10-10 02:00:00", "2026-10-28"),
                                              ("11", "2026-11-10 02:00:00", "2026-11-28"))):
        bill_id = f"'B' || i || '-{month}'"
        amount = "5000 + (i % 97) * 100"
        statements += [
            f"INSERT INTO bills (bill_id, customer_no, period, principal, penalty, due_date, kind, created_at, category) "
            f"{pre}SELECT {bill_id}, {cust_no}, '2026{month}', {amount}, 0, {q.date(due)}, 'O', {q.ts(created)}, "
            f"CASE WHEN i % 50 = 0 THEN 'V' WHEN i % 97 = 0 THEN 'F' ELSE 'E' END FROM {src}",
            f"INSERT INTO journal_entries (entry_id, business_date, kind, ref_type, ref_id, actor, created_at) "
            f"{pre}SELECT {m * n} + i, {q.date(created[:10])}, 'bill', 'bill', {bill_id}, 'bench', {q.ts(created)} FROM {src}",
            f"INSERT INTO journal_lines (entry_id, business_date, account, amount, customer_no) "
            f"{pre}SELECT {m * n} + i, {q.date(created[:10])}, 'receivable', {amount}, {cust_no} FROM {src}",
            f"INSERT INTO journal_lines (entry_id, business_date, account, amount, customer_no) "
            f"{pre}SELECT {m * n} + i, {q.date(created[:10])}, 'revenue', -({amount}), {cust_no} FROM {src}"]
    for m, (month, paid_month) in enumerate((("09", "10"), ("10", "11"))):
        # ids in business-date order, as the ledger writes them (i's day is 1 + i % 28)
        key = f"(i % 28) * {n // 28 + 1} + i / 28 + 1"
        pid = f"{m * 2 * n} + {key}"
        entry = f"{3 * n + m * 2 * n} + {key}"
        paid_on = q.day(paid_month, "i")
        amount = "5000 + (i % 97) * 100"
        paying = "WHERE i % 3 <> 0"
        statements += [
            f"INSERT INTO payments (payment_id, channel, bank_code, customer_no, id_year, transmitted, stan, rrn, "
            f"business_date, amount, method, receipt_no, source, created_at) {pre}SELECT {pid}, 'C', {bank}, {cust_no}, "
            f"2026, '{paid_month}' || {q.pad('i % 100000000', 8)}, {q.pad('i % 1000000', 6)}, "
            f"{q.pad(pid, 12)}, {paid_on}, {amount}, '01', 'R' || ({pid}), 'B', "
            f"{q.ts(f'2026-{paid_month}-28 02:00:00')} FROM {src} {paying}",
            f"INSERT INTO allocations (bill_id, amount, payment_id, created_at) {pre}SELECT 'B' || i || '-{month}', "
            f"{amount}, {pid}, {q.ts(f'2026-{paid_month}-28 02:00:00')} FROM {src} {paying}",
            f"INSERT INTO journal_entries (entry_id, business_date, kind, ref_type, ref_id, actor, created_at) "
            f"{pre}SELECT {entry}, {paid_on}, 'payment', 'payment', '' || ({pid}), 'bench', "
            f"{q.ts(f'2026-{paid_month}-28 02:00:00')} FROM {src} {paying}",
            f"INSERT INTO journal_lines (entry_id, business_date, account, amount, customer_no) {pre}SELECT {entry}, "
            f"{paid_on}, 'bank_clearing:' || {bank}, {amount}, {cust_no} FROM {src} {paying}",
            f"INSERT INTO journal_lines (entry_id, business_date, account, amount, customer_no) {pre}SELECT {entry}, "
            f"{paid_on}, 'receivable', -({amount}), {cust_no} FROM {src} {paying}"]
        undone, rev_entry = "WHERE i % 100 = 1 AND i % 3 <> 0", f"{7 * n + m * 2 * n} + {key}"
        statements += [
            f"INSERT INTO reversals (reversal_id, payment_id, bank_code, amount, business_date, source, reason, created_at) "
            f"{pre}SELECT {pid}, {pid}, {bank}, {amount}, {paid_on}, 'B', '', {q.ts(f'2026-{paid_month}-28 03:00:00')} "
            f"FROM {src} {undone}",
            f"INSERT INTO allocations (bill_id, amount, payment_id, reversal_id, created_at) {pre}SELECT "
            f"'B' || i || '-{month}', -({amount}), {pid}, {pid}, {q.ts(f'2026-{paid_month}-28 03:00:00')} FROM {src} {undone}",
            f"INSERT INTO journal_entries (entry_id, business_date, kind, ref_type, ref_id, actor, created_at) "
            f"{pre}SELECT {rev_entry}, {paid_on}, 'reversal', 'reversal', '' || ({pid}), 'bench', "
            f"{q.ts(f'2026-{paid_month}-28 03:00:00')} FROM {src} {undone}",
            f"INSERT INTO journal_lines (entry_id, business_date, account, amount, customer_no) {pre}SELECT {rev_entry}, "
            f"{paid_on}, 'bank_clearing:' || {bank}, -({amount}), {cust_no} FROM {src} {undone}",
            f"INSERT INTO journal_lines (entry_id, business_date, account, amount, customer_no) {pre}SELECT {rev_entry}, "
            f"{paid_on}, 'receivable', {amount}, {cust_no} FROM {src} {undone}"]
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO banks (bank_code, name, created_at) VALUES " + ", ".join(
            f"('{b}', '银行{k}', {q.ts('2026-09-01 00:00:00')})" for k, b in enumerate(BANKS))))
        for sql in statements:   # psycopg reads a lone % as a placeholder
            conn.exec_driver_sql(sql.replace("%", "%%") if q.pg else sql)
    reconcile_october(engine)


def reconcile_october(engine) -> None:
    """Each bank's October business dates as bank runs; the even days matched to a remittance."""
    from ledger.recon_tables import recon_match_members, recon_matches, recon_runs

    at = datetime(2026, 11, 2, 2, tzinfo=timezone.utc)
    runs, matches, members = [], [], []
    for b, bank in enumerate(BANKS):
        for d in range(1, 29):
            run_id = b * 100 + d
            runs.append({"run_id": run_id, "kind": "bank", "bank_code": bank, "business_date": datetime(2026, 10, d).date(),
                         "file_name": f"{bank}_202610{d:02d}.txt", "file_sha256": f"{run_id:064d}", "file_format": "bank-7.1",
                         "lines": 0, "bank_count": 0, "bank_sum": 0, "ledger_count": 0, "ledger_sum": 0,
                         "matched_count": 0, "matched_sum": 0, "exception_count": 0, "actor": "bench",
                         "started_at": at, "finished_at": at, "details": "{}"})
            if d % 2 == 0:
                matches.append({"match_id": run_id, "kind": "auto", "created_by": "bench", "created_at": at, "note": ""})
                members.append({"match_id": run_id, "run_id": run_id, "side": "ledger", "amount": 0})
    with engine.begin() as conn:
        conn.execute(insert(recon_runs), runs)
        conn.execute(insert(recon_matches), matches)
        conn.execute(insert(recon_match_members), members)


def database(kind: str, workdir: Path, kept: str | None) -> tuple[str, callable]:
    """The database's URL and how to drop it; a ``kept`` one (``--keep``) is named by ``kept`` and
    left in place, to be read again by the next run."""
    if kind == "sqlite":
        name = f"{kept or 'reports'}.db"
        return f"sqlite:///{workdir / name}", lambda: None
    base = os.environ.get("GRIDPAY_BENCH_PG_URL", PG_DEFAULT)
    schema = kept or f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')

    def drop():
        if not kept:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


def bench(kind: str, customers: int, workdir: Path, keep: bool, reports: list[str]) -> list[dict]:
    """Fill (unless a kept database of this size was filled by an earlier run) and time each report."""
    from ledger import migrate
    from ledger.db import make_engine

    kept = f"bench_reports_{customers}" if keep else None
    filled_mark = workdir / f"{kind}-{kept}.filled"
    url, drop = database(kind, workdir, kept)
    results = []
    try:
        if kept and filled_mark.exists():
            t0 = time.perf_counter()
            migrate.upgrade(url)   # migrations added since the fill (indexes) apply to the kept data
            print(f"{kind}: reusing the kept {customers:,} customers, {3 * customers:,} bills ({kept}; "
                  f"migrated in {time.perf_counter() - t0:.0f} s)", flush=True)
        else:
            migrate.upgrade(url)
            engine = make_engine(url)
            t0 = time.perf_counter()
            fill(engine, customers)
            if kind == "postgresql":   # what autovacuum does to a ledger that grows by inserts
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
            engine.dispose()
            if kept:
                filled_mark.write_text(url)
            print(f"{kind}: {customers:,} customers, {3 * customers:,} bills filled in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        for name, args in REPORTS:
            if name not in reports:
                continue
            out = workdir / f"{kind}-{name}.csv"
            r = run_child([*gridpay(), "report", name, *args, "--format", "csv", "--out", str(out), "--url", url],
                          workdir, f"{kind}-{name}")
            verdict = "ok" if r["rc"] == 0 and r["seconds"] <= TARGET_S and r["peak_rss_mib"] <= TARGET_RSS_MIB else "OVER"
            lines = max(0, sum(1 for _ in open(out, "rb")) - 1) if out.exists() else 0
            print(f"  {name:10s} {r['seconds']:6.1f} s wall, {r['cpu_s']:6.1f} s CPU (target {TARGET_S:.0f})  "
                  f"peak RSS {r['peak_rss_mib']:6.0f} MiB (target {TARGET_RSS_MIB})  {lines:,} CSV lines  "
                  f"rc {r['rc']}  {verdict}", flush=True)
            if r["rc"]:
                print(r["stderr"][-2000:], file=sys.stderr)
            results.append({"db": kind, "report": name, "seconds": round(r["seconds"], 2),
                            "cpu_s": round(r["cpu_s"], 2), "peak_rss_mib": round(r["peak_rss_mib"]),
                            "csv_lines": lines, "rc": r["rc"]})
    finally:
        drop()
    return results


def main() -> None:
    from scripts.bench.machine import describe, speed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--keep", help="keep the databases (SQLite file, PostgreSQL schema bench_reports_<customers>) "
                                       "and reports in DIR, and reuse databases an earlier run kept there")
    parser.add_argument("--reports", default=",".join(name for name, _ in REPORTS),
                        help="which reports to time, comma-separated (default: all)")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    reports = args.reports.split(",")
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    before = speed()
    print(describe(before), flush=True)
    print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.keep or tmp)
        for kind in kinds:
            results += bench(kind, args.customers, workdir, bool(args.keep), reports)
    after = speed()
    print(describe(after) + " (after)")
    print(f"load average after the run: {os.getloadavg()[0]:.2f}")
    print(json.dumps({"bench": "reports", "customers": args.customers, "machine_before": before,
                      "machine_after": after, "results": results}))


if __name__ == "__main__":
    main()
