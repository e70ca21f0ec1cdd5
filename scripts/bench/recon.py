"""First reconciliation at scale: a bank file of 1,000,000 lines against a ledger with the same payments.

    .venv/bin/python -m scripts.bench.recon [--lines 1000000] [--db sqlite|postgresql|both] [--planted 100]

Set-up (not timed, but reported): a fresh database (SQLite file in a temporary directory, or a
PostgreSQL schema of its own on GRIDPAY_BENCH_PG_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test), migrated; one bank, 10,000 customers,
the payments bulk-inserted with Core (``runtime.bulk_sql.insert_rows``; no journal entries: the bench
ledger is not meant to verify), some reversed; open debits; then the bank file is written with
``--planted`` differences of every kind: amount_differs, status_differs (bank R / ledger S and bank
S / ledger R), ledger_only, bank_only, debit_unknown (with a bank line S, with R, absent).

Timed: the real ``gridpay recon bank FILE --json`` in a child process (so that its peak RSS is
its own: ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``). Then every planted difference must be
found and nothing else. Targets: <= 30 s and <= 1.5 GiB peak RSS for a million lines.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

BANK = "01020000"
DAY = date(2026, 11, 23)
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_S = 30.0
TARGET_RSS = 1.5 * 1024 ** 3
KINDS = ("amount_differs", "status_bank_R", "status_ledger_R", "ledger_only", "bank_only",
         "debit_S", "debit_R", "debit_absent")


def setup(url: str, n_lines: int, planted: int, workdir: Path) -> tuple[Path, set, dict]:
    from sqlalchemy import insert

    from ledger import migrate
    from ledger.db import make_engine
    from ledger.schema import banks, customers, debits, payments, reversals
    from runtime.bulk_sql import insert_rows

    t0 = time.perf_counter()
    migrate.upgrade(url)
    engine = make_engine(url)
    at = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
    rnd = random.Random(42)
    n_debits = 3 * planted
    # bank lines = payments - ledger_only + bank_only + debit lines (S and R)
    n_pay = n_lines - planted - 2 * planted + planted
    custs = [f"C{i:07d}" for i in range(10_000)]
    with engine.begin() as conn:
        conn.execute(insert(banks), [{"bank_code": BANK, "name": "bench bank", "created_at": at}])
        insert_rows(conn, customers, [{"customer_no": c, "customer_name": f"客户{c}", "customer_type": "R", "status": "A",
                                       "prepay_allowed": "Y", "mobile": None, "district": None, "version": 1,
                                       "updated_at": at} for c in custs])
    pays = []   # (payment_id, rrn, customer, amount, transmitted14, stan)
    chunk = 50_000
    for start in range(0, n_pay, chunk):
        rows = []
        for i in range(start, min(n_pay, start + chunk)):
            stan = f"{i % 1_000_000:06d}"
            hh, rest = divmod(i // 1_000_000 * 3600 + (i % 86_400), 3600)
            transmitted = f"1123{hh % 24:02d}{rest // 60:02d}{rest % 60:02d}"
            rrn = f"{i:012d}"
            cust = custs[i % len(custs)]
            amount = 1_000 + rnd.randrange(500_000)
            rows.append({"payment_id": i + 1, "channel": "C", "bank_code": BANK, "customer_no": cust, "id_year": 2026,
                         "transmitted": transmitted, "stan": stan, "rrn": rrn, "business_date": DAY, "amount": amount,
                         "method": "01", "cheque_no": None, "receipt_no": f"R{i + 1}", "terminal_id": "T0000001",
                         "branch_id": None, "debit_id": None, "source": "B", "created_at": at})
            pays.append((i + 1, rrn, cust, amount, "2026" + transmitted, stan))
        with engine.begin() as conn:
            insert_rows(conn, payments, rows)
    # choose the planted differences among distinct payments
    picks = rnd.sample(range(n_pay), 5 * planted)
    amount_diff, bank_r, ledger_r, ledger_only, both_r = (set(picks[k * planted:(k + 1) * planted]) for k in range(5))
    with engine.begin() as conn:
        insert_rows(conn, reversals, [{"payment_id": pays[i][0], "bank_code": BANK, "id_year": None, "transmitted": None,
                                       "stan": None, "amount": pays[i][3], "business_date": DAY, "source": "B",
                                       "reason": "", "created_at": at} for i in sorted(ledger_r | both_r)])
        drows = []
        for k in range(n_debits):
            drows.append({"debit_id": k + 1, "batch_id": None, "chunk_no": None, "bank_code": BANK, "customer_no": custs[k],
                          "account_no": "6222000000000001", "amount": 5_000 + k, "transmitted": "1123100000",
                          "stan": f"{k:06d}", "rrn": f"D{k:011d}", "business_date": DAY, "state": "unknown",
                          "response_code": None, "approval_code": None, "created_at": at, "updated_at": at})
        insert_rows(conn, debits, drows)
    t_db = time.perf_counter() - t0
    expected = set()
    lines = []
    for i, (pid, rrn, cust, amount, tx, stan) in enumerate(pays):
        status = "S"
        if i in ledger_only:
            expected.add(("ledger_only", rrn))
            continue
        if i in amount_diff:
            expected.add(("amount_differs", rrn))
            amount += 1
        if i in bank_r:
            expected.add(("status_differs", rrn))
            status = "R"
        if i in ledger_r:
            expected.add(("status_differs", rrn))
        if i in both_r:
            status = "R"
        lines.append(f"D|C|{tx}|{stan}|{rrn}|{cust}|{amount}|{status}|T0000001")
    for k in range(planted):
        rrn = f"B{k:011d}"
        expected.add(("bank_only", rrn))
        lines.append(f"D|C|20261123120000|{k:06d}|{rrn}|{custs[k]}|{2_000 + k}|S|T0000002")
    for k in range(n_debits):
        expected.add(("debit_unknown", f"D{k:011d}"))
        if k < 2 * planted:
            lines.append(f"D|D|20261123100000|{k:06d}|D{k:011d}|{custs[k]}|{5_000 + k}|{'S' if k < planted else 'R'}|A00001")
    rnd.shuffle(lines)
    s_sum = sum(int(ln.split("|")[6]) for ln in lines if ln.endswith(("|S|T0000001", "|S|T0000002", "|S|A00001")))
    path = workdir / f"{BANK}_{DAY:%Y%m%d}.txt"
    with open(path, "w", encoding="gbk", newline="\n") as fh:
        fh.write(f"H|{BANK}|{DAY:%Y%m%d}|{len(lines)}|{s_sum}\n")
        fh.write("\n".join(lines))
        fh.write("\n")
    engine.dispose()
    info = {"setup_db_s": round(t_db, 1), "setup_total_s": round(time.perf_counter() - t0, 1), "payments": n_pay,
            "lines": len(lines), "file_mb": round(path.stat().st_size / 1e6, 1)}
    return path, expected, info


def run_one(label: str, url: str, n_lines: int, planted: int) -> dict:
    from sqlalchemy import select

    from ledger.db import make_engine
    from ledger.recon_tables import recon_items

    with tempfile.TemporaryDirectory(prefix="gridpay-bench-recon-") as tmp:
        workdir = Path(tmp)
        if url == "sqlite":
            url = f"sqlite:///{workdir / 'bench.db'}"
        path, expected, info = setup(url, n_lines, planted, workdir)
        print(f"[{label}] set-up: {info}", flush=True)
        gridpay = Path(sys.executable).with_name("gridpay")
        from scripts.operator_session import operator_session

        env = {**os.environ, "GRIDPAY_OPERATOR_TOKEN": operator_session(url, "bench", ["clerk"])}
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run([str(gridpay), "recon", "bank", str(path), "--url", url, "--json",
                               "--reports", str(workdir / "reports")], capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            raise SystemExit(f"[{label}] gridpay recon bank failed:\n{proc.stdout}\n{proc.stderr}")
        result = json.loads(proc.stdout)
        engine = make_engine(url)
        with engine.connect() as conn:
            found = {(k, r) for k, r in conn.execute(select(recon_items.c.kind, recon_items.c.rrn)
                                                   .where(recon_items.c.run_id == result["run_id"]))}
        engine.dispose()
        missing, extra = expected - found, found - expected
        figures = {"db": label, "lines": info["lines"], "seconds": round(elapsed, 2),
                   "lines_per_s": round(info["lines"] / elapsed), "peak_rss_mib": round(peak_kib / 1024),
                   "planted": len(expected), "found": len(found), "missing": len(missing), "extra": len(extra),
                   "counts": result["counts"], "matched": result["totals"]["matched_count"], "setup": info,
                   "inside_s": result.get("timings_s"),
                   "ok": not missing and not extra and elapsed <= TARGET_S and peak_kib * 1024 <= TARGET_RSS,
                   "rss_note": "this child's own peak" if peak_kib > before else "an upper bound: an earlier child peaked higher"}
        print(f"[{label}] {json.dumps(figures)}", flush=True)
        if missing or extra:
            print(f"[{label}] MISSING {sorted(missing)[:10]} EXTRA {sorted(extra)[:10]}", flush=True)
        return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--planted", type=int, default=100, help="differences planted of each kind")
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args()
    results = []
    if args.db in ("sqlite", "both"):
        results.append(run_one("sqlite", "sqlite", args.lines, args.planted))
    if args.db in ("postgresql", "both"):
        from sqlalchemy import create_engine, text

        server = os.environ.get("GRIDPAY_BENCH_PG_URL", PG_DEFAULT)
        schema = f"gp_bench_recon_{uuid.uuid4().hex[:8]}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'create schema "{schema}"'))
        sep = "&" if "?" in server else "?"
        try:
            results.append(run_one("postgresql", f"{server}{sep}options=-csearch_path%3D{schema}", args.lines, args.planted))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'drop schema "{schema}" cascade'))
            admin.dispose()
    print("\n db          lines   seconds   lines/s   peak RSS   planted found  ok")
    for r in results:
        print(f" {r['db']:<10} {r['lines']:>8} {r['seconds']:>8} {r['lines_per_s']:>9} {r['peak_rss_mib']:>7} MiB "
              f"{r['planted']:>8} {r['found']:>5}  {'yes' if r['ok'] else 'NO'}")
    if not all(r["ok"] for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
